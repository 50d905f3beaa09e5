"""Local fake LLM provider for demos, load tests and dashboard rehearsal.

Answers OpenAI (chat completions, responses, embeddings), Anthropic (messages) and, under the `/mistral`
prefix, Mistral (chat, FIM, embeddings) requests with the providers' real wire shapes, so the real SDKs and
anything instrumenting them work unchanged. Token counts are plausible estimates (about 4 characters per
token), not a tokenizer: the recorded provider traffic in tests/recordings proves correctness, this makes
traffic.

Prompt caching is emulated per provider: OpenAI caches any seen prefix of >= 1024 tokens in 128-token
steps for 5 minutes; Anthropic caches prefixes ending at `cache_control` blocks (5 min or 1 h).
A model named `sandbox-error-<status>` gets that HTTP status in the provider's error shape.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import string
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

from .stop_signals import wait_for_stop

CACHE_MIN_TOKENS = 1024  # both providers refuse to cache shorter prefixes
OPENAI_CACHE_STEP = 128  # OpenAI reports cached tokens in 128-token increments
TTL_5M, TTL_1H = 300.0, 3600.0
DEFAULT_MAX_OUTPUT = 400
MIN_OUTPUT = 20
MAX_CACHE_ENTRIES = 200_000  # bounds memory during long load tests
_ERROR_MODEL = re.compile(r"^sandbox-error-(\d{3})$")
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")  # o1, o3, o4-mini, gpt-5*: reasoning tokens billed as output
_WORDS = (
    "the span carries usage while every trace records latency and the collector exports metrics to a "
    "dashboard where budget alerts watch token spend per model so that teams can compare prompt cost "
    "cache hits and output length across services without guessing"
).split()
_OPENAI_ERRORS = {  # status -> (error.type, error.code) as upstream sends them
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None), 404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error",
}


# --- token estimation -------------------------------------------------------------------------


def _count(obj: Any) -> int:
    """Rough token count of any JSON-ish request fragment (~4 chars per token)."""
    if obj is None:
        return 0
    if isinstance(obj, str):
        return math.ceil(len(obj) / 4)
    if isinstance(obj, list):
        return sum(_count(x) for x in obj)
    if isinstance(obj, dict):
        if "image" in str(obj.get("type", "")):
            return 85  # images are billed by size; their base64 length would wildly overcount
        if isinstance(obj.get("text"), str):
            return _count(obj["text"])
        if obj.get("type") in ("tool_result", "function_call_output"):
            return 4 + _count(obj.get("content", obj.get("output")))
        return _count(json.dumps(_strip(obj), sort_keys=True))
    return _count(json.dumps(obj))


def _strip(obj: Any) -> Any:
    """Drop `cache_control` so a block hashes and counts the same with or without a breakpoint."""
    return {k: v for k, v in obj.items() if k != "cache_control"} if isinstance(obj, dict) else obj


def _message_tokens(msg: dict) -> int:
    extra = sum(_count(json.dumps(msg[k])) for k in ("tool_calls", "function_call") if msg.get(k))
    return 4 + _count(msg.get("content")) + extra  # a few tokens of role/framing per message


Segment = tuple[Any, int, Any]  # (json-able identity of the piece, tokens, its cache_control or None)


def _openai_segments(tools: Any, items: Iterable[Any]) -> list[Segment]:
    """The prompt as ordered pieces; tools render first, then each message/input item."""
    segs: list[Segment] = [(("tools", tools), _count(json.dumps(tools)), None)] if tools else []
    for item in items:
        tokens = _message_tokens(item) if isinstance(item, dict) else 4 + _count(item)
        segs.append((item, tokens, None))
    return segs


def _anthropic_segments(body: dict) -> list[Segment]:
    """Anthropic's cache order is tools, system, messages; each block can carry cache_control."""
    segs: list[Segment] = []
    for tool in body.get("tools") or []:
        segs.append((("tool", _strip(tool)), _count(tool), _cc(tool)))
    system = body.get("system")
    for block in [system] if isinstance(system, str) else system or []:
        segs.append((("system", _strip(block)), _count(block), _cc(block)))
    for msg in body.get("messages") or []:
        content = msg.get("content")
        blocks = content if isinstance(content, list) else [content]
        for i, block in enumerate(blocks):
            segs.append(((msg.get("role"), _strip(block)), _count(block) + (4 if i == 0 else 0), _cc(block)))
    return segs


def _cc(block: Any) -> dict | None:
    return block.get("cache_control") if isinstance(block, dict) else None


def _prefix_hashes(model: str, segs: list[Segment]) -> list[tuple[str, int]]:
    """(hash, cumulative tokens) after each segment; caches are per model, as upstream."""
    h = hashlib.sha256(model.encode())
    out, total = [], 0
    for obj, tokens, _ in segs:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
        total += tokens
        out.append((h.copy().hexdigest(), total))
    return out


# --- prompt cache -----------------------------------------------------------------------------


class _PromptCache:
    """Prefix hash -> expiry. Thread-safe, bounded: entries live at most 1 h."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._next_purge = 0.0

    def _hit(self, key: str, now: float) -> bool:
        exp = self._expiry.get(key)
        return exp is not None and exp > now

    def _put(self, key: str, ttl: float, now: float) -> None:
        self._expiry.pop(key, None)  # re-insert so dict order stays roughly LRU for eviction
        self._expiry[key] = now + ttl

    def _purge(self, now: float) -> None:
        if now >= self._next_purge or len(self._expiry) > MAX_CACHE_ENTRIES:
            self._expiry = {k: e for k, e in self._expiry.items() if e > now}
            while len(self._expiry) > MAX_CACHE_ENTRIES:
                self._expiry.pop(next(iter(self._expiry)))
            self._next_purge = now + 30

    def openai(self, model: str, segs: list[Segment]) -> int:
        """Cached tokens: the longest previously seen prefix, floored to 128s; then remember this prompt."""
        prefixes = _prefix_hashes(model, segs)
        now = time.monotonic()
        with self._lock:
            self._purge(now)
            seen = max((tok for key, tok in prefixes if self._hit(key, now)), default=0)
            for key, tok in prefixes:
                if tok >= CACHE_MIN_TOKENS:
                    self._put(key, TTL_5M, now)
        cached = seen // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP
        return cached if cached >= CACHE_MIN_TOKENS else 0

    def anthropic(self, model: str, segs: list[Segment]) -> tuple[int, int, int]:
        """(cache_read, write_5m, write_1h) for the request's cache_control breakpoints."""
        prefixes = _prefix_hashes(model, segs)
        breakpoints = [(i, cc) for i, (_, _, cc) in enumerate(segs) if cc]
        now = time.monotonic()
        with self._lock:
            self._purge(now)
            # Upstream looks back from the breakpoints for the longest hit; any earlier boundary will do.
            last = breakpoints[-1][0] if breakpoints else -1
            read = max((tok for key, tok in prefixes[: last + 1] if self._hit(key, now)), default=0)
            written = {TTL_5M: 0, TTL_1H: 0}
            done = read
            for i, cc in breakpoints:
                key, tok = prefixes[i]
                ttl = TTL_1H if cc.get("ttl") == "1h" else TTL_5M
                if tok < CACHE_MIN_TOKENS:
                    continue  # too short to cache; its tokens ride along with the next breakpoint
                if tok > done:
                    written[ttl] += tok - done
                    done = tok
                self._put(key, max(ttl, self._expiry.get(key, 0) - now), now)  # hits refresh the TTL
        return read, written[TTL_5M], written[TTL_1H]


# --- response planning ------------------------------------------------------------------------


class _Plan:
    """Deterministic output for one request: token counts and filler text derived from its hash."""

    def __init__(self, raw: bytes, model: str, cap: Any) -> None:
        rng = random.Random(hashlib.sha256(raw).digest())
        cap = int(cap) if isinstance(cap, int) and cap > 0 else DEFAULT_MAX_OUTPUT
        self.output = rng.randint(min(MIN_OUTPUT, cap), cap)
        self.reasoning = 0
        if _REASONING_MODEL.match(model) and self.output > 64:  # reasoning models think first
            self.reasoning = int(self.output * rng.uniform(0.3, 0.8)) // 64 * 64
        words = [rng.choice(_WORDS) for _ in range(max(1, self.output - self.reasoning))]
        words[0] = words[0].capitalize()
        self.text = " ".join(words) + "."

    def deltas(self, size: int = 4) -> list[str]:
        """The text in small pieces (a few words each) for streaming."""
        words = self.text.split(" ")
        pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
        return [p if i == 0 else " " + p for i, p in enumerate(pieces)]


def _openai_usage(prompt: int, cached: int, plan: _Plan) -> dict:
    return {
        "prompt_tokens": prompt,  # includes cached tokens, as upstream
        "completion_tokens": plan.output,  # includes reasoning tokens
        "total_tokens": prompt + plan.output,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _responses_usage(prompt: int, cached: int, plan: _Plan) -> dict:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": plan.output,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning},
        "total_tokens": prompt + plan.output,
    }


# --- HTTP -------------------------------------------------------------------------------------


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for load tests; streams use chunked encoding
    timeout = 120  # idle keep-alive connections must not pin threads forever
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: this serves load tests
        pass

    def do_GET(self) -> None:
        self._route(None)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._route(raw)

    def _route(self, raw: bytes | None) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        routes = ROUTES
        if path.startswith(MISTRAL_PREFIX + "/"):  # Mistral's API, whose paths are OpenAI's
            path, routes = path[len(MISTRAL_PREFIX):], MISTRAL_ROUTES
        anthropic = path == "/v1/messages" or (
            path not in routes and self.headers.get("anthropic-version") is not None
        )
        try:
            if raw is None or path not in routes:
                raise _HTTPError(404, f"Invalid URL ({self.command} {self.path})")
            try:
                body = json.loads(raw or b"{}")
                assert isinstance(body, dict)
            except (ValueError, AssertionError):
                raise _HTTPError(400, "The request body is not valid JSON.") from None
            match = _ERROR_MODEL.match(str(body.get("model", "")))
            if match:
                raise _HTTPError(int(match.group(1)), f"Sandbox injected error {match.group(1)}.")
            result = routes[path](self.server.sandbox, body, raw)
        except _HTTPError as err:
            return self._send_error(err, anthropic)
        if isinstance(result, dict):
            self._send_json(200, result, anthropic)
        else:
            self._send_sse(result, anthropic)

    def _request_id(self, anthropic: bool) -> None:
        self.send_header("request-id" if anthropic else "x-request-id", self.server.sandbox._new_id("req_", 24))

    def _send_json(self, status: int, obj: dict, anthropic: bool, extra: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self._request_id(anthropic)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: _HTTPError, anthropic: bool) -> None:
        status = err.status if 400 <= err.status <= 599 else 500
        if anthropic:
            kind = _ANTHROPIC_ERRORS.get(status, "api_error")
            obj: dict = {"type": "error", "error": {"type": kind, "message": str(err)}}
        else:
            kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
            obj = {"error": {"message": str(err), "type": kind, "param": None, "code": code}}
        self._send_json(status, obj, anthropic, {"x-should-retry": "false"})  # demos want the error, not retries

    def _send_sse(self, events: list[tuple[str | None, Any]], anthropic: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")  # the terminal chunk tells the client it's done
        self._request_id(anthropic)
        self.end_headers()
        try:
            for event, data in events:
                payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
                chunk = ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # client stopped reading early; normal for partial consumption


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A second sandbox on a busy port must fail, not share it (some Python versions' HTTPServer sets this).
    allow_reuse_port = False
    sandbox: "Sandbox"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up is routine, not an error
            super().handle_error(request, client_address)


# --- endpoints --------------------------------------------------------------------------------


def _chat(sb: "Sandbox", body: dict, raw: bytes) -> Any:
    model = str(body.get("model", ""))
    messages = body.get("messages") or []
    segs = _openai_segments(body.get("tools") or body.get("functions"), messages)
    prompt = 3 + sum(s[1] for s in segs)  # 3: reply priming, as tiktoken's chat accounting
    cached = sb._cache.openai(model, segs)
    plan = _Plan(raw, model, body.get("max_completion_tokens") or body.get("max_tokens"))
    usage = _openai_usage(prompt, cached, plan)
    base = {"id": sb._new_id("chatcmpl-", 29), "created": int(time.time()), "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": plan.text, "refusal": None, "annotations": []}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {**base, "object": "chat.completion", "choices": [choice], "usage": usage,
                "service_tier": "default", "system_fingerprint": "fp_sandbox"}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = {**base, "object": "chat.completion.chunk", "service_tier": "default", "system_fingerprint": "fp_sandbox"}

    def chunk(delta: dict | None, finish: str | None = None) -> dict:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        out = {**head, "choices": choices}
        if include_usage:  # upstream adds the key only when usage was asked for
            out["usage"] = usage if delta is None else None
        return out

    events = [(None, chunk({"role": "assistant", "content": "", "refusal": None}))]
    events += [(None, chunk({"content": piece})) for piece in plan.deltas()]
    events.append((None, chunk({}, "stop")))
    if include_usage:
        events.append((None, chunk(None)))
    return events + [(None, "[DONE]")]


def _messages(sb: "Sandbox", body: dict, raw: bytes) -> Any:
    model = str(body.get("model", ""))
    segs = _anthropic_segments(body)
    total = 3 + sum(s[1] for s in segs)  # 3: the assistant turn's framing, never part of a cached prefix
    read, w5m, w1h = sb._cache.anthropic(model, segs)
    plan = _Plan(raw, model, body.get("max_tokens"))
    cache = {
        "cache_creation_input_tokens": w5m + w1h,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h},
    }
    usage = {"input_tokens": total - read - w5m - w1h, **cache}  # input_tokens excludes cache reads/writes
    message = {"id": sb._new_id("msg_01", 22), "type": "message", "role": "assistant", "model": model}
    if not body.get("stream"):
        return {**message, "content": [{"type": "text", "text": plan.text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {**usage, "output_tokens": plan.output, "service_tier": "standard"}}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1, "service_tier": "standard"}}
    final = {  # current upstream repeats the cumulative input/cache counts here; SDKs overwrite, not add
        "input_tokens": usage["input_tokens"], "cache_creation_input_tokens": w5m + w1h,
        "cache_read_input_tokens": read, "output_tokens": plan.output,
    }
    text_deltas = [("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
                   for piece in plan.deltas()]
    return _typed([
        ("message_start", {"message": start}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
        *text_deltas,
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": final}),
        ("message_stop", {}),
    ])


def _typed(events: list[tuple[str, dict]], numbered: bool = False) -> list[tuple[str | None, Any]]:
    """SSE events whose data repeats the event name as `type` (both providers do this)."""
    seq = (lambda i: {"sequence_number": i}) if numbered else (lambda i: {})
    return [(name, {"type": name, **data, **seq(i)}) for i, (name, data) in enumerate(events)]


def _responses(sb: "Sandbox", body: dict, raw: bytes) -> Any:
    model = str(body.get("model", ""))
    items = body.get("input")
    items = [items] if isinstance(items, str) else list(items or [])
    if body.get("instructions"):
        items.insert(0, {"role": "developer", "content": body["instructions"]})
    segs = _openai_segments(body.get("tools"), items)
    prompt = sum(s[1] for s in segs)
    cached = sb._cache.openai(model, segs)
    plan = _Plan(raw, model, body.get("max_output_tokens"))
    now = int(time.time())
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": plan.text}
    output = [{"id": sb._new_id("rs_", 50), "type": "reasoning", "summary": []}] if plan.reasoning else []
    output.append({"id": sb._new_id("msg_", 50), "type": "message", "status": "completed", "content": [part],
                   "role": "assistant"})
    reasoning = body.get("reasoning") or {}
    resp = {
        "id": sb._new_id("resp_", 50), "object": "response", "created_at": now, "status": "completed",
        "background": False, "completed_at": now, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"), "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": None, "service_tier": "default", "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [], "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0), "truncation": "disabled",
        "usage": _responses_usage(prompt, cached, plan), "user": None, "metadata": body.get("metadata") or {},
    }
    if not body.get("stream"):
        return resp
    pending = {**resp, "status": "in_progress", "completed_at": None, "output": [], "usage": None}
    ev: list[tuple[str, dict]] = [("response.created", {"response": pending}),
                                  ("response.in_progress", {"response": pending})]
    for idx, item in enumerate(output):
        if item["type"] == "reasoning":
            ev += [("response.output_item.added", {"item": item, "output_index": idx}),
                   ("response.output_item.done", {"item": item, "output_index": idx})]
            continue
        ids = {"item_id": item["id"], "output_index": idx, "content_index": 0}
        ev += [("response.output_item.added", {"item": {**item, "status": "in_progress", "content": []},
                                               "output_index": idx}),
               ("response.content_part.added", {**ids, "part": {**part, "text": ""}})]
        ev += [("response.output_text.delta", {**ids, "delta": piece, "logprobs": []}) for piece in plan.deltas()]
        ev += [("response.output_text.done", {**ids, "text": plan.text, "logprobs": []}),
               ("response.content_part.done", {**ids, "part": part}),
               ("response.output_item.done", {"item": item, "output_index": idx})]
    ev.append(("response.completed", {"response": resp}))
    return _typed(ev, numbered=True)


def _embeddings(sb: "Sandbox", body: dict, raw: bytes) -> Any:
    inp = body.get("input")
    # input may be a string, a list of strings, a list of token ids, or a list of token-id lists
    single = isinstance(inp, str) or (isinstance(inp, list) and bool(inp) and isinstance(inp[0], int))
    inputs = [inp] if single else list(inp or [])
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else 8
    data, tokens = [], 0
    for i, item in enumerate(inputs):
        tokens += len(item) if isinstance(item, list) else _count(item)
        rng = random.Random(hashlib.sha256(json.dumps(item).encode()).digest())  # same text, same vector
        vec = [rng.gauss(0, 1) for _ in range(dims)]
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        vec = [v / norm for v in vec]
        emb: Any = vec
        if body.get("encoding_format") == "base64":  # the openai SDK asks for this by default
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": str(body.get("model", "")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


ROUTES = {
    "/v1/chat/completions": _chat,
    "/v1/messages": _messages,
    "/v1/responses": _responses,
    "/v1/embeddings": _embeddings,
}


# --- Mistral ----------------------------------------------------------------------------------
#
# Mistral's chat and FIM responses have OpenAI's shape; its streams always end with a chunk that carries the
# usage (with the finish reason), and its embeddings take `output_dimension`. Prompt prefixes are cached as OpenAI does,
# reported as `prompt_tokens_details.cached_tokens` (included in `prompt_tokens`).

MISTRAL_PREFIX = "/mistral"


def _mistral_usage(prompt: int, cached: int, output: int) -> dict:
    usage: dict = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _mistral_completion(sb: "Sandbox", body: dict, raw: bytes, segs: list[Segment]) -> Any:
    model = str(body.get("model", ""))
    prompt = 3 + sum(s[1] for s in segs)
    cached = sb._cache.openai(model, segs)
    plan = _Plan(raw, model, body.get("max_tokens"))
    usage = _mistral_usage(prompt, cached, plan.output)
    base = {"id": sb._new_id("", 32), "created": int(time.time()), "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": plan.text, "tool_calls": None, "prefix": False}
        return {**base, "object": "chat.completion", "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    def chunk(delta: dict, finish: str | None = None, **more: Any) -> dict:
        return {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}

    events = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": piece})) for piece in plan.deltas()]
    events.append((None, chunk({"content": ""}, "stop", usage=usage)))
    return events + [(None, "[DONE]")]


def _mistral_chat(sb: "Sandbox", body: dict, raw: bytes) -> Any:
    return _mistral_completion(sb, body, raw, _openai_segments(body.get("tools"), body.get("messages") or []))


def _mistral_fim(sb: "Sandbox", body: dict, raw: bytes) -> Any:
    parts = [body.get("prompt") or "", body.get("suffix") or ""]
    return _mistral_completion(sb, body, raw, [(("fim", part), _count(part), None) for part in parts])


def _mistral_embeddings(sb: "Sandbox", body: dict, raw: bytes) -> Any:
    openai_shaped = _embeddings(sb, {"input": body.get("input"), "dimensions": body.get("output_dimension"),
                                     "model": body.get("model")}, raw)
    tokens = openai_shaped["usage"]["prompt_tokens"]
    return {**openai_shaped, "id": sb._new_id("", 32), "usage": _mistral_usage(tokens, 0, 0)}


MISTRAL_ROUTES = {
    "/v1/chat/completions": _mistral_chat,
    "/v1/fim/completions": _mistral_fim,
    "/v1/embeddings": _mistral_embeddings,
}


# --- public API -------------------------------------------------------------------------------


class Sandbox:
    """A fake OpenAI + Anthropic + Mistral server on a background thread.

    >>> with Sandbox() as sb:
    ...     client = openai.OpenAI(base_url=sb.openai_base_url, api_key="x")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._cache = _PromptCache()
        self._ids = random.Random(0x5A4D_B0C5)  # deterministic id sequence for reproducible demos
        self._id_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _new_id(self, prefix: str, length: int) -> str:
        with self._id_lock:
            return prefix + "".join(self._ids.choices(string.ascii_letters + string.digits, k=length))

    def start(self) -> "Sandbox":
        if self._server is None:
            self._server = _Server((self.host, self.port), _Handler)
            self._server.sandbox = self
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, name="llm-sandbox", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("Sandbox is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def mistral_base_url(self) -> str:
        """For `mistralai.Mistral(server_url=...)`: Mistral's API under its own prefix."""
        return f"{self.url}{MISTRAL_PREFIX}"

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_forever(host: str = "127.0.0.1", port: int = 8089) -> None:
    """Run a sandbox in the foreground until Ctrl-C or SIGTERM (the `otel-llmcost sandbox` command)."""
    with Sandbox(host, port) as sb:
        print(f"OPENAI_BASE_URL={sb.openai_base_url}", flush=True)
        print(f"ANTHROPIC_BASE_URL={sb.anthropic_base_url}", flush=True)
        print(f"MISTRAL_SERVER_URL={sb.mistral_base_url}", flush=True)
        # Calls to loopback are a self-hosted model's unless told: this stand-in is the hosted APIs'.
        print(f"OTEL_LLMCOST_PROVIDER_HOSTS={host}=hosted", flush=True)
        wait_for_stop()
