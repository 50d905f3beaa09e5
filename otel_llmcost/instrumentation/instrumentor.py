"""The `BaseInstrumentor` every SDK shares: wrap the SDK's request methods, unwrap them again."""

from __future__ import annotations

import importlib
import threading
from typing import Any, Callable

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from .. import __version__, guard, names
from .api import app_tracer
from . import semconv
from .core import Provider, RequestTracer, Telemetry, log_once, read_on_parse

Target = tuple[str, str]  # (module, "Class.method")

_lock = threading.Lock()


class SdkInstrumentor(BaseInstrumentor):
    """Subclasses name the methods every API call goes through, and describe the SDK (`provider()`).

    `instrument()` takes `tracer_provider`, `meter_provider` and `logger_provider` (default: the global ones),
    `prefix_fingerprint` (default: env `OTEL_LLMCOST_PREFIX_FINGERPRINT`, on) and `metrics` (default: env
    `OTEL_LLMCOST_METRICS`, on). The message settings are read from the environment (see `semconv`).
    """

    sync_requests: tuple[Target, ...] = ()
    async_requests: tuple[Target, ...] = ()
    closes: tuple[Target, ...] = ()  # a stream's (or stream helper's) close(): ends the stream's span
    # a raw response's _parse(): reads a `with_streaming_response` call; wrapped when the first such call is seen
    parses: tuple[Target, ...] = ()

    def provider(self, **kwargs: Any) -> Provider:
        raise NotImplementedError

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(names.SCOPE, __version__, tracer_provider=kwargs.get("tracer_provider"))
        settings = semconv.settings_from_env(kwargs.get("metrics"))
        request_tracer = RequestTracer(tracer, self.provider(**kwargs), fingerprint=kwargs.get("prefix_fingerprint"),
                                       settings=settings, telemetry=_telemetry(settings, kwargs))
        self._wrapped: list[Target] = []
        for targets, wrapper in (
            (self.sync_requests, request_tracer.sync_wrapper),
            (self.async_requests, request_tracer.async_wrapper),
            (self.closes, request_tracer.end_stream_on_close),
        ):
            for target in targets:
                self._wrap(target, wrapper)
        if self.parses:
            request_tracer.on_unparsed = self._wrap_parses
        self._request_tracer = request_tracer
        self._tracer = tracer
        app_tracer.append(tracer)
        guard.enable_from_environment(kwargs.get("tracer_provider"))
        self._instrument_more()

    def _wrap(self, target: Target, wrapper: Callable) -> None:
        module, name = target
        try:
            wrap_function_wrapper(module, name, wrapper)
        except (ImportError, AttributeError):  # an older SDK without this class or method
            return
        self._wrapped.append(target)

    def _wrap_parses(self) -> None:
        """Wraps `parses` once: every response is parsed, and only `with_streaming_response` calls need it."""
        with _lock:
            request_tracer = getattr(self, "_request_tracer", None)
            if request_tracer is None or request_tracer.on_unparsed is None:
                return
            request_tracer.on_unparsed = None
            for target in self.parses:
                self._wrap(target, read_on_parse)

    def _instrument_more(self) -> None:
        """Hook for SDK-specific additions."""

    def _uninstrument(self, **kwargs: Any) -> None:
        with _lock:
            request_tracer = getattr(self, "_request_tracer", None)
            if request_tracer is not None:  # a call still running must not wrap `parses` again
                request_tracer.on_unparsed = None
            self._request_tracer = None
        for module, name in reversed(getattr(self, "_wrapped", [])):
            try:
                owner: Any = importlib.import_module(module)
                *path, attribute = name.split(".")
                for part in path:
                    owner = getattr(owner, part)
                unwrap(owner, attribute)
            except Exception:
                log_once(f"could not unwrap {module}.{name}")
        self._wrapped = []
        if getattr(self, "_tracer", None) in app_tracer:
            app_tracer.remove(self._tracer)
        self._uninstrument_more()

    def _uninstrument_more(self) -> None:
        """Hook for SDK-specific additions."""


def _telemetry(settings: semconv.Settings, kwargs: dict[str, Any]) -> Telemetry | None:
    """The metrics (through the given or the global meter provider, as the contrib instrumentations do: the
    global one records nothing until the application sets one) and the message events, or None if both are off."""
    instruments = events = None
    if settings.metrics:
        from opentelemetry import metrics

        from .metrics import GenAIMetrics

        instruments = GenAIMetrics(metrics.get_meter(names.SCOPE, __version__,
                                                     meter_provider=kwargs.get("meter_provider")))
    if settings.content_as_event:
        from opentelemetry import _logs

        events = _logs.get_logger(names.SCOPE, __version__, logger_provider=kwargs.get("logger_provider"))
    if instruments is None and events is None:
        return None
    return Telemetry(settings, instruments, events)
