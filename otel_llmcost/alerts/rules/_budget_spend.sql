-- Shared CTEs (not a rule) of the burn-rate rules, after _budgets: `series`, the spend and requests of each
-- (feature, model) of each budget's scope (all, project, feature, user) with spend or requests between
-- `since`.lo and `since`.hi: per minute (level 'm') in the hours of `minutes` (the windows' minutes, which hold
-- the partial hours at both ends), and per hour (level 'h', from the rollups' hourly projections, 031) in the
-- whole hours between, which only make the keys complete. Rules that include it define `eval`, `since` (lo, hi)
-- and `minutes`. Bounds and budgets are scalars (`sb`, `mh`, `bud`) rather than sub-queries: at these sizes
-- ClickHouse's analysis and planning of each sub-query, not the rows, is most of the time.
    -- the bounds of `since` (lo, hi) and its first whole and last partial hour, as one scalar
    (SELECT (lo, hi, toStartOfHour(lo + toIntervalMinute(59)), toStartOfHour(hi)) FROM since) AS sb,
    -- the hours of `minutes`, read by the minute (within `since`; the minute level sums only the minutes a
    -- window reads, and the whole hours between are read by the hour as well, for the keys)
    (SELECT groupUniqArray(toStartOfHour(minute)) FROM minutes) AS mh,
    series AS (
        SELECT level, scope, scope_value, feature, model, at, toFloat64(sum(cost)) AS cost, toFloat64(sum(n)) AS n
        FROM (
            SELECT level, scope_key.1 AS scope, scope_key.2 AS scope_value, feature, model, at, cost, n
            FROM (
                SELECT 'm' AS level, project, feature, model, minute AS at, sum(cost_usd) AS cost, sum(calls) AS n
                FROM llm_rollup_1m
                WHERE minute >= sb.1 AND minute < sb.2 AND has(mh, toStartOfHour(minute))
                GROUP BY project, feature, model, at
                UNION ALL
                SELECT 'h', project, feature, model, toStartOfHour(minute) AS at, sum(cost_usd), sum(calls)
                FROM llm_rollup_1m
                WHERE toStartOfHour(minute) >= sb.3 AND toStartOfHour(minute) < sb.4
                GROUP BY project, feature, model, at
            )
            ARRAY JOIN [('all', ''), ('project', project), ('feature', feature)] AS scope_key
            UNION ALL
            SELECT 'm', 'user', user_id, feature, model, minute, cost_usd, calls
            FROM llm_user_rollup_1m
            WHERE minute >= sb.1 AND minute < sb.2 AND has(mh, toStartOfHour(minute))
              AND has(bud.4, user_id)
            UNION ALL
            SELECT 'h', 'user', user_id, feature, model, toStartOfHour(minute) AS at, sum(cost_usd), sum(calls)
            FROM llm_user_rollup_1m
            WHERE toStartOfHour(minute) >= sb.3 AND toStartOfHour(minute) < sb.4
              AND has(bud.4, user_id)
            GROUP BY user_id, feature, model, at
        )
        WHERE has(bud.3, (scope, scope_value))
        GROUP BY level, scope, scope_value, feature, model, at
    )
