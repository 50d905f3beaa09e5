-- rule: budget_projection
-- severity: warning
-- for: 30m
-- labels: service_name, project, feature, scope, scope_value, period
-- values: value, projected_usd, spend_usd, budget_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: projected to overrun the {period} budget ({budget}): {projected_usd:$} by the end of the {period} at the current pace vs {budget_usd:$} budget ({value:%}); {spend_usd:$} so far; requests {calls:n} vs {baseline_calls:n} by this time last {period}{top}
-- param margin Float64 0: fire when the projection exceeds the budget by more than this share (0 = any overrun)
-- param min_elapsed Float64 0.1: project only once this share of the period has passed (0.1 = 3 days of a month)
-- param periods_month_only UInt8 1: 1 = monthly budgets only (the month-end projection); 0 = daily ones too
--
-- The projection is the period's spend so far at its average pace so far, over the whole period.
WITH
    -- include: _budget_windows,
    -- include: _budgets,
    -- include: _budget_period
SELECT
    t AS eval_time, '' AS service_name, if(scope = 'project', scope_value, '') AS project,
    if(scope = 'feature', scope_value, '') AS feature, scope, scope_value, period,
    -- conditions multiplied, not ANDed (same result): analysing AND chains of comparisons costs ms
    toUInt8((elapsed >= {min_elapsed:Float64}) *
            ((period = 'month' OR {periods_month_only:UInt8} = 0)) *
            (projected_usd > budget_usd * (1 + {margin:Float64}))) AS firing,
    projected_usd / budget_usd AS value, projected_usd, spend_usd, budget_usd, calls, baseline_calls, top_model, top_feature
FROM (
    SELECT *,
           if(period = 'day', 86400, toDayOfMonth(toLastDayOfMonth(t)) * 86400) AS period_seconds,
           (toUnixTimestamp(t) - toUnixTimestamp(if(period = 'day', toStartOfDay(t), toDateTime(toStartOfMonth(t), 'UTC'))))
               / period_seconds AS elapsed,
           if(elapsed > 0, spend_usd / elapsed, 0) AS projected_usd
    FROM per_budget
)
