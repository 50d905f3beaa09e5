"""OTLP intake as the specification says: partial success, 413, auth, TLS on both receivers, forwarding every
span downstream, the collector's own metrics and log, and the schema DDL (one server or a cluster).

One collector process (TLS, bearer token, forwarding, metrics) serves the module; real exporters talk to it."""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import io
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import SpanExportResult

from intake_support import Collector, Downstream, llm_spans, post, request_bytes, self_signed_cert, span_ids

TOKEN = "s3cret-token"
LIMIT = 200_000

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse


@pytest.fixture(scope="module")
def downstream():
    server = Downstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure(tmp_path_factory, downstream, cert):
    cert_path, key_path = cert
    process = Collector(tmp_path_factory.mktemp("secure") / "store", {
        "OTEL_LLMCOST_AUTH_TOKEN": TOKEN,
        "OTEL_LLMCOST_TLS_CERT": str(cert_path), "OTEL_LLMCOST_TLS_KEY": str(key_path),
        "OTEL_LLMCOST_FORWARD_ENDPOINT": downstream.endpoint,
        "OTEL_LLMCOST_MAX_REQUEST_BYTES": str(LIMIT),
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": downstream.endpoint + "/v1/metrics",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_LLMCOST_STATS_LOG_SECONDS": "0.3",
    }).start()
    yield process
    process.stop()


def grpc_stub(collector, cert_path):
    credentials = grpc.ssl_channel_credentials(cert_path.read_bytes())
    channel = grpc.secure_channel(collector.grpc_endpoint, credentials)
    return trace_service_pb2_grpc.TraceServiceStub(channel)


def http_exporter(collector, cert_path, **kwargs):
    import requests

    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, where set, overrides the exporter's certificate_file
    return HttpExporter(endpoint=collector.http_endpoint + "/v1/traces", certificate_file=str(cert_path),
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, session=session, **kwargs)


def test_real_gzip_exporters_over_tls_with_a_token_and_every_span_is_forwarded(secure, cert, downstream):
    cert_path, _ = cert
    over_http = llm_spans(8, feature="tls-http", non_llm=4)
    gzip_http = http_exporter(secure, cert_path, compression=Compression.Gzip)
    assert gzip_http.export(over_http) == SpanExportResult.SUCCESS
    over_grpc = llm_spans(6, feature="tls-grpc", non_llm=2)
    exporter = GrpcExporter(endpoint=secure.grpc_endpoint, credentials=grpc.ssl_channel_credentials(cert_path.read_bytes()),
                            headers={"authorization": f"Bearer {TOKEN}"}, timeout=10, compression=grpc.Compression.Gzip)
    assert exporter.export(over_grpc) == SpanExportResult.SUCCESS
    exporter.shutdown()
    secure.wait_stored(span_ids(over_http + over_grpc))
    [row] = secure.query("SELECT count() AS n FROM llm_spans WHERE feature IN ('tls-http', 'tls-grpc')")
    assert row["n"] == 14  # LLM spans only: the 6 plain spans are not stored...

    def forwarded() -> set[str]:
        ids = set()
        for body in downstream.bodies("/v1/traces"):
            for rs in ExportRequest.FromString(body).resource_spans:
                for ss in rs.scope_spans:
                    ids.update(span.span_id.hex() for span in ss.spans)
        return ids

    everything = {format(s.context.span_id, "016x") for s in over_http + over_grpc}
    assert len(everything) == 20
    secure.wait_for(lambda: everything <= forwarded(), "every span, LLM or not, to be forwarded")  # ...but forwarded


def test_without_the_token_or_tls_nothing_is_accepted(secure, cert):
    cert_path, _ = cert
    body = request_bytes(llm_spans(1))
    context = ssl.create_default_context(cafile=str(cert_path))
    status, _, _ = post(secure.http_endpoint, body, context=context)
    assert status == 401
    status, _, _ = post(secure.http_endpoint, body, headers={"Authorization": "Bearer wrong"}, context=context)
    assert status == 401
    with pytest.raises(urllib.error.URLError):  # a client that does not trust the certificate
        post(secure.http_endpoint, body, headers={"Authorization": f"Bearer {TOKEN}"},
             context=ssl.create_default_context())
    with pytest.raises(OSError):  # plain HTTP to the TLS port
        post(secure.http_endpoint.replace("https://", "http://"), body, headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub(secure, cert_path).Export(ExportRequest.FromString(body), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def spoil(message: ExportRequest) -> ExportRequest:
    """Three spans no backend can use: no trace id, an all-zero span id, no start time."""
    spans = message.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b""
    spans[1].span_id = bytes(8)
    spans[2].start_time_unix_nano = 0
    return message


def test_invalid_spans_are_rejected_and_the_rest_kept_partial_success(secure, cert):
    cert_path, _ = cert
    context = ssl.create_default_context(cafile=str(cert_path))
    auth = {"Authorization": f"Bearer {TOKEN}"}

    spans = llm_spans(10, feature="partial-pb")
    ids = span_ids(spans)
    status, _, body = post(secure.http_endpoint, spoil(ExportRequest.FromString(request_bytes(spans))).SerializeToString(),
                           headers=auth, context=context)
    assert status == 200
    response = ExportResponse.FromString(body)
    assert response.partial_success.rejected_spans == 3
    message = response.partial_success.error_message
    assert "trace_id" in message and "span_id" in message and "start or end time" in message

    json_spans = llm_spans(5, feature="partial-json")
    document = json_format.MessageToDict(spoil(ExportRequest.FromString(request_bytes(json_spans))))
    for rs in document["resourceSpans"]:  # OTLP/JSON writes ids as hex
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    status, _, body = post(secure.http_endpoint, json.dumps(document).encode(), "application/json", auth, context)
    assert status == 200
    assert int(json.loads(body)["partialSuccess"]["rejectedSpans"]) == 3

    grpc_spans = llm_spans(4, feature="partial-grpc")
    response = grpc_stub(secure, cert_path).Export(spoil(ExportRequest.FromString(request_bytes(grpc_spans))),
                                                   metadata=[("authorization", f"Bearer {TOKEN}")], timeout=10)
    assert response.partial_success.rejected_spans == 3

    kept = ids[3:] + span_ids(json_spans)[3:] + span_ids(grpc_spans)[3:]
    secure.wait_stored(kept)
    [row] = secure.query("SELECT count() AS n FROM llm_spans WHERE feature LIKE 'partial-%'")
    assert row["n"] == len(kept) == 7 + 2 + 1
    assert secure.stats()["spans_rejected"] >= 9


def test_a_malformed_grpc_request_gets_invalid_argument_naming_the_problem(secure, cert):
    cert_path, _ = cert
    channel = grpc.secure_channel(secure.grpc_endpoint, grpc.ssl_channel_credentials(cert_path.read_bytes()))
    export_bytes = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    with pytest.raises(grpc.RpcError) as info:  # bytes that are no protobuf message (a truncated field)
        export_bytes(b"\x0a\xff\xff\x01", metadata=[("authorization", f"Bearer {TOKEN}")], timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in info.value.details()
    # The channel still works: a good request next goes through.
    spans = llm_spans(2, feature="after-malformed-grpc")
    response = export_bytes(request_bytes(spans), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=10)
    assert ExportResponse.FromString(response).partial_success.rejected_spans == 0
    secure.wait_stored(span_ids(spans))


def test_requests_over_the_size_limit_get_413(secure, cert):
    cert_path, _ = cert
    context = ssl.create_default_context(cafile=str(cert_path))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    big = llm_spans(800)  # about 300 bytes of protobuf a span: over the 200 kB limit
    body = request_bytes(big)
    assert len(body) > LIMIT
    status, _, payload = post(secure.http_endpoint, body, headers=auth, context=context)
    assert status == 413 and b"limit" in payload
    # A small gzip body that inflates past the limit (a "zip bomb") is refused as well.
    bomb = gzip.compress(body + bytes(LIMIT))
    assert len(bomb) < LIMIT
    status, _, payload = post(secure.http_endpoint, bomb, headers={**auth, "Content-Encoding": "gzip"},
                              context=context)
    assert status == 413
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub(secure, cert_path).Export(ExportRequest.FromString(body), metadata=[("authorization", f"Bearer {TOKEN}")],
                                            timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "google.rpc.retryinfo-bin" not in dict(info.value.trailing_metadata() or ())  # not retryable
    # Under the limit, the same spans go through.
    assert http_exporter(secure, cert_path).export(big[:300]) == SpanExportResult.SUCCESS
    secure.wait_stored(span_ids(big[:300]))


def test_the_collector_reports_on_itself(secure, cert, downstream):
    cert_path, _ = cert
    spans = llm_spans(3, feature="telemetry") + llm_spans(1, model="no-such-model-xyz", feature="telemetry")
    assert http_exporter(secure, cert_path).export(spans) == SpanExportResult.SUCCESS
    secure.wait_stored(span_ids(spans))
    stats = secure.stats()
    for key in ("spans_received", "spans_priced", "spans_unpriced", "spans_rejected", "requests_spooled",
                "queue_depth", "spool_backlog_bytes", "insert_latency_ms_last", "store_down"):
        assert key in stats
    assert stats["spans_unpriced"] >= 1 and stats["spans_priced"] >= 3

    def latest_metrics() -> dict:
        values = {}
        for body in downstream.bodies("/v1/metrics"):
            for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        points = getattr(metric, kind).data_points
                        if points:
                            point = points[-1]
                            values[metric.name] = point.count if kind == "histogram" else \
                                (point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)
        return values

    metrics = secure.wait_for(lambda: (m := latest_metrics()).get("llmcost.collector.spans.unpriced", 0) >= 1 and
                              m.get("llmcost.collector.insert.duration", 0) >= 1 and m, "the collector's own metrics")
    assert metrics["llmcost.collector.spans.received"] >= 4
    assert metrics["llmcost.collector.spans.priced"] >= 3
    assert "llmcost.collector.spool.backlog" in metrics and "llmcost.collector.queue.depth" in metrics
    secure.wait_for(lambda: "stats: received" in secure.log_path.read_text(), "the periodic summary in the log")


def test_schema_command_prints_ddl_that_runs_and_a_cluster_variant(tmp_path):
    from otel_llmcost.collector.schema import register

    def schema(*argv: str) -> str:
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers())
        args = parser.parse_args(["schema", *argv])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert args.func(args) == 0
        return out.getvalue()

    single, cluster = schema(), schema("--cluster", "prod")
    # Run both in a fresh chDB (another process: chDB allows one store per process): the single-server DDL
    # executes; the cluster DDL, which needs a cluster and Keeper to execute, must parse.
    script = """
import json, sys, clickhouse_connect
single, cluster = json.load(sys.stdin)
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
for statement in single.split(";\\n\\n"):
    if statement.strip():
        client.command(statement)
tables = client.query("SELECT name, engine FROM system.tables WHERE database = currentDatabase()").result_rows
for statement in cluster.split(";\\n\\n"):
    if statement.strip():
        client.query("EXPLAIN AST " + statement)
print(json.dumps(sorted(tables)))
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "chdb")], input=json.dumps([single, cluster]),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tables = dict(json.loads(done.stdout))
    assert tables["llm_spans"] == "ReplacingMergeTree" and tables["llm_rollup_1m"] == "SummingMergeTree"
    assert tables["llm_rollup_1m_mv"] == "MaterializedView"

    statements = [s for s in cluster.split(";\n\n") if s.strip()]
    assert all(" ON CLUSTER `prod`" in s for s in statements if s.startswith(("CREATE", "ALTER")))
    spans_local = next(s for s in statements if s.startswith("CREATE TABLE IF NOT EXISTS llm_spans_local "))
    assert "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', " \
           "inserted_at)" in spans_local
    spans = next(s for s in statements if s.startswith("CREATE TABLE IF NOT EXISTS llm_spans "))
    assert "ENGINE = Distributed('prod', currentDatabase(), llm_spans_local, cityHash64(trace_id, span_id))" in spans
    view = next(s for s in statements if s.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS llm_rollup_1m_mv"))
    assert "TO llm_rollup_1m_local" in view and "FROM llm_spans_local" in view
    assert "ReplicatedSummingMergeTree" in next(
        s for s in statements if s.startswith("CREATE TABLE IF NOT EXISTS llm_rollup_1m_local "))
    # a column change goes to the local tables and to the Distributed one (whose columns must match theirs);
    # rewriting the stored rows only to the local tables, which hold them
    to_alias = [s for s in statements if "MODIFY COLUMN resource_attributes Map" in s]
    assert [s.split(" ON CLUSTER")[0] for s in to_alias] == ["ALTER TABLE llm_spans_local", "ALTER TABLE llm_spans"]
    [materialize] = [s for s in statements if "MATERIALIZE COLUMN" in s]
    assert materialize.startswith("ALTER TABLE llm_spans_local ON CLUSTER `prod` ")
