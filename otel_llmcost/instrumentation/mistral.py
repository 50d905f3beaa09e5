"""Mistral (the native `mistralai` SDK): endpoints and response readers.

The SDK (Speakeasy-generated) has no single request method whose arguments say what the call is, so its public
resource methods are wrapped: `chat.complete`/`stream`, `fim.complete`/`stream`, `embeddings.create`, and their
`_async` twins (`chat.parse` goes through `complete`). Their keyword arguments are the request body. A stream
is an `EventStream` (or `EventStreamAsync`) whose public `generator` yields the events: ours is put in its place
(`EVENT_STREAMS`), and its `close()` ends the call's span.

The SDK traces its own calls when the app opts in (`MISTRAL_SDK_TELEMETRY`, `configure_telemetry`). One call
must make one span, so while our span is open the SDK starts none (it is left alone everywhere else), as for
`anthropic` 2.x.

Mistral's usage has OpenAI's fields: `prompt_tokens` already includes the cached
`prompt_tokens_details.cached_tokens`, so it is copied as is. Every stream ends with a chunk that carries the
usage; a stream left before it is estimated from the text, as an OpenAI stream is, and flagged.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from opentelemetry import context

from .. import names
from . import semconv
from .core import (CALL_IN_PROGRESS_KEY, Described, Endpoint, Provider, StreamHook, StreamReader,
                   add_response_identity, field, non_negative_int, provider_for_base_url)
from .instrumentor import SdkInstrumentor
from .openai import CUT_SHORT, add_estimate

PROVIDER = "mistral_ai"
_API_HOST = "api.mistral.ai"


def provider_name(resource: Any) -> str:
    """`mistral_ai` for Mistral's API (and a host the user maps as `hosted`), else a self-hosting server's name
    (`core.provider_for_base_url`)."""
    url = _server_url(resource)
    return provider_for_base_url(url, PROVIDER, _API_HOST) if url else PROVIDER


def _server_url(resource: Any) -> str:
    """The base URL a resource (`client.chat`, ...) sends to, from the SDK's public configuration."""
    try:
        url, _ = resource.sdk_configuration.get_server_details()
        return url if isinstance(url, str) else ""
    except Exception:
        return ""


def server(resource: Any) -> dict[str, Any]:
    url = _server_url(resource)
    return semconv.server_of_url(url) if url else {}


# -- the request -------------------------------------------------------------------------------------------

_NUMBERS = {"temperature": semconv.TEMPERATURE, "top_p": semconv.TOP_P, "top_k": semconv.TOP_K,
            "presence_penalty": semconv.PRESENCE_PENALTY, "frequency_penalty": semconv.FREQUENCY_PENALTY}
_INTEGERS = {"max_tokens": semconv.MAX_TOKENS, "random_seed": semconv.SEED, "n": semconv.CHOICE_COUNT,
             "output_dimension": semconv.DIMENSION_COUNT}
_OUTPUT_TYPES = {"json_object": semconv.OUTPUT_JSON, "json_schema": semconv.OUTPUT_JSON, "text": semconv.OUTPUT_TEXT}


def _text_value(value: Any) -> Any:
    """An SDK enum as its value, anything else as is."""
    return getattr(value, "value", value)


def request_attributes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, value in kwargs.items():
        name = _NUMBERS.get(key)
        if name is not None:
            if type(value) in (int, float):
                attributes[name] = value
            continue
        name = _INTEGERS.get(key)
        if name is not None:
            if type(value) is int and not (name is semconv.CHOICE_COUNT and value == 1):
                attributes[name] = value
        elif key == "stop":
            stop = [value] if isinstance(value, str) else value
            if isinstance(stop, list) and stop and all(isinstance(item, str) for item in stop):
                attributes[semconv.STOP_SEQUENCES] = stop
        elif key == "response_format":
            output_type = _OUTPUT_TYPES.get(_text_value(field(value, "type")))
            if output_type:
                attributes[semconv.OUTPUT_TYPE] = output_type
        elif key == "encoding_format":
            encoding = _text_value(value)
            if isinstance(encoding, str):
                attributes[semconv.ENCODING_FORMATS] = [encoding]
        elif key == "service_tier":
            tier = _text_value(value)
            if isinstance(tier, str):
                attributes[names.REQUEST_SERVICE_TIER] = tier
    return attributes


def prefix(kwargs: Mapping[str, Any]) -> list[Any]:
    """The stable prompt prefix: the leading system messages and the tool definitions."""
    parts: list[Any] = []
    for message in kwargs.get("messages") or ():
        if field(message, "role") != "system":
            break
        parts.append(field(message, "content"))
    tools = kwargs.get("tools")
    if tools:
        parts.append(tools)
    return parts


def _as_dicts(messages: Any) -> list[Any]:
    """Messages as the app gave them, SDK models as dicts (for the conventions' messages and estimates)."""
    return [message if type(message) is dict else message.model_dump()
            for message in messages or () if type(message) is dict or hasattr(message, "model_dump")]


def _text_body(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The request's text as an OpenAI body (chat messages, or FIM's prompt and suffix)."""
    if "prompt" in kwargs:
        return {"prompt": [text for text in (kwargs.get("prompt"), kwargs.get("suffix")) if isinstance(text, str)]}
    return {"messages": _as_dicts(kwargs.get("messages"))}


def input_messages(kwargs: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if "prompt" in kwargs:  # FIM: the code before the cursor, as the user's message
        return semconv.openai_input({"prompt": kwargs["prompt"]})
    return semconv.openai_input(_text_body(kwargs))


# -- the response ------------------------------------------------------------------------------------------

def _sent(usage: Any) -> Mapping[str, Any]:
    """The usage fields the server sent. The SDK's `UsageInfo` defaults absent counts to 0, which must not be
    read as zero tokens: only the fields set, and the ones it does not know (`model_extra`), are."""
    if type(usage) is dict:
        return usage
    values = {key: getattr(usage, key, None) for key in getattr(usage, "model_fields_set", ())}
    extra = getattr(usage, "model_extra", None)
    if extra:
        values.update(extra)
    return values


def usage_attributes(usage: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if usage is None:
        return attributes
    sent = _sent(usage)
    prompt = non_negative_int(sent.get("prompt_tokens"))
    if prompt is not None:
        attributes[names.INPUT_TOKENS] = prompt
    completion = non_negative_int(sent.get("completion_tokens"))
    if completion is not None:
        attributes[names.OUTPUT_TOKENS] = completion
    cached = non_negative_int(field(sent.get("prompt_tokens_details"), "cached_tokens"))
    if cached:
        attributes[names.CACHE_READ_TOKENS] = cached
    reasoning = non_negative_int(field(sent.get("completion_tokens_details"), "reasoning_tokens"))
    if reasoning:
        attributes[names.REASONING_TOKENS] = reasoning
    tier = sent.get("service_tier")
    if isinstance(tier, str):
        attributes[names.SERVICE_TIER] = tier
    return attributes


def read_response(response: Any) -> dict[str, Any]:
    """A chat, FIM or embeddings response."""
    attributes = usage_attributes(field(response, "usage"))
    if names.INPUT_TOKENS not in attributes:
        attributes[names.USAGE_MISSING] = True
    return add_response_identity(attributes, response)


class ChunkReader(StreamReader):
    """The events of a chat or FIM stream (`CompletionEvent`, its chunk in `data`): the last chunk has the
    usage. A stream left before it is estimated from the request's and the streamed text, and flagged."""

    __slots__ = ("first", "usage", "body", "characters")

    def __init__(self) -> None:
        self.first = self.usage = self.body = None
        self.characters = 0

    def begin(self, described: Described, record_result: Any) -> None:
        self.body = described.body

    def read(self, event: Any) -> None:
        """Runs for every event: `field` written out (the SDK's models, or dicts)."""
        get = dict.get if type(event) is dict else getattr
        chunk = get(event, "data", None)
        if self.first is None:
            self.first = chunk  # (its model and id)
        get = dict.get if type(chunk) is dict else getattr
        usage = get(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        for choice in get(chunk, "choices", None) or ():
            text = field(field(choice, "delta"), "content")
            if type(text) is str:
                self.characters += len(text)

    def attributes(self) -> dict[str, Any]:
        attributes = usage_attributes(self.usage)
        if names.INPUT_TOKENS not in attributes:
            add_estimate(attributes, _text_body(self.body or {}), self.characters, CUT_SHORT)
        return add_response_identity(attributes, self.first)


def _stream_finish_reasons(last_two: tuple[Any, Any]) -> list[str] | None:
    for event in reversed(last_two):
        reasons = semconv.openai_finish_reasons(field(event, "data")) if event is not None else None
        if reasons:
            return reasons
    return None


def _event_text(event: Any) -> str | None:
    choices = field(field(event, "data"), "choices")
    text = field(field(choices[0], "delta"), "content") if choices else None
    return text if isinstance(text, str) else None


CHAT = Endpoint("chat", read_response, ChunkReader, semconv.openai_finish_reasons, _stream_finish_reasons,
                semconv.openai_output, _event_text)
FIM = Endpoint("text_completion", read_response, ChunkReader, semconv.openai_finish_reasons, _stream_finish_reasons,
               semconv.openai_output, _event_text)
EMBEDDINGS = Endpoint("embeddings", read_response)
ENDPOINTS = {"Chat": CHAT, "Fim": FIM, "Embeddings": EMBEDDINGS}  # the SDK's resource classes


def describe(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Described | None:
    endpoint = ENDPOINTS.get(type(instance).__name__)
    if endpoint is None:
        return None
    return Described(endpoint, kwargs, kwargs.get("model"), wrapped.__name__.startswith("stream"))


# -- the streams -------------------------------------------------------------------------------------------

def _wrap_event_stream(stream: Any, events: Any) -> Any:
    stream.generator = events(stream.generator)
    return stream


def _events_in(stream: Any) -> Any:
    return getattr(stream, "generator", None)


EVENT_STREAMS = StreamHook(_wrap_event_stream, _wrap_event_stream, _events_in)


def _no_native_span_inside_ours(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Wraps the SDK's `get_traced_request_and_span(tracing_enabled, tracer, span, operation_id, request)`:
    inside our call it answers as the SDK does with its tracing off (the request and span it was given)."""
    if context.get_value(CALL_IN_PROGRESS_KEY):
        parameters = ("tracing_enabled", "tracer", "span", "operation_id", "request")
        given = {**dict(zip(parameters, args)), **kwargs}
        if "request" in given:
            return given["request"], given.get("span")
    return wrapped(*args, **kwargs)


class MistralInstrumentor(SdkInstrumentor):
    """Traces chat, FIM and embeddings calls of the `mistralai` SDK (sync and async, streams included)."""

    sync_requests = (
        ("mistralai.client.chat", "Chat.complete"),
        ("mistralai.client.chat", "Chat.stream"),
        ("mistralai.client.fim", "Fim.complete"),
        ("mistralai.client.fim", "Fim.stream"),
        ("mistralai.client.embeddings", "Embeddings.create"),
    )
    async_requests = (
        ("mistralai.client.chat", "Chat.complete_async"),
        ("mistralai.client.chat", "Chat.stream_async"),
        ("mistralai.client.fim", "Fim.complete_async"),
        ("mistralai.client.fim", "Fim.stream_async"),
        ("mistralai.client.embeddings", "Embeddings.create_async"),
    )
    closes = (
        ("mistralai.client.utils.eventstreaming", "EventStream.close"),
        ("mistralai.client.utils.eventstreaming", "EventStreamAsync.close"),
    )

    # Where the SDK starts its own span of a call (see `_no_native_span_inside_ours`).
    native_span = ("mistralai.client._hooks.tracing", "get_traced_request_and_span")

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("mistralai >= 3.0",)

    def _instrument_more(self) -> None:
        self._wrap(self.native_span, _no_native_span_inside_ours)

    def provider(self, **kwargs: Any) -> Provider:
        from mistralai.client.utils.eventstreaming import EventStream, EventStreamAsync

        return Provider(
            describe=describe,
            provider_name=provider_name,
            request_attributes=request_attributes,
            prefix=prefix,
            stream_types=(EventStream,),
            async_stream_types=(EventStreamAsync,),
            server=server,
            input_messages=input_messages,
            streams=EVENT_STREAMS,
        )
