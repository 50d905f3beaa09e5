-- How each feature's calls arrive: with an end user waiting (a user.id on the call) or without, and alone or in
-- bulk (minutes in which the feature made at least `bulk_calls` calls). Traffic without users or in bulk is
-- not latency-bound, so it could go through a provider's Batch API.
SELECT
    service_name,
    project,
    feature,
    sum(m.calls) AS calls,
    sum(m.calls_without_user) AS calls_without_user,
    sumIf(m.calls, m.calls >= {bulk_calls:UInt32}) AS calls_in_bulk_minutes
FROM
(
    SELECT service_name, project, feature, toStartOfMinute(timestamp) AS minute,
           count() AS calls, countIf(user_id = '') AS calls_without_user
    FROM llm_spans FINAL
    WHERE timestamp >= now64(9, 'UTC') - toIntervalSecond({seconds:UInt64})
      AND cache_hit_kind = ''
    GROUP BY service_name, project, feature, minute
) AS m
GROUP BY service_name, project, feature
