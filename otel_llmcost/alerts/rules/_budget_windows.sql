-- Shared CTEs (not a rule) of the budget threshold and projection rules: the evaluation time `t` and, as scalars,
-- `sb` (lo, hi: the range read, from the start of the month before; the hour of hi; the hours read by the minute; the
-- days (UTC) read by the hour; the evaluation times) and `wm`, the windows (this period so far, win 0, and the same span of
-- the previous period, win 1) of every t, keyed by the units that can fall in them: a minute's hour, an hour's day
-- (+1 s) and a day's month (+2 s), each window's part [s, e) of that level.
    eval AS (SELECT toStartOfMinute(toTimeZone($__toTime, 'UTC')) AS t),
    (SELECT (toDateTime(toStartOfMonth(min(t)), 'UTC') - toIntervalMonth(1), max(t), toStartOfHour(max(t)),
             groupUniqArrayArray([toStartOfHour(t), toStartOfHour(t - toIntervalDay(1)), toStartOfHour(t - toIntervalMonth(1))]),
             groupUniqArrayArray(arrayMap(x -> toStartOfDay(toTimeZone(x, 'UTC')),
                                          [toStartOfHour(t), toStartOfHour(t - toIntervalDay(1)), toStartOfHour(t - toIntervalMonth(1))])),
             groupArray(t))
     FROM eval) AS sb,
    (SELECT mapFromArrays(groupArray(k), groupArray(v)) FROM (
        SELECT y.1 AS k, groupArray((t, p, w, y.2, y.3)) AS v
        FROM (
            SELECT t, p, w,
                   if(p = 'day', toStartOfDay(t), toDateTime(toStartOfMonth(t), 'UTC')) AS p0,
                   if(w = 0, t, if(p = 'day', t - toIntervalDay(1), t - toIntervalMonth(1))) AS xe,
                   if(w = 0, p0, if(p = 'day', p0 - toIntervalDay(1), p0 - toIntervalMonth(1))) AS xs,
                   toStartOfHour(xe) AS H, toStartOfDay(toTimeZone(H, 'UTC')) AS D
            FROM eval ARRAY JOIN ['day', 'month'] AS p ARRAY JOIN [0, 1] AS w
        )
        ARRAY JOIN [(H, H, xe), (D + 1, D, H), (toDateTime(toStartOfMonth(xs), 'UTC') + 2, xs, D)] AS y
        GROUP BY k)) AS wm
