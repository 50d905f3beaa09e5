"""The GenAI client metrics, through the OpenTelemetry metrics API: `gen_ai.client.operation.duration`,
`gen_ai.client.token.usage` (one point per token type, input and output) and, for streams,
`gen_ai.client.operation.time_to_first_chunk`.

Each instrument is made with the name, unit and description that the installed conventions' own
`create_gen_ai_client_*` helper gives it, plus the bucket boundaries the conventions advise (the helpers take
none). They are recorded from the attributes the span gets, when the call ends: one reading of the response
serves both.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from opentelemetry.metrics import Histogram, Meter
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _metrics

from .. import names
from . import semconv

# Explicit bucket boundaries, as the conventions advise them for each instrument.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
TIME_TO_FIRST_CHUNK_BUCKETS = DURATION_BUCKETS

TOKEN_TYPE = _gen_ai.GEN_AI_TOKEN_TYPE
TOKEN_INPUT = _gen_ai.GenAiTokenTypeValues.INPUT.value
TOKEN_OUTPUT = _gen_ai.GenAiTokenTypeValues.OUTPUT.value
ERROR_TYPE = _error.ERROR_TYPE

# The attributes a metric point takes from the span's: those the conventions give the metrics (error.type is the
# call's outcome, added apart).
FROM_SPAN = tuple(key for key in semconv.METRIC_ATTRIBUTES if key != ERROR_TYPE)


def instrument_spec(create: Callable[[Any], Any]) -> dict[str, str]:
    """`name`, `unit` and `description` as the conventions' helper `create` passes them to a meter."""
    seen: dict[str, str] = {}

    class Recording:
        def create_histogram(self, name: str, unit: str = "", description: str = "", **_: Any) -> None:
            seen.update(name=name, unit=unit, description=description)

    create(Recording())
    return seen


def _time_to_first_chunk_helper() -> Callable[[Any], Any] | None:
    return getattr(_metrics, "create_gen_ai_client_operation_time_to_first_chunk", None)


class GenAIMetrics:
    """The instruments of one instrumentor, and the recording of one finished call."""

    def __init__(self, meter: Meter) -> None:
        self.duration: Histogram = meter.create_histogram(
            **instrument_spec(_metrics.create_gen_ai_client_operation_duration),
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.tokens: Histogram = meter.create_histogram(
            **instrument_spec(_metrics.create_gen_ai_client_token_usage),
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        helper = _time_to_first_chunk_helper()
        # Older conventions packages lack it: the name the contrib's GenAI utilities use then.
        spec = instrument_spec(helper) if helper is not None else {
            "name": "gen_ai.client.operation.time_to_first_chunk", "unit": "s",
            "description": "Time to receive the first chunk of a streamed response."}
        self.time_to_first_chunk: Histogram = meter.create_histogram(
            **spec, explicit_bucket_boundaries_advisory=TIME_TO_FIRST_CHUNK_BUCKETS)

    def record(self, request: Mapping[str, Any], response: Mapping[str, Any] | None, seconds: float,
               first_chunk_seconds: float | None, error_type: str | None) -> None:
        """One finished call: `request` and `response` are the span's attributes set at its start and end."""
        point: dict[str, Any] = {}
        for key in FROM_SPAN:
            value = request.get(key)
            if value is None and response:
                value = response.get(key)
            if value is not None:
                point[key] = value
        if response:  # tokens billed, even by a call that failed later (a stream cut short): not an error's
            for key, token_type in ((names.INPUT_TOKENS, TOKEN_INPUT), (names.OUTPUT_TOKENS, TOKEN_OUTPUT)):
                count = response.get(key)
                if type(count) is int:
                    self.tokens.record(count, {**point, TOKEN_TYPE: token_type})
        if error_type:
            point[ERROR_TYPE] = error_type
        self.duration.record(seconds, point)
        if first_chunk_seconds is not None:
            self.time_to_first_chunk.record(first_chunk_seconds, point)
