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
        -- the minutes the windows read by the minute (the minutes of `grid`)
        SELECT at AS minute FROM grid WHERE level = 'm'
    ),
    -- include: _budgets,
    -- include: _budget_spend,
    grid AS (
        -- the units of each evaluation time's windows (the long and the short window, and the long one a day
        -- earlier): the minutes up to its first whole hour, its whole hours ('h'), the minutes of its last hour
        SELECT t, win, u.1 AS level, u.2 AS at
        FROM (
            SELECT e.t AS t, w.2 AS win, e.t - toIntervalDay(w.3) AS x_end, x_end - toIntervalMinute(w.1) AS x_start,
                   toStartOfHour(x_end) AS x_hour, toStartOfHour(x_start + toIntervalMinute(59)) AS x_first
            FROM eval AS e
            ARRAY JOIN [(toUInt32({long_window_minutes:UInt32}), 'long', 0), (toUInt32({short_window_minutes:UInt32}), 'short', 0),
                        (toUInt32({long_window_minutes:UInt32}), 'long_yesterday', 1)] AS w
        )
        ARRAY JOIN if(x_first >= x_hour,
                      arrayMap(i -> ('m', x_start + toIntervalMinute(i)), range(toUInt32(dateDiff('minute', x_start, x_end)))),
                      arrayConcat(
                          arrayMap(i -> ('m', x_start + toIntervalMinute(i)), range(toUInt32(dateDiff('minute', x_start, x_first)))),
                          arrayMap(i -> ('h', x_first + toIntervalHour(i)), range(toUInt32(dateDiff('hour', x_first, x_hour)))),
                          arrayMap(i -> ('m', x_hour + toIntervalMinute(i)), range(toUInt32(dateDiff('minute', x_hour, x_end))))))
                   AS u
    ),
    windows AS (
        -- a unit of `series` is counted in each window it falls in (role 0); role 1 and units in no window give
        -- t0 = 0: one row per (scope, feature, model), made a row of zeros at every evaluation time, so that a
        -- budget whose scope has rows in `since` has a row at every t
        SELECT t, scope, scope_value, feature, model, win, if(t0 = 0, 0, w_cost) AS w_cost, if(t0 = 0, 0, w_n) AS w_n
        FROM (
            SELECT g.t AS t0, g.win AS win, scope, scope_value, feature, model, sum(cost) AS w_cost, sum(n) AS w_n
            FROM series AS s
            ARRAY JOIN [0, 1] AS role
            LEFT JOIN grid AS g ON if(role = 0, s.level, '') = g.level AND s.at = g.at
            GROUP BY t0, win, scope, scope_value, feature, model
        )
        ARRAY JOIN if(t0 = 0, (SELECT groupArray(t) FROM eval), [t0]) AS t
    ),
    per_budget AS (
        -- the windows do not depend on the period: a scope's rows count for each of its budgets
        SELECT t, scope, scope_value, period, any(bud.2[indexOf(bud.1, (scope, scope_value, period))]) AS budget_usd,
               if(period = 'day', 1440, toDayOfMonth(toLastDayOfMonth(t)) * 1440) AS period_minutes,
               sumIf(w_cost, win = 'long') AS spend_usd, sumIf(w_cost, win = 'short') AS short_spend,
               sumIf(w_n, win = 'long') AS calls, sumIf(w_n, win = 'long_yesterday') AS baseline_calls,
               argMaxIf(model, w_cost, win = 'long') AS top_model, argMaxIf(feature, w_cost, win = 'long') AS top_feature
        FROM windows
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
