"""The hot path's request decoder (`otlp_lite`) against its reference, the official protobuf classes read by
`normalize.attributes_of`/`facts_of`/`to_call`: the same requests give the same span fields, facts, resources,
calls and set-aside spans. Requests: spans the real SDKs made through our instrumentation from recorded traffic,
every spelling the collector reads, every AnyValue kind (nested too), big and odd numbers, unknown fields, empty
parts. Also the rows' record (`rows.Row`), recompiled for speed, against the function as written."""

from __future__ import annotations

import dataclasses
import math
import random
from decimal import Decimal

import anthropic
import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import replay
from otel_llmcost import names
from otel_llmcost.collector import normalize, otlp_lite, rows
from otel_llmcost.collector.pricing import Price, PricedUsage

UNKNOWN_FIELD = b"\xf8\x06\x01"  # field 111, a varint: in no OTLP message


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, dict keys in the same order."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def plain_calls(request: bytes) -> tuple[list, list]:
    """The reference: calls and set-aside spans read through the official classes."""
    calls, set_aside = [], []
    for resource_spans in ExportTraceServiceRequest.FromString(request).resource_spans:
        resource = {k: v for k, v in normalize.attributes_of(resource_spans.resource.attributes).items()
                    if not normalize.is_private(k, normalize.as_text(v))}
        service_name = normalize.as_text(resource.get("service.name")) or "unknown_service"
        resource_text = {key: normalize.as_text(value) for key, value in resource.items()}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                facts, names_usage, names_cache_hit, rest = normalize.facts_of(normalize.attributes_of(span.attributes))
                if not normalize.is_llm_call(facts, names_usage, names_cache_hit) or (
                        not names_usage and rest.get(names.USAGE_ELSEWHERE) == "true"):
                    continue
                try:
                    calls.append(normalize.to_call(span, facts, names_usage, rest, service_name,
                                                   scope_spans.scope.name, resource_text))
                except Exception as exc:
                    reason = str(exc) if isinstance(exc, normalize.SetAside) else f"{type(exc).__name__}: {exc}"
                    set_aside.append((span.trace_id.hex(), span.span_id.hex(), reason))
    return calls, set_aside


def assert_same_reading(request: bytes) -> None:
    plain = ExportTraceServiceRequest.FromString(request)
    for round in range(2):  # first decode, then look-ups of the decoded attributes
        lite = otlp_lite.lite_request(request)
        assert len(lite.resource_spans) == len(plain.resource_spans)
        for p_resource, l_resource in zip(plain.resource_spans, lite.resource_spans):
            assert len(l_resource.scope_spans) == len(p_resource.scope_spans)
            for p_scope, l_scope in zip(p_resource.scope_spans, l_resource.scope_spans):
                assert l_scope.scope.name == p_scope.scope.name and len(l_scope.spans) == len(p_scope.spans)
                for p, l in zip(p_scope.spans, l_scope.spans):
                    assert (l.trace_id, l.span_id, l.parent_span_id, l.name, l.start_time_unix_nano,
                            l.end_time_unix_nano, l.status.code) == (
                        p.trace_id, p.span_id, p.parent_span_id, p.name, p.start_time_unix_nano,
                        p.end_time_unix_nano, p.status.code)
                    want = normalize.facts_of(normalize.attributes_of(p.attributes))
                    facts, *rest = otlp_lite.span_facts(l.attributes)
                    # (the facts' order is not kept: a fact's key met first without a value, then with one, is
                    # read in its second place; the attributes stored keep theirs)
                    assert same(dict(sorted(facts.items())), dict(sorted(want[0].items()))), p.name
                    assert same(tuple(rest), want[1:]), p.name
        want_calls, want_set_aside = plain_calls(request)
        set_aside: list = []
        got = list(otlp_lite.calls_in(request, set_aside))
        assert len(got) == len(want_calls)
        for g, w in zip(got, want_calls):
            assert same(dataclasses.astuple(g), dataclasses.astuple(w)), w.span_name
        assert [entry[:3] for entry in set_aside] == want_set_aside
        if round == 0:
            assert list(otlp_lite.calls_in(plain, [])) == got  # a message as well as its bytes


# -- spans the real SDKs made through our instrumentation, from recorded traffic -----------------------------

RECORDINGS = [
    ("openai", "openai/test_chat/test_chat"),
    ("openai", "openai/test_prompt_caching/test_openai_prompt_caching"),
    ("openai", "openai/test_chat/test_chat_reasoning"),
    ("openai", "openai/test_chat/test_chat_with_service_tier"),
    ("anthropic", "anthropic/test_messages/test_anthropic_image_with_history"),
    ("anthropic", "anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy"),
    ("anthropic", "anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy"),
    ("anthropic", "anthropic/test_thinking/test_anthropic_thinking_legacy"),
]


@pytest.mark.parametrize("provider, name", RECORDINGS)
def test_recorded_calls_read_the_same(spans, provider, name):
    try:
        server_context = replay.ReplayServer(name)
    except FileNotFoundError:
        pytest.fail(f"recording {name} is missing")
    with server_context as server:
        for interaction in server.interactions:
            body = dict(interaction["request"]["body"])
            if provider == "openai":
                client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
                call = client.chat.completions.create
            else:
                client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
                call = client.messages.create
            try:
                result = call(**body)
                if body.get("stream"):
                    list(result)
            except (openai.APIError, anthropic.APIError):
                pass  # (a recorded error: its span is read like any other)
    finished = spans.get_finished_spans()
    assert finished
    request = encode_spans(finished).SerializeToString()
    assert list(otlp_lite.calls_in(request))
    assert_same_reading(request)


# -- made-up requests: every spelling, every value kind, edge cases --------------------------------------------


def kv(key: str, value=None) -> KeyValue:
    if isinstance(value, AnyValue):
        return KeyValue(key=key, value=value)
    return KeyValue(key=key, value=any_value(value))


def any_value(value) -> AnyValue:
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in value.items()]))
    return AnyValue(string_value=value)


def request_of(span_attributes: list[list[KeyValue]], resource: list[KeyValue] | None = None,
               scope: str = "some.instrumentation", start: int = 10**18, unknown: bool = False) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(resource if resource is not None else [kv("service.name", "svc")])
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    for i, attributes in enumerate(span_attributes):
        span = scope_spans.spans.add(trace_id=bytes(range(1, 17)), span_id=(i + 1).to_bytes(8, "big"),
                                     parent_span_id=b"" if i % 3 else bytes(8 * [9]), name=f"span {i}",
                                     start_time_unix_nano=start + i, end_time_unix_nano=start + i + 1_500_000,
                                     kind=Span.SPAN_KIND_CLIENT, trace_state="a=b", flags=1)
        span.status.code = i % 3
        span.attributes.extend(attributes)
        span.events.add(name="event", attributes=[kv("gen_ai.usage.input_tokens", 99)])  # never read
        span.links.add(trace_id=bytes(16 * [3]), span_id=bytes(8 * [4]))
        if unknown:
            span.MergeFromString(UNKNOWN_FIELD)
            for attribute in span.attributes:
                attribute.MergeFromString(UNKNOWN_FIELD)
    encoded = request.SerializeToString()
    return encoded + UNKNOWN_FIELD if unknown else encoded


BASE = [kv(names.PROVIDER, "openai"), kv(names.OPERATION, "chat"), kv(names.REQUEST_MODEL, "gpt-4o")]

VALUES = ["", "text", "12", " 7 ", "1e3", "nan", "-3", "ü ☃ \x00", "sk-" + "a" * 30, 0, 1, -1, 2**63 - 1, -2**63,
          2**53 + 1, 0.0, -0.0, 0.5, 3.0, 1e300, float("nan"), float("inf"), float("-inf"), True, False, b"",
          b"\x00\xff", [], [1, "a", 2.5, True, None], [[1, [2]], {"k": [3]}], {}, {"a": 1, "b": {"c": [1, {"d": b"x"}]}},
          None]


def test_every_spelling_with_every_value_kind_reads_the_same():
    cases = [BASE + [kv(key, value)] for key in normalize.SPELLINGS for value in VALUES]
    for start in range(0, len(cases), 500):
        assert_same_reading(request_of(cases[start:start + 500]))


def test_value_kinds_spellings_and_repeats_mixed_read_the_same():
    rng = random.Random(25)
    keys = list(normalize.SPELLINGS) + ["x.other", "http.request.header.authorization", "gen_ai.prompt",
                                        "llmcost.usage.elsewhere", "service.name", ""]
    cases = []
    for _ in range(400):
        attributes = [kv(rng.choice(keys), rng.choice(VALUES)) for _ in range(rng.randrange(0, 12))]
        if rng.random() < 0.3:
            attributes += [attributes[0]] if attributes else []  # a key repeated
        cases.append(attributes)
    assert_same_reading(request_of(cases))
    resource = [kv("service.name", "svc"), kv("host.name", "h"), kv("token", "s3cret"), kv("list", [1, 2]),
                kv("map", {"a": None}), kv("service.name", "svc2"), kv("empty")]
    assert_same_reading(request_of(cases[:50], resource=resource, unknown=True))


@pytest.mark.parametrize("request_bytes", [
    b"",
    ExportTraceServiceRequest().SerializeToString() + UNKNOWN_FIELD,
    request_of([]),
    request_of([[]]),
    request_of([BASE], resource=[]),
    request_of([BASE + [kv(names.INPUT_TOKENS, 2**63 - 1), kv(names.OUTPUT_TOKENS, str(2**64 - 1)),
                        kv(names.CACHE_READ_TOKENS, str(2**64)), kv(names.REASONING_TOKENS, -2**63)]]),
    request_of([BASE + [kv(names.INPUT_TOKENS, 1)]], start=2**63 - 1),  # beyond the rollups' minutes: set aside
    request_of([BASE + [kv(names.INPUT_TOKENS, 1), kv(names.PREFIX_LENGTH, 2**40)]], unknown=True),
    request_of([BASE + [kv(names.INPUT_TOKENS, float("nan")), kv(names.CACHE_READ_TOKENS, "inf")]]),
    request_of([[kv(names.USAGE_ELSEWHERE, "true"), kv(names.PROVIDER, "openai"), kv(names.OPERATION, "chat")]]),
    request_of([[kv(names.CACHE_HIT_KIND, "exact"), kv(names.CACHE_HIT_INPUT_TOKENS, 5)]], scope="otel_llmcost"),
], ids=["empty", "unknown-only", "no-spans", "no-attributes", "no-resource", "big-ints", "late-start",
        "unknown-fields", "nan", "usage-elsewhere", "cache-hit"])
def test_edge_cases_read_the_same(request_bytes):
    assert_same_reading(request_bytes)


def test_kept_attributes_apply_to_both_readings():
    secret = [BASE + [kv("http.request.header.authorization", "Bearer abcdefghijklmnop"), kv(names.INPUT_TOKENS, 3)]]
    request = request_of(secret, resource=[kv("service.name", "svc"), kv("api_key", "k")])
    try:
        assert_same_reading(request)
        normalize.set_kept_attributes(["http.request.header.*", "api_key"])
        assert_same_reading(request)
        [call] = otlp_lite.calls_in(request)
        assert "http.request.header.authorization" in call.attributes and "api_key" in call.resource_attributes
    finally:
        normalize.set_kept_attributes([])
    [call] = otlp_lite.calls_in(request)
    assert "http.request.header.authorization" not in call.attributes


# -- typed records ----------------------------------------------------------------------------------------------


def test_calls_from_the_hot_path_have_every_field():
    [call] = otlp_lite.calls_in(request_of([BASE + [kv(names.INPUT_TOKENS, 3)]]))
    for f in dataclasses.fields(normalize.Call):
        assert hasattr(call, f.name), f.name
    with pytest.raises(TypeError):
        normalize.Call(10**18, 1.0)  # keyword only


def test_rows_built_for_speed_are_the_rows_as_written():
    """`rows.row` and `rows.cache_hit_row` are recompiled to build `Row` in field order: the same rows as the
    functions as written, which build it by keyword, for priced, unpriced, estimated, too large and cache hits."""
    usage = PricedUsage(input_tokens=100, output_tokens=20, cache_read_tokens=30, compaction_input_tokens=5,
                        input_audio_tokens=7, output_image_tokens=2)
    prices = [
        Price("priced", total=Decimal("0.01123456789"), input=Decimal("0.001"), cache_read=Decimal("0.0002"),
              cache_write=Decimal("0.00003456789"), output=Decimal(0), cache_savings=Decimal("0.0000001"),
              source="genai-prices", model_id="gpt-4o", fees=Decimal("0.01")),
        Price("unpriced", note="no price for it"),
        Price("priced", total=Decimal("1e12"), input=Decimal("1e12"), output=Decimal(0), source="s", model_id="m"),
    ]
    plain_call = next(otlp_lite.calls_in(request_of([BASE + [kv(names.INPUT_TOKENS, 3)]])))
    estimated = next(otlp_lite.calls_in(request_of([BASE + [kv(names.INPUT_TOKENS, 3),
                                                            kv(names.USAGE_ESTIMATED, "true")]])))
    hit = next(otlp_lite.calls_in(request_of([[kv(names.CACHE_HIT_KIND, "exact"),
                                                kv(names.CACHE_HIT_INPUT_TOKENS, 5)]], scope="otel_llmcost")))
    for call in (plain_call, estimated, hit):
        for usage_of_call in (call.usage, usage):
            call.usage = usage_of_call
            for price in prices:
                for build in (rows.row, rows.cache_hit_row):
                    fast, written = build(call, price), build.__wrapped__(call, price)
                    assert type(fast) is rows.Row and same(tuple(fast), tuple(written))
                    assert fast._fields == rows.COLUMNS
