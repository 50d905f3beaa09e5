"""No span lost or counted twice: store outages, a full spool, kill -9, crashes between insert and checkpoint,
exporter retries. Real collector processes on real chDB stores, real OTLP exporters; the store outage is the
collector's documented fault-injection hook (a file whose existence makes writes fail)."""

from __future__ import annotations

import threading

import grpc
from google.rpc import error_details_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import SpanExportResult

from intake_support import Collector, fault_env, llm_spans, post, request_bytes, span_ids


def test_spans_sent_while_the_store_is_down_are_stored_once_after_recovery(tmp_path):
    down, env = fault_env(tmp_path)
    collector = Collector(tmp_path / "store", env).start()
    try:
        before = llm_spans(5, feature="before")
        exporter = HttpExporter(endpoint=collector.http_endpoint + "/v1/traces", timeout=10)
        assert exporter.export(before) == SpanExportResult.SUCCESS
        collector.wait_stored(span_ids(before))

        down.touch()  # the store is now unreachable
        during = llm_spans(40, feature="during")
        for i in range(0, 40, 10):
            assert exporter.export(during[i:i + 10]) == SpanExportResult.SUCCESS  # acknowledged: spooled
        assert exporter.export(during[:10]) == SpanExportResult.SUCCESS  # an exporter retry of a batch
        grpc_spans = llm_spans(10, feature="during-grpc")
        grpc_exporter = GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=10)
        assert grpc_exporter.export(grpc_spans) == SpanExportResult.SUCCESS
        assert grpc_exporter.export(grpc_spans) == SpanExportResult.SUCCESS  # and a gRPC retry
        grpc_exporter.shutdown()
        collector.wait_for(lambda: collector.stats()["store_down"], "the collector to notice the outage")
        stats = collector.stats()
        assert stats["insert_errors"] >= 1 and stats["spool_backlog_bytes"] > 0
        assert collector.count(span_ids(during + grpc_spans)) == 0  # nothing stored while down

        down.unlink()  # the store is back
        collector.wait_stored(span_ids(during + grpc_spans))
        collector.wait_for(lambda: collector.stats()["spool_backlog_bytes"] == 0, "the spool to drain")
        assert not collector.stats()["store_down"]
        spans = collector.assert_each_once()
        assert spans["rows"] == 55
        [by_feature] = collector.query("SELECT sum(calls) AS calls FROM llm_rollup_1m WHERE feature = 'during'")
        assert by_feature["calls"] == 40
    finally:
        collector.stop()


def test_a_full_spool_pushes_back_with_retry_after_then_recovers(tmp_path):
    down, env = fault_env(tmp_path)
    env.update(OTEL_LLMCOST_SPOOL_MAX_BYTES="30000", OTEL_LLMCOST_RETRY_AFTER_SECONDS="1")
    collector = Collector(tmp_path / "store", env).start()
    try:
        down.touch()
        accepted, status, headers, body = [], 200, {}, b""
        for _ in range(200):
            spans = llm_spans(20)
            status, headers, body = post(collector.http_endpoint, request_bytes(spans))
            if status != 200:
                break
            accepted += spans
            collector.wait_for(lambda: collector.stats()["store_down"], "the outage to be noticed")
        # Store down and spool full: 503 with Retry-After, which exporters honour.
        assert status == 503, (status, body)
        assert headers["Retry-After"] == "1"
        assert b"spool" in body
        stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(collector.grpc_endpoint))
        refused = llm_spans(20)
        try:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(request_bytes(refused)), timeout=10)
            raise AssertionError("gRPC export accepted with a full spool")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            info = error_details_pb2.RetryInfo.FromString(dict(exc.trailing_metadata())["google.rpc.retryinfo-bin"])
            assert info.retry_delay.seconds == 1
        assert collector.stats()["requests_rejected_full"] >= 2

        down.unlink()
        collector.wait_stored(span_ids(accepted))
        # Room again: the same exporter-style request is accepted and stored.
        status, _, _ = post(collector.http_endpoint, request_bytes(refused))
        assert status == 200
        collector.wait_stored(span_ids(refused))
        assert collector.assert_each_once()["rows"] == len(accepted) + 20
    finally:
        collector.stop()


def test_a_spool_full_because_the_store_is_behind_gets_429_and_resource_exhausted(tmp_path):
    # The loader waits an hour before its first insert: the spool fills while the store is up.
    collector = Collector(tmp_path / "store", {"OTEL_LLMCOST_SPOOL_MAX_BYTES": "20000",
                                               "OTEL_LLMCOST_BATCH_SECONDS": "3600",
                                               "OTEL_LLMCOST_BATCH_ROWS": "1000000"}).start()
    try:
        for _ in range(200):
            status, headers, body = post(collector.http_endpoint, request_bytes(llm_spans(20)))
            if status != 200:
                break
        assert status == 429, (status, body)
        assert int(headers["Retry-After"]) > 0
        stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(collector.grpc_endpoint))
        try:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(request_bytes(llm_spans(5))),
                        timeout=10)
            raise AssertionError("gRPC export accepted with a full spool")
        except grpc.RpcError as exc:
            # RESOURCE_EXHAUSTED is retryable only with RetryInfo (OTLP spec): it must be there.
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "google.rpc.retryinfo-bin" in dict(exc.trailing_metadata())
    finally:
        collector.stop()  # a clean stop stores what was spooled


def test_kill_9_mid_stream_then_restart_replays_every_acknowledged_span_once(tmp_path):
    env = {"OTEL_LLMCOST_BATCH_SECONDS": "2", "OTEL_LLMCOST_BATCH_ROWS": "150"}
    collector = Collector(tmp_path / "store", env).start()
    acknowledged: list[str] = []
    sent: list[str] = []
    enough = threading.Event()
    stop = threading.Event()

    def stream() -> None:
        exporter = HttpExporter(endpoint=collector.http_endpoint + "/v1/traces", timeout=2)
        while not stop.is_set():
            spans = llm_spans(50, non_llm=5)
            sent.extend(span_ids(spans))
            if exporter.export(spans) == SpanExportResult.SUCCESS:
                acknowledged.extend(span_ids(spans))
            if len(acknowledged) >= 1000:
                enough.set()

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        assert enough.wait(60), collector.log_path.read_text()
        collector.kill()  # mid-stream: the sender is still sending
    finally:
        stop.set()
        sender.join()
    restarted = Collector(tmp_path / "store", env).start()
    try:
        restarted.wait_stored(acknowledged, timeout=60)
        restarted.wait_for(lambda: restarted.stats()["spool_backlog_bytes"] == 0, "the replay to finish")
        spans = restarted.assert_each_once()
        # Spans in flight at the kill may or may not have been acknowledged; none is there twice.
        assert len(acknowledged) <= spans["rows"] <= len(sent)
    finally:
        restarted.stop()


def test_a_crash_between_insert_and_checkpoint_does_not_count_twice(tmp_path):
    crash = tmp_path / "crash-after-insert"
    env = {"OTEL_LLMCOST_FAULT_CRASH_AFTER_INSERT_FILE": str(crash)}
    collector = Collector(tmp_path / "store", env).start()
    spans = llm_spans(30)
    crash.touch()
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(spans) == SpanExportResult.SUCCESS
    collector.process.wait(timeout=30)  # inserted, then died before recording it in the spool checkpoint
    collector.log.close()
    crash.unlink()
    restarted = Collector(tmp_path / "store", env).start()
    try:
        restarted.wait_stored(span_ids(spans))
        restarted.wait_for(lambda: restarted.stats()["spool_backlog_bytes"] == 0, "the replay to finish")
        assert "re-sending the batch" in restarted.log_path.read_text()
        # The same batch, with the same deduplication token: dropped by llm_spans and by the rollup view.
        assert restarted.assert_each_once()["rows"] == 30
        # An exporter retrying the same spans after the restart: still once.
        assert HttpExporter(endpoint=restarted.http_endpoint + "/v1/traces").export(spans) == \
            SpanExportResult.SUCCESS
        restarted.wait_for(lambda: restarted.stats()["spans_duplicate"] >= 30, "the retry to be seen")
        restarted.wait_for(lambda: restarted.stats()["spool_backlog_bytes"] == 0, "the retry to be loaded")
        assert restarted.assert_each_once()["rows"] == 30
    finally:
        restarted.stop()
