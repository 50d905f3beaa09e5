-- The resource's attributes (service, host, pod, SDK...) are the same on every span an application process
-- sends. Kept as a Map on each row they cost about a tenth of the collector's CPU (sending, writing and
-- merging the same strings again and again). They are now one LowCardinality(String) per row, the
-- attributes as a JSON object: each part keeps the few distinct resources once, and a row only an index.
-- `resource_attributes` stays readable as before, as an ALIAS Map parsed from that text
-- (resource_attributes['host.name'] works; SELECT * shows resource_json instead).
--
-- Rows already stored get their text from their map once (a mutation, waited for), before the map becomes
-- the alias; the DEFAULT that fills it is removed first, or the alias and the default would refer to each
-- other, and the map's codec, which an alias cannot have.
ALTER TABLE llm_spans ADD COLUMN IF NOT EXISTS resource_json LowCardinality(String)
    DEFAULT toJSONString(resource_attributes) AFTER resource_attributes;

ALTER TABLE llm_spans MATERIALIZE COLUMN resource_json SETTINGS mutations_sync = 2;

ALTER TABLE llm_spans MODIFY COLUMN resource_json REMOVE DEFAULT;

ALTER TABLE llm_spans MODIFY COLUMN resource_attributes REMOVE CODEC;

ALTER TABLE llm_spans MODIFY COLUMN resource_attributes Map(LowCardinality(String), String)
    ALIAS CAST(JSONExtractKeysAndValues(resource_json, 'String'), 'Map(LowCardinality(String), String)');
