"""Default OpenAI chat streams get their usage without the app seeing a difference; where usage cannot be had
the row is estimated or no_usage, flagged, never $0; the report says so.

The real `openai` SDK over real HTTP on 127.0.0.1 (`tests/replay.py` serving the written fixture
`tests/fixtures/openai/chat_stream_include_usage.json`: a real recorded stream, and the same stream as OpenAI
sends it when asked for usage), a real collector over OTLP, the store. Expected costs from genai-prices.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import openai
import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_llmcost import names
from otel_llmcost.commands import format_value
from replay import ReplayServer, iter_sse

try:
    from .test_instr_support import openai_instrumented
except ImportError:
    from test_instr_support import openai_instrumented

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "openai" / "chat_stream_include_usage.json").read_text())
NOT_ASKED, ASKED = FIXTURE["interactions"][0], FIXTURE["interactions"][1]
BODY = NOT_ASKED["request"]["body"]
USAGE = json.loads([d for _, d in iter_sse(ASKED["response"]["body"]) if d != "[DONE]"][-1])["usage"]
MODEL = "gpt-3.5-turbo-0125"


def serving(*asked: bool) -> ReplayServer:
    """A server that answers the calls in order, each as OpenAI does when (not) asked for usage."""
    return ReplayServer({"name": "chat_stream_include_usage",
                         "interactions": [ASKED if a else NOT_ASKED for a in asked]})


def client(server, is_async=False):
    kind = openai.AsyncOpenAI if is_async else openai.OpenAI
    return kind(base_url=server.openai_base_url, api_key="x", max_retries=0)


def chunk_views(chunks) -> list:
    """What an app can see of each chunk: its dict, its fields as set, its attributes."""
    return [(chunk.to_dict(), sorted(chunk.model_fields_set), dict(chunk.__dict__)) for chunk in chunks]


def stream_all(server, is_async: bool) -> list:
    if not is_async:
        return list(client(server).chat.completions.create(**BODY))

    async def run():
        return [chunk async for chunk in await client(server, True).chat.completions.create(**BODY)]

    return asyncio.run(run())


def sent_stream_options(server) -> list:
    return [request["body"].get("stream_options") for request in server.requests]


@pytest.fixture
def ask_loopback(tracing):
    """The setting extends the list of servers asked for usage: here, the local test server."""
    with openai_instrumented(tracing, include_usage="127.0.0.1"):
        yield


def price(usage: dict, start_ns: int):
    return calc_price(Usage(**usage), MODEL, provider_id="openai",
                      genai_request_timestamp=datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc)).total_price


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_app_sees_the_same_chunks_and_the_span_has_the_usage(is_async, spans, ask_loopback):
    with serving(False) as server, suppress_instrumentation():
        bare = stream_all(server, is_async)
    with serving(True) as server:
        instrumented = stream_all(server, is_async)
        assert sent_stream_options(server) == [{"include_usage": True}]
    assert chunk_views(instrumented) == chunk_views(bare)
    assert [type(c) for c in instrumented] == [type(c) for c in bare]
    (span,) = spans.get_finished_spans()
    assert span.attributes[names.INPUT_TOKENS] == USAGE["prompt_tokens"]
    assert span.attributes[names.OUTPUT_TOKENS] == USAGE["completion_tokens"]
    assert names.USAGE_MISSING not in span.attributes and names.USAGE_ESTIMATED not in span.attributes


def test_the_stream_helper_gets_the_same_final_completion(spans, ask_loopback):
    """`chat.completions.stream()` goes through create: same events, same final completion (no usage in it)."""
    def run():
        with client(server).chat.completions.stream(**{k: v for k, v in BODY.items() if k != "stream"}) as stream:
            events = [(event.type, getattr(event, "chunk", None) and event.chunk.to_dict()) for event in stream]
            return events, stream.get_final_completion().to_dict()

    with serving(False) as server, suppress_instrumentation():
        bare = run()
    with serving(True) as server:
        instrumented = run()
        assert sent_stream_options(server) == [{"include_usage": True}]
    assert instrumented == bare
    assert "usage" not in instrumented[1] or instrumented[1]["usage"] is None
    (span,) = spans.get_finished_spans()
    assert span.attributes[names.OUTPUT_TOKENS] == USAGE["completion_tokens"]


def test_an_app_that_asks_for_usage_gets_it_as_sent(spans, ask_loopback):
    with serving(True) as server:
        chunks = list(client(server).chat.completions.create(**BODY, stream_options={"include_usage": True}))
        assert sent_stream_options(server) == [{"include_usage": True}]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == USAGE["prompt_tokens"]
    assert all("usage" in chunk.model_fields_set for chunk in chunks)
    (span,) = spans.get_finished_spans()
    assert span.attributes[names.OUTPUT_TOKENS] == USAGE["completion_tokens"]


def test_a_server_not_known_to_accept_it_is_never_sent_it(spans):
    """127.0.0.1 is no provider known to accept stream_options (a local server may reject unknown fields):
    not sent; the row is estimated from the text, and says why."""
    with serving(False) as server:
        chunks = list(client(server).chat.completions.create(**BODY))
        assert sent_stream_options(server) == [None]
    (span,) = spans.get_finished_spans()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert span.attributes[names.USAGE_ESTIMATED] is True
    assert span.attributes[names.OUTPUT_TOKENS] == -(-len(text) // 4)
    assert span.attributes[names.INPUT_TOKENS] == -(-len(BODY["messages"][0]["content"]) // 4)
    assert "did not ask" in span.attributes[names.USAGE_NOTE]


@pytest.mark.parametrize("setting, asked", [
    ("none", None), ("-127.0.0.1,127.0.0.1", {"include_usage": True}), ("none,127.0.0.1", {"include_usage": True}),
])
def test_the_setting_extends_and_narrows_the_list(setting, asked, tracing, spans, monkeypatch):
    with openai_instrumented(tracing, monkeypatch, {"OTEL_LLMCOST_OPENAI_INCLUDE_USAGE": setting}):
        with serving(asked is not None) as server:
            list(client(server).chat.completions.create(**BODY))
            assert sent_stream_options(server) == [asked]


def test_raw_responses_are_not_asked_and_are_flagged(spans, ask_loopback):
    """`with_streaming_response`: the app may read the SSE body itself, where nothing can be hidden."""
    with serving(False) as server:
        with client(server).chat.completions.with_streaming_response.create(**BODY) as response:
            lines = list(response.iter_lines())
        assert sent_stream_options(server) == [None]
    assert "data: [DONE]" in lines
    del response
    gc.collect()
    (span,) = spans.get_finished_spans()
    assert span.attributes[names.USAGE_MISSING] is True
    assert "raw response body" in span.attributes[names.USAGE_NOTE]
    assert names.INPUT_TOKENS not in span.attributes


def test_early_close_is_estimated_and_flagged_end_to_end(collector, spans, ask_loopback):
    """One full stream (priced from its usage) and one closed after three chunks (estimated): through a real
    collector to the store and the report, exact to the nano-dollar."""
    with serving(True, True, False) as server:
        full = list(client(server).chat.completions.create(**BODY))
        stream = client(server).chat.completions.create(**BODY)
        seen = [next(stream) for _ in range(3)]
        stream.close()
        with client(server).chat.completions.with_streaming_response.create(**BODY) as response:
            assert list(response.iter_lines())  # the app parses the SSE itself: no usage to be had
    del response
    gc.collect()
    finished = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert len(finished) == 3 and full
    raw_span = finished.pop()
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    ids = [format(s.context.span_id, "016x") for s in finished]
    collector.wait_for_rows(2, f"SELECT count() AS n FROM llm_spans WHERE span_id IN ('{ids[0]}', '{ids[1]}')")
    rows = {r["span_id"]: r for r in collector.query(
        "SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id)", {"ids": ids})}
    exact, estimated = rows[ids[0]], rows[ids[1]]

    assert exact["price_status"] == "priced"
    assert (exact["input_tokens"], exact["output_tokens"]) == (USAGE["prompt_tokens"], USAGE["completion_tokens"])
    assert exact["cost_usd"] == price({"input_tokens": USAGE["prompt_tokens"],
                                       "output_tokens": USAGE["completion_tokens"]}, finished[0].start_time)

    text = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    tokens = {"input_tokens": -(-len(BODY["messages"][0]["content"]) // 4), "output_tokens": -(-len(text) // 4)}
    assert estimated["price_status"] == "estimated"
    assert (estimated["input_tokens"], estimated["output_tokens"]) == (tokens["input_tokens"], tokens["output_tokens"])
    assert estimated["cost_usd"] == price(tokens, finished[1].start_time) and estimated["cost_usd"] > 0
    assert "usage estimated" in estimated["price_note"] and "closed early" in estimated["price_note"]
    assert estimated["attributes"][names.USAGE_ESTIMATED] == "true"

    rollup = collector.query(
        "SELECT sum(estimated_calls) AS n, sum(estimated_cost_usd) AS cost FROM llm_rollup_1m WHERE model = {m:String}",
        {"m": MODEL})[0]
    assert (rollup["n"], rollup["cost"]) == (1, estimated["cost_usd"])

    report = subprocess.run([sys.executable, "-m", "otel_llmcost.cli", "report", "--store", collector.store_url],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    (line,) = [line for line in report.stdout.splitlines() if "estimated usage" in line]
    assert line.startswith("warning: 1 calls have estimated usage")
    assert f"${format_value(estimated['cost_usd'])} of the total is estimated" in line

    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export([raw_span]) == SpanExportResult.SUCCESS
    raw_id = format(raw_span.context.span_id, "016x")
    collector.wait_for_rows(1, f"SELECT count() AS n FROM llm_spans WHERE span_id = '{raw_id}'")
    (raw,) = collector.query(f"SELECT * FROM llm_spans FINAL WHERE span_id = '{raw_id}'")
    assert raw["price_status"] == "no_usage" and raw["cost_usd"] is None
    assert "raw response body" in raw["price_note"]
    report = subprocess.run([sys.executable, "-m", "otel_llmcost.cli", "report", "--store", collector.store_url],
                            capture_output=True, text=True, timeout=60)
    (line,) = [line for line in report.stdout.splitlines() if "no usage" in line]
    # its model (the request's: the body was never parsed) has no call with usage to compare with
    assert line.startswith("warning: 1 calls have no usage (cost unknown, not in the total)")
    assert "(1 of them of models with no priced call to compare)" in line


def test_no_usage_calls_stored_before_the_rollup_counted_them_are_counted_once(tmp_path):
    from otel_llmcost.store import Store

    store = Store(f"chdb://{tmp_path}/store")
    try:
        store.migrate(before=80)  # a store as the release before made it
        now = datetime.now(timezone.utc)
        store.insert("llm_spans", [(now, "t", f"s{i}", status, "m") for i, status in
                                   enumerate(["no_usage", "no_usage", "priced"])],
                     ["timestamp", "trace_id", "span_id", "price_status", "request_model"])
        assert 80 in store.migrate()
        store.insert("llm_spans", [(now, "t", "s9", "no_usage", "m")],
                     ["timestamp", "trace_id", "span_id", "price_status", "request_model"])
        (row,) = store.query("SELECT sum(calls), sum(no_usage_calls) FROM llm_rollup_1m").rows
        assert tuple(row) == (4, 3)
    finally:
        store.close()
