-- Shared CTEs (not a rule): the current budgets (rows of llm_budgets, see otel_llmcost/budgets.py) as one scalar
-- `bud`: keys (scope, scope_value, period), amounts, scopes (scope, scope_value), users with a budget. A scalar
-- rather than a table: at these sizes ClickHouse's analysis and planning of each sub-query is most of the time.
    (SELECT (groupArray((scope, if(scope = 'all', '', scope_value), period)), groupArray(toFloat64(amount_usd)),
             groupArray((scope, if(scope = 'all', '', scope_value))), groupArrayIf(scope_value, scope = 'user'))
     FROM llm_budgets FINAL WHERE is_deleted = 0 AND amount_usd > 0 AND period IN ('day', 'month')) AS bud
