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

The HTTP receiver also serves the collector's own endpoints under `/llmcost/v1/` (health, stats, and, to
loopback clients, a read-only query endpoint for the embedded store, which only the collector process can open,
and the CLI's named writes).

Before a body is read: the bearer token (constant-time, scheme in any case), refusal of what a web page can
make a browser send (an Origin, a cross-site fetch, a foreign Host on loopback), and the declared size. Bodies
are then read within the size limit (chunked ones too) and held, as received and as decompressed, within one
memory budget shared by all requests; connections are served by a fixed pool of workers.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import ssl
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable

import grpc
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ..budgets import budget_status
from ..guard import BUDGETS_PATH
from ..store import QUERY_PATH, REPRICE_PATH, WRITE_PATH, StoreError, encode_value
from .normalize import MAX_TIMESTAMP_NS
from .spool import Spool, SpoolFull

logger = logging.getLogger("otel_llmcost.collector")

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse

MAX_BODY_BYTES = 64 * 1024 * 1024
RETRY_AFTER_SECONDS = 5
MAX_CONNECTIONS = 64
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)
LOCAL_ENDPOINTS = (QUERY_PATH, WRITE_PATH, REPRICE_PATH)


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
    return bounded_decompress(body, encoding, limit, MemoryBudget(float("inf")))[0]


def _inflater(encoding: str):
    """A decompressor for a Content-Encoding, or None for none."""
    if encoding in ("", "identity"):
        return None
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise BadRequest(f"unsupported Content-Encoding {encoding!r}")


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


def is_loopback_host(host: str) -> bool:
    """Whether listening on `host` keeps the collector to this machine."""
    return host.strip("[]").lower() == "localhost" or is_loopback(host.strip("[]"))


def token_matches(authorization: str, token: str) -> bool:
    """`Authorization: Bearer <token>`, the scheme in any case, the token compared in constant time."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


class Refused(Exception):
    """A request refused before its body is read: the HTTP status and why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class MemoryBudget:
    """Bytes that request bodies (as received and decompressed) may hold at once, across all requests: a burst
    of large requests or of small compressed ones that inflate (zip bombs) waits for its turn (503, retried)
    instead of growing the process without bound."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.used + n > self.total:
                raise Refused(503, "the collector is busy with other large requests; retry later",
                              {"Retry-After": "1"})
            self.used += n

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


def browser_refusal(headers, server_host: str, loopback_only: bool) -> str | None:
    """Why a request looks like a web page's (to refuse it), or None. A page can make a browser send simple
    requests (text/plain or form bodies, no custom headers) to any address, the machine's own included, and
    with DNS rebinding read the answers; OTLP exporters and our CLI never send an Origin, and name us by an
    address, not by someone else's host name."""
    origin = headers.get("Origin")
    if origin is not None:
        return f"requests from web pages are refused (Origin: {origin[:100]})"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in ("none", "same-origin"):
        return "requests from web pages are refused (Sec-Fetch-Site)"
    if loopback_only:
        host = (headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or not host.startswith("[") else host.split("]")[0] + "]"
        if name and name != server_host.lower() and name != "localhost" and not is_loopback(name.strip("[]")):
            return f"Host {host[:100]!r} is not this collector's address (DNS rebinding?)"
    return None


def request_length(headers, max_bytes: int) -> int | None:
    """The body's declared length, checked before any of it is read; None for a chunked body."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return None
    text = headers.get("Content-Length")
    if text is None:
        raise Refused(411, "Content-Length is required", {"Connection": "close"})
    if not text.strip().isdigit():
        raise Refused(400, f"invalid Content-Length {text[:40]!r}", {"Connection": "close"})
    length = int(text)
    if length > max_bytes:
        raise Refused(413, f"body of {length} bytes exceeds the limit of {max_bytes}", {"Connection": "close"})
    return length


def read_chunked(rfile, max_bytes: int) -> bytes:
    """A chunked body, refused (413) as soon as it grows past `max_bytes`."""
    parts, size = [], 0
    while True:
        line = rfile.readline(1024)
        try:
            chunk = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise Refused(400, "invalid chunked body", {"Connection": "close"}) from None
        if chunk < 0:
            raise Refused(400, "invalid chunked body", {"Connection": "close"})
        if chunk == 0:
            while rfile.readline(1024).strip():  # trailers
                pass
            return b"".join(parts)
        size += chunk
        if size > max_bytes:
            raise Refused(413, f"body exceeds the limit of {max_bytes} bytes", {"Connection": "close"})
        data = rfile.read(chunk)
        if len(data) != chunk:
            raise Refused(400, "chunked body cut short", {"Connection": "close"})
        parts.append(data)
        rfile.readline(8)


class GuardedHandler(BaseHTTPRequestHandler):
    """What every HTTP endpoint of the collector does before it reads a body: the token, browser refusal, the
    body's size; then the body, read within the limit and the memory budget."""

    protocol_version = "HTTP/1.1"
    server_version = "otel-llmcost"
    timeout = 30  # an idle keep-alive connection or a stalled client gives its worker back after this

    auth_token: str | None = None
    max_bytes: int = MAX_BODY_BYTES
    budget: MemoryBudget
    server_host: str = "127.0.0.1"
    loopback_only: bool = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http %s", format % args)

    def parse_request(self) -> bool:
        self.body_started = False
        return super().parse_request()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if (headers or {}).get("Connection") == "close":
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def authorized(self) -> bool:
        return not self.auth_token or token_matches(self.headers.get("Authorization", ""), self.auth_token)

    def check_request(self) -> None:
        """Refused, or nothing: before the body is read."""
        why = browser_refusal(self.headers, self.server_host, self.loopback_only)
        if why:
            raise Refused(403, why, {"Connection": "close"})
        if not self.authorized():
            raise Refused(401, "missing or wrong bearer token", {"Connection": "close"})

    def discard_body(self, status: int) -> None:
        """Before answering a refusal on a connection we then close: read and drop a small body, so that the
        client sees the answer rather than a reset connection. At most 64 KiB (8 MiB for a 413 to a client
        that passed the token check), never kept."""
        if self.body_started or self.headers is None or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return
        text = (self.headers.get("Content-Length") or "").strip()
        if not text.isdigit():
            return
        cap = (8 << 20) if status == 413 and self.authorized() else (64 << 10)
        remaining = int(text)
        if remaining > cap:
            return
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def read_body(self) -> tuple[bytes, int]:
        """The body (within the limit) and the bytes it holds of the memory budget (give them back)."""
        length = request_length(self.headers, self.max_bytes)
        if length is None:
            self.body_started = True
            body = read_chunked(self.rfile, self.max_bytes)
            try:
                self.budget.take(len(body))
            except Refused:
                self.close_connection = True
                raise
            return body, len(body)
        self.budget.take(length)
        self.body_started = True
        try:
            body = self.rfile.read(length)
        except BaseException:
            self.budget.give(length)
            raise
        if len(body) != length:
            self.budget.give(length)
            raise Refused(400, "body cut short", {"Connection": "close"})
        return body, length


def bounded_decompress(body: bytes, encoding: str, limit: int, budget: MemoryBudget) -> tuple[bytes, int]:
    """`decompress` in steps, each step's output taken from the shared budget first; returns the data and the
    bytes taken (give them back)."""
    encoding = encoding.strip().lower()
    inflater = _inflater(encoding)
    if inflater is None:
        return body, 0
    parts, taken, step = [], 0, min(1 << 20, limit + 1)
    pending = body
    try:
        while True:
            budget.take(step)
            taken += step
            try:
                out = inflater.decompress(pending, step)
            except zlib.error as exc:
                raise BadRequest(f"body is not valid {encoding}: {exc}") from exc
            parts.append(out)
            size = sum(map(len, parts))
            if size > limit:
                raise TooLarge(f"decompressed body exceeds the limit of {limit} bytes")
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not out):
                break
        if not inflater.eof:
            raise BadRequest(f"body is not valid {encoding}: truncated")
        return b"".join(parts), taken
    except BaseException:
        budget.give(taken)
        raise


def make_http_handler(intake: Intake, store, stats: Callable[[], dict], auth_token: str | None,
                      max_bytes: int, budget: MemoryBudget | None = None, server_host: str = "127.0.0.1",
                      operations=None) -> type[BaseHTTPRequestHandler]:
    """The OTLP/HTTP receiver and the collector's own endpoints. `operations`: the writes a client may ask
    for by name (`Operations`), or None."""

    class Handler(GuardedHandler):
        def _error(self, status: int, message: str, as_json: bool, headers: dict[str, str] | None = None) -> None:
            status_message = status_pb2.Status(code=_grpc_code_for(status), message=message)
            if as_json:
                body = json.dumps({"code": status_message.code, "message": message}).encode()
                self._send(status, body, "application/json", headers)
            else:
                self._send(status, status_message.SerializeToString(), "application/x-protobuf", headers)

        def do_GET(self) -> None:
            if self.path == "/llmcost/v1/health":
                ok, report = intake.health()
                self._send(200 if ok else 503, json.dumps(report).encode(), "application/json")
            elif self.path == "/llmcost/v1/stats":  # (health stays open: load balancers probe it)
                try:
                    self.check_request()
                except Refused as exc:
                    return self._error(exc.status, str(exc), True, exc.headers)
                self._send(200, json.dumps(stats()).encode(), "application/json")
            elif self.path == BUDGETS_PATH:
                self._budgets()
            else:
                self._send(404, b'{"message":"not found"}', "application/json")

        def do_POST(self) -> None:
            content_type = self.headers.get("Content-Type", "")
            wants_json = content_type.split(";")[0].strip().lower() == "application/json"
            if self.path in LOCAL_ENDPOINTS:
                return self._local(self.path)
            if self.path != "/v1/traces":
                self.discard_body(404)
                return self._error(404, f"no such endpoint {self.path}: OTLP traces go to /v1/traces", wants_json,
                                   {"Connection": "close"})
            taken = 0
            try:
                self.check_request()
                body, taken = self.read_body()
                data, inflated = bounded_decompress(body, self.headers.get("Content-Encoding", ""), max_bytes,
                                                    self.budget)
                taken += inflated
                request, wants_json, raw = decode_http_body(data, content_type, "", max_bytes)
                del body, data
                response = intake.accept(request, None if wants_json else raw)
            except Refused as exc:
                self.discard_body(exc.status)
                return self._error(exc.status, str(exc), wants_json, exc.headers)
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
            finally:
                self.budget.give(taken)
            if wants_json:
                self._send(200, json_format.MessageToJson(response, indent=None).encode(), "application/json")
            else:
                self._send(200, response.SerializeToString(), "application/x-protobuf")

        def _local(self, path: str) -> None:
            """The endpoints for this machine's CLI: loopback clients, JSON only, never a browser."""
            taken = 0
            try:
                if not is_loopback(self.client_address[0]):
                    raise Refused(403, "this endpoint answers loopback clients only", {"Connection": "close"})
                self.check_request()
                if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
                    raise Refused(415, "Content-Type must be application/json", {"Connection": "close"})
                body, taken = self.read_body()
                try:
                    document = json.loads(body)
                    if not isinstance(document, dict):
                        raise TypeError("not a JSON object")
                except (ValueError, TypeError) as exc:
                    raise Refused(400, f"body is not a JSON object: {exc}") from exc
                if path == QUERY_PATH:
                    payload = self._query(document)
                elif operations is None:
                    raise Refused(404, f"no such endpoint {path}")
                elif path == WRITE_PATH:
                    payload = operations.write(document)
                else:
                    payload = operations.reprice(document)
            except Refused as exc:
                self.discard_body(exc.status)
                return self._error(exc.status, str(exc), True, exc.headers)
            except StoreError as exc:
                return self._error(400, str(exc), True)
            except Exception as exc:
                logger.exception("could not answer %s", path)
                return self._error(500, f"internal error: {exc}", True)
            finally:
                self.budget.give(taken)
            self._send(200, json.dumps(payload).encode(), "application/json")

        def _budgets(self) -> None:
            """The budgets and their spend this period, for the apps' budget guards (read-only)."""
            try:
                self.check_request()
                budgets = budget_status(store)
            except Refused as exc:
                return self._error(exc.status, str(exc), True, exc.headers)
            except StoreError as exc:
                return self._error(503, f"the store cannot be read: {exc}", True)
            body = json.dumps({"budgets": budgets}, default=str).encode()
            self._send(200, body, "application/json", {"Cache-Control": "no-store"})

        def _query(self, document: dict) -> dict:
            sql, parameters = document.get("sql"), document.get("parameters") or None
            if not isinstance(sql, str) or not isinstance(parameters, (dict, type(None))):
                raise Refused(400, "expected {'sql': ..., 'parameters': {...}}")
            result = store.user_query(sql, parameters)
            return {
                "columns": result.column_names,
                "types": result.column_types,
                "rows": [[encode_value(v) for v in row] for row in result.rows],
            }

    Handler.auth_token = auth_token
    Handler.max_bytes = max_bytes
    Handler.budget = budget or MemoryBudget(4 * max_bytes)
    Handler.server_host = server_host
    Handler.loopback_only = is_loopback_host(server_host)
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
        if self.auth_token:  # (the interceptor checked it already; a handler registered without it still may not skip it)
            metadata = dict(context.invocation_metadata())
            if not token_matches(str(metadata.get("authorization", "")), self.auth_token):
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


class BoundedHTTPServer(HTTPServer):
    """An HTTP server with at most `max_connections` connections, each served by a worker of a fixed pool
    (ThreadingHTTPServer starts a thread per connection, without limit). A connection beyond that is answered
    503 with Retry-After and closed; an idle one is closed after the handler's timeout."""

    request_queue_size = 128
    allow_reuse_address = True
    ssl_context: ssl.SSLContext | None = None
    _BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
             b"Content-Length: 32\r\nConnection: close\r\n\r\ntoo many connections; retry later")

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS, name: str = "http") -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        self.workers = futures.ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix=name)
        super().__init__(address, handler)

    def get_request(self):
        sock, address = self.socket.accept()
        if self.ssl_context is not None:
            # The handshake happens on the first read, in the connection's own worker.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                if self.ssl_context is None:
                    request.settimeout(1)
                    request.sendall(self._BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            self.workers.submit(self._serve, request, client_address)
        except RuntimeError:  # shutting down
            self.slots.release()
            self.shutdown_request(request)

    def _serve(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        logger.debug("http connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self.workers.shutdown(wait=False, cancel_futures=True)


class TokenInterceptor(grpc.ServerInterceptor):
    """The bearer token, checked from the call's metadata before the handler runs (the message is not decoded)."""

    def __init__(self, token: str) -> None:
        self.token = token

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        if token_matches(str(metadata.get("authorization", "")), self.token):
            return continuation(handler_call_details)
        return self._deny


class Receivers:
    """Both receivers, started and stopped together."""

    def __init__(self, intake: Intake, store, stats: Callable[[], dict], host: str, http_port: int, grpc_port: int,
                 auth_token: str | None = None, max_bytes: int = MAX_BODY_BYTES, tls_cert: str | None = None,
                 tls_key: str | None = None, max_connections: int = MAX_CONNECTIONS,
                 budget: MemoryBudget | None = None, operations=None) -> None:
        self.tls = bool(tls_cert)
        self.budget = budget or MemoryBudget(4 * max_bytes)
        self.http = BoundedHTTPServer((host, http_port), make_http_handler(
            intake, store, stats, auth_token, max_bytes, self.budget, host, operations), max_connections, "otlp-http")
        self.ssl_context: ssl.SSLContext | None = None
        if tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(tls_cert, tls_key or None)
            self.http.ssl_context = self.ssl_context = context
        self.http_port = self.http.server_address[1]
        # No SO_REUSEPORT (grpcio's default): a second collector on a port in use must fail, not share it.
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
            interceptors=[TokenInterceptor(auth_token)] if auth_token else None,
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", max_bytes),
                     ("grpc.max_concurrent_streams", 16), ("grpc.max_connection_idle_ms", 300_000)],
            maximum_concurrent_rpcs=max_connections)
        TraceService(intake, auth_token).add_to_server(self.grpc)
        try:
            if tls_cert:
                with open(tls_cert, "rb") as f:
                    cert = f.read()
                with open(tls_key or tls_cert, "rb") as f:
                    key = f.read()
                credentials = grpc.ssl_server_credentials([(key, cert)])
                self.grpc_port = self.grpc.add_secure_port(f"{host}:{grpc_port}", credentials)
            else:
                self.grpc_port = self.grpc.add_insecure_port(f"{host}:{grpc_port}")
        except RuntimeError as exc:  # newer grpcio raises where older ones returned 0
            self.http.server_close()
            raise OSError(f"cannot listen for gRPC on {host}:{grpc_port}: {exc}") from exc
        if self.grpc_port == 0:
            self.http.server_close()
            raise OSError(f"cannot listen for gRPC on {host}:{grpc_port} (in use?)")
        self._thread = threading.Thread(target=self.http.serve_forever, name="otlp-http", daemon=True)

    def start(self) -> None:
        self.grpc.start()
        self._thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(grace=2).wait()

    def close(self) -> None:
        """Frees the ports of receivers that were never started."""
        self.http.server_close()
        self.grpc.stop(None)
