-- Shared CTEs (not a rule) of the burn-rate rules, after `eval` and _budgets. Scalars: `sb` (lo, hi: the range read,
-- from the day-earlier long window of the first t to the last t; its first whole and last partial hour; the hours a
-- window starts or ends in, read by the minute; the evaluation times) and `wm`, the windows of every t (win 1 = long,
-- 2 = short, 3 = long a day earlier) keyed by the units they can hold (a minute's hour, an hour's UTC day + 1 s): the part
-- [s, e) of the window read at that level (its minutes up to its first whole hour and in its last hour; its whole
-- hours). `units`: the spend and requests of each (scope, feature, model) of the budgets' scopes, by the minute in
-- those hours and by the hour (the rollups' hourly projections, 031) in the whole hours of [lo, hi), which also make
-- the keys complete.
    (SELECT (min(t) - toIntervalDay(1) - toIntervalMinute({long_window_minutes:UInt32}), max(t),
             toStartOfHour(min(t) - toIntervalDay(1) - toIntervalMinute({long_window_minutes:UInt32}) + toIntervalMinute(59)),
             toStartOfHour(max(t)),
             groupUniqArrayArray([toStartOfHour(t), toStartOfHour(t - toIntervalDay(1)),
                                  toStartOfHour(t - toIntervalMinute({long_window_minutes:UInt32})),
                                  toStartOfHour(t - toIntervalMinute({short_window_minutes:UInt32})),
                                  toStartOfHour(t - toIntervalDay(1) - toIntervalMinute({long_window_minutes:UInt32}))]),
             groupArray(t))
     FROM eval) AS sb,
    (SELECT mapFromArrays(groupArray(k), groupArray(v)) FROM (
        SELECT y.1 AS k, groupArray((t, win, y.2, y.3)) AS v
        FROM (
            SELECT t, w.2 AS win, t - toIntervalDay(w.3) AS xe, xe - toIntervalMinute(w.1) AS xs,
                   toStartOfHour(xe) AS xh, toStartOfHour(xs + toIntervalMinute(59)) AS xf,
                   toStartOfDay(toTimeZone(xf, 'UTC')) AS dayf, toStartOfDay(toTimeZone(xh - 1, 'UTC')) AS dayh
            FROM eval
            ARRAY JOIN [(toUInt32({long_window_minutes:UInt32}), 1, 0), (toUInt32({short_window_minutes:UInt32}), 2, 0),
                        (toUInt32({long_window_minutes:UInt32}), 3, 1)] AS w
        )
        ARRAY JOIN [(toStartOfHour(xs), xs, least(xf, xh)), (xh, greatest(xh, xs), xe), (dayf + 1, xf, xh),
                    (dayh + 1, if(dayh = dayf, xh, xf), xh)] AS y
        GROUP BY k)) AS wm,
    units AS (
        SELECT scope_key.1 AS scope, scope_key.2 AS scope_value, feature, model, key, at, cost, n
        FROM (
            SELECT project, feature, model, toStartOfHour(minute) AS key, minute AS at,
                   toFloat64(sum(cost_usd)) AS cost, toFloat64(sum(calls)) AS n
            FROM llm_rollup_1m
            WHERE minute >= sb.1 AND minute < sb.2 AND has(sb.5, toStartOfHour(minute))
            GROUP BY project, feature, model, minute
            UNION ALL
            SELECT project, feature, model, toStartOfDay(hr) + 1, toStartOfHour(minute) AS hr, toFloat64(sum(cost_usd)),
                   toFloat64(sum(calls))
            FROM llm_rollup_1m
            WHERE toStartOfHour(minute) >= sb.3 AND toStartOfHour(minute) < sb.4
            GROUP BY project, feature, model, hr
        )
        ARRAY JOIN [('all', ''), ('project', project), ('feature', feature)] AS scope_key
        WHERE has(bud.3, (scope, scope_value))
        UNION ALL
        SELECT 'user', user_id, feature, model, toStartOfHour(minute), minute, toFloat64(cost_usd), toFloat64(calls)
        FROM llm_user_rollup_1m
        WHERE minute >= sb.1 AND minute < sb.2 AND has(sb.5, toStartOfHour(minute)) AND has(bud.4, user_id)
        UNION ALL
        SELECT 'user', user_id, feature, model, toStartOfDay(hr) + 1, toStartOfHour(minute) AS hr, toFloat64(sum(cost_usd)),
               toFloat64(sum(calls))
        FROM llm_user_rollup_1m
        WHERE toStartOfHour(minute) >= sb.3 AND toStartOfHour(minute) < sb.4 AND has(bud.4, user_id)
        GROUP BY user_id, feature, model, hr
    )
