"""The one request wrapper every provider shares.

Each SDK sends every API call through one method (the Stainless-generated `openai` and `anthropic` SDKs:
`SyncAPIClient.request` and `AsyncAPIClient.request`; `google-genai`: `Models._generate_content` and its
streaming sibling). Wrapping that method, rather than each resource method, covers every public entry point
at once: `create`, `parse`, the `stream()` helpers, `with_raw_response`, `with_streaming_response`. A provider
contributes a `Provider`: what a wrapped call is (`describe`), and small functions that read a response body or
a stream's events into attributes.

The wrapper never changes what the SDK returns or raises: it returns the very object (a stream keeps its
identity: the provider's `StreamHook` puts our reader of its events inside it), re-raises the very exception,
and anything of its own that fails is logged once and swallowed.

A streamed call's span ends exactly once: when the stream is exhausted, fails, is closed (`close()`, leaving its
`with` block, or the helper that owns it being closed), or is garbage-collected, with whatever usage was seen.
"""

from __future__ import annotations

import logging
import os
import time
import types
import weakref
from collections import abc
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple
from urllib.parse import urlsplit

import wrapt
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import guard as _guard
from .. import hosts, names
from . import semconv

logger = logging.getLogger("otel_llmcost.instrumentation")

# Set in the context of our call span, so an SDK's own tracing (and our raw-HTTP hooks) can tell that the call
# is already traced.
CALL_IN_PROGRESS_KEY = context.create_key("otel-llmcost-call")

_logged: set[str] = set()


def log_once(message: str) -> None:
    """Logs a failure of our own once per message, with its traceback, and never raises."""
    try:
        if message not in _logged:
            _logged.add(message)
            logger.warning("otel-llmcost: %s (further occurrences are not logged)", message, exc_info=True)
    except Exception:
        pass


def field(obj: Any, name: str) -> Any:
    """A field of a response, whether the SDK parsed it into a model or we decoded it into a dict.

    Where it is read on every call or event, it is written out without a call of ours, for speed:
    `get = dict.get if type(obj) is dict else getattr`, then `get(obj, name, None)`."""
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(name)
    return getattr(obj, name, None)


def non_negative_int(value: Any) -> int | None:
    """A count as the provider sent it: an int >= 0 (0 included), else None (absent, negative, not an int)."""
    return value if type(value) is int and value >= 0 else None


def add_response_identity(attributes: dict[str, Any], response: Any, model_field: str = "model",
                          id_field: str = "id") -> dict[str, Any]:
    """The response model and id of a response (or a stream's chunk), added to `attributes`."""
    model = field(response, model_field)
    if isinstance(model, str):
        attributes[names.RESPONSE_MODEL] = model
    response_id = field(response, id_field)
    if isinstance(response_id, str):
        attributes[names.RESPONSE_ID] = response_id
    return attributes


@lru_cache(maxsize=128)
def provider_for_base_url(base_url: str, name: str, api_host: str) -> str:
    """The provider of an SDK's base URL: `name` (the hosted API's) for `api_host` and its subdomains, and for
    any host the user's mapping says is `hosted` (the API behind a proxy); the mapping's name for a host it
    names; else a server on loopback, a private network or a known self-hosting server is named as such
    (`otel_llmcost.hosts`)."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    named = hosts.named_provider(host)
    if named and named != hosts.HOSTED:
        return named
    if named is None and not hosts.match_host(host, {api_host: name}):
        try:
            port = parts.port
        except ValueError:
            port = None
        return hosts.self_hosted_provider(host, port) or name
    return name


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


class Once:
    """Keys seen lately (bounded): a result's usage is recorded once per process however often it is fetched."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.keys: dict[Any, None] = {}

    def first(self, key: Any) -> bool:
        if key in self.keys:
            return False
        if len(self.keys) >= self.size:
            self.keys.pop(next(iter(self.keys)))
        self.keys[key] = None
        return True


class StreamReader:
    """Collects the attributes a stream's events carry; one per streamed call."""

    def begin(self, described: "Described", record_result: Callable[[dict[str, Any]], None]) -> None:
        """Called once, before the first event: what the request was (to estimate usage it never reports), and
        the function that makes a span of one result of a batch (for streams of batch results)."""

    def read(self, event: Any) -> Any:
        """Called for every event of the stream, before the application gets it. A true result swallows the
        event: one the application would not have had without us (the usage report we asked for)."""
        raise NotImplementedError

    def attributes(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Endpoint:
    """An LLM endpoint of one provider: its operation and how to read what it returns."""

    operation: str
    read_response: Callable[[Any], dict[str, Any]]
    stream_reader: Callable[[], StreamReader] | None = None
    # Why a stream's model stopped, from its last two events (`semconv.FINISH_REASONS`).
    finish_reasons: Callable[[Any], list[str] | None] | None = None  # response -> `semconv.FINISH_REASONS`
    stream_finish_reasons: Callable[[tuple[Any, Any]], list[str] | None] | None = None
    # The response as the conventions' output messages (captured only when the user opts in).
    output_messages: Callable[[Any], list[dict[str, Any]]] | None = None
    # The text a stream's event adds to the output (read only when the user opts in to message content).
    stream_text: Callable[[Any], str | None] | None = None
    # Endpoints that return the results of many calls (batch results): the attributes of each result, each made
    # a span of its own (see `_Call.record_result`); None for any other endpoint.
    results: Callable[[Any, Mapping[str, Any]], Iterable[dict[str, Any]]] | None = None
    # False for calls that fetch what already ran (a batch's results, a background response): no budget guard.
    spends: bool = True


class Described(NamedTuple):  # a tuple, not a dataclass: one is built per call
    """What one wrapped call is: its endpoint, its request body (a mapping), its model, whether it streams,
    and whether we changed the request to ask for the stream's usage (its stream then hides what that added)."""

    endpoint: Endpoint
    body: Mapping[str, Any]
    model: Any
    stream: bool
    usage_asked: bool = False


@dataclass(frozen=True)
class StreamHook:
    """How one SDK's stream objects take our reader of their events, so that the app gets what the SDK returned.

    `wrap(stream, events)` returns what the app gets, where `events(iterator)` is our iterator around an iterator
    of the SDK's events (`_Events`); `wrap_async` likewise for async streams (`_AsyncEvents`). `events_in(obj)`
    finds ours again in a stream (or a helper that owns one) whose `close()` is being called (the instrumentor's
    `closes`), or None."""

    wrap: Callable[[Any, Callable[[Any], Any]], Any]
    wrap_async: Callable[[Any, Callable[[Any], Any]], Any]
    events_in: Callable[[Any], Any]


@dataclass(frozen=True)
class Provider:
    """What the shared wrapper needs to know of one SDK."""

    describe: Callable[[Callable, Any, tuple, dict], Described | None]  # (wrapped, instance, args, kwargs) -> None
    # for a call that is not an LLM call
    provider_name: Callable[[Any], str]  # instance -> gen_ai.provider.name
    request_attributes: Callable[[Mapping[str, Any]], dict[str, Any]]  # body -> extra request attributes
    prefix: Callable[[Mapping[str, Any]], list[Any]]  # body -> the stable prompt prefix (system prompt, tools)
    stream_types: tuple[type, ...]
    async_stream_types: tuple[type, ...]
    raw_response_types: tuple[type, ...] = ()
    server: Callable[[Any], dict[str, Any]] | None = None  # instance -> server.address and server.port
    # body -> (input messages, system instructions) in the conventions' shape (only when the user opts in)
    input_messages: Callable[[Mapping[str, Any]], tuple[list, list]] | None = None
    # How the objects of `stream_types` and `async_stream_types` take our reader; None: as Stainless streams (the
    # `openai` and `anthropic` SDKs) or plain generators (`google-genai`), `STAINLESS_OR_GENERATOR`.
    streams: StreamHook | None = None


def stainless_describe(endpoint_for: Callable[[str], Endpoint | None]) -> Callable[..., Described | None]:
    """`describe` for the Stainless SDKs: `request(cast_to, options, *, stream=..., stream_cls=...)`."""

    def describe(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Described | None:
        options = args[1] if len(args) > 1 else kwargs["options"]
        endpoint = endpoint_for(options.url)
        if endpoint is None:
            return None
        body = options.json_data
        if type(body) is not dict and not isinstance(body, abc.Mapping):  # `type` first: `isinstance` of an ABC is slow
            body = {}
        extra = options.extra_json  # `extra_body=`: sent in the body too (e.g. parameters an SDK version dropped)
        if extra and type(extra) is dict:
            body = {**body, **extra}
        return Described(endpoint, body, body.get("model"), bool(kwargs.get("stream") or body.get("stream")))

    return describe


def attribution_defaults() -> dict[str, str]:
    """Attribution from the environment, used where the baggage names none."""
    env = {
        names.PROJECT: os.environ.get("OTEL_LLMCOST_PROJECT"),
        names.FEATURE: os.environ.get("OTEL_LLMCOST_FEATURE"),
        names.USER_ID: os.environ.get("OTEL_LLMCOST_USER_ID"),
    }
    return {key: value for key, value in env.items() if value}


def attribution(defaults: Mapping[str, str], ctx: context.Context | None = None) -> dict[str, str]:
    """The attribution of the current context (or `ctx`): its baggage, over the environment's defaults."""
    attributes = dict(defaults)
    carried = baggage.get_all(ctx)
    if carried:
        for key in names.ATTRIBUTION_KEYS:
            value = carried.get(key)
            if value is not None:
                attributes[key] = str(value)
    return attributes


# Fingerprints of the prefixes seen lately, by their texts: the same system prompt comes call after call.
_fingerprints: dict[tuple[str, ...], dict[str, Any]] = {}


def prefix_fingerprint(parts: Iterable[Any]) -> dict[str, Any]:
    """`PREFIX_HASH` and `PREFIX_LENGTH` of the stable prompt prefix; never its text. Do not change the dict
    returned: it is shared by the calls with the same prefix.

    Each part (a system prompt, a tool list) is serialized as itself when it is a string and as its `repr`
    otherwise (C-speed, deterministic for the plain dicts and lists a request body is made of); parts are
    length-delimited so that moving text between them changes the hash.
    """
    texts = tuple(parts)
    for part in texts:
        if type(part) is not str:  # a tool list, content blocks: by their repr (the common case needs no copy)
            texts = tuple([part if type(part) is str else repr(part) for part in texts])
            break
    found = _fingerprints.get(texts)
    if found is None:
        digest = blake2b(digest_size=8)
        length = 0
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
            length += len(text)
        found = {names.PREFIX_HASH: digest.hexdigest(), names.PREFIX_LENGTH: length} if length else {}
        if len(_fingerprints) >= 64:
            _fingerprints.clear()
        _fingerprints[texts] = found
    return found


RAW_BODY_NOTE = "the app read the raw response body itself: usage unknown"


class _Call:
    """One instrumented API call: its span, and the exactly-once end of it."""

    __slots__ = ("span", "endpoint", "reader", "ended", "described", "telemetry", "request", "started", "content",
                 "tracer")

    def __init__(self, span: trace.Span, endpoint: Endpoint, described: Described | None = None,
                 telemetry: "Telemetry | None" = None, request: Mapping[str, Any] | None = None,
                 started: int = 0, tracer: trace.Tracer | None = None) -> None:
        self.span = span
        self.endpoint = endpoint
        self.reader: StreamReader | None = None
        self.ended = False
        self.described = described
        self.telemetry = telemetry  # metrics and captured messages; None when neither is on
        self.request = request  # the span's attributes at its start
        self.started = started  # time.perf_counter_ns() at the start, for the metrics
        self.content: dict[str, Any] | None = None  # input messages kept for the event
        self.tracer = tracer  # makes the spans of a batch's results

    def record_result(self, attributes: dict[str, Any]) -> None:
        """One result of a batch the app fetched, as a call of its own: a span child of the fetching call's,
        attributed like it (its attribution and provider), with the result's own usage and model."""
        try:
            request = self.request or {}
            result = {key: request[key] for key in (*names.ATTRIBUTION_KEYS, names.PROVIDER) if key in request}
            result.update(attributes)
            model = result.get(names.REQUEST_MODEL) or result.get(names.RESPONSE_MODEL)
            operation = result.get(names.OPERATION, "chat")
            span = self.tracer.start_span(f"{operation} {model}" if model else operation,
                                          context=trace.set_span_in_context(self.span), kind=SpanKind.CLIENT,
                                          attributes=result)
            span.end()
        except Exception:
            log_once("could not record a batch result")

    def _stream_attributes(self) -> dict[str, Any] | None:
        try:
            return self.reader.attributes() if self.reader is not None else None
        except Exception:
            log_once("could not read the usage of a stream")
            return None

    def fail(self, exc: BaseException) -> None:
        """Ends a failed call, keeping the usage its stream carried before: tokens already billed are money."""
        if self.ended:
            return
        self.ended = True
        try:
            span = self.span
            attributes = self._stream_attributes()
            if attributes:
                span.set_attributes(attributes)
            error_type = type(exc).__qualname__
            span.set_attribute(names.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            if self.telemetry is not None:
                self.telemetry.ended(self, attributes, error_type)
            span.end()
        except Exception:
            log_once("could not end the span of a failed call")

    def finish(self, attributes: dict[str, Any] | None) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            if attributes:
                self.span.set_attributes(attributes)
            if self.telemetry is not None:
                self.telemetry.ended(self, attributes, None)
            self.span.end()
        except Exception:
            log_once("could not end the span of a call")

    def finish_stream(self) -> None:
        """Ends a streamed call with whatever usage its events carried. Without a reader, the app read the
        raw body itself (`with_raw_response`, `with_streaming_response` never parsed): nothing of it was seen."""
        if not self.ended:
            if self.reader is None:
                raw = self.endpoint.stream_reader is not None  # (else an endpoint whose streams we cannot read)
                self.finish({names.USAGE_MISSING: True, names.USAGE_NOTE: RAW_BODY_NOTE} if raw else None)
            else:
                self.finish(self._stream_attributes())


class Telemetry:
    """What an instrumentor records beyond the span: the GenAI client metrics, and the messages as the
    `gen_ai.client.inference.operation.details` event when the user opts in to that."""

    __slots__ = ("settings", "metrics", "events")

    def __init__(self, settings: semconv.Settings, metrics: Any = None, events: Any = None) -> None:
        self.settings = settings
        self.metrics = metrics  # a `metrics.GenAIMetrics`, or None when metrics are off
        self.events = events  # an OpenTelemetry `Logger`, or None unless messages go out as events

    def ended(self, call: "_Call", attributes: dict[str, Any] | None, error_type: str | None) -> None:
        """Records a call that just ended (its span not ended yet: the event is emitted inside it). Never raises:
        the span must end whatever the metrics or logs SDK does."""
        metrics = self.metrics
        if metrics is not None:
            try:
                now = time.perf_counter_ns()
                first = getattr(call.reader, "first_ns", None)
                metrics.record(call.request or {}, attributes, (now - call.started) / 1e9,
                               (first - call.started) / 1e9 if first else None, error_type)
            except Exception:
                log_once("could not record the metrics of a call")
        if self.events is not None and call.content is not None:
            try:
                self._event(call, attributes, error_type)
            except Exception:
                log_once("could not emit the messages of a call")

    def _event(self, call: "_Call", attributes: dict[str, Any] | None, error_type: str | None) -> None:
        from opentelemetry._logs import LogRecord

        event = {key: value for key, value in (call.request or {}).items() if key.startswith(("gen_ai.", "server."))}
        event.pop(semconv.INPUT_MESSAGES, None)
        event.pop(semconv.SYSTEM_INSTRUCTIONS, None)
        for key in (names.RESPONSE_MODEL, names.RESPONSE_ID, semconv.FINISH_REASONS, names.INPUT_TOKENS,
                    names.OUTPUT_TOKENS):
            if attributes and key in attributes:
                event[key] = attributes[key]
        if error_type:
            event[names.ERROR_TYPE] = error_type
        event.update(call.content or {})
        self.events.emit(LogRecord(event_name=semconv.OPERATION_DETAILS_EVENT, attributes=event,
                                   context=trace.set_span_in_context(call.span)))


class _Observed(StreamReader):
    """A stream's reader, watched for the metrics and the conventions: when its first event came, and its last
    two events, where the finish reasons are (OpenAI: the last content chunk, maybe before a usage chunk;
    Anthropic: the `message_delta` before `message_stop`)."""

    __slots__ = ("inner", "inner_read", "first_ns", "previous", "last", "finish_reasons", "output", "texts")

    def __init__(self, inner: StreamReader, finish_reasons: Callable[[tuple[Any, Any]], list[str] | None] | None,
                 output: "_StreamOutput | None" = None):
        self.inner = inner
        self.inner_read = inner.read
        self.first_ns = 0
        self.previous = self.last = None
        self.finish_reasons = finish_reasons
        self.output = output  # only when the user opts in to message content
        self.texts: list[str] = []

    def read(self, event: Any) -> bool | None:
        if not self.first_ns:
            self.first_ns = time.perf_counter_ns()
        self.previous = self.last
        self.last = event
        if self.output is not None:
            text = self.output.text_of(event)
            if text:
                self.texts.append(text)
        return self.inner_read(event)  # (True: an event of ours, not the app's; see `StreamReader.read`)

    def attributes(self) -> dict[str, Any]:
        attributes = self.inner.attributes()
        reasons = None
        if self.finish_reasons is not None and self.last is not None:
            try:
                reasons = self.finish_reasons((self.previous, self.last))
            except Exception:
                log_once("could not read the finish reasons of a stream")
            if reasons:
                attributes[semconv.FINISH_REASONS] = reasons
        if self.output is not None:
            self.output.add(attributes, self.texts, reasons, self.last)
        return attributes


class _StreamOutput:
    """The output messages of a streamed call, for a user who opted in to message content: the text its events
    carried (or, for a stream whose last event holds the whole response, that response's messages)."""

    __slots__ = ("text_of", "endpoint", "call", "tracer")

    def __init__(self, endpoint: Endpoint, call: "_Call", tracer: "RequestTracer") -> None:
        self.text_of = endpoint.stream_text
        self.endpoint = endpoint
        self.call = call
        self.tracer = tracer

    def add(self, attributes: dict[str, Any], texts: list[str], reasons: list[str] | None, last: Any) -> None:
        try:
            if texts:
                messages = [{"role": "assistant", "parts": [{"type": "text", "content": "".join(texts)}],
                             "finish_reason": reasons[0] if reasons else ""}]
            else:
                response = field(last, "response")
                output = self.endpoint.output_messages
                messages = output(response) if response is not None and output is not None else []
            if messages:
                self.tracer.add_output(self.call, attributes, messages)
        except Exception:
            log_once("could not read the messages of a stream")


class _Events:
    """The event iterator we put inside a stream: reads each event on its way to the application."""

    __slots__ = ("inner", "call", "read")

    def __init__(self, inner: Any, call: _Call) -> None:
        self.inner = inner
        self.call = call
        self.read = call.reader.read if call.reader is not None else None

    def __iter__(self) -> "_Events":
        return self

    def __next__(self) -> Any:
        while True:
            try:
                event = next(self.inner)
            except BaseException as exc:
                self._ended(exc)
                raise
            read = self.read
            if read is not None:  # `_read`, written out: it runs for every event
                try:
                    if read(event):
                        continue  # an event we made the server add: the app never sees it
                except Exception:
                    log_once("could not read a stream event")
                    self.read = None
            return event

    def _ended(self, exc: BaseException) -> None:
        if isinstance(exc, (StopIteration, StopAsyncIteration)):
            self.call.finish_stream()
        else:
            self.call.fail(exc)

    def _read(self, event: Any) -> bool:
        """Reads one event; true when it is to be swallowed (see `StreamReader.read`)."""
        if self.read is not None:
            try:
                return bool(self.read(event))
            except Exception:
                log_once("could not read a stream event")
                self.read = None
        return False

    def close(self) -> None:  # a plain generator of ours closed by the app (`yield from` calls it)
        self.call.finish_stream()
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def __del__(self) -> None:  # a stream dropped unfinished (never iterated, `break`, abandoned)
        try:
            self.call.finish_stream()
        except Exception:
            pass


class _AsyncEvents(_Events):
    __slots__ = ()

    def __aiter__(self) -> "_AsyncEvents":
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                event = await self.inner.__anext__()
            except BaseException as exc:
                self._ended(exc)
                raise
            if not self._read(event):
                return event

    async def aclose(self) -> None:
        self.call.finish_stream()
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()


def _generator(events: _Events) -> Iterator[Any]:
    """For SDKs whose streaming call returns a plain generator: a generator again."""
    yield from events


async def _async_generator(events: _AsyncEvents) -> Any:
    try:
        async for event in events:
            yield event
    finally:
        await events.aclose()


# -- the default stream hook: Stainless streams and plain generators ---------------------------------------------
#
# A Stainless stream (`openai.Stream`, `anthropic.Stream`, anthropic's JSONL decoder) iterates its private
# `_iterator`; no public API swaps it, and the app must get the very object (its type, `response`, `with`). So
# ours replaces it in place. Should an SDK version drop it, the stream is handed to the app behind a proxy
# (`_ProxiedStream`) instead: same type to `isinstance`, same attributes, iterated through ours.


def _stainless_or_generator(stream: Any, events: Callable[[Any], "_Events"]) -> Any:
    inner = getattr(stream, "_iterator", None)
    if inner is not None:
        stream._iterator = events(inner)
        return stream
    if isinstance(stream, types.GeneratorType):  # a plain generator: wrap it in one of ours
        return _generator(events(stream))
    log_once(f"{type(stream).__qualname__} has no `_iterator`: its stream is read through a proxy")
    return _ProxiedStream(stream, events(iter(stream)))


def _stainless_or_async_generator(stream: Any, events: Callable[[Any], "_AsyncEvents"]) -> Any:
    inner = getattr(stream, "_iterator", None)
    if inner is not None:
        stream._iterator = events(inner)
        return stream
    if isinstance(stream, types.AsyncGeneratorType):
        return _async_generator(events(stream))
    log_once(f"{type(stream).__qualname__} has no `_iterator`: its stream is read through a proxy")
    return _ProxiedAsyncStream(stream, events(stream.__aiter__()))


def _stainless_events_in(obj: Any) -> Any:
    """Ours in a Stainless stream, in the raw stream a helper owns (`_raw_stream`: openai's
    `ChatCompletionStream`, anthropic's `MessageStream`), or in the proxy of a stream."""
    events = getattr(obj, "_self_events", None)
    if events is None:
        events = getattr(getattr(obj, "_raw_stream", obj), "_iterator", None)
    return events


STAINLESS_OR_GENERATOR = StreamHook(_stainless_or_generator, _stainless_or_async_generator, _stainless_events_in)


class _ProxiedStream(wrapt.ObjectProxy):
    """A stream whose events cannot be swapped in place, as the app gets it: the stream to `isinstance`, its
    attributes and `with`, iterated through our events; `close()` ends the call's span."""

    def __init__(self, stream: Any, events: "_Events") -> None:
        super().__init__(stream)
        self._self_events = events

    def __iter__(self) -> Any:
        return self._self_events

    def __next__(self) -> Any:
        return next(self._self_events)

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        self._self_events.call.finish_stream()
        return self.__wrapped__.__exit__(*exc)

    def close(self) -> Any:
        self._self_events.call.finish_stream()
        return self.__wrapped__.close()


class _ProxiedAsyncStream(wrapt.ObjectProxy):
    def __init__(self, stream: Any, events: "_AsyncEvents") -> None:
        super().__init__(stream)
        self._self_events = events

    def __aiter__(self) -> Any:
        return self._self_events

    async def __anext__(self) -> Any:
        return await self._self_events.__anext__()

    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        self._self_events.call.finish_stream()
        return await self.__wrapped__.__aexit__(*exc)

    async def close(self) -> Any:
        self._self_events.call.finish_stream()
        return await self.__wrapped__.close()


# Streaming raw responses (`with_streaming_response`) not parsed yet: their calls end when the app parses them.
_unparsed: "weakref.WeakKeyDictionary[Any, tuple[RequestTracer, _Call]]" = weakref.WeakKeyDictionary()


def read_on_parse(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Wrapper of a raw response's `_parse`: reads what a `with_streaming_response` call returned. Installed
    only once such a call has been seen (`RequestTracer.on_unparsed`): every parse goes through it."""
    result = wrapped(*args, **kwargs)
    if _unparsed:
        pending = _unparsed.pop(instance, None)
        if pending is not None:
            tracer, call = pending
            return tracer.returned(call, result)
    return result


# Two private names of OpenTelemetry, read for speed on every call, each with its public equivalent: the public
# one is used when the private one is gone (tests/test_instr_private_apis.py compares the two).


def _enabled_public(ctx: context.Context) -> bool:
    return is_instrumentation_enabled()


def _call_context_public(ctx: context.Context, span: trace.Span) -> context.Context:
    return trace.set_span_in_context(span, context.set_value(CALL_IN_PROGRESS_KEY, True, ctx))


try:  # the keys `is_instrumentation_enabled()` reads, read from the context each call fetches once
    from opentelemetry.instrumentation.utils import (
        _SUPPRESS_INSTRUMENTATION_KEY,
        _SUPPRESS_INSTRUMENTATION_KEY_PLAIN,
    )

    def _enabled(ctx: context.Context) -> bool:
        return not (ctx.get(_SUPPRESS_INSTRUMENTATION_KEY) or ctx.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN))

except ImportError:
    _enabled = _enabled_public


try:  # the call's context (its span current, CALL_IN_PROGRESS_KEY set) built in one copy, not two
    from opentelemetry.trace.propagation import _SPAN_KEY

    def _call_context(ctx: context.Context, span: trace.Span) -> context.Context:
        values = ctx.copy()
        values[_SPAN_KEY] = span
        values[CALL_IN_PROGRESS_KEY] = True
        return context.Context(values)

except ImportError:
    _call_context = _call_context_public


class RequestTracer:
    """Builds the wrappers of one provider's request methods around one tracer."""

    def __init__(self, tracer: trace.Tracer, provider: Provider, *, fingerprint: bool | None = None,
                 settings: semconv.Settings | None = None, telemetry: Telemetry | None = None) -> None:
        self.tracer = tracer
        self.provider = provider
        self.streams = provider.streams or STAINLESS_OR_GENERATOR
        self.settings = settings if settings is not None else semconv.Settings(metrics=False)
        self.telemetry = telemetry  # None when neither metrics nor message events are on
        self.capture = self.settings.content and provider.input_messages is not None
        self.defaults = attribution_defaults()
        self.fingerprint = env_flag("OTEL_LLMCOST_PREFIX_FINGERPRINT", True) if fingerprint is None else fingerprint
        # Called when a streaming raw response is first kept in `_unparsed`: the instrumentor then installs
        # `read_on_parse`, which no other call needs.
        self.on_unparsed: Callable[[], None] | None = None

    # -- the wrappers -------------------------------------------------------------------------------

    def sync_wrapper(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        started = self._start(wrapped, instance, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        call, ctx = started
        token = context.attach(ctx)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            context.detach(token)
            call.fail(exc)
            raise
        context.detach(token)
        return self.returned(call, result)

    async def async_wrapper(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        started = self._start(wrapped, instance, args, kwargs)
        if started is None:
            return await wrapped(*args, **kwargs)
        call, ctx = started
        token = context.attach(ctx)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            context.detach(token)
            call.fail(exc)
            raise
        context.detach(token)
        return self.returned(call, result)

    # -- the parts ----------------------------------------------------------------------------------

    def _start(
        self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict
    ) -> tuple[_Call, context.Context] | None:
        """The call of an LLM request and the context to run it in (its span current, `CALL_IN_PROGRESS_KEY`
        set), or None for anything else. Raises only what the budget guard, when enabled, raises to stop a call."""
        try:
            ctx = context.get_current()  # fetched once, passed to everything below
            if not _enabled(ctx):
                return None
            provider = self.provider
            described = provider.describe(wrapped, instance, args, kwargs)
            if described is None:
                return None
            attributes = self.request_attributes(described, provider.provider_name(instance), ctx)
            server = provider.server
            if server is not None:
                attributes.update(server(instance))
            content = self._input_content(described.body) if self.capture else None
            if content and self.settings.content_on_span:
                attributes.update(content)
            model = attributes.get(names.REQUEST_MODEL)
            operation = described.endpoint.operation
            telemetry = self.telemetry
            started = time.perf_counter_ns() if telemetry is not None else 0
            span = self.tracer.start_span(
                f"{operation} {model}" if model else operation, context=ctx, kind=SpanKind.CLIENT, attributes=attributes
            )
            call = _Call(span, described.endpoint, described, telemetry, attributes, started, self.tracer)
            if content is not None and self.settings.content_as_event:
                call.content = content
            guard = _guard.active
        except Exception:
            log_once("could not start the span of an LLM call")
            return None
        if guard is not None and described.endpoint.spends:  # the opt-in budget guard: stopping the call raises into the app, by design
            guard.before_call(span, attributes, described.body)
        return call, _call_context(ctx, span)

    def request_attributes(
        self, described: Described, provider_name: str, ctx: context.Context | None = None
    ) -> dict[str, Any]:
        """Everything the request says: operation, provider, model, attribution, prefix fingerprint."""
        endpoint, body, model, stream = described[:4]
        attributes = attribution(self.defaults, ctx)
        attributes[names.OPERATION] = endpoint.operation
        attributes[names.PROVIDER] = provider_name
        if isinstance(model, str):
            attributes[names.REQUEST_MODEL] = model
        if stream:
            attributes[names.REQUEST_STREAM] = True
        if body:
            extra = self.provider.request_attributes(body)
            if extra:
                attributes.update(extra)
            if self.fingerprint:
                parts = self.provider.prefix(body)
                if parts:
                    attributes.update(prefix_fingerprint(parts))
        return attributes

    def _input_content(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The request's messages and system instructions as the conventions' JSON, cut to the size limit."""
        try:
            messages, system = self.provider.input_messages(body)  # type: ignore[misc]
            limit = self.settings.content_max_length
            content = {semconv.INPUT_MESSAGES: semconv.as_json(messages, limit)} if messages else {}
            if system:
                content[semconv.SYSTEM_INSTRUCTIONS] = semconv.as_json(system, limit)
            return content
        except Exception:
            log_once("could not read the messages of a request")
            return None

    def read(self, call: _Call, response: Any) -> dict[str, Any]:
        """The attributes of what a call returned: the provider's reading of it, the finish reasons and, when the
        user opts in, the output messages."""
        endpoint = call.endpoint
        attributes = endpoint.read_response(response)
        finish_reasons = endpoint.finish_reasons
        if finish_reasons is not None:
            try:
                reasons = finish_reasons(response)
                if reasons:
                    attributes[semconv.FINISH_REASONS] = reasons
            except Exception:
                log_once("could not read the finish reasons of a response")
        if self.capture and endpoint.output_messages is not None:
            try:
                messages = endpoint.output_messages(response)
                if messages:
                    self.add_output(call, attributes, messages)
            except Exception:
                log_once("could not read the messages of a response")
        return attributes

    def add_output(self, call: _Call, attributes: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        """The output messages on the span's attributes and/or in the event, as the settings say."""
        text = semconv.as_json(messages, self.settings.content_max_length)
        if self.settings.content_on_span:
            attributes[semconv.OUTPUT_MESSAGES] = text
        if call.content is not None:
            call.content[semconv.OUTPUT_MESSAGES] = text

    def returned(self, call: _Call, result: Any) -> Any:
        """Reads what the call returned, or hooks the stream it returned; returns what the app gets. Never raises."""
        try:
            provider = self.provider
            if isinstance(result, provider.stream_types):
                return self._hook_stream(call, result, _Events)
            if isinstance(result, provider.async_stream_types):
                return self._hook_stream(call, result, _AsyncEvents)
            if provider.raw_response_types and isinstance(result, provider.raw_response_types):
                self._read_raw_response(call, result)
            else:
                attributes = self.read(call, result)
                results = call.endpoint.results
                if results is not None and call.described is not None:
                    for result_attributes in results(result, call.described.body):
                        call.record_result(result_attributes)
                call.finish(attributes)
        except Exception:
            log_once("could not read the response of an LLM call")
            call.finish(None)
        return result

    def _read_raw_response(self, call: _Call, raw: Any) -> None:
        """`with_raw_response`: the body is read, so decode it ourselves; the app's `parse()` is untouched.
        `with_streaming_response`: the body is not read yet; the call is read when the app parses it."""
        http_response = raw.http_response
        if not http_response.is_closed:
            if self.on_unparsed is not None:
                self.on_unparsed()
            _unparsed[raw] = (self, call)
            weakref.finalize(raw, call.finish_stream)
        elif "json" in http_response.headers.get("content-type", ""):
            call.finish(self.read(call, http_response.json()))
        else:
            call.finish(None)

    def _hook_stream(self, call: _Call, stream: Any, events_type: type) -> Any:
        """Puts a reader between the stream and its events: same object, same semantics for the app."""
        factory = call.endpoint.stream_reader
        reader = call.reader = factory() if factory is not None else None
        if reader is not None and call.described is not None:
            reader.begin(call.described, call.record_result)
        endpoint = call.endpoint
        if reader is not None and (call.telemetry is not None or endpoint.stream_finish_reasons is not None
                                   or self.capture):
            output = _StreamOutput(endpoint, call, self) if self.capture and endpoint.stream_text is not None else None
            call.reader = _Observed(reader, endpoint.stream_finish_reasons, output)
        wrap = self.streams.wrap_async if events_type is _AsyncEvents else self.streams.wrap
        return wrap(stream, lambda inner: events_type(inner, call))

    def end_stream_on_close(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Wrapper of a stream's (or a stream helper's) `close()`: the app is done with the call, so is its span."""
        try:
            events = self.streams.events_in(instance)
            if isinstance(events, _Events):
                events.call.finish_stream()
        except Exception:
            log_once("could not end the span of a closed stream")
        return wrapped(*args, **kwargs)


class ToolTracer:
    """Spans of the tool calls an SDK makes itself (google-genai's automatic function calling runs the app's
    Python functions between two model calls): `execute_tool {name}`, as the conventions' tool-execution span.
    Wraps the SDK's `invoke(args, function)`; the arguments and result are recorded only when the user opts in
    to message content on spans."""

    def __init__(self, tracer: trace.Tracer, settings: semconv.Settings) -> None:
        self.tracer = tracer
        self.settings = settings

    def _start(self, args: tuple, kwargs: dict) -> trace.Span | None:
        try:
            ctx = context.get_current()
            if not _enabled(ctx):
                return None
            call_args = args[0] if args else kwargs.get("args")
            function = args[1] if len(args) > 1 else kwargs.get("function_to_invoke")
            name = getattr(function, "__name__", None) or type(function).__name__
            attributes: dict[str, Any] = {names.OPERATION: semconv.EXECUTE_TOOL, semconv.TOOL_NAME: name,
                                          semconv.TOOL_TYPE: "function"}
            description = (getattr(function, "__doc__", None) or "").strip()
            if description:
                attributes[semconv.TOOL_DESCRIPTION] = description.splitlines()[0][:200]
            if self.settings.content_on_span and call_args is not None:
                attributes[semconv.TOOL_CALL_ARGUMENTS] = semconv.as_json(call_args, self.settings.content_max_length)
            return self.tracer.start_span(f"{semconv.EXECUTE_TOOL} {name}", context=ctx, kind=SpanKind.INTERNAL,
                                          attributes=attributes)
        except Exception:
            log_once("could not start the span of a tool call")
            return None

    def _end(self, span: trace.Span, result: Any = None, exc: BaseException | None = None) -> None:
        try:
            if exc is not None:
                span.set_attribute(names.ERROR_TYPE, type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            elif self.settings.content_on_span:
                span.set_attribute(semconv.TOOL_CALL_RESULT, semconv.as_json(result, self.settings.content_max_length))
            span.end()
        except Exception:
            log_once("could not end the span of a tool call")

    def sync_wrapper(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        span = self._start(args, kwargs)
        if span is None:
            return wrapped(*args, **kwargs)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                result = wrapped(*args, **kwargs)
        except BaseException as exc:
            self._end(span, exc=exc)
            raise
        self._end(span, result)
        return result

    async def async_wrapper(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        span = self._start(args, kwargs)
        if span is None:
            return await wrapped(*args, **kwargs)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            self._end(span, exc=exc)
            raise
        self._end(span, result)
        return result
