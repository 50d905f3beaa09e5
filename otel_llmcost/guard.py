"""The budget guard: checks each instrumented LLM call against the budgets of its attribution before it is sent.

Off by default. Turn it on in code, or with `OTEL_LLMCOST_GUARD=raise|record` when `opentelemetry-instrument`
loads our instrumentors:

    from otel_llmcost import guard
    guard.enable(action="raise")              # or action="record", or hook=my_hook (below)
    try:
        client.chat.completions.create(...)
    except guard.BudgetExceeded as over:      # over.scope, over.scope_value, over.period, over.unit, over.limit, over.spent
        ...

The budgets are the collector's (`otel-llmcost budget set`, table `llm_budgets`): scope `all`, a project, a
feature or a user (the call's `llmcost.project`, `llmcost.feature`, `user.id`), a period (hour, day, month, UTC)
and a limit in dollars, tokens or both. Spend is what the collector has stored in the current period (its
`/llmcost/v1/budgets` endpoint, polled every `poll_seconds` in the background and cached) plus what this process
spent since: its own calls' tokens (and their dollars at the scope's average price per token this month) count
for `lag_seconds` after they end, the time their spans take to reach the store. So a burst cannot run far past a
limit between polls, and a call may count twice for that short while: the guard errs on the side of stopping.

A call is over when its scope's spend has reached a limit. Then, by `action`:
- `raise`: the call is not sent; `BudgetExceeded` is raised from the SDK method (its span records it);
- a `hook`: `hook(over, request)` is called with the request body (a dict); it may return changes to apply to
  it (`{"model": "gpt-4o-mini", "max_tokens": 200}`), or raise, or return None to send the call as it is;
- `record`: the call goes ahead; its span carries `llmcost.guard.over_budget`.
If the collector cannot be reached, the guard lets every call through (it fails open), logs once, and marks the
spans `llmcost.guard.status=unavailable`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Mapping

from opentelemetry.sdk.trace import SpanProcessor

from . import names

logger = logging.getLogger("otel_llmcost.guard")

BUDGETS_PATH = "/llmcost/v1/budgets"
ACTIONS = ("raise", "record", "hook")
OVER_BUDGET = "llmcost.guard.over_budget"
STATUS = "llmcost.guard.status"
# The scopes a call's attribution falls in, with the attribute that names each.
SCOPES = (("project", names.PROJECT), ("feature", names.FEATURE), ("user", names.USER_ID))


class BudgetExceeded(Exception):
    """An LLM call stopped by the budget guard before it was sent."""

    def __init__(self, over: "Over") -> None:
        self.over = over
        self.scope, self.scope_value, self.period = over.scope, over.scope_value, over.period
        self.unit, self.limit, self.spent = over.unit, over.limit, over.spent
        super().__init__(f"budget exceeded: {over.describe()}")


@dataclass(frozen=True)
class Over:
    """The budget a call is over: its scope, period and unit (`usd` or `tokens`), its limit and the spend."""

    scope: str
    scope_value: str
    period: str
    unit: str
    limit: Decimal | int
    spent: Decimal | int

    def describe(self) -> str:
        where = self.scope + (f" {self.scope_value}" if self.scope_value else "")
        if self.unit == "usd":
            return f"{where}: ${self.spent:.4f} of ${self.limit} this {self.period}"
        return f"{where}: {self.spent:,} of {self.limit:,} tokens this {self.period}"


@dataclass
class _Budget:
    scope: str
    scope_value: str
    period: str
    limit_usd: Decimal  # 0: no dollar limit
    limit_tokens: int  # 0: no token limit
    spent_usd: Decimal
    spent_tokens: int
    usd_per_token: Decimal  # the scope's average this month, to price this process's own recent tokens


class _Local:
    """This process's calls of the last `lag_seconds`, by scope key: what the collector may not have yet."""

    def __init__(self, lag_seconds: float) -> None:
        self.lag = lag_seconds
        self.calls: deque[tuple[float, tuple, int]] = deque()
        self.tokens: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def add(self, keys: tuple, tokens: int) -> None:
        with self.lock:
            self.calls.append((time.monotonic(), keys, tokens))
            for key in keys:
                self.tokens[key] = self.tokens.get(key, 0) + tokens

    def expire(self) -> None:
        horizon = time.monotonic() - self.lag
        with self.lock:
            while self.calls and self.calls[0][0] < horizon:
                _, keys, tokens = self.calls.popleft()
                for key in keys:
                    self.tokens[key] -= tokens


def scope_keys(attributes: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The budget scopes of a call with these attributes: all, and its project, feature and user if it has them."""
    keys = [("all", "")]
    for scope, attribute in SCOPES:
        value = attributes.get(attribute)
        if value:
            keys.append((scope, str(value)))
    return tuple(keys)


class Guard:
    def __init__(self, endpoint: str, token: str | None = None, action: str = "raise",
                 hook: Callable[[Over, dict], Mapping[str, Any] | None] | None = None, poll_seconds: float = 10.0,
                 lag_seconds: float = 30.0, timeout: float = 2.0) -> None:
        if hook is not None:
            action = "hook"
        if action not in ACTIONS:
            raise ValueError(f"guard action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if action == "hook" and hook is None:
            raise ValueError("the guard's hook action needs a hook")
        self.url = endpoint.rstrip("/") + BUDGETS_PATH
        self.token = token
        self.action = action
        self.hook = hook
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.local = _Local(lag_seconds)
        self.budgets: dict[tuple[str, str], list[_Budget]] = {}
        self.available: bool | None = None  # None until the first poll
        self.polled_at = float("-inf")
        self._polling = threading.Lock()
        self._warned = False

    # -- per call ---------------------------------------------------------------------------------------

    def before_call(self, span: Any, attributes: Mapping[str, Any], request: Any) -> None:
        """Checks a call about to be sent. Raises `BudgetExceeded` (after ending `span`), or what the app's hook
        raises, to stop it; anything else that fails here is logged once and lets the call go ahead."""
        try:
            self._refresh()
            if not self.available:
                span.set_attribute(STATUS, "unavailable")
                return
            over = self.over(scope_keys(attributes))
            if over is None:
                return
            span.set_attribute(OVER_BUDGET, over.describe())
        except Exception:
            logger.warning("otel-llmcost guard: could not check a call; it goes ahead", exc_info=True)
            return
        if self.action == "record":
            return
        if self.action == "raise":
            exc = BudgetExceeded(over)
            self._end(span, exc)
            raise exc
        body = request if isinstance(request, dict) else {}
        try:
            changes = self.hook(over, body)
        except BaseException as exc:  # the app's hook stops the call its own way
            self._end(span, exc)
            raise
        if changes and body is request:
            body.update(changes)
            if "model" in changes:
                span.set_attribute(names.REQUEST_MODEL, str(changes["model"]))
            span.set_attribute(STATUS, "changed by hook")

    def over(self, keys: tuple[tuple[str, str], ...]) -> Over | None:
        """The first budget of these scopes whose spend (stored, plus this process's recent calls) has reached
        its limit."""
        local = self.local.tokens
        for key in keys:
            for b in self.budgets.get(key, ()):
                mine = local.get(key, 0)
                if b.limit_tokens and b.spent_tokens + mine >= b.limit_tokens:
                    return Over(b.scope, b.scope_value, b.period, "tokens", b.limit_tokens, b.spent_tokens + mine)
                if b.limit_usd:
                    spent = b.spent_usd + mine * b.usd_per_token
                    if spent >= b.limit_usd:
                        return Over(b.scope, b.scope_value, b.period, "usd", b.limit_usd, spent)
        return None

    def spent(self, attributes: Mapping[str, Any], tokens: int) -> None:
        """Counts a finished call of this process."""
        if tokens > 0:
            self.local.add(scope_keys(attributes), tokens)

    @staticmethod
    def _end(span: Any, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute(names.ERROR_TYPE, type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        span.end()

    # -- the collector's budgets --------------------------------------------------------------------------

    def _refresh(self) -> None:
        if time.monotonic() - self.polled_at < self.poll_seconds:
            return
        if self.available is None:  # the first call waits for the budgets (a new process must not run free)
            self.poll()
        else:  # later ones use what is cached while a thread reads the budgets again
            self.polled_at = time.monotonic()
            threading.Thread(target=self.poll, name="otel-llmcost-guard", daemon=True).start()

    def poll(self) -> None:
        """Reads the budgets and their spend from the collector; never raises."""
        if not self._polling.acquire(blocking=False):
            return
        try:
            request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
            if self.token:
                request.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    document = json.loads(response.read())
                self.budgets = self._index(document["budgets"])
                self.available = True
                self._warned = False
            except Exception as exc:
                self.available = False
                if not self._warned:
                    self._warned = True
                    logger.warning("otel-llmcost guard: cannot read budgets from %s (%s); calls go ahead unchecked "
                                   "until it answers", self.url, exc)
            self.polled_at = time.monotonic()
            self.local.expire()
        finally:
            self._polling.release()

    @staticmethod
    def _index(rows: list[dict]) -> dict[tuple[str, str], list[_Budget]]:
        budgets: dict[tuple[str, str], list[_Budget]] = {}
        for r in rows:
            month_tokens = int(r.get("month_tokens") or 0)
            rate = Decimal(r.get("month_usd") or 0) / month_tokens if month_tokens else Decimal(0)
            budget = _Budget(r["scope"], r["scope_value"], r["period"], Decimal(r["amount_usd"] or 0),
                             int(r["limit_tokens"] or 0), Decimal(r["spent_usd"] or 0), int(r["spent_tokens"] or 0),
                             rate)
            budgets.setdefault((budget.scope, budget.scope_value), []).append(budget)
        return budgets


class _SpendRecorder(SpanProcessor):
    """A span processor: counts the tokens of each LLM call our instrumentation ends, for the guard."""

    def __init__(self) -> None:
        self.guard: Guard | None = None

    def on_end(self, span: Any) -> None:
        guard = self.guard
        if guard is None:
            return
        try:  # a span processor that raises would stop the app's span from ending
            scope = span.instrumentation_scope
            if scope is None or scope.name != "otel_llmcost":
                return
            attributes = span.attributes or {}
            tokens = attributes.get(names.INPUT_TOKENS, 0) + attributes.get(names.OUTPUT_TOKENS, 0)
            if type(tokens) is int:
                guard.spent(attributes, tokens)
        except Exception:
            logger.debug("otel-llmcost guard: could not count a call", exc_info=True)


active: Guard | None = None
_recorder = _SpendRecorder()
_providers: list[Any] = []  # the tracer providers our instrumentors use: the guard counts the calls they end
_attached: set[int] = set()


def enable(endpoint: str | None = None, token: str | None = None, action: str = "raise",
           hook: Callable[[Over, dict], Mapping[str, Any] | None] | None = None, poll_seconds: float = 10.0,
           lag_seconds: float = 30.0, tracer_provider: Any = None) -> Guard:
    """Turns the guard on for every instrumented call of this process (see the module's docstring)."""
    global active
    guard = Guard(endpoint or default_endpoint(), token if token is not None else os.environ.get(
        "OTEL_LLMCOST_AUTH_TOKEN"), action, hook, poll_seconds, lag_seconds)
    for provider in [tracer_provider, *_providers]:
        _attach(provider)
    _recorder.guard = guard
    active = guard
    return guard


def disable() -> None:
    global active
    active = None
    _recorder.guard = None


def register(tracer_provider: Any = None) -> None:
    """An instrumentor's tracer provider (the global one when None): the guard counts the calls it ends."""
    from opentelemetry import trace

    provider = tracer_provider or trace.get_tracer_provider()
    if all(p is not provider for p in _providers):
        _providers.append(provider)
    if active is not None:
        _attach(provider)


def _attach(provider: Any) -> None:
    add = getattr(provider, "add_span_processor", None)
    if add is not None and id(provider) not in _attached:
        _attached.add(id(provider))
        add(_recorder)


def default_endpoint() -> str:
    """The collector: `OTEL_LLMCOST_GUARD_ENDPOINT`, else the OTLP/HTTP endpoint the app exports to."""
    explicit = os.environ.get("OTEL_LLMCOST_GUARD_ENDPOINT")
    if explicit:
        return explicit
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if otlp and otlp.startswith("http") and ":4317" not in otlp:
        return otlp.split("/v1/")[0]
    return "http://127.0.0.1:4318"


def enable_from_environment(tracer_provider: Any = None) -> None:
    """Called as each instrumentor starts: registers its tracer provider, and turns the guard on when
    `OTEL_LLMCOST_GUARD=raise|record` (off by default)."""
    register(tracer_provider)
    action = (os.environ.get("OTEL_LLMCOST_GUARD") or "").strip().lower()
    if active is not None or action in ("", "off", "false", "0", "none"):
        return
    try:
        enable(action=action, poll_seconds=float(os.environ.get("OTEL_LLMCOST_GUARD_POLL_SECONDS") or 10),
               lag_seconds=float(os.environ.get("OTEL_LLMCOST_GUARD_LAG_SECONDS") or 30))
    except ValueError as exc:
        logger.warning("otel-llmcost guard: not enabled: %s", exc)
