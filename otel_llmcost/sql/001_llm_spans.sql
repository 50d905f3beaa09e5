-- One row per LLM call. Re-sent spans (exporter retries, spool replays) share (trace_id, span_id) and
-- collapse into one row at merge time; the collector also drops re-sent spans it has seen recently.
CREATE TABLE IF NOT EXISTS llm_spans
(
    timestamp            DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),  -- span start
    duration_ms          Float64,
    trace_id             String CODEC(ZSTD(1)),
    span_id              String CODEC(ZSTD(1)),
    parent_span_id       String CODEC(ZSTD(1)),
    service_name         LowCardinality(String),
    span_name            LowCardinality(String),
    scope_name           LowCardinality(String),
    provider             LowCardinality(String),
    operation            LowCardinality(String),
    request_model        LowCardinality(String),
    response_model       LowCardinality(String),
    response_id          String CODEC(ZSTD(1)),
    status_code          LowCardinality(String),   -- OK, ERROR or UNSET, as the span says
    error_type           LowCardinality(String),
    input_tokens         UInt64,                   -- all input tokens, cache reads and writes included
    output_tokens        UInt64,                   -- all output tokens, reasoning included
    cache_read_tokens    UInt64,
    cache_write_tokens   UInt64,
    reasoning_tokens     UInt64,
    cost_usd             Nullable(Decimal(18, 9)), -- NULL when unpriced, never a silent zero
    input_cost_usd       Nullable(Decimal(18, 9)), -- uncached input
    cache_read_cost_usd  Nullable(Decimal(18, 9)),
    cache_write_cost_usd Nullable(Decimal(18, 9)),
    output_cost_usd      Nullable(Decimal(18, 9)),
    cache_savings_usd    Nullable(Decimal(18, 9)), -- what the cache reads would have cost as uncached input, less their price
    price_status         LowCardinality(String),   -- priced | unpriced | no_usage
    price_note           String,                   -- why a span is unpriced, or what was odd about it
    price_source         LowCardinality(String),   -- catalog and version, e.g. genai-prices 0.2.3
    priced_model         LowCardinality(String),   -- the catalog's model id that matched
    project              LowCardinality(String),
    feature              LowCardinality(String),
    user_id              String,
    cache_hit_kind       LowCardinality(String),   -- '' for a real call; exact | semantic | ... for an application-level cache hit (no call made)
    app_cache_savings_usd Nullable(Decimal(18, 9)),-- what the call a cache hit avoided would have cost
    prefix_hash          String,                   -- fingerprint of the stable prompt prefix (system prompt + tools), never the text
    prefix_length        UInt32,                   -- its length in characters
    attributes           Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    resource_attributes  Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_keys mapKeys(attributes) TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (service_name, project, feature, provider, toStartOfHour(timestamp), trace_id, span_id)
-- Lets a batch re-sent with the same insert_deduplication_token be dropped, in the rollup too.
SETTINGS non_replicated_deduplication_window = 10000;
