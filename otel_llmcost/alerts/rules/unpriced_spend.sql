-- rule: unpriced_spend
-- severity: warning
-- for: 0s
-- labels: service_name, project, feature, model
-- values: value, calls, unpriced, no_usage, estimated, rough_usd
-- texts: top_model, top_feature
-- summary: calls without an exact cost for {where}: {value:n} of {calls:n} requests to {model} in the last {window_minutes}m ({unpriced:n} without a price, {no_usage:n} without usage: roughly {rough_usd:$} missing from every total; {estimated:n} with estimated usage){top}
-- param window_minutes UInt32 60: the recent window, in minutes
-- param min_unpriced_calls UInt32 1: fire from this many calls without an exact cost in the window
-- Calls without an exact cost, by price status (llm_spans): `unpriced` (usage known, no price) and `no_usage` (no
-- usage known, a failed call aside: it is not billed) are in no spend total; `estimated` (usage estimated, e.g. a stream cut short) is, but may be off.
-- rough_usd: the unpriced and no_usage calls at the average cost of the same instance's priced calls in the window,
-- or of every priced call in the window (the `k_all` series) when the instance has none.
WITH
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    series AS (
        SELECT 0 AS k_all, service_name, project, feature, model, minute,
               sum(f_unpriced) AS unpriced, sum(f_no_usage) AS no_usage, sum(f_estimated) AS estimated,
               sum(f_n) AS n, sum(f_cost) AS cost
        FROM (
            SELECT service_name, project, feature, model, minute, toFloat64(0) AS f_unpriced,
                   toFloat64(0) AS f_no_usage, toFloat64(0) AS f_estimated,
                   toFloat64(sum(calls)) AS f_n, toFloat64(sum(cost_usd)) AS f_cost
            FROM llm_rollup_1m
            WHERE minute >= (SELECT min(t) FROM eval) - toIntervalMinute({window_minutes:UInt32})
              AND minute < (SELECT max(t) FROM eval)
            GROUP BY service_name, project, feature, model, minute
            UNION ALL
            -- a span re-sent within its minute is counted once (uniqExact of its key)
            SELECT service_name, project, feature, if(response_model != '', response_model, request_model) AS model,
                   toStartOfMinute(timestamp) AS minute,
                   toFloat64(uniqExactIf((trace_id, span_id), price_status = 'unpriced')),
                   toFloat64(uniqExactIf((trace_id, span_id), price_status = 'no_usage')),
                   toFloat64(uniqExactIf((trace_id, span_id), price_status = 'estimated')),
                   toFloat64(0), toFloat64(0)
            FROM llm_spans
            WHERE timestamp >= (SELECT min(t) FROM eval) - toIntervalMinute({window_minutes:UInt32})
              AND timestamp < (SELECT max(t) FROM eval)
              AND price_status IN ('unpriced', 'no_usage', 'estimated') AND cache_hit_kind = ''
              AND NOT (price_status = 'no_usage' AND status_code = 'ERROR')  -- a failed call is not billed
            GROUP BY service_name, project, feature, model, minute
        )
        GROUP BY service_name, project, feature, model, minute
        UNION ALL
        SELECT 1, '', '', '', '', minute, 0, 0, 0, toFloat64(sum(calls) - sum(unpriced_calls)), toFloat64(sum(cost_usd))
        FROM llm_rollup_1m
        WHERE minute >= (SELECT min(t) FROM eval) - toIntervalMinute({window_minutes:UInt32})
          AND minute < (SELECT max(t) FROM eval)
        GROUP BY minute
    ),
    running AS (
        SELECT k_all, service_name, project, feature, model, minute + 60 AS until,
               sum(unpriced) OVER w AS run_unpriced, sum(no_usage) OVER w AS run_no_usage,
               sum(estimated) OVER w AS run_estimated, sum(n) OVER w AS run_n, sum(cost) OVER w AS run_cost
        FROM series
        WINDOW w AS (PARTITION BY k_all, service_name, project, feature, model ORDER BY minute ROWS UNBOUNDED PRECEDING)
    ),
    grid AS (
        SELECT e.t AS t, k.k_all AS k_all, k.service_name AS service_name, k.project AS project, k.feature AS feature,
               k.model AS model, e.t AS x_end, e.t - toIntervalMinute({window_minutes:UInt32}) AS x_start
        FROM eval AS e
        CROSS JOIN (SELECT DISTINCT k_all, service_name, project, feature, model FROM series
                    WHERE k_all = 1 OR unpriced + no_usage + estimated > 0) AS k
    ),
    windows AS (
        SELECT g.t AS t, g.k_all AS k_all, g.service_name AS service_name, g.project AS project,
               g.feature AS feature, g.model AS model,
               hi.run_unpriced - lo.run_unpriced AS unpriced, hi.run_no_usage - lo.run_no_usage AS no_usage,
               hi.run_estimated - lo.run_estimated AS estimated, hi.run_n - lo.run_n AS calls,
               hi.run_cost - lo.run_cost AS cost
        FROM grid AS g
        ASOF LEFT JOIN running AS hi
            ON g.k_all = hi.k_all AND g.service_name = hi.service_name AND g.project = hi.project
               AND g.feature = hi.feature AND g.model = hi.model AND g.x_end >= hi.until
        ASOF LEFT JOIN running AS lo
            ON g.k_all = lo.k_all AND g.service_name = lo.service_name AND g.project = lo.project
               AND g.feature = lo.feature AND g.model = lo.model AND g.x_start >= lo.until
    )
SELECT
    w.t AS eval_time, w.service_name AS service_name, w.project AS project, w.feature AS feature, w.model AS model,
    toUInt8(w.unpriced + w.no_usage + w.estimated >= {min_unpriced_calls:UInt32}) AS firing,
    w.unpriced + w.no_usage + w.estimated AS value, w.calls AS calls, w.unpriced AS unpriced, w.no_usage AS no_usage,
    w.estimated AS estimated,
    (w.unpriced + w.no_usage) * if(w.calls - w.unpriced - w.no_usage > 0, w.cost / (w.calls - w.unpriced - w.no_usage),
                                   a.cost / greatest(a.calls, 1)) AS rough_usd,
    w.model AS top_model, w.feature AS top_feature
FROM windows AS w
LEFT JOIN (SELECT t, cost, calls FROM windows WHERE k_all = 1) AS a ON w.t = a.t
WHERE w.k_all = 0
