-- Shared CTEs (not a rule): per budget and evaluation time, the spend and requests of the period so far
-- (d = 0) and of the same span of the previous period (d = 1), with the top model and feature, as `per_budget`.
-- A window [x_start, x_end) starts on a whole hour: its whole hours [x_start, x_hour) are the difference of the
-- hourly running totals at x_hour and x_start, the minutes of its last, partial hour [x_hour, x_end) that of
-- the per-minute ones at x_end and x_hour (`minutes` in the rules holds those minutes).
    points AS (
        -- per budget, evaluation time and window: where the running totals are read, and with which sign
        SELECT e.t AS t, b.scope AS scope, b.scope_value AS scope_value, b.period AS period, b.amount AS amount, d AS win,
               if(b.period = 'day', toStartOfDay(e.t), toDateTime(toStartOfMonth(e.t), 'UTC')) AS period_start,
               if(d = 0, e.t, if(b.period = 'day', e.t - toIntervalDay(1), e.t - toIntervalMonth(1))) AS x_end,
               if(d = 0, period_start, if(b.period = 'day', period_start - toIntervalDay(1), period_start - toIntervalMonth(1))) AS x_start,
               toStartOfHour(x_end) AS x_hour, p.1 AS level, p.2 AS at, p.3 AS sign
        FROM eval AS e
        CROSS JOIN budgets AS b
        ARRAY JOIN [0, 1] AS d
        ARRAY JOIN [('h', x_hour, 1), ('h', x_start, -1), ('m', x_end, 1), ('m', x_hour, -1)] AS p
    ),
    per_budget AS (
        SELECT t, scope, scope_value, period, any(amount) AS budget_usd,
               sumIf(w_cost, win = 0) AS spend_usd, sumIf(w_n, win = 0) AS calls, sumIf(w_n, win = 1) AS baseline_calls,
               argMaxIf(model, w_cost, win = 0) AS top_model, argMaxIf(feature, w_cost, win = 0) AS top_feature
        FROM windows
        GROUP BY t, scope, scope_value, period
    )
