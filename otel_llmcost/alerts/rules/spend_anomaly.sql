-- rule: spend_anomaly
-- severity: warning
-- for: 15m
-- labels: project
-- values: value, spend_usd, baseline_usd, threshold_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: unusual spend today for project {project}: ${spend_usd:$} so far vs ${baseline_usd:$} by this hour on a typical day (mean of {history_days} days; alert above ${threshold_usd:$}); requests {calls:n} vs {baseline_calls:n}; top {top_model} / {top_feature}
-- param history_days UInt32 14: today is compared with the same hours of this many previous days
-- param sigmas Float64 3: fire above the mean plus this many standard deviations ...
-- param min_increase Float64 0.25: ... and above the mean by at least this share (0.25 = +25%)
-- param min_spend_usd Float64 1.0: days that spent less than this so far never fire
-- param min_history_days UInt32 7: fire only with at least this many earlier days of traffic
WITH
    eval AS (SELECT toStartOfMinute($__toTime) AS t),
    -- Each day's window [day start, t - d days) is its whole hours, read from the hourly projection of the
    -- rollup (031, level 'h'), and the minutes of its last, partial hour (level 'm'), each the running total at
    -- its end less the one at its start. The running totals are read in one pass (a CTE is evaluated again at
    -- each reference): the first row of each key is doubled into its probes, and a probe, after the rows up to
    -- its time in the (level, key) order, reads the total there.
    bounds AS (
        SELECT toStartOfDay(min(t)) - toIntervalDay({history_days:UInt32}) AS lo, max(t) AS hi,
               toStartOfHour(hi) AS end_hour
        FROM eval
    ),
    points AS (
        SELECT e.t AS t, d, toUInt8(1) AS probe, e.t - toIntervalDay(d) AS x_end, toStartOfHour(x_end) AS x_hour,
               p.1 AS level, p.2 AS at, p.3 AS sign
        FROM eval AS e
        ARRAY JOIN range(toUInt32({history_days:UInt32}) + 1) AS d
        ARRAY JOIN [('h', x_hour, 1), ('h', toStartOfDay(e.t) - toIntervalDay(d), -1), ('m', x_end, 1), ('m', x_hour, -1)] AS p
    ),
    series AS (
        SELECT 'm' AS level, project, feature, model, minute + 60 AS until,
               toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n
        FROM llm_rollup_1m
        WHERE minute IN (SELECT DISTINCT x_hour + toIntervalMinute(m) AS minute FROM points ARRAY JOIN range(60) AS m
                         WHERE minute < x_end)
        GROUP BY project, feature, model, minute
        UNION ALL
        SELECT 'h', project, feature, model, toStartOfHour(minute) + 3600 AS until,
               toFloat64(sum(cost_usd)), toFloat64(sum(calls))
        FROM llm_rollup_1m
        WHERE toStartOfHour(minute) >= (SELECT lo FROM bounds) AND toStartOfHour(minute) < (SELECT end_hour FROM bounds)
        GROUP BY project, feature, model, toStartOfHour(minute)
    ),
    swept AS (
        SELECT s.project AS project, s.feature AS feature, s.model AS model, role, p.t AS t, p.d AS d,
               if(role = 0, s.level, p.level) AS level, if(role = 0, s.until, p.at) AS at, p.sign AS sign,
               if(role = 0, s.cost, 0) AS cost, if(role = 0, s.n, 0) AS n
        FROM (
            SELECT *, row_number() OVER (PARTITION BY project, feature, model ORDER BY level, until) AS rn
            FROM series
        ) AS s
        ARRAY JOIN if(rn = 1, [toUInt8(0), toUInt8(1)], [toUInt8(0)]) AS role
        LEFT JOIN points AS p ON role = p.probe
    ),
    windows AS (
        SELECT t, project, feature, model, d, sum(sign * run_cost) AS w_cost, sum(sign * run_n) AS w_n
        FROM (
            SELECT *, sum(cost) OVER w AS run_cost, sum(n) OVER w AS run_n
            FROM swept
            WINDOW w AS (PARTITION BY level, project, feature, model ORDER BY at, role ROWS UNBOUNDED PRECEDING)
        )
        WHERE role = 1
        GROUP BY t, project, feature, model, d
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
    toUInt8(days >= {min_history_days:UInt32} AND spend_usd >= {min_spend_usd:Float64}
            AND spend_usd > mean_cost + {sigmas:Float64} * sd_cost
            AND spend_usd > mean_cost * (1 + {min_increase:Float64})) AS firing,
    if(mean_cost > 0, spend_usd / mean_cost, 0) AS value,
    spend_usd, ifNotFinite(mean_cost, 0) AS baseline_usd,
    ifNotFinite(greatest(mean_cost + {sigmas:Float64} * sd_cost, mean_cost * (1 + {min_increase:Float64})), 0) AS threshold_usd,
    calls, ifNotFinite(mean_n, 0) AS baseline_calls, top_model, top_feature
FROM per_key
