-- Shared CTEs (not a rule): the current budgets (rows of llm_budgets, see otel_llmcost/budgets.py), as the
-- table `budgets` and as the scalar `bud`.
    budgets AS (
        SELECT scope, if(scope = 'all', '', scope_value) AS scope_value, period, toFloat64(amount_usd) AS amount
        FROM llm_budgets FINAL
        WHERE is_deleted = 0 AND amount_usd > 0 AND period IN ('day', 'month')
    ),
    -- the same as one scalar: keys (scope, scope_value, period), amounts, scopes (scope, scope_value), users
    (SELECT (groupArray((scope, scope_value, period)), groupArray(amount), groupArray((scope, scope_value)),
             groupArrayIf(scope_value, scope = 'user'))
     FROM budgets) AS bud
