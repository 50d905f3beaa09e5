"""OTLP receivers: HTTP (`/v1/traces`, protobuf or JSON, gzip) and gRPC (`TraceService/Export`, gzip), plain or
TLS, optionally behind a bearer token.

Both decode with `opentelemetry-proto`'s messages and hand the request to `Intake`, which answers as the OTLP
specification says:
- spans with an invalid trace or span id, or without a start or end time, are rejected and the rest kept:
  success with `partial_success` (`rejected_spans` and a message);
- a malformed request: 400 naming the problem (gRPC INVALID_ARGUMENT); over the size limit: 413 (gRPC
  RESOURCE_EXHAUSTED, not retryable);
- a full spool: 429 (gRPC RESOURCE_EXHAUSTED with RetryInfo) while the store keeps up slowly, 503 (gRPC
  UNAVAILABLE with RetryInfo) while the store is down, both with Retry-After, so that exporters retry.
A request is acknowledged only once it is in the spool, on disk (see spool.py and collector/README.md).

The HTTP receiver also serves the collector's own endpoints under `/llmcost/v1/` (health, stats, and a
query endpoint for the embedded store, which only the collector process can open), to loopback clients.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import ssl
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ..budgets import budget_status
from ..guard import BUDGETS_PATH
from ..store import QUERY_PATH, StoreError, encode_value
from .normalize import MAX_TIMESTAMP_NS
from .spool import Spool, SpoolFull

logger = logging.getLogger("otel_llmcost.collector")

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse

MAX_BODY_BYTES = 64 * 1024 * 1024
RETRY_AFTER_SECONDS = 5
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


class BadRequest(Exception):
    """A request we cannot decode; the message names the problem."""


class TooLarge(Exception):
    """A request over the size limit (compressed or not)."""


class Pushback(Exception):
    """We cannot take the request now; the exporter should retry after `retry_after` seconds."""

    def __init__(self, message: str, store_down: bool, retry_after: int) -> None:
        super().__init__(message)
        self.store_down = store_down
        self.retry_after = retry_after


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body, decompressed (gzip or deflate) to at most `limit` bytes."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}")
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding}: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"body is not valid {encoding}: truncated")
    return out


def decode_protobuf(data: bytes, what: str) -> ExportRequest:
    """An export request from its protobuf bytes; BadRequest naming the problem (`what`: "body", "request")."""
    request = ExportRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise BadRequest(f"{what} is not a valid protobuf ExportTraceServiceRequest: {exc}") from exc
    return request


def decode_http_body(body: bytes, content_type: str, content_encoding: str,
                     limit: int = MAX_BODY_BYTES) -> tuple[ExportRequest, bool, bytes]:
    """The export request in an HTTP body, whether it was JSON, and the decompressed body."""
    body = decompress(body, content_encoding.strip().lower(), limit)
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json":
        return decode_json(body), True, body
    if media_type in ("application/x-protobuf", "application/protobuf", ""):
        return decode_protobuf(body, "body"), False, body
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


def reject_invalid_spans(request: ExportRequest) -> tuple[int, int, str]:
    """Removes the spans no backend can use (invalid ids, no timestamps) from `request`, in place.
    Returns (spans kept, spans rejected, why)."""
    kept = 0
    reasons: dict[str, int] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            bad: list[int] = []
            for i, span in enumerate(spans):
                trace_id, span_id = span.trace_id, span.span_id
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                    reason = "an invalid trace_id"
                elif len(span_id) != 8 or span_id == _ZERO_SPAN:
                    reason = "an invalid span_id"
                elif not span.start_time_unix_nano or not span.end_time_unix_nano:
                    reason = "no start or end time"
                elif span.start_time_unix_nano > MAX_TIMESTAMP_NS:
                    reason = "a start time after 2106-02-07 (beyond the store's timestamps)"
                else:
                    continue
                bad.append(i)
                reasons[reason] = reasons.get(reason, 0) + 1
            for i in reversed(bad):
                del spans[i]
            kept += len(spans)
    rejected = sum(reasons.values())
    message = ""
    if rejected:
        message = f"rejected {rejected} of {kept + rejected} spans: " + \
            ", ".join(f"{n} with {reason}" for reason, n in sorted(reasons.items()))
    return kept, rejected, message


class Intake:
    """What both receivers do with a decoded request: validate, forward, spool (durably), answer."""

    def __init__(self, spool: Spool, stats, forwarder=None, retry_after: int = RETRY_AFTER_SECONDS,
                 refusing: Callable[[], str] | None = None,
                 health: Callable[[], tuple[bool, dict]] | None = None) -> None:
        self.spool = spool
        self.stats = stats
        self.forwarder = forwarder
        self.retry_after = retry_after
        # Why nothing spooled now would be stored (the loader is dead or stalled), or "": then requests are not
        # acknowledged (503 + Retry-After, gRPC UNAVAILABLE + RetryInfo) rather than spooled into a black hole.
        self.refusing = refusing or (lambda: "")
        self.health = health or (lambda: (True, {"status": "ok"}))

    def accept(self, request: ExportRequest, raw: bytes | None = None) -> ExportResponse:
        """`raw`: the request as protobuf bytes, when we have them (saves serializing it again)."""
        refusal = self.refusing()
        if refusal:
            self.stats.add(requests_rejected_full=1)
            raise Pushback(f"not accepting spans: {refusal}; retry later", True, self.retry_after)
        if self.forwarder is not None:
            self.forwarder.submit(raw if raw is not None else request.SerializeToString())
        kept, rejected, message = reject_invalid_spans(request)
        response = ExportResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message
            raw = None  # the request changed
        if kept:
            try:
                self.spool.append(raw if raw is not None else request.SerializeToString())
            except SpoolFull as exc:
                self.stats.add(requests_rejected_full=1)
                store_down = self.stats.values["store_down"]
                raise Pushback(f"{exc}; {'the store is down' if store_down else 'the store is behind'}, "
                               f"retry later", store_down, self.retry_after) from exc
            except OSError as exc:
                self.stats.add(spool_write_errors=1)
                logger.error("spool write failed: %s", exc)
                raise Pushback(f"spool write failed: {exc}", True, self.retry_after) from exc
        self.stats.add(requests_received=1, requests_spooled=1 if kept else 0, spans_received=kept,
                       spans_rejected=rejected)
        return response


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def make_http_handler(intake: Intake, store, stats: Callable[[], dict], auth_token: str | None,
                      max_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "otel-llmcost"
        timeout = 120  # an idle or stuck client does not hold a thread forever

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
                ok, report = intake.health()
                self._send(200 if ok else 503, json.dumps(report).encode(), "application/json")
            elif self.path == "/llmcost/v1/stats":
                self._send(200, json.dumps(stats()).encode(), "application/json")
            elif self.path == BUDGETS_PATH:
                self._budgets()
            else:
                self._send(404, b'{"message":"not found"}', "application/json")

        def do_POST(self) -> None:
            content_type = self.headers.get("Content-Type", "")
            wants_json = content_type.split(";")[0].strip().lower() == "application/json"
            if self.path == QUERY_PATH:
                return self._query()
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                return self._error(411, "Content-Length is required", wants_json, {"Connection": "close"})
            if length > max_bytes:
                # Read (and drop) the body first, within reason, so that the client, still sending, gets to see
                # the 413 instead of a reset connection.
                if length <= max(4 * max_bytes, MAX_BODY_BYTES):
                    remaining = length
                    while remaining > 0:
                        chunk = self.rfile.read(min(remaining, 1 << 16))
                        if not chunk:
                            break
                        remaining -= len(chunk)
                self.close_connection = True
                return self._error(413, f"body of {length} bytes exceeds the limit of {max_bytes}", wants_json,
                                   {"Connection": "close"})
            body = self.rfile.read(length)
            if self.path != "/v1/traces":
                return self._error(404, f"no such endpoint {self.path}: OTLP traces go to /v1/traces", wants_json)
            if not self._authorized():
                return self._error(401, "missing or wrong bearer token", wants_json)
            try:
                request, wants_json, raw = decode_http_body(body, content_type,
                                                            self.headers.get("Content-Encoding", ""), max_bytes)
                response = intake.accept(request, None if wants_json else raw)
            except BadRequest as exc:
                return self._error(400, str(exc), wants_json)
            except TooLarge as exc:
                return self._error(413, str(exc), wants_json)
            except Pushback as exc:
                return self._error(503 if exc.store_down else 429, str(exc), wants_json,
                                   {"Retry-After": str(exc.retry_after)})
            except Exception as exc:  # a bug of ours must not take the receiver down
                logger.exception("could not process an export request")
                return self._error(500, f"internal error: {exc}", wants_json)
            if wants_json:
                self._send(200, json_format.MessageToJson(response, indent=None).encode(), "application/json")
            else:
                self._send(200, response.SerializeToString(), "application/x-protobuf")

        def _budgets(self) -> None:
            """The budgets and their spend this period, for the apps' budget guards (read-only)."""
            if not self._authorized():
                return self._error(401, "missing or wrong bearer token", True)
            try:
                budgets = budget_status(store)
            except StoreError as exc:
                return self._error(503, f"the store cannot be read: {exc}", True)
            body = json.dumps({"budgets": budgets}, default=str).encode()
            self._send(200, body, "application/json", {"Cache-Control": "no-store"})

        def _query(self) -> None:
            body = self._read_body() or b"{}"
            if not is_loopback(self.client_address[0]):
                return self._error(403, "the query endpoint answers loopback clients only", True)
            if not self._authorized():
                return self._error(401, "missing or wrong bearer token", True)
            try:
                document = json.loads(body)
                result = store.query(document["sql"], document.get("parameters") or None)
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


def retry_info(seconds: int) -> bytes:
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds)).SerializeToString()


class TraceService:
    """OTLP/gRPC `Export`, registered (`add_to_server`) to receive the request's bytes: they are decoded here and
    kept as they came for the spool, instead of being serialized again."""

    def __init__(self, intake: Intake, auth_token: str | None) -> None:
        self.intake = intake
        self.auth_token = auth_token

    def Export(self, raw: bytes, context: grpc.ServicerContext) -> ExportResponse:
        if self.auth_token:
            metadata = dict(context.invocation_metadata())
            if metadata.get("authorization") != f"Bearer {self.auth_token}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            request = decode_protobuf(raw, "request")
        except BadRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            return self.intake.accept(request, raw)
        except Pushback as exc:
            # RetryInfo makes RESOURCE_EXHAUSTED retryable (OTLP spec) and tells exporters when.
            context.set_trailing_metadata([("google.rpc.retryinfo-bin", retry_info(exc.retry_after))])
            code = grpc.StatusCode.UNAVAILABLE if exc.store_down else grpc.StatusCode.RESOURCE_EXHAUSTED
            context.abort(code, str(exc))
        except Exception as exc:
            logger.exception("could not process an export request")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")

    def add_to_server(self, server: grpc.Server) -> None:
        """Registers Export like the generated `add_TraceServiceServicer_to_server`, but with no deserializer."""
        handler = grpc.unary_unary_rpc_method_handler(
            self.Export, request_deserializer=None, response_serializer=ExportResponse.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}),))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def get_request(self):
        sock, address = self.socket.accept()
        if self.ssl_context is not None:
            # The handshake happens on the first read, in the connection's own thread.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address) -> None:
        logger.debug("http connection from %s failed", client_address, exc_info=True)


class Receivers:
    """Both receivers, started and stopped together."""

    def __init__(self, intake: Intake, store, stats: Callable[[], dict], host: str, http_port: int, grpc_port: int,
                 auth_token: str | None = None, max_bytes: int = MAX_BODY_BYTES, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
        self.tls = bool(tls_cert)
        self.http = _HTTPServer((host, http_port), make_http_handler(intake, store, stats, auth_token, max_bytes))
        if tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(tls_cert, tls_key or None)
            self.http.ssl_context = context
        self.http_port = self.http.server_address[1]
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                options=[("grpc.max_receive_message_length", max_bytes)])
        TraceService(intake, auth_token).add_to_server(self.grpc)
        if tls_cert:
            with open(tls_cert, "rb") as f:
                cert = f.read()
            with open(tls_key or tls_cert, "rb") as f:
                key = f.read()
            credentials = grpc.ssl_server_credentials([(key, cert)])
            self.grpc_port = self.grpc.add_secure_port(f"{host}:{grpc_port}", credentials)
        else:
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
