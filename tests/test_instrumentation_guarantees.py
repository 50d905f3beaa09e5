"""The instrumentation's guarantees: errors, what the SDK returns, the native Anthropic span, attribution,
raw responses, never raising into the application, suppression.

Recorded traffic (`tests/replay.py`) where the recordings have it; elsewhere a tiny scripted HTTP server on
127.0.0.1 (`ScriptedServer`) that replies what a test needs (a 429, a weird usage shape, a stream that fails).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response
from opentelemetry import baggage, context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from otel_llmcost import names

try:  # tests/ as a package, or (no __init__.py) tests/ on sys.path
    from . import replay
except ImportError:
    import replay

try:  # ReplayServer: replay.ReplayServer with TCP_NODELAY; collect, frozen_heap: a fast gc.collect
    from .test_instrumentation import ReplayServer, collect, frozen_heap  # noqa: F401
except ImportError:
    from test_instrumentation import ReplayServer, collect, frozen_heap  # noqa: F401

expected_usage, load = replay.expected_usage, replay.load

USAGE_KEYS = (
    names.INPUT_TOKENS,
    names.OUTPUT_TOKENS,
    names.CACHE_READ_TOKENS,
    names.CACHE_WRITE_TOKENS,
    names.REASONING_TOKENS,
)
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"
CHAT_KWARGS = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "hi"}]}
MESSAGE_KWARGS = {"model": ANTHROPIC_MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def usage_attributes(span) -> dict:
    return {key: span.attributes[key] for key in USAGE_KEYS if key in span.attributes}


def one_span(spans):
    finished = spans.get_finished_spans()
    assert len(finished) == 1, [(s.name, s.instrumentation_scope.name, dict(s.attributes)) for s in finished]
    return finished[0]


def ours(span) -> bool:
    return span.instrumentation_scope.name == "otel_llmcost"


# ----------------------------------------------------------------------------------------------------------
# a scripted local server
# ----------------------------------------------------------------------------------------------------------


def reply(body, *, status: int = 200, content_type: str | None = None, headers: dict | None = None) -> dict:
    if content_type is None:
        content_type = "application/json" if not isinstance(body, (str, bytes)) else "text/event-stream"
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return {"status": status, "data": data, "content_type": content_type, "headers": headers or {}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        scripted = self.server.scripted  # type: ignore[attr-defined]
        answer = None
        if scripted is not None:
            with scripted.lock:
                scripted.requests.append({"method": self.command, "path": self.path, "body": raw})
                answer = scripted.replies.pop(0) if scripted.replies else None
        if answer is None:
            answer = reply({"error": {"type": "scripted_unmatched", "message": "no reply left"}}, status=599,
                           headers={"x-should-retry": "false"})
        head = [f"HTTP/1.1 {answer['status']} Scripted", f"Content-Type: {answer['content_type']}",
                f"Content-Length: {len(answer['data'])}"]
        head += [f"{key}: {value}" for key, value in answer["headers"].items()]
        try:  # one send: no Nagle delay between the headers and the body
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + answer["data"])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = _handle


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    scripted: "ScriptedServer | None" = None


_listener: _Listener | None = None


@pytest.fixture(scope="module", autouse=True)
def _scripted_listener():
    """One listening server for the module (starting and stopping one per test costs more than the tests)."""
    yield
    global _listener
    listener, _listener = _listener, None
    if listener is not None:
        listener.shutdown()
        listener.server_close()


class ScriptedServer:
    """Replies, in order, what it is given (see `reply`), on 127.0.0.1; records the requests. While it is entered
    it is the script of the module's one listening server."""

    def __init__(self, *replies: dict):
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def __enter__(self) -> "ScriptedServer":
        global _listener
        if _listener is None:
            _listener = _Listener(("127.0.0.1", 0), _Handler)
            threading.Thread(target=_listener.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        _listener.scripted = self
        self.url = f"http://127.0.0.1:{_listener.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        if _listener is not None and _listener.scripted is self:
            _listener.scripted = None


def openai_chat(usage="absent", *, model: str = "gpt-4o-mini-2024-07-18") -> dict:
    body = {
        "id": "chatcmpl-local", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "hello"}}],
    }
    if usage != "absent":
        body["usage"] = usage
    return reply(body)


def openai_chat_sse(usage="absent", *, error_after_first: bool = False) -> dict:
    base = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
    ]
    if usage != "absent":
        chunks.append({**base, "choices": [], "usage": usage})
    if error_after_first:
        chunks[1:] = [{"error": {"message": "the server failed mid-stream", "type": "server_error"}}]
    return reply("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n")


def anthropic_message(usage="absent") -> dict:
    body = {
        "id": "msg_local", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None,
    }
    if usage != "absent":
        body["usage"] = usage
    return reply(body)


def anthropic_sse(start_usage="absent", delta_usage="absent", *, error_after_start: bool = False) -> dict:
    message = {
        "id": "msg_local", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None,
    }
    if start_usage != "absent":
        message["usage"] = start_usage
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    if delta_usage != "absent":
        delta["usage"] = delta_usage
    events = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": "hello"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", delta),
        ("message_stop", {"type": "message_stop"}),
    ]
    if error_after_start:
        events[1:] = [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]
    return reply("".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events))


def rate_limited(provider: str) -> dict:
    if provider == "openai":
        body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    else:
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}}
    return reply(body, status=429, headers={"retry-after-ms": "1", "x-should-retry": "true"})


def not_found(provider: str) -> dict:
    if provider == "openai":
        body = {"error": {"message": "The model does not exist", "type": "invalid_request_error", "code": None}}
    else:
        body = {"type": "error", "error": {"type": "not_found_error", "message": "model: nope"}}
    return reply(body, status=404, headers={"x-should-retry": "false"})


def make_client(provider: str, url: str, *, is_async: bool = False, max_retries: int = 0, **kwargs):
    if provider == "openai":
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(base_url=url + "/v1", api_key="test", max_retries=max_retries, **kwargs)
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return cls(base_url=url, api_key="test", max_retries=max_retries, **kwargs)


def call(provider: str, client, *, stream: bool = False):
    """One LLM call through `client` (sync or async: returns the coroutine for an async client)."""
    if provider == "openai":
        return client.chat.completions.create(**CHAT_KWARGS, stream=stream)
    return client.messages.create(**MESSAGE_KWARGS, stream=stream)


def run_call(provider: str, url: str, *, is_async: bool, stream: bool = False, consume: bool = True, **kwargs):
    """Makes one call (and reads its stream), returns (result, items)."""
    if is_async:

        async def go():
            async with make_client(provider, url, is_async=True, **kwargs) as client:
                result = await call(provider, client, stream=stream)
                items = [item async for item in result] if stream and consume else None
                return result, items

        return asyncio.run(go())
    key = (provider, url, kwargs.get("max_retries", 0))
    client = _sync_clients.get(key) if set(kwargs) <= {"max_retries"} else None
    if client is None:
        client = make_client(provider, url, **kwargs)
        if set(kwargs) <= {"max_retries"}:
            _sync_clients[key] = client
    result = call(provider, client, stream=stream)
    return result, (list(result) if stream and consume else None)


_sync_clients: dict = {}  # plain sync clients, reused across tests (creating one costs ~20 ms)


def record_status_errors(client) -> list:
    """Makes `client` remember each API status error it creates, to compare what the application gets."""
    created: list = []
    original = client._make_status_error

    def make(*args, **kwargs):
        error = original(*args, **kwargs)
        created.append(error)
        return error

    client._make_status_error = make
    return created


# ----------------------------------------------------------------------------------------------------------
# API errors: status ERROR, error.type, the very same exception re-raised
# ----------------------------------------------------------------------------------------------------------

ERRORS = [
    ("openai", rate_limited, openai.RateLimitError),
    ("openai", not_found, openai.NotFoundError),
    ("anthropic", rate_limited, anthropic.RateLimitError),
    ("anthropic", not_found, anthropic.NotFoundError),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("provider, answer, error_class", ERRORS, ids=[f"{p}-{c.__name__}" for p, _, c in ERRORS])
def test_api_error_sets_error_status_and_reraises_the_same_exception(
    provider, answer, error_class, is_async, stream, spans
):
    with ScriptedServer(answer(provider)) as server:
        client = make_client(provider, server.url, is_async=is_async)
        created = record_status_errors(client)
        with pytest.raises(error_class) as info:
            if is_async:

                async def go():
                    async with client:
                        await call(provider, client, stream=stream)

                asyncio.run(go())
            else:
                call(provider, client, stream=stream)
    error = info.value
    assert type(error) is error_class  # the SDK's own type, not a wrapper
    assert isinstance(error, (openai.APIStatusError if provider == "openai" else anthropic.APIStatusError))
    assert created and error is created[-1]  # `raise`, not `raise SomethingElse(...)` nor a copy
    assert error.status_code == (429 if answer is rate_limited else 404)
    span = one_span(spans)
    assert ours(span) and span.kind is SpanKind.CLIENT
    model = OPENAI_MODEL if provider == "openai" else ANTHROPIC_MODEL
    assert span.name == f"chat {model}"
    assert span.attributes[names.REQUEST_MODEL] == model
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == error_class.__name__
    assert not usage_attributes(span)


def test_recorded_400_reraises_the_sdk_error(spans):
    """A recorded 400 (vision, an invalid image) raises the SDK's BadRequestError, unchanged, through the wrapper."""
    name = "openai/test_vision/test_vision"
    rec = load(name)
    with ReplayServer(rec) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        created = record_status_errors(client)
        for interaction in rec["interactions"][:2]:
            client.chat.completions.create(**interaction["request"]["body"])
        spans.clear()
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**rec["interactions"][2]["request"]["body"])
    assert info.value is created[-1]
    assert info.value.status_code == 400
    span = one_span(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == "BadRequestError"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_connection_error(provider, spans):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    client = make_client(provider, f"http://127.0.0.1:{port}")
    error_class = openai.APIConnectionError if provider == "openai" else anthropic.APIConnectionError
    with pytest.raises(error_class) as info:
        call(provider, client)
    span = one_span(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == type(info.value).__name__


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_retried_call_is_one_span_with_the_final_usage(provider, is_async, spans):
    """A 429 then a 200, with max_retries=1: one call, one span, the usage of the reply that succeeded."""
    ok = (openai_chat({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}) if provider == "openai"
          else anthropic_message({"input_tokens": 11, "output_tokens": 7}))
    with ScriptedServer(rate_limited(provider), ok) as server:
        result, _ = run_call(provider, server.url, is_async=is_async, max_retries=1)
        assert len(server.requests) == 2
    assert type(result) is (ChatCompletion if provider == "openai" else Message)
    span = one_span(spans)
    assert span.status.status_code is StatusCode.UNSET
    assert names.ERROR_TYPE not in span.attributes
    assert usage_attributes(span) == {names.INPUT_TOKENS: 11, names.OUTPUT_TOKENS: 7}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_openai_stream_failing_mid_way_ends_its_span_as_an_error(is_async, spans, caplog, collect):
    with ScriptedServer(openai_chat_sse(error_after_first=True)) as server:
        with pytest.raises(openai.APIError) as info:
            run_call("openai", server.url, is_async=is_async, stream=True)
    collect()
    span = one_span(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == type(info.value).__name__
    assert "the server failed mid-stream" in str(info.value)
    assert not [r for r in caplog.records if "Calling end() on an ended span" in r.getMessage()]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_anthropic_stream_failing_mid_way_keeps_the_billed_input(is_async, spans, caplog, collect):
    """An `error` event after message_start: ERROR span, with the input tokens message_start reported."""
    start = {"input_tokens": 40, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0, "output_tokens": 1}
    with ScriptedServer(anthropic_sse(start, error_after_start=True)) as server:
        with pytest.raises(anthropic.APIStatusError) as info:
            run_call("anthropic", server.url, is_async=is_async, stream=True)
    collect()
    span = one_span(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == type(info.value).__name__
    assert span.attributes[names.INPUT_TOKENS] == 1040
    assert span.attributes[names.CACHE_READ_TOKENS] == 1000
    assert not [r for r in caplog.records if "Calling end() on an ended span" in r.getMessage()]


# ----------------------------------------------------------------------------------------------------------
# what the SDK returns is unchanged
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_returned_types_are_the_sdks_own(is_async, spans):
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    a_usage = {"input_tokens": 3, "output_tokens": 2}
    with ScriptedServer(openai_chat(usage), openai_chat_sse(usage), anthropic_message(a_usage),
                        anthropic_sse(a_usage, {"output_tokens": 2})) as server:
        chat, _ = run_call("openai", server.url, is_async=is_async)
        stream, chunks = run_call("openai", server.url, is_async=is_async, stream=True)
        message, _ = run_call("anthropic", server.url, is_async=is_async)
        a_stream, events = run_call("anthropic", server.url, is_async=is_async, stream=True)
    assert type(chat) is ChatCompletion and chat.choices[0].message.content == "hello"
    assert chat.usage.prompt_tokens == 3
    assert type(stream) is (openai.AsyncStream if is_async else openai.Stream)
    assert [type(c) for c in chunks] == [ChatCompletionChunk] * 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    assert type(message) is Message and message.content[0].text == "hello"
    assert type(a_stream) is (anthropic.AsyncStream if is_async else anthropic.Stream)
    assert [e.type for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop",
    ]
    assert len(spans.get_finished_spans()) == 4


def test_stream_next_and_iter_still_work(spans):
    """`next(stream)` (the SDK's __next__) and iteration share the hooked iterator: every event, once."""
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    with ScriptedServer(openai_chat_sse(usage)) as server:
        stream = make_client("openai", server.url).chat.completions.create(**CHAT_KWARGS, stream=True)
        first = next(stream)
        rest = list(stream)
    assert first.choices[0].delta.content == "hel"
    assert len(rest) == 2 and rest[-1].usage.prompt_tokens == 3
    assert usage_attributes(one_span(spans)) == {names.INPUT_TOKENS: 3, names.OUTPUT_TOKENS: 2}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_anthropic_stream_helper_returns_its_own_objects(is_async, spans):
    name = "anthropic/test_messages/test_anthropic_message_stream_manager_legacy"
    rec = load(name)
    (exp,) = expected_usage(rec)
    body = dict(rec["interactions"][0]["request"]["body"])
    body.pop("stream")
    with ReplayServer(rec) as server:
        if is_async:

            async def go():
                async with make_client("anthropic", server.url, is_async=True) as client:
                    manager = client.messages.stream(**body)
                    assert type(manager) is anthropic.AsyncMessageStreamManager
                    async with manager as stream:
                        assert type(stream) is anthropic.AsyncMessageStream
                        return await stream.get_final_message()

            final = asyncio.run(go())
        else:
            manager = make_client("anthropic", server.url).messages.stream(**body)
            assert type(manager) is anthropic.MessageStreamManager
            with manager as stream:
                assert type(stream) is anthropic.MessageStream
                final = stream.get_final_message()
    assert type(final) is anthropic.types.ParsedMessage  # a Message subclass: what the helper returns untraced
    assert isinstance(final, Message)
    assert final.id == exp["id"] and final.usage.output_tokens == exp["usage"]["output_tokens"]
    span = one_span(spans)
    assert span.attributes[names.OUTPUT_TOKENS] == exp["usage"]["output_tokens"]


# ----------------------------------------------------------------------------------------------------------
# Anthropic's own span: suppressed inside ours, exactly one span per call
# ----------------------------------------------------------------------------------------------------------


def _models_list():
    return reply({"data": [{"type": "model", "id": ANTHROPIC_MODEL, "display_name": "Haiku",
                            "created_at": "2024-10-22T00:00:00Z"}],
                  "has_more": False, "first_id": ANTHROPIC_MODEL, "last_id": ANTHROPIC_MODEL})


def test_anthropic_native_tracing_is_really_on_for_the_client(tracing, spans):
    """Control: the client given our tracer provider does emit its own span, for a call we do not trace."""
    provider, _ = tracing
    with ScriptedServer(_models_list()) as server:
        client = make_client("anthropic", server.url, open_telemetry={"tracer_provider": provider})
        assert client.open_telemetry["traces"]["enabled"] is True
        assert client.open_telemetry["tracer_provider"] is provider
        list(client.models.list())
    span = one_span(spans)
    assert span.instrumentation_scope.name == "com.anthropic.sdk.python"


@pytest.mark.parametrize(
    "name, is_async, mode",
    [
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy", False, "create"),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_async_legacy", True, "create"),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy", False, "create"),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_async_stream_legacy", True, "create"),
        ("anthropic/test_messages/test_anthropic_message_stream_manager_legacy", False, "helper"),
        ("anthropic/test_messages/test_async_anthropic_message_stream_manager_legacy", True, "helper"),
    ],
)
def test_anthropic_native_span_is_suppressed_inside_ours(name, is_async, mode, tracing, spans, caplog, collect):
    provider, _ = tracing
    rec = load(name)
    expected = expected_usage(rec)
    option = {"tracer_provider": provider}

    async def go_async(client, body):
        if mode == "helper":
            async with client.messages.stream(**body) as stream:
                return await stream.get_final_message()
        result = await client.messages.create(**body)
        if body.get("stream"):
            return [e async for e in result]
        return result

    def go(client, body):
        if mode == "helper":
            with client.messages.stream(**body) as stream:
                return stream.get_final_message()
        result = client.messages.create(**body)
        return list(result) if body.get("stream") else result

    with ReplayServer(rec) as server:
        bodies = []
        for interaction in rec["interactions"]:
            body = dict(interaction["request"]["body"])
            if mode == "helper":
                body.pop("stream")
            bodies.append(body)
        if is_async:

            async def run_all():
                async with make_client("anthropic", server.url, is_async=True, open_telemetry=option) as client:
                    out = []
                    for body in bodies:
                        spans.clear()
                        out.append(await go_async(client, body))
                        out.append(spans.get_finished_spans())
                    return out

            results = asyncio.run(run_all())
            per_call = results[1::2]
        else:
            client = make_client("anthropic", server.url, open_telemetry=option)
            per_call = []
            for body in bodies:
                spans.clear()
                go(client, body)
                per_call.append(spans.get_finished_spans())
    collect()
    for finished, exp in zip(per_call, expected):
        assert len(finished) == 1, [(s.name, s.instrumentation_scope.name, dict(s.attributes)) for s in finished]
        (span,) = finished
        assert ours(span)
        usage = exp["usage"]
        assert span.attributes[names.INPUT_TOKENS] == (
            usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        )
    assert len(per_call) == len(rec["interactions"])
    assert not [s for s in spans.get_finished_spans() if not ours(s)]


def test_anthropic_native_span_is_suppressed_for_with_raw_response(tracing, spans):
    provider, _ = tracing
    name = "anthropic/test_messages/test_anthropic_message_create_legacy"
    rec = load(name)
    with ReplayServer(rec) as server:
        client = make_client("anthropic", server.url, open_telemetry={"tracer_provider": provider})
        raw = client.messages.with_raw_response.create(**rec["interactions"][0]["request"]["body"])
        assert type(raw.parse()) is Message
    span = one_span(spans)
    assert ours(span)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_anthropic_env_open_telemetry_false_still_our_one_span(is_async, spans, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    name = "anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        if is_async:

            async def go():
                async with make_client("anthropic", server.url, is_async=True) as client:
                    assert client.open_telemetry["traces"]["enabled"] is False
                    return [await client.messages.create(**i["request"]["body"]) for i in rec["interactions"]]

            results = asyncio.run(go())
        else:
            client = make_client("anthropic", server.url)
            assert client.open_telemetry["traces"]["enabled"] is False
            results = [client.messages.create(**i["request"]["body"]) for i in rec["interactions"]]
    assert [type(r) for r in results] == [Message, Message]
    finished = spans.get_finished_spans()
    assert len(finished) == 2 and all(ours(s) for s in finished)
    for span, exp in zip(finished, expected):
        usage = exp["usage"]
        assert span.attributes[names.RESPONSE_ID] == exp["id"]
        assert span.attributes[names.INPUT_TOKENS] == (
            usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        )


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_anthropic_native_span_is_suppressed_for_failed_and_retried_calls(is_async, tracing, spans):
    """A 429 then (retried) a 429 again: one failed call, one span (ours, ERROR); a 429 then a 200: one span."""
    provider, _ = tracing
    ok = anthropic_message({"input_tokens": 11, "output_tokens": 7})
    with ScriptedServer(rate_limited("anthropic"), rate_limited("anthropic"), rate_limited("anthropic"), ok) as server:
        with pytest.raises(anthropic.RateLimitError):
            run_call("anthropic", server.url, is_async=is_async, max_retries=1,
                     open_telemetry={"tracer_provider": provider})
        failed = spans.get_finished_spans()
        spans.clear()
        run_call("anthropic", server.url, is_async=is_async, max_retries=1,
                 open_telemetry={"tracer_provider": provider})
        assert len(server.requests) == 4
    (span,) = failed
    assert ours(span) and span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == "RateLimitError"
    span = one_span(spans)
    assert ours(span) and usage_attributes(span) == {names.INPUT_TOKENS: 11, names.OUTPUT_TOKENS: 7}


def test_anthropic_native_span_untouched_outside_our_calls(tracing, spans):
    """After one of our calls, the client's own span for a non-LLM call still appears (the flag does not leak)."""
    provider, _ = tracing
    with ScriptedServer(anthropic_message({"input_tokens": 3, "output_tokens": 2}), _models_list()) as server:
        client = make_client("anthropic", server.url, open_telemetry={"tracer_provider": provider})
        client.messages.create(**MESSAGE_KWARGS)
        list(client.models.list())
    finished = spans.get_finished_spans()
    assert [s.instrumentation_scope.name for s in finished] == ["otel_llmcost", "com.anthropic.sdk.python"]


# ----------------------------------------------------------------------------------------------------------
# attribution from baggage
# ----------------------------------------------------------------------------------------------------------

ATTRIBUTION = {"llmcost.project": "checkout", "llmcost.feature": "summaries", "user.id": "user-42"}


def _with_baggage(values: dict):
    ctx = context.get_current()
    for key, value in values.items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    return context.attach(ctx)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_baggage_attribution_is_copied(provider, is_async, stream, spans):
    if provider == "openai":
        answers = (openai_chat_sse({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}) if stream
                   else openai_chat({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))
    else:
        answers = (anthropic_sse({"input_tokens": 1, "output_tokens": 1}, {"output_tokens": 1}) if stream
                   else anthropic_message({"input_tokens": 1, "output_tokens": 1}))
    token = _with_baggage({**ATTRIBUTION, "unrelated.key": "not copied"})
    try:
        with ScriptedServer(answers) as server:
            run_call(provider, server.url, is_async=is_async, stream=stream)
    finally:
        context.detach(token)
    span = one_span(spans)
    for key, value in ATTRIBUTION.items():
        assert span.attributes[key] == value
    assert "unrelated.key" not in span.attributes


def test_baggage_attribution_is_per_context(spans):
    """Detached baggage is gone from the next call; another context's baggage is its own."""
    answer = openai_chat({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
    with ScriptedServer(answer, answer, answer) as server:
        client = make_client("openai", server.url)
        token = _with_baggage({"llmcost.project": "first"})
        try:
            call("openai", client)
        finally:
            context.detach(token)
        token = _with_baggage({"llmcost.project": "second", "user.id": "u-2"})
        try:
            call("openai", client)
        finally:
            context.detach(token)
        call("openai", client)
    first, second, third = spans.get_finished_spans()
    env = {"llmcost.project": os.environ.get("OTEL_LLMCOST_PROJECT") or None,
           "llmcost.feature": os.environ.get("OTEL_LLMCOST_FEATURE") or None,
           "user.id": os.environ.get("OTEL_LLMCOST_USER_ID") or None}
    assert first.attributes["llmcost.project"] == "first"
    assert first.attributes.get("user.id") == env["user.id"]
    assert second.attributes["llmcost.project"] == "second" and second.attributes["user.id"] == "u-2"
    for key in ATTRIBUTION:
        assert third.attributes.get(key) == env[key]


# ----------------------------------------------------------------------------------------------------------
# with_raw_response
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_openai_with_raw_response(is_async, spans):
    name = "openai/test_prompt_caching/test_openai_prompt_caching"  # call 1 has cached_tokens 1024
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        if is_async:

            async def go():
                async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0) as client:
                    out = []
                    for interaction in rec["interactions"]:
                        raw = await client.chat.completions.with_raw_response.create(**interaction["request"]["body"])
                        out.append((raw, raw.parse()))
                    return out

            results = asyncio.run(go())
        else:
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
            results = []
            for interaction in rec["interactions"]:
                raw = client.chat.completions.with_raw_response.create(**interaction["request"]["body"])
                results.append((raw, raw.parse()))
    finished = spans.get_finished_spans()
    assert len(finished) == len(rec["interactions"]) == len(results)
    for (raw, parsed), span, exp in zip(results, finished, expected):
        assert raw.http_response.status_code == 200
        assert type(parsed) is ChatCompletion and parsed.id == exp["id"]
        assert parsed.usage.prompt_tokens == exp["usage"]["prompt_tokens"]
        assert span.attributes[names.INPUT_TOKENS] == exp["usage"]["prompt_tokens"]
        assert span.attributes[names.OUTPUT_TOKENS] == exp["usage"]["completion_tokens"]
        assert span.attributes[names.RESPONSE_ID] == exp["id"]
        assert span.attributes[names.RESPONSE_MODEL] == exp["model"]
    assert [s.attributes.get(names.CACHE_READ_TOKENS) for s in finished] == [None, 1024, None, None]


def test_openai_embeddings_with_raw_response(spans):
    name = "openai/test_embeddings/test_embeddings_with_raw_response"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
        for interaction, exp in zip(rec["interactions"], expected):
            spans.clear()
            raw = client.embeddings.with_raw_response.create(**interaction["request"]["body"])
            parsed = raw.parse()
            assert parsed.usage.prompt_tokens == exp["usage"]["prompt_tokens"]
            span = one_span(spans)
            assert span.attributes[names.OPERATION] == "embeddings"
            assert span.attributes[names.INPUT_TOKENS] == exp["usage"]["prompt_tokens"]
            assert span.attributes[names.RESPONSE_MODEL] == exp["model"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_anthropic_with_raw_response(is_async, spans):
    name = "anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        if is_async:

            async def go():
                async with make_client("anthropic", server.url, is_async=True) as client:
                    out = []
                    for interaction in rec["interactions"]:
                        raw = await client.messages.with_raw_response.create(**interaction["request"]["body"])
                        out.append(await raw.parse())
                    return out

            parsed = asyncio.run(go())
        else:
            client = make_client("anthropic", server.url)
            parsed = [client.messages.with_raw_response.create(**i["request"]["body"]).parse()
                      for i in rec["interactions"]]
    finished = spans.get_finished_spans()
    assert len(finished) == 2
    for message, span, exp in zip(parsed, finished, expected):
        usage = exp["usage"]
        assert type(message) is Message and message.id == exp["id"]
        assert span.attributes[names.INPUT_TOKENS] == (
            usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        )
        assert span.attributes[names.RESPONSE_ID] == exp["id"]


@pytest.mark.parametrize("provider, stream", [("openai", False), ("openai", True), ("anthropic", False),
                                              ("anthropic", True)])
def test_with_streaming_response(provider, stream, spans):
    """`with_streaming_response`: the body is read when the app parses it; the span then has the usage."""
    if provider == "openai":
        usage = {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}
        answer = openai_chat_sse(usage) if stream else openai_chat(usage)
        expected = {names.INPUT_TOKENS: 30, names.OUTPUT_TOKENS: 4}
    else:
        answer = (anthropic_sse({"input_tokens": 30, "output_tokens": 1}, {"output_tokens": 4}) if stream
                  else anthropic_message({"input_tokens": 30, "output_tokens": 4}))
        expected = {names.INPUT_TOKENS: 30, names.OUTPUT_TOKENS: 4}
    with ScriptedServer(answer) as server:
        client = make_client(provider, server.url)
        resource = client.chat.completions if provider == "openai" else client.messages
        kwargs = CHAT_KWARGS if provider == "openai" else MESSAGE_KWARGS
        with resource.with_streaming_response.create(**kwargs, stream=stream) as response:
            parsed = response.parse()
            if stream:
                assert type(parsed) is (openai.Stream if provider == "openai" else anthropic.Stream)
                items = list(parsed)
                assert items
            else:
                assert type(parsed) is (ChatCompletion if provider == "openai" else Message)
    span = one_span(spans)
    assert ours(span) and span.status.status_code is StatusCode.UNSET
    assert usage_attributes(span) == expected


@pytest.mark.parametrize(
    "provider, usage, expected",
    [
        pytest.param(
            "openai",
            {"prompt_tokens": 2000, "completion_tokens": 10, "total_tokens": 2010,
             "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 500},
             "completion_tokens_details": {"reasoning_tokens": 7}},
            {names.INPUT_TOKENS: 2000, names.OUTPUT_TOKENS: 10, names.CACHE_READ_TOKENS: 1024,
             names.CACHE_WRITE_TOKENS: 500, names.REASONING_TOKENS: 7},
            id="openai-prompt_tokens-includes-cache-read-and-write",
        ),
        pytest.param(
            "openai",
            {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30,
             "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}},
            {names.INPUT_TOKENS: 20, names.OUTPUT_TOKENS: 10},
            id="openai-zero-details-absent",
        ),
        pytest.param(
            "anthropic",
            {"input_tokens": 10, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200,
             "output_tokens": 5},
            {names.INPUT_TOKENS: 1210, names.OUTPUT_TOKENS: 5, names.CACHE_READ_TOKENS: 1000,
             names.CACHE_WRITE_TOKENS: 200},
            id="anthropic-input-excludes-cache-read-and-write",
        ),
        pytest.param(
            "anthropic",
            {"input_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 5,
             "output_tokens_details": {"thinking_tokens": 0}},
            {names.INPUT_TOKENS: 10, names.OUTPUT_TOKENS: 5},
            id="anthropic-zero-cache-absent",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_usage_semantics_beyond_the_recordings(provider, usage, expected, stream, spans):
    """Shapes the recordings lack: an OpenAI cache write, an Anthropic cache read and write in one call."""
    if provider == "openai":
        answer = openai_chat_sse(usage) if stream else openai_chat(usage)
    else:
        start = {key: value for key, value in usage.items() if key != "output_tokens_details"}
        answer = (anthropic_sse({**start, "output_tokens": 1}, {"output_tokens": usage["output_tokens"],
                                                                  **({"output_tokens_details":
                                                                      usage["output_tokens_details"]}
                                                                     if "output_tokens_details" in usage else {})})
                  if stream else anthropic_message(usage))
    with ScriptedServer(answer) as server:
        run_call(provider, server.url, is_async=False, stream=stream)
    span = one_span(spans)
    assert usage_attributes(span) == expected
    assert names.USAGE_MISSING not in span.attributes


def test_responses_usage_semantics_beyond_the_recordings(spans):
    """Responses API: input_tokens includes the cached tokens, output_tokens the reasoning tokens: as is."""
    usage = {"input_tokens": 500, "input_tokens_details": {"cached_tokens": 256}, "output_tokens": 100,
             "output_tokens_details": {"reasoning_tokens": 60}, "total_tokens": 600}
    body = {
        "id": "resp_local", "object": "response", "created_at": 1, "model": "gpt-5-2025-08-07",
        "status": "completed", "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": usage,
    }
    with ScriptedServer(reply(body)) as server:
        result = make_client("openai", server.url).responses.create(model="gpt-5", input="hi")
    assert type(result) is Response
    span = one_span(spans)
    assert span.name == "chat gpt-5"
    assert usage_attributes(span) == {names.INPUT_TOKENS: 500, names.OUTPUT_TOKENS: 100,
                                      names.CACHE_READ_TOKENS: 256, names.REASONING_TOKENS: 60}
    assert span.attributes[names.RESPONSE_MODEL] == "gpt-5-2025-08-07"


# ----------------------------------------------------------------------------------------------------------
# never raises into the application
# ----------------------------------------------------------------------------------------------------------

WEIRD_OPENAI_USAGE = {
    "string-prompt-tokens": ({"prompt_tokens": "abc"}, {}),
    "missing-fields": ({}, {}),
    "null": (None, {}),
    "absent": ("absent", {}),
    "list": ([1, 2, 3], {}),
    "string": ("lots", {}),
    "negative": ({"prompt_tokens": -5, "completion_tokens": -1}, {}),
    "float": ({"prompt_tokens": 10.5, "completion_tokens": 2}, None),
    "bool": ({"prompt_tokens": True, "completion_tokens": False}, None),
    "only-completion": ({"completion_tokens": 4}, None),
    "string-completion": ({"prompt_tokens": 5, "completion_tokens": "x"}, {names.INPUT_TOKENS: 5}),
    "weird-details": (
        {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": "weird",
         "completion_tokens_details": [7]},
        {names.INPUT_TOKENS: 5, names.OUTPUT_TOKENS: 2},
    ),
    "null-details": (
        {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": None,
         "completion_tokens_details": {"reasoning_tokens": None}},
        {names.INPUT_TOKENS: 5, names.OUTPUT_TOKENS: 2},
    ),
    "huge": ({"prompt_tokens": 10**30, "completion_tokens": 1}, None),
    "nested-mess": ({"prompt_tokens": {"a": 1}, "input_tokens": [1], "input_tokens_details": 3}, {}),
}


def _check_survived(span, expected_usage_attrs) -> None:
    assert ours(span)
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.UNSET
    for value in usage_attributes(span).values():
        assert type(value) is int and 0 <= value
    if expected_usage_attrs is not None:
        assert usage_attributes(span) == expected_usage_attrs


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", list(WEIRD_OPENAI_USAGE))
def test_weird_openai_usage_never_raises(case, is_async, spans):
    usage, expected_attrs = WEIRD_OPENAI_USAGE[case]
    with ScriptedServer(openai_chat(usage)) as server:
        result, _ = run_call("openai", server.url, is_async=is_async)
    assert type(result) is ChatCompletion
    assert result.choices[0].message.content == "hello"
    _check_survived(one_span(spans), expected_attrs)


@pytest.mark.parametrize("case", list(WEIRD_OPENAI_USAGE))
def test_weird_openai_stream_usage_never_raises(case, spans):
    usage, expected_attrs = WEIRD_OPENAI_USAGE[case]
    with ScriptedServer(openai_chat_sse(usage)) as server:
        stream, chunks = run_call("openai", server.url, is_async=False, stream=True)
    assert type(stream) is openai.Stream
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    span = one_span(spans)
    if case in ("null", "absent"):  # no usage report: the tokens are estimated from the text, and flagged
        assert span.attributes[names.USAGE_ESTIMATED] is True
        assert span.attributes[names.OUTPUT_TOKENS] == 2  # "hello": 5 characters, about 4 a token
        expected_attrs = None
    _check_survived(span, expected_attrs)


@pytest.mark.parametrize("case", ["string-prompt-tokens", "missing-fields", "null", "list", "nested-mess"])
def test_weird_responses_usage_never_raises(case, spans):
    usage, _ = WEIRD_OPENAI_USAGE[case]
    body = {
        "id": "resp_local", "object": "response", "created_at": 1, "model": "gpt-4.1-nano-2025-04-14",
        "status": "completed", "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": usage,
    }
    with ScriptedServer(reply(body)) as server:
        result = make_client("openai", server.url).responses.create(model="gpt-4.1-nano", input="hi")
    assert type(result) is Response and result.id == "resp_local"
    span = one_span(spans)
    _check_survived(span, {})
    assert span.attributes[names.RESPONSE_ID] == "resp_local"


WEIRD_ANTHROPIC_USAGE = {
    "string-input": ({"input_tokens": "abc", "output_tokens": 3}, {names.OUTPUT_TOKENS: 3}),
    "missing-fields": ({}, {}),
    "null": (None, {}),
    "absent": ("absent", {}),
    "list": ([1], {}),
    "string-cache": (
        {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": "x", "cache_creation_input_tokens": None},
        {names.INPUT_TOKENS: 5, names.OUTPUT_TOKENS: 3},
    ),
    "weird-nested": (
        {"input_tokens": 5, "output_tokens": 3, "cache_creation_input_tokens": 7, "cache_creation": "weird",
         "server_tool_use": [1], "output_tokens_details": "x"},
        {names.INPUT_TOKENS: 12, names.OUTPUT_TOKENS: 3, names.CACHE_WRITE_TOKENS: 7},
    ),
    "negative-cache": (
        {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": -4},
        {names.INPUT_TOKENS: 5, names.OUTPUT_TOKENS: 3},
    ),
}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("case", list(WEIRD_ANTHROPIC_USAGE))
def test_weird_anthropic_usage_never_raises(case, is_async, spans):
    usage, expected_attrs = WEIRD_ANTHROPIC_USAGE[case]
    with ScriptedServer(anthropic_message(usage)) as server:
        result, _ = run_call("anthropic", server.url, is_async=is_async)
    assert type(result) is Message and result.content[0].text == "hello"
    _check_survived(one_span(spans), expected_attrs)


@pytest.mark.parametrize("case", list(WEIRD_ANTHROPIC_USAGE))
def test_weird_anthropic_stream_usage_never_raises(case, spans):
    usage, _ = WEIRD_ANTHROPIC_USAGE[case]
    with ScriptedServer(anthropic_sse(usage, usage)) as server:
        stream, events = run_call("anthropic", server.url, is_async=False, stream=True)
    assert type(stream) is anthropic.Stream and events[-1].type == "message_stop"
    _check_survived(one_span(spans), None)


@pytest.mark.parametrize("case", ["string-prompt-tokens", "list", "nested-mess"])
def test_weird_openai_usage_with_raw_response_never_raises(case, spans):
    usage, _ = WEIRD_OPENAI_USAGE[case]
    with ScriptedServer(openai_chat(usage)) as server:
        raw = make_client("openai", server.url).chat.completions.with_raw_response.create(**CHAT_KWARGS)
    assert type(raw.parse()) is ChatCompletion
    _check_survived(one_span(spans), {})


def test_non_json_body_never_raises(spans):
    """A 200 whose body is not JSON: whatever the SDK does, it is not our exception and the span ends."""
    with ScriptedServer(reply(b"<html>proxy says hi</html>", content_type="text/html")) as server:
        client = make_client("openai", server.url)
        try:
            outcome = client.chat.completions.create(**CHAT_KWARGS)
        except Exception as error:  # the SDK's own complaint, if any
            assert type(error).__module__.startswith("openai"), type(error)
            outcome = error
    assert outcome is not None
    span = one_span(spans)
    assert ours(span) and span.end_time is not None


def test_raw_response_with_broken_json_never_raises(spans):
    """`with_raw_response` whose body claims JSON but is not: our reading fails quietly; the app's parse() is the
    SDK's business (and raises the SDK's/json's own error, not ours)."""
    with ScriptedServer(reply(b'{"id": broken', content_type="application/json")) as server:
        raw = make_client("openai", server.url).chat.completions.with_raw_response.create(**CHAT_KWARGS)
    assert raw.http_response.status_code == 200
    span = one_span(spans)
    assert ours(span) and span.end_time is not None and span.status.status_code is StatusCode.UNSET
    assert not usage_attributes(span)
    with pytest.raises(json.JSONDecodeError):
        raw.parse()


def test_non_object_request_body_never_raises(spans):
    """A request to an LLM path whose JSON body is not an object (the low-level `client.post`): a span, no model."""
    with ScriptedServer(openai_chat({"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3})) as server:
        client = make_client("openai", server.url)
        result = client.post("/chat/completions", body=["not", "an", "object"], cast_to=ChatCompletion)
        assert json.loads(server.requests[0]["body"]) == ["not", "an", "object"]
    assert type(result) is ChatCompletion
    span = one_span(spans)
    assert ours(span) and span.name == "chat"
    assert names.REQUEST_MODEL not in span.attributes
    assert span.attributes[names.INPUT_TOKENS] == 2


# ----------------------------------------------------------------------------------------------------------
# suppress_instrumentation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_suppress_instrumentation_gives_no_span(provider, is_async, stream, spans, collect):
    if provider == "openai":
        answer = (openai_chat_sse({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}) if stream
                  else openai_chat({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))
    else:
        answer = (anthropic_sse({"input_tokens": 1, "output_tokens": 1}, {"output_tokens": 1}) if stream
                  else anthropic_message({"input_tokens": 1, "output_tokens": 1}))
    with ScriptedServer(answer, answer) as server:
        with suppress_instrumentation():
            result, items = run_call(provider, server.url, is_async=is_async, stream=stream)
        if stream:
            collect()
        assert spans.get_finished_spans() == ()
        if stream:
            assert items
        else:
            assert type(result) is (ChatCompletion if provider == "openai" else Message)
        # control: the same call outside the block is traced
        run_call(provider, server.url, is_async=is_async, stream=stream)
    assert len(spans.get_finished_spans()) == 1


# ----------------------------------------------------------------------------------------------------------
# anthropic thinking tokens (no recording has them)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_thinking_tokens_are_reasoning_tokens(stream, spans):
    """anthropic 2.x reports usage.output_tokens_details.thinking_tokens (inside output_tokens, not added)."""
    thinking = {"input_tokens": 20, "output_tokens": 300, "output_tokens_details": {"thinking_tokens": 250}}
    answer = (anthropic_sse({"input_tokens": 20, "output_tokens": 1}, thinking) if stream
              else anthropic_message(thinking))
    with ScriptedServer(answer) as server:
        result, _ = run_call("anthropic", server.url, is_async=False, stream=stream)
        if not stream:
            assert result.usage.output_tokens_details.thinking_tokens == 250  # the SDK does parse it
    span = one_span(spans)
    assert span.attributes[names.OUTPUT_TOKENS] == 300
    assert span.attributes[names.REASONING_TOKENS] == 250
