-- Shared CTEs (not a rule) of the budget threshold and projection rules, after _budget_windows and _budgets: per
-- budget and evaluation time, the spend and requests of the period so far (win = 0) and of the same span of the
-- previous period (win = 1), with the top model and feature, as `per_budget`. `units`: the spend of each (scope,
-- feature, model) of the budgets' scopes by the day (the rollups' hourly projections, 031), by the hour on the
-- days of sb.5 and by the minute in the hours of sb.4; each unit is counted in the windows of `wm` under its key
-- that it lies in, and once more at t = 0 (made a row of zeros at every evaluation time: a budget whose scope has
-- rows since lo has a row at every t).
    units AS (
        SELECT scope_key.1 AS scope, scope_key.2 AS scope_value, feature, model, key, at, cost, n
        FROM (
            SELECT project, feature, model, key, u AS at, cost, n
            FROM (
                SELECT project, feature, model, if(has(sb.5, toStartOfDay(toStartOfHour(minute))), toStartOfHour(minute),
                       toStartOfDay(toStartOfHour(minute))) AS u, toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n
                FROM llm_rollup_1m
                WHERE toStartOfHour(minute) >= sb.1 AND toStartOfHour(minute) < sb.3
                GROUP BY project, feature, model, u
            )
            ARRAY JOIN arrayConcat([toDateTime(toStartOfMonth(u), 'UTC') + 2], if(has(sb.5, toStartOfDay(u)), [toStartOfDay(u) + 1], [])) AS key
            UNION ALL
            SELECT project, feature, model, toStartOfHour(minute), minute, toFloat64(sum(cost_usd)), toFloat64(sum(calls))
            FROM llm_rollup_1m
            WHERE has(sb.4, toStartOfHour(minute)) AND minute < sb.2
            GROUP BY project, feature, model, minute
        )
        ARRAY JOIN [('all', ''), ('project', project), ('feature', feature)] AS scope_key
        WHERE has(bud.3, (scope, scope_value))
        UNION ALL
        SELECT 'user', user_id, feature, model, key, u, cost, n
        FROM (
            SELECT user_id, feature, model, if(has(sb.5, toStartOfDay(toStartOfHour(minute))), toStartOfHour(minute),
                   toStartOfDay(toStartOfHour(minute))) AS u, toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n
            FROM llm_user_rollup_1m
            WHERE toStartOfHour(minute) >= sb.1 AND toStartOfHour(minute) < sb.3 AND has(bud.4, user_id)
            GROUP BY user_id, feature, model, u
        )
        ARRAY JOIN arrayConcat([toDateTime(toStartOfMonth(u), 'UTC') + 2], if(has(sb.5, toStartOfDay(u)), [toStartOfDay(u) + 1], [])) AS key
        UNION ALL
        SELECT 'user', user_id, feature, model, toStartOfHour(minute), minute, toFloat64(cost_usd), toFloat64(calls)
        FROM llm_user_rollup_1m
        WHERE has(sb.4, toStartOfHour(minute)) AND minute < sb.2 AND has(bud.4, user_id)
    ),
    per_budget AS (
        SELECT t, scope, scope_value, period, any(bud.2[indexOf(bud.1, (scope, scope_value, period))]) AS budget_usd,
               sumIf(c, win = 0) AS spend_usd, sumIf(k, win = 0) AS calls, sumIf(k, win = 1) AS baseline_calls,
               argMaxIf(model, c, win = 0) AS top_model, argMaxIf(feature, c, win = 0) AS top_feature
        FROM (
            SELECT x.1 AS t0, x.2 AS wp, x.3 AS win, scope, scope_value, feature, model,
                   sumIf(cost, t0 > 0) AS c, sumIf(n, t0 > 0) AS k
            FROM units
            ARRAY JOIN arrayPushBack(arrayFilter(w -> at >= w.4 AND at < w.5, wm[key]), (toDateTime(0, 'UTC'), '', 0, at, at)) AS x
            GROUP BY t0, wp, win, scope, scope_value, feature, model
        )
        ARRAY JOIN if(t0 = 0, sb.6, [t0]) AS t
        ARRAY JOIN if(wp = '', ['day', 'month'], [wp]) AS period
        WHERE indexOf(bud.1, (scope, scope_value, period)) > 0
        GROUP BY t, scope, scope_value, period
    )
