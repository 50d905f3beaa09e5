-- Per-minute spend by user: what the top-users panels and user-scoped budgets read (llm_rollup_1m has no
-- user). Kept by a materialized view like llm_rollup_1m; rows already stored are copied in once.
CREATE TABLE IF NOT EXISTS llm_user_rollup_1m
(
    minute        DateTime('UTC'),
    user_id       String,
    service_name  LowCardinality(String),
    project       LowCardinality(String),
    feature       LowCardinality(String),
    model         LowCardinality(String),
    calls         UInt64,
    cost_usd      Decimal(38, 9)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, user_id, service_name, project, feature, model)
-- like llm_rollup_1m (010): a replayed batch (same insert_deduplication_token) is dropped here too
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_user_rollup_1m_mv TO llm_user_rollup_1m AS
SELECT
    toStartOfMinute(timestamp) AS minute,
    user_id,
    service_name,
    project,
    feature,
    if(response_model != '', response_model, request_model) AS model,
    countIf(cache_hit_kind = '') AS calls,
    toDecimal128(sum(ifNull(cost_usd, 0)), 9) AS cost_usd
FROM llm_spans
GROUP BY minute, user_id, service_name, project, feature, model;

INSERT INTO llm_user_rollup_1m
SELECT
    toStartOfMinute(timestamp) AS minute,
    user_id,
    service_name,
    project,
    feature,
    if(response_model != '', response_model, request_model) AS model,
    countIf(cache_hit_kind = '') AS calls,
    toDecimal128(sum(ifNull(cost_usd, 0)), 9) AS cost_usd
FROM llm_spans FINAL
GROUP BY minute, user_id, service_name, project, feature, model;
