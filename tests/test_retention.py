"""Data retention: `collector --retention` / OTEL_LLMCOST_RETENTION as a TTL on the raw spans and the rollups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import CollectorProcess
from otel_llmcost.retention import apply_retention, expiring_tables, parse_retention
from otel_llmcost.simulate import seed_store


def test_parse_retention():
    assert parse_retention("400d") == 400 and parse_retention("56w") == 392 and parse_retention("30") == 30
    assert parse_retention("off") == 0 and parse_retention(None) is None and parse_retention(" ") is None
    for bad in ("5x", "-3d", "0w", "1.5d"):
        with pytest.raises(ValueError):
            parse_retention(bad)


def test_expired_rows_go_from_spans_and_rollups(empty_store):
    store = empty_store
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    seed_store(store, 1, now - timedelta(days=40))  # a day of history, 40 days old
    seed_store(store, 1, now, seed=8)               # and the last day
    counts = "SELECT (SELECT count() FROM llm_spans), (SELECT sum(calls) FROM llm_rollup_1m), " \
             "(SELECT count() FROM llm_user_rollup_1m WHERE minute < now() - INTERVAL 30 DAY)"
    before = store.query(counts).rows[0]
    assert before[2] > 0

    changed = apply_retention(store, 30)
    assert {"llm_spans", "llm_rollup_1m", "llm_user_rollup_1m"} <= set(changed)
    assert "llm_budgets" not in changed and "llm_schema_migrations" not in changed
    assert apply_retention(store, 30) == []  # the same setting again changes nothing
    for table in ("llm_spans", "llm_rollup_1m", "llm_user_rollup_1m"):
        store.command(f"OPTIMIZE TABLE {table} FINAL")  # TTL is applied by merges: force one
    recent = store.query("SELECT count() FROM llm_spans WHERE timestamp >= now() - INTERVAL 30 DAY").rows[0][0]
    after = store.query(counts).rows[0]
    assert after[0] == recent and 0 < after[0] < before[0]
    assert after[2] == 0 and 0 < after[1] < before[1]

    assert set(apply_retention(store, 0)) == set(changed)  # off: the TTLs are removed
    assert all(" TTL " not in engine for _, _, engine in expiring_tables(store))


def test_the_collector_applies_its_setting(tmp_path):
    collector = CollectorProcess(tmp_path / "store", {"OTEL_LLMCOST_RETENTION": "400d"}).start()
    try:
        tables = {row["name"]: row["engine_full"] for row in collector.query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()")}
    finally:
        collector.stop()
    for table in ("llm_spans", "llm_rollup_1m", "llm_user_rollup_1m"):
        assert "+ toIntervalDay(400)" in tables[table], tables[table]
    assert " TTL " not in tables["llm_budgets"]
