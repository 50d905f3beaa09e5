-- rule: cost_per_request_jump
-- severity: warning
-- for: 10m
-- labels: service_name, project, feature, model
-- values: value, cost_per_request_usd, baseline_cost_per_request_usd, spend_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: cost per request of {model} up {value:x} for {where}: {cost_per_request_usd:$} vs {baseline_cost_per_request_usd:$} baseline, {spend_usd:$} in the last {window_minutes}m; requests {calls:n} vs {baseline_calls:n}{top}
-- param window_minutes UInt32 60: the recent window, in minutes
-- param baseline_days UInt32 7: the baseline is the same window on each of this many previous days (pooled)
-- param jump Float64 0.5: fire when the cost per request grew by more than this (0.5 = +50%)
-- param min_calls UInt32 10: windows with fewer requests never fire
-- param min_spend_usd Float64 0.5: windows that spent less than this never fire
WITH
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    -- include: _model_windows,
    per_key AS (
        SELECT t, service_name, project, feature, model,
               sumIf(w_cost, d = 0) AS spend_usd, sumIf(w_n, d = 0) AS calls,
               sumIf(w_cost, d > 0) AS base_cost, sumIf(w_n, d > 0) AS base_n,
               countIf(d > 0 AND w_n > 0) AS baseline_days
        FROM windows
        GROUP BY t, service_name, project, feature, model
    )
SELECT
    t AS eval_time, service_name, project, feature, model,
    -- conditions multiplied, not ANDed (same result): analysing AND chains of comparisons costs ms
    toUInt8((calls >= {min_calls:UInt32}) * (spend_usd >= {min_spend_usd:Float64}) * (base_n > 0) *
            (base_cost > 0) * (spend_usd / calls > base_cost / base_n * (1 + {jump:Float64}))) AS firing,
    if(calls > 0 AND base_cost > 0, (spend_usd / calls) / (base_cost / base_n), 0) AS value,
    if(calls > 0, spend_usd / calls, 0) AS cost_per_request_usd,
    if(base_n > 0, base_cost / base_n, 0) AS baseline_cost_per_request_usd,
    spend_usd, calls, if(baseline_days > 0, base_n / baseline_days, 0) AS baseline_calls,
    model AS top_model, feature AS top_feature
FROM per_key
