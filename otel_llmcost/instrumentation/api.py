"""What an application calls itself: attribution (`attributes`) and application-level cache hits
(`record_cache_hit`, `cache_hit`). Re-exported by `otel_llmcost`."""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable

from opentelemetry import baggage, context, trace
from opentelemetry.trace import SpanKind

from .. import __version__, names
from .core import attribution, attribution_defaults, log_once

# The tracer the instrumentors were given (`instrument(tracer_provider=...)`), so that cache-hit spans go where
# the LLM spans go; the global tracer provider otherwise.
app_tracer: list[trace.Tracer] = []


class attributes:
    """Attribution for every LLM call made inside: `with attributes(project=..., feature=..., user_id=...):`
    (or `async with`, or `@attributes(...)` on a function or coroutine function).

    The values go into OpenTelemetry baggage (`llmcost.project`, `llmcost.feature`, `user.id`), so they cross
    service boundaries with the trace context; the instrumentation copies them onto each LLM span. Values left
    out (None) keep what the surrounding context says.
    """

    def __init__(self, project: Any = None, feature: Any = None, user_id: Any = None) -> None:
        self._kwargs = {"project": project, "feature": feature, "user_id": user_id}
        self._values = [
            (key, str(value))
            for key, value in ((names.PROJECT, project), (names.FEATURE, feature), (names.USER_ID, user_id))
            if value is not None
        ]
        self._tokens: list[object] = []

    def __enter__(self) -> "attributes":
        ctx = context.get_current()
        for key, value in self._values:
            ctx = baggage.set_baggage(key, value, ctx)
        self._tokens.append(context.attach(ctx))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        context.detach(self._tokens.pop())

    async def __aenter__(self) -> "attributes":
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__()

    def __call__(self, func: Callable) -> Callable:
        kwargs = self._kwargs
        return _around(func, lambda: attributes(**kwargs), lambda result: result)


def _around(func: Callable, manager: Callable[[], Any], after: Callable[[Any], Any]) -> Callable:
    """`func` (a function or coroutine function) run inside `manager()`, its result passed through `after`."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with manager():
                return after(await func(*args, **kwargs))

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with manager():
            return after(func(*args, **kwargs))

    return wrapper


def record_cache_hit(
    *,
    kind: str,
    provider: str,
    model: str,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> None:
    """Records that the application's own cache (`kind`: `exact`, `semantic`, ...) answered instead of `model`:
    a span `cache_hit {model}` with what the avoided call would have used, and the attribution. It carries no
    `gen_ai.usage.*` and no `gen_ai.operation.name`: it is not a call, the collector prices what it saved.
    Never raises."""
    try:
        attributes_ = attribution(attribution_defaults())
        attributes_[names.CACHE_HIT_KIND] = str(kind)
        attributes_[names.PROVIDER] = str(provider)
        attributes_[names.REQUEST_MODEL] = str(model)
        if type(input_tokens) is int and input_tokens >= 0:
            attributes_[names.CACHE_HIT_INPUT_TOKENS] = input_tokens
        if type(output_tokens) is int and output_tokens >= 0:
            attributes_[names.CACHE_HIT_OUTPUT_TOKENS] = output_tokens
        tracer = app_tracer[-1] if app_tracer else trace.get_tracer(names.SCOPE, __version__)
        tracer.start_span(f"cache_hit {model}", kind=SpanKind.INTERNAL, attributes=attributes_).end()
    except Exception:
        log_once("could not record a cache hit")


def cache_hit(
    *, kind: str, provider: str, model: str, tokens: Callable[[Any], tuple[int | None, int | None]] | None = None
) -> Callable[[Callable], Callable]:
    """Decorates a cache look-up (a function or coroutine function returning None on a miss): each hit is
    recorded with `record_cache_hit`; `tokens(result)` may say `(input_tokens, output_tokens)` of the avoided
    call."""

    def record(result: Any) -> Any:
        if result is not None:
            try:
                input_tokens, output_tokens = tokens(result) if tokens is not None else (None, None)
            except Exception:
                log_once("could not read the tokens of a cache hit")
                input_tokens = output_tokens = None
            record_cache_hit(
                kind=kind, provider=provider, model=model, input_tokens=input_tokens, output_tokens=output_tokens
            )
        return result

    return lambda func: _around(func, contextlib.nullcontext, record)
