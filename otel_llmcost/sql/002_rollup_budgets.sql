-- Per-minute rollup kept by a materialized view: what dashboards and alert rules read.
CREATE TABLE IF NOT EXISTS llm_rollup_1m
(
    minute               DateTime('UTC'),
    service_name         LowCardinality(String),
    project              LowCardinality(String),
    feature              LowCardinality(String),
    provider             LowCardinality(String),
    model                LowCardinality(String),
    calls                UInt64,
    errors               UInt64,
    unpriced_calls       UInt64,
    input_tokens         UInt64,
    output_tokens        UInt64,
    cache_read_tokens    UInt64,
    cache_write_tokens   UInt64,
    reasoning_tokens     UInt64,
    cost_usd             Decimal(38, 9),
    input_cost_usd       Decimal(38, 9),
    cache_read_cost_usd  Decimal(38, 9),
    cache_write_cost_usd Decimal(38, 9),
    output_cost_usd      Decimal(38, 9),
    cache_savings_usd    Decimal(38, 9),
    app_cache_hits       UInt64,
    app_cache_savings_usd Decimal(38, 9)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, service_name, project, feature, provider, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_rollup_1m_mv TO llm_rollup_1m AS
SELECT
    toStartOfMinute(timestamp) AS minute,
    service_name,
    project,
    feature,
    provider,
    if(response_model != '', response_model, request_model) AS model,
    countIf(cache_hit_kind = '') AS calls,  -- application-level cache hits made no call
    countIf(status_code = 'ERROR') AS errors,
    countIf(price_status = 'unpriced') AS unpriced_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    toDecimal128(sum(ifNull(cost_usd, 0)), 9) AS cost_usd,
    toDecimal128(sum(ifNull(input_cost_usd, 0)), 9) AS input_cost_usd,
    toDecimal128(sum(ifNull(cache_read_cost_usd, 0)), 9) AS cache_read_cost_usd,
    toDecimal128(sum(ifNull(cache_write_cost_usd, 0)), 9) AS cache_write_cost_usd,
    toDecimal128(sum(ifNull(output_cost_usd, 0)), 9) AS output_cost_usd,
    toDecimal128(sum(ifNull(cache_savings_usd, 0)), 9) AS cache_savings_usd,
    countIf(cache_hit_kind != '') AS app_cache_hits,
    toDecimal128(sum(ifNull(app_cache_savings_usd, 0)), 9) AS app_cache_savings_usd
FROM llm_spans
GROUP BY minute, service_name, project, feature, provider, model;

-- Spending limits. scope: all | project | feature | user; period: day | month.
CREATE TABLE IF NOT EXISTS llm_budgets
(
    scope        LowCardinality(String),
    scope_value  String,
    period       LowCardinality(String),
    amount_usd   Decimal(18, 6),
    updated_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    is_deleted   UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(updated_at, is_deleted)
ORDER BY (scope, scope_value, period);
