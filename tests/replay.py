"""Replay recorded OpenAI / Anthropic API traffic from a real local HTTP server.

The recordings (``tests/recordings/``, real traffic recorded by OpenLLMetry, Apache-2.0: see its
``LICENSE-openllmetry`` and ``README.md``; ``$LLMCOST_RECORDINGS`` names another copy) are plain JSON::

    {"source": ..., "interactions": [{"request": {"method", "uri", "body"},
                                      "response": {"status", "headers", "body"}}]}

``ReplayServer`` serves one recording on 127.0.0.1 so that the *real* SDKs (built on ``httpx2``) can be
pointed at it with ``base_url``; ``expected_usage`` parses, independently of any SDK, the usage each
interaction's response body reports. This is a helper module imported by tests, not a test file.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["RECORDINGS", "load", "ReplayServer", "expected_usage", "iter_sse", "recording_names"]

RECORDINGS: Path = Path(os.environ.get("LLMCOST_RECORDINGS") or Path(__file__).resolve().parent / "recordings")

# Response headers copied from the recording (besides the status and the body).
_COPIED_HEADERS = ("content-type", "request-id", "x-request-id")

# First path segments of the API endpoints; whatever precedes them in a recorded path is the base-URL prefix
# (``/v1``, ``/beta``, ``/openai/deployments/<dep>`` ...).
_ENDPOINT_ROOTS = {
    "chat", "completions", "embeddings", "responses", "images", "audio", "files", "models", "moderations",
    "batches", "assistants", "threads", "vector_stores", "fine_tuning", "uploads", "messages", "complete",
    "model",  # bedrock: /model/<id>/invoke
}


def load(name: str | os.PathLike) -> dict:
    """Load a recording by name, e.g. ``"openai/test_chat/test_chat_streaming"`` (``.json`` optional)."""
    path = Path(name)
    if not path.is_absolute():
        path = RECORDINGS / path
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    data.setdefault("name", str(name))
    return data


def recording_names(prefix: str = "") -> list[str]:
    """All recording names (relative to RECORDINGS, without ``.json``), sorted; optionally under ``prefix``."""
    root = RECORDINGS / prefix if prefix else RECORDINGS
    return sorted(p.relative_to(RECORDINGS).with_suffix("").as_posix() for p in root.rglob("*.json"))


def _recording(recording: str | dict) -> dict:
    return recording if isinstance(recording, dict) else load(recording)


def _header(headers: dict | None, name: str) -> str | None:
    """Case-insensitive look-up in recorded headers, whose values are lists of strings (or strings)."""
    for key, value in (headers or {}).items():
        if key.lower() == name:
            if isinstance(value, (list, tuple)):
                return str(value[0]) if value else None
            return str(value)
    return None


def _norm_path(uri: str) -> str:
    return unquote(urlsplit(uri).path) or "/"


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _is_sse(response: dict) -> bool:
    ctype = (_header(response.get("headers"), "content-type") or "").lower()
    if "text/event-stream" in ctype:
        return True
    if ctype:
        return False
    body = response.get("body")
    return isinstance(body, str) and body.lstrip().startswith(("event:", "data:"))


# --------------------------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    replay: "ReplayServer"

    def handle_error(self, request, client_address):  # quiet: a client hanging up is not our problem
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmcost-replay"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end on their own

    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet logs
        pass

    def setup(self):
        super().setup()
        self.server.replay._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.replay._track(self.connection, add=False)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        raw = self._read_body()
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        split = urlsplit(self.path)
        received = {
            "method": self.command,
            "path": unquote(split.path),
            "query": {k: v[-1] for k, v in parse_qs(split.query).items()},
            "body": body,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        interaction = self.server.replay._match(received)
        if interaction is None:
            self._send_unmatched(received)
            return
        self._send_recorded(interaction["response"])

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _send_unmatched(self, received: dict) -> None:
        payload = json.dumps(
            {
                "error": {
                    "type": "replay_unmatched",
                    "message": (
                        f"replay: no unused recorded interaction for {received['method']} {received['path']} "
                        f"in {self.server.replay.source}"
                    ),
                    "method": received["method"],
                    "path": received["path"],
                }
            }
        ).encode()
        self.send_response(599, "Replay Unmatched")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-should-retry", "false")  # both SDKs honour it: fail at once, do not retry
        self.end_headers()
        self.wfile.write(payload)

    def _send_recorded(self, response: dict) -> None:
        data = _body_bytes(response.get("body"))
        headers = response.get("headers") or {}
        self.send_response(int(response.get("status") or 200))
        for name in _COPIED_HEADERS:
            value = _header(headers, name)
            if value is not None:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            if _is_sse(response):
                # Send event by event, so that clients see a real stream (with a correct Content-Length, so
                # that they also know when it ends and the connection can be reused).
                start = 0
                while start < len(data):
                    end = data.find(b"\n\n", start)
                    end = len(data) if end < 0 else end + 2
                    self.wfile.write(data[start:end])
                    start = end
            else:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # client stopped reading (partial consumption)
            self.close_connection = True


class ReplayServer:
    """Serve one recording's interactions on 127.0.0.1 over real HTTP.

    Each request gets the next not-yet-used interaction whose method and URL path match (scheme, host and
    query string ignored). Unmatched requests get status 599 with a JSON body naming the path.
    """

    def __init__(self, recording: str | dict):
        self.recording = _recording(recording)
        self.source = self.recording.get("name") or self.recording.get("source") or "<recording>"
        self.interactions: list[dict] = list(self.recording.get("interactions") or [])
        self._paths = [
            ((i["request"].get("method") or "GET").upper(), _norm_path(i["request"]["uri"]))
            for i in self.interactions
        ]
        self.used: list[bool] = [False] * len(self.interactions)
        # every request received, in order: {"method", "path" (no query), "query" (dict), "body" (parsed JSON or
        # raw text), "headers" (lower-case names), "interaction" (index served, or None when unmatched)}
        self.requests: list[dict] = []
        self.unmatched: list[dict] = []  # the subset of requests that got the 599 reply
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> "ReplayServer":
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.replay = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # end idle keep-alive connections so that their threads exit
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- URLs -----------------------------------------------------------------------------------------
    @property
    def path_prefix(self) -> str:
        """The path the recorded URIs carry before the endpoint (``/v1``, ``/beta`` ...), or ``""``."""
        for _, path in self._paths:
            segments = [s for s in path.split("/") if s]
            for i, segment in enumerate(segments):
                if segment in _ENDPOINT_ROOTS:
                    return "/" + "/".join(segments[:i]) if i else ""
        return "/v1"

    @property
    def openai_base_url(self) -> str:
        return self.url + self.path_prefix

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # -- bookkeeping ----------------------------------------------------------------------------------
    def remaining(self) -> list[int]:
        """Indices of the interactions not served yet."""
        with self._lock:
            return [i for i, used in enumerate(self.used) if not used]

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _match(self, received: dict) -> dict | None:
        """Claim the next unused interaction with the same method and path; record the request."""
        key = (received["method"].upper(), received["path"])
        with self._lock:
            received["interaction"] = None
            self.requests.append(received)
            for i, used in enumerate(self.used):
                if not used and self._paths[i] == key:
                    self.used[i] = True
                    received["interaction"] = i
                    return self.interactions[i]
            self.unmatched.append(received)
            return None


# --------------------------------------------------------------------------------------------------------
# expected usage, parsed from the raw bodies
# --------------------------------------------------------------------------------------------------------


def iter_sse(text: str) -> Iterator[tuple[str | None, str]]:
    """Yield ``(event, data)`` for every event of a text/event-stream body."""
    event: str | None = None
    data: list[str] = []
    for line in text.splitlines() + [""]:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)


def _sse_json(text: str) -> list[tuple[str | None, dict]]:
    out = []
    for event, data in iter_sse(text):
        if data.strip() == "[DONE]":
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append((event, obj))
    return out


def _first(values) -> Any:
    return next((v for v in values if v), None)


def _stream_usage(text: str) -> tuple[dict | None, Any, Any]:
    pairs = [(obj.get("type") or event, obj) for event, obj in _sse_json(text)]

    # Anthropic messages: message_start usage, then the final message_delta's usage (non-null values win).
    starts = [obj for t, obj in pairs if t == "message_start"]
    if starts:
        message = starts[0].get("message") or {}
        usage = dict(message["usage"]) if isinstance(message.get("usage"), dict) else None
        deltas = [obj for t, obj in pairs if t == "message_delta" and isinstance(obj.get("usage"), dict)]
        if deltas:
            usage = {} if usage is None else usage
            for key, value in deltas[-1]["usage"].items():
                if value is not None or key not in usage:
                    usage[key] = value
        return usage, message.get("model"), message.get("id")

    # OpenAI Responses API: the usage inside the response.completed event.
    responses = [(t, obj["response"]) for t, obj in pairs
                 if isinstance(t, str) and t.startswith("response.") and isinstance(obj.get("response"), dict)]
    if responses:
        completed = [r for t, r in responses if t == "response.completed"]
        usage = completed[-1].get("usage") if completed else None
        candidates = completed[::-1] + [r for _, r in responses[::-1]]
        return usage, _first(r.get("model") for r in candidates), _first(r.get("id") for r in candidates)

    # OpenAI chat / completions chunks (and anything else): the last event with a non-null usage.
    objs = [obj for _, obj in pairs]
    with_usage = [obj for obj in objs if isinstance(obj.get("usage"), dict)]
    usage = with_usage[-1]["usage"] if with_usage else None
    candidates = with_usage[-1:] + objs
    return usage, _first(o.get("model") for o in candidates), _first(o.get("id") for o in candidates)


def expected_usage(recording: str | dict) -> list[dict]:
    """For every interaction: ``{"status", "model", "id", "usage", "stream"}`` as the provider reported it."""
    out = []
    for interaction in _recording(recording).get("interactions") or []:
        response = interaction["response"]
        body = response.get("body")
        stream = _is_sse(response)
        usage = model = rid = None
        if stream:
            usage, model, rid = _stream_usage(body if isinstance(body, str) else _body_bytes(body).decode())
        else:
            obj = body
            if isinstance(body, (str, bytes)):
                try:
                    obj = json.loads(body) if body else None
                except ValueError:
                    obj = None
            if isinstance(obj, dict):
                usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
                model, rid = obj.get("model"), obj.get("id")
        out.append(
            {"status": int(response.get("status") or 0), "model": model, "id": rid, "usage": usage, "stream": stream}
        )
    return out
