-- Shared CTEs (not a rule) of the budget threshold and projection rules: the evaluation time `t`, the range
-- of history they read (`since`), the hours each window ends in (`mh`, read by the minute): this period so
-- far, and the same span of the previous day and month; `hd`: the days whose hours are read by the hour.
    eval AS (SELECT toStartOfMinute($__toTime) AS t),
    since AS (SELECT toDateTime(toStartOfMonth(min(t)), 'UTC') - toIntervalMonth(1) AS lo, max(t) AS hi FROM eval),
    -- the hours each window ends in, read by the minute (the whole hours and days before by the hour and day)
    (SELECT groupUniqArray(toStartOfHour(x)) FROM eval ARRAY JOIN [t, t - toIntervalDay(1), t - toIntervalMonth(1)] AS x) AS mh,
    -- the days (UTC) whose hours are read by the hour: those the last, partial day of each window can fall in
    (SELECT groupUniqArray(toStartOfDay(toTimeZone(x, 'UTC')) - toIntervalDay(k))
     FROM eval ARRAY JOIN [t, t - toIntervalDay(1), t - toIntervalMonth(1)] AS x ARRAY JOIN [0, 1] AS k) AS hd
