-- What each feature used of each model over the window, in groups that price alike: a catalog's long-context
-- tier applies per call by its input size, so calls are grouped by the tier threshold they cross, and a group's
-- summed usage prices exactly as its calls one by one. Application-level cache hits made no call: left out.
-- service_tier_keys: the attributes that name the service tier, the collector's own list
-- (`normalize.SERVICE_TIER_KEYS`), the first one set wins.
SELECT
    service_name,
    project,
    feature,
    provider,
    if(response_model != '', response_model, request_model) AS model,
    arrayFirst(t -> t != '', arrayPushBack(arrayMap(k -> attributes[k], {service_tier_keys:Array(String)}), ''))
        AS service_tier,
    multiIf(s.input_tokens > 272000, 272000, s.input_tokens > 200000, 200000, s.input_tokens > 128000, 128000, 0) AS tier_floor,
    count() AS calls,
    countIf(price_status != 'priced') AS unknown_calls,
    countIf(user_id = '') AS calls_without_user,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(toUInt64OrZero(attributes['llmcost.usage.cache_creation_1h.input_tokens'])) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(toUInt64OrZero(attributes['llmcost.usage.web_search_requests'])) AS web_searches,
    sumIf(cost_usd, price_status = 'priced') AS cost_usd,
    quantileExact(0.9)(s.output_tokens) AS p90_output_tokens,
    toUnixTimestamp(min(timestamp)) AS first_call
FROM llm_spans AS s FINAL
WHERE timestamp >= now64(9, 'UTC') - toIntervalSecond({seconds:UInt64})
  AND cache_hit_kind = ''
GROUP BY service_name, project, feature, provider, model, service_tier, tier_floor
ORDER BY cost_usd DESC
