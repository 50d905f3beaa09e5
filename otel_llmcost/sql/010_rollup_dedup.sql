-- Spool replays and exporter retries re-send a batch with the same insert_deduplication_token. llm_spans drops
-- the repeated block (non_replicated_deduplication_window, 001); with deduplicate_blocks_in_dependent_materialized_views
-- the rollup's insert gets a token derived from it, but the rollup only drops a repeat if it keeps a
-- deduplication window of its own (checked: without this, a replayed batch was counted twice in the rollup).
ALTER TABLE llm_rollup_1m MODIFY SETTING non_replicated_deduplication_window = 10000;
