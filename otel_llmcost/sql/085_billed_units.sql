-- Usage billed apart from text tokens, in columns of their own so that SQL sees it: audio and image tokens
-- (within input_tokens / output_tokens, as the providers count them; audio and image cache reads, video tokens,
-- file searches, the speed tier and compaction iterations stay in `attributes` as llmcost.usage.* /
-- llmcost.response.speed), and the per-call fees inside cost_usd (web and file searches, per-request prices),
-- which are in none of the other cost parts. Rows stored before have 0 tokens and a NULL fee.
ALTER TABLE llm_spans
    ADD COLUMN IF NOT EXISTS input_audio_tokens UInt64 DEFAULT 0 AFTER reasoning_tokens,
    ADD COLUMN IF NOT EXISTS output_audio_tokens UInt64 DEFAULT 0 AFTER input_audio_tokens,
    ADD COLUMN IF NOT EXISTS input_image_tokens UInt64 DEFAULT 0 AFTER output_audio_tokens,
    ADD COLUMN IF NOT EXISTS output_image_tokens UInt64 DEFAULT 0 AFTER input_image_tokens,
    ADD COLUMN IF NOT EXISTS request_fees_usd Nullable(Decimal(18, 9)) AFTER output_cost_usd;
