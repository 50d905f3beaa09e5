-- Exact totals (collector/README.md, "Durability"): before each insert the collector asks the store which of
-- the batch's spans, or spans of the same calls, are stored already, whatever collector process stored them.
-- llm_spans is sorted for reports (by service, project, ...), where a span's key can sit anywhere; this
-- projection keeps the few columns that question needs sorted by time, so that it reads only the rows stored
-- around the batch's span times. A ReplacingMergeTree takes a projection only with
-- deduplicate_merge_projection_mode set ('rebuild': a merge computes it again from the merged rows), and a
-- lightweight DELETE (a better span of a call replacing a stored one) only with
-- lightweight_mutation_projection_mode.
ALTER TABLE llm_spans MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild',
    lightweight_mutation_projection_mode = 'rebuild';

ALTER TABLE llm_spans ADD PROJECTION IF NOT EXISTS p_call_keys
(
    SELECT timestamp, trace_id, span_id, parent_span_id, response_id, scope_name
    ORDER BY timestamp
);

-- rows already stored get it once (new parts get it as they are written)
ALTER TABLE llm_spans MATERIALIZE PROJECTION p_call_keys SETTINGS mutations_sync = 2;
