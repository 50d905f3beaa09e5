"""The collector as a real process: real SDK calls -> real spans -> real OTLP exporters -> chDB rows.

Tokens must equal the provider's own usage in the recordings, and costs what `genai-prices` gives for
that usage at the span's start time.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from decimal import Decimal

import anthropic
import openai
import pytest
from genai_prices import Usage, calc_price
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from replay import ReplayServer, expected_usage

ANTHROPIC_CACHING = "anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy"
OPENAI_CACHING = "openai/test_prompt_caching/test_openai_prompt_caching"


def request_body(interaction: dict) -> dict:
    body = interaction["request"]["body"]
    return json.loads(body) if isinstance(body, (str, bytes)) else body


def replay_anthropic(recording: str) -> list[dict]:
    with ReplayServer(recording) as server:
        client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
        for interaction in server.interactions:
            client.messages.create(**request_body(interaction))
    return expected_usage(recording)


def replay_openai(recording: str) -> list[dict]:
    with ReplayServer(recording) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        for interaction in server.interactions:
            client.chat.completions.create(**request_body(interaction))
    return expected_usage(recording)


def rows_for(collector, spans) -> list[dict]:
    ids = [format(s.context.span_id, "016x") for s in spans]
    in_list = ", ".join(f"'{i}'" for i in ids)
    collector.wait_for_rows(len(ids), f"SELECT count() AS n FROM llm_spans WHERE span_id IN ({in_list})")
    rows = collector.query(
        "SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id) ORDER BY timestamp", {"ids": ids})
    return rows


def expected_cost(provider: str, model: str, start_ns: int, usage: dict) -> Decimal:
    return calc_price(
        Usage(**{k: v for k, v in usage.items() if v}),
        model,
        provider_id=provider,
        genai_request_timestamp=datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc),
    ).total_price


def test_anthropic_prompt_caching_over_http_is_priced_exactly(collector, spans):
    usages = replay_anthropic(ANTHROPIC_CACHING)
    finished = spans.get_finished_spans()
    assert len(finished) == len(usages)
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS

    rows = rows_for(collector, finished)
    assert len(rows) == len(usages)
    assert any(u["usage"]["cache_read_input_tokens"] for u in usages)
    assert any(u["usage"]["cache_creation_input_tokens"] for u in usages)
    for row, expected, span in zip(rows, usages, finished):
        usage = expected["usage"]
        read, write = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
        total_input = usage["input_tokens"] + read + write
        assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"], row["output_tokens"]) == \
            (total_input, read, write, usage["output_tokens"])
        cost = expected_cost("anthropic", expected["model"], span.start_time, {
            "input_tokens": total_input, "cache_read_tokens": read, "cache_write_tokens": write,
            "output_tokens": usage["output_tokens"]})
        assert row["cost_usd"] == cost
        assert row["input_cost_usd"] + row["cache_read_cost_usd"] + row["cache_write_cost_usd"] + \
            row["output_cost_usd"] == cost
        assert row["price_status"] == "priced"
        assert row["price_source"].startswith("genai-prices ")
        assert row["provider"] == "anthropic" and row["response_model"] == expected["model"]


def test_openai_prompt_caching_over_grpc_is_priced_exactly(collector, spans):
    usages = replay_openai(OPENAI_CACHING)
    finished = spans.get_finished_spans()
    exporter = GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True)
    assert exporter.export(finished) == SpanExportResult.SUCCESS
    exporter.shutdown()

    rows = rows_for(collector, finished)
    assert len(rows) == len(usages)
    assert any(u["usage"]["prompt_tokens_details"]["cached_tokens"] for u in usages)
    for row, expected, span in zip(rows, usages, finished):
        usage = expected["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        # prompt_tokens already includes the cached tokens: never added twice.
        assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == \
            (usage["prompt_tokens"], cached, usage["completion_tokens"])
        cost = expected_cost("openai", expected["model"], span.start_time, {
            "input_tokens": usage["prompt_tokens"], "cache_read_tokens": cached,
            "output_tokens": usage["completion_tokens"]})
        assert row["cost_usd"] == cost
        if cached:
            assert row["cache_read_cost_usd"] > 0 and row["cache_savings_usd"] > 0


def test_unknown_model_is_unpriced_not_zero(collector, spans, tracing):
    from opentelemetry import trace

    tracer = tracing[0].get_tracer("test")
    with tracer.start_as_current_span("chat my-finetune-xyz", kind=trace.SpanKind.CLIENT) as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                             "gen_ai.request.model": "my-finetune-xyz", "gen_ai.usage.input_tokens": 100,
                             "gen_ai.usage.output_tokens": 10})
    finished = spans.get_finished_spans()
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    [row] = rows_for(collector, finished)
    assert row["price_status"] == "unpriced"
    assert row["cost_usd"] is None
    assert "my-finetune-xyz" in row["price_note"]
    assert row["input_tokens"] == 100


def test_resource_attributes_are_stored_with_each_call(collector):
    """The resource (service, host, pod...) is kept once per part as text and read back as a map."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    resource = {"service.name": "resource-test", "host.name": "h\u00e9 \"1\" \\ {2}", "process.pid": 4242,
                "deployment.environment": ""}
    exported = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(resource))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    for model in ("gpt-4o-mini", "gpt-4o"):
        with provider.get_tracer("test").start_as_current_span(f"chat {model}", kind=trace.SpanKind.CLIENT) as span:
            span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                 "gen_ai.request.model": model, "gen_ai.usage.input_tokens": 10,
                                 "gen_ai.usage.output_tokens": 1})
    finished = exported.get_finished_spans()
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    rows_for(collector, finished)
    stored = collector.query(
        "SELECT resource_attributes AS map, resource_attributes['host.name'] AS host, resource_json AS text "
        "FROM llm_spans WHERE service_name = 'resource-test'")
    as_text = {key: str(value) for key, value in resource.items()}
    assert len(stored) == 2
    for row in stored:
        assert row["map"] == as_text and row["host"] == resource["host.name"]
        assert json.loads(row["text"]) == as_text
    [found] = collector.query("SELECT count() AS n FROM llm_spans "
                              "WHERE resource_attributes['process.pid'] = '4242' AND service_name = 'resource-test'")
    assert found["n"] == 2


def test_a_resent_export_is_stored_once(collector, spans):
    replay_anthropic(ANTHROPIC_CACHING)
    finished = spans.get_finished_spans()
    exporter = HttpExporter(endpoint=collector.http_endpoint + "/v1/traces")
    assert exporter.export(finished) == SpanExportResult.SUCCESS
    assert exporter.export(finished) == SpanExportResult.SUCCESS  # an exporter retry after a lost response
    rows_for(collector, finished)
    ids = [format(s.context.span_id, "016x") for s in finished]
    [count] = collector.query("SELECT count() AS n FROM llm_spans WHERE has({ids:Array(String)}, span_id)",
                              {"ids": ids})
    assert count["n"] == len(finished)


def test_native_anthropic_span_inside_ours_is_counted_once(collector, spans, tracing):
    """With both our span and the SDK's own span exported (as when the SDK's hook moves), one row."""
    import anthropic._base_client as base_client
    from opentelemetry.instrumentation.utils import unwrap
    from wrapt import wrap_function_wrapper

    from otel_llmcost.instrumentation.anthropic import _skip_native_span_inside_ours

    unwrap(base_client, "start_api_call_span")
    try:
        with ReplayServer(ANTHROPIC_CACHING) as server:
            client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0,
                                         open_telemetry={"tracer_provider": tracing[0]})
            client.messages.create(**request_body(server.interactions[0]))
    finally:
        wrap_function_wrapper(base_client, "start_api_call_span", _skip_native_span_inside_ours)
    finished = spans.get_finished_spans()
    scopes = sorted(s.instrumentation_scope.name for s in finished)
    assert scopes == ["com.anthropic.sdk.python", "otel_llmcost"]
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    trace_id = format(finished[0].context.trace_id, "032x")
    collector.wait_for_rows(1, f"SELECT count() AS n FROM llm_spans WHERE trace_id = '{trace_id}'")
    rows = collector.query("SELECT scope_name, input_tokens FROM llm_spans WHERE trace_id = {t:String}",
                           {"t": trace_id})
    assert [r["scope_name"] for r in rows] == ["otel_llmcost"]


def test_native_anthropic_span_alone_is_priced(collector, spans, tracing):
    """The SDK's own span (input already includes the cache; cache writes spelled cache_write) prices the same."""
    from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor

    AnthropicInstrumentor().uninstrument()
    try:
        usages = replay_anthropic_with_native(tracing[0])
    finally:
        AnthropicInstrumentor().instrument(tracer_provider=tracing[0])
    finished = spans.get_finished_spans()
    assert {s.instrumentation_scope.name for s in finished} == {"com.anthropic.sdk.python"}
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    rows = rows_for(collector, finished)
    for row, expected, span in zip(rows, usages, finished):
        usage = expected["usage"]
        read, write = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
        assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == \
            (usage["input_tokens"] + read + write, read, write)
        assert row["cost_usd"] == expected_cost("anthropic", expected["model"], span.start_time, {
            "input_tokens": usage["input_tokens"] + read + write, "cache_read_tokens": read,
            "cache_write_tokens": write, "output_tokens": usage["output_tokens"]})


def replay_anthropic_with_native(provider) -> list[dict]:
    with ReplayServer(ANTHROPIC_CACHING) as server:
        client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0,
                                     open_telemetry={"tracer_provider": provider})
        for interaction in server.interactions:
            client.messages.create(**request_body(interaction))
    return expected_usage(ANTHROPIC_CACHING)


def post(collector, body: bytes, content_type: str, encoding: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(collector.http_endpoint + "/v1/traces", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    if encoding:
        request.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("body, content_type, encoding, problem", [
    (b"\xff\xfe not protobuf", "application/x-protobuf", None, "protobuf"),
    (b"{not json", "application/json", None, "JSON"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json", None, "hex"),
    (b"plain text", "text/plain", None, "Content-Type"),
    (b"not gzip", "application/x-protobuf", "gzip", "gzip"),
])
def test_malformed_requests_get_400_naming_the_problem(collector, body, content_type, encoding, problem):
    status, payload = post(collector, body, content_type, encoding)
    assert status == 400
    assert problem in payload.decode(errors="replace") or problem.lower() in payload.decode(errors="replace")
    # The collector keeps serving.
    with urllib.request.urlopen(collector.http_endpoint + "/llmcost/v1/health", timeout=5) as response:
        assert response.status == 200


def test_json_and_gzip_bodies_are_accepted(collector, spans):
    replay_anthropic(ANTHROPIC_CACHING)
    finished = spans.get_finished_spans()
    message = encode_spans(finished)
    document = json_format.MessageToDict(message)
    for resource_spans in document["resourceSpans"]:  # OTLP/JSON writes ids as hex
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    duplicates = collector.stats()["spans_duplicate"]
    status, _ = post(collector, json.dumps(document).encode(), "application/json")
    assert status == 200
    status, _ = post(collector, gzip.compress(message.SerializeToString()), "application/x-protobuf", "gzip")
    assert status == 200  # the same spans again, gzip'd: stored once
    rows = rows_for(collector, finished)
    assert len(rows) == len(finished)
    # Once the second request has been through the loader, plain SQL (FINAL would hide a second row) counts each once.
    deadline = time.monotonic() + 30
    while collector.stats()["spans_duplicate"] < duplicates + len(finished) and time.monotonic() < deadline:
        time.sleep(0.1)
    [plain] = collector.query("SELECT count() AS n FROM llm_spans WHERE has({ids:Array(String)}, span_id)",
                              {"ids": [format(s.context.span_id, "016x") for s in finished]})
    assert plain["n"] == len(finished)


def test_cli_reads_the_store_while_the_collector_runs(collector, spans):
    replay_openai(OPENAI_CACHING)
    finished = spans.get_finished_spans()
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    rows_for(collector, finished)
    cli = [sys.executable, "-m", "otel_llmcost.cli"]
    out = subprocess.run(cli + ["sql", "--store", collector.store_url, "--format", "json",
                                "SELECT provider, count() AS calls FROM llm_spans GROUP BY provider"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert {"provider": "openai", "calls": lines[[r["provider"] for r in lines].index("openai")]["calls"]} in lines
    report = subprocess.run(cli + ["report", "--store", collector.store_url], capture_output=True, text=True,
                            timeout=60)
    assert report.returncode == 0, report.stderr
    assert "gpt-4o" in report.stdout and "total:" in report.stdout

    # The report reads the rollup: it must agree with the raw rows, call for call and to the nano-dollar.
    report = subprocess.run(cli + ["report", "--store", collector.store_url, "--format", "json"],
                            capture_output=True, text=True, timeout=60)
    # (a model none of whose calls has a known cost reports its cost as unknown: null, not 0)
    reported = {(r["provider"], r["model"]):
                (r["calls"], None if r["cost_usd"] is None else Decimal(str(r["cost_usd"])), r["unpriced_calls"])
                for r in map(json.loads, filter(lambda line: line.startswith("{"), report.stdout.splitlines()))}
    raw = collector.query(
        "SELECT provider, if(response_model != '', response_model, request_model) AS model, count() AS calls, "
        "if(countIf(cost_usd IS NOT NULL) = 0, NULL, sum(ifNull(cost_usd, 0))) AS cost, "
        "countIf(price_status = 'unpriced') AS unpriced FROM llm_spans FINAL "
        "WHERE cache_hit_kind = '' GROUP BY provider, model")
    assert reported == {(r["provider"], r["model"]): (r["calls"], r["cost"], r["unpriced"]) for r in raw}
