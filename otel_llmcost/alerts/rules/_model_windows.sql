-- Shared CTEs (not a rule): spend, requests, input and cached tokens of each (service, project, feature, model)
-- in the window [t - d days - window_minutes, t - d days) for every evaluation time t of `eval` and every d
-- from 0 (the recent window) to baseline_days (the same window on earlier days), as `windows` (one row per
-- t, key and d with traffic, plus a row of zeros per t and key: every key with rows since the first window's
-- start has a row at every t, as before).
-- The minutes of the windows (`grid`: t, d, minute) are joined to the minute rows of llm_rollup_1m; the keys are
-- found in the whole hours between from the hourly projection (031) and in the partial hours at both ends
-- from the minutes. Kept to few sub-queries on purpose: at these sizes ClickHouse's analysis and planning of
-- each sub-query, not the rows, is most of the time. `b` holds the bounds (lo, hi, first whole hour, last
-- partial hour, evaluation times). Rules that include it declare window_minutes and baseline_days and define
-- `eval` first.
    bounds AS (
        SELECT min(t) - toIntervalDay({baseline_days:UInt32}) - toIntervalMinute({window_minutes:UInt32}) AS lo,
               max(t) AS hi, toStartOfHour(lo + toIntervalMinute(59)) AS first_hour, toStartOfHour(hi) AS end_hour,
               groupArray(t) AS evals
        FROM eval
    ),
    (SELECT (lo, hi, first_hour, end_hour, evals) FROM bounds) AS b,
    grid AS (
        SELECT t, d, t - toIntervalDay(d) - toIntervalMinute(m + 1) AS minute
        FROM eval
        ARRAY JOIN range(toUInt32({baseline_days:UInt32}) + 1) AS d
        ARRAY JOIN range(toUInt32({window_minutes:UInt32})) AS m
    ),
    windows AS (
        SELECT t, service_name, project, feature, model, d,
               if(t0 = 0, 0, w_cost) AS w_cost, if(t0 = 0, 0, w_n) AS w_n,
               if(t0 = 0, 0, w_input) AS w_input, if(t0 = 0, 0, w_cached) AS w_cached
        FROM (
            -- role 0: a minute row, counted in each window it falls in; role 1 (and rows in no window): t0 = 0,
            -- one row per key, made a row of zeros at every evaluation time below
            SELECT g.t AS t0, g.d AS d, service_name, project, feature, model,
                   sum(cost) AS w_cost, sum(n) AS w_n, sum(input) AS w_input, sum(cached) AS w_cached
            FROM (
                SELECT service_name, project, feature, model, minute,
                       toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n,
                       toFloat64(sum(input_tokens)) AS input, toFloat64(sum(cache_read_tokens)) AS cached
                FROM llm_rollup_1m
                WHERE minute >= b.1 AND minute < b.2
                  AND (minute < b.3 OR minute >= b.4 OR minute IN (SELECT minute FROM grid))
                GROUP BY service_name, project, feature, model, minute
                UNION ALL
                SELECT service_name, project, feature, model, toDateTime(0, 'UTC'), 0., 0., 0., 0.
                FROM llm_rollup_1m
                WHERE toStartOfHour(minute) >= b.3 AND toStartOfHour(minute) < b.4
                GROUP BY service_name, project, feature, model
            ) AS s
            ARRAY JOIN [0, 1] AS role
            LEFT JOIN grid AS g ON if(role = 0, s.minute, toDateTime(0, 'UTC')) = g.minute
            GROUP BY t0, d, service_name, project, feature, model
        )
        ARRAY JOIN if(t0 = 0, b.5, [t0]) AS t
    )
