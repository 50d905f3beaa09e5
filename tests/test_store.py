"""The store's insert path on the real engine (chDB): values arrive exactly as given."""

from __future__ import annotations

from decimal import Decimal

from otel_llmcost.store import migrations


def test_decimals_are_stored_exactly_whatever_their_text_looks_like(empty_store):
    """Decimal columns are sent as text: the smallest amounts (whose str() is in exponent form, "1E-9"),
    trailing zeros, the largest a Decimal(18, 9) holds, NULL, and the integers and text a caller may pass."""
    costs = [Decimal("1E-9"), Decimal("0.000000100"), Decimal("1.00E-7"), Decimal("0.000123450"),
             Decimal("123456789.123456789"), Decimal("999999999.999999999"), Decimal(0), Decimal("0E-9"), None, 7,
             "0.5"]
    rows = [(10**18 + i, f"{i:032x}", f"{i:016x}", cost, Decimal("0.25") if cost is not None else None)
            for i, cost in enumerate(costs)]
    empty_store.insert("llm_spans", rows, ("timestamp", "trace_id", "span_id", "cost_usd", "input_cost_usd"))
    stored = empty_store.query("SELECT cost_usd, input_cost_usd FROM llm_spans ORDER BY timestamp").rows
    expected = [(None if c is None else Decimal(str(c)), None if c is None else Decimal("0.25")) for c in costs]
    assert stored == expected
    # the rollup, fed by its materialized view from the same insert, sums the same amounts
    total = empty_store.query("SELECT sum(cost_usd) FROM llm_rollup_1m").rows[0][0]
    assert total == sum(Decimal(str(c)) for c in costs if c is not None)

    empty_store.insert("llm_budgets", [("project", "p", "day", Decimal("12.500000")), ("all", "", "month", 3)],
                 ("scope", "scope_value", "period", "amount_usd"))
    assert empty_store.query("SELECT amount_usd FROM llm_budgets ORDER BY scope").rows == [(Decimal(3),), (Decimal("12.5"),)]


def test_a_store_made_before_resource_json_keeps_its_resources_after_the_migration(tmp_path):
    """A store made by the schema before 040 (the resource attributes as a Map on each row) migrates: its rows'
    `resource_attributes` read the same through the alias, and rows written after it by the collector's row
    code read back too. (Another process: chDB opens one store per process, and this module's is open.)"""
    script = r"""
import json, sys
from otel_llmcost.store import Store
from otel_llmcost.collector import normalize, rows
from otel_llmcost.collector.price_records import unpriced

store = Store("chdb://" + sys.argv[1])
store.migrate(before=40)
old = {"service.name": "checkout", "host.name": "h\u00e9 \"1\" \\ 2", "empty": ""}
store.insert("llm_spans", [(10**18, "a" * 32, "b" * 16, "checkout", old), (10**18 + 1, "c" * 32, "d" * 16, "x", {})],
             ("timestamp", "trace_id", "span_id", "service_name", "resource_attributes"))
applied = store.migrate()

new = {"service.name": "billing", "k8s.pod.name": "billing-7d9 \u2603", "quote": "'\"{}[]"}
call = normalize.Call(
    timestamp_ns=10**18 + 2, duration_ms=1.0, trace_id="e" * 32, span_id="f" * 16, parent_span_id="",
    service_name="billing", span_name="chat", scope_name="s", provider="openai", operation="chat",
    request_model="m", response_model="m", response_id="", status_code="UNSET", error_type="",
    usage=normalize.PricedUsage(input_tokens=1, output_tokens=1), has_usage=True, service_tier="", project="",
    feature="", user_id="", attributes={}, resource_attributes=new)
price = unpriced("no price")
store.insert("llm_spans", [rows.row(call, price)], rows.COLUMNS)
read = store.query("SELECT resource_attributes, resource_attributes['host.name'], resource_json "
                   "FROM llm_spans ORDER BY timestamp").rows
kinds = dict(store.query("SELECT name, default_kind FROM system.columns "
                         "WHERE table = 'llm_spans' AND name LIKE 'resource%'").rows)
print(json.dumps({"applied": applied, "read": [[dict(m), h, j] for m, h, j in read], "kinds": kinds}))
"""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["applied"] == [v for v, _, _ in migrations() if v >= 40]
    assert result["kinds"] == {"resource_attributes": "ALIAS", "resource_json": ""}
    old = {"service.name": "checkout", "host.name": "h\u00e9 \"1\" \\ 2", "empty": ""}
    new = {"service.name": "billing", "k8s.pod.name": "billing-7d9 \u2603", "quote": "'\"{}[]"}
    (old_map, old_host, old_json), (empty_map, _, _), (new_map, _, new_json) = result["read"]
    assert old_map == old and old_host == old["host.name"] and json.loads(old_json) == old
    assert empty_map == {}
    assert new_map == new and json.loads(new_json) == new


def test_spans_merge_into_compact_parts_well_past_clickhouse_default_size(empty_store):
    """llm_spans' parts stay compact (one data file) up to 256 MiB (050): two parts of 6 MiB each merge into one
    of 12 MiB, which ClickHouse's default (10 MiB) would make wide, by its slower vertical merge."""
    note = "x" * (6 << 20)
    for i in range(2):
        empty_store.insert("llm_spans", [(2 * 10**18 + i, f"{i + 100:032x}", f"{i:016x}", "merge-test", note)],
                           ("timestamp", "trace_id", "span_id", "service_name", "price_note"))
    empty_store.command("OPTIMIZE TABLE llm_spans FINAL")
    parts = empty_store.query(
        "SELECT part_type, data_uncompressed_bytes FROM system.parts WHERE active AND table = 'llm_spans' "
        "AND database = currentDatabase() AND partition = '203305'").rows  # (2 * 10**18 ns: May 2033)
    assert len(parts) == 1 and parts[0][1] > 10 << 20
    assert parts[0][0] == "Compact"


def test_final_reads_each_span_once_in_every_layout_of_parts(empty_store):
    """The store's queries skip FINAL's merge across partitions (SESSION_SETTINGS), and a partition made of one
    merged part is read without merging; a span's versions still collapse to the latest in each layout: two
    versions in one unmerged insert, in two inserts, in one merged part, in partitions of two months."""
    assert empty_store.query("SELECT getSetting('do_not_merge_across_partitions_select_final'), "
                             "getSetting('compile_expressions')").rows == [(True, False)]
    march, april = 1_900_000_000 * 10**9, 1_902_600_000 * 10**9  # 2030-03-17 and 2030-04-16 (UTC)
    columns = ("timestamp", "trace_id", "span_id", "service_name", "price_note", "inserted_at")

    def version(ts, span, note, at):
        return (ts, "f" * 32, f"{span:016x}", "final-test", note, at)

    def final_notes():
        return empty_store.query("SELECT span_id, price_note FROM llm_spans FINAL WHERE service_name = 'final-test' "
                                 "ORDER BY span_id").rows

    # one insert holding two versions of span 1, not merged on insert (one level-0 part)
    empty_store.insert("llm_spans", [version(march, 1, "old", 1), version(march, 1, "new", 2)], columns,
                       distinct_keys=True)
    assert empty_store.query("SELECT count() FROM llm_spans WHERE service_name = 'final-test'").rows == [(2,)]
    assert final_notes() == [(f"{1:016x}", "new")]
    # a later version in a second part of the same month, and span 2 in the next month, in two parts
    empty_store.insert("llm_spans", [version(march, 1, "newest", 3), version(april, 2, "a", 1)], columns)
    empty_store.insert("llm_spans", [version(april, 2, "b", 2)], columns)
    expected = [(f"{1:016x}", "newest"), (f"{2:016x}", "b")]
    assert final_notes() == expected
    empty_store.command("OPTIMIZE TABLE llm_spans FINAL")  # one merged part per month: read without merging
    assert final_notes() == expected
    assert empty_store.query("SELECT count() FROM llm_spans WHERE service_name = 'final-test'").rows == [(2,)]


def test_the_server_profile_sets_what_the_store_sets():
    """grafana/clickhouse/llmcost-profile.xml gives a ClickHouse server's users (Grafana's) the session settings
    the store's own client sets; the two lists stay the same."""
    import xml.etree.ElementTree as ET
    from pathlib import Path

    from otel_llmcost.store import SESSION_SETTINGS

    profile = Path(__file__).parent.parent / "grafana" / "clickhouse" / "llmcost-profile.xml"
    default = ET.parse(profile).getroot().find("profiles/default")
    assert {child.tag: int(child.text) for child in default} == SESSION_SETTINGS
    compose = (profile.parent.parent / "docker-compose.yaml").read_text()
    assert "./clickhouse/llmcost-profile.xml:/etc/clickhouse-server/users.d/" in compose


def test_an_insert_keeps_nothing_of_its_batch_alive(empty_store):
    """The client's insert context is a reference cycle that holds the columns it was given: the store empties
    them, so a batch's values are freed when the caller drops its rows, not at some later garbage collection."""
    import gc
    import sys
    import uuid

    trace_id = uuid.uuid4().hex  # a string only this test refers to
    rows = [(10**18 + i, trace_id, f"{i:016x}") for i in range(3)]
    gc.disable()  # (a collection would free the cycle and hide what is kept)
    try:
        held = sys.getrefcount(trace_id)
        empty_store.insert("llm_spans", rows, ("timestamp", "trace_id", "span_id"))
        assert sys.getrefcount(trace_id) == held
    finally:
        gc.enable()
    assert empty_store.query("SELECT count() FROM llm_spans WHERE trace_id = {t:String}", {"t": trace_id}).rows == [(3,)]
