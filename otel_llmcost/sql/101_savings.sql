-- What `otel-llmcost savings --save` found, run after run (a daily timer, say): the Grafana panel shows the latest
-- run's findings. Kept 90 days.
CREATE TABLE IF NOT EXISTS llm_savings
(
    computed_at          DateTime64(3, 'UTC'),
    since_seconds        UInt64,
    kind                 LowCardinality(String),   -- prompt-cache | cache-hit-drop | batch | cheaper-model | output-cap
    service_name         LowCardinality(String),
    project              LowCardinality(String),
    feature              LowCardinality(String),
    provider             LowCardinality(String),
    model                LowCardinality(String),
    monthly_savings_usd  Decimal(18, 9),
    estimate             Bool,
    detail               String,
    query                String CODEC(ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(computed_at)
ORDER BY computed_at
TTL toDateTime(computed_at) + INTERVAL 90 DAY;
