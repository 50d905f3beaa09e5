-- Budgets in tokens as well as dollars, and by the hour (`budget set --tokens`, `otel_llmcost.guard`). A budget
-- limits dollars (amount_usd above 0), tokens (limit_tokens above 0) or both; 0 means no limit of that kind.
ALTER TABLE llm_budgets ADD COLUMN IF NOT EXISTS limit_tokens UInt64 DEFAULT 0 AFTER amount_usd;

-- A user's token budget reads the user's tokens: the per-user rollup keeps them too. Its view is made anew with
-- them, and the rollup rebuilt from the stored spans, so that tokens before this version are counted as well.
ALTER TABLE llm_user_rollup_1m ADD COLUMN IF NOT EXISTS input_tokens UInt64 AFTER calls;

ALTER TABLE llm_user_rollup_1m ADD COLUMN IF NOT EXISTS output_tokens UInt64 AFTER input_tokens;

DROP VIEW IF EXISTS llm_user_rollup_1m_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_user_rollup_1m_mv TO llm_user_rollup_1m AS
SELECT
    toStartOfMinute(timestamp) AS minute,
    user_id,
    service_name,
    project,
    feature,
    if(response_model != '', response_model, request_model) AS model,
    countIf(cache_hit_kind = '') AS calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    toDecimal128(sum(ifNull(cost_usd, 0)), 9) AS cost_usd
FROM llm_spans
GROUP BY minute, user_id, service_name, project, feature, model;

ALTER TABLE llm_user_rollup_1m DROP PROJECTION IF EXISTS p_user_hour;

ALTER TABLE llm_user_rollup_1m ADD PROJECTION IF NOT EXISTS p_user_hour
(
    SELECT user_id, toStartOfHour(minute), feature, model, sum(calls), sum(input_tokens), sum(output_tokens),
           sum(cost_usd)
    GROUP BY user_id, toStartOfHour(minute), feature, model
);

TRUNCATE TABLE IF EXISTS llm_user_rollup_1m;

INSERT INTO llm_user_rollup_1m (minute, user_id, service_name, project, feature, model, calls, input_tokens,
                                output_tokens, cost_usd)
SELECT
    toStartOfMinute(timestamp) AS minute,
    user_id,
    service_name,
    project,
    feature,
    if(response_model != '', response_model, request_model) AS model,
    countIf(cache_hit_kind = '') AS calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    toDecimal128(sum(ifNull(cost_usd, 0)), 9) AS cost_usd
FROM llm_spans FINAL
GROUP BY minute, user_id, service_name, project, feature, model;
