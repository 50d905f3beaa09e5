"""One span never stops storage; the loader cannot die silently; health tells the truth; nothing private is stored.

Each case of issue 19 (items 1, 2 and 6) is sent to a real collector process on a real chDB store, with the real
OTLP exporters where one can send it (an exporter cannot send OTLP/JSON, nor a request older than today's
validation: those go as raw requests, or straight into a spool before the collector starts). Each test then
sends good spans and checks they are stored exactly once, and that plain sums, FINAL and the rollup agree.
The disk-full and loader-failure cases use the collector's fault hooks (collector/README.md)."""

from __future__ import annotations

import calendar
import json
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal

import grpc
import pytest
from google.rpc import error_details_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from intake_support import Collector, llm_spans, post, request_bytes, span_ids

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse
NS = 10**9


def make_spans(attribute_sets: list[dict], resource: dict | None = None, start_ns: list[int] | None = None) -> list:
    """One finished span per attribute set (an OpenAI chat call, then these attributes), made by the real SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "reliability", **(resource or {})}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("reliability-test")
    for i, extra in enumerate(attribute_sets):
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                      "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o",
                      "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
                      "llmcost.feature": "reliability", **extra}
        start = start_ns[i] if start_ns else None
        span = tracer.start_span("chat gpt-4o", kind=trace.SpanKind.CLIENT, attributes=attributes, start_time=start)
        span.end(end_time=start + NS if start else None)
    return list(exporter.get_finished_spans())


def ids_of(spans) -> list[str]:
    return [format(s.context.span_id, "016x") for s in spans]


def http_exporter(collector: Collector, timeout: float = 10) -> HttpExporter:
    return HttpExporter(endpoint=collector.http_endpoint + "/v1/traces", timeout=timeout)


def health(collector: Collector) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(collector.http_endpoint + "/llmcost/v1/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_totals_agree(collector: Collector) -> dict:
    """Every row is a distinct span; plain sums equal FINAL sums; the rollup agrees with the rows (application
    cache hits are rows but not calls)."""
    totals = "count() AS rows, toString(sum(cost_usd)) AS cost, sum(input_tokens) AS input, " \
             "toString(sum(ifNull(app_cache_savings_usd, 0))) AS savings"
    [plain] = collector.query(f"SELECT {totals}, uniqExact(trace_id, span_id) AS spans FROM llm_spans")
    [final] = collector.query(f"SELECT {totals}, uniqExact(trace_id, span_id) AS spans FROM llm_spans FINAL")
    assert plain == final and plain["rows"] == plain["spans"], (plain, final)
    [rollup] = collector.query("SELECT sum(calls) + sum(app_cache_hits) AS rows, toString(sum(cost_usd)) AS cost, "
                               "sum(input_tokens) AS input, toString(sum(app_cache_savings_usd)) AS savings "
                               "FROM llm_rollup_1m")
    assert rollup == {key: plain[key] if plain[key] is not None else "0" for key in rollup}, (rollup, plain)
    return plain


def send_good_spans_and_check_once(collector: Collector, n: int = 20) -> list[str]:
    good = llm_spans(n, feature="good-after")
    assert http_exporter(collector).export(good) == SpanExportResult.SUCCESS
    grpc_good = llm_spans(5, feature="good-after-grpc")
    grpc_exporter = GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=10)
    assert grpc_exporter.export(grpc_good) == SpanExportResult.SUCCESS
    grpc_exporter.shutdown()
    ids = span_ids(good + grpc_good)
    collector.wait_stored(ids)
    assert collector.count(ids) == collector.count(ids, final=True) == n + 5
    assert health(collector)[0] == 200
    return ids


def rows_of(collector: Collector, ids: list[str]) -> dict[str, dict]:
    rows = collector.query("SELECT span_id, price_status, toString(cost_usd) AS cost, input_tokens, prefix_length, "
                           "price_note FROM llm_spans WHERE has({ids:Array(String)}, span_id)", {"ids": ids})
    return {row["span_id"]: row for row in rows}


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    process = Collector(tmp_path_factory.mktemp("reliability") / "store").start()
    yield process
    process.stop()


def test_nan_and_infinite_token_counts_are_stored_flagged_as_unknown_usage(collector):
    odd = [float("nan"), float("inf"), float("-inf"), "NaN", "inf", "-Infinity", "nan"]
    spans = make_spans([{"gen_ai.usage.input_tokens": value} for value in odd])
    assert http_exporter(collector).export(spans[:4]) == SpanExportResult.SUCCESS
    grpc_exporter = GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=10)
    assert grpc_exporter.export(spans[4:]) == SpanExportResult.SUCCESS
    grpc_exporter.shutdown()
    # OTLP/JSON: `"doubleValue": "NaN"` (protobuf's JSON mapping of a NaN double), as some SDKs write it.
    [json_span] = make_spans([{}])
    document = json.loads(json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "json"},
        "spans": [{"traceId": format(json_span.context.trace_id, "032x"), "spanId": ids_of([json_span])[0],
                   "name": "chat", "startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns()),
                   "attributes": [
                       {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                       {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                       {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                       {"key": "gen_ai.usage.input_tokens", "value": {"doubleValue": "NaN"}},
                       {"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": "Infinity"}}]}]}]}]}))
    status, _, body = post(collector.http_endpoint, json.dumps(document).encode(), "application/json")
    assert status == 200, body
    ids = ids_of(spans) + ids_of([json_span])
    collector.wait_stored(ids)
    rows = rows_of(collector, ids)
    for span_id in ids:
        row = rows[span_id]
        assert row["price_status"] == "no_usage" and row["cost"] is None, row  # unknown, never zero
        assert "not a finite number" in row["price_note"], row
    send_good_spans_and_check_once(collector)
    assert_totals_agree(collector)


def test_counts_beyond_2_64_and_prefix_lengths_beyond_2_32_are_flagged(collector):
    big = (1 << 63) - 1
    spans = make_spans([
        {"gen_ai.usage.input_tokens": "18446744073709551617"},  # 2^64 + 1, as text
        {"gen_ai.usage.input_tokens": 1e30},
        {"gen_ai.usage.input_tokens": big, "gen_ai.usage.cache_read.input_tokens": big,
         "gen_ai.usage.cache_creation.input_tokens": big},  # each fits; their sum does not
        {"llmcost.prompt.prefix_length": (1 << 32) + 5, "llmcost.prompt.prefix_hash": "abc"},
        {"llmcost.prompt.prefix_length": "1e40"},
    ])
    assert http_exporter(collector).export(spans) == SpanExportResult.SUCCESS
    ids = ids_of(spans)
    collector.wait_stored(ids)
    rows = rows_of(collector, ids)
    for span_id in ids[:3]:
        assert rows[span_id]["price_status"] == "no_usage" and rows[span_id]["cost"] is None, rows[span_id]
        assert "beyond 2^64" in rows[span_id]["price_note"]
    for span_id in ids[3:]:
        row = rows[span_id]
        assert row["prefix_length"] == 0 and "prefix length" in row["price_note"], row
        assert row["price_status"] == "priced" and Decimal(row["cost"]) > 0  # the call itself is fine
    send_good_spans_and_check_once(collector)
    assert_totals_agree(collector)


def test_spans_starting_after_2106_are_rejected_and_the_rest_of_their_request_kept(collector):
    # 2300: beyond the spans' DateTime64(9) (2262); 2150: within it, but beyond the rollups' DateTime minutes.
    late = [calendar.timegm((2300, 1, 1, 0, 0, 0)) * NS, calendar.timegm((2150, 1, 1, 0, 0, 0)) * NS]
    now = time.time_ns()
    spans = make_spans([{}, {}, {}, {}], start_ns=[*late, now, now])
    status, _, answer = post(collector.http_endpoint, request_bytes(spans))
    assert status == 200
    response = ExportResponse.FromString(answer)
    assert response.partial_success.rejected_spans == 2
    assert "2106" in response.partial_success.error_message
    collector.wait_stored(ids_of(spans[2:]))
    assert collector.count(ids_of(spans[:2])) == 0
    # The real exporter gets the same answer (and reports success: partial success is not retried).
    again = make_spans([{}, {}], start_ns=[late[0], now])
    assert http_exporter(collector).export(again) == SpanExportResult.SUCCESS
    collector.wait_stored(ids_of(again[1:]))
    send_good_spans_and_check_once(collector)
    assert_totals_agree(collector)


def test_one_batch_spanning_101_months_is_stored(collector):
    starts = [calendar.timegm((2015 + m // 12, m % 12 + 1, 15, 0, 0, 0)) * NS for m in range(101)]
    spans = make_spans([{"llmcost.feature": "101-months"} for _ in starts], start_ns=starts)
    assert http_exporter(collector).export(spans) == SpanExportResult.SUCCESS  # one request: one batch
    collector.wait_stored(ids_of(spans))
    [months] = collector.query("SELECT uniqExact(toYYYYMM(timestamp)) AS months, count() AS n FROM llm_spans "
                               "WHERE feature = '101-months'")
    assert months == {"months": 101, "n": 101}
    [rollup] = collector.query("SELECT sum(calls) AS calls FROM llm_rollup_1m WHERE feature = '101-months'")
    assert rollup["calls"] == 101
    send_good_spans_and_check_once(collector)
    assert_totals_agree(collector)


def test_spool_records_that_cannot_be_stored_become_dead_letters_after_a_restart(tmp_path):
    """Requests spooled by a release without today's checks (a span in 2300, a record that is no OTLP) are
    set aside when the loader meets them, never retried forever; the spans around them are stored."""
    from otel_llmcost.collector.spool import Spool

    year_2300 = calendar.timegm((2300, 1, 1, 0, 0, 0)) * NS
    now = time.time_ns()
    spans = make_spans([{}, {}, {}], start_ns=[now, year_2300, now])
    spool = Spool(tmp_path / "store" / "spool")
    spool.append(request_bytes(spans))
    spool.append(b"\x0a\xff\xff\x01 not a protobuf message")
    before = llm_spans(10, feature="spooled-before")
    spool.append(request_bytes(before))
    spool.close()
    collector = Collector(tmp_path / "store").start()
    try:
        stored = ids_of([spans[0], spans[2]]) + span_ids(before)
        collector.wait_stored(stored)
        collector.wait_for(lambda: collector.stats()["spool_backlog_bytes"] == 0, "the spool to be loaded")
        letters = collector.query("SELECT span_id, reason, record FROM llm_dead_letters ORDER BY reason")
        assert len(letters) == 2, letters
        assert letters[0]["span_id"] == ids_of(spans)[1] and "2106" in letters[0]["reason"]
        assert json.loads(letters[0]["record"])["span_id"] == ids_of(spans)[1]
        assert "unreadable spool record" in letters[1]["reason"]
        stats = collector.stats()
        assert stats["spans_dead_lettered"] == 2 and stats["loader_restarts"] == 0
        send_good_spans_and_check_once(collector)
        assert_totals_agree(collector)
    finally:
        collector.stop()


def test_a_span_ending_near_2_64_ns_is_settled_and_stored(tmp_path):
    """Only a span's start time is checked: one whose end is near 2^64 ns (so its look-up window too) is settled
    against the store and stored like the others, never a batch retried for ever."""
    from otel_llmcost.collector.pipeline import Pipeline
    from otel_llmcost.store import Store

    store = Store(f"chdb://{tmp_path / 'store'}")
    store.migrate()
    try:
        pipeline = Pipeline(store)
        request = ExportRequest.FromString(request_bytes(llm_spans(3, feature="late-end")))
        request.resource_spans[0].scope_spans[0].spans[1].end_time_unix_nano = (1 << 64) - 1
        rows, _ = pipeline.rows_for(request.SerializeToString())
        kept, left_out = pipeline.settle(rows)
        assert len(kept) == 3 and not left_out
        assert not pipeline.write_batch(kept, "late-end")
        kept, left_out = pipeline.settle(rows)  # the same spans again: found stored
        assert not kept and len(left_out) == 3
    finally:
        store.close()


def test_rows_the_store_refuses_are_found_by_halving_and_dead_lettered_once(tmp_path):
    """The fallback behind the checks: rows that reach the store and are refused (made here by skipping the
    checks: a prefix length and a timestamp beyond their columns) are found among good ones and set aside; the
    good rows are stored once, also when the batch is written again with the same token (a replay)."""
    from otel_llmcost.collector.pipeline import Pipeline, StoreUnavailable
    from otel_llmcost.store import Store

    store = Store(f"chdb://{tmp_path / 'store'}")
    store.migrate()
    try:
        pipeline = Pipeline(store)
        rows, _ = pipeline.rows_for(request_bytes(llm_spans(40, feature="halving")))
        bad_prefix = list(rows[7])
        bad_prefix[36] = (1 << 32) + 5  # prefix_length
        bad_time = list(rows[23])
        bad_time[0] = 1 << 64  # timestamp
        rows[7], rows[23] = tuple(bad_prefix), tuple(bad_time)
        for _ in range(2):  # the second time: the replay of the same batch
            dead = pipeline.write_batch(rows, "test-token")
            pipeline.write_dead_letters(dead, "test-token")
            assert sorted(d.span_id for d in dead) == sorted([rows[7][3], rows[23][3]])
            assert all(d.reason.startswith("refused by the store") for d in dead)
            assert sorted("prefix_length" in d.reason or "timestamp" in d.reason for d in dead) == [True, True]
        [spans] = store.query("SELECT count() AS n, uniqExact(span_id) AS u FROM llm_spans").rows
        assert spans == (38, 38)
        [rollup] = store.query("SELECT sum(calls) FROM llm_rollup_1m").rows
        assert rollup == (38,)
        [letters] = store.query("SELECT count() FROM llm_dead_letters").rows
        assert letters == (2,)
        # A store that refuses every row (not these rows): retried, nothing set aside.
        every = [tuple(list(r[:36]) + [(1 << 32) + 1] + list(r[37:])) for r in rows[:20]]
        with pytest.raises(StoreUnavailable):
            pipeline.write_batch(every, "every-token")
    finally:
        store.close()


def collector_with_fault(tmp_path, hook: str, **env: str):
    """(the fault hook's file, a started collector with that hook) and a Retry-After of 1 s."""
    fault = tmp_path / "fault"
    return fault, Collector(tmp_path / "store", {hook: str(fault), "OTEL_LLMCOST_RETRY_AFTER_SECONDS": "1",
                                                 **env}).start()


def assert_both_receivers_push_back(collector: Collector, why: str) -> None:
    """OTLP/HTTP answers 503 + Retry-After (1 s here), OTLP/gRPC UNAVAILABLE + RetryInfo, both saying `why`."""
    status, headers, body = post(collector.http_endpoint, request_bytes(llm_spans(5)))
    assert status == 503 and headers["Retry-After"] == "1" and why.encode() in body, (status, body)
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(collector.grpc_endpoint))
    with pytest.raises(grpc.RpcError) as info:
        stub.Export(ExportRequest.FromString(request_bytes(llm_spans(5))), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and why in info.value.details()
    retry = error_details_pb2.RetryInfo.FromString(dict(info.value.trailing_metadata())["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.seconds == 1


def test_a_full_spool_disk_pushes_back_then_recovers_without_loss(tmp_path):
    disk_full, collector = collector_with_fault(tmp_path, "OTEL_LLMCOST_FAULT_DISK_FULL_FILE",
                                                OTEL_LLMCOST_BATCH_SECONDS="1.5")
    try:
        # Spooled, then the disk fills before the loader writes its checkpoint: it retries, it does not die.
        first = llm_spans(30, feature="before-full")
        assert post(collector.http_endpoint, request_bytes(first))[0] == 200
        disk_full.touch()
        assert_both_receivers_push_back(collector, "No space left")
        collector.wait_for(lambda: health(collector)[0] == 503 and
                           "checkpoint" in " ".join(health(collector)[1].get("problems", [])),
                           "health to report the spool checkpoint failing")
        assert collector.stats()["loader_alive"]
        # A real exporter sending now retries on the 503 until the disk has room again.
        during = llm_spans(20, feature="during-full")
        results = []
        sender = threading.Thread(target=lambda: results.append(http_exporter(collector, timeout=30).export(during)))
        sender.start()
        time.sleep(2)
        disk_full.unlink()
        sender.join()
        assert results == [SpanExportResult.SUCCESS]
        collector.wait_stored(span_ids(first + during))
        collector.wait_for(lambda: health(collector)[0] == 200, "health to recover")
        stats = collector.stats()
        assert stats["spool_write_errors"] >= 2 and stats["loader_restarts"] == 0
        send_good_spans_and_check_once(collector)
        assert assert_totals_agree(collector)["rows"] == 30 + 20 + 25
    finally:
        collector.stop()


def test_a_failing_loader_restarts_health_turns_503_and_receivers_stop_acknowledging(tmp_path):
    failing, collector = collector_with_fault(tmp_path, "OTEL_LLMCOST_FAULT_LOADER_FAIL_FILE",
                                              OTEL_LLMCOST_STALL_SECONDS="2")
    try:
        failing.touch()
        accepted = llm_spans(25, feature="while-failing")
        assert http_exporter(collector).export(accepted) == SpanExportResult.SUCCESS  # not stalled yet: spooled
        collector.wait_for(lambda: health(collector)[0] == 503, "health to report the stalled loader")
        code, report = health(collector)
        assert not report["accepting"] and "stored nothing" in report["problems"][0]
        assert "fault injection" in report["problems"][0]
        assert_both_receivers_push_back(collector, "loader")
        stats = collector.stats()
        assert stats["loader_restarts"] >= 2 and stats["loader_alive"]
        assert collector.count(span_ids(accepted)) == 0

        failing.unlink()  # the "bug" is gone: the supervised loader catches up on its own
        collector.wait_stored(span_ids(accepted))
        collector.wait_for(lambda: health(collector)[0] == 200, "health to recover")
        log = collector.log_path.read_text()
        assert "loader failed; starting again" in log
        send_good_spans_and_check_once(collector)
        assert assert_totals_agree(collector)["rows"] == 25 + 25
    finally:
        collector.stop()


SECRETS = {
    "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"my salary is 100k"}]}]',
    "gen_ai.output.messages": '[{"role":"assistant","parts":[{"type":"text","content":"noted"}]}]',
    "gen_ai.system_instructions": "You are a secret agent",
    "gen_ai.prompt.0.content": "what is my password?",
    "gen_ai.completion.0.content": "hunter2",
    "llm.prompts": "old-style prompt",
    "llm.input_messages.0.message.content": "openinference prompt",
    "input.value": "openinference input",
    "gen_ai.content.prompt": "openlit prompt",
    "traceloop.entity.input": "openllmetry input",
    "api.key": "k-123",
    "http.request.header.authorization": "Basic dXNlcjpwYXNz",
    "db.password": "p@ss",
    "app.note": "sk-proj-abcdefghijklmnopqrstuvwx",
    "app.header": "Bearer eyJhbGciOiJIUzI1NiJ9abcdefgh",
}


def test_prompt_content_and_secrets_are_not_stored_unless_kept_and_files_are_owner_only(tmp_path):
    resource = {"deployment.environment": "prod", "app.api_key": "r-secret", "process.command_args":
                ("python", "app.py", "--key", "sk-ant-api03-abcdefghijklmnopqrstuv")}
    (tmp_path / "private").mkdir()
    (tmp_path / "kept").mkdir()
    collector = Collector(tmp_path / "private" / "store").start()
    try:
        spans = make_spans([{**SECRETS, "http.url": "https://api.openai.com/v1/chat", "gen_ai.request.max_tokens": 5}],
                           resource)
        assert http_exporter(collector).export(spans) == SpanExportResult.SUCCESS
        collector.wait_stored(ids_of(spans))
        [row] = collector.query("SELECT attributes, resource_json FROM llm_spans WHERE span_id = {id:String}",
                                {"id": ids_of(spans)[0]})
        assert set(row["attributes"]) == {"http.url", "gen_ai.request.max_tokens"}, row["attributes"]
        resource_stored = json.loads(row["resource_json"])
        assert resource_stored["deployment.environment"] == "prod"
        assert "app.api_key" not in resource_stored and "process.command_args" not in resource_stored
        everything = json.dumps(collector.query("SELECT * FROM llm_spans"), default=str)
        for value in [*SECRETS.values(), "r-secret", "sk-ant-api03"]:
            assert value not in everything, value
        # Owner-only: the store, the spool and every file in them (umask 077 at start, explicit modes as well).
        store_dir = tmp_path / "private" / "store"
        assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((store_dir / "spool").stat().st_mode) == 0o700
        segments = list((store_dir / "spool").glob("*.seg"))
        assert segments and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in segments)
        assert stat.S_IMODE((store_dir / "spool" / "checkpoint.json").stat().st_mode) == 0o600
        for directory, dirs, files in os.walk(store_dir):
            for name in dirs + files:
                info = os.lstat(os.path.join(directory, name))
                if not stat.S_ISLNK(info.st_mode):  # (a link's own mode means nothing)
                    assert not stat.S_IMODE(info.st_mode) & 0o077, (os.path.join(directory, name), oct(info.st_mode))
    finally:
        collector.stop()

    kept = Collector(tmp_path / "kept" / "store",
                     {"OTEL_LLMCOST_KEEP_ATTRIBUTES": "gen_ai.input.messages, http.request.header.*"}).start()
    try:
        spans = make_spans([SECRETS])
        assert http_exporter(kept).export(spans) == SpanExportResult.SUCCESS
        kept.wait_stored(ids_of(spans))
        [row] = kept.query("SELECT attributes FROM llm_spans")
        assert row["attributes"] == {"gen_ai.input.messages": SECRETS["gen_ai.input.messages"],
                                     "http.request.header.authorization": SECRETS["http.request.header.authorization"]}
    finally:
        kept.stop()
