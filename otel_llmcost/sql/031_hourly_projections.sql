-- Hourly aggregates of the per-minute rollups, kept as projections: what the alert rules and panels read for
-- the whole hours of a long range (a budget's month so far, a year of months), the minutes only for the
-- partial hour at its end. A query grouped by toStartOfHour(minute) (and filtered on it and the projection's
-- other keys) reads them instead of the minute rows, by itself (optimize_use_projections).
-- Projections rather than tables with their own materialized views: they live in the rollups' parts, so
-- whatever inserts, deletes (reprice's ALTER ... DELETE rebuilds them), truncates or deduplicates the minutes
-- does the same to the hours. A SummingMergeTree only takes a projection with deduplicate_merge_projection_mode
-- set: 'rebuild' makes a merge compute it again from the merged rows (the sums stay exact).
ALTER TABLE llm_rollup_1m MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE llm_rollup_1m ADD PROJECTION IF NOT EXISTS p_hour
(
    SELECT
        toStartOfHour(minute), service_name, project, feature, provider, model,
        sum(calls), sum(errors), sum(unpriced_calls), sum(input_tokens), sum(output_tokens),
        sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_usd),
        sum(input_cost_usd), sum(cache_read_cost_usd), sum(cache_write_cost_usd), sum(output_cost_usd),
        sum(cache_savings_usd), sum(app_cache_hits), sum(app_cache_savings_usd)
    GROUP BY toStartOfHour(minute), service_name, project, feature, provider, model
);

-- rows already stored get it once (new parts get it as they are written)
ALTER TABLE llm_rollup_1m MATERIALIZE PROJECTION p_hour SETTINGS mutations_sync = 2;

-- Per user first: user-scoped budgets read a few users' hours without the other users'.
ALTER TABLE llm_user_rollup_1m MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE llm_user_rollup_1m ADD PROJECTION IF NOT EXISTS p_user_hour
(
    SELECT user_id, toStartOfHour(minute), feature, model, sum(calls), sum(cost_usd)
    GROUP BY user_id, toStartOfHour(minute), feature, model
);

ALTER TABLE llm_user_rollup_1m MATERIALIZE PROJECTION p_user_hour SETTINGS mutations_sync = 2;
