-- Shared CTEs (not a rule): spend, requests, input and cached tokens of each (service, project, feature, model)
-- in the window [t - d days - window_minutes, t - d days) for every evaluation time t of `eval` and every d
-- from 0 (the recent window) to baseline_days (the same window on earlier days), as `windows`.
-- Only the minutes of those windows are read from llm_rollup_1m (level 'm'); the keys are every
-- (service, project, feature, model) with rows since the first window's start, found in the whole hours between
-- from the hourly projection (031, level 'h') and in the partial hours at both ends from the minutes.
-- A window is the running total of the minutes at its end less the one at its start, read in one pass
-- (a CTE is evaluated again at each reference): the first row of each key is doubled into that key's probes
-- (one per window end), the running totals are summed over each (level, key) in time order with a probe after
-- the rows up to its time, so that a probe reads the total at its time.
-- Rules that include it declare window_minutes and baseline_days and define `eval` first.
    bounds AS (
        SELECT min(t) - toIntervalDay({baseline_days:UInt32}) - toIntervalMinute({window_minutes:UInt32}) AS lo,
               max(t) AS hi, toStartOfHour(lo + toIntervalMinute(59)) AS first_hour, toStartOfHour(hi) AS end_hour
        FROM eval
    ),
    read_minutes AS (
        SELECT e.t - toIntervalDay(d) - toIntervalMinute(m + 1) AS minute
        FROM eval AS e
        ARRAY JOIN range(toUInt32({baseline_days:UInt32}) + 1) AS d
        ARRAY JOIN range(toUInt32({window_minutes:UInt32})) AS m
        UNION DISTINCT
        SELECT arrayJoin(arrayConcat(
                   arrayMap(m -> lo + toIntervalMinute(m), range(toUInt32(greatest(0, dateDiff('minute', lo, least(first_hour, hi)))))),
                   arrayMap(m -> greatest(end_hour, lo) + toIntervalMinute(m),
                            range(toUInt32(greatest(0, dateDiff('minute', greatest(end_hour, lo), hi)))))))
        FROM bounds
    ),
    series AS (
        SELECT 'm' AS level, service_name, project, feature, model, minute + 60 AS until,
               toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n,
               toFloat64(sum(input_tokens)) AS input, toFloat64(sum(cache_read_tokens)) AS cached
        FROM llm_rollup_1m
        WHERE minute IN (SELECT minute FROM read_minutes)
        GROUP BY service_name, project, feature, model, minute
        UNION ALL
        SELECT 'h', service_name, project, feature, model, toStartOfHour(minute) + 3600 AS until,
               toFloat64(sum(cost_usd)), toFloat64(sum(calls)), 0, 0
        FROM llm_rollup_1m
        WHERE toStartOfHour(minute) >= (SELECT first_hour FROM bounds) AND toStartOfHour(minute) < (SELECT end_hour FROM bounds)
        GROUP BY service_name, project, feature, model, toStartOfHour(minute)
    ),
    points AS (
        SELECT e.t AS t, d, toUInt8(1) AS probe, p.1 AS at, p.2 AS sign
        FROM eval AS e
        ARRAY JOIN range(toUInt32({baseline_days:UInt32}) + 1) AS d
        ARRAY JOIN [(e.t - toIntervalDay(d), 1),
                    (e.t - toIntervalDay(d) - toIntervalMinute({window_minutes:UInt32}), -1)] AS p
    ),
    swept AS (
        SELECT s.service_name AS service_name, s.project AS project, s.feature AS feature, s.model AS model, role,
               p.t AS t, p.d AS d, if(role = 0, s.level, 'm') AS level, if(role = 0, s.until, p.at) AS at,
               p.sign AS sign, if(role = 0, s.cost, 0) AS cost, if(role = 0, s.n, 0) AS n,
               if(role = 0, s.input, 0) AS input, if(role = 0, s.cached, 0) AS cached
        FROM (
            SELECT *, row_number() OVER (PARTITION BY service_name, project, feature, model ORDER BY level, until) AS rn
            FROM series
        ) AS s
        ARRAY JOIN if(rn = 1, [toUInt8(0), toUInt8(1)], [toUInt8(0)]) AS role
        LEFT JOIN points AS p ON role = p.probe
    ),
    windows AS (
        SELECT t, service_name, project, feature, model, d,
               sum(sign * run_cost) AS w_cost, sum(sign * run_n) AS w_n,
               sum(sign * run_input) AS w_input, sum(sign * run_cached) AS w_cached
        FROM (
            SELECT *, sum(cost) OVER w AS run_cost, sum(n) OVER w AS run_n,
                   sum(input) OVER w AS run_input, sum(cached) OVER w AS run_cached
            FROM swept
            WINDOW w AS (PARTITION BY level, service_name, project, feature, model ORDER BY at, role ROWS UNBOUNDED PRECEDING)
        )
        WHERE role = 1
        GROUP BY t, service_name, project, feature, model, d
    )
