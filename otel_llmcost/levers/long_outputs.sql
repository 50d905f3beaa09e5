-- Each feature's output lengths per model: the 90th percentile, and the output tokens beyond it that a cap of
-- max_tokens at that length would not have been generated (nor billed).
WITH calls AS
(
    SELECT service_name, project, feature, provider,
           if(response_model != '', response_model, request_model) AS model, output_tokens
    FROM llm_spans FINAL
    WHERE timestamp >= now64(9, 'UTC') - toIntervalSecond({seconds:UInt64})
      AND cache_hit_kind = ''
      AND price_status = 'priced'
)
SELECT
    c.service_name, c.project, c.feature, c.provider, c.model,
    count() AS calls,
    any(q.p90) AS p90_output_tokens,
    sum(c.output_tokens) AS output_tokens,
    sum(greatest(toInt64(c.output_tokens) - toInt64(q.p90), 0)) AS tokens_beyond_p90
FROM calls AS c
INNER JOIN
(
    SELECT service_name, project, feature, provider, model, toUInt64(quantileExact(0.9)(output_tokens)) AS p90
    FROM calls
    GROUP BY service_name, project, feature, provider, model
) AS q USING (service_name, project, feature, provider, model)
GROUP BY c.service_name, c.project, c.feature, c.provider, c.model
HAVING calls >= {min_calls:UInt32}
ORDER BY tokens_beyond_p90 DESC
