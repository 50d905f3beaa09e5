"""The instrumentation against real recorded provider traffic: one span per call, with the provider's own usage.

Every recorded interaction of a file is replayed through the REAL `openai` / `anthropic` SDK (built on `httpx2`)
from a local server (`tests/replay.py`). The span attributes expected for each call are computed here from the raw
recorded response bodies (`replay.expected_usage`), with the semantics of the contract:

- `gen_ai.usage.input_tokens` counts every input token. OpenAI's `prompt_tokens` (and the Responses API's
  `input_tokens`) already includes the cached tokens: copied as is. Anthropic's `input_tokens` excludes the cache
  reads and writes: the span has input + cache_read + cache_creation.
- `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_creation.input_tokens` and
  `gen_ai.usage.reasoning.output_tokens` are there only when reported and > 0.
- A stream's span ends when the stream is exhausted, with the usage it carried; an OpenAI stream without usage has
  `llmcost.usage_missing = True`.

The guarantees (errors, return types, native Anthropic span, baggage, raw responses, never raising, suppression)
are in `test_instrumentation_guarantees.py`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
from urllib.parse import parse_qs, urlsplit

import anthropic
import openai
import pytest
from anthropic.types import Message
from anthropic.types.beta.parsed_beta_message import ParsedBetaMessage
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response
from opentelemetry.trace import SpanKind, StatusCode

from otel_llmcost import names

try:  # tests/ as a package, or (no __init__.py) tests/ on sys.path
    from . import replay
except ImportError:
    import replay

expected_usage, load = replay.expected_usage, replay.load


class ReplayServer(replay.ReplayServer):
    """`replay.ReplayServer` with TCP_NODELAY on its connections.

    Its handler writes the headers and the body of a reply in two sends; with Nagle's algorithm on, the body waits
    for the client's delayed ACK (~40 ms a call). Same replies, same matching: only faster.
    """

    def start(self) -> "ReplayServer":
        super().start()
        server = getattr(self, "_server", None)
        if server is not None and not getattr(server.RequestHandlerClass, "nodelay", False):
            base = server.RequestHandlerClass

            class NoDelayHandler(base):
                nodelay = True

                def setup(self):
                    super().setup()
                    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            server.RequestHandlerClass = NoDelayHandler
        return self



USAGE_KEYS = (
    names.INPUT_TOKENS,
    names.OUTPUT_TOKENS,
    names.CACHE_READ_TOKENS,
    names.CACHE_WRITE_TOKENS,
    names.REASONING_TOKENS,
)

# The literal attribute names of the contract, so that a renamed constant in names.py cannot hide a change.
assert USAGE_KEYS == (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
)
assert (names.OPERATION, names.PROVIDER, names.REQUEST_MODEL, names.RESPONSE_MODEL, names.RESPONSE_ID) == (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
)
assert names.USAGE_MISSING == "llmcost.usage_missing"


# ----------------------------------------------------------------------------------------------------------
# expected span attributes, computed from the raw usage dicts
# ----------------------------------------------------------------------------------------------------------


def _positive(value) -> int:
    return value if type(value) is int and value > 0 else 0


def expected_usage_attributes(kind: str, usage: dict | None) -> dict:
    """The usage attributes the span must have for the usage dict the provider reported.

    kind: "openai" (chat completions, legacy completions, embeddings), "responses" or "anthropic".
    """
    if usage is None:
        return {}
    out: dict = {}
    if kind == "anthropic":
        read = _positive(usage.get("cache_read_input_tokens"))
        written = _positive(usage.get("cache_creation_input_tokens"))
        out[names.INPUT_TOKENS] = usage["input_tokens"] + read + written
        out[names.OUTPUT_TOKENS] = usage["output_tokens"]
        reasoning = _positive((usage.get("output_tokens_details") or {}).get("thinking_tokens"))
    elif kind == "responses":
        out[names.INPUT_TOKENS] = usage["input_tokens"]  # includes the cached tokens
        out[names.OUTPUT_TOKENS] = usage["output_tokens"]
        read = _positive((usage.get("input_tokens_details") or {}).get("cached_tokens"))
        written = 0
        reasoning = _positive((usage.get("output_tokens_details") or {}).get("reasoning_tokens"))
    else:
        out[names.INPUT_TOKENS] = usage["prompt_tokens"]  # includes the cached tokens
        if "completion_tokens" in usage:  # embeddings report none
            out[names.OUTPUT_TOKENS] = usage["completion_tokens"]
        details = usage.get("prompt_tokens_details") or {}
        read = _positive(details.get("cached_tokens"))
        written = _positive(details.get("cache_write_tokens"))
        reasoning = _positive((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    if read:
        out[names.CACHE_READ_TOKENS] = read
    if written:
        out[names.CACHE_WRITE_TOKENS] = written
    if reasoning:
        out[names.REASONING_TOKENS] = reasoning
    return out


def usage_attributes(span) -> dict:
    return {key: span.attributes[key] for key in USAGE_KEYS if key in span.attributes}


def one_span(spans):
    finished = spans.get_finished_spans()
    assert len(finished) == 1, [(s.name, s.instrumentation_scope.name, dict(s.attributes)) for s in finished]
    return finished[0]


def check_identity(span, *, operation: str, provider: str, request_model: str) -> None:
    assert span.name == f"{operation} {request_model}"
    assert span.kind is SpanKind.CLIENT
    assert span.instrumentation_scope.name == "otel_llmcost"
    attributes = span.attributes
    assert attributes[names.OPERATION] == operation
    assert attributes[names.PROVIDER] == provider
    assert attributes[names.REQUEST_MODEL] == request_model


def check_success(span, exp: dict, kind: str, *, stream: bool, response_ids: bool = True) -> None:
    attributes = span.attributes
    assert span.status.status_code is StatusCode.UNSET, span.status
    assert names.ERROR_TYPE not in attributes
    assert span.end_time is not None
    for value in usage_attributes(span).values():
        assert type(value) is int
    if stream and exp["usage"] is None:
        assert attributes.get(names.USAGE_MISSING) is True
        if kind == "openai":  # estimated from the text (exactly: tests/test_stream_usage.py), and flagged so
            assert attributes.get(names.USAGE_ESTIMATED) is True
            assert set(usage_attributes(span)) == {names.INPUT_TOKENS, names.OUTPUT_TOKENS}
        else:
            assert usage_attributes(span) == expected_usage_attributes(kind, exp["usage"])
    else:
        assert usage_attributes(span) == expected_usage_attributes(kind, exp["usage"])
        assert names.USAGE_MISSING not in attributes
        assert names.USAGE_ESTIMATED not in attributes
    if response_ids:
        if exp["model"]:
            assert attributes.get(names.RESPONSE_MODEL) == exp["model"]
        if exp["id"]:
            assert attributes.get(names.RESPONSE_ID) == exp["id"]


def check_error(span, error: BaseException) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == type(error).__name__
    assert span.end_time is not None
    assert not usage_attributes(span)


@pytest.fixture(scope="module", autouse=True)
def frozen_heap():
    """Freezes the objects that exist before this module's tests (SDKs, pydantic models...): a gc.collect() in a
    test then scans only what the tests made since (~ms, not ~100 ms). Undone after the module."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def collect(spans, frozen_heap):
    """A (fast) `gc.collect`, for the tests whose streams must be collected. Garbage left by earlier tests is
    collected before the test starts, and the spans that makes, if any, are dropped."""
    gc.collect()
    spans.clear()
    yield gc.collect


def ended_twice(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Calling end() on an ended span" in r.getMessage()]


# ----------------------------------------------------------------------------------------------------------
# driving the OpenAI SDK from a recording
# ----------------------------------------------------------------------------------------------------------

# path suffix -> (operation, usage kind, result type, chunk type, how to call it)
OPENAI_ENDPOINTS = {
    "/chat/completions": ("chat", "openai", ChatCompletion, ChatCompletionChunk, lambda c: c.chat.completions.create),
    "/completions": ("text_completion", "openai", Completion, Completion, lambda c: c.completions.create),
    "/embeddings": ("embeddings", "openai", CreateEmbeddingResponse, None, lambda c: c.embeddings.create),
    "/responses": ("chat", "responses", Response, None, lambda c: c.responses.create),
}


def openai_endpoint(interaction: dict):
    path = replay._norm_path(interaction["request"]["uri"])
    for suffix in ("/chat/completions", "/completions", "/embeddings", "/responses"):
        if path.endswith(suffix):
            return OPENAI_ENDPOINTS[suffix]
    raise AssertionError(f"not an LLM endpoint: {path}")


def is_azure(rec: dict) -> bool:
    return "openai.azure.com" in rec["interactions"][0]["request"]["uri"]


def openai_client(server: ReplayServer, rec: dict, *, is_async: bool):
    if is_azure(rec):
        uri = urlsplit(rec["interactions"][0]["request"]["uri"])
        version = parse_qs(uri.query)["api-version"][0]
        deployment = uri.path.split("/deployments/")[1].split("/")[0]
        body_model = rec["interactions"][0]["request"]["body"].get("model")
        kwargs = {} if body_model == deployment else {"azure_deployment": deployment}
        cls = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
        return cls(azure_endpoint=server.url, api_key="test", api_version=version, max_retries=0, **kwargs)
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(base_url=server.openai_base_url, api_key="test", max_retries=0)


def replay_openai(name: str, spans, *, is_async: bool = False, response_ids: bool = True) -> list:
    """Replays every interaction of `name`; checks the one span of each call. Returns the spans, in order."""
    rec = load(name)
    expected = expected_usage(rec)
    provider = "azure.ai.openai" if is_azure(rec) else "openai"
    collected = []

    def check(interaction, exp, body, result=None, error=None, items=None):
        operation, kind, result_type, chunk_type, _ = openai_endpoint(interaction)
        span = one_span(spans)
        spans.clear()
        collected.append(span)
        check_identity(span, operation=operation, provider=provider, request_model=body["model"])
        if error is not None:
            assert exp["status"] >= 400
            check_error(span, error)
            return
        stream = bool(body.get("stream"))
        assert exp["stream"] is stream
        if stream:
            assert type(result) is (openai.AsyncStream if is_async else openai.Stream)
            assert items, "the stream still yields its events"
            if chunk_type is not None:
                assert all(type(item) is chunk_type for item in items)
        else:
            assert type(result) is result_type
        check_success(span, exp, kind, stream=stream, response_ids=response_ids)

    if is_async:

        async def run(server):
            async with openai_client(server, rec, is_async=True) as client:
                for interaction, exp in zip(rec["interactions"], expected):
                    body = dict(interaction["request"]["body"])
                    create = openai_endpoint(interaction)[4](client)
                    try:
                        result = await create(**body)
                    except openai.APIStatusError as error:
                        check(interaction, exp, body, error=error)
                        continue
                    items = [item async for item in result] if body.get("stream") else None
                    check(interaction, exp, body, result=result, items=items)

        with ReplayServer(rec) as server:
            spans.clear()
            asyncio.run(run(server))
            assert server.unmatched == [] and server.remaining() == []
    else:
        with ReplayServer(rec) as server:
            client = openai_client(server, rec, is_async=False)
            spans.clear()
            for interaction, exp in zip(rec["interactions"], expected):
                body = dict(interaction["request"]["body"])
                create = openai_endpoint(interaction)[4](client)
                try:
                    result = create(**body)
                except openai.APIStatusError as error:
                    check(interaction, exp, body, error=error)
                    continue
                items = list(result) if body.get("stream") else None
                check(interaction, exp, body, result=result, items=items)
            assert server.unmatched == [] and server.remaining() == []
    assert len(collected) == len(rec["interactions"])
    return collected


# ----------------------------------------------------------------------------------------------------------
# 1. OpenAI chat completions (non-streaming)
# ----------------------------------------------------------------------------------------------------------

OPENAI_CHAT_SYNC = [
    "openai/test_chat/test_chat",  # 2024 body without details, 2026 bodies with *_tokens_details
    "openai/test_chat/test_chat_with_messages_attributes",
    "openai/test_chat/test_chat_tool_calls",
    "openai/test_chat/test_chat_history_message_dict",
    "openai/test_chat_parse/test_parsed_completion",
    "openai/test_chat_response_format/test_chat_response_format",
    "openai/test_openai_metrics/test_chat_completion_metrics",
    "openai/test_functions/test_open_ai_function_calls",
    "openai/test_exceptions/test_exception_in_instrumentation_suppressed",
    "openai/test_vision/test_vision",  # call 2 is a recorded 400
    "openai/test_chat/test_chat_context_propagation",  # vLLM-like local server, no details
]

OPENAI_CHAT_ASYNC = [
    "openai/test_chat/test_with_asyncio_run",
    "openai/test_chat_parse/test_async_parsed_completion",
    "openai/test_chat_response_format/test_async_chat_response_format",
    "openai/test_chat/test_chat_async_context_propagation",
]


@pytest.mark.parametrize("name", OPENAI_CHAT_SYNC)
def test_openai_chat_sync(name, spans):
    replay_openai(name, spans)


@pytest.mark.parametrize("name", OPENAI_CHAT_ASYNC)
def test_openai_chat_async(name, spans):
    replay_openai(name, spans, is_async=True)


@pytest.mark.parametrize(
    "name, is_async",
    [
        ("openai/test_prompt_caching/test_openai_prompt_caching", False),
        ("openai/test_prompt_caching/test_openai_prompt_caching_async", True),
    ],
)
def test_openai_prompt_caching_cached_tokens_are_read_and_not_added(name, is_async, spans):
    """prompt_tokens includes cached_tokens: the span's input is prompt_tokens as is, cache_read only when > 0."""
    spans_ = replay_openai(name, spans, is_async=is_async)
    usages = [e["usage"] for e in expected_usage(name)]
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usages]
    assert cached[1] == 1024 and cached.count(0) == 3  # the recording does exercise a cache hit
    for span, usage in zip(spans_, usages):
        assert span.attributes[names.INPUT_TOKENS] == usage["prompt_tokens"]
        if usage["prompt_tokens_details"]["cached_tokens"]:
            assert span.attributes[names.CACHE_READ_TOKENS] == 1024
        else:
            assert names.CACHE_READ_TOKENS not in span.attributes
        assert names.CACHE_WRITE_TOKENS not in span.attributes


def test_openai_reasoning_tokens(spans):
    name = "openai/test_chat/test_chat_reasoning"
    spans_ = replay_openai(name, spans)
    reasoning = [e["usage"]["completion_tokens_details"]["reasoning_tokens"] for e in expected_usage(name)]
    assert all(r > 0 for r in reasoning)
    assert [s.attributes[names.REASONING_TOKENS] for s in spans_] == reasoning


def test_openai_service_tier(spans):
    name = "openai/test_chat/test_chat_with_service_tier"
    spans_ = replay_openai(name, spans)
    for span, interaction in zip(spans_, load(name)["interactions"]):
        assert interaction["request"]["body"]["service_tier"] == "priority"
        assert span.attributes[names.SERVICE_TIER] == json.loads(interaction["response"]["body"])["service_tier"]
    # only call 0 reports reasoning tokens > 0; the others must not carry the attribute at all
    assert [names.REASONING_TOKENS in s.attributes for s in spans_] == [True, False, False]


# ----------------------------------------------------------------------------------------------------------
# Azure OpenAI
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "openai/test_azure/test_chat",
        "openai/test_azure/test_chat_content_filtering",
        "openai/test_azure/test_prompt_content_filtering",  # call 0: 200 with an error body, no usage
        "openai/test_embeddings/test_azure_openai_embeddings",  # calls 2-3 are 401
    ],
)
def test_azure_openai(name, spans):
    spans_ = replay_openai(name, spans)
    assert {s.attributes[names.PROVIDER] for s in spans_} == {"azure.ai.openai"}


def test_azure_recorded_404_is_an_error_span(spans):
    spans_ = replay_openai("openai/test_azure/test_chat_reasoning", spans)
    assert [s.status.status_code for s in spans_] == [StatusCode.UNSET] + [StatusCode.ERROR] * 3
    assert [s.attributes.get(names.ERROR_TYPE) for s in spans_] == [None] + ["NotFoundError"] * 3
    assert spans_[0].attributes[names.REASONING_TOKENS] == 192


@pytest.mark.parametrize("name, is_async", [
    ("openai/test_azure/test_chat_streaming", False),
    ("openai/test_azure/test_chat_async_streaming", True),
])
def test_azure_streaming(name, is_async, spans):
    """Azure streams carry no usage (usage_missing); their first chunk (prompt_filter_results) has model "" and
    id "": the span has the completion's."""
    spans_ = replay_openai(name, spans, is_async=is_async, response_ids=True)
    assert {s.attributes[names.PROVIDER] for s in spans_} == {"azure.ai.openai"}
    assert all(s.attributes[names.USAGE_MISSING] is True for s in spans_)
    for span, exp in zip(spans_, expected_usage(name)):
        assert exp["model"] and exp["id"]
        assert span.attributes[names.RESPONSE_MODEL] == exp["model"]
        assert span.attributes[names.RESPONSE_ID] == exp["id"]


# ----------------------------------------------------------------------------------------------------------
# OpenAI streaming chat / completions
# ----------------------------------------------------------------------------------------------------------

OPENAI_STREAMS_SYNC = [
    "openai/test_streaming_with_api_usage/test_streaming_with_api_usage_capture",  # DeepSeek /beta, usage
    "openai/test_streaming_with_api_usage/test_streaming_with_api_usage_and_events",
    "openai/test_openai_metrics/test_chat_streaming_metrics",  # DeepSeek /v1, usage
    "openai/test_chat/test_chat_tools_streaming",  # no usage
    "openai/test_openai_metrics/test_chat_completion_metrics_stream",  # no usage
    "openai/test_functions/test_open_ai_function_calls_tools_streaming",
    "openai/test_chat/test_chat_streaming_memory_leak_prevention",
    "openai/test_completions/test_completion_streaming",  # legacy completions stream, no usage
    "openai/test_finish_reasons/TestChatCompletionsFinishReasons.test_chat_streaming_sets_top_level_finish_reasons",
]

OPENAI_STREAMS_ASYNC = [
    "openai/test_chat/test_chat_tools_async_streaming",
    "openai/test_completions/test_async_completion_streaming",
]


@pytest.mark.parametrize("name", OPENAI_STREAMS_SYNC)
def test_openai_streaming_sync(name, spans, caplog):
    replay_openai(name, spans)
    assert ended_twice(caplog) == []


@pytest.mark.parametrize("name", OPENAI_STREAMS_ASYNC)
def test_openai_streaming_async(name, spans, caplog):
    replay_openai(name, spans, is_async=True)
    assert ended_twice(caplog) == []


def test_openai_stream_with_usage_carries_it(spans):
    name = "openai/test_chat/test_chat_streaming"
    (span,) = replay_openai(name, spans)
    assert (span.attributes[names.INPUT_TOKENS], span.attributes[names.OUTPUT_TOKENS]) == (10, 50)
    assert names.USAGE_MISSING not in span.attributes


def test_openai_stream_without_usage_is_marked(spans):
    name = "openai/test_chat/test_chat_async_streaming"
    assert {e["usage"] is None for e in expected_usage(name)} == {True}
    for span in replay_openai(name, spans, is_async=True):
        assert span.attributes[names.USAGE_MISSING] is True
        assert span.attributes[names.USAGE_ESTIMATED] is True  # tokens estimated from the text, flagged
        assert "did not ask" in span.attributes[names.USAGE_NOTE]


def test_openai_stream_span_ends_only_when_exhausted(spans):
    """The span is open while the application reads the stream, and ends with the last event."""
    name = "openai/test_chat/test_chat_streaming"
    rec = load(name)
    with ReplayServer(rec) as server:
        client = openai_client(server, rec, is_async=False)
        stream = client.chat.completions.create(**rec["interactions"][0]["request"]["body"])
        iterator = iter(stream)
        first = next(iterator)
        assert type(first) is ChatCompletionChunk
        assert spans.get_finished_spans() == ()
        rest = list(iterator)
        assert rest
        span = one_span(spans)
        assert span.attributes[names.INPUT_TOKENS] == 10


@pytest.mark.parametrize("is_async", [False, True])
def test_openai_stream_as_context_manager(is_async, spans, caplog, collect):
    name = "openai/test_chat/test_chat_streaming"
    rec = load(name)
    (exp,) = expected_usage(rec)
    body = rec["interactions"][0]["request"]["body"]
    with ReplayServer(rec) as server:
        if is_async:

            async def run():
                async with openai_client(server, rec, is_async=True) as client:
                    async with await client.chat.completions.create(**body) as stream:
                        assert type(stream) is openai.AsyncStream
                        return [c async for c in stream]

            chunks = asyncio.run(run())
        else:
            client = openai_client(server, rec, is_async=False)
            with client.chat.completions.create(**body) as stream:
                assert type(stream) is openai.Stream
                chunks = list(stream)
    assert chunks[-1].usage.prompt_tokens == 10
    span = one_span(spans)
    check_success(span, exp, "openai", stream=True)
    collect()
    assert len(spans.get_finished_spans()) == 1
    assert ended_twice(caplog) == []


# -- partial consumption, never consumed, exception in the consumer: exactly one span each ----------------


def test_openai_stream_break_early_gives_exactly_one_span(spans, caplog, collect):
    name = "openai/test_chat/test_chat_streaming_partial_consumption"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        client = openai_client(server, rec, is_async=False)
        for interaction, exp in zip(rec["interactions"], expected):
            spans.clear()
            stream = client.chat.completions.create(**interaction["request"]["body"])
            for chunk in stream:
                assert type(chunk) is ChatCompletionChunk
                break
            stream.close()
            del stream, chunk
            collect()
            span = one_span(spans)
            check_identity(span, operation="chat", provider="openai", request_model="gpt-3.5-turbo")
            check_success(span, exp, "openai", stream=True)  # usage_missing: the stream never got its end
            collect()
            assert len(spans.get_finished_spans()) == 1
        assert server.unmatched == []
    assert ended_twice(caplog) == []


def test_openai_stream_break_early_async_gives_exactly_one_span(spans, caplog, collect):
    name = "openai/test_chat/test_chat_async_streaming"
    rec = load(name)

    async def run(server):
        async with openai_client(server, rec, is_async=True) as client:
            for interaction in rec["interactions"]:
                stream = await client.chat.completions.create(**interaction["request"]["body"])
                async for _ in stream:
                    break
                await stream.close()

    with ReplayServer(rec) as server:
        asyncio.run(run(server))
    collect()
    finished = spans.get_finished_spans()
    assert len(finished) == len(rec["interactions"])
    for span in finished:
        assert span.attributes[names.USAGE_MISSING] is True
        assert span.status.status_code is StatusCode.UNSET
    assert ended_twice(caplog) == []


def test_openai_stream_never_consumed_gives_exactly_one_span(spans, caplog, collect):
    name = "openai/test_chat/test_chat_streaming_not_consumed"
    rec = load(name)
    with ReplayServer(rec) as server:
        client = openai_client(server, rec, is_async=False)
        for interaction in rec["interactions"]:
            spans.clear()
            stream = client.chat.completions.create(**interaction["request"]["body"])
            assert type(stream) is openai.Stream
            del stream
            collect()
            span = one_span(spans)
            assert span.attributes[names.USAGE_MISSING] is True
            assert span.status.status_code is StatusCode.UNSET
    assert ended_twice(caplog) == []


def test_openai_stream_exception_in_consumer_gives_exactly_one_span(spans, caplog, collect):
    name = "openai/test_chat/test_chat_streaming_exception_during_consumption"
    rec = load(name)
    with ReplayServer(rec) as server:
        client = openai_client(server, rec, is_async=False)
        for interaction in rec["interactions"]:
            spans.clear()

            def consume():
                with client.chat.completions.create(**interaction["request"]["body"]) as stream:
                    for _ in stream:
                        raise KeyError("the application fails while reading")

            with pytest.raises(KeyError, match="the application fails"):
                consume()
            collect()
            span = one_span(spans)
            assert span.name == "chat gpt-3.5-turbo"
            collect()
            assert len(spans.get_finished_spans()) == 1
    assert ended_twice(caplog) == []


@pytest.mark.parametrize("how", ["close", "with"])
def test_openai_stream_close_ends_the_span(how, spans, caplog, collect):
    """close() / leaving `with stream:` is the application being done with the call: the span ends then, once,
    although the stream object is still referenced (openai.Stream sits in a reference cycle: no refcount drop)."""
    name = "openai/test_chat/test_chat_streaming_partial_consumption"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        client = openai_client(server, rec, is_async=False)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # no collection may end the span behind our back
        try:
            body = rec["interactions"][0]["request"]["body"]
            if how == "with":
                with client.chat.completions.create(**body) as stream:
                    for _ in stream:
                        break
                    assert spans.get_finished_spans() == ()  # still reading: still open
            else:
                stream = client.chat.completions.create(**body)
                next(stream)
                assert spans.get_finished_spans() == ()
                stream.close()
            assert stream.response.is_closed
            span = one_span(spans)
            check_success(span, expected[0], "openai", stream=True)  # partially read: usage_missing
            stream.close()  # again: nothing more
            del stream
        finally:
            if gc_was_enabled:
                gc.enable()
        collect()
        assert len(spans.get_finished_spans()) == 1
    assert ended_twice(caplog) == []


def test_openai_async_stream_close_ends_the_span(spans, caplog, collect):
    name = "openai/test_chat/test_chat_async_streaming"
    rec = load(name)

    async def run(server):
        async with openai_client(server, rec, is_async=True) as client:
            stream = await client.chat.completions.create(**rec["interactions"][0]["request"]["body"])
            await stream.__anext__()
            assert spans.get_finished_spans() == ()
            await stream.close()
            return len(spans.get_finished_spans())

    with ReplayServer(rec) as server:
        assert asyncio.run(run(server)) == 1
    collect()
    span = one_span(spans)
    assert span.attributes[names.USAGE_MISSING] is True
    assert ended_twice(caplog) == []


# ----------------------------------------------------------------------------------------------------------
# OpenAI Responses API
# ----------------------------------------------------------------------------------------------------------

RESPONSES_SYNC = [
    "openai/test_responses/test_responses",
    "openai/test_responses/test_responses_reasoning_dict_issue",
    "openai/test_responses/test_responses_with_service_tier",
    "openai/test_responses/test_responses_with_input_history",
    "openai/test_responses/test_responses_with_request_params",
    "openai/test_responses/test_responses_tool_calls",
    "openai/test_finish_reasons/TestResponsesAPIFinishReasons.test_responses_api_stop_finish_reason",
    # streams: usage in response.completed
    "openai/test_responses/test_responses_streaming",
    "openai/test_responses/test_responses_streaming_with_content",
    "openai/test_responses/test_responses_streaming_with_context_manager",
    "openai/test_responses/test_responses_streaming_with_parent_span",
]

RESPONSES_ASYNC = [
    "openai/test_responses/test_responses_parse_async",
    "openai/test_responses/test_responses_streaming_async",
    "openai/test_responses/test_responses_streaming_async_with_context_manager",
]


@pytest.mark.parametrize("name", RESPONSES_SYNC)
def test_openai_responses_sync(name, spans):
    replay_openai(name, spans)


@pytest.mark.parametrize("name", RESPONSES_ASYNC)
def test_openai_responses_async(name, spans):
    replay_openai(name, spans, is_async=True)


def test_openai_responses_reasoning_tokens(spans):
    name = "openai/test_responses/test_responses_reasoning"
    spans_ = replay_openai(name, spans)
    reasoning = [e["usage"]["output_tokens_details"]["reasoning_tokens"] for e in expected_usage(name)]
    assert all(r > 0 for r in reasoning)
    assert [s.attributes[names.REASONING_TOKENS] for s in spans_] == reasoning
    # output_tokens includes reasoning: copied as is, never added to
    assert [s.attributes[names.OUTPUT_TOKENS] for s in spans_] == [
        e["usage"]["output_tokens"] for e in expected_usage(name)
    ]


def test_openai_responses_stream_helper(spans):
    """`client.responses.stream(...)` (the SDK's helper around the same request) gives the same span."""
    name = "openai/test_responses/test_responses_streaming_with_context_manager"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        client = openai_client(server, rec, is_async=False)
        for interaction, exp in zip(rec["interactions"], expected):
            spans.clear()
            body = dict(interaction["request"]["body"])
            body.pop("stream")
            with client.responses.stream(**body) as stream:
                final = stream.get_final_response()
            assert final.usage.input_tokens == exp["usage"]["input_tokens"]
            span = one_span(spans)
            check_identity(span, operation="chat", provider="openai", request_model=body["model"])
            check_success(span, exp, "responses", stream=True)


# ----------------------------------------------------------------------------------------------------------
# embeddings, legacy completions
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, is_async",
    [
        ("openai/test_embeddings/test_embeddings", False),
        ("openai/test_embeddings/test_embeddings_context_propagation", False),
        ("openai/test_openai_metrics/test_embeddings_metrics", False),
        ("openai/test_embeddings/test_async_embeddings_context_propagation", True),
        ("openai/test_completions/test_completion", False),
        ("openai/test_completions/test_completion_langchain_style", False),
        ("openai/test_completions/test_completion_with_messages_attributes", False),
        ("openai/test_completions/test_async_completion", True),
        ("openai/test_finish_reasons/TestCompletionsFinishReasons.test_completions_sets_top_level_finish_reasons",
         False),
    ],
)
def test_openai_embeddings_and_completions(name, is_async, spans):
    spans_ = replay_openai(name, spans, is_async=is_async)
    operation = "embeddings" if "embeddings" in name else "text_completion"
    assert {s.attributes[names.OPERATION] for s in spans_} == {operation}
    if operation == "embeddings":
        for span, exp in zip(spans_, expected_usage(name)):  # embeddings report no completion tokens (vLLM: 0)
            assert span.attributes.get(names.OUTPUT_TOKENS) == exp["usage"].get("completion_tokens")
        assert all(s.attributes[names.INPUT_TOKENS] > 0 for s in spans_)


# ----------------------------------------------------------------------------------------------------------
# 2. Anthropic messages
# ----------------------------------------------------------------------------------------------------------


def anthropic_client(server: ReplayServer, *, is_async: bool, **kwargs):
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return cls(base_url=server.anthropic_base_url, api_key="test", max_retries=0, **kwargs)


def replay_anthropic(name: str, spans, *, is_async: bool = False, mode: str = "create", **client_kwargs) -> list:
    """Replays every interaction of `name` with `messages.create` (mode "create") or the `messages.stream()`
    helper (mode "final_message" / "text_stream"); checks the one span of each call."""
    rec = load(name)
    expected = expected_usage(rec)
    collected = []

    def check(body, exp, result, items):
        span = one_span(spans)
        spans.clear()
        collected.append(span)
        check_identity(span, operation="chat", provider="anthropic", request_model=body["model"])
        stream = bool(body.get("stream")) or mode != "create"
        assert exp["stream"] is stream
        if mode == "create":
            if stream:
                assert type(result) is (anthropic.AsyncStream if is_async else anthropic.Stream)
                assert items and items[-1].type == "message_stop"
            else:
                assert type(result) is Message
        elif mode == "final_message":  # what the helper returns without instrumentation
            assert type(result) is (ParsedBetaMessage if beta else anthropic.types.ParsedMessage)
            assert result.usage.output_tokens == exp["usage"]["output_tokens"]
        else:
            assert isinstance(result, str) and result
        check_success(span, exp, "anthropic", stream=stream)

    def stream_body(interaction):
        body = dict(interaction["request"]["body"])
        if mode != "create":
            body.pop("stream", None)
        return body

    beta = "beta" in name

    def messages(client):
        return client.beta.messages if beta else client.messages

    if is_async:

        async def run(server):
            async with anthropic_client(server, is_async=True, **client_kwargs) as client:
                for interaction, exp in zip(rec["interactions"], expected):
                    body = stream_body(interaction)
                    if mode == "create":
                        result = await messages(client).create(**body)
                        items = [e async for e in result] if body.get("stream") else None
                    else:
                        async with messages(client).stream(**body) as stream:
                            if mode == "final_message":
                                result = await stream.get_final_message()
                            else:
                                result = "".join([t async for t in stream.text_stream])
                        items = None
                    check(interaction["request"]["body"], exp, result, items)

        with ReplayServer(rec) as server:
            spans.clear()
            asyncio.run(run(server))
            assert server.unmatched == [] and server.remaining() == []
    else:
        with ReplayServer(rec) as server:
            client = anthropic_client(server, is_async=False, **client_kwargs)
            spans.clear()
            for interaction, exp in zip(rec["interactions"], expected):
                body = stream_body(interaction)
                if mode == "create":
                    result = messages(client).create(**body)
                    items = list(result) if body.get("stream") else None
                else:
                    with messages(client).stream(**body) as stream:
                        if mode == "final_message":
                            result = stream.get_final_message()
                        else:
                            result = "".join(stream.text_stream)
                    items = None
                check(interaction["request"]["body"], exp, result, items)
            assert server.unmatched == [] and server.remaining() == []
    assert len(collected) == len(rec["interactions"])
    return collected


ANTHROPIC_CREATE = [
    ("anthropic/test_thinking/test_anthropic_thinking_legacy", False),
    ("anthropic/test_thinking/test_async_anthropic_thinking_legacy", True),
    ("anthropic/test_thinking/test_anthropic_thinking_streaming_legacy", False),
    ("anthropic/test_thinking/test_async_anthropic_thinking_streaming_legacy", True),
    ("anthropic/test_messages/test_anthropic_message_create_legacy", False),
    ("anthropic/test_messages/test_async_anthropic_message_create_legacy", True),
    ("anthropic/test_messages/test_anthropic_message_streaming_legacy", False),
    ("anthropic/test_messages/test_async_anthropic_message_streaming_legacy", True),
    ("anthropic/test_messages/test_anthropic_multi_modal_legacy", False),
    ("anthropic/test_messages/test_anthropic_async_multi_modal_legacy", True),
    ("anthropic/test_messages/test_anthropic_image_with_history", False),  # usage.service_tier
    ("anthropic/test_messages/test_anthropic_tools_legacy", False),
    ("anthropic/test_messages/test_anthropic_tools_history_legacy", False),
    ("anthropic/test_messages/test_anthropic_tools_streaming_legacy", False),
    ("anthropic/test_messages/test_with_asyncio_run_legacy", True),
    # message_delta repeats input/cache fields; message_start has cache_creation {5m, 1h} = 0
    ("anthropic/test_messages/test_anthropic_streaming_helper_methods_legacy", False),
]


@pytest.mark.parametrize("name, is_async", ANTHROPIC_CREATE)
def test_anthropic_messages(name, is_async, spans, caplog):
    replay_anthropic(name, spans, is_async=is_async)
    assert ended_twice(caplog) == []


@pytest.mark.parametrize(
    "name, is_async",
    [
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy", False),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_async_legacy", True),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy", False),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_async_stream_legacy", True),
    ],
)
def test_anthropic_cache_tokens_are_added_to_input(name, is_async, spans):
    """Anthropic's input_tokens excludes cache reads and writes: span input = input + read + write."""
    spans_ = replay_anthropic(name, spans, is_async=is_async)
    usages = [e["usage"] for e in expected_usage(name)]
    write, read = usages[0]["cache_creation_input_tokens"], usages[1]["cache_read_input_tokens"]
    assert write > 1000 and read > 1000 and usages[0]["cache_read_input_tokens"] == 0
    first, second = spans_
    assert first.attributes[names.CACHE_WRITE_TOKENS] == write
    assert names.CACHE_READ_TOKENS not in first.attributes
    assert first.attributes[names.INPUT_TOKENS] == usages[0]["input_tokens"] + write
    assert second.attributes[names.CACHE_READ_TOKENS] == read
    assert names.CACHE_WRITE_TOKENS not in second.attributes
    assert second.attributes[names.INPUT_TOKENS] == usages[1]["input_tokens"] + read
    for span in spans_:
        assert span.attributes[names.INPUT_TOKENS] > 1000


@pytest.mark.parametrize(
    "name, is_async, mode",
    [
        ("anthropic/test_messages/test_anthropic_message_stream_manager_legacy", False, "final_message"),
        ("anthropic/test_messages/test_async_anthropic_message_stream_manager_legacy", True, "final_message"),
        ("anthropic/test_messages/test_async_anthropic_beta_message_stream_manager_legacy", True, "final_message"),
        ("anthropic/test_messages/test_anthropic_sync_streaming_helper_methods_legacy", False, "final_message"),
        ("anthropic/test_messages/test_anthropic_streaming_helper_methods_legacy", False, "final_message"),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy", False, "final_message"),
        ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_async_stream_legacy", True, "final_message"),
        ("anthropic/test_thinking/test_anthropic_thinking_streaming_legacy", False, "final_message"),
        ("anthropic/test_messages/test_anthropic_text_stream_helper_method_legacy", False, "text_stream"),
        ("anthropic/test_messages/test_anthropic_message_stream_manager_legacy", False, "text_stream"),
        ("anthropic/test_messages/test_async_anthropic_message_stream_manager_legacy", True, "text_stream"),
    ],
)
def test_anthropic_stream_helper(name, is_async, mode, spans, caplog):
    """`messages.stream()`: get_final_message() and text_stream still work, and the span has the stream's usage."""
    replay_anthropic(name, spans, is_async=is_async, mode=mode)
    assert ended_twice(caplog) == []


@pytest.mark.parametrize("is_async", [False, True])
def test_anthropic_stream_as_context_manager(is_async, spans):
    name = "anthropic/test_messages/test_anthropic_message_streaming_legacy"
    rec = load(name)
    (exp,) = expected_usage(rec)
    body = rec["interactions"][0]["request"]["body"]
    with ReplayServer(rec) as server:
        if is_async:

            async def run():
                async with anthropic_client(server, is_async=True) as client:
                    async with await client.messages.create(**body) as stream:
                        return [e async for e in stream]

            events = asyncio.run(run())
        else:
            with anthropic_client(server, is_async=False).messages.create(**body) as stream:
                events = list(stream)
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    check_success(one_span(spans), exp, "anthropic", stream=True)


def test_anthropic_stream_break_early_gives_exactly_one_span(spans, caplog, collect):
    name = "anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        client = anthropic_client(server, is_async=False)
        spans.clear()
        stream = client.messages.create(**rec["interactions"][0]["request"]["body"])
        for event in stream:
            if event.type == "message_start":
                break
        stream.close()
        del stream, event
        collect()
        span = one_span(spans)
        # the input side of the usage arrived with message_start: those tokens are billed, the span keeps them
        usage = expected[0]["usage"]
        assert span.attributes[names.CACHE_WRITE_TOKENS] == usage["cache_creation_input_tokens"]
        assert span.attributes[names.INPUT_TOKENS] == usage["input_tokens"] + usage["cache_creation_input_tokens"]
        assert span.status.status_code is StatusCode.UNSET
        collect()
        assert len(spans.get_finished_spans()) == 1
    assert ended_twice(caplog) == []


@pytest.mark.parametrize("how", ["close", "with", "helper"])
def test_anthropic_stream_close_ends_the_span(how, spans, caplog, collect):
    """close(), leaving `with stream:`, or leaving the `messages.stream()` helper unread: the span ends then, once."""
    name = "anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy"
    rec = load(name)
    expected = expected_usage(rec)
    with ReplayServer(rec) as server:
        client = anthropic_client(server, is_async=False)
        body = dict(rec["interactions"][0]["request"]["body"])
        if how == "helper":
            body.pop("stream")
            with client.messages.stream(**body) as stream:
                next(iter(stream))  # message_start only
                assert spans.get_finished_spans() == ()
        elif how == "with":
            with client.messages.create(**body) as stream:
                next(iter(stream))
                assert spans.get_finished_spans() == ()
        else:
            stream = client.messages.create(**body)
            next(stream)
            assert spans.get_finished_spans() == ()
            stream.close()
        span = one_span(spans)  # `stream` is still referenced
        usage = expected[0]["usage"]  # message_start carried the input side: kept
        assert span.attributes[names.INPUT_TOKENS] == usage["input_tokens"] + usage["cache_creation_input_tokens"]
        assert span.attributes[names.CACHE_WRITE_TOKENS] == usage["cache_creation_input_tokens"]
        assert span.status.status_code is StatusCode.UNSET
        stream.close()
        del stream
        collect()
        assert len(spans.get_finished_spans()) == 1
    assert ended_twice(caplog) == []


# ----------------------------------------------------------------------------------------------------------
# the logs: no span ended twice anywhere in this module's replays
# ----------------------------------------------------------------------------------------------------------


def test_logging_of_double_end_is_observable(tracing, caplog):
    """ended_twice() relies on the SDK's warning: make sure it is emitted and captured here."""
    provider, _ = tracing
    caplog.set_level(logging.WARNING)
    span = provider.get_tracer("probe").start_span("probe")
    span.end()
    span.end()
    assert ended_twice(caplog)
