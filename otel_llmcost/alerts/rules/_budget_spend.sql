-- Shared CTEs (not a rule): the current budgets (llm_budgets) and `windows`: per budget, evaluation time and
-- window of the rule's `points`, the spend and requests of each (feature, model) of the budget's scope (all,
-- project, feature, user) with spend or requests between `since`.lo and `since`.hi. Rules that include it
-- define `eval`, `since`, `minutes` (the minutes their windows read by the minute, within `since`) and
-- `points` (t, scope, scope_value, period, amount, win, level, at, sign: a window is the sum of sign x the
-- running total of its level at `at`).
-- `series` holds the spend per minute (level 'm') in `minutes` and in the partial hours at both ends, and per
-- hour (level 'h', read from the rollups' hourly projections, 031) in the whole hours between: a month so far
-- is a few hundred hourly rows and the minutes of its last hour, not tens of thousands of minute rows.
-- `swept` and `windows` read the running totals in one pass over `series` (a CTE is evaluated again at each
-- reference, so no self-join): the first row of each key is doubled into that key's probes (one per point of
-- its scope); the running totals are summed over each (level, key) in time order, a row counted at its end
-- (`until`) and a probe after the rows up to its time, so that a probe reads the total at its time.
    budgets AS (
        SELECT scope, if(scope = 'all', '', scope_value) AS scope_value, period, toFloat64(amount_usd) AS amount
        FROM llm_budgets FINAL
        WHERE is_deleted = 0 AND amount_usd > 0 AND period IN ('day', 'month')
    ),
    bounds AS (
        SELECT lo, hi, toStartOfHour(lo + toIntervalMinute(59)) AS first_hour, toStartOfHour(hi) AS end_hour FROM since
    ),
    read_minutes AS (
        SELECT minute FROM minutes
        UNION DISTINCT
        SELECT lo + toIntervalMinute(m) FROM bounds
        ARRAY JOIN range(toUInt32(greatest(0, dateDiff('minute', lo, least(first_hour, hi))))) AS m
        UNION DISTINCT
        SELECT greatest(end_hour, lo) + toIntervalMinute(m) FROM bounds
        ARRAY JOIN range(toUInt32(greatest(0, dateDiff('minute', greatest(end_hour, lo), hi)))) AS m
    ),
    read_hours AS (
        SELECT first_hour + toIntervalHour(h) AS hour FROM bounds
        ARRAY JOIN range(toUInt32(greatest(0, dateDiff('hour', first_hour, end_hour)))) AS h
    ),
    series AS (
        SELECT level, scope, scope_value, feature, model, at, toFloat64(sum(cost)) AS cost, toFloat64(sum(n)) AS n
        FROM (
            SELECT level, scope_key.1 AS scope, scope_key.2 AS scope_value, feature, model, at, cost, n
            FROM (
                SELECT 'm' AS level, project, feature, model, minute AS at, sum(cost_usd) AS cost, sum(calls) AS n
                FROM llm_rollup_1m
                WHERE minute IN (SELECT minute FROM read_minutes)
                GROUP BY project, feature, model, at
                UNION ALL
                SELECT 'h', project, feature, model, toStartOfHour(minute) AS at, sum(cost_usd), sum(calls)
                FROM llm_rollup_1m
                WHERE toStartOfHour(minute) IN (SELECT hour FROM read_hours)
                GROUP BY project, feature, model, at
            )
            ARRAY JOIN [('all', ''), ('project', project), ('feature', feature)] AS scope_key
            UNION ALL
            SELECT 'm', 'user', user_id, feature, model, minute, cost_usd, calls
            FROM llm_user_rollup_1m
            WHERE minute IN (SELECT minute FROM read_minutes)
              AND user_id IN (SELECT scope_value FROM budgets WHERE scope = 'user')
            UNION ALL
            SELECT 'h', 'user', user_id, feature, model, toStartOfHour(minute) AS at, sum(cost_usd), sum(calls)
            FROM llm_user_rollup_1m
            WHERE toStartOfHour(minute) IN (SELECT hour FROM read_hours)
              AND user_id IN (SELECT scope_value FROM budgets WHERE scope = 'user')
            GROUP BY user_id, feature, model, at
        )
        WHERE (scope, scope_value) IN (SELECT scope, scope_value FROM budgets)
        GROUP BY level, scope, scope_value, feature, model, at
    ),
    swept AS (
        SELECT s.scope AS scope, s.scope_value AS scope_value, s.feature AS feature,
               s.model AS model, role, p.t AS t, p.period AS period, p.amount AS amount, p.win AS win,
               if(role = 0, s.level, p.level) AS level, if(role = 0, s.until, p.at) AS at, p.sign AS sign,
               if(role = 0, s.cost, 0) AS cost, if(role = 0, s.n, 0) AS n
        FROM (
            SELECT *, at + if(level = 'h', 3600, 60) AS until,
                   row_number() OVER (PARTITION BY scope, scope_value, feature, model ORDER BY level, at) AS rn
            FROM series
        ) AS s
        ARRAY JOIN if(rn = 1, [0, 1], [0]) AS role
        LEFT JOIN points AS p ON s.scope = p.scope AND s.scope_value = p.scope_value AND role = 1
    ),
    windows AS (
        SELECT t, scope, scope_value, period, any(amount) AS amount, feature, model, win,
               sum(sign * run_cost) AS w_cost, sum(sign * run_n) AS w_n
        FROM (
            SELECT *, sum(cost) OVER w AS run_cost, sum(n) OVER w AS run_n
            FROM swept
            WINDOW w AS (PARTITION BY level, scope, scope_value, feature, model ORDER BY at, role ROWS UNBOUNDED PRECEDING)
        )
        WHERE role = 1
        GROUP BY t, scope, scope_value, period, feature, model, win
    )
