"""Exact totals: each call one row, whatever is re-sent, restarted or described twice.

Spans go to real collector processes through the real OTLP/HTTP exporter; the checks are plain SQL over
`llm_spans` (no FINAL, which would hide a second row), FINAL, and the rollups, which must all agree.
- a span re-sent after the collector's memory of recent spans is exceeded (its capacity made tiny here);
- spans older than two days re-sent to a restarted collector, and to a second collector (its own spool, an
  empty memory) started on the same store after the first stopped: what two collectors behind one load
  balancer would see of each other's retries;
- two spans of one call from two instrumentations, the topologies of FIELD-NOTES.md (OpenLLMetry: separate
  root traces linked by the `msg_...` id; OpenLIT: the SDK's span nested in OpenLIT's, which dropped the cache
  tokens), in both arrival orders, in one export and split across batches: one row, the truest one, priced as
  `genai_prices.calc_price` prices the true usage;
- an OpenAI-compatible server reusing a response id for two calls (Ollama): two rows.
"""

from __future__ import annotations

import itertools
import random
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from intake_support import Collector

NANO = Decimal("1e-9")
RESOURCE = Resource.create({"service.name": "totals-test"})
SDK = "com.anthropic.sdk.python"  # anthropic 2.x's own spans
OPENLLMETRY = "opentelemetry.instrumentation.anthropic"
OPENLIT = "openlit.instrumentation.anthropic"
_ids = random.Random(20261204)
_responses = itertools.count(1)


def new_id(bits: int) -> int:
    return _ids.getrandbits(bits) | 1


def call_span(scope: str, *, trace_id: int | None = None, parent: int | None = None, response_id: str = "",
              provider: str = "anthropic", model: str = "claude-sonnet-4-5", input_tokens: int = 1000,
              output_tokens: int = 50, cache_read: int = 0, cache_write: int = 0, start_ns: int | None = None,
              duration_ns: int = 800_000_000) -> ReadableSpan:
    """A finished span of one LLM call as `scope` spells it (every source here uses the GenAI names)."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.system": provider,
                  "gen_ai.request.model": model, "gen_ai.usage.input_tokens": input_tokens,
                  "gen_ai.usage.output_tokens": output_tokens, "llmcost.feature": "totals"}
    if response_id:
        attributes["gen_ai.response.id"] = response_id
    if cache_read:
        attributes["gen_ai.usage.cache_read.input_tokens"] = cache_read
    if cache_write:
        attributes["gen_ai.usage.cache_write.input_tokens"] = cache_write
    trace_id = trace_id or new_id(128)
    start_ns = start_ns or time.time_ns()
    return ReadableSpan(
        name=f"chat {model}", context=SpanContext(trace_id, new_id(64), False, TraceFlags(1)),
        parent=SpanContext(trace_id, parent, False, TraceFlags(1)) if parent else None, resource=RESOURCE,
        attributes=attributes, kind=SpanKind.CLIENT, start_time=start_ns, end_time=start_ns + duration_ns,
        instrumentation_scope=InstrumentationScope(scope, "1.0"))


def export(collector: Collector, spans: list[ReadableSpan]) -> None:
    exporter = OTLPSpanExporter(endpoint=collector.http_endpoint + "/v1/traces", timeout=30)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def loaded(collector: Collector) -> int:
    stats = collector.stats()
    return stats["spans_stored"] + stats["spans_duplicate"]


def send(collector: Collector, spans: list[ReadableSpan]) -> None:
    """Exports `spans` and waits until the loader has been through them."""
    before = loaded(collector)
    export(collector, spans)
    collector.wait_for(lambda: loaded(collector) >= before + len(spans), f"{len(spans)} spans through the loader")


def totals(collector: Collector) -> dict:
    """Calls and cost by plain SQL, FINAL and each rollup; asserts that they agree, and returns them."""
    [plain] = collector.query("SELECT count() AS calls, uniqExact(trace_id, span_id) AS spans, "
                              "toString(sum(cost_usd)) AS cost FROM llm_spans")
    [final] = collector.query("SELECT count() AS calls, toString(sum(cost_usd)) AS cost FROM llm_spans FINAL")
    [rollup] = collector.query("SELECT sum(calls) AS calls, toString(sum(cost_usd)) AS cost FROM llm_rollup_1m")
    [users] = collector.query("SELECT sum(calls) AS calls, toString(sum(cost_usd)) AS cost FROM llm_user_rollup_1m")
    assert plain["calls"] == plain["spans"], plain
    assert (final["calls"], final["cost"]) == (plain["calls"], plain["cost"]), (final, plain)
    assert (rollup["calls"], rollup["cost"]) == (plain["calls"], plain["cost"]), (rollup, plain)
    assert (users["calls"], users["cost"]) == (plain["calls"], plain["cost"]), (users, plain)
    return plain


def expected_cost(start_ns: int, input_tokens: int, output_tokens: int, cache_read: int = 0,
                  cache_write: int = 0) -> Decimal:
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_read_tokens": cache_read,
             "cache_write_tokens": cache_write}
    return calc_price(Usage(**{k: v for k, v in usage.items() if v}), "claude-sonnet-4-5", provider_id="anthropic",
                      genai_request_timestamp=datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc)).total_price


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    # A memory of 8 recent spans: exceeded by any test here, so the store look-ups carry the dedup.
    process = Collector(tmp_path_factory.mktemp("totals") / "store", {"OTEL_LLMCOST_RECENT_CALLS": "8"}).start()
    yield process
    process.stop()


def test_a_span_re_sent_after_the_memory_is_exceeded_is_counted_once(collector):
    first = [call_span("otel_llmcost", provider="openai", model="gpt-4o", input_tokens=1000 + i) for i in range(5)]
    send(collector, first)
    for _ in range(4):  # (the memory forgets a generation at a time)
        send(collector, [call_span("otel_llmcost", provider="openai", model="gpt-4o") for _ in range(10)])
    before = totals(collector)
    duplicates = collector.stats()["spans_duplicate"]
    send(collector, first)  # an exporter's retry, 40 spans (5 memories) later
    assert collector.stats()["spans_duplicate"] == duplicates + 5
    assert totals(collector) == before


def test_old_spans_re_sent_to_a_restarted_collector_and_to_a_second_one_are_counted_once(tmp_path):
    three_days_ago = time.time_ns() - 3 * 86400 * 10**9
    old = [call_span("otel_llmcost", provider="openai", model="gpt-4o", start_ns=three_days_ago + i * 10**9)
           for i in range(6)]
    store = tmp_path / "store"
    first = Collector(store).start()
    try:
        send(first, old)
        before = totals(first)
        assert before["calls"] == 6
    finally:
        first.stop()
    restarted = Collector(store).start()  # its memory holds no span older than two days
    try:
        send(restarted, old[:3])
        assert totals(restarted) == before
    finally:
        restarted.stop()
    # A second collector, with its own spool, on the same store: all it knows of the first one's spans is
    # what the store says (as for two collectors behind one load balancer on one ClickHouse).
    second = Collector(store, {"OTEL_LLMCOST_SPOOL_DIR": str(tmp_path / "spool-2")}).start()
    try:
        fresh = [call_span("otel_llmcost", provider="openai", model="gpt-4o") for _ in range(2)]
        send(second, old + fresh)
        after = totals(second)
        assert after["calls"] == 8
        assert collector_cost(second, fresh) > 0
    finally:
        second.stop()


def collector_cost(collector: Collector, spans: list[ReadableSpan]) -> Decimal:
    [row] = collector.query("SELECT sum(cost_usd) AS cost FROM llm_spans WHERE has({ids:Array(String)}, span_id)",
                            {"ids": [format(s.context.span_id, "016x") for s in spans]})
    return Decimal(str(row["cost"]))


def one_call(topology: str, kind: str) -> tuple[list[ReadableSpan], dict]:
    """Two spans of one Anthropic call, the better one first, and what the stored row must say."""
    response_id = f"msg_01totals{next(_responses):06d}"
    start = time.time_ns()
    cache = {"cache_read": 5000} if kind == "cache_read" else {"cache_write": 5000}
    truth = {"input_tokens": 5100, "output_tokens": 50, **cache}
    if topology == "openllmetry":  # separate root traces, linked only by the response id; both complete
        sdk = call_span(SDK, response_id=response_id, start_ns=start + 3_000_000, duration_ns=700_000_000, **truth)
        peer = call_span(OPENLLMETRY, response_id=response_id, start_ns=start, **truth)
    else:  # OpenLIT's span around the SDK's, without the cache tokens
        peer = call_span(OPENLIT, response_id=response_id, start_ns=start, input_tokens=100, output_tokens=50)
        sdk = call_span(SDK, trace_id=peer.context.trace_id, parent=peer.context.span_id, response_id=response_id,
                        start_ns=start + 3_000_000, duration_ns=700_000_000, **truth)
    expected = {"response_id": response_id, "scope_name": SDK, "input_tokens": 5100,
                "cost": expected_cost(start + 3_000_000, **truth)}
    return [sdk, peer], expected


@pytest.mark.parametrize("split", ["one export", "two batches"])
@pytest.mark.parametrize("order", ["truest first", "truest last"])
@pytest.mark.parametrize("topology,kind", [("openllmetry", "cache_read"), ("openlit", "cache_read"),
                                           ("openlit", "cache_write")])
def test_two_spans_of_one_call_are_stored_once_as_the_truest(collector, topology, kind, order, split):
    spans, expected = one_call(topology, kind)
    if order == "truest last":
        spans.reverse()
    if split == "one export":
        send(collector, spans)
    else:
        for span in spans:  # each in its own insert (the collector's batches are 0.2 s here)
            send(collector, [span])
    rows = collector.query("SELECT scope_name, input_tokens, cost_usd FROM llm_spans WHERE response_id = {r:String}",
                           {"r": expected["response_id"]})
    assert len(rows) == 1, rows
    [row] = rows
    assert row["scope_name"] == expected["scope_name"] and row["input_tokens"] == expected["input_tokens"]
    assert abs(Decimal(str(row["cost_usd"])) - expected["cost"]) < NANO, (row, expected)
    totals(collector)


@pytest.mark.parametrize("split", ["one export", "two batches"])
def test_a_response_id_reused_by_the_server_for_two_calls_keeps_two_rows(collector, split):
    # Ollama draws ids from chatcmpl-<0..998>: two calls of one trace, a second apart, one instrumentation.
    trace_id = new_id(128)
    start = time.time_ns()
    calls = [call_span("otel_llmcost", trace_id=trace_id, response_id="chatcmpl-7", provider="ollama",
                       model="llama3.2", input_tokens=tokens, output_tokens=tokens // 10, start_ns=start + i * 10**9)
             for i, tokens in enumerate((300, 500))]
    if split == "one export":
        send(collector, calls)
    else:
        for span in calls:
            send(collector, [span])
    rows = collector.query("SELECT input_tokens FROM llm_spans WHERE trace_id = {t:String} ORDER BY input_tokens",
                           {"t": format(trace_id, "032x")})
    assert [r["input_tokens"] for r in rows] == [300, 500]
    totals(collector)
