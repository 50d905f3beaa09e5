"""The private names of OpenTelemetry, httpx and the SDKs that `otel_llmcost.instrumentation` relies on, where no
public API does the job. Each test here fails, naming the name, when an upgrade moves one; each has a runtime
fallback, tested here too, so that the app keeps working (with less detail) until we follow."""

from __future__ import annotations

import asyncio
import importlib

import pytest
from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_llmcost import names
from otel_llmcost.instrumentation import core
from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
from otel_llmcost.instrumentation.google_genai import GoogleGenAIInstrumentor
from otel_llmcost.instrumentation.mistral import MistralInstrumentor
from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

try:
    from .test_instr_support import anth, oai, sandbox  # noqa: F401  (fixtures)
except ImportError:
    from test_instr_support import anth, oai, sandbox  # noqa: F401

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me a story"}]}
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "a story"}]}


def _targets():
    for instrumentor in (OpenAIInstrumentor, AnthropicInstrumentor, GoogleGenAIInstrumentor, MistralInstrumentor):
        for kind in ("sync_requests", "async_requests", "closes", "parses"):
            for target in getattr(instrumentor, kind):
                yield f"{instrumentor.__name__}.{kind}", target
    for module, name, _ in GoogleGenAIInstrumentor.tool_invocations:
        yield "GoogleGenAIInstrumentor.tool_invocations", (module, name)
    yield "MistralInstrumentor.native_span", MistralInstrumentor.native_span
    yield "AnthropicInstrumentor (native span)", ("anthropic._base_client", "start_api_call_span")


@pytest.mark.parametrize("where, target", list(_targets()), ids=lambda v: ".".join(v) if isinstance(v, tuple) else v)
def test_every_method_we_wrap_is_in_the_installed_sdk(where, target):
    """The SDKs route every call through methods of their private modules; an instrumentor skips a target an
    older SDK lacks, so a renamed one would silently trace nothing."""
    module, name = target
    owner = importlib.import_module(module)
    for part in name.split("."):
        assert hasattr(owner, part), f"{where}: {module}.{name} is gone from the installed SDK"
        owner = getattr(owner, part)
    assert callable(owner)


# -- OpenTelemetry ------------------------------------------------------------------------------------------


def test_the_suppression_keys_are_read_as_the_public_function_reads_them():
    assert core._enabled is not core._enabled_public, "opentelemetry-instrumentation's suppression keys moved"
    assert core._enabled(context.get_current()) is True is is_instrumentation_enabled()
    with suppress_instrumentation():
        ctx = context.get_current()
        assert core._enabled(ctx) is False is core._enabled_public(ctx)


def test_the_call_context_is_the_public_one():
    assert core._call_context is not core._call_context_public, "opentelemetry-api's span key moved"
    span = TracerProvider().get_tracer("t").start_span("s")
    ctx = context.get_current()
    for made in (core._call_context(ctx, span), core._call_context_public(ctx, span)):
        assert trace.get_current_span(made) is span
        assert context.get_value(core.CALL_IN_PROGRESS_KEY, made) is True
    assert dict(core._call_context(ctx, span)) == dict(core._call_context_public(ctx, span))


# -- Stainless streams: `_iterator`, `_raw_stream` ---------------------------------------------------------


def test_openai_and_anthropic_streams_carry_our_reader_in_their_iterator(oai, anth, spans):  # noqa: F811
    import anthropic
    import openai

    stream = oai.chat.completions.create(**CHAT, stream=True)
    assert type(stream) is openai.Stream and isinstance(stream._iterator, core._Events), \
        "openai.Stream no longer iterates `_iterator`: streams are read through the proxy"
    list(stream)
    stream = anth.messages.create(**MESSAGE, stream=True)
    assert type(stream) is anthropic.Stream and isinstance(stream._iterator, core._Events)
    list(stream)


def test_stream_helpers_keep_their_raw_stream(oai, anth, spans):  # noqa: F811
    with oai.chat.completions.stream(**CHAT) as helper:
        assert isinstance(core._stainless_events_in(helper), core._Events), "ChatCompletionStream._raw_stream moved"
    with anth.messages.stream(**MESSAGE) as helper:
        assert isinstance(core._stainless_events_in(helper), core._Events), "MessageStream._raw_stream moved"
    assert len(spans.get_finished_spans()) == 2


class _NoIterator:
    """A stream of an SDK version without `_iterator`: iterates its own events."""

    def __init__(self, events):
        self.events = iter(events)
        self.closed = False
        self.response = "the response"

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.events)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.closed = True


class _AsyncNoIterator:
    def __init__(self, events):
        self.events = iter(events)
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return next(self.events)
        except StopIteration:
            raise StopAsyncIteration from None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        self.closed = True


class _Last(core.StreamReader):
    def __init__(self):
        self.last = None

    def read(self, event):
        self.last = event

    def attributes(self):
        return {names.OUTPUT_TOKENS: self.last or 0}


def _tracer():
    endpoint = core.Endpoint("chat", lambda result: {}, _Last)
    provider = core.Provider(
        describe=lambda wrapped, instance, args, kwargs: core.Described(endpoint, {}, "m", True),
        provider_name=lambda instance: "test", request_attributes=lambda body: {}, prefix=lambda body: [],
        stream_types=(_NoIterator,), async_stream_types=(_AsyncNoIterator,))
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return core.RequestTracer(tracer_provider.get_tracer("t"), provider), exporter


@pytest.mark.parametrize("way", ["exhausted", "close", "with"])
def test_a_stream_without_iterator_is_read_through_a_proxy(way):
    request_tracer, exporter = _tracer()
    stream = request_tracer.sync_wrapper(lambda: _NoIterator([1, 2, 3]), None, (), {})
    assert isinstance(stream, _NoIterator) and stream.response == "the response"
    if way == "exhausted":
        assert list(stream) == [1, 2, 3]
        expected = 3
    elif way == "close":
        assert next(stream) == 1
        stream.close()
        assert stream.closed
        expected = 1
    else:
        with stream as entered:
            assert next(entered) == 1
        assert stream.closed
        expected = 1
    (span,) = exporter.get_finished_spans()
    assert span.attributes[names.OUTPUT_TOKENS] == expected


def test_an_async_stream_without_iterator_is_read_through_a_proxy():
    request_tracer, exporter = _tracer()

    async def run():
        async def call():
            return _AsyncNoIterator([1, 2])

        stream = await request_tracer.async_wrapper(call, None, (), {})
        assert isinstance(stream, _AsyncNoIterator)
        async with stream as entered:
            return [event async for event in entered], stream.closed

    events, _ = asyncio.run(run())
    assert events == [1, 2]
    (span,) = exporter.get_finished_spans()
    assert span.attributes[names.OUTPUT_TOKENS] == 2


# -- client base URLs, google-genai's API client -----------------------------------------------------------


def test_stainless_clients_keep_their_base_url(oai, anth):  # noqa: F811
    """Read for speed (openai 3.x's public getter imports a module on every read); the getter is the fallback."""
    for client in (oai, anth):
        assert getattr(client, "_base_url", None) == client.base_url, f"{type(client).__name__}._base_url moved"


def test_google_models_keep_their_api_client():
    from google import genai

    client = genai.Client(api_key="x", http_options={"base_url": "http://127.0.0.1:9/"})
    api_client = getattr(client.models, "_api_client", None)
    assert api_client is not None, "google-genai Models._api_client moved: provider and server are not read"
    assert getattr(api_client._http_options, "base_url", None) == "http://127.0.0.1:9/"


def test_httpx_response_streams_keep_their_transport_stream():
    """The raw-HTTP hooks serve a JSON body read once back through `_httpcore_stream`."""
    import httpx2
    from httpx2._transports.default import ResponseStream

    assert hasattr(ResponseStream(iter(())), "_httpcore_stream"), "httpx2's ResponseStream._httpcore_stream moved"
    assert httpx2  # (the transport the SDKs use)
