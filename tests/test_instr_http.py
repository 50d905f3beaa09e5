"""Raw HTTP: plain `httpx` / `httpx2` calls to OpenAI-compatible and Anthropic endpoints get the LLM attributes
on the HTTP client span (through `opentelemetry-instrumentation-httpx` hooks), and a call made through an
instrumented SDK is still one span with usage. Against `otel_llmcost.sandbox.Sandbox` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from otel_llmcost import names

try:
    from .test_instr_support import sandbox  # noqa: F401 - fixture
except ImportError:
    from test_instr_support import sandbox  # noqa: F401

httpx_instrumentation = pytest.importorskip("opentelemetry.instrumentation.httpx")
from otel_llmcost.instrumentation.http import llm_hooks  # noqa: E402

CLIENTS = []
for _module, _instrumentor in (("httpx", "HTTPXClientInstrumentor"), ("httpx2", "HTTPX2ClientInstrumentor")):
    try:
        importlib.import_module(_module)
        if hasattr(httpx_instrumentation, _instrumentor):
            CLIENTS.append((_module, _instrumentor))
    except ImportError:
        pass

CHAT = {"model": "gpt-4o-mini", "max_tokens": 5,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
MESSAGE = {"model": "claude-3-5-haiku-20241022", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module", params=CLIENTS, ids=[c[0] for c in CLIENTS])
def http(request, tracing):
    module_name, instrumentor_name = request.param
    instrumentor = getattr(httpx_instrumentation, instrumentor_name)()
    instrumentor.instrument(tracer_provider=tracing[0], **llm_hooks())
    yield importlib.import_module(module_name)
    instrumentor.uninstrument()


def http_span(spans):
    (span,) = [s for s in spans.get_finished_spans() if s.instrumentation_scope.name.startswith("opentelemetry.")]
    return span


def test_raw_openai_chat(http, sandbox, spans):
    with http.Client() as client:
        response = client.post(sandbox.openai_base_url + "/chat/completions", json=CHAT,
                               headers={"authorization": "Bearer x"})
    body = response.json()  # the app reads the body we read first, unchanged
    assert body["object"] == "chat.completion"
    span = http_span(spans)
    assert span.attributes[names.OPERATION] == "chat"
    assert span.attributes[names.PROVIDER] == "openai"
    assert span.attributes[names.REQUEST_MODEL] == "gpt-4o-mini"
    assert span.attributes[names.RESPONSE_MODEL] == body["model"]
    assert span.attributes[names.RESPONSE_ID] == body["id"]
    assert span.attributes[names.INPUT_TOKENS] == body["usage"]["prompt_tokens"]
    assert span.attributes[names.OUTPUT_TOKENS] == body["usage"]["completion_tokens"]
    assert span.attributes[names.PREFIX_LENGTH] == len("Be brief.")


def test_raw_anthropic_messages_async(http, sandbox, spans):
    async def run():
        async with http.AsyncClient() as client:
            response = await client.post(sandbox.anthropic_base_url + "/v1/messages", json=MESSAGE,
                                         headers={"x-api-key": "x", "anthropic-version": "2023-06-01"})
            return response.json()

    body = asyncio.run(run())
    span = http_span(spans)
    usage = body["usage"]
    assert span.attributes[names.PROVIDER] == "anthropic"
    assert span.attributes[names.INPUT_TOKENS] == (
        usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"])
    assert span.attributes[names.OUTPUT_TOKENS] == usage["output_tokens"]


def test_raw_stream_is_passed_through_and_says_usage_is_missing(http, sandbox, spans):
    with http.Client() as client:
        with client.stream("POST", sandbox.openai_base_url + "/chat/completions", json={**CHAT, "stream": True}) as r:
            text = "".join(r.iter_text())
    assert text.rstrip().endswith("data: [DONE]")
    span = http_span(spans)
    assert span.attributes[names.REQUEST_STREAM] is True
    assert span.attributes[names.USAGE_MISSING] is True


def test_non_llm_requests_are_left_alone(http, sandbox, spans):
    with http.Client() as client:
        client.get(sandbox.openai_base_url + "/chat/completions")
        client.post(sandbox.url + "/health", json={})
    # Each request made its ordinary HTTP client span, with no GenAI or llmcost attribute added to it.
    finished = [s for s in spans.get_finished_spans() if s.instrumentation_scope.name.startswith("opentelemetry.")]
    assert sorted(s.attributes.get("http.request.method", s.attributes.get("http.method")) for s in finished) \
        == ["GET", "POST"]
    for span in finished:
        assert not [key for key in span.attributes if key.startswith(("gen_ai.", "llmcost."))], span.attributes


def test_a_call_through_an_instrumented_sdk_is_counted_once(http, sandbox, spans):
    openai = pytest.importorskip("openai")
    sdk_transport = "httpx2" if hasattr(openai, "_httpx2") or "httpx2" in openai._base_client.__dict__ else "httpx"
    if http.__name__ != sdk_transport:
        pytest.skip(f"this openai is built on {sdk_transport}")
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)
    client.chat.completions.create(**CHAT)
    finished = spans.get_finished_spans()
    assert len(finished) == 2  # ours and the HTTP span inside it
    with_usage = [s for s in finished if names.INPUT_TOKENS in s.attributes]
    assert [s.instrumentation_scope.name for s in with_usage] == ["otel_llmcost"]
    assert [s for s in finished if names.OPERATION in s.attributes] == with_usage
