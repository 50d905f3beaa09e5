"""`otel-llmcost simulate`: realistic LLM traffic history, sent through the real OTLP exporter to a collector.

Several services, projects, features, users and models, with a daily cycle (busy afternoons, quiet nights,
UTC) and a weekly one (quiet weekends). Spans are backdated: each is a `ReadableSpan` with explicit start
and end times, exported with `OTLPSpanExporter` in batches, so the collector prices and stores them as if
they had happened then. The volume is kept small on purpose: each feature calls each of its models a
few times per 10-minute slot, with realistic token counts, about 1,500 spans a day.

Scenarios change the last `--incident-minutes` (default 90) of the history:
- `steady`: nothing (no rule should fire);
- `spike`: checkout-assistant / product-qa sends 4x longer prompts at the same request rate (spend up,
  traffic flat: `spend_spike_without_traffic`, `cost_per_request_jump`);
- `growth`: product-qa's traffic and spend both triple (must NOT fire the spike rule);
- `burn`: support-bot / reply-draft runs away (6 calls a minute, twice the prompt): with a budget on project `support`
  (`--budgets` sets demo budgets) the fast burn-rate alert fires;
- `cache-collapse`: support-bot / ticket-triage stops hitting the prompt cache (`cache_collapse`);
- `unpriced`: internal-tools starts calling a model without a price (`unpriced_spend`).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

from . import names

SLOT_MINUTES = 10
SCENARIOS = ("steady", "spike", "growth", "burn", "cache-collapse", "unpriced")


@dataclass(frozen=True)
class Feature:
    service: str
    project: str
    feature: str
    models: tuple[tuple[str, str], ...]  # (provider, model)
    calls_per_slot: float  # at the daily peak, per model
    input_tokens: int
    output_tokens: int
    cache_share: float  # share of input tokens read from the prompt cache
    users: int
    app_cache_share: float = 0.0  # share of requests the application answers from its own cache (no call)


FEATURES = (
    Feature("checkout-assistant", "shop", "product-qa", (("openai", "gpt-4o"), ("openai", "gpt-4o-mini")),
            3.0, 6000, 350, 0.0, 40),
    Feature("checkout-assistant", "shop", "order-summary", (("openai", "gpt-4o-mini"),), 2.0, 1200, 200, 0.0, 40,
            app_cache_share=0.2),
    Feature("search-api", "shop", "semantic-search", (("openai", "gpt-4.1-mini"),), 4.0, 800, 120, 0.0, 60,
            app_cache_share=0.3),
    Feature("support-bot", "support", "ticket-triage", (("anthropic", "claude-haiku-4-5"),),
            3.0, 6000, 250, 0.7, 15),
    Feature("support-bot", "support", "reply-draft", (("anthropic", "claude-sonnet-4-5"),), 1.5, 4000, 700, 0.5, 15),
    Feature("internal-tools", "ops", "report-writer", (("anthropic", "claude-sonnet-4-5"),), 0.5, 9000, 1500, 0.2, 5),
)
UNPRICED_MODEL = ("openai", "acme-llm-2-preview")

# Demo budgets (`--budgets`): sized so the steady history stays inside them.
DEMO_BUDGETS = (("all", "", "month", 400), ("project", "support", "day", 8), ("project", "shop", "month", 150))


def load_factor(moment: datetime, peak_hour: float = 15.0) -> float:
    """Daily cycle (peak at `peak_hour`, trough 12 hours away at 15%) times a weekly one (weekends at 45%)."""
    hour = moment.hour + moment.minute / 60
    daily = 0.15 + 0.85 * (0.5 + 0.5 * math.cos((hour - peak_hour) / 24 * 2 * math.pi))
    weekly = 0.45 if moment.weekday() >= 5 else 1.0
    return daily * weekly


@dataclass
class Call:
    start: datetime
    duration_s: float
    feature: Feature
    provider: str
    model: str
    user: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    error: bool = False
    app_cache_hit: bool = False  # answered from the application's cache: the tokens are the avoided call's


def calls(days: float, end: datetime, scenario: str = "steady", incident_minutes: int = 90,
          seed: int = 7) -> Iterator[Call]:
    """The calls of `days` of history ending at `end`, in time order, deterministic for a seed."""
    rng = random.Random(seed)
    end = end.replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    incident = end - timedelta(minutes=incident_minutes)
    # The busiest hour of the day is the incident's, whatever the wall clock: a rehearsal at night shows the
    # same alerts as one in the afternoon (the users are wherever it is afternoon now).
    middle = end - timedelta(minutes=incident_minutes / 2)
    peak_hour = middle.hour + middle.minute / 60
    slot = start
    day_factors: dict = {}
    carry: dict = {}
    while slot < end:
        load = load_factor(slot, peak_hour)
        in_incident = slot >= incident
        for feature in FEATURES:
            models = list(feature.models)
            prompt_scale, rate, cache_share = 1.0, feature.calls_per_slot * load, feature.cache_share
            if in_incident:
                if scenario == "spike" and feature.feature == "product-qa":
                    prompt_scale = 4.0
                elif scenario == "growth" and feature.feature == "product-qa":
                    rate *= 3.0
                elif scenario == "burn" and feature.feature == "reply-draft":
                    rate, prompt_scale = 60.0, 2.0  # a runaway loop: 6 calls a minute, whatever the hour
                elif scenario == "cache-collapse" and feature.feature == "ticket-triage":
                    cache_share = 0.0
                elif scenario == "unpriced" and feature.feature == "report-writer":
                    models.append(UNPRICED_MODEL)
            day_factor = day_factors.setdefault((slot.date(), feature.feature), rng.uniform(0.97, 1.03))
            for provider, model in models:
                # error-diffused rounding, not Poisson: at this small volume each span stands for a share of
                # a real service's traffic, whose request rate is smooth (+-3% from day to day)
                key = (feature.feature, model)
                carry[key] = carry.get(key, rng.random()) + rate * day_factor
                count, carry[key] = int(carry[key]), carry[key] - int(carry[key])
                for i in range(count):
                    # evenly spread over the slot, so any window holds its share of the slot's calls
                    offset = (i + rng.uniform(0.3, 0.7)) / count * (SLOT_MINUTES * 60 - 30)
                    input_tokens = max(50, int(rng.gauss(feature.input_tokens, feature.input_tokens * 0.15)
                                               * prompt_scale))
                    output_tokens = max(10, int(rng.gauss(feature.output_tokens, feature.output_tokens * 0.2)))
                    cached = int(input_tokens * cache_share * rng.uniform(0.9, 1.0)) if cache_share else 0
                    yield Call(
                        start=slot + timedelta(seconds=offset),
                        duration_s=0.4 + output_tokens / 80 * rng.uniform(0.8, 1.2),
                        feature=feature, provider=provider, model=model,
                        user=f"user-{feature.project}-{int(rng.paretovariate(1.2)) % feature.users:03d}",
                        input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached,
                        error=rng.random() < 0.01,
                    )
                # application cache hits come on top of the calls (the request rate above is real calls)
                hits = feature.app_cache_share / (1 - feature.app_cache_share) * count if count else 0
                for _ in range(int(hits + rng.random())):
                    yield Call(
                        start=slot + timedelta(seconds=rng.uniform(0, SLOT_MINUTES * 60 - 30)), duration_s=0.005,
                        feature=feature, provider=provider, model=model,
                        user=f"user-{feature.project}-{int(rng.paretovariate(1.2)) % feature.users:03d}",
                        input_tokens=feature.input_tokens, output_tokens=feature.output_tokens,
                        cache_read_tokens=0, app_cache_hit=True,
                    )
        slot += timedelta(minutes=SLOT_MINUTES)


def to_span(call: Call, rng: random.Random):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    context = SpanContext(trace_id=rng.getrandbits(128) or 1, span_id=rng.getrandbits(64) or 1, is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
    attributes = {
        names.OPERATION: "chat",
        names.PROVIDER: call.provider,
        names.REQUEST_MODEL: call.model,
        names.PROJECT: call.feature.project,
        names.FEATURE: call.feature.feature,
        names.USER_ID: call.user,
    }
    status = Status(StatusCode.OK)
    if call.app_cache_hit:
        attributes.update({
            names.CACHE_HIT_KIND: "exact",
            names.CACHE_HIT_INPUT_TOKENS: call.input_tokens,
            names.CACHE_HIT_OUTPUT_TOKENS: call.output_tokens,
        })
    elif call.error:
        attributes[names.ERROR_TYPE] = "RateLimitError"
        status = Status(StatusCode.ERROR, "429 Too Many Requests")
    else:
        attributes.update({
            names.RESPONSE_MODEL: call.model,
            names.INPUT_TOKENS: call.input_tokens,
            names.OUTPUT_TOKENS: call.output_tokens,
            names.CACHE_READ_TOKENS: call.cache_read_tokens,
        })
    start_ns = int(call.start.timestamp() * 1e9)
    return ReadableSpan(
        name=f"chat {call.model}",
        context=context,
        resource=Resource.create({"service.name": call.feature.service, "deployment.environment": "simulation"}),
        attributes=attributes,
        kind=SpanKind.CLIENT,
        status=status,
        start_time=start_ns,
        end_time=start_ns + int(call.duration_s * 1e9),
        instrumentation_scope=InstrumentationScope("otel_llmcost.simulate", "0.1.0"),
    )


def send(endpoint: str, days: float, scenario: str = "steady", end: datetime | None = None,
         incident_minutes: int = 90, seed: int = 7, batch: int = 2000, headers: dict | None = None,
         progress=None) -> int:
    """Exports the simulated history to the collector at `endpoint` (OTLP HTTP); returns the span count.
    `progress(sent, day)` is called after each batch, with the day of history it reached."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    end = end or datetime.now(timezone.utc)
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", headers=headers, timeout=60)
    rng = random.Random(seed + 1)
    pending, sent = [], 0
    try:
        for call in calls(days, end, scenario, incident_minutes, seed):
            pending.append(to_span(call, rng))
            if len(pending) >= batch:
                if exporter.export(pending) is not SpanExportResult.SUCCESS:
                    raise RuntimeError(f"the collector at {endpoint} refused a batch of spans")
                sent += len(pending)
                if progress is not None:
                    progress(sent, days - (end - call.start).total_seconds() / 86400)
                pending = []
        if pending:
            if exporter.export(pending) is not SpanExportResult.SUCCESS:
                raise RuntimeError(f"the collector at {endpoint} refused a batch of spans")
            sent += len(pending)
    finally:
        exporter.shutdown()
    return sent


def terminal_progress(days: float):
    """A one-line progress report on stderr when it is a terminal; None (quiet) when piped or redirected."""
    if not sys.stderr.isatty():
        return None

    def show(sent: int, day: float) -> None:
        sys.stderr.write(f"\rsimulate: {sent:,} spans sent, day {min(day, days):.1f} of {days:g}")
        sys.stderr.flush()

    return show


def check_reachable(endpoint: str) -> None:
    """Fails at once when nothing listens at the endpoint (the exporter would retry for half a minute first)."""
    import socket
    from urllib.parse import urlparse

    from .errors import EXIT_FAILURE, UserError

    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(f"--endpoint {endpoint!r}: use the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318")
    try:
        socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)),
                                 timeout=5).close()
    except OSError as exc:
        raise UserError(f"no collector answers at {endpoint} ({exc.strerror or exc})",
                        "start one (otel-llmcost collector), or give its OTLP/HTTP URL with --endpoint",
                        EXIT_FAILURE) from exc


def cmd_simulate(args: argparse.Namespace) -> int:
    token = os.environ.get("OTEL_LLMCOST_AUTH_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else None
    check_reachable(args.endpoint)
    began = time.monotonic()
    try:
        count = send(args.endpoint, args.days, args.scenario, incident_minutes=args.incident_minutes,
                     seed=args.seed, headers=headers, progress=terminal_progress(args.days))
    except RuntimeError as exc:
        print(f"otel-llmcost simulate: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    print(f"sent {count} spans ({args.days:g} days, scenario {args.scenario}) to {args.endpoint} "
          f"in {time.monotonic() - began:.1f} s")
    if args.budgets:
        from .budgets import set_budget
        from .store import open_store

        store = open_store(args.store)
        try:
            for scope, value, period, amount in DEMO_BUDGETS:
                set_budget(store, scope, value, period, amount)
        finally:
            store.close()
        print("demo budgets set: " + ", ".join(f"{s} {v or ''} ${a}/{p}".replace("  ", " ")
                                               for s, v, p, a in DEMO_BUDGETS))
    return 0


def positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and 0 < days <= 3660):
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r} (use more than 0, e.g. 14 or 0.5)")
    return days


def minutes(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r} (use a whole number, 0 or more)")
    return int(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="send realistic backdated LLM traffic to a collector (rehearsal)")
    p.add_argument("--days", type=positive_days, default=14, help="days of history ending now")
    p.add_argument("--scenario", choices=SCENARIOS, default="steady",
                   help="what happens in the last --incident-minutes")
    p.add_argument("--incident-minutes", type=minutes, default=90, help="length of the scenario's incident")
    p.add_argument("--endpoint", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), help="collector OTLP HTTP endpoint "
                   "(default $OTEL_EXPORTER_OTLP_ENDPOINT or http://127.0.0.1:4318)")
    p.add_argument("--seed", type=int, default=7, help="random seed: the same seed, the same history")
    p.add_argument("--budgets", action="store_true", help="also set demo budgets in the store (--store)")
    p.add_argument("--store",
                   help="store URL or directory for --budgets (default $OTEL_LLMCOST_STORE, else ./.llmcost)")
    p.set_defaults(func=cmd_simulate)



# Approximate list prices (USD per million tokens: input, cached input, output) for `seed_store`, which writes
# rows without a collector. The collector prices with genai-prices; these only keep seeded data realistic.
SEED_PRICES = {
    "gpt-4o": (2.5, 1.25, 10.0),
    "gpt-4o-mini": (0.15, 0.075, 0.6),
    "gpt-4.1-mini": (0.4, 0.1, 1.6),
    "claude-haiku-4-5": (1.0, 0.1, 5.0),
    "claude-sonnet-4-5": (3.0, 0.3, 15.0),
}
SEED_COLUMNS = ("timestamp", "duration_ms", "trace_id", "span_id", "service_name", "provider", "operation",
                "request_model", "response_model", "status_code", "error_type", "input_tokens", "output_tokens",
                "cache_read_tokens", "cost_usd", "input_cost_usd", "cache_read_cost_usd", "output_cost_usd",
                "cache_savings_usd", "price_status", "project", "feature", "user_id", "cache_hit_kind",
                "app_cache_savings_usd")


def seed_rows(days: float, end: datetime, scenario: str = "steady", incident_minutes: int = 90,
              seed: int = 7) -> list[tuple]:
    """The simulated calls as `llm_spans` rows priced with SEED_PRICES (no collector involved)."""
    from decimal import Decimal

    rng = random.Random(seed + 1)
    rows = []
    for call in calls(days, end, scenario, incident_minutes, seed):
        prices = SEED_PRICES.get(call.model)
        tokens = (0, 0, 0) if call.error or call.app_cache_hit else (
            call.input_tokens, call.output_tokens, call.cache_read_tokens)
        costs: list = [None] * 5
        status = "no_usage" if call.error else ("priced" if prices else "unpriced")
        avoided = None
        if call.app_cache_hit:  # like the collector: a cost of exactly 0, the avoided call's price as savings
            costs = [Decimal(0)] * 4 + [None]
            if prices:
                avoided = round((Decimal(call.input_tokens) * Decimal(str(prices[0]))
                                 + Decimal(call.output_tokens) * Decimal(str(prices[2]))) / Decimal(1_000_000), 9)
        elif status == "priced":
            million = Decimal(1_000_000)
            uncached = Decimal(tokens[0] - tokens[2]) * Decimal(str(prices[0])) / million
            cached = Decimal(tokens[2]) * Decimal(str(prices[1])) / million
            output = Decimal(tokens[1]) * Decimal(str(prices[2])) / million
            saved = Decimal(tokens[2]) * Decimal(str(prices[0] - prices[1])) / million
            costs = [round(x, 9) for x in (uncached + cached + output, uncached, cached, output, saved)]
        rows.append((
            call.start, call.duration_s * 1000, f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}",
            call.feature.service, call.provider, "chat", call.model, "" if call.error else call.model,
            "ERROR" if call.error else "OK", "RateLimitError" if call.error else "",
            *tokens, *costs, status, call.feature.project, call.feature.feature, call.user,
            "exact" if call.app_cache_hit else "", avoided,
        ))
    return rows


def seed_store(store, days: float, end: datetime, scenario: str = "steady", incident_minutes: int = 90,
               seed: int = 7) -> int:
    """Writes the simulated history straight into a store (tests, offline rehearsals); returns the row count."""
    rows = seed_rows(days, end, scenario, incident_minutes, seed)
    for i in range(0, len(rows), 20000):
        store.insert("llm_spans", rows[i:i + 20000], SEED_COLUMNS)
    return len(rows)
