"""Fixtures shared by the `test_instr_*` modules (which import them); holds no tests itself."""

from __future__ import annotations

import contextlib

import anthropic
import openai
import pytest

from otel_llmcost.instrumentation.openai import OpenAIInstrumentor
from otel_llmcost.sandbox import Sandbox


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
