-- Each feature's prompt-cache hit rate (cached share of its input tokens) before and after the start of the
-- last `recent_seconds` seconds of the window.
WITH now64(9, 'UTC') - toIntervalSecond({recent_seconds:UInt64}) AS recent_start
SELECT
    service_name,
    project,
    feature,
    provider,
    if(response_model != '', response_model, request_model) AS model,
    sumIf(input_tokens, timestamp < recent_start) AS earlier_input_tokens,
    sumIf(cache_read_tokens, timestamp < recent_start) AS earlier_cache_read_tokens,
    sumIf(input_tokens, timestamp >= recent_start) AS recent_input_tokens,
    sumIf(cache_read_tokens, timestamp >= recent_start) AS recent_cache_read_tokens,
    countIf(timestamp >= recent_start) AS recent_calls
FROM llm_spans FINAL
WHERE timestamp >= now64(9, 'UTC') - toIntervalSecond({seconds:UInt64})
  AND cache_hit_kind = ''
GROUP BY service_name, project, feature, provider, model
HAVING earlier_input_tokens > 0 AND recent_input_tokens > 0
