"""The application API (`attributes`, `record_cache_hit`, `cache_hit`), the prompt-prefix fingerprint, provider
names for OpenAI-compatible hosts, and the instrumentor's life cycle (twice, uninstrument, threads, tasks).

Real SDKs against `otel_llmcost.sandbox.Sandbox` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading

import anthropic
import openai
import pytest
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

import otel_llmcost
from otel_llmcost import names
from otel_llmcost.instrumentation import core
from otel_llmcost.instrumentation import openai as openai_adapter
from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

try:
    from .test_instr_support import anth, oai, openai_instrumented, sandbox  # noqa: F401 - fixtures
except ImportError:
    from test_instr_support import anth, oai, openai_instrumented, sandbox  # noqa: F401

SYSTEM = "You are a terse assistant for the billing team."
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Find an invoice",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]


def chat(client, system=SYSTEM, tools=TOOLS, user="hi"):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    kwargs = {"tools": tools} if tools else {}
    return client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=5, **kwargs)


# -- attribution ----------------------------------------------------------------------------------------------


def attribution_of(span) -> dict:
    return {key: span.attributes[key] for key in names.ATTRIBUTION_KEYS if key in span.attributes}


def test_attributes_context_manager_puts_baggage_and_reaches_the_span(oai, spans):
    with otel_llmcost.attributes(project="billing", feature="summaries", user_id=42):
        assert baggage.get_baggage(names.PROJECT) == "billing"
        assert baggage.get_baggage(names.USER_ID) == "42"
        with otel_llmcost.attributes(feature="search"):  # nested: overrides one, keeps the others
            chat(oai)
        chat(oai)
    assert baggage.get_baggage(names.PROJECT) is None
    chat(oai)
    inner, outer, outside = spans.get_finished_spans()
    assert attribution_of(inner) == {names.PROJECT: "billing", names.FEATURE: "search", names.USER_ID: "42"}
    assert attribution_of(outer) == {names.PROJECT: "billing", names.FEATURE: "summaries", names.USER_ID: "42"}
    assert attribution_of(outside) == {}


def test_attributes_async_and_as_decorator(sandbox, spans):
    client = openai.AsyncOpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)

    @otel_llmcost.attributes(project="p", feature="decorated")
    async def summarize(user):
        return await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": user}], max_tokens=5)

    @otel_llmcost.attributes(feature="sync-decorated")
    def sync_function():
        return baggage.get_baggage(names.FEATURE)

    async def main():
        async with otel_llmcost.attributes(user_id="u-1"):
            # concurrent tasks each keep their own attribution
            await asyncio.gather(summarize("a"), summarize("b"))
        return sync_function()

    assert asyncio.run(main()) == "sync-decorated"
    assert summarize.__name__ == "summarize"
    got = spans.get_finished_spans()
    assert len(got) == 2
    for span in got:
        assert attribution_of(span) == {names.PROJECT: "p", names.FEATURE: "decorated", names.USER_ID: "u-1"}


def test_attribution_defaults_from_the_environment(tracing, oai, spans, monkeypatch):
    env = {"OTEL_LLMCOST_PROJECT": "from-env", "OTEL_LLMCOST_FEATURE": "env-feature"}
    with openai_instrumented(tracing, monkeypatch, env):  # the environment is read once, at instrument time
        with otel_llmcost.attributes(feature="from-baggage"):
            chat(oai)
    (span,) = spans.get_finished_spans()
    assert attribution_of(span) == {names.PROJECT: "from-env", names.FEATURE: "from-baggage"}


# -- application-level cache hits -------------------------------------------------------------------------------


def test_record_cache_hit_is_a_span_that_is_not_a_call(spans):
    with otel_llmcost.attributes(project="billing", user_id="u-7"):
        otel_llmcost.record_cache_hit(kind="semantic", provider="openai", model="gpt-4o-mini",
                                      input_tokens=1200, output_tokens=300)
    (span,) = spans.get_finished_spans()
    assert span.name == "cache_hit gpt-4o-mini"
    assert dict(span.attributes) == {
        names.CACHE_HIT_KIND: "semantic",
        names.PROVIDER: "openai",
        names.REQUEST_MODEL: "gpt-4o-mini",
        names.CACHE_HIT_INPUT_TOKENS: 1200,
        names.CACHE_HIT_OUTPUT_TOKENS: 300,
        names.PROJECT: "billing",
        names.USER_ID: "u-7",
    }
    assert not any(key.startswith("gen_ai.usage.") for key in span.attributes)
    assert names.OPERATION not in span.attributes


def test_record_cache_hit_never_raises(spans):
    otel_llmcost.record_cache_hit(kind=object(), provider=None, model=None, input_tokens="lots")
    (span,) = spans.get_finished_spans()
    assert names.CACHE_HIT_INPUT_TOKENS not in span.attributes


def test_cache_hit_decorator_records_hits_only(spans):
    store = {"known": {"answer": "42", "usage": (100, 20)}}

    @otel_llmcost.cache_hit(kind="exact", provider="anthropic", model="claude-3-5-haiku-20241022",
                            tokens=lambda hit: hit["usage"])
    def lookup(key):
        return store.get(key)

    @otel_llmcost.cache_hit(kind="exact", provider="openai", model="gpt-4o")
    async def alookup(key):
        return store.get(key)

    assert lookup("missing") is None
    assert lookup("known") is store["known"]
    assert asyncio.run(alookup("known")) is store["known"]
    first, second = spans.get_finished_spans()
    assert first.attributes[names.CACHE_HIT_INPUT_TOKENS] == 100
    assert first.attributes[names.CACHE_HIT_OUTPUT_TOKENS] == 20
    assert second.attributes[names.REQUEST_MODEL] == "gpt-4o"
    assert names.CACHE_HIT_INPUT_TOKENS not in second.attributes


# -- prompt-prefix fingerprint ----------------------------------------------------------------------------------


def prefix_of(span):
    return span.attributes.get(names.PREFIX_HASH), span.attributes.get(names.PREFIX_LENGTH)


def test_prefix_fingerprint_openai_chat(oai, spans):
    chat(oai, user="first question")
    chat(oai, user="another question entirely")  # same prefix, other user turn
    chat(oai, system=SYSTEM + " Be brief.")
    chat(oai, tools=None)
    chat(oai, system=None, tools=None)
    a, b, other_system, no_tools, none = spans.get_finished_spans()
    assert prefix_of(a) == prefix_of(b)
    assert len(a.attributes[names.PREFIX_HASH]) == 16
    assert a.attributes[names.PREFIX_LENGTH] > len(SYSTEM)
    assert prefix_of(other_system)[0] != prefix_of(a)[0]
    assert prefix_of(no_tools) == (prefix_of(no_tools)[0], len(SYSTEM))
    assert prefix_of(none) == (None, None)
    for span in (a, b, other_system, no_tools):  # never the text
        assert not any(SYSTEM in str(value) for value in span.attributes.values())


def test_prefix_fingerprint_responses_and_anthropic(oai, anth, spans):
    oai.responses.create(model="gpt-4o-mini", instructions=SYSTEM, input="hi", max_output_tokens=16)
    anth.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, system=SYSTEM,
                         messages=[{"role": "user", "content": "hi"}])
    anth.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5,
                         messages=[{"role": "user", "content": "hi"}])
    responses, message, bare = spans.get_finished_spans()
    assert prefix_of(responses) == prefix_of(message)  # the same system prompt, however it is sent
    assert prefix_of(message)[1] == len(SYSTEM)
    assert prefix_of(bare) == (None, None)


def test_prefix_fingerprint_can_be_turned_off(tracing, oai, spans, monkeypatch):
    with openai_instrumented(tracing, monkeypatch, {"OTEL_LLMCOST_PREFIX_FINGERPRINT": "false"}):
        chat(oai)
    (span,) = spans.get_finished_spans()
    assert prefix_of(span) == (None, None)
    assert span.attributes[names.INPUT_TOKENS] > 0


# -- provider names of OpenAI-compatible hosts --------------------------------------------------------------------


@pytest.fixture
def fresh_hosts():
    openai_adapter._provider_for_host.cache_clear()
    yield
    openai_adapter._provider_for_host.cache_clear()


@pytest.mark.parametrize(
    "host, env, expected",
    [
        ("api.openai.com", {}, "openai"),
        ("api.groq.com", {}, "groq"),
        ("openrouter.ai", {}, "openrouter"),
        ("my-resource.openai.azure.com", {}, "azure.ai.openai"),
        ("127.0.0.1", {}, "self-hosted"),  # loopback: a self-hosted model unless told (see test_self_hosted.py)
        ("127.0.0.1", {"OTEL_LLMCOST_PROVIDER_HOSTS": "127.0.0.1=hosted"}, "openai"),
        ("127.0.0.1", {"OTEL_LLMCOST_OPENAI_PROVIDER": "vllm"}, "vllm"),
        ("llm.internal.example", {"OTEL_LLMCOST_PROVIDER_HOSTS": "llm.internal.example=vllm, ollama.lan=ollama"},
         "vllm"),
        ("gpu1.ollama.lan", {"OTEL_LLMCOST_PROVIDER_HOSTS": "llm.internal.example=vllm,ollama.lan=ollama"}, "ollama"),
        ("api.groq.com", {"OTEL_LLMCOST_OPENAI_PROVIDER": "vllm"}, "vllm"),
        ("api.groq.com", {"OTEL_LLMCOST_PROVIDER_HOSTS": "api.groq.com=my-groq"}, "my-groq"),
    ],
)
def test_provider_for_host(host, env, expected, fresh_hosts, monkeypatch):
    monkeypatch.delenv("OTEL_LLMCOST_OPENAI_PROVIDER", raising=False)
    monkeypatch.delenv("OTEL_LLMCOST_PROVIDER_HOSTS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert openai_adapter._provider_for_host(host, False) == expected


def test_provider_host_mapping_reaches_the_span(oai, spans, fresh_hosts, monkeypatch):
    monkeypatch.setenv("OTEL_LLMCOST_PROVIDER_HOSTS", "127.0.0.1=ollama")
    chat(oai)
    (span,) = spans.get_finished_spans()
    assert span.attributes[names.PROVIDER] == "ollama"


# -- life cycle ---------------------------------------------------------------------------------------------------


def test_instrument_twice_does_not_double_wrap(tracing, oai, spans):
    OpenAIInstrumentor().instrument(tracer_provider=tracing[0])  # already on: a no-op
    chat(oai)
    assert len(spans.get_finished_spans()) == 1


def test_uninstrument_restores_the_originals(tracing, oai, anth, spans):
    from anthropic import _base_client as anthropic_base
    from openai import _base_client as openai_base
    from openai import _streaming

    OpenAIInstrumentor().uninstrument()
    AnthropicInstrumentor().uninstrument()
    try:
        for function in (openai_base.SyncAPIClient.request, openai_base.AsyncAPIClient.request,
                         _streaming.Stream.close, anthropic_base.SyncAPIClient.request):
            assert not hasattr(function, "__wrapped__")
        chat(oai)
        anth.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert spans.get_finished_spans() == ()
    finally:
        OpenAIInstrumentor().instrument(tracer_provider=tracing[0])
        AnthropicInstrumentor().instrument(tracer_provider=tracing[0])
    chat(oai)
    assert len(spans.get_finished_spans()) == 1


def test_suppress_instrumentation_is_honoured(oai, spans):
    with suppress_instrumentation():
        chat(oai)
        otel_llmcost.record_cache_hit  # noqa: B018 - the API stays importable
    assert spans.get_finished_spans() == ()


def test_threads_and_tasks_keep_their_parent(tracing, sandbox, oai, spans):
    tracer = tracing[0].get_tracer("app")
    client = openai.AsyncOpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)
    parents = {}

    def in_thread(name):
        with tracer.start_as_current_span(name) as parent:
            parents[name] = parent.get_span_context().span_id
            chat(oai, user=name)

    threads = [threading.Thread(target=in_thread, args=(f"thread-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def task(name):
        with tracer.start_as_current_span(name) as parent:
            parents[name] = parent.get_span_context().span_id
            await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": name}],
                                                 max_tokens=5)

    async def main():
        await asyncio.gather(*(task(f"task-{i}") for i in range(3)))

    asyncio.run(main())
    calls = [s for s in spans.get_finished_spans() if s.attributes.get(names.OPERATION) == "chat"]
    apps = {s.name: s for s in spans.get_finished_spans() if s.instrumentation_scope.name == "app"}
    assert len(calls) == 6
    for name, span_id in parents.items():
        (call,) = [c for c in calls if c.parent is not None and c.parent.span_id == span_id]
        assert call.context.trace_id == apps[name].context.trace_id


@pytest.mark.skipif(not hasattr(anthropic._base_client, "start_api_call_span"),
                    reason="this anthropic has no tracing of its own")
def test_anthropic_native_tracing_on_gives_one_span_with_attribution_and_prefix(tracing, sandbox, spans):
    client = anthropic.Anthropic(base_url=sandbox.anthropic_base_url, api_key="x", max_retries=0,
                                 open_telemetry={"tracer_provider": tracing[0]})
    assert client.open_telemetry["traces"]["enabled"] is True
    with otel_llmcost.attributes(project="billing"):
        with client.messages.stream(model="claude-3-5-haiku-20241022", max_tokens=5, system=SYSTEM,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            message = stream.get_final_message()
    with_usage = [s for s in spans.get_finished_spans() if names.INPUT_TOKENS in s.attributes]
    (span,) = with_usage
    assert span.instrumentation_scope.name == "otel_llmcost"
    assert span.attributes[names.PROJECT] == "billing"
    assert span.attributes[names.PREFIX_LENGTH] == len(SYSTEM)
    assert span.attributes[names.OUTPUT_TOKENS] == message.usage.output_tokens


def test_the_public_api_is_exported():
    assert set(otel_llmcost.__all__) >= {"attributes", "record_cache_hit", "cache_hit"}
    assert isinstance(core.CALL_IN_PROGRESS_KEY, str)
    assert trace.get_tracer_provider() is not None
