-- Shared CTEs (not a rule): per budget and evaluation time, the spend and requests of the period so far
-- (d = 0) and of the same span of the previous period (d = 1), with the top model and feature, as `per_budget`.
    grid AS (
        -- per budget and evaluation time: the period so far, and the same span of the previous period
        SELECT e.t AS t, k.scope AS scope, k.scope_value AS scope_value, k.feature AS feature, k.model AS model,
               b.period AS period, b.amount AS amount, d,
               if(b.period = 'day', toStartOfDay(e.t), toDateTime(toStartOfMonth(e.t), 'UTC')) AS period_start,
               if(d = 0, e.t, if(b.period = 'day', e.t - toIntervalDay(1), e.t - toIntervalMonth(1))) AS x_end,
               if(d = 0, period_start, if(b.period = 'day', period_start - toIntervalDay(1), period_start - toIntervalMonth(1))) AS x_start
        FROM eval AS e
        CROSS JOIN (SELECT DISTINCT scope, scope_value, feature, model FROM series) AS k
        INNER JOIN budgets AS b ON b.scope = k.scope AND b.scope_value = k.scope_value
        ARRAY JOIN [0, 1] AS d
    ),
    windows AS (
        SELECT g.t AS t, g.scope AS scope, g.scope_value AS scope_value, g.period AS period, g.amount AS amount,
               g.feature AS feature, g.model AS model, g.d AS d,
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
               sumIf(w_cost, d = 0) AS spend_usd, sumIf(w_n, d = 0) AS calls, sumIf(w_n, d = 1) AS baseline_calls,
               argMaxIf(model, w_cost, d = 0) AS top_model, argMaxIf(feature, w_cost, d = 0) AS top_feature
        FROM windows
        GROUP BY t, scope, scope_value, period
    )
