"""Fixtures shared by the `test_instr_*` modules (which import them); holds no tests itself."""

from __future__ import annotations

import contextlib
import json

import anthropic
import openai
import pytest

from otel_llmcost.instrumentation.openai import OpenAIInstrumentor
from otel_llmcost.sandbox import Sandbox

try:  # tests/ as a package, or (no __init__.py) tests/ on sys.path
    from . import replay
except ImportError:
    import replay


def fail_after_first(events, exc: BaseException) -> None:
    """Makes the SDK's iterator under our reader (`core._Events`) yield one event, then raise `exc`: a failure of
    the SDK's own stream (a connection dropped, a decoding hook raising), as the app would meet it."""
    inner = events.inner

    def failing():
        yield next(inner)
        raise exc

    events.inner = failing()


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def oai(sandbox):
    return openai.OpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)


@pytest.fixture
def aoai(sandbox):
    return openai.AsyncOpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)


@pytest.fixture
def anth(sandbox):
    return anthropic.Anthropic(base_url=sandbox.anthropic_base_url, api_key="x", max_retries=0)


@contextlib.contextmanager
def openai_instrumented(tracing, monkeypatch=None, env=None, **kwargs):
    """The OpenAI instrumentor re-made with `env` set and `kwargs` given (both are read at instrument time);
    the session's own instrumentation is put back afterwards."""
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    OpenAIInstrumentor().uninstrument()
    OpenAIInstrumentor().instrument(tracer_provider=tracing[0], **kwargs)
    try:
        yield
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()
        OpenAIInstrumentor().uninstrument()
        OpenAIInstrumentor().instrument(tracer_provider=tracing[0])


@contextlib.contextmanager
def both_instrumented(tracing, monkeypatch, env=None, **kwargs):
    """The OpenAI and Anthropic instrumentors re-made over a span exporter and a metric reader of their own, with
    `env` set and `kwargs` given (both read at instrument time); yields (span exporter, metric reader). The
    session's instrumentation is put back afterwards."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    kwargs.setdefault("meter_provider", MeterProvider(metric_readers=[reader]))
    instrumentors = (OpenAIInstrumentor(), AnthropicInstrumentor())
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=tracer_provider, **kwargs)
    try:
        yield exporter, reader
    finally:
        monkeypatch.undo()
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
            instrumentor.instrument(tracer_provider=tracing[0])


def body_of(interaction: dict) -> dict:
    body = interaction["request"]["body"]
    return json.loads(body) if isinstance(body, (str, bytes)) else dict(body)


def replay_case(recording: str, sdk: str, call, extra: dict) -> list[tuple[dict, dict, object, str]]:
    """Replays every interaction with `extra` added to its request; [(interaction, request sent, result, url)]."""
    out = []
    with replay.ReplayServer(recording) as server:
        if sdk == "openai":
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        else:
            client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
        for interaction in server.interactions:
            request = {**body_of(interaction), **extra}
            try:
                result = call(client)(**request)
                if request.get("stream"):
                    result = list(result)
            except (openai.APIStatusError, anthropic.APIStatusError) as error:
                result = error
            out.append((interaction, {**request, **request.get("extra_body", {})}, result, server.url))
        assert server.unmatched == []
    return out
