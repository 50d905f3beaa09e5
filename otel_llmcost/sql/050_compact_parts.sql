-- llm_spans keeps its parts compact (one data file for all columns) up to 256 MiB of data, instead of
-- ClickHouse's default 10 MiB: about 43,000 of its rows, a few seconds of a busy collector's inserts. A merge
-- that turns compact parts into a wide part (two files per column, some 100 files here) is ClickHouse's slower,
-- vertical merge, and the early merges of a steady stream of inserts all crossed that line. Measured with the
-- collector benchmark's load (bench/collector.py, one collector, 10 rounds): background merges 6.1-6.7 -> 4.1-4.4
-- µs of CPU per span, the whole collector 35-40 -> 31-37. Parts grow wide past 256 MiB (queries that read a few
-- columns of a long range read wide parts, as before); existing parts change type as they are merged.
ALTER TABLE llm_spans MODIFY SETTING min_bytes_for_wide_part = 268435456;
