-- rule: budget_threshold
-- severity: warning
-- for: 0s
-- labels: service_name, project, feature, scope, scope_value, period, threshold
-- values: value, spend_usd, budget_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: {threshold} of the {period} budget reached ({budget}): {spend_usd:$} of {budget_usd:$} ({value:%}) so far this {period}; requests {calls:n} vs {baseline_calls:n} by this time last {period}{top}
-- param warn_ratio Float64 0.8: the first threshold (0.8 = 80% of the budget); the second is always 100%
WITH
    -- include: _budget_windows,
    -- include: _budgets,
    -- include: _budget_period
SELECT
    t AS eval_time, '' AS service_name, if(scope = 'project', scope_value, '') AS project,
    if(scope = 'feature', scope_value, '') AS feature, scope, scope_value, period,
    concat(toString(toUInt32(round(level * 100))), '%') AS threshold,
    toUInt8(spend_usd >= budget_usd * level) AS firing,
    spend_usd / budget_usd AS value, spend_usd, budget_usd, calls, baseline_calls, top_model, top_feature
FROM per_budget
ARRAY JOIN [toFloat64({warn_ratio:Float64}), 1.0] AS level
