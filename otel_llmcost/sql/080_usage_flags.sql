-- Calls whose usage is not the provider's report, counted apart in the per-minute rollup so that every sum of
-- cost can say how much of it rests on estimates and how many calls it leaves out:
-- - estimated_calls / estimated_cost_usd: price_status 'estimated' (tokens the instrumentation estimated from
--   the text, e.g. a stream closed before its usage report). Their cost is in cost_usd as before; these say
--   how much of it is estimated.
-- - no_usage_calls: price_status 'no_usage' (no usage known, cost NULL: not in cost_usd).
-- The existing columns keep their meaning. (`COLUMNS('^cost_usd$')`: the row's column, not the
-- alias of its sum, also where reprice reads the SELECT from a subquery.)
ALTER TABLE llm_rollup_1m
    ADD COLUMN IF NOT EXISTS estimated_calls UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS no_usage_calls UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS estimated_cost_usd Decimal(38, 9) DEFAULT 0;

DROP VIEW IF EXISTS llm_rollup_1m_mv;

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
    toDecimal128(sum(ifNull(app_cache_savings_usd, 0)), 9) AS app_cache_savings_usd,
    countIf(price_status = 'estimated') AS estimated_calls,
    countIf(price_status = 'no_usage') AS no_usage_calls,
    toDecimal128(sumIf(ifNull(COLUMNS('^cost_usd$'), 0), price_status = 'estimated'), 9) AS estimated_cost_usd
FROM llm_spans
GROUP BY minute, service_name, project, feature, provider, model;

-- The no-usage calls already stored, counted once (rows that carry only the new counts: the sums add them).
INSERT INTO llm_rollup_1m (minute, service_name, project, feature, provider, model, no_usage_calls)
SELECT
    toStartOfMinute(timestamp) AS minute,
    service_name,
    project,
    feature,
    provider,
    if(response_model != '', response_model, request_model) AS model,
    count() AS no_usage_calls
FROM llm_spans FINAL
WHERE price_status = 'no_usage'
GROUP BY minute, service_name, project, feature, provider, model;
