-- rule: spend_anomaly
-- severity: warning
-- for: 15m
-- labels: project
-- values: value, spend_usd, baseline_usd, threshold_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: unusual spend today for {where}: {spend_usd:$} so far vs {baseline_usd:$} by this hour on a typical day (mean of {history_days} days; alert above {threshold_usd:$}); requests {calls:n} vs {baseline_calls:n}{top}
-- param history_days UInt32 14: today is compared with the same hours of this many previous days
-- param sigmas Float64 3: fire above the mean plus this many standard deviations ...
-- param min_increase Float64 0.25: ... and above the mean by at least this share (0.25 = +25%)
-- param min_spend_usd Float64 1.0: days that spent less than this so far never fire
-- param min_history_days UInt32 7: fire only with at least this many earlier days of traffic
WITH
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    -- Each day's window [day start, t - d days) is its whole hours, read from the hourly projection of the
    -- rollup (031, level 'h'), and the minutes of its last, partial hour (level 'm'): `grid` holds the units
    -- (level, at) of every window, and joining it to `series` gives the windows' spend in one pass (the hours
    -- before each t are also the keys: every (project, feature, model) with rows since the first window).
    bounds AS (
        SELECT toStartOfDay(min(t)) - toIntervalDay({history_days:UInt32}) AS lo, toStartOfHour(max(t)) AS end_hour
        FROM eval
    ),
    (SELECT (lo, end_hour) FROM bounds) AS b,
    grid AS (
        SELECT t, d, u.1 AS level, u.2 AS at
        FROM (
            SELECT e.t AS t, d, e.t - toIntervalDay(d) AS x_end, toStartOfHour(x_end) AS x_hour,
                   toStartOfDay(e.t) - toIntervalDay(d) AS x_start
            FROM eval AS e
            ARRAY JOIN range(toUInt32({history_days:UInt32}) + 1) AS d
        )
        ARRAY JOIN arrayConcat(
            arrayMap(i -> ('h', x_start + toIntervalHour(i)), range(toUInt32(greatest(0, dateDiff('hour', x_start, x_hour))))),
            arrayMap(i -> ('m', x_hour + toIntervalMinute(i)), range(toUInt32(dateDiff('minute', x_hour, x_end))))) AS u
    ),
    series AS (
        SELECT 'm' AS level, project, feature, model, minute AS at,
               toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n
        FROM llm_rollup_1m
        WHERE minute IN (SELECT at FROM grid WHERE level = 'm')
        GROUP BY project, feature, model, minute
        UNION ALL
        SELECT 'h', project, feature, model, toStartOfHour(minute) AS at,
               toFloat64(sum(cost_usd)), toFloat64(sum(calls))
        FROM llm_rollup_1m
        WHERE toStartOfHour(minute) >= b.1 AND toStartOfHour(minute) < b.2
        GROUP BY project, feature, model, toStartOfHour(minute)
    ),
    windows AS (
        -- a unit is counted in each window it falls in (role 0); role 1 and units in no window give t0 = 0: one
        -- row per (project, feature, model), made a row of zeros at every evaluation time
        SELECT t, project, feature, model, d, if(t0 = 0, 0, w_cost) AS w_cost, if(t0 = 0, 0, w_n) AS w_n
        FROM (
            SELECT g.t AS t0, g.d AS d, project, feature, model, sum(cost) AS w_cost, sum(n) AS w_n
            FROM series AS s
            ARRAY JOIN [0, 1] AS role
            LEFT JOIN grid AS g ON if(role = 0, s.level, '') = g.level AND s.at = g.at
            GROUP BY t0, d, project, feature, model
        )
        ARRAY JOIN if(t0 = 0, (SELECT groupArray(t) FROM eval), [t0]) AS t
    ),
    per_day AS (
        SELECT t, project, d, sum(w_cost) AS day_cost, sum(w_n) AS day_n,
               argMax(model, w_cost) AS day_model, argMax(feature, w_cost) AS day_feature
        FROM windows
        GROUP BY t, project, d
    ),
    per_key AS (
        SELECT t, project,
               sumIf(day_cost, d = 0) AS spend_usd, sumIf(day_n, d = 0) AS calls,
               avgIf(day_cost, d > 0 AND day_n > 0) AS mean_cost, stddevPopIf(day_cost, d > 0 AND day_n > 0) AS sd_cost,
               avgIf(day_n, d > 0 AND day_n > 0) AS mean_n, countIf(d > 0 AND day_n > 0) AS days,
               anyIf(day_model, d = 0) AS top_model, anyIf(day_feature, d = 0) AS top_feature
        FROM per_day
        GROUP BY t, project
    )
SELECT
    t AS eval_time, project,
    -- conditions multiplied, not ANDed (same result): analysing AND chains of comparisons costs ms
    toUInt8((days >= {min_history_days:UInt32}) * (spend_usd >= {min_spend_usd:Float64}) *
            (spend_usd > mean_cost + {sigmas:Float64} * sd_cost) *
            (spend_usd > mean_cost * (1 + {min_increase:Float64}))) AS firing,
    if(mean_cost > 0, spend_usd / mean_cost, 0) AS value,
    spend_usd, ifNotFinite(mean_cost, 0) AS baseline_usd,
    ifNotFinite(greatest(mean_cost + {sigmas:Float64} * sd_cost, mean_cost * (1 + {min_increase:Float64})), 0) AS threshold_usd,
    calls, ifNotFinite(mean_n, 0) AS baseline_calls, top_model, top_feature
FROM per_key
