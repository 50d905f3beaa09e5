"""The spans against the installed GenAI semantic conventions: real SDK calls (recorded traffic replayed from
127.0.0.1, `tests/replay.py`), an in-memory span exporter, and the names, deprecations and enums read from the
conventions package itself (`tests/conventions.py`); the requirement levels are those of
`otel_llmcost.instrumentation.semconv`, whose keys are checked to be the package's names.

Also: messages only when the user opts in, in the conventions' JSON shape and cut to the size limit; the
collector reading the deprecated names as the current ones, through a real collector.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_llmcost import names
from otel_llmcost.instrumentation import semconv

try:
    from . import conventions, replay
    from .test_instr_support import body_of, both_instrumented, replay_case
except ImportError:
    import conventions
    import replay
    from test_instr_support import body_of, both_instrumented, replay_case

CONVENTION_NAMES = conventions.attribute_names()


@contextlib.contextmanager
def instrumented(tracing, monkeypatch, env: dict[str, str] | None = None, **kwargs):
    """Both instrumentors over an exporter of our own (metrics off), with `env` set; yields the exporter."""
    with both_instrumented(tracing, monkeypatch, env, metrics=False, **kwargs) as (exporter, _):
        yield exporter


@pytest.fixture
def exporter(tracing, monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    with instrumented(tracing, monkeypatch) as exporter:
        yield exporter


def response_events(interaction: dict) -> list[dict] | None:
    body = interaction["response"]["body"]
    if isinstance(body, str) and body.lstrip().startswith(("event:", "data:")):
        return [json.loads(data) for _, data in replay.iter_sse(body) if data.strip() not in ("", "[DONE]")]
    return None


def response_json(interaction: dict) -> dict:
    body = interaction["response"]["body"]
    return json.loads(body) if isinstance(body, (str, bytes)) else body


def recorded_finish_reasons(interaction: dict) -> list[str] | None:
    """Why the model stopped, as the raw recorded body says."""
    events = response_events(interaction)
    if events is None:
        body = response_json(interaction)
        if "stop_reason" in body:
            return [body["stop_reason"]]
        if "choices" in body:
            return [c["finish_reason"] for c in body["choices"] if c.get("finish_reason")]
        return None
    reasons = []
    for event in events:
        for choice in event.get("choices") or ():
            if choice.get("finish_reason"):
                reasons.append(choice["finish_reason"])
        if event.get("type") == "message_delta" and event["delta"].get("stop_reason"):
            reasons.append(event["delta"]["stop_reason"])
    return reasons or None


# The request parameters each API spells its own way, and the conventions' name for each: what the tests add to
# the recorded requests (the replay server answers by path, whatever the body).
OPENAI_CHAT_PARAMETERS = {"temperature": 0.25, "top_p": 0.5, "max_tokens": 77, "frequency_penalty": 0.1,
                          "presence_penalty": 0.2, "stop": ["END", "STOP"], "seed": 42}
# (`anthropic` 2.x dropped the sampling parameters from its signature: they go in `extra_body`, sent in the body)
ANTHROPIC_PARAMETERS = {"stop_sequences": ["\n\nHuman:"], "extra_body": {"temperature": 0.3, "top_p": 0.75, "top_k": 12}}
EXPECTED = {  # request key -> (attribute, value as the span carries it)
    "temperature": semconv.TEMPERATURE, "top_p": semconv.TOP_P, "top_k": semconv.TOP_K,
    "max_tokens": semconv.MAX_TOKENS, "max_output_tokens": semconv.MAX_TOKENS,
    "frequency_penalty": semconv.FREQUENCY_PENALTY, "presence_penalty": semconv.PRESENCE_PENALTY,
    "stop": semconv.STOP_SEQUENCES, "stop_sequences": semconv.STOP_SEQUENCES, "seed": semconv.SEED,
}

# (recording, SDK, call, extra request parameters)
CASES = [
    ("openai/test_chat/test_chat", "openai", lambda c: c.chat.completions.create, OPENAI_CHAT_PARAMETERS),
    ("openai/test_chat/test_chat_streaming", "openai", lambda c: c.chat.completions.create, OPENAI_CHAT_PARAMETERS),
    ("openai/test_chat/test_chat_tool_calls", "openai", lambda c: c.chat.completions.create, {}),
    ("openai/test_chat_response_format/test_chat_response_format", "openai",
     lambda c: c.chat.completions.create, {}),
    ("openai/test_finish_reasons/TestFinishReasonDeduplication.test_streaming_deduplicates_finish_reasons",
     "openai", lambda c: c.chat.completions.create, {}),
    ("openai/test_embeddings/test_embeddings", "openai", lambda c: c.embeddings.create, {"dimensions": 256}),
    ("openai/test_responses/test_responses_with_request_params", "openai", lambda c: c.responses.create, {}),
    ("openai/test_completions/test_completion", "openai", lambda c: c.completions.create, {"n": 1}),
    ("anthropic/test_messages/test_anthropic_message_create_legacy", "anthropic", lambda c: c.messages.create,
     ANTHROPIC_PARAMETERS),
    ("anthropic/test_messages/test_anthropic_message_streaming_legacy", "anthropic", lambda c: c.messages.create,
     ANTHROPIC_PARAMETERS),
    ("anthropic/test_messages/test_anthropic_tools_legacy", "anthropic", lambda c: c.messages.create, {}),
]


def levels_for(span) -> dict[str, str]:
    operation = span.attributes[names.OPERATION]
    return semconv.EMBEDDINGS_SPAN if operation == "embeddings" else semconv.INFERENCE_SPAN


@pytest.mark.parametrize("recording, sdk, call, extra", CASES, ids=[c[0].rsplit("/", 1)[1] for c in CASES])
def test_spans_follow_the_installed_conventions(recording, sdk, call, extra, exporter):
    calls = replay_case(recording, sdk, call, extra)
    spans = exporter.get_finished_spans()
    assert len(spans) == len(calls)
    for span, (interaction, request, result, url) in zip(spans, calls):
        attributes = span.attributes
        # Every attribute is ours (llmcost.*, the attribution's user.id) or a current name of the conventions.
        for key, value in attributes.items():
            if key.startswith("llmcost.") or key == names.USER_ID:
                continue
            assert key in CONVENTION_NAMES, f"{key} is not a name of the installed conventions"
            assert CONVENTION_NAMES[key] is None, f"{key} is deprecated: {CONVENTION_NAMES[key]} replaces it"
            allowed = conventions.enum_values(key)
            if allowed is not None and key != names.PROVIDER:  # (the provider enum is open: any host's name)
                assert value in allowed, (key, value)
        # The span name: `{gen_ai.operation.name} {gen_ai.request.model}`.
        assert span.name == f"{attributes[names.OPERATION]} {request['model']}"
        levels = levels_for(span)
        for key, level in levels.items():
            if level == semconv.REQUIRED:
                assert key in attributes, f"required {key} missing"
        assert attributes[names.REQUEST_MODEL] == request["model"]
        failed = isinstance(result, Exception)
        assert (span.status.status_code is StatusCode.ERROR) is failed
        assert (names.ERROR_TYPE in attributes) is failed
        # server.address and (conditionally required with it) server.port: the client's base URL.
        host, port = url.split("://", 1)[1].split("/", 1)[0].split(":")
        assert (attributes[semconv.SERVER_ADDRESS], attributes[semconv.SERVER_PORT]) == (host, int(port))
        # The request parameters, under their conventions' names, with the values sent.
        for key, attribute in EXPECTED.items():
            if key in request:
                sent = request[key]
                assert attributes[attribute] == (tuple([sent]) if key == "stop" and isinstance(sent, str)
                                                 else tuple(sent) if isinstance(sent, list) else sent), key
        n = request.get("n", 1)
        assert attributes.get(semconv.CHOICE_COUNT) == (n if n != 1 else None)
        output_format = (request.get("response_format") or {}).get("type") \
            or ((request.get("text") or {}).get("format") or {}).get("type")
        if output_format:
            assert attributes[semconv.OUTPUT_TYPE] == ("json" if output_format.startswith("json") else "text")
        else:
            assert semconv.OUTPUT_TYPE not in attributes
        if attributes[names.OPERATION] == "embeddings":
            assert attributes[semconv.ENCODING_FORMATS] == (request["encoding_format"],)
            assert attributes[semconv.DIMENSION_COUNT] == request["dimensions"]
        elif not failed:
            recorded = recorded_finish_reasons(interaction)
            if recorded is not None:
                assert list(attributes[semconv.FINISH_REASONS]) == recorded
            else:  # the Responses API: from the response's status
                assert list(attributes[semconv.FINISH_REASONS]) == ["stop"]
        # Messages are opt-in: never there by default.
        for key in (semconv.INPUT_MESSAGES, semconv.OUTPUT_MESSAGES, semconv.SYSTEM_INSTRUCTIONS):
            assert key not in attributes


def test_the_requirement_levels_name_the_installed_conventions():
    for table in (semconv.INFERENCE_SPAN, semconv.EMBEDDINGS_SPAN, semconv.METRIC_ATTRIBUTES):
        for key, level in table.items():
            assert CONVENTION_NAMES.get(key, "missing") is None, f"{key}: not a current name of the conventions"
            assert level in (semconv.REQUIRED, semconv.CONDITIONALLY_REQUIRED, semconv.RECOMMENDED, semconv.OPT_IN)


def test_google_genai_spans_follow_the_conventions(tracing, spans):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    from otel_llmcost.instrumentation.google_genai import GoogleGenAIInstrumentor

    recording = json.loads((Path(__file__).parent / "fixtures/google_genai/generate_content.json").read_text())
    config = types.GenerateContentConfig(temperature=0.5, top_p=0.9, top_k=20, max_output_tokens=100, seed=7,
                                         stop_sequences=["END"], candidate_count=2,
                                         response_mime_type="application/json")
    GoogleGenAIInstrumentor().instrument(tracer_provider=tracing[0])
    try:
        with replay.ReplayServer(recording) as server:
            client = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=server.url,
                                                                                 api_version="v1beta"))
            client.models.generate_content(model="gemini-2.5-flash", contents="Why?", config=config)
            url = server.url
    finally:
        GoogleGenAIInstrumentor().uninstrument()
    (span,) = spans.get_finished_spans()
    attributes = span.attributes
    host, port = url.split("://", 1)[1].split("/", 1)[0].split(":")
    assert {key: attributes.get(key) for key in (
        semconv.TEMPERATURE, semconv.TOP_P, semconv.TOP_K, semconv.MAX_TOKENS, semconv.SEED, semconv.STOP_SEQUENCES,
        semconv.CHOICE_COUNT, semconv.OUTPUT_TYPE, semconv.SERVER_ADDRESS, semconv.SERVER_PORT)} == {
        semconv.TEMPERATURE: 0.5, semconv.TOP_P: 0.9, semconv.TOP_K: 20, semconv.MAX_TOKENS: 100, semconv.SEED: 7,
        semconv.STOP_SEQUENCES: ("END",), semconv.CHOICE_COUNT: 2, semconv.OUTPUT_TYPE: "json",
        semconv.SERVER_ADDRESS: host, semconv.SERVER_PORT: int(port)}
    recorded = [c["finishReason"].lower() for c in json.loads(recording["interactions"][0]["response"]["body"])
                ["candidates"]]
    assert list(attributes[semconv.FINISH_REASONS]) == recorded
    for key in attributes:
        assert key.startswith("llmcost.") or CONVENTION_NAMES.get(key, "missing") is None, key


# ----------------------------------------------------------------------------------------------------------
# message content: opt-in
# ----------------------------------------------------------------------------------------------------------

def chat_with_system(exporter, stream: bool = False):
    recording = "openai/test_chat/test_chat_streaming" if stream else "openai/test_chat/test_chat"
    with replay.ReplayServer(recording) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        interaction = server.interactions[0]
        request = body_of(interaction)
        request["messages"] = [{"role": "system", "content": "Be terse."}] + request["messages"]
        result = client.chat.completions.create(**request)
        if stream:
            result = list(result)
    return exporter.get_finished_spans()[0], request, interaction, result


@pytest.mark.parametrize("env", [{}, {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"},
                                 {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
                                  "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "NO_CONTENT"}])
def test_no_message_content_unless_the_user_opts_in(env, tracing, monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    with instrumented(tracing, monkeypatch, env) as exporter:
        span, *_ = chat_with_system(exporter)
    assert not [key for key in span.attributes if key.startswith(("gen_ai.input", "gen_ai.output.messages",
                                                                   "gen_ai.system_instructions"))]


@pytest.mark.parametrize("env", [{"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
                                 {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
                                  "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}])
def test_message_content_on_the_span_in_the_conventions_shape(env, tracing, monkeypatch):
    with instrumented(tracing, monkeypatch, env) as exporter:
        span, request, interaction, result = chat_with_system(exporter)
    messages = json.loads(span.attributes[semconv.INPUT_MESSAGES])
    assert messages == [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
                        for m in request["messages"]]
    output = json.loads(span.attributes[semconv.OUTPUT_MESSAGES])
    choice = response_json(interaction)["choices"][0]
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": choice["message"]["content"]}],
                       "finish_reason": choice["finish_reason"]}]
    assert result.choices[0].message.content == choice["message"]["content"]  # what the app gets is unchanged


def test_anthropic_system_and_tool_calls_in_the_conventions_shape(tracing, monkeypatch):
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    with instrumented(tracing, monkeypatch, env) as exporter:
        calls = replay_case("anthropic/test_messages/test_anthropic_tools_legacy", "anthropic",
                            lambda c: c.messages.create, {"system": "Use the tools."})
    span = exporter.get_finished_spans()[0]
    interaction, request, *_ = calls[0]
    assert json.loads(span.attributes[semconv.SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "Use the tools."}]
    body = response_json(interaction)
    output = json.loads(span.attributes[semconv.OUTPUT_MESSAGES])
    assert output[0]["finish_reason"] == body["stop_reason"]
    tool_uses = [b for b in body["content"] if b["type"] == "tool_use"]
    assert tool_uses, "the recording calls a tool"
    assert [p for p in output[0]["parts"] if p["type"] == "tool_call"] == [
        {"type": "tool_call", "id": b["id"], "name": b["name"], "arguments": b["input"]} for b in tool_uses]


def test_message_content_is_cut_to_the_limit_with_a_marker(tracing, monkeypatch):
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true", "OTEL_LLMCOST_CONTENT_MAX_LENGTH": "12"}
    with instrumented(tracing, monkeypatch, env) as exporter:
        span, request, *_ = chat_with_system(exporter)
    messages = json.loads(span.attributes[semconv.INPUT_MESSAGES])  # still valid JSON
    texts = [part["content"] for message in messages for part in message["parts"]]
    assert texts[0] == "Be terse."  # 9 characters, within the limit
    assert texts[1] == request["messages"][1]["content"][:3] + semconv.TRUNCATED
    assert all(text == semconv.TRUNCATED for text in texts[2:])


def test_message_content_as_the_operation_details_event(tracing, monkeypatch):
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    env = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
           "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY"}
    with instrumented(tracing, monkeypatch, env, logger_provider=logger_provider) as exporter:
        span, request, interaction, _ = chat_with_system(exporter)
    assert semconv.INPUT_MESSAGES not in span.attributes  # event only
    (record,) = [r.log_record for r in logs.get_finished_logs()]
    assert record.event_name == semconv.OPERATION_DETAILS_EVENT
    assert record.span_id == span.context.span_id and record.trace_id == span.context.trace_id
    assert json.loads(record.attributes[semconv.INPUT_MESSAGES])[0]["parts"][0]["content"] == "Be terse."
    assert json.loads(record.attributes[semconv.OUTPUT_MESSAGES])[0]["finish_reason"] == \
        response_json(interaction)["choices"][0]["finish_reason"]
    assert record.attributes[names.OPERATION] == "chat"


def test_a_failing_content_reader_changes_nothing_for_the_app(tracing, monkeypatch):
    def broken(body):
        raise RuntimeError("boom")

    monkeypatch.setattr(semconv, "openai_input", broken)
    monkeypatch.setattr(semconv, "openai_output", broken)
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    with instrumented(tracing, monkeypatch, env) as exporter:
        span, _, interaction, result = chat_with_system(exporter)
    assert type(result) is openai.types.chat.ChatCompletion
    assert result.id == response_json(interaction)["id"]
    assert span.attributes[names.INPUT_TOKENS] == response_json(interaction)["usage"]["prompt_tokens"]


# ----------------------------------------------------------------------------------------------------------
# the collector reads the deprecated names as the current ones
# ----------------------------------------------------------------------------------------------------------

def test_the_collector_reads_every_deprecated_name_it_prices_by():
    """Each name the installed conventions deprecate in favour of one the collector reads is read for the same
    fact (mixed fleets: old instrumentations send the old names)."""
    from otel_llmcost.collector import normalize

    replaced = {old: new for old, new in CONVENTION_NAMES.items() if new in normalize.SPELLINGS}
    assert replaced, "the installed conventions deprecate names the collector reads"
    for old, new in replaced.items():
        assert old in normalize.SPELLINGS, f"the collector does not read {old} (replaced by {new})"
        assert normalize.SPELLINGS[old][0] == normalize.SPELLINGS[new][0]


def test_old_and_new_names_price_alike_through_a_real_collector(collector):
    from datetime import datetime, timezone

    from genai_prices import Usage, calc_price
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    usage = {"input": 1200, "output": 300, "cache_read": 200, "cache_write": 100}
    new = {names.PROVIDER: "anthropic", names.INPUT_TOKENS: usage["input"], names.OUTPUT_TOKENS: usage["output"],
           names.CACHE_READ_TOKENS: usage["cache_read"], names.CACHE_WRITE_TOKENS: usage["cache_write"]}
    spellings = {  # the same facts as older instrumentations and the newer registry spell them
        "deprecated conventions": {"gen_ai.system": "anthropic", "gen_ai.usage.prompt_tokens": usage["input"],
                                   "gen_ai.usage.completion_tokens": usage["output"],
                                   "gen_ai.usage.cache_read_input_tokens": usage["cache_read"],
                                   "gen_ai.usage.cache_creation_input_tokens": usage["cache_write"]},
        "newer registry": {names.PROVIDER: "anthropic", names.INPUT_TOKENS: usage["input"],
                           names.OUTPUT_TOKENS: usage["output"], names.CACHE_READ_TOKENS: usage["cache_read"],
                           "gen_ai.usage.cache_write.input_tokens": usage["cache_write"]},
        "current": new,
    }
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("a-fleet")
    for label, attributes in spellings.items():
        tracer.start_span(f"chat claude-sonnet-4-5 ({label})", attributes={
            names.OPERATION: "chat", names.REQUEST_MODEL: "claude-sonnet-4-5", **attributes}).end()
    finished = exporter.get_finished_spans()
    assert OTLPSpanExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == \
        SpanExportResult.SUCCESS
    ids = [format(s.context.span_id, "016x") for s in finished]
    in_list = ", ".join(f"'{i}'" for i in ids)
    collector.wait_for_rows(len(ids), f"SELECT count() AS n FROM llm_spans WHERE span_id IN ({in_list})")
    rows = collector.query("SELECT span_id, provider, input_tokens, output_tokens, cache_read_tokens, "
                           "cache_write_tokens, cost_usd, price_status FROM llm_spans FINAL "
                           "WHERE has({ids:Array(String)}, span_id)", {"ids": ids})
    by_span = {row["span_id"]: row for row in rows}
    for span, span_id in zip(finished, ids):
        row = by_span[span_id]
        expected = calc_price(Usage(input_tokens=usage["input"], output_tokens=usage["output"],
                                    cache_read_tokens=usage["cache_read"], cache_write_tokens=usage["cache_write"]),
                              "claude-sonnet-4-5", provider_id="anthropic",
                              genai_request_timestamp=datetime.fromtimestamp(span.start_time / 1e9, tz=timezone.utc))
        assert (row["provider"], row["input_tokens"], row["output_tokens"], row["cache_read_tokens"],
                row["cache_write_tokens"], row["price_status"]) == \
            ("anthropic", usage["input"], usage["output"], usage["cache_read"], usage["cache_write"], "priced"), span.name
        assert row["cost_usd"] == expected.total_price, span.name


# ----------------------------------------------------------------------------------------------------------
# tool calls the SDK makes itself (google-genai's automatic function calling)
# ----------------------------------------------------------------------------------------------------------

def gemini_answer(parts: list[dict], finish: str = "STOP") -> dict:
    """A generateContent interaction in the Gemini API's documented response shape."""
    body = {"candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0, "finishReason": finish}],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 8, "totalTokenCount": 48},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp-tool"}
    return {"request": {"method": "POST",
                        "uri": "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
                        "body": {}},
            "response": {"status": 200, "headers": {"content-type": ["application/json; charset=UTF-8"]},
                         "body": json.dumps(body)}}


@pytest.mark.parametrize("content", [False, True])
@pytest.mark.parametrize("fails", [False, True])
def test_google_genai_tool_calls_make_execute_tool_spans(content, fails, tracing, spans, monkeypatch):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    from otel_llmcost.instrumentation.google_genai import GoogleGenAIInstrumentor

    if content:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    else:
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    ran = []

    def get_weather(city: str) -> str:
        """The weather in a city.

        Longer description."""
        ran.append(city)
        if fails:
            raise ValueError("no forecast")
        return f"sunny in {city}"

    recording = {"interactions": [
        gemini_answer([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
        gemini_answer([{"text": "It is sunny in Paris."}]),
    ]}
    GoogleGenAIInstrumentor().instrument(tracer_provider=tracing[0])
    try:
        with replay.ReplayServer(recording) as server:
            client = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=server.url,
                                                                                 api_version="v1beta"))
            result = client.models.generate_content(model="gemini-2.5-flash", contents="Weather in Paris?",
                                                    config=types.GenerateContentConfig(tools=[get_weather]))
            assert server.unmatched == [] and server.remaining() == []
    finally:
        GoogleGenAIInstrumentor().uninstrument()
    assert ran == ["Paris"] and result.text == "It is sunny in Paris."
    finished = spans.get_finished_spans()
    tools = [s for s in finished if s.attributes.get(names.OPERATION) == "execute_tool"]
    calls = [s for s in finished if s.attributes.get(names.OPERATION) == "generate_content"]
    assert len(tools) == 1 and len(calls) == 2
    (tool,) = tools
    assert tool.name == "execute_tool get_weather"
    # between the model call that asked for it and the one given its result
    assert calls[0].end_time <= tool.start_time <= tool.end_time <= calls[1].start_time
    for key, level in semconv.TOOL_SPAN.items():
        assert CONVENTION_NAMES.get(key, "missing") is None, key
        if level == semconv.REQUIRED:
            assert key in tool.attributes
    for key in tool.attributes:
        assert CONVENTION_NAMES.get(key, "missing") is None, key
    assert tool.attributes[semconv.TOOL_NAME] == "get_weather"
    assert tool.attributes[semconv.TOOL_TYPE] == "function"
    assert tool.attributes[semconv.TOOL_DESCRIPTION] == "The weather in a city."
    assert (names.ERROR_TYPE in tool.attributes) is fails
    assert (tool.status.status_code is StatusCode.ERROR) is fails
    if content:
        assert json.loads(tool.attributes[semconv.TOOL_CALL_ARGUMENTS]) == {"city": "Paris"}
        if not fails:
            assert json.loads(tool.attributes[semconv.TOOL_CALL_RESULT]) == "sunny in Paris"
    else:
        assert semconv.TOOL_CALL_ARGUMENTS not in tool.attributes and semconv.TOOL_CALL_RESULT not in tool.attributes
    # the tool span is not an LLM call for the collector
    from otel_llmcost.collector import normalize

    facts = normalize.facts_of(dict(tool.attributes))
    assert not normalize.is_llm_call(*facts[:3])


def streamed_text(interaction: dict) -> str:
    """The answer's text as the recorded stream's raw events carry it."""
    text = []
    for event in response_events(interaction):
        for choice in event.get("choices") or ():
            text.append((choice.get("delta") or {}).get("content") or "")
        if event.get("type") == "content_block_delta":
            text.append(event["delta"].get("text") or "")
    return "".join(text)


@pytest.mark.parametrize("recording, sdk, call", [
    ("openai/test_chat/test_chat_streaming", "openai", lambda c: c.chat.completions.create),
    ("anthropic/test_messages/test_anthropic_message_streaming_legacy", "anthropic", lambda c: c.messages.create),
    ("openai/test_responses/test_responses_streaming", "openai", lambda c: c.responses.create),
])
def test_streamed_output_messages_when_opted_in(recording, sdk, call, tracing, monkeypatch):
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    with instrumented(tracing, monkeypatch, env) as exporter:
        calls = replay_case(recording, sdk, call, {})
    for span, (interaction, request, items, _) in zip(exporter.get_finished_spans(), calls):
        assert request["stream"] and isinstance(items, list) and items
        (message,) = json.loads(span.attributes[semconv.OUTPUT_MESSAGES])
        assert message["role"] == "assistant"
        assert message["finish_reason"] == list(span.attributes[semconv.FINISH_REASONS])[0]
        text = "".join(part["content"] for part in message["parts"] if part["type"] == "text")
        if sdk == "anthropic" or "choices" in (response_events(interaction) or [{}])[0]:
            assert text == streamed_text(interaction)
        else:  # the Responses API: the completed response's output text
            completed = [e for e in response_events(interaction) if e.get("type") == "response.completed"][-1]
            assert text == "".join(c["text"] for item in completed["response"]["output"] if item["type"] == "message"
                                   for c in item["content"] if c["type"] == "output_text")
        assert text
