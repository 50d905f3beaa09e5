"""The native `mistralai` SDK through the instrumentation core's stream hook: the real SDK over real HTTP against
the local sandbox's Mistral endpoints (`otel_llmcost.sandbox`), one span per call, the SDK's return values and
exceptions unchanged, usage priced by a real collector (expected costs from genai-prices)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from mistralai.client import Mistral
from mistralai.client.errors import SDKError
from mistralai.client.models import ChatCompletionResponse, EmbeddingResponse, FIMCompletionResponse
from mistralai.client.utils.eventstreaming import EventStream, EventStreamAsync
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import StatusCode

import otel_llmcost
from otel_llmcost import names
from otel_llmcost.instrumentation import core, semconv
from otel_llmcost.instrumentation.mistral import MistralInstrumentor

try:
    from . import conventions
    from .test_instr_autoinstrument import _spans_from_console
    from .test_instr_support import fail_after_first, sandbox  # noqa: F401  (a fixture)
    from .test_instrumentation_guarantees import ScriptedServer, reply
except ImportError:
    import conventions
    from test_instr_autoinstrument import _spans_from_console
    from test_instr_support import fail_after_first, sandbox  # noqa: F401
    from test_instrumentation_guarantees import ScriptedServer, reply

CONVENTION_NAMES = conventions.attribute_names()
MODEL = "mistral-small-latest"
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "tell me a story"}]
CHAT = {"model": MODEL, "messages": MESSAGES, "max_tokens": 40}


@pytest.fixture(scope="module", autouse=True)
def instrumented(tracing):
    MistralInstrumentor().instrument(tracer_provider=tracing[0])
    yield
    MistralInstrumentor().uninstrument()


@pytest.fixture
def client(sandbox):  # noqa: F811
    return Mistral(api_key="x", server_url=sandbox.mistral_base_url)


def one_span(spans):
    finished = spans.get_finished_spans()
    assert len(finished) == 1, [(s.name, dict(s.attributes)) for s in finished]
    return finished[0]


def usage_of(span) -> tuple:
    return span.attributes.get(names.INPUT_TOKENS), span.attributes.get(names.OUTPUT_TOKENS)


def without_ids(dump: dict) -> dict:
    return {key: value for key, value in dump.items() if key not in ("id", "created")}


def uninstrumented(call):
    with suppress_instrumentation():
        return call()


# -- non-streamed calls -----------------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_chat_complete_is_one_span_with_the_usage(client, spans, is_async):
    if is_async:
        response = asyncio.run(client.chat.complete_async(**CHAT, temperature=0.3, random_seed=7))
    else:
        response = client.chat.complete(**CHAT, temperature=0.3, random_seed=7)
    assert type(response) is ChatCompletionResponse
    span = one_span(spans)
    assert span.name == f"chat {MODEL}"
    attributes = span.attributes
    assert attributes[names.PROVIDER] == "mistral_ai" and attributes[names.OPERATION] == "chat"
    assert usage_of(span) == (response.usage.prompt_tokens, response.usage.completion_tokens)
    assert attributes[names.RESPONSE_ID] == response.id and attributes[names.RESPONSE_MODEL] == MODEL
    assert attributes["gen_ai.request.max_tokens"] == 40 and attributes["gen_ai.request.temperature"] == 0.3
    assert attributes["gen_ai.request.seed"] == 7
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["server.address"] == "127.0.0.1"
    assert names.PREFIX_HASH in attributes  # the system message is the stable prefix
    assert names.USAGE_MISSING not in attributes


def test_the_sdk_returns_what_it_returns_uninstrumented(client, spans):
    seen = client.chat.complete(**CHAT)
    bare = uninstrumented(lambda: client.chat.complete(**CHAT))
    assert type(seen) is type(bare)
    assert without_ids(seen.model_dump()) == without_ids(bare.model_dump())
    assert len(spans.get_finished_spans()) == 1


def test_embeddings_and_fim(client, spans):
    embedded = client.embeddings.create(model="mistral-embed", inputs=["first text", "second text"])
    completed = client.fim.complete(model="codestral-latest", prompt="def add(a, b):", suffix="return c")
    assert type(embedded) is EmbeddingResponse and type(completed) is FIMCompletionResponse
    embedding, fim = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert embedding.attributes[names.OPERATION] == "embeddings"
    assert embedding.attributes[names.INPUT_TOKENS] == embedded.usage.prompt_tokens > 0
    assert fim.attributes[names.OPERATION] == "text_completion"
    assert usage_of(fim) == (completed.usage.prompt_tokens, completed.usage.completion_tokens)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_an_api_error_is_reraised_unchanged_and_ends_the_span_as_an_error(client, spans, is_async):
    request = {**CHAT, "model": "sandbox-error-429"}
    with pytest.raises(SDKError) as raised:
        if is_async:
            asyncio.run(client.chat.complete_async(**request))
        else:
            client.chat.complete(**request)
    assert raised.value.status_code == 429
    span = one_span(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[names.ERROR_TYPE] == "SDKError"


def test_attribution_comes_from_baggage(client, spans):
    with otel_llmcost.attributes(project="shop", feature="search", user_id="u-42"):
        client.chat.complete(**CHAT)
    attributes = one_span(spans).attributes
    assert (attributes[names.PROJECT], attributes[names.FEATURE], attributes[names.USER_ID]) == ("shop", "search",
                                                                                                   "u-42")


# -- streams ----------------------------------------------------------------------------------------------


def test_stream_is_the_sdks_own_and_its_span_has_the_last_chunks_usage(client, spans):
    stream = client.chat.stream(**CHAT)
    assert type(stream) is EventStream
    events = list(stream)
    bare = uninstrumented(lambda: list(client.chat.stream(**CHAT)))
    assert [without_ids(e.data.model_dump()) for e in events] == [without_ids(e.data.model_dump()) for e in bare]
    usage = events[-1].data.usage
    assert usage is not None
    (span,) = [s for s in spans.get_finished_spans()]
    assert usage_of(span) == (usage.prompt_tokens, usage.completion_tokens)
    assert span.attributes[names.REQUEST_STREAM] is True
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert names.USAGE_ESTIMATED not in span.attributes


def test_async_stream(client, spans):
    async def run():
        stream = await client.chat.stream_async(**CHAT)
        assert type(stream) is EventStreamAsync
        async with stream:
            return [event async for event in stream]

    events = asyncio.run(run())
    usage = events[-1].data.usage
    assert usage_of(one_span(spans)) == (usage.prompt_tokens, usage.completion_tokens)


def _ended_early_is_estimated(span) -> None:
    assert span.attributes[names.USAGE_ESTIMATED] is True and span.attributes[names.USAGE_MISSING] is True
    assert span.attributes[names.INPUT_TOKENS] == -(-sum(len(m["content"]) for m in MESSAGES) // 4)


@pytest.mark.parametrize("way", ["close", "with", "dropped"])
def test_a_stream_left_early_ends_its_span_once_estimated(client, spans, way):
    stream = client.chat.stream(**CHAT)
    if way == "close":
        next(stream)
        stream.close()
        stream.close()
    elif way == "with":
        with stream:
            next(stream)
    else:
        next(stream)
        del stream
        gc.collect()
    _ended_early_is_estimated(one_span(spans))


def test_an_async_stream_closed_early(client, spans):
    async def run():
        stream = await client.chat.stream_async(**CHAT)
        await stream.__anext__()
        await stream.close()

    asyncio.run(run())
    _ended_early_is_estimated(one_span(spans))


class _Cut(Exception):
    pass


def test_a_stream_failing_mid_way_reraises_and_ends_the_span_as_an_error(client, spans):
    stream = client.chat.stream(**CHAT)
    assert isinstance(stream.generator, core._Events)  # our reader sits in the SDK's public `generator`
    fail_after_first(stream.generator, _Cut("connection dropped"))
    with pytest.raises(_Cut):
        list(stream)
    span = one_span(spans)
    assert span.status.status_code is StatusCode.ERROR and span.attributes[names.ERROR_TYPE] == "_Cut"


def test_an_error_status_on_a_stream_is_reraised(client, spans):
    with pytest.raises(SDKError):
        client.chat.stream(**{**CHAT, "model": "sandbox-error-500"})
    assert one_span(spans).attributes[names.ERROR_TYPE] == "SDKError"


def test_no_span_and_no_reader_when_suppressed(client, spans):
    stream = uninstrumented(lambda: client.chat.stream(**CHAT))
    assert not isinstance(stream.generator, core._Events)
    list(stream)
    assert spans.get_finished_spans() == ()


# -- the entry point and the collector --------------------------------------------------------------------


def test_opentelemetry_instrument_finds_the_instrumentor():
    (entry,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "llmcost_mistral"]
    assert entry.load() is MistralInstrumentor


APP = textwrap.dedent(
    """
    import os
    from mistralai.client import Mistral
    client = Mistral(api_key="x", server_url=os.environ["MISTRAL_SERVER_URL"])
    messages = [{"role": "user", "content": "hi"}]
    client.chat.complete(model="mistral-small-latest", messages=messages, max_tokens=5)
    for _ in client.chat.stream(model="mistral-small-latest", messages=messages, max_tokens=5):
        pass
    """
)


@pytest.mark.parametrize("disabled", [False, True], ids=["on", "disabled"])
def test_zero_code_under_opentelemetry_instrument(tmp_path, sandbox, disabled):  # noqa: F811
    """An unchanged app, with the SDK's own tracing on too (`MISTRAL_SDK_TELEMETRY=global`): one span with usage
    per call; `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=llmcost_mistral` leaves only the SDK's spans."""
    command = Path(sys.executable).parent / "opentelemetry-instrument"
    if not command.exists():
        pytest.skip("opentelemetry-instrument is not installed beside this Python")
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {**os.environ, "MISTRAL_SERVER_URL": sandbox.mistral_base_url, "MISTRAL_SDK_TELEMETRY": "global",
           "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
           "OTEL_LLMCOST_PROJECT": "zero-code",
           "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx,httpx2" + (",llmcost_mistral" if disabled else "")}
    result = subprocess.run([str(command), sys.executable, str(app)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    spans = _spans_from_console(result.stdout)
    ours = [s for s in spans if s["attributes"].get(names.PROJECT) == "zero-code"]  # (attribution: ours only)
    if disabled:
        assert ours == [] and len(spans) == 2  # the SDK's own, proving its tracing was on
        return
    assert len(spans) == 2 and len(ours) == 2, [(s["name"], s["kind"]) for s in spans]
    for span in ours:
        assert span["kind"] == "SpanKind.CLIENT" and span["attributes"][names.PROVIDER] == "mistral_ai"
        assert span["attributes"][names.INPUT_TOKENS] > 0 and names.USAGE_ESTIMATED not in span["attributes"]


def test_priced_by_the_collector(client, spans, collector):
    """A long system prompt sent twice: the second call reads it from the prompt cache. Both rows are priced
    from Mistral's usage, the cache read at its own price."""
    long_prompt = [{"role": "system", "content": "You are a careful assistant. " * 200}, MESSAGES[1]]
    first = client.chat.complete(model=MODEL, messages=long_prompt, max_tokens=30)
    second = client.chat.stream(model=MODEL, messages=long_prompt, max_tokens=30)
    usage = list(second)[-1].data.usage
    cached = (usage.model_extra or {}).get("prompt_tokens_details", {}).get("cached_tokens")
    assert cached and cached >= 1024
    finished = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert len(finished) == 2
    assert finished[1].attributes[names.CACHE_READ_TOKENS] == cached
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    ids = [format(s.context.span_id, "016x") for s in finished]
    collector.wait_for_rows(2, f"SELECT count() AS n FROM llm_spans WHERE span_id IN ('{ids[0]}', '{ids[1]}')")
    rows = {r["span_id"]: r for r in collector.query(
        "SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id)", {"ids": ids})}
    expected = [
        (first.usage.prompt_tokens, first.usage.completion_tokens, None),
        (usage.prompt_tokens, usage.completion_tokens, cached),
    ]
    for span, span_id, (prompt, completion, cache_read) in zip(finished, ids, expected):
        row = rows[span_id]
        assert (row["provider"], row["response_model"], row["price_status"]) == ("mistral_ai", MODEL, "priced")
        assert (row["input_tokens"], row["output_tokens"]) == (prompt, completion)
        price = calc_price(Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cache_read),
                           MODEL, provider_id="mistral", genai_request_timestamp=datetime.fromtimestamp(span.start_time / 1e9, tz=timezone.utc))
        assert row["cost_usd"] == price.total_price > 0


# -- the SDK's own spans ----------------------------------------------------------------------------------


@pytest.fixture
def native_tracing(client, tracing):
    """The SDK's own tracing on for the client, into the same tracer provider as ours."""
    from mistralai.extra.observability import configure_telemetry

    assert configure_telemetry(client, provider=tracing[0])
    return client


def test_the_sdks_own_tracing_is_really_on(native_tracing, spans):
    uninstrumented(lambda: native_tracing.chat.complete(**CHAT))
    (span,) = spans.get_finished_spans()
    assert span.instrumentation_scope.name != "otel_llmcost"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_the_sdks_own_span_is_not_started_inside_ours(native_tracing, spans, stream):
    if stream:
        list(native_tracing.chat.stream(**CHAT))
    else:
        native_tracing.chat.complete(**CHAT)
    span = one_span(spans)
    assert span.instrumentation_scope.name == "otel_llmcost" and span.attributes[names.INPUT_TOKENS] > 0


# -- never into the app -----------------------------------------------------------------------------------

WEIRD_USAGE = {  # usage the SDK accepts (its UsageInfo keeps unknown fields): what the span says of it
    "empty": ({}, {names.USAGE_MISSING: True}),
    "null-counts": ({"prompt_tokens": None, "completion_tokens": None}, {names.USAGE_MISSING: True}),
    "negative": ({"prompt_tokens": -3, "completion_tokens": 2}, {names.USAGE_MISSING: True, names.OUTPUT_TOKENS: 2}),
    "odd-details": ({"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": "x",
                     "completion_tokens_details": [1]}, {names.INPUT_TOKENS: 5, names.OUTPUT_TOKENS: 2}),
    "negative-details": ({"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": -1}},
                         {names.INPUT_TOKENS: 5, names.OUTPUT_TOKENS: 2}),
}


def _scripted_chat(usage: dict) -> dict:
    return reply({"id": "local", "object": "chat.completion", "model": MODEL, "created": 1, "usage": usage,
                  "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}]})


def _scripted_stream(usage: dict) -> dict:
    base = {"id": "local", "object": "chat.completion.chunk", "model": MODEL, "created": 1}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}], "usage": usage}]
    return reply("".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n")


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("case", list(WEIRD_USAGE))
def test_weird_usage_never_raises(case, stream, spans):
    usage, expected = WEIRD_USAGE[case]
    with ScriptedServer(_scripted_stream(usage) if stream else _scripted_chat(usage)) as server:
        client = Mistral(api_key="x", server_url=server.url)
        if stream:
            events = list(client.chat.stream(**CHAT))
            assert events[0].data.choices[0].delta.content == "hi"
        else:
            assert client.chat.complete(**CHAT).choices[0].message.content == "hi"
    span = one_span(spans)
    assert span.status.status_code is StatusCode.UNSET
    if stream and expected.get(names.USAGE_MISSING):  # no prompt count: estimated, as a stream cut short is
        assert span.attributes[names.USAGE_ESTIMATED] is True and span.attributes[names.USAGE_MISSING] is True
        return
    keys = (names.INPUT_TOKENS, names.OUTPUT_TOKENS, names.USAGE_MISSING)
    assert {key: span.attributes[key] for key in keys if key in span.attributes} == expected


# -- the conventions --------------------------------------------------------------------------------------

PARAMETERS = {"temperature": 0.25, "top_p": 0.5, "top_k": 12, "max_tokens": 77, "frequency_penalty": 0.1,
              "presence_penalty": 0.2, "stop": ["END", "STOP"], "random_seed": 42, "n": 2,
              "response_format": {"type": "json_object"}}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_spans_follow_the_installed_conventions(client, spans, stream):
    request = {"model": MODEL, "messages": MESSAGES, **PARAMETERS}
    if stream:
        list(client.chat.stream(**request))
    else:
        client.chat.complete(**request)
    client.embeddings.create(model="mistral-embed", inputs="some text", output_dimension=16)
    chat, embedding = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    for span in (chat, embedding):
        for key, value in span.attributes.items():
            if key.startswith("llmcost."):
                continue
            assert CONVENTION_NAMES.get(key, "missing") is None, f"{key} is no current name of the conventions"
            allowed = conventions.enum_values(key)
            if allowed is not None:
                assert value in allowed, (key, value)
        levels = semconv.EMBEDDINGS_SPAN if span is embedding else semconv.INFERENCE_SPAN
        assert not [key for key, level in levels.items() if level == semconv.REQUIRED and key not in span.attributes]
    assert {key: chat.attributes.get(key) for key in (
        semconv.TEMPERATURE, semconv.TOP_P, semconv.TOP_K, semconv.MAX_TOKENS, semconv.FREQUENCY_PENALTY,
        semconv.PRESENCE_PENALTY, semconv.STOP_SEQUENCES, semconv.SEED, semconv.CHOICE_COUNT,
        semconv.OUTPUT_TYPE)} == {
        semconv.TEMPERATURE: 0.25, semconv.TOP_P: 0.5, semconv.TOP_K: 12, semconv.MAX_TOKENS: 77,
        semconv.FREQUENCY_PENALTY: 0.1, semconv.PRESENCE_PENALTY: 0.2, semconv.STOP_SEQUENCES: ("END", "STOP"),
        semconv.SEED: 42, semconv.CHOICE_COUNT: 2, semconv.OUTPUT_TYPE: "json"}
    assert embedding.attributes[semconv.DIMENSION_COUNT] == 16
    for key in (semconv.INPUT_MESSAGES, semconv.OUTPUT_MESSAGES):  # opt-in only
        assert key not in chat.attributes


@pytest.fixture
def content_on_spans(tracing, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    MistralInstrumentor().uninstrument()
    MistralInstrumentor().instrument(tracer_provider=tracing[0])
    yield
    monkeypatch.undo()
    MistralInstrumentor().uninstrument()
    MistralInstrumentor().instrument(tracer_provider=tracing[0])


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_message_content_when_opted_in(client, spans, content_on_spans, stream):
    """The SDK's own message models are read as the dicts are."""
    from mistralai.client.models import SystemMessage, UserMessage

    messages = [SystemMessage(content="Answer briefly."), UserMessage(content="tell me a story")]
    if stream:
        text = "".join(e.data.choices[0].delta.content or "" for e in client.chat.stream(model=MODEL,
                                                                                          messages=messages))
    else:
        text = client.chat.complete(model=MODEL, messages=messages).choices[0].message.content
    attributes = one_span(spans).attributes
    assert json.loads(attributes[semconv.INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Answer briefly."}]},
        {"role": "user", "parts": [{"type": "text", "content": "tell me a story"}]}]
    assert json.loads(attributes[semconv.OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}]
