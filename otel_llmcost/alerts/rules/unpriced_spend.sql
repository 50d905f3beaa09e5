-- rule: unpriced_spend
-- severity: warning
-- for: 0s
-- labels: service_name, project, feature, model
-- values: value, calls
-- texts: top_model, top_feature
-- summary: calls to a model without a price for {service_name} / {project} / {feature}: {value:n} of {calls:n} requests to {model} in the last {window_minutes}m have no cost (spend not counted); top {top_model} / {top_feature}
-- param window_minutes UInt32 60: the recent window, in minutes
-- param min_unpriced_calls UInt32 1: fire from this many unpriced calls in the window
WITH
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    series AS (
        SELECT service_name, project, feature, model, minute,
               toFloat64(sum(unpriced_calls)) AS unpriced, toFloat64(sum(calls)) AS n
        FROM llm_rollup_1m
        WHERE minute >= (SELECT min(t) FROM eval) - toIntervalMinute({window_minutes:UInt32})
          AND minute < (SELECT max(t) FROM eval)
        GROUP BY service_name, project, feature, model, minute
    ),
    running AS (
        SELECT service_name, project, feature, model, minute + 60 AS until,
               sum(unpriced) OVER w AS run_unpriced, sum(n) OVER w AS run_n
        FROM series
        WINDOW w AS (PARTITION BY service_name, project, feature, model ORDER BY minute ROWS UNBOUNDED PRECEDING)
    ),
    grid AS (
        SELECT e.t AS t, k.service_name AS service_name, k.project AS project, k.feature AS feature,
               k.model AS model, e.t AS x_end, e.t - toIntervalMinute({window_minutes:UInt32}) AS x_start
        FROM eval AS e
        CROSS JOIN (SELECT DISTINCT service_name, project, feature, model FROM series WHERE unpriced > 0) AS k
    ),
    windows AS (
        SELECT g.t AS t, g.service_name AS service_name, g.project AS project, g.feature AS feature, g.model AS model,
               hi.run_unpriced - lo.run_unpriced AS unpriced, hi.run_n - lo.run_n AS calls
        FROM grid AS g
        ASOF LEFT JOIN running AS hi
            ON g.service_name = hi.service_name AND g.project = hi.project AND g.feature = hi.feature
               AND g.model = hi.model AND g.x_end >= hi.until
        ASOF LEFT JOIN running AS lo
            ON g.service_name = lo.service_name AND g.project = lo.project AND g.feature = lo.feature
               AND g.model = lo.model AND g.x_start >= lo.until
    )
SELECT
    t AS eval_time, service_name, project, feature, model,
    toUInt8(unpriced >= {min_unpriced_calls:UInt32}) AS firing,
    unpriced AS value, calls, model AS top_model, feature AS top_feature
FROM windows
