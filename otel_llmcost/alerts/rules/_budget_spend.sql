-- Shared CTEs (not a rule): the current budgets (llm_budgets) and, per budget scope (all, project, feature,
-- user) and feature and model, the per-minute spend and requests between `since`.lo and `since`.hi, with
-- their running totals. Rules that include it define `eval` and `since` first.
    budgets AS (
        SELECT scope, if(scope = 'all', '', scope_value) AS scope_value, period, toFloat64(amount_usd) AS amount
        FROM llm_budgets FINAL
        WHERE is_deleted = 0 AND amount_usd > 0 AND period IN ('day', 'month')
    ),
    series AS (
        SELECT scope, scope_value, feature, model, minute, toFloat64(sum(cost)) AS cost, toFloat64(sum(n)) AS n
        FROM (
            SELECT 'all' AS scope, '' AS scope_value, feature, model, minute, cost_usd AS cost, calls AS n
            FROM llm_rollup_1m WHERE minute >= (SELECT lo FROM since) AND minute < (SELECT hi FROM since)
            UNION ALL
            SELECT 'project', project, feature, model, minute, cost_usd, calls
            FROM llm_rollup_1m WHERE minute >= (SELECT lo FROM since) AND minute < (SELECT hi FROM since)
            UNION ALL
            SELECT 'feature', feature, feature, model, minute, cost_usd, calls
            FROM llm_rollup_1m WHERE minute >= (SELECT lo FROM since) AND minute < (SELECT hi FROM since)
            UNION ALL
            SELECT 'user', user_id, feature, model, minute, cost_usd, calls
            FROM llm_user_rollup_1m WHERE minute >= (SELECT lo FROM since) AND minute < (SELECT hi FROM since)
        )
        WHERE (scope, scope_value) IN (SELECT scope, scope_value FROM budgets)
        GROUP BY scope, scope_value, feature, model, minute
    ),
    running AS (
        SELECT scope, scope_value, feature, model, minute + 60 AS until,
               sum(cost) OVER w AS run_cost, sum(n) OVER w AS run_n
        FROM series
        WINDOW w AS (PARTITION BY scope, scope_value, feature, model ORDER BY minute ROWS UNBOUNDED PRECEDING)
    )
