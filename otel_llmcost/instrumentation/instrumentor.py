"""The `BaseInstrumentor` every SDK shares: wrap the base client's request methods, unwrap them again."""

from __future__ import annotations

import importlib
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from .. import __version__
from .core import Provider, RequestTracer


class SdkInstrumentor(BaseInstrumentor):
    """Subclasses name the SDK module (`sdk`) and describe it (`provider()`)."""

    sdk: str

    def provider(self) -> Provider:
        raise NotImplementedError

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(
            "otel_llmcost", __version__, tracer_provider=kwargs.get("tracer_provider"),
        )
        request_tracer = RequestTracer(tracer, self.provider())
        module = f"{self.sdk}._base_client"
        wrap_function_wrapper(module, "SyncAPIClient.request", request_tracer.sync_wrapper)
        wrap_function_wrapper(module, "AsyncAPIClient.request", request_tracer.async_wrapper)
        self._instrument_more(request_tracer)

    def _instrument_more(self, request_tracer: RequestTracer) -> None:
        """Hook for SDK-specific additions."""

    def _uninstrument(self, **kwargs: Any) -> None:
        base_client = importlib.import_module(f"{self.sdk}._base_client")
        unwrap(base_client.SyncAPIClient, "request")
        unwrap(base_client.AsyncAPIClient, "request")
        self._uninstrument_more()

    def _uninstrument_more(self) -> None:
        """Hook for SDK-specific additions."""
