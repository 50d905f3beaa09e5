-- rule: budget_burn_fast
-- severity: page
-- for: 0s
-- labels: service_name, project, feature, scope, scope_value, period
-- values: value, short_burn_rate, spend_usd, budget_usd, calls, baseline_calls
-- texts: top_model, top_feature
-- summary: budget burning fast ({scope} {scope_value}, {period} budget ${budget_usd:$}): {value:x} the even pace over {long_window_minutes}m and {short_burn_rate:x} over {short_window_minutes}m; ${spend_usd:$} in the last {long_window_minutes}m; requests {calls:n} vs {baseline_calls:n} in the same window yesterday; top {top_model} / {top_feature}
-- param long_window_minutes UInt32 60: the long window, in minutes
-- param short_window_minutes UInt32 5: the short window, in minutes (makes the alert resolve quickly)
-- param burn_rate Float64 14.4: fire when both windows spend faster than this many times the even pace (budget / period length)
--
-- Multi-window burn rate (Google SRE workbook) applied to spend: the even pace of a budget is its amount spread
-- over its period (a day, or the days of the current month); a window's burn rate is its spend over what the
-- even pace allows in that window. Budgets are rows of llm_budgets (scope all | project | feature | user).
WITH
    eval AS (SELECT toStartOfMinute($__toTime) AS t),
    since AS (SELECT (SELECT min(t) FROM eval) - toIntervalDay(1) - toIntervalMinute({long_window_minutes:UInt32}) AS lo,
                     (SELECT max(t) FROM eval) AS hi),
    -- include: _budget_spend,
    grid AS (
        -- per budget and evaluation time: the long window, the short window, and the long window a day earlier
        SELECT e.t AS t, k.scope AS scope, k.scope_value AS scope_value, k.feature AS feature, k.model AS model,
               b.period AS period, b.amount AS amount, w, d, which,
               e.t - toIntervalDay(d) AS x_end, x_end - toIntervalMinute(w) AS x_start
        FROM eval AS e
        CROSS JOIN (SELECT DISTINCT scope, scope_value, feature, model FROM series) AS k
        INNER JOIN budgets AS b ON b.scope = k.scope AND b.scope_value = k.scope_value
        ARRAY JOIN [toUInt32({long_window_minutes:UInt32}), toUInt32({short_window_minutes:UInt32}),
                    toUInt32({long_window_minutes:UInt32})] AS w, [0, 0, 1] AS d, ['long', 'short', 'long_yesterday'] AS which
    ),
    windows AS (
        SELECT g.t AS t, g.scope AS scope, g.scope_value AS scope_value, g.period AS period, g.amount AS amount,
               g.feature AS feature, g.model AS model, g.which AS which, g.w AS w,
               hi.run_cost - lo.run_cost AS w_cost, hi.run_n - lo.run_n AS w_n
        FROM grid AS g
        ASOF LEFT JOIN running AS hi
            ON g.scope = hi.scope AND g.scope_value = hi.scope_value AND g.feature = hi.feature
               AND g.model = hi.model AND g.x_end >= hi.until
        ASOF LEFT JOIN running AS lo
            ON g.scope = lo.scope AND g.scope_value = lo.scope_value AND g.feature = lo.feature
               AND g.model = lo.model AND g.x_start >= lo.until
    ),
    per_budget AS (
        SELECT t, scope, scope_value, period, any(amount) AS budget_usd,
               if(period = 'day', 1440, toDayOfMonth(toLastDayOfMonth(t)) * 1440) AS period_minutes,
               sumIf(w_cost, which = 'long') AS spend_usd, sumIf(w_cost, which = 'short') AS short_spend,
               sumIf(w_n, which = 'long') AS calls, sumIf(w_n, which = 'long_yesterday') AS baseline_calls,
               argMaxIf(model, w_cost, which = 'long') AS top_model, argMaxIf(feature, w_cost, which = 'long') AS top_feature
        FROM windows
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
    toUInt8(long_burn_rate > {burn_rate:Float64} AND short_burn_rate > {burn_rate:Float64}) AS firing,
    long_burn_rate AS value, short_burn_rate, spend_usd, budget_usd, calls, baseline_calls, top_model, top_feature
FROM rates
