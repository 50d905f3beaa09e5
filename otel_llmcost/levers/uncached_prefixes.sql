-- Repeated prompt prefixes (the system prompt and tool definitions, by their fingerprint) and how often the
-- provider's prompt cache served them. `windows` counts the 5-minute spans with calls: a prompt cache lives
-- about that long, so each window needs at least one cache write.
SELECT
    service_name,
    project,
    feature,
    provider,
    if(response_model != '', response_model, request_model) AS model,
    prefix_hash,
    max(prefix_length) AS prefix_chars,
    count() AS calls,
    countIf(cache_read_tokens = 0) AS calls_without_cache_read,
    uniqExact(toStartOfFiveMinutes(timestamp)) AS windows
FROM llm_spans FINAL
WHERE timestamp >= now64(9, 'UTC') - toIntervalSecond({seconds:UInt64})
  AND cache_hit_kind = ''
  AND prefix_hash != ''
GROUP BY service_name, project, feature, provider, model, prefix_hash
HAVING calls >= {min_calls:UInt32}
ORDER BY calls_without_cache_read * prefix_chars DESC
