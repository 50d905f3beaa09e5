"""The GenAI client metrics against the installed conventions: real SDK calls (recorded traffic replayed from
127.0.0.1), an `InMemoryMetricReader`, and the instruments' names, units and descriptions as the conventions
package's own `create_gen_ai_client_*` helpers make them (`tests/conventions.py`).
"""

from __future__ import annotations

import json

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from otel_llmcost import names
from otel_llmcost.instrumentation import metrics as our_metrics
from otel_llmcost.instrumentation import semconv

try:
    from . import conventions, replay
    from .test_instr_support import body_of, both_instrumented, replay_case
except ImportError:
    import conventions
    import replay
    from test_instr_support import body_of, both_instrumented, replay_case

HELPERS = conventions.metric_helpers()
DURATION = our_metrics._metrics.GEN_AI_CLIENT_OPERATION_DURATION
TOKENS = our_metrics._metrics.GEN_AI_CLIENT_TOKEN_USAGE
FIRST_CHUNK = our_metrics._metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK


instrumented = both_instrumented


def exported(reader) -> dict[str, object]:
    """metric name -> the exported metric (one scope: ours)."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    out = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "otel_llmcost"
            for metric in scope_metrics.metrics:
                out[metric.name] = metric
    return out


def points(metric) -> list[HistogramDataPoint]:
    return list(metric.data.data_points)


def replay_calls(recording: str, sdk: str, call) -> None:
    replay_case(recording, sdk, call, {})


CASES = [
    ("openai/test_chat/test_chat", "openai", lambda c: c.chat.completions.create),
    ("openai/test_chat/test_chat_streaming", "openai", lambda c: c.chat.completions.create),
    ("openai/test_embeddings/test_azure_openai_embeddings", "openai", lambda c: c.embeddings.create),  # 2 are 401
    ("anthropic/test_messages/test_anthropic_message_streaming_legacy", "anthropic", lambda c: c.messages.create),
    ("anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy", "anthropic", lambda c: c.messages.create),
]


def test_instruments_are_the_conventions_own(tracing, monkeypatch):
    """Name, unit and description as the package's helper makes each; a histogram with the advised buckets."""
    with instrumented(tracing, monkeypatch) as (_, reader):
        replay_calls("openai/test_chat/test_chat_streaming", "openai", lambda c: c.chat.completions.create)
        ours = exported(reader)
    reference_reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reference_reader]).get_meter("reference")
    for name in (DURATION, TOKENS, FIRST_CHUNK):
        HELPERS[name](meter).record(1, {})
    reference = exported_any(reference_reader)
    for name in (DURATION, TOKENS, FIRST_CHUNK):
        assert (ours[name].name, ours[name].unit, ours[name].description) == \
            (reference[name].name, reference[name].unit, reference[name].description)
        bounds = tuple(points(ours[name])[0].explicit_bounds)
        assert bounds == {DURATION: our_metrics.DURATION_BUCKETS, TOKENS: our_metrics.TOKEN_BUCKETS,
                          FIRST_CHUNK: our_metrics.TIME_TO_FIRST_CHUNK_BUCKETS}[name]
        assert list(bounds) == sorted(bounds) and len(set(bounds)) == len(bounds)


def exported_any(reader) -> dict[str, object]:
    return {metric.name: metric for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics for metric in sm.metrics}


@pytest.mark.parametrize("recording, sdk, call", CASES, ids=[c[0].rsplit("/", 1)[1] for c in CASES])
def test_metrics_are_what_the_spans_say(recording, sdk, call, tracing, monkeypatch):
    with instrumented(tracing, monkeypatch) as (exporter, reader):
        replay_calls(recording, sdk, call)
        spans = exporter.get_finished_spans()
        metrics = exported(reader)
    token_types = conventions.enum_values(our_metrics.TOKEN_TYPE)
    names_of_conventions = conventions.attribute_names()

    def key(attributes, keys):
        return tuple(attributes.get(k) for k in keys)

    identity = [k for k in semconv.METRIC_ATTRIBUTES if k != names.ERROR_TYPE]
    # Duration: one measurement per call, with the span's identity and, for a failed call, its error.type.
    expected_durations: dict[tuple, int] = {}
    for span in spans:
        k = key(span.attributes, identity + [names.ERROR_TYPE])
        expected_durations[k] = expected_durations.get(k, 0) + 1
    got = {key(p.attributes, identity + [names.ERROR_TYPE]): p.count for p in points(metrics[DURATION])}
    assert got == expected_durations
    for point in points(metrics[DURATION]):
        assert point.sum > 0
    # Token usage: the span's input and output tokens, by token type (values of the conventions' enum).
    expected_tokens: dict[tuple, list[int]] = {}
    for span in spans:
        for attribute, token_type in ((names.INPUT_TOKENS, "input"), (names.OUTPUT_TOKENS, "output")):
            if attribute in span.attributes:
                expected_tokens.setdefault(key(span.attributes, identity) + (token_type,), []).append(
                    span.attributes[attribute])
    got_tokens = {key(p.attributes, identity) + (p.attributes[our_metrics.TOKEN_TYPE],): (p.count, p.sum)
                  for p in points(metrics[TOKENS])} if TOKENS in metrics else {}
    assert got_tokens == {k: (len(v), sum(v)) for k, v in expected_tokens.items()}
    # Every point's attributes: current names of the installed conventions, the required ones there.
    for metric in metrics.values():
        for point in points(metric):
            for name, value in point.attributes.items():
                assert names_of_conventions.get(name, "missing") is None, name
            for name, level in semconv.METRIC_ATTRIBUTES.items():
                if level == semconv.REQUIRED:
                    assert name in point.attributes
            assert (semconv.SERVER_PORT in point.attributes) is (semconv.SERVER_ADDRESS in point.attributes)
            if metric.name == TOKENS:
                assert point.attributes[our_metrics.TOKEN_TYPE] in token_types
                assert names.ERROR_TYPE not in point.attributes
    # Time to first chunk: once per streamed call that succeeded, never for a plain one.
    streamed = [s for s in spans if s.attributes.get(names.REQUEST_STREAM)]
    if streamed:
        assert sum(p.count for p in points(metrics[FIRST_CHUNK])) == len(streamed)
        for point in points(metrics[FIRST_CHUNK]):
            duration = [p for p in points(metrics[DURATION]) if p.attributes == point.attributes][0]
            assert 0 < point.sum <= duration.sum
    else:
        assert FIRST_CHUNK not in metrics


@pytest.mark.parametrize("how", ["env", "argument"])
def test_one_switch_turns_the_metrics_off(how, tracing, monkeypatch):
    env, kwargs = ({"OTEL_LLMCOST_METRICS": "false"}, {}) if how == "env" else ({}, {"metrics": False})
    with instrumented(tracing, monkeypatch, env, **kwargs) as (exporter, reader):
        replay_calls("openai/test_chat/test_chat", "openai", lambda c: c.chat.completions.create)
        assert exporter.get_finished_spans()
        assert exported(reader) == {}


def test_a_failing_meter_changes_nothing_for_the_app(tracing, monkeypatch):
    """A metrics SDK that raises on record: the call returns what the SDK returned, the span still ends."""
    def broken(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(our_metrics.GenAIMetrics, "record", broken)
    with instrumented(tracing, monkeypatch) as (exporter, _):
        with replay.ReplayServer("openai/test_chat/test_chat") as server:
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
            interaction = server.interactions[0]
            result = client.chat.completions.create(**body_of(interaction))
        span = exporter.get_finished_spans()[0]
    assert type(result) is openai.types.chat.ChatCompletion
    assert result.id == json.loads(interaction["response"]["body"])["id"]
    assert span.end_time is not None and span.attributes[names.INPUT_TOKENS] == result.usage.prompt_tokens
