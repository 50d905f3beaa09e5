"""The one request wrapper every provider shares.

Each SDK sends every API call through one method of its base client (`SyncAPIClient.request` and
`AsyncAPIClient.request` in the Stainless-generated SDKs). Wrapping that method, rather than each
resource method, covers every public entry point at once: `create`, `parse`, the `stream()` helpers,
`with_raw_response`, `with_streaming_response`. A provider contributes a `Provider`: which request paths
are LLM calls, and small functions that read a response body or a stream's events into attributes.

The wrapper never changes what the SDK returns or raises: it returns the very object, re-raises the
very exception, and anything of its own that fails is logged once and swallowed.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import names

logger = logging.getLogger("otel_llmcost.instrumentation")

# Set in the context of our call span, so an SDK's own tracing can tell that the call is already traced.
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
    """A field of a response, whether the SDK parsed it into a model or we decoded it into a dict."""
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(name)
    return getattr(obj, name, None)


def positive_int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


class StreamReader:
    """Collects the attributes a stream's events carry; one per streamed call."""

    def read(self, event: Any) -> None:  # called for every event the application receives
        raise NotImplementedError

    def attributes(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Endpoint:
    """An LLM endpoint of one provider: its operation and how to read what it returns."""

    operation: str
    read_response: Callable[[Any], dict[str, Any]]
    stream_reader: Callable[[], StreamReader] | None = None


@dataclass(frozen=True)
class Provider:
    """What the shared wrapper needs to know of one SDK."""

    endpoint_for: Callable[[str], Endpoint | None]  # request path -> endpoint, None for non-LLM calls
    provider_name: Callable[[Any], str]  # client -> gen_ai.provider.name
    request_attributes: Callable[[Mapping[str, Any]], dict[str, Any]]  # JSON body -> extra request attributes
    stream_types: tuple[type, ...]
    async_stream_types: tuple[type, ...]
    raw_response_types: tuple[type, ...] = ()


def attribution_defaults() -> dict[str, str]:
    """Attribution from the environment, used where the baggage names none."""
    env = {
        names.PROJECT: os.environ.get("OTEL_LLMCOST_PROJECT"),
        names.FEATURE: os.environ.get("OTEL_LLMCOST_FEATURE"),
        names.USER_ID: os.environ.get("OTEL_LLMCOST_USER_ID"),
    }
    return {key: value for key, value in env.items() if value}


class _Call:
    """One instrumented API call: its span, and the exactly-once end of it."""

    __slots__ = ("span", "endpoint", "reader", "ended", "__weakref__")

    def __init__(self, span: trace.Span, endpoint: Endpoint) -> None:
        self.span = span
        self.endpoint = endpoint
        self.reader: StreamReader | None = None
        self.ended = False

    def fail(self, exc: BaseException) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            span = self.span
            span.set_attribute(names.ERROR_TYPE, type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
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
            self.span.end()
        except Exception:
            log_once("could not end the span of a call")

    def finish_stream(self) -> None:
        """Ends a streamed call with whatever usage its events carried."""
        if self.ended:
            return
        try:
            attributes = self.reader.attributes() if self.reader is not None else None
        except Exception:
            log_once("could not read the usage of a stream")
            attributes = None
        self.finish(attributes)


class RequestTracer:
    """Builds the wrappers of one provider's request methods around one tracer."""

    def __init__(self, tracer: trace.Tracer, provider: Provider) -> None:
        self.tracer = tracer
        self.provider = provider
        self.defaults = attribution_defaults()

    # -- the wrappers -------------------------------------------------------------------------------

    def sync_wrapper(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = self._start(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        token = context.attach(trace.set_span_in_context(call.span, context.set_value(CALL_IN_PROGRESS_KEY, True)))
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            context.detach(token)
            call.fail(exc)
            raise
        context.detach(token)
        self._returned(call, result, is_async=False)
        return result

    async def async_wrapper(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        call = self._start(instance, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        token = context.attach(trace.set_span_in_context(call.span, context.set_value(CALL_IN_PROGRESS_KEY, True)))
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            context.detach(token)
            call.fail(exc)
            raise
        context.detach(token)
        self._returned(call, result, is_async=True)
        return result

    # -- the parts ----------------------------------------------------------------------------------

    def _start(self, instance: Any, args: tuple, kwargs: dict) -> _Call | None:
        """The call span for an LLM request, or None for anything else. Never raises."""
        try:
            if not is_instrumentation_enabled():
                return None
            options = args[1] if len(args) > 1 else kwargs.get("options")
            endpoint = self.provider.endpoint_for(options.url)
            if endpoint is None:
                return None
            body = options.json_data if isinstance(options.json_data, Mapping) else {}
            model = body.get("model")
            attributes = {
                names.OPERATION: endpoint.operation,
                names.PROVIDER: self.provider.provider_name(instance),
            }
            if isinstance(model, str):
                attributes[names.REQUEST_MODEL] = model
            if kwargs.get("stream") or body.get("stream"):
                attributes[names.REQUEST_STREAM] = True
            if body:
                attributes.update(self.provider.request_attributes(body))
            if self.defaults:
                attributes.update(self.defaults)
            carried = baggage.get_all()
            if carried:
                for key in names.ATTRIBUTION_KEYS:
                    value = carried.get(key)
                    if value is not None:
                        attributes[key] = str(value)
            span = self.tracer.start_span(
                f"{endpoint.operation} {model}" if model else endpoint.operation,
                kind=SpanKind.CLIENT,
                attributes=attributes,
            )
            return _Call(span, endpoint)
        except Exception:
            log_once("could not start the span of an LLM call")
            return None

    def _returned(self, call: _Call, result: Any, *, is_async: bool) -> None:
        """Reads what the call returned, or hooks the stream it returned. Never raises."""
        try:
            provider = self.provider
            if isinstance(result, provider.async_stream_types if is_async else provider.stream_types):
                self._hook_stream(call, result, is_async)
            elif provider.raw_response_types and isinstance(result, provider.raw_response_types):
                call.finish(self._read_raw_response(call, result))
            else:
                call.finish(call.endpoint.read_response(result))
        except Exception:
            log_once("could not read the response of an LLM call")
            call.finish(None)

    def _read_raw_response(self, call: _Call, raw: Any) -> dict[str, Any] | None:
        """`with_raw_response`: the body is already read, so decode it ourselves; the app's `parse()` is untouched."""
        http_response = raw.http_response
        if not http_response.is_closed or "json" not in http_response.headers.get("content-type", ""):
            return None
        return call.endpoint.read_response(http_response.json())

    def _hook_stream(self, call: _Call, stream: Any, is_async: bool) -> None:
        """Puts a reader between the stream and its events: same object, same semantics for the app."""
        factory = call.endpoint.stream_reader
        call.reader = factory() if factory is not None else None
        inner = stream._iterator
        stream._iterator = _read_async_events(inner, call) if is_async else _read_events(inner, call)
        # A stream that is never iterated never runs our generator's `finally`: end its span when it is dropped.
        weakref.finalize(stream, call.finish_stream)


def _read_events(inner: Iterable[Any], call: _Call):
    reader = call.reader
    read = reader.read if reader is not None else None
    try:
        for event in inner:
            if read is not None:
                try:
                    read(event)
                except Exception:
                    log_once("could not read a stream event")
                    read = None
            yield event
    except GeneratorExit:
        call.finish_stream()
        raise
    except BaseException as exc:
        call.span.set_attributes(_safe_attributes(call))
        call.fail(exc)
        raise
    call.finish_stream()


async def _read_async_events(inner: Any, call: _Call):
    reader = call.reader
    read = reader.read if reader is not None else None
    try:
        async for event in inner:
            if read is not None:
                try:
                    read(event)
                except Exception:
                    log_once("could not read a stream event")
                    read = None
            yield event
    except GeneratorExit:
        call.finish_stream()
        raise
    except BaseException as exc:
        call.span.set_attributes(_safe_attributes(call))
        call.fail(exc)
        raise
    call.finish_stream()


def _safe_attributes(call: _Call) -> dict[str, Any]:
    """The usage a stream carried before it failed: tokens already billed are still money."""
    try:
        return call.reader.attributes() if call.reader is not None else {}
    except Exception:
        return {}
