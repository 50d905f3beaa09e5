"""Raw HTTP: an app that calls an OpenAI-compatible or Anthropic endpoint with plain `httpx` or `httpx2` gets
the same attributes on the HTTP client span, through the hooks of `opentelemetry-instrumentation-httpx`::

    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor, HTTPX2ClientInstrumentor
    from otel_llmcost.instrumentation.http import llm_hooks

    HTTPXClientInstrumentor().instrument(**llm_hooks())    # patches httpx's HTTPTransport (openai 1.x, plain httpx)
    HTTPX2ClientInstrumentor().instrument(**llm_hooks())   # patches httpx2's (openai 3.x, anthropic 2.x, plain httpx2)

A request made by an instrumented SDK is left alone (our SDK span describes it: `CALL_IN_PROGRESS_KEY` is set
in its context), so a call is never counted twice. A JSON response is read when its headers arrive and served
to the app unchanged; a streamed (SSE) response ends its HTTP span before the body is read, so that span says
`llmcost.usage_missing`: stream through an SDK to have a stream's usage.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from opentelemetry import context

from .. import names
from . import anthropic as anthropic_adapter
from . import openai as openai_adapter
from .core import CALL_IN_PROGRESS_KEY, Described, Endpoint, Provider, RequestTracer, log_once

def _tracer(adapter: Any) -> RequestTracer:
    """A tracer of the adapter's request attributes (it starts no span: the HTTP instrumentation does)."""
    provider = Provider(describe=None, provider_name=None, request_attributes=adapter.request_attributes,  # type: ignore[arg-type]
                        prefix=adapter.prefix, stream_types=(), async_stream_types=())
    return RequestTracer(None, provider)  # type: ignore[arg-type]


def _routes() -> list[tuple[str, Endpoint, RequestTracer, Callable[[str, int | None], str]]]:
    openai_tracer, anthropic_tracer = _tracer(openai_adapter), _tracer(anthropic_adapter)
    by_host = lambda host, port: openai_adapter._provider_for_host(host, False, port)  # noqa: E731
    routes = [("/v1/messages", anthropic_adapter.ENDPOINTS["/v1/messages"], anthropic_tracer,
               anthropic_adapter.provider_for_host)]
    for path in ("/chat/completions", "/responses", "/embeddings", "/completions"):  # longest suffix first
        routes.append((path, openai_adapter.ENDPOINTS[path], openai_tracer, by_host))
    return routes


def _url_parts(url: Any) -> tuple[str, int | None, str]:
    if isinstance(url, tuple):  # (scheme, host, port, target) as bytes
        return url[1].decode("ascii", "replace"), url[2], url[3].decode("ascii", "replace").split("?", 1)[0]
    return url.host, url.port, url.path


def llm_hooks() -> dict[str, Callable]:
    """`request_hook`, `response_hook` and their async twins for `HTTPX(2)ClientInstrumentor().instrument()`."""
    routes = _routes()

    def route_of(request: Any) -> tuple[Endpoint, RequestTracer, str] | None:
        if context.get_value(CALL_IN_PROGRESS_KEY) or request.method not in (b"POST", "POST"):
            return None  # an SDK call we already trace, or not a call
        host, port, path = _url_parts(request.url)
        for suffix, endpoint, tracer, provider_name in routes:
            if path.endswith(suffix):
                return endpoint, tracer, provider_name(host, port)
        return None

    def request_hook(span: Any, request: Any) -> None:
        try:
            route = route_of(request)
            if route is None or not span.is_recording():
                return
            endpoint, tracer, provider_name = route
            body: Any = {}
            if type(request.stream).__name__ == "ByteStream":  # an in-memory body: safe to read again
                body = json.loads(b"".join(request.stream) or b"{}")
            if not isinstance(body, dict):
                body = {}
            described = Described(endpoint, body, body.get("model"), bool(body.get("stream")))
            span.set_attributes(tracer.request_attributes(described, provider_name))
        except Exception:
            log_once("could not read a raw HTTP LLM request")

    def read(span: Any, request: Any, response: Any) -> tuple[Endpoint, Any] | None:
        """The endpoint and the response stream of an LLM call's successful JSON response, or None."""
        route = route_of(request)
        if route is None or not span.is_recording() or response.status_code >= 400:
            return None
        content_type = response.headers.get("content-type", "") if response.headers is not None else ""
        if "event-stream" in content_type:
            span.set_attribute(names.USAGE_MISSING, True)
            return None
        if "json" not in content_type:
            return None
        if not hasattr(response.stream, "_httpcore_stream"):  # (see `_serve_again`)
            log_once("the HTTP response stream has no `_httpcore_stream`: raw HTTP usage is not read")
            span.set_attribute(names.USAGE_MISSING, True)
            return None
        return route[0], response.stream

    def response_hook(span: Any, request: Any, response: Any) -> None:
        try:
            found = read(span, request, response)
            if found is not None:
                try:
                    body: bytes | Exception = b"".join(found[1])
                except Exception as exc:  # the app meets the very error when it reads the body
                    body = exc
                _serve_again(span, *found, body)
        except Exception:
            log_once("could not read a raw HTTP LLM response")

    async def async_request_hook(span: Any, request: Any) -> None:
        request_hook(span, request)

    async def async_response_hook(span: Any, request: Any, response: Any) -> None:
        try:
            found = read(span, request, response)
            if found is not None:
                try:
                    body: bytes | Exception = b"".join([part async for part in found[1]])
                except Exception as exc:
                    body = exc
                _serve_again(span, *found, body)
        except Exception:
            log_once("could not read a raw HTTP LLM response")

    return {"request_hook": request_hook, "response_hook": response_hook,
            "async_request_hook": async_request_hook, "async_response_hook": async_response_hook}


def _serve_again(span: Any, endpoint: Endpoint, stream: Any, body: bytes | Exception) -> None:
    """Puts the body read back in the response for the app. The hook gets httpx's transport-level response stream,
    which has no public way to be read twice: its private `_httpcore_stream` (what it iterates) is replaced."""
    stream._httpcore_stream = _Body(body, stream._httpcore_stream)
    if not isinstance(body, Exception):
        span.set_attributes(endpoint.read_response(json.loads(body)))


class _Body:
    """A response body read already (or the error reading it met), served again to the app; closing closes the
    connection's own stream."""

    def __init__(self, body: bytes | Exception, original: Any) -> None:
        self.body = body
        self.original = original

    def __iter__(self):
        if isinstance(self.body, Exception):
            raise self.body
        yield self.body

    async def __aiter__(self):
        for part in self:
            yield part

    def close(self) -> None:
        self.original.close()

    async def aclose(self) -> None:
        await self.original.aclose()
