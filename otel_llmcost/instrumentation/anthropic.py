"""Anthropic (direct, Bedrock, Vertex): endpoints and response readers.

Anthropic's `input_tokens` excludes cache reads and cache writes; `gen_ai.usage.input_tokens` counts all
input tokens, so the three are added here, once.

`anthropic` 2.x traces its own calls whenever a tracer provider is set. One call must make one span,
so while our span is open the SDK's own call span is not started (it is left alone everywhere else):
our span carries the same usage plus attribution. Should the SDK move the function we hook, both
spans are exported and the collector counts the call once (see the collector's de-duplication).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Collection, Mapping

from opentelemetry import context

from .. import hosts, names
from . import semconv
from .core import (CALL_IN_PROGRESS_KEY, Described, Endpoint, Once, Provider, StreamReader, field, non_negative_int,
                   stainless_describe)
from .instrumentor import SdkInstrumentor

def provider_name(client: Any) -> str:
    kind = type(client).__name__
    if "Bedrock" in kind:
        return "aws.bedrock"
    if "Vertex" in kind:
        return "gcp.vertex_ai"
    base_url = getattr(client, "_base_url", None) or client.base_url
    return provider_for_host(base_url.host, base_url.port)


@lru_cache(maxsize=256)
def provider_for_host(host: str, port: int | None = None) -> str:
    """An Anthropic-compatible server (Ollama and vLLM serve the Messages API too) on loopback, a private network
    or a known self-hosting server is named as such (`otel_llmcost.hosts`), unless the user's mapping names the
    host (`hosted`: Anthropic's API behind a gateway or proxy)."""
    host = host.lower()
    named = hosts.named_provider(host)
    if named and named != hosts.HOSTED:
        return named
    if named is None and host != "api.anthropic.com":
        local = hosts.self_hosted_provider(host, port)
        if local:
            return local
    return "anthropic"


def request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    attributes = semconv.anthropic_request(body)
    tier = body.get("service_tier")
    if isinstance(tier, str):
        attributes[names.REQUEST_SERVICE_TIER] = tier
    return attributes


def usage_attributes(usage: Any) -> dict[str, Any]:
    """Read on every call, so `field` and `non_negative_int` are written out where it counts (see `field`)."""
    attributes: dict[str, Any] = {}
    if usage is None:
        return attributes
    get = dict.get if type(usage) is dict else getattr
    uncached = get(usage, "input_tokens", None)
    read = get(usage, "cache_read_input_tokens", None)
    read = read if type(read) is int and read > 0 else 0
    written = get(usage, "cache_creation_input_tokens", None)
    written = written if type(written) is int and written > 0 else 0
    if type(uncached) is int and uncached >= 0:
        attributes[names.INPUT_TOKENS] = uncached + read + written
    output = get(usage, "output_tokens", None)
    if type(output) is int and output >= 0:
        attributes[names.OUTPUT_TOKENS] = output
    details = get(usage, "output_tokens_details", None)
    if details is not None:
        thinking = non_negative_int(field(details, "thinking_tokens"))
        if thinking:
            attributes[names.REASONING_TOKENS] = thinking
    if read:
        attributes[names.CACHE_READ_TOKENS] = read
    if written:
        attributes[names.CACHE_WRITE_TOKENS] = written
        written_1h = non_negative_int(field(get(usage, "cache_creation", None), "ephemeral_1h_input_tokens"))
        if written_1h:
            attributes[names.CACHE_WRITE_1H_TOKENS] = written_1h
    server_tool_use = get(usage, "server_tool_use", None)
    if server_tool_use is not None:
        searches = non_negative_int(field(server_tool_use, "web_search_requests"))
        if searches:
            attributes[names.WEB_SEARCH_REQUESTS] = searches
    tier = get(usage, "service_tier", None)
    if isinstance(tier, str):
        attributes[names.SERVICE_TIER] = tier
    speed = get(usage, "speed", None)  # `fast` has its own price
    if isinstance(speed, str):
        attributes[names.SPEED] = speed
    iterations = get(usage, "iterations", None)
    if iterations:
        _compaction_attributes(iterations, attributes)
    return attributes


def _compaction_attributes(iterations: Any, attributes: dict[str, Any]) -> None:
    """Compaction iterations are billed, but not included in the top-level usage fields: their sums, input
    counted with its cache reads and writes (as `gen_ai.usage.input_tokens` is)."""
    sums = [0, 0, 0, 0]  # input, output, cache read, cache write
    for iteration in iterations if isinstance(iterations, list) else ():
        if field(iteration, "type") != "compaction":
            continue
        read = non_negative_int(field(iteration, "cache_read_input_tokens")) or 0
        written = non_negative_int(field(iteration, "cache_creation_input_tokens")) or 0
        sums[0] += (non_negative_int(field(iteration, "input_tokens")) or 0) + read + written
        sums[1] += non_negative_int(field(iteration, "output_tokens")) or 0
        sums[2] += read
        sums[3] += written
    for name, value in zip((names.COMPACTION_INPUT_TOKENS, names.COMPACTION_OUTPUT_TOKENS,
                            names.COMPACTION_CACHE_READ_TOKENS, names.COMPACTION_CACHE_WRITE_TOKENS), sums):
        if value:
            attributes[name] = value


def read_message(message: Any) -> dict[str, Any]:
    get = dict.get if type(message) is dict else getattr  # `field`, written out (read on every call)
    return add_message_identity(usage_attributes(get(message, "usage", None)), message)


def add_message_identity(attributes: dict[str, Any], message: Any) -> dict[str, Any]:
    """The response model and id of a message, added to `attributes`."""
    get = dict.get if type(message) is dict else getattr
    model = get(message, "model", None)
    if isinstance(model, str):
        attributes[names.RESPONSE_MODEL] = model
    message_id = get(message, "id", None)
    if isinstance(message_id, str):
        attributes[names.RESPONSE_ID] = message_id
    return attributes


_USAGE_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens",
               "cache_creation", "server_tool_use", "service_tier", "output_tokens_details", "speed", "iterations")


def _model_values(model: Any) -> dict[str, Any]:
    """A response model's fields as a dict. A `message_delta`'s usage model lacks some of the fields read, and
    `getattr` of a field a pydantic model lacks raises inside, per field: its `__dict__` (and the fields
    the SDK version does not know, which pydantic keeps apart) is read instead."""
    values = getattr(model, "__dict__", None)
    if type(values) is not dict:
        return {key: getattr(model, key, None) for key in _USAGE_KEYS}
    extra = getattr(model, "__pydantic_extra__", None)
    return {**values, **extra} if extra else values


class MessageEventReader(StreamReader):
    """`message_start` carries the input side of the usage; each `message_delta` the running totals. A stream
    closed before its `message_delta` has the input but not the output: the output is estimated from the text
    streamed (about 4 characters a token) and flagged (`llmcost.usage.estimated`)."""

    __slots__ = ("message", "usage", "body", "characters", "delta_seen")

    def __init__(self) -> None:
        self.message = self.body = None
        self.usage: dict[str, Any] = {}
        self.characters = 0
        self.delta_seen = False

    def begin(self, described: Described, record_result: Any) -> None:
        self.body = described.body

    def read(self, event: Any) -> None:
        kind = event.get("type") if type(event) is dict else getattr(event, "type", None)  # `field`, written out
        if kind == "content_block_delta":
            delta = event.get("delta") if type(event) is dict else getattr(event, "delta", None)
            # (its fields as a dict: `getattr` of a field this kind of delta lacks raises inside pydantic)
            values = delta if type(delta) is dict else getattr(delta, "__dict__", None) or {}
            text = values.get("text") or values.get("partial_json") or values.get("thinking")
            if type(text) is str:
                self.characters += len(text)
        elif kind == "message_delta":
            self.delta_seen = True
            self._merge(field(event, "usage"))
        elif kind == "message_start":
            self.message = field(event, "message")
            self._merge(field(self.message, "usage"))

    def _merge(self, usage: Any) -> None:
        if usage is None:
            return
        values = usage if type(usage) is dict else _model_values(usage)
        for key in _USAGE_KEYS:
            value = values.get(key)
            if value is not None:
                self.usage[key] = value

    def attributes(self) -> dict[str, Any]:
        attributes = usage_attributes(self.usage)  # message_start's usage is in it, merged with the deltas'
        if self.message is not None:
            add_message_identity(attributes, self.message)
        if names.INPUT_TOKENS not in attributes:
            attributes[names.USAGE_MISSING] = True
        elif not self.delta_seen and self.body is not None:
            estimate = -(-self.characters // 4)
            if estimate > attributes.get(names.OUTPUT_TOKENS, 0):
                attributes[names.OUTPUT_TOKENS] = estimate
            attributes[names.USAGE_ESTIMATED] = True
            attributes[names.USAGE_NOTE] = ("the stream ended before its final usage (closed early or cut short): "
                                           "output tokens estimated from the text, about 4 characters a token")
        return attributes


def _stream_finish_reasons(last_two: tuple[Any, Any]) -> list[str] | None:
    """The `message_delta` (the last event but `message_stop`) says why the model stopped."""
    for event in reversed(last_two):
        if field(event, "type") == "message_delta":
            return semconv.anthropic_finish_reasons(field(event, "delta"))
    return None


def _event_text(event: Any) -> str | None:
    if field(event, "type") == "content_block_delta":
        return field(field(event, "delta"), "text")
    return None


ENDPOINTS = {
    "/v1/messages": Endpoint("chat", read_message, MessageEventReader, semconv.anthropic_finish_reasons,
                             _stream_finish_reasons, semconv.anthropic_output, _event_text),
    "/v1/complete": Endpoint("text_completion", read_message, None, semconv.anthropic_finish_reasons),
}


_recorded = Once()  # (batch id, custom_id) of the Message Batch results recorded


class BatchResultReader(StreamReader):
    """`messages.batches.results()` (and the beta one): each succeeded result, as the app reads it, becomes a
    call of its own (`record_result`), priced at the batch rate and linked to the batch and its custom_id.
    Errored, canceled and expired requests are not billed: no row."""

    __slots__ = ("batch_id", "record")

    def __init__(self) -> None:
        self.batch_id = None
        self.record: Any = None

    def begin(self, described: Described, record_result: Any) -> None:
        self.batch_id = described.body.get("batch_id")
        self.record = record_result

    def read(self, line: Any) -> bool:
        result = field(line, "result")
        if field(result, "type") != "succeeded":
            return False
        message = field(result, "message")
        custom_id = field(line, "custom_id")
        if message is None or not _recorded.first((self.batch_id, custom_id)):
            return False
        attributes = read_message(message)
        attributes[names.OPERATION] = "chat"
        model = field(message, "model")
        if isinstance(model, str):
            attributes[names.REQUEST_MODEL] = model
        attributes[names.SERVICE_TIER] = "batch"
        if self.batch_id:
            attributes[names.BATCH_ID] = self.batch_id
        if isinstance(custom_id, str):
            attributes[names.BATCH_CUSTOM_ID] = custom_id
        self.record(attributes)
        return False

    def attributes(self) -> dict[str, Any]:
        return {names.BATCH_ID: self.batch_id} if self.batch_id else {}


BATCH_RESULTS = Endpoint("batch_results", lambda result: {}, BatchResultReader, spends=False)
_BATCH_RESULTS_PATH = re.compile(r"/v1/messages/batches/([^/?]+)/results(?:\?|$)")


def describing_batch_results(describe: Any) -> Any:
    """Wraps `describe` to see a Message Batch's results being fetched (their URL is the batch's `results_url`)."""

    def describe_results(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Described | None:
        described = describe(wrapped, instance, args, kwargs)
        if described is not None:
            return described
        options = args[1] if len(args) > 1 else kwargs["options"]
        match = _BATCH_RESULTS_PATH.search(options.url) if str(options.method).lower() == "get" else None
        return Described(BATCH_RESULTS, {"batch_id": match.group(1)}, None, False) if match else None

    return describe_results


def endpoint_for(path: str) -> Endpoint | None:
    return ENDPOINTS.get(path.split("?", 1)[0])


def prefix(body: Mapping[str, Any]) -> list[Any]:
    """The stable prompt prefix: `system` and `tools`."""
    return [part for part in (body.get("system"), body.get("tools")) if part]


def _skip_native_span_inside_ours(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    if context.get_value(CALL_IN_PROGRESS_KEY):
        return None  # the SDK then runs the call untraced; our span describes it
    return wrapped(*args, **kwargs)


class AnthropicInstrumentor(SdkInstrumentor):
    """Traces every LLM call made through the `anthropic` SDK (sync and async, streaming included; the
    Bedrock and Vertex clients too)."""

    sync_requests = (("anthropic._base_client", "SyncAPIClient.request"),)
    async_requests = (("anthropic._base_client", "AsyncAPIClient.request"),)
    # MessageStream.close() closes its raw Stream, so the SDK's Stream classes are enough.
    closes = (("anthropic._streaming", "Stream.close"), ("anthropic._streaming", "AsyncStream.close"))
    parses = (("anthropic._response", "BaseAPIResponse._parse"),)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("anthropic >= 0.30",)

    def provider(self, **kwargs: Any) -> Provider:
        import anthropic
        from anthropic._response import BaseAPIResponse

        raw_types: tuple[type, ...] = (BaseAPIResponse,)
        try:
            from anthropic._legacy_response import LegacyAPIResponse

            raw_types += (LegacyAPIResponse,)
        except ImportError:
            pass
        stream_types: tuple[type, ...] = (anthropic.Stream,)
        async_stream_types: tuple[type, ...] = (anthropic.AsyncStream,)
        try:  # batch results: JSON lines, read as the app iterates them
            from anthropic._decoders.jsonl import AsyncJSONLDecoder, JSONLDecoder

            stream_types += (JSONLDecoder,)
            async_stream_types += (AsyncJSONLDecoder,)
        except ImportError:
            pass
        return Provider(
            describe=describing_batch_results(stainless_describe(endpoint_for)),
            provider_name=provider_name,
            request_attributes=request_attributes,
            prefix=prefix,
            stream_types=stream_types,
            async_stream_types=async_stream_types,
            raw_response_types=raw_types,
            server=semconv.stainless_server,
            input_messages=semconv.anthropic_input,
        )

    def _instrument_more(self) -> None:
        import anthropic._base_client as base_client
        from wrapt import wrap_function_wrapper

        if hasattr(base_client, "start_api_call_span"):
            wrap_function_wrapper(base_client, "start_api_call_span", _skip_native_span_inside_ours)

    def _uninstrument_more(self) -> None:
        import anthropic._base_client as base_client
        from opentelemetry.instrumentation.utils import unwrap

        if hasattr(base_client, "start_api_call_span"):
            unwrap(base_client, "start_api_call_span")
