"""Streams end their span exactly once: exhausted, closed (the SDK stream, its helpers, `with`), broken off,
failed, never iterated, garbage-collected; `include_usage` opt-in; no leak over many streams.

Driven through the real SDKs against `otel_llmcost.sandbox.Sandbox` on 127.0.0.1 (and, for the leak test,
through the shared core with a plain-generator SDK call, as google-genai makes them).
"""

from __future__ import annotations

import asyncio
import gc
import logging

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from otel_llmcost import names
from otel_llmcost.instrumentation import core

try:
    from .test_instr_support import anth, aoai, fail_after_first, oai, openai_instrumented, sandbox  # noqa: F401
except ImportError:
    from test_instr_support import anth, aoai, fail_after_first, oai, openai_instrumented, sandbox  # noqa: F401

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me a story"}], "max_tokens": 40}
MESSAGE = {"model": "claude-3-5-haiku-20241022", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def no_double_end(caplog):
    caplog.set_level(logging.WARNING)
    yield
    assert [r for r in caplog.records if "Calling end() on an ended span" in r.getMessage()] == []


def finished(spans):
    return spans.get_finished_spans()


def test_stream_close_ends_the_span_at_once(oai, spans, no_double_end):
    gc.disable()  # the span must end on close(), not on a garbage collection
    try:
        stream = oai.chat.completions.create(**CHAT, stream=True)
        next(stream)
        assert finished(spans) == ()
        stream.close()
        (span,) = finished(spans)
        assert span.attributes[names.USAGE_MISSING] is True
        assert span.attributes[names.RESPONSE_MODEL] == "gpt-4o-mini"
        stream.close()
        del stream
    finally:
        gc.enable()
    gc.collect()
    assert len(finished(spans)) == 1


def test_with_block_ends_the_span_on_exit(oai, spans, no_double_end):
    gc.disable()
    try:
        with oai.chat.completions.create(**CHAT, stream=True) as stream:
            for _ in stream:
                break
        assert len(finished(spans)) == 1
        del stream
    finally:
        gc.enable()


def test_async_stream_close_ends_the_span(aoai, spans, no_double_end):
    async def run():
        stream = await aoai.chat.completions.create(**CHAT, stream=True)
        await stream.__anext__()
        assert finished(spans) == ()
        await stream.close()
        assert len(finished(spans)) == 1
        async with await aoai.chat.completions.create(**CHAT, stream=True) as stream:
            async for _ in stream:
                break
        assert len(finished(spans)) == 2

    gc.disable()
    try:
        asyncio.run(run())
    finally:
        gc.enable()


@pytest.mark.parametrize("helper", ["chat", "responses"])
def test_openai_stream_helpers_end_the_span_when_left_early(helper, oai, spans, no_double_end):
    gc.disable()
    try:
        if helper == "chat":
            manager = oai.chat.completions.stream(**CHAT)
        else:
            manager = oai.responses.stream(model="gpt-4o-mini", input="tell me a story", max_output_tokens=40)
        with manager as stream:
            for _ in stream:
                break
        (span,) = finished(spans)
        assert span.attributes[names.REQUEST_STREAM] is True
        del stream, manager
    finally:
        gc.enable()
    gc.collect()
    assert len(finished(spans)) == 1


def test_openai_chat_stream_helper_final_completion_has_the_usage(sandbox, spans, tracing):
    """The chat `.stream()` helper asks for usage itself (stream_options.include_usage): the span carries it."""
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)
    with client.chat.completions.stream(**CHAT, stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    (span,) = finished(spans)
    assert span.attributes[names.INPUT_TOKENS] == final.usage.prompt_tokens
    assert span.attributes[names.OUTPUT_TOKENS] == final.usage.completion_tokens
    assert names.USAGE_MISSING not in span.attributes


def test_anthropic_stream_manager_without_with_and_text_stream(anth, spans, no_double_end):
    manager = anth.messages.stream(**MESSAGE)
    stream = manager.__enter__()
    text = "".join(stream.text_stream)
    message = stream.get_final_message()
    manager.__exit__(None, None, None)
    assert text
    (span,) = finished(spans)
    usage = message.usage
    assert span.attributes[names.INPUT_TOKENS] == usage.input_tokens + (usage.cache_read_input_tokens or 0) + (
        usage.cache_creation_input_tokens or 0
    )
    assert span.attributes[names.OUTPUT_TOKENS] == usage.output_tokens


def test_anthropic_stream_close_early_keeps_the_input_usage(anth, spans, no_double_end):
    gc.disable()
    try:
        with anth.messages.stream(**MESSAGE) as stream:
            for _ in stream:
                break  # message_start was read: the input tokens are known and billed
        (span,) = finished(spans)
        assert span.attributes[names.INPUT_TOKENS] > 0
        del stream
    finally:
        gc.enable()


def test_stream_never_iterated_ends_when_dropped(oai, spans, no_double_end):
    stream = oai.chat.completions.create(**CHAT, stream=True)
    assert finished(spans) == ()
    del stream
    gc.collect()
    assert len(finished(spans)) == 1


class _Boom(Exception):
    pass


def test_exception_inside_the_sdk_stream_ends_the_span_as_an_error(oai, spans, no_double_end):
    """A failure of the SDK's own iterator (here: a decoding hook raising) reaches the app unchanged."""
    stream = oai.chat.completions.create(**CHAT, stream=True)
    fail_after_first(stream._iterator, _Boom("connection dropped"))
    with pytest.raises(_Boom):
        for _ in stream:
            pass
    (span,) = finished(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == "_Boom"
    stream.close()
    assert len(finished(spans)) == 1


@pytest.fixture
def include_usage(tracing):
    with openai_instrumented(tracing, include_usage=True):
        yield


def test_include_usage_from_the_environment(tracing, oai, spans, monkeypatch):
    """`true`: every server is asked, the local sandbox too; the app still sees no usage anywhere."""
    with openai_instrumented(tracing, monkeypatch, {"OTEL_LLMCOST_OPENAI_INCLUDE_USAGE": "true"}):
        chunks = list(oai.chat.completions.create(**CHAT, stream=True))
    assert all(chunk.choices and "usage" not in chunk.model_fields_set for chunk in chunks)
    (span,) = finished(spans)
    assert span.attributes[names.INPUT_TOKENS] > 0
    assert names.USAGE_MISSING not in span.attributes and names.USAGE_ESTIMATED not in span.attributes


def test_include_usage_opt_in_hides_the_usage_chunk(oai, spans, include_usage):
    chunks = list(oai.chat.completions.create(**CHAT, stream=True))
    assert all(chunk.choices for chunk in chunks)  # the extra usage chunk was swallowed
    assert all(chunk.usage is None and "usage" not in chunk.to_dict() for chunk in chunks)
    (span,) = finished(spans)
    assert span.attributes[names.INPUT_TOKENS] > 0 and span.attributes[names.OUTPUT_TOKENS] > 0
    assert names.USAGE_MISSING not in span.attributes


def test_include_usage_respects_an_explicit_false(oai, spans, include_usage):
    chunks = list(oai.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": False}))
    assert all(chunk.usage is None for chunk in chunks)
    (span,) = finished(spans)
    assert span.attributes[names.USAGE_MISSING] is True
    assert span.attributes[names.USAGE_ESTIMATED] is True


def test_include_usage_is_off_for_unknown_servers(oai, spans):
    """The sandbox on 127.0.0.1 is no server known to accept stream_options: it is not sent it, and the
    row is estimated from the text, flagged."""
    chunks = list(oai.chat.completions.create(**CHAT, stream=True))
    assert all(chunk.choices for chunk in chunks)
    (span,) = finished(spans)
    assert span.attributes[names.USAGE_MISSING] is True
    assert span.attributes[names.USAGE_ESTIMATED] is True
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert span.attributes[names.OUTPUT_TOKENS] == -(-len(text) // 4)
    assert span.attributes[names.INPUT_TOKENS] == -(-len("tell me a story") // 4)


# -- no leak ------------------------------------------------------------------------------------------------


class _Counting(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans):
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def _sdk_stream(n: int):
    """A streaming SDK call that returns a plain generator (as google-genai's does)."""
    yield from range(n)


def test_no_leak_over_100k_streams_through_the_core():
    """100k streams ended every way (exhausted, broken off, never iterated, failed): every span ends exactly
    once and nothing is left behind."""
    endpoint = core.Endpoint("chat", lambda result: {}, lambda: _LastEvent())
    provider = core.Provider(
        describe=lambda wrapped, instance, args, kwargs: core.Described(endpoint, {}, "m", True),
        provider_name=lambda instance: "test",
        request_attributes=lambda body: {},
        prefix=lambda body: [],
        stream_types=(type(_sdk_stream(0)),),
        async_stream_types=(),
    )
    exporter = _Counting()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    request_tracer = core.RequestTracer(tracer_provider.get_tracer("t"), provider)

    def call(n):
        return request_tracer.sync_wrapper(_sdk_stream, None, (n,), {})

    def round_(count):
        for i in range(count):
            way = i % 4
            stream = call(3)
            if way == 0:
                list(stream)
            elif way == 1:
                for _ in stream:
                    break
            elif way == 2:
                stream.close()
            else:
                next(stream)
                try:
                    stream.throw(_Boom())
                except _Boom:
                    pass
            del stream

    round_(10_000)
    gc.collect()
    before = len(gc.get_objects())
    round_(90_000)
    gc.collect()
    after = len(gc.get_objects())
    assert exporter.count == 100_000
    assert after - before < 1_000, f"{after - before} objects more after 90k streams"
    assert not [obj for obj in gc.get_objects() if isinstance(obj, core._Events)]


class _LastEvent(core.StreamReader):
    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = None

    def read(self, event):
        self.last = event

    def attributes(self):
        return {names.OUTPUT_TOKENS: self.last or 0}


def test_no_leak_over_many_real_openai_streams(oai, spans):
    """The real SDK path: streams left every way leave no `_Events` and no open span behind."""

    def round_(count):
        for i in range(count):
            stream = oai.chat.completions.create(**CHAT, stream=True)
            if i % 3 == 0:
                list(stream)
            elif i % 3 == 1:
                with stream:
                    next(stream)
            del stream

    round_(30)
    gc.collect()
    spans.clear()
    round_(150)
    gc.collect()
    assert len(finished(spans)) == 150
    assert not [obj for obj in gc.get_objects() if isinstance(obj, core._Events)]


# -- with_streaming_response: the body is read when the app parses it ---------------------------------------


def test_with_streaming_response_is_read_when_parsed(oai, spans, no_double_end):
    with oai.chat.completions.with_streaming_response.create(**CHAT) as response:
        assert finished(spans) == ()  # nothing read yet
        completion = response.parse()
    (span,) = finished(spans)
    assert span.attributes[names.INPUT_TOKENS] == completion.usage.prompt_tokens
    assert span.attributes[names.OUTPUT_TOKENS] == completion.usage.completion_tokens
    assert span.attributes[names.RESPONSE_ID] == completion.id


def test_with_streaming_response_of_a_stream(anth, spans, no_double_end):
    with anth.messages.with_streaming_response.create(**MESSAGE, stream=True) as response:
        stream = response.parse()
        assert type(stream) is anthropic.Stream
        events = list(stream)
    (span,) = finished(spans)
    (start,) = [e for e in events if e.type == "message_start"]
    assert span.attributes[names.RESPONSE_ID] == start.message.id
    assert span.attributes[names.OUTPUT_TOKENS] == [e for e in events if e.type == "message_delta"][-1].usage.output_tokens


def test_with_streaming_response_never_parsed_ends_when_dropped(oai, spans, no_double_end):
    with oai.chat.completions.with_streaming_response.create(**CHAT) as response:
        assert response.json()["object"] == "chat.completion"
    del response
    gc.collect()
    assert len(finished(spans)) == 1


# -- streams closed before their usage report: estimated from the text seen, flagged -------------------------


def test_anthropic_stream_closed_before_its_final_usage_is_estimated(anth, spans, no_double_end):
    stream = anth.messages.create(**MESSAGE, stream=True)
    start, text = None, ""
    for event in stream:
        if event.type == "message_start":
            start = event.message.usage
        elif event.type == "content_block_delta":
            text += event.delta.text
            if len(text) > 8:
                break
    stream.close()
    (span,) = finished(spans)
    assert span.attributes[names.USAGE_ESTIMATED] is True
    assert span.attributes[names.INPUT_TOKENS] == start.input_tokens + (start.cache_read_input_tokens or 0) + (
        start.cache_creation_input_tokens or 0)  # the input is the API's own count
    assert span.attributes[names.OUTPUT_TOKENS] == max(start.output_tokens, -(-len(text) // 4))
    assert "closed early" in span.attributes[names.USAGE_NOTE]


def test_responses_stream_closed_before_completion_is_estimated(oai, spans, no_double_end):
    stream = oai.responses.create(model="gpt-4o-mini", input="tell me a story", max_output_tokens=40, stream=True)
    text = ""
    for event in stream:
        if event.type == "response.output_text.delta":
            text += event.delta
            break
    stream.close()
    (span,) = finished(spans)
    assert span.attributes[names.USAGE_ESTIMATED] is True
    assert span.attributes[names.OUTPUT_TOKENS] == -(-len(text) // 4)
    assert span.attributes[names.INPUT_TOKENS] == -(-len("tell me a story") // 4)
