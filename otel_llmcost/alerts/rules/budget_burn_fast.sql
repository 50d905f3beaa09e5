-- rule: budget_burn_fast
-- severity: page
-- for: 0s
-- labels: service_name, project, feature, scope, scope_value, period
-- values: value, short_burn_rate, spend_usd, budget_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: budget burning fast ({budget}, {period} budget {budget_usd:$}): {value:x} the even pace over {long_window_minutes}m and {short_burn_rate:x} over {short_window_minutes}m; {spend_usd:$} in the last {long_window_minutes}m; requests {calls:n} vs {baseline_calls:n} in the same window yesterday{top}
-- param long_window_minutes UInt32 60: the long window, in minutes
-- param short_window_minutes UInt32 5: the short window, in minutes (makes the alert resolve quickly)
-- param burn_rate Float64 14.4: fire when both windows spend faster than this many times the even pace (budget / period length)
--
-- Multi-window burn rate (Google SRE workbook) applied to spend: the even pace of a budget is its amount spread
-- over its period (a day, or the days of the current month); a window's burn rate is its spend over what the
-- even pace allows in that window. Budgets are rows of llm_budgets (scope all | project | feature | user).
WITH
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    -- include: _budgets,
    -- include: _budget_spend,
    per_budget AS (
        -- the windows do not depend on the period: a scope's rows count for each of its budgets
        SELECT t, scope, scope_value, period, any(bud.2[indexOf(bud.1, (scope, scope_value, period))]) AS budget_usd,
               if(period = 'day', 1440, toDayOfMonth(toLastDayOfMonth(t)) * 1440) AS period_minutes,
               sumIf(c, win = 1) AS spend_usd, sumIf(c, win = 2) AS short_spend,
               sumIf(k, win = 1) AS calls, sumIf(k, win = 3) AS baseline_calls,
               argMaxIf(model, c, win = 1) AS top_model, argMaxIf(feature, c, win = 1) AS top_feature
        FROM (
            -- a unit counts in each window of `wm` under its key that it lies in; its extra row at t0 = 0 (win 0) is made
            -- a row of zeros at every t: a budget whose scope has rows in [lo, hi) has a row at every t
            SELECT x.1 AS t0, x.2 AS win, scope, scope_value, feature, model, sum(cost) AS c, sum(n) AS k
            FROM units
            ARRAY JOIN arrayPushBack(arrayFilter(w -> at >= w.3 AND at < w.4, wm[key]), (toDateTime(0, 'UTC'), 0, at, at)) AS x
            GROUP BY t0, win, scope, scope_value, feature, model
        )
        ARRAY JOIN if(t0 = 0, sb.6, [t0]) AS t
        ARRAY JOIN ['day', 'month'] AS period
        WHERE indexOf(bud.1, (scope, scope_value, period)) > 0
        GROUP BY t, scope, scope_value, period
    ),
    rates AS (
        SELECT *,
               spend_usd / (budget_usd * {long_window_minutes:UInt32} / period_minutes) AS long_burn_rate,
               short_spend / (budget_usd * {short_window_minutes:UInt32} / period_minutes) AS short_burn_rate
        FROM per_budget
    )
SELECT
    t AS eval_time, '' AS service_name, if(scope = 'project', scope_value, '') AS project,
    if(scope = 'feature', scope_value, '') AS feature, scope, scope_value, period,
    -- conditions multiplied, not ANDed (same result): analysing AND chains of comparisons costs ms
    toUInt8((long_burn_rate > {burn_rate:Float64}) * (short_burn_rate > {burn_rate:Float64})) AS firing,
    long_burn_rate AS value, short_burn_rate, spend_usd, budget_usd, calls, baseline_calls, top_model, top_feature
FROM rates
