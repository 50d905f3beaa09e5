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
    since AS (SELECT min(t) - toIntervalDay(1) - toIntervalMinute({long_window_minutes:UInt32}) AS lo, max(t) AS hi FROM eval),
    minutes AS (
        -- the minutes of the windows: the last long (or short) window, and the long window a day earlier
        SELECT DISTINCT e.t - toIntervalDay(d) - toIntervalMinute(m + 1) AS minute
        FROM eval AS e
        ARRAY JOIN [0, 1] AS d
        ARRAY JOIN range(greatest(toUInt32({long_window_minutes:UInt32}), toUInt32({short_window_minutes:UInt32}))) AS m
    ),
    -- include: _budget_spend,
    points AS (
        -- per budget and evaluation time: the long window, the short window, and the long window a day earlier,
        -- each the running total of the minutes at its end less the one at its start
        SELECT e.t AS t, b.scope AS scope, b.scope_value AS scope_value, b.period AS period, b.amount AS amount,
               win, e.t - toIntervalDay(d) AS x_end, x_end - toIntervalMinute(w) AS x_start,
               'm' AS level, p.1 AS at, p.2 AS sign
        FROM eval AS e
        CROSS JOIN budgets AS b
        ARRAY JOIN [toUInt32({long_window_minutes:UInt32}), toUInt32({short_window_minutes:UInt32}),
                    toUInt32({long_window_minutes:UInt32})] AS w, [0, 0, 1] AS d, ['long', 'short', 'long_yesterday'] AS win
        ARRAY JOIN [(x_end, 1), (x_start, -1)] AS p
    ),
    per_budget AS (
        SELECT t, scope, scope_value, period, any(amount) AS budget_usd,
               if(period = 'day', 1440, toDayOfMonth(toLastDayOfMonth(t)) * 1440) AS period_minutes,
               sumIf(w_cost, win = 'long') AS spend_usd, sumIf(w_cost, win = 'short') AS short_spend,
               sumIf(w_n, win = 'long') AS calls, sumIf(w_n, win = 'long_yesterday') AS baseline_calls,
               argMaxIf(model, w_cost, win = 'long') AS top_model, argMaxIf(feature, w_cost, win = 'long') AS top_feature
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
