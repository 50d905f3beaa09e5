-- Shared CTEs (not a rule): spend, requests, input and cached tokens of each (service, project, feature, model)
-- in the window [t - d days - window_minutes, t - d days) for every evaluation time t of `eval` and every d
-- from 0 (the recent window) to baseline_days (the same window on earlier days), as `windows`.
-- Windows are read from running totals (ASOF joins), so many evaluation times cost one pass over the rollup.
-- Rules that include it declare window_minutes and baseline_days and define `eval` first.
    series AS (
        SELECT service_name, project, feature, model, minute,
               toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n,
               toFloat64(sum(input_tokens)) AS input, toFloat64(sum(cache_read_tokens)) AS cached
        FROM llm_rollup_1m
        WHERE minute >= (SELECT min(t) FROM eval) - toIntervalDay({baseline_days:UInt32}) - toIntervalMinute({window_minutes:UInt32})
          AND minute < (SELECT max(t) FROM eval)
        GROUP BY service_name, project, feature, model, minute
    ),
    running AS (
        SELECT service_name, project, feature, model, minute + 60 AS until,
               sum(cost) OVER w AS run_cost, sum(n) OVER w AS run_n,
               sum(input) OVER w AS run_input, sum(cached) OVER w AS run_cached
        FROM series
        WINDOW w AS (PARTITION BY service_name, project, feature, model ORDER BY minute ROWS UNBOUNDED PRECEDING)
    ),
    grid AS (
        SELECT e.t AS t, k.service_name AS service_name, k.project AS project, k.feature AS feature,
               k.model AS model, d, e.t - toIntervalDay(d) AS x_end, x_end - toIntervalMinute({window_minutes:UInt32}) AS x_start
        FROM eval AS e
        CROSS JOIN (SELECT DISTINCT service_name, project, feature, model FROM series) AS k
        ARRAY JOIN range(toUInt32({baseline_days:UInt32}) + 1) AS d
    ),
    windows AS (
        SELECT g.t AS t, g.service_name AS service_name, g.project AS project, g.feature AS feature, g.model AS model,
               g.d AS d, hi.run_cost - lo.run_cost AS w_cost, hi.run_n - lo.run_n AS w_n,
               hi.run_input - lo.run_input AS w_input, hi.run_cached - lo.run_cached AS w_cached
        FROM grid AS g
        ASOF LEFT JOIN running AS hi
            ON g.service_name = hi.service_name AND g.project = hi.project AND g.feature = hi.feature
               AND g.model = hi.model AND g.x_end >= hi.until
        ASOF LEFT JOIN running AS lo
            ON g.service_name = lo.service_name AND g.project = lo.project AND g.feature = lo.feature
               AND g.model = lo.model AND g.x_start >= lo.until
    )
