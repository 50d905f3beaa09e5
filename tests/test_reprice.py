"""`otel-llmcost reprice` against the embedded store of a running collector (through its query endpoint):
new prices are applied to the stored rows, the per-minute rollups are rebuilt to match `llm_spans FINAL`, and a
second run changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from otel_llmcost import names
from test_pricing import emit, when

MINUTE = 60 * 10**9
NANO = Decimal("1e-9")
CLI = [sys.executable, "-c",
       "import sys, otel_llmcost.cli as c; "
       "c.COMMAND_MODULES = tuple(dict.fromkeys(c.COMMAND_MODULES + ('otel_llmcost.reprice',))); "
       "sys.exit(c.main(sys.argv[1:]))"]

PRICES = """
models:
  - model: acme-llm-v2
    input: 1.00
    output: 4.00
discounts:
  - provider: anthropic
    percent: 15
  - model: "gpt-4o*"
    percent: 10
"""


def iso(timestamp_ns: int) -> str:
    return datetime.fromtimestamp(timestamp_ns / 1e9, tz=timezone.utc).isoformat()


def chat(provider: str, model: str, **usage) -> dict:
    attributes = {names.OPERATION: "chat", names.PROVIDER: provider, names.RESPONSE_MODEL: model,
                  names.FEATURE: "reprice-test"}
    keys = {"input": names.INPUT_TOKENS, "output": names.OUTPUT_TOKENS, "cache_read": names.CACHE_READ_TOKENS,
            "cache_write": names.CACHE_WRITE_TOKENS, "cache_write_1h": names.CACHE_WRITE_1H_TOKENS,
            "tier": names.SERVICE_TIER}
    attributes.update({keys[k]: v for k, v in usage.items()})
    return attributes


def reprice(collector, start: int, end: int, prices=None, *extra: str) -> subprocess.CompletedProcess:
    args = ["reprice", "--since", iso(start), "--until", iso(end), "--store", collector.store_url, *extra]
    if prices is not None:
        args += ["--prices", str(prices)]
    env = None
    if prices is None:
        import os

        env = {k: v for k, v in os.environ.items() if k != "OTEL_LLMCOST_PRICES"}
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=120, env=env)


def snapshot(collector, start: int, end: int) -> dict[str, dict]:
    rows = collector.query(
        "SELECT span_id, cost_usd, input_cost_usd, cache_read_cost_usd, cache_write_cost_usd, output_cost_usd, "
        "cache_savings_usd, app_cache_savings_usd, price_status, price_source, price_note, input_tokens "
        "FROM llm_spans FINAL WHERE timestamp >= fromUnixTimestamp64Nano({a:Int64}) "
        "AND timestamp < fromUnixTimestamp64Nano({b:Int64}) ORDER BY span_id", {"a": start, "b": end})
    return {r["span_id"]: r for r in rows}


def assert_rollups_match(collector, start: int, end: int) -> None:
    """The rollups, plain SQL over llm_spans (without FINAL) and FINAL agree, minute by minute."""
    params = {"a": start, "b": end}
    window = ("timestamp >= fromUnixTimestamp64Nano({a:Int64}) AND timestamp < fromUnixTimestamp64Nano({b:Int64})")
    minutes = "minute >= toStartOfMinute(fromUnixTimestamp64Nano({a:Int64})) AND minute < fromUnixTimestamp64Nano({b:Int64})"
    truth = collector.query(
        "SELECT toStartOfMinute(timestamp) AS m, if(response_model != '', response_model, request_model) AS model, "
        "countIf(cache_hit_kind = '') AS calls, countIf(price_status = 'unpriced') AS unpriced, "
        "sum(ifNull(cost_usd, 0)) AS cost, sum(ifNull(cache_savings_usd, 0)) AS savings, "
        "countIf(cache_hit_kind != '') AS hits, sum(ifNull(app_cache_savings_usd, 0)) AS app_savings "
        f"FROM llm_spans FINAL WHERE {window} GROUP BY m, model ORDER BY m, model", params)
    plain = collector.query(
        "SELECT toStartOfMinute(timestamp) AS m, if(response_model != '', response_model, request_model) AS model, "
        "countIf(cache_hit_kind = '') AS calls, countIf(price_status = 'unpriced') AS unpriced, "
        "sum(ifNull(cost_usd, 0)) AS cost, sum(ifNull(cache_savings_usd, 0)) AS savings, "
        "countIf(cache_hit_kind != '') AS hits, sum(ifNull(app_cache_savings_usd, 0)) AS app_savings "
        f"FROM llm_spans WHERE {window} GROUP BY m, model ORDER BY m, model", params)
    assert plain == truth  # each span one row: a reprice updates it in place
    rollup = collector.query(
        "SELECT minute AS m, model, sum(calls) AS calls, sum(unpriced_calls) AS unpriced, sum(cost_usd) AS cost, "
        "sum(cache_savings_usd) AS savings, sum(app_cache_hits) AS hits, sum(app_cache_savings_usd) AS app_savings "
        f"FROM llm_rollup_1m WHERE {minutes} GROUP BY m, model HAVING calls + hits > 0 ORDER BY m, model", params)
    assert rollup == truth
    users = collector.query(f"SELECT sum(cost_usd) AS cost, sum(calls) AS calls FROM llm_user_rollup_1m WHERE {minutes}",
                            params)
    assert users[0]["cost"] == sum(r["cost"] for r in truth)
    assert users[0]["calls"] == sum(r["calls"] for r in truth)


@pytest.fixture(scope="module")
def stored(collector):
    """Calls of every kind spread over three minutes, two hours ago, priced by the collector with list prices."""
    base = (time.time_ns() // MINUTE - 120) * MINUTE
    specs = [
        chat("openai", "gpt-4o-mini-2024-07-18", input=1149, output=353, cache_read=1024),
        chat("openai", "gpt-4o-2024-08-06", input=2000, output=100, tier="batch"),
        chat("anthropic", "claude-sonnet-4-5-20250929", input=5000, output=700, cache_read=1000, cache_write=2000,
             cache_write_1h=500),
        chat("anthropic", "claude-3-5-sonnet-20240620", input=4, output=187, cache_write=1163),  # raw input: noted
        chat("openai", "acme-llm-v2", input=1000, output=100),  # unpriced until the price file names it
        {names.OPERATION: "chat", names.PROVIDER: "openai", names.REQUEST_MODEL: "gpt-4o",
         names.FEATURE: "reprice-test"},  # no usage
        {names.CACHE_HIT_KIND: "exact", names.PROVIDER: "openai", names.REQUEST_MODEL: "gpt-4o-2024-08-06",
         names.CACHE_HIT_INPUT_TOKENS: 3000, names.CACHE_HIT_OUTPUT_TOKENS: 500, names.FEATURE: "reprice-test"},
    ]
    spans = [{"attributes": a, "start": base + (i % 3) * MINUTE + i * 10**6} for i, a in enumerate(specs)]
    ids = emit(collector, spans)
    return base, base + 3 * MINUTE, dict(zip(["mini", "batch", "sonnet45", "raw", "acme", "none", "hit"], ids)), spans


def test_reprice_applies_a_new_price_file_rebuilds_the_rollups_and_is_idempotent(collector, stored, tmp_path):
    start, end, ids, spans = stored
    before = snapshot(collector, start, end)
    assert before[ids["acme"]]["price_status"] == "unpriced"
    assert_rollups_match(collector, start, end)
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)

    first = reprice(collector, start, end, prices)
    assert first.returncode == 0, first.stderr
    assert "reprice [" in first.stderr and "100%" in first.stderr  # the progress bar
    assert "repriced 7 rows: 6 changed" in first.stdout, first.stdout
    after = snapshot(collector, start, end)
    assert after.keys() == before.keys()  # replaced, not duplicated (FINAL)
    [count] = collector.query("SELECT count() AS n FROM llm_spans FINAL WHERE has({i:Array(String)}, span_id)",
                              {"i": list(ids.values())})
    assert count["n"] == 7

    start_of = {ids_: s["start"] for ids_, s in zip(ids.values(), spans)}

    def list_price(model, provider, span, **usage):
        return calc_price(Usage(**usage), model, provider_id=provider,
                          genai_request_timestamp=when(start_of[span])).total_price

    mini = list_price("gpt-4o-mini-2024-07-18", "openai", ids["mini"], input_tokens=1149, output_tokens=353,
                      cache_read_tokens=1024)
    assert before[ids["mini"]]["cost_usd"] == mini.quantize(NANO, "ROUND_HALF_EVEN")
    assert after[ids["mini"]]["cost_usd"] == (mini * Decimal("0.9")).quantize(NANO, "ROUND_HALF_EVEN")
    assert "-10%" in after[ids["mini"]]["price_source"]
    sonnet = list_price("claude-sonnet-4-5-20250929", "anthropic", ids["sonnet45"], input_tokens=5000,
                        output_tokens=700, cache_read_tokens=1000, cache_write_tokens=2000, cache_write_1h_tokens=500)
    assert after[ids["sonnet45"]]["cost_usd"] == (sonnet * Decimal("0.85")).quantize(NANO, "ROUND_HALF_EVEN")
    assert after[ids["acme"]]["price_status"] == "priced"
    assert after[ids["acme"]]["cost_usd"] == (1000 * Decimal(1) + 100 * Decimal(4)) / 1_000_000
    assert "excluded cache reads and writes: counted them in" in after[ids["raw"]]["price_note"]  # the collector's note is kept
    assert after[ids["raw"]]["input_tokens"] == 1167
    hit = list_price("gpt-4o-2024-08-06", "openai", ids["hit"], input_tokens=3000, output_tokens=500)
    assert after[ids["hit"]]["app_cache_savings_usd"] == (hit * Decimal("0.9")).quantize(NANO, "ROUND_HALF_EVEN")
    assert after[ids["hit"]]["cost_usd"] == 0
    assert after[ids["none"]] == before[ids["none"]]  # no usage: nothing to price
    assert_rollups_match(collector, start, end)

    second = reprice(collector, start, end, prices)
    assert second.returncode == 0, second.stderr
    assert "repriced 7 rows: 0 changed" in second.stdout
    assert snapshot(collector, start, end) == after
    assert_rollups_match(collector, start, end)

    # Back to the list prices: the collector's own values again.
    back = reprice(collector, start, end, None)
    assert back.returncode == 0, back.stderr
    assert "repriced 7 rows: 6 changed" in back.stdout, back.stdout
    restored = snapshot(collector, start, end)
    for key in before:
        assert restored[key] == before[key], (before[key], restored[key])
    assert_rollups_match(collector, start, end)


def test_reprice_only_the_models_asked_for(collector, stored, tmp_path):
    start, end, ids, _ = stored
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    before = snapshot(collector, start, end)
    done = reprice(collector, start, end, prices, "--model", "claude-*")
    assert done.returncode == 0, done.stderr
    assert "repriced 2 rows: 2 changed" in done.stdout, done.stdout
    after = snapshot(collector, start, end)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {ids["sonnet45"], ids["raw"]}
    assert_rollups_match(collector, start, end)
    assert reprice(collector, start, end, None).returncode == 0  # leave the list prices for other tests
    assert snapshot(collector, start, end) == before


def test_reprice_refuses_minutes_the_collector_may_still_write(collector):
    now = time.time_ns()
    done = reprice(collector, now - 3600 * 10**9, now, None)
    assert done.returncode == 2 and "minutes ago" in done.stderr


def test_reprice_on_a_store_opened_directly(tmp_path):
    """No collector running: the CLI opens the embedded store itself; the same SQL does the work."""
    from test_pricing import calls_of

    from otel_llmcost.collector.pricing import PriceCatalog
    from otel_llmcost.collector.rows import COLUMNS, row
    from otel_llmcost.store import Store

    url = f"chdb://{tmp_path / 'store'}"
    store = Store(url)
    store.migrate()
    [call] = calls_of("app", chat("anthropic", "claude-3-5-haiku-20241022", input=3000, output=300))
    call.timestamp_ns = (time.time_ns() // MINUTE - 60) * MINUTE
    store.insert("llm_spans", [row(call, PriceCatalog(price_file=None).price(
        call.provider, call.model, call.timestamp_ns, call.usage))], COLUMNS)
    [(list_cost,)] = store.query("SELECT cost_usd FROM llm_spans").rows
    store.close()
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    done = subprocess.run(CLI + ["reprice", "--since", iso(call.timestamp_ns), "--until",
                                 iso(call.timestamp_ns + MINUTE), "--prices", str(prices), "--store", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "repriced 1 rows: 1 changed" in done.stdout
    store = Store(url)
    try:
        [(cost, rollup)] = store.query(
            "SELECT (SELECT cost_usd FROM llm_spans FINAL), (SELECT sum(cost_usd) FROM llm_rollup_1m)").rows
    finally:
        store.close()
    assert cost == (list_cost * Decimal("0.85")).quantize(NANO, "ROUND_HALF_EVEN") and rollup == cost
