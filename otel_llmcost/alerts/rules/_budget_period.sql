-- Shared CTEs (not a rule) of the budget threshold and projection rules, after _budget_windows and _budgets:
-- per budget and evaluation time, the spend and requests of the period so far (win = 0) and of the same span
-- of the previous period (win = 1), with the top model and feature, as `per_budget`.
-- A window [x_start, x_end) starts on a whole hour. Month windows start at midnight UTC: their whole days
-- [x_start, x_mid) are read by the day (level 'd', from the rollups' hourly projections, 031), the hours
-- [x_mid, x_hour) before the last, partial hour by the hour ('h', only for the days in `hd`), and the minutes
-- [x_hour, x_end) by the minute ('m', the hours in `mh`). `grid` holds the units (level, at) of every window;
-- `series` the spend per unit of each (scope, feature, model) with rows in `since` (the scopes of the budgets
-- only). Joining them gives each window's spend: one pass, no running totals, and few sub-queries (at these
-- sizes ClickHouse's analysis and planning of each sub-query, not the rows, is most of the time).
    -- lo, hi, the midnight (UTC) and the hour hi falls in
    (SELECT (lo, hi, toStartOfDay(toTimeZone(hi, 'UTC')), toStartOfHour(hi)) FROM since) AS sb,
    series AS (
        SELECT level, scope, scope_value, feature, model, at, toFloat64(sum(cost)) AS cost, toFloat64(sum(n)) AS n
        FROM (
            SELECT level, scope_key.1 AS scope, scope_key.2 AS scope_value, feature, model, at, cost, n
            FROM (
                SELECT 'm' AS level, project, feature, model, minute AS at, sum(cost_usd) AS cost, sum(calls) AS n
                FROM llm_rollup_1m
                WHERE has(mh, toStartOfHour(minute)) AND minute < sb.2
                GROUP BY project, feature, model, at
                UNION ALL
                -- by the hour on the days of `hd` (and their day, summed again below), by the day elsewhere
                SELECT level, project, feature, model, if(level = 'h', unit, toStartOfDay(unit)), cost, n
                FROM (
                    SELECT project, feature, model,
                           if(has(hd, toStartOfDay(toStartOfHour(minute))), toStartOfHour(minute),
                              toStartOfDay(toStartOfHour(minute))) AS unit,
                           sum(cost_usd) AS cost, sum(calls) AS n
                    FROM llm_rollup_1m
                    WHERE toStartOfHour(minute) >= sb.1 AND toStartOfHour(minute) < sb.4
                    GROUP BY project, feature, model, unit
                )
                ARRAY JOIN arrayConcat(if(unit < sb.3, ['d'], []), if(has(hd, toStartOfDay(unit)), ['h'], [])) AS level
            )
            ARRAY JOIN [('all', ''), ('project', project), ('feature', feature)] AS scope_key
            UNION ALL
            SELECT 'm', 'user', user_id, feature, model, minute, cost_usd, calls
            FROM llm_user_rollup_1m
            WHERE has(mh, toStartOfHour(minute)) AND minute < sb.2
              AND has(bud.4, user_id)
            UNION ALL
            SELECT level, 'user', user_id, feature, model, if(level = 'h', unit, toStartOfDay(unit)), cost, n
            FROM (
                SELECT user_id, feature, model,
                       if(has(hd, toStartOfDay(toStartOfHour(minute))), toStartOfHour(minute),
                          toStartOfDay(toStartOfHour(minute))) AS unit,
                       sum(cost_usd) AS cost, sum(calls) AS n
                FROM llm_user_rollup_1m
                WHERE toStartOfHour(minute) >= sb.1 AND toStartOfHour(minute) < sb.4
                  AND has(bud.4, user_id)
                GROUP BY user_id, feature, model, unit
            )
            ARRAY JOIN arrayConcat(if(unit < sb.3, ['d'], []), if(has(hd, toStartOfDay(unit)), ['h'], [])) AS level
        )
        WHERE has(bud.3, (scope, scope_value))
        GROUP BY level, scope, scope_value, feature, model, at
    ),
    grid AS (
        SELECT t, period, win, u.1 AS level, u.2 AS at
        FROM (
            SELECT e.t AS t, p AS period, d AS win,
                   if(p = 'day', toStartOfDay(e.t), toDateTime(toStartOfMonth(e.t), 'UTC')) AS period_start,
                   if(d = 0, e.t, if(p = 'day', e.t - toIntervalDay(1), e.t - toIntervalMonth(1))) AS x_end,
                   if(d = 0, period_start, if(p = 'day', period_start - toIntervalDay(1), period_start - toIntervalMonth(1))) AS x_start,
                   toStartOfHour(x_end) AS x_hour,
                   toUInt32(intDiv(dateDiff('hour', x_start, x_hour), 24)) AS days,
                   x_start + toIntervalDay(days) AS x_mid
            FROM eval AS e
            ARRAY JOIN ['day', 'month'] AS p
            ARRAY JOIN [0, 1] AS d
        )
        ARRAY JOIN arrayConcat(
            arrayMap(i -> ('d', x_start + toIntervalDay(i)), range(days)),
            arrayMap(i -> ('h', x_mid + toIntervalHour(i)), range(toUInt32(dateDiff('hour', x_mid, x_hour)))),
            arrayMap(i -> ('m', x_hour + toIntervalMinute(i)), range(toUInt32(dateDiff('minute', x_hour, x_end))))) AS u
    ),
    windows AS (
        -- a unit of `series` is counted in each window it falls in (role 0); role 1 and units in no window give
        -- t0 = 0: one row per (scope, feature, model), made a row of zeros at every evaluation time, so that a
        -- budget whose scope has rows in `since` has a row at every t
        SELECT t, wperiod, win, scope, scope_value, feature, model, if(t0 = 0, 0, w_cost) AS w_cost, if(t0 = 0, 0, w_n) AS w_n
        FROM (
            SELECT g.t AS t0, g.period AS wperiod, g.win AS win, scope, scope_value, feature, model,
                   sum(cost) AS w_cost, sum(n) AS w_n
            FROM series AS s
            ARRAY JOIN [0, 1] AS role
            LEFT JOIN grid AS g ON if(role = 0, s.level, '') = g.level AND s.at = g.at
            GROUP BY t0, wperiod, win, scope, scope_value, feature, model
        )
        ARRAY JOIN if(t0 = 0, (SELECT groupArray(t) FROM eval), [t0]) AS t
    ),
    per_budget AS (
        -- a row of zeros (wperiod '') stands for both periods; rows of a (scope, period) without a budget are dropped
        SELECT t, scope, scope_value, period, any(bud.2[indexOf(bud.1, (scope, scope_value, period))]) AS budget_usd,
               sumIf(w_cost, win = 0) AS spend_usd, sumIf(w_n, win = 0) AS calls, sumIf(w_n, win = 1) AS baseline_calls,
               argMaxIf(model, w_cost, win = 0) AS top_model, argMaxIf(feature, w_cost, win = 0) AS top_feature
        FROM windows
        ARRAY JOIN if(wperiod = '', ['day', 'month'], [wperiod]) AS period
        WHERE indexOf(bud.1, (scope, scope_value, period)) > 0
        GROUP BY t, scope, scope_value, period
    )
