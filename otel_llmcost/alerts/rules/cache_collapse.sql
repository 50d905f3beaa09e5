-- rule: cache_collapse
-- severity: warning
-- for: 10m
-- labels: service_name, project, feature
-- values: value, hit_rate, baseline_hit_rate, spend_usd, baseline_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: prompt-cache hit rate collapsed for {where}: {hit_rate:%} of input tokens cached vs {baseline_hit_rate:%} baseline; {spend_usd:$} in the last {window_minutes}m vs {baseline_usd:$} baseline; requests {calls:n} vs {baseline_calls:n}{top}
-- param window_minutes UInt32 60: the recent window, in minutes
-- param baseline_days UInt32 7: the baseline is the same window on each of this many previous days (pooled)
-- param min_baseline_hit_rate Float64 0.3: only features whose baseline hit rate was at least this
-- param drop Float64 0.5: fire when the hit rate fell by more than this share of its baseline (0.5 = halved)
-- param min_input_tokens UInt64 10000: windows with fewer input tokens never fire
WITH
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    -- include: _model_windows,
    per_key AS (
        SELECT t, service_name, project, feature,
               sumIf(w_cost, d = 0) AS spend_usd, sumIf(w_n, d = 0) AS calls,
               sumIf(w_input, d = 0) AS input, sumIf(w_cached, d = 0) AS cached,
               sumIf(w_cost, d > 0) AS base_cost, sumIf(w_n, d > 0) AS base_n,
               sumIf(w_input, d > 0) AS base_input, sumIf(w_cached, d > 0) AS base_cached,
               uniqExactIf(d, d > 0 AND w_n > 0) AS baseline_days,
               argMaxIf(model, w_cost, d = 0) AS top_model
        FROM windows
        GROUP BY t, service_name, project, feature
    ),
    rates AS (
        SELECT *, if(input > 0, cached / input, 0) AS hit_rate,
               if(base_input > 0, base_cached / base_input, 0) AS baseline_hit_rate
        FROM per_key
    )
SELECT
    t AS eval_time, service_name, project, feature,
    -- conditions multiplied, not ANDed (same result): analysing AND chains of comparisons costs ms
    toUInt8((input >= {min_input_tokens:UInt64}) *
            (baseline_hit_rate >= {min_baseline_hit_rate:Float64}) *
            (hit_rate < baseline_hit_rate * (1 - {drop:Float64}))) AS firing,
    if(baseline_hit_rate > 0, hit_rate / baseline_hit_rate, 0) AS value,
    hit_rate, baseline_hit_rate, spend_usd,
    if(baseline_days > 0, base_cost / baseline_days, 0) AS baseline_usd,
    calls, if(baseline_days > 0, base_n / baseline_days, 0) AS baseline_calls,
    top_model, feature AS top_feature
FROM rates
