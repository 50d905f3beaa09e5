-- rule: spend_spike_without_traffic
-- severity: warning
-- for: 5m
-- labels: service_name, project, feature
-- values: value, spend_usd, baseline_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: spend up {value:x} without traffic for {where}: {spend_usd:$} in the last {window_minutes}m vs {baseline_usd:$} baseline; requests {calls:n} vs {baseline_calls:n}{top}
-- param window_minutes UInt32 60: the recent window, in minutes
-- param baseline_days UInt32 7: the baseline is the median of the same window on each of this many previous days (days without traffic left out; the median ignores the weekend in a weekday's baseline)
-- param spend_growth Float64 0.5: fire when spend grew by more than this over its baseline (0.5 = +50%) ...
-- param traffic_growth Float64 0.1: ... while requests grew by less than this (0.1 = +10%)
-- param min_spend_usd Float64 0.5: windows that spent less than this never fire
-- param min_baseline_days UInt32 2: fire only with at least this many baseline days of traffic
--
-- Evaluation times: `eval` holds them; Grafana expands $__toTime to the evaluation time (one row), the
-- backtest to every step of its range. Every window is [start, end) in whole minutes, read from running
-- totals per key (ASOF joins), so many evaluation times cost one pass over the rollup.
WITH
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    -- include: _model_windows,
    per_day AS (
        SELECT t, service_name, project, feature, d, sum(w_cost) AS cost, sum(w_n) AS n, argMax(model, w_cost) AS top_model
        FROM windows
        GROUP BY t, service_name, project, feature, d
    ),
    per_key AS (
        SELECT t, service_name, project, feature,
               sumIf(cost, d = 0) AS spend_usd, quantileExactIf(0.5)(cost, d > 0 AND n > 0) AS baseline_usd,
               sumIf(n, d = 0) AS calls, quantileExactIf(0.5)(n, d > 0 AND n > 0) AS baseline_calls,
               countIf(d > 0 AND n > 0) AS baseline_days, anyIf(top_model, d = 0) AS top_model
        FROM per_day
        GROUP BY t, service_name, project, feature
    )
SELECT
    t AS eval_time, service_name, project, feature,
    -- conditions multiplied, not ANDed (same result): analysing AND chains of comparisons costs ms
    toUInt8((spend_usd >= {min_spend_usd:Float64}) * (baseline_days >= {min_baseline_days:UInt32}) *
            (baseline_usd > 0) * (spend_usd > baseline_usd * (1 + {spend_growth:Float64})) *
            (calls < baseline_calls * (1 + {traffic_growth:Float64}))) AS firing,
    if(baseline_usd > 0, spend_usd / baseline_usd, 0) AS value,
    spend_usd, ifNotFinite(baseline_usd, 0) AS baseline_usd, calls, ifNotFinite(baseline_calls, 0) AS baseline_calls,
    top_model, feature AS top_feature
FROM per_key
