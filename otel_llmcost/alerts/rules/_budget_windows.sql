-- Shared CTEs (not a rule) of the budget threshold and projection rules: the evaluation time `t`, the range
-- of history they read (`since`), and the minutes of the last, partial hour of each window (`minutes`): this
-- period so far, and the same span of the previous day and month.
    eval AS (SELECT toStartOfMinute($__toTime) AS t),
    since AS (SELECT toDateTime(toStartOfMonth(min(t)), 'UTC') - toIntervalMonth(1) AS lo, max(t) AS hi FROM eval),
    minutes AS (
        -- the minutes of the hour each window ends in (the whole hours before it are read by the hour)
        SELECT DISTINCT toStartOfHour(x) + toIntervalMinute(m) AS minute
        FROM eval
        ARRAY JOIN [t, t - toIntervalDay(1), t - toIntervalMonth(1)] AS x
        ARRAY JOIN range(60) AS m
        WHERE minute < x
    )
