-- llm_spans keeps its parts compact (one data file for all columns) up to 256 MiB of data, instead of
-- ClickHouse's default 10 MiB: about 43,000 of its rows, a few seconds of a busy collector's inserts. A merge
-- that turns compact parts into a wide part (two files per column, some 100 files here) is ClickHouse's slower,
-- vertical merge, and the early merges of a steady stream of inserts all crossed that line (BENCHMARKS.md,
-- "schema 050", has the collector benchmark's figures). Parts grow wide past 256 MiB (queries that read a few
-- columns of a long range read wide parts, as before); existing parts change type as they are merged.
ALTER TABLE llm_spans MODIFY SETTING min_bytes_for_wide_part = 268435456;
