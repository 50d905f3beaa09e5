"""OTLP receivers: HTTP (`/v1/traces`, protobuf or JSON, gzip) and gRPC (`TraceService/Export`).

Both decode with `opentelemetry-proto`'s messages and hand the request to the pipeline. A malformed
request gets 400 (gRPC INVALID_ARGUMENT) naming the problem; a store that refuses the write gets 503
(gRPC UNAVAILABLE) with Retry-After, so exporters retry; nothing is acknowledged before it is stored.

The HTTP receiver also serves the collector's own endpoints under `/llmcost/v1/` (health, stats, and a
query endpoint for the embedded store, which only the collector process can open), to loopback clients.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import logging
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from ..store import QUERY_PATH, StoreError, encode_value
from .pipeline import Outcome, Pipeline, StoreUnavailable

logger = logging.getLogger("otel_llmcost.collector")

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse

MAX_BODY_BYTES = 64 * 1024 * 1024
RETRY_AFTER_SECONDS = 5


class BadRequest(Exception):
    """A request we cannot decode; the message names the problem."""


def decode_http_body(body: bytes, content_type: str, content_encoding: str) -> tuple[ExportRequest, bool]:
    """The export request in an HTTP body, and whether it was JSON."""
    encoding = content_encoding.strip().lower()
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadRequest(f"body is not valid gzip: {exc}") from exc
    elif encoding == "deflate":
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise BadRequest(f"body is not valid deflate: {exc}") from exc
    elif encoding not in ("", "identity"):
        raise BadRequest(f"unsupported Content-Encoding {content_encoding!r}")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json":
        return decode_json(body), True
    if media_type in ("application/x-protobuf", "application/protobuf", ""):
        request = ExportRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequest(f"body is not a valid protobuf ExportTraceServiceRequest: {exc}") from exc
        return request, False
    raise BadRequest(f"unsupported Content-Type {content_type!r}: use application/x-protobuf or application/json")


_ID_FIELDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as exc:
                    raise BadRequest(f"{key} {value!r} is not hex") from exc
            else:
                value = _hex_ids_to_base64(value)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def decode_json(body: bytes) -> ExportRequest:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequest("body is not a JSON object (an ExportTraceServiceRequest)")
    try:
        return json_format.ParseDict(_hex_ids_to_base64(document), ExportRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise BadRequest(f"JSON is not an ExportTraceServiceRequest: {exc}") from exc


def export_response(outcome: Outcome) -> ExportResponse:
    return ExportResponse()


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def make_http_handler(pipeline: Pipeline, auth_token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "otel-llmcost"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("http %s", format % args)

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str, as_json: bool, headers: dict[str, str] | None = None) -> None:
            status_message = status_pb2.Status(code=_grpc_code_for(status), message=message)
            if as_json:
                body = json.dumps({"code": status_message.code, "message": message}).encode()
                self._send(status, body, "application/json", headers)
            else:
                self._send(status, status_message.SerializeToString(), "application/x-protobuf", headers)

        def _authorized(self) -> bool:
            return not auth_token or self.headers.get("Authorization", "") == f"Bearer {auth_token}"

        def _read_body(self) -> bytes | None:
            length = self.headers.get("Content-Length")
            if length is None:
                return None
            return self.rfile.read(int(length))

        def do_GET(self) -> None:
            if self.path == "/llmcost/v1/health":
                self._send(200, b'{"status":"ok"}', "application/json")
            elif self.path == "/llmcost/v1/stats":
                self._send(200, json.dumps(pipeline.stats()).encode(), "application/json")
            else:
                self._send(404, b'{"message":"not found"}', "application/json")

        def do_POST(self) -> None:
            content_type = self.headers.get("Content-Type", "")
            wants_json = content_type.split(";")[0].strip().lower() == "application/json"
            if self.path == QUERY_PATH:
                return self._query()
            if self.path != "/v1/traces":
                body = self._read_body()
                return self._error(404, f"no such endpoint {self.path}: OTLP traces go to /v1/traces", wants_json)
            if not self._authorized():
                self._read_body()
                return self._error(401, "missing or wrong bearer token", wants_json)
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._error(411, "Content-Length is required", wants_json, {"Connection": "close"})
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                return self._error(413, f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}", wants_json)
            body = self.rfile.read(length)
            try:
                request, wants_json = decode_http_body(body, content_type, self.headers.get("Content-Encoding", ""))
                outcome = pipeline.accept(request)
            except BadRequest as exc:
                return self._error(400, str(exc), wants_json)
            except StoreUnavailable as exc:
                return self._error(503, f"store unavailable, retry later: {exc}", wants_json,
                                   {"Retry-After": str(RETRY_AFTER_SECONDS)})
            except Exception as exc:  # a bug of ours must not take the receiver down
                logger.exception("could not process an export request")
                return self._error(500, f"internal error: {exc}", wants_json)
            response = export_response(outcome)
            if wants_json:
                self._send(200, json_format.MessageToJson(response).encode(), "application/json")
            else:
                self._send(200, response.SerializeToString(), "application/x-protobuf")

        def _query(self) -> None:
            body = self._read_body() or b"{}"
            if not is_loopback(self.client_address[0]):
                return self._error(403, "the query endpoint answers loopback clients only", True)
            if not self._authorized():
                return self._error(401, "missing or wrong bearer token", True)
            try:
                document = json.loads(body)
                result = pipeline.store.query(document["sql"], document.get("parameters") or None)
            except (ValueError, KeyError, TypeError) as exc:
                return self._error(400, f"expected {{'sql': ..., 'parameters': {{...}}}}: {exc}", True)
            except StoreError as exc:
                return self._error(400, str(exc), True)
            payload = {
                "columns": result.column_names,
                "types": result.column_types,
                "rows": [[encode_value(v) for v in row] for row in result.rows],
            }
            self._send(200, json.dumps(payload).encode(), "application/json")

    return Handler


def _grpc_code_for(http_status: int) -> int:
    return {400: 3, 401: 16, 403: 7, 404: 12, 411: 3, 413: 8, 429: 8, 503: 14}.get(http_status, 13)


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, pipeline: Pipeline, auth_token: str | None) -> None:
        self.pipeline = pipeline
        self.auth_token = auth_token

    def Export(self, request: ExportRequest, context: grpc.ServicerContext) -> ExportResponse:
        if self.auth_token:
            metadata = dict(context.invocation_metadata())
            if metadata.get("authorization") != f"Bearer {self.auth_token}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            outcome = self.pipeline.accept(request)
        except StoreUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"store unavailable, retry later: {exc}")
        except Exception as exc:
            logger.exception("could not process an export request")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
        return export_response(outcome)


class Receivers:
    """Both receivers, started and stopped together."""

    def __init__(self, pipeline: Pipeline, host: str, http_port: int, grpc_port: int,
                 auth_token: str | None = None) -> None:
        self.http = ThreadingHTTPServer((host, http_port), make_http_handler(pipeline, auth_token))
        self.http.daemon_threads = True
        self.http_port = self.http.server_address[1]
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                options=[("grpc.max_receive_message_length", MAX_BODY_BYTES)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(pipeline, auth_token), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port(f"{host}:{grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {host}:{grpc_port}")
        self._thread = threading.Thread(target=self.http.serve_forever, name="otlp-http", daemon=True)

    def start(self) -> None:
        self.grpc.start()
        self._thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(grace=2).wait()
