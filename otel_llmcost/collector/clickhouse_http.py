"""The ClickHouse HTTP interface, read-only, over the collector's store: what the Grafana ClickHouse plugin (HTTP
mode, clickhouse-go) and clickhouse-connect's HTTP client need, so that dashboards and alert rules read the
embedded store, which only the collector process can open, as they read a ClickHouse server.

What the clients send and read (clickhouse-connect `driver/httpclient.py`, `_backend/orchestration.py`,
`_backend/httpcommon.py`; clickhouse-go `conn_http.go`):
- `POST /` with the query in the body and/or the `query` URL parameter (`GET /?query=...` too); the output
  format from a FORMAT clause, else the `default_format` parameter (clickhouse-go: Native), else TabSeparated;
  `database`; settings as URL parameters; `param_<name>` query parameters; `GET /ping`.
- on connect: `SELECT version(), timezone()` and `SELECT name, value, readonly FROM system.settings`
  (clickhouse-connect), `SELECT timeZone()` (clickhouse-go);
- headers: `X-ClickHouse-Format`, `X-ClickHouse-Timezone`, `X-ClickHouse-Summary`, `X-ClickHouse-Query-Id`,
  `X-ClickHouse-Server-Display-Name`; errors as `Code: N. DB::Exception: ...` with `X-ClickHouse-Exception-Code`;
- credentials: `Authorization: Basic` (user and password), `X-ClickHouse-User`/`X-ClickHouse-Key`, the `user`
  and `password` parameters, or a bearer token.

Every query is a user query of the store (`Store.user_raw_query`): one statement, `readonly=1`, a time limit,
a session of its own. The engine writes the output format itself. Client settings are applied only from a
short list of harmless ones (limits, output formatting) and ignored otherwise: a read-only session may change
no setting, and ClickHouse would refuse the query.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import socket
import threading
import time
import uuid
from urllib.parse import parse_qsl, urlsplit

from ..store import QUERY_SECONDS, NotOneStatement, NotReadOnly, StoreError
from .receivers import (BoundedHTTPServer, GuardedHandler, MemoryBudget, Refused, bounded_decompress,
                        is_loopback_host, token_matches)

logger = logging.getLogger("otel_llmcost.collector")

USER = "llmcost"
MAX_QUERY_BYTES = 1 << 20
MAX_CONNECTIONS = 16

# URL parameters that are not settings (ClickHouse's HTTP handler reads them itself); accepted and not applied.
TRANSPORT_PARAMETERS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
    "compress", "decompress", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "wait_end_of_query", "buffer_size", "client_protocol_version",
    "user", "password", "quota_key", "add_http_cors_header", "http_zlib_compression_level", "readonly",
}
# Settings a client may set on a read: limits (tightened, never loosened past ours) and output formatting. A list,
# not a pattern: some format settings name files (`format_schema`, `output_format_schema` writes one).
CLIENT_SETTINGS = re.compile(
    r"^(max_execution_time|max_result_rows|max_result_bytes|result_overflow_mode|max_block_size|"
    r"date_time_output_format|date_time_input_format|cast_string_to_dynamic_use_inference|join_use_nulls|"
    r"output_format_json_quote_64bit_integers|output_format_json_quote_64bit_floats|"
    r"output_format_json_quote_decimals|output_format_json_quote_denormals|output_format_json_named_tuples_as_objects|"
    r"output_format_decimal_trailing_zeros|output_format_write_statistics|output_format_native_encode_types_in_binary_format)$")
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*$", re.I)
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
# ClickHouse's HTTP status of an exception code (src/Server/HTTPHandler.cpp, exceptionCodeToHTTPStatus).
_HTTP_STATUS = {62: 400, 516: 403, 164: 403, 81: 404, 60: 404, 47: 400, 46: 400, 43: 400, 36: 400, 27: 400,
                159: 500, 396: 500}
_CONTENT_TYPES = {"JSON": "application/json", "JSONCompact": "application/json",
                  "JSONEachRow": "application/x-ndjson", "CSV": "text/csv", "CSVWithNames": "text/csv",
                  "TabSeparated": "text/tab-separated-values", "TSV": "text/tab-separated-values",
                  "TabSeparatedWithNames": "text/tab-separated-values",
                  "TabSeparatedWithNamesAndTypes": "text/tab-separated-values"}


def split_format(sql: str, default_format: str | None) -> tuple[str | None, str]:
    """(the format to ask the engine for, or None when the query names its own; the format's name)."""
    text = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S).rstrip()
    match = _FORMAT_CLAUSE.search(text)
    if match:
        return None, match.group(1)
    name = default_format or "TabSeparated"
    return name, name


def client_settings(parameters: dict[str, str]) -> dict[str, str]:
    settings = {}
    for key, value in parameters.items():
        if key in TRANSPORT_PARAMETERS or key.startswith("param_"):
            continue
        if CLIENT_SETTINGS.match(key):
            settings[key] = value
        else:
            logger.debug("clickhouse interface: setting %s ignored on a read-only session", key)
    return settings


def make_handler(store, auth_token: str | None, server_host: str, budget: MemoryBudget,
                 seconds: float = QUERY_SECONDS) -> type[GuardedHandler]:
    display_name = socket.gethostname()
    timezone = store.user_query("SELECT timezone()").rows[0][0]
    version = store.user_query("SELECT version()").rows[0][0]

    class Handler(GuardedHandler):
        def version_string(self) -> str:
            return f"ClickHouse/{version} (otel-llmcost)"

        def _exception(self, code: int, message: str, extra: dict[str, str] | None = None) -> None:
            text = message if message.startswith("Code: ") else f"Code: {code}. DB::Exception: {message}"
            if "(version " not in text:
                text += f" (version {version})"
            self._send(_HTTP_STATUS.get(code, 500), (text + "\n").encode(), "text/plain; charset=UTF-8",
                       {"X-ClickHouse-Exception-Code": str(code), "X-ClickHouse-Server-Display-Name": display_name,
                        **(extra or {})})

        def _credentials(self, parameters: dict[str, str]) -> tuple[str | None, str | None, bool]:
            """(user, password, a bearer token matched)"""
            authorization = self.headers.get("Authorization", "")
            scheme = authorization.strip().partition(" ")[0].lower()
            if scheme == "bearer":
                return None, None, bool(auth_token) and token_matches(authorization, auth_token)
            if scheme == "basic":
                try:
                    decoded = base64.b64decode(authorization.strip().partition(" ")[2], validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    return "", "", False
                user, _, password = decoded.partition(":")
                return user, password, False
            if self.headers.get("X-ClickHouse-User") is not None:
                return self.headers.get("X-ClickHouse-User"), self.headers.get("X-ClickHouse-Key", ""), False
            return parameters.get("user"), parameters.get("password"), False

        def _authenticated(self, parameters: dict[str, str]) -> bool:
            user, password, bearer = self._credentials(parameters)
            if not auth_token or bearer:
                return True
            # Both compared in constant time, the second even when the first differs.
            same_user = hmac.compare_digest((user or "").encode(), USER.encode())
            same_password = hmac.compare_digest((password or "").encode(), auth_token.encode())
            return same_user and same_password

        def do_GET(self) -> None:
            self._handle(read_body=False)

        def do_HEAD(self) -> None:
            self._handle(read_body=False)

        def do_POST(self) -> None:
            self._handle(read_body=True)

        def _handle(self, read_body: bool) -> None:
            url = urlsplit(self.path)
            parameters = dict(parse_qsl(url.query, keep_blank_values=True))
            taken = 0
            try:
                why = self._browser()
                if why:
                    raise Refused(403, why, {"Connection": "close"})
                if url.path in ("/ping", "/replicas_status") or (url.path == "/" and "query" not in parameters
                                                                  and not read_body):
                    return self._send(200, b"Ok.\n", "text/plain; charset=UTF-8")
                if url.path != "/":
                    raise Refused(404, f"no handler for {url.path}")
                if not self._authenticated(parameters):
                    self.discard_body(403)
                    self.close_connection = True
                    return self._exception(516, f"Authentication failed: password is incorrect, or there is no "
                                                f"user with such name (user {USER}, password: the collector's "
                                                "token). (AUTHENTICATION_FAILED)")
                body = b""
                if read_body:
                    body, taken = self.read_body()
                    if parameters.get("decompress") == "1":
                        raise Refused(400, "compressed request bodies (decompress=1) are not supported")
                    body, inflated = bounded_decompress(body, self.headers.get("Content-Encoding", ""),
                                                        MAX_QUERY_BYTES, budget)
                    taken += inflated
                sql = "\n".join(p for p in (parameters.get("query", ""),
                                            body.decode("utf-8", errors="replace")) if p.strip())
                self._query(sql, parameters)
            except Refused as exc:
                self.discard_body(exc.status)
                self._send(exc.status, (str(exc) + "\n").encode(), "text/plain; charset=UTF-8", exc.headers)
            except Exception as exc:
                logger.exception("clickhouse interface: could not answer")
                self._exception(1001, f"internal error: {exc}")
            finally:
                budget.give(taken)

        def _browser(self) -> str | None:
            from .receivers import browser_refusal

            return browser_refusal(self.headers, self.server_host, self.loopback_only)

        def _query(self, sql: str, parameters: dict[str, str]) -> None:
            query_id = parameters.get("query_id") or str(uuid.uuid4())
            database = parameters.get("database") or "default"
            if database != "default":
                return self._exception(81, f"Database {database} does not exist. (UNKNOWN_DATABASE)")
            fmt, format_name = split_format(sql, parameters.get("default_format"))
            settings = client_settings(parameters)
            query_parameters = {k[len("param_"):]: v for k, v in parameters.items() if k.startswith("param_")}
            started = time.monotonic_ns()
            try:
                data = store.user_raw_query(sql, fmt, settings, seconds, query_parameters or None)
            except NotOneStatement as exc:
                return self._exception(62, f"{exc}. (SYNTAX_ERROR)", {"X-ClickHouse-Query-Id": query_id})
            except NotReadOnly as exc:
                return self._exception(164, str(exc), {"X-ClickHouse-Query-Id": query_id})
            except StoreError as exc:
                match = _ERROR_CODE.search(str(exc))
                return self._exception(int(match.group(1)) if match else 1001, str(exc),
                                       {"X-ClickHouse-Query-Id": query_id})
            summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0",
                       "total_rows_to_read": "0", "result_rows": "0", "result_bytes": str(len(data)),
                       "elapsed_ns": str(time.monotonic_ns() - started)}
            content_type = _CONTENT_TYPES.get(format_name, "application/octet-stream")
            if not content_type.endswith("octet-stream"):
                content_type += "; charset=UTF-8"
            self._send(200, data, content_type, {
                "X-ClickHouse-Format": format_name, "X-ClickHouse-Timezone": timezone,
                "X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Server-Display-Name": display_name,
                "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":"))})

    Handler.auth_token = auth_token
    Handler.max_bytes = MAX_QUERY_BYTES
    Handler.budget = budget
    Handler.server_host = server_host
    Handler.loopback_only = is_loopback_host(server_host)
    return Handler


class ClickHouseInterface:
    """The interface on its own port, served by a bounded pool of workers."""

    def __init__(self, store, host: str, port: int, auth_token: str | None, budget: MemoryBudget,
                 tls_context=None, max_connections: int = MAX_CONNECTIONS) -> None:
        self.server = BoundedHTTPServer((host, port), make_handler(store, auth_token, host, budget),
                                        max_connections, "clickhouse-http")
        self.server.ssl_context = tls_context
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="clickhouse-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

