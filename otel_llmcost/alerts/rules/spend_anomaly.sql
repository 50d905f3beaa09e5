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
    series AS (
        SELECT project, feature, model, minute,
               toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n
        FROM llm_rollup_1m
        WHERE minute >= toStartOfDay((SELECT min(t) FROM eval)) - toIntervalDay({history_days:UInt32})
          AND minute < (SELECT max(t) FROM eval)
        GROUP BY project, feature, model, minute
    ),
    running AS (
        SELECT project, feature, model, minute + 60 AS until,
               sum(cost) OVER w AS run_cost, sum(n) OVER w AS run_n
        FROM series
        WINDOW w AS (PARTITION BY project, feature, model ORDER BY minute ROWS UNBOUNDED PRECEDING)
    ),
    grid AS (
        SELECT e.t AS t, k.project AS project, k.feature AS feature, k.model AS model, d,
               e.t - toIntervalDay(d) AS x_end, toStartOfDay(e.t) - toIntervalDay(d) AS x_start
        FROM eval AS e
        CROSS JOIN (SELECT DISTINCT project, feature, model FROM series) AS k
        ARRAY JOIN range(toUInt32({history_days:UInt32}) + 1) AS d
    ),
    windows AS (
        SELECT g.t AS t, g.project AS project, g.feature AS feature, g.model AS model, g.d AS d,
               hi.run_cost - lo.run_cost AS w_cost, hi.run_n - lo.run_n AS w_n
        FROM grid AS g
        ASOF LEFT JOIN running AS hi
            ON g.project = hi.project AND g.feature = hi.feature AND g.model = hi.model AND g.x_end >= hi.until
        ASOF LEFT JOIN running AS lo
            ON g.project = lo.project AND g.feature = lo.feature AND g.model = lo.model AND g.x_start >= lo.until
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
