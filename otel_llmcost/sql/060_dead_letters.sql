-- Spans the collector set aside instead of storing: a value no column can hold, a row the store refused (found
-- by splitting the batch until the refused rows are alone), or a request that could not be read. `record` is the
-- span, row or request as JSON text, without the attributes kept out of llm_spans (prompt content, secrets).
-- A batch replayed after a crash carries the same deduplication token: its dead letters are not written twice.
CREATE TABLE IF NOT EXISTS llm_dead_letters
(
    set_aside_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    trace_id      String,
    span_id       String,
    reason        String,
    record        String CODEC(ZSTD(1)),
    spool_batch   String   -- the insert deduplication token of the batch it came from
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(set_aside_at)
ORDER BY (set_aside_at, trace_id, span_id)
SETTINGS non_replicated_deduplication_window = 1000;
