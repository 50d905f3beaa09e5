"""`otel-llmcost savings`: changes worth making, largest first, in dollars per month of this team's own traffic.

    otel-llmcost savings [--since 30d] [--format table|json|csv] [--show-queries] [--store URL]

Each finding is one SQL file's row (read-only, from `llm_spans FINAL`) priced with the collector's catalog at
today's prices, scaled to 30 days from the traffic the window holds:
- `prompt-cache`: a repeated prompt prefix (the fingerprint of the system prompt and tools) that the provider's
  prompt cache did not serve: the reads caching would have made at the cache-read price, less one cache write
  per 5-minute window (the cache's life). Prefix tokens are estimated from its length (4 characters a token),
  and only prefixes a provider would cache (1,024 tokens or more) count.
- `cache-hit-drop`: a feature whose cached share of input fell in the last week: the recent input at the earlier
  hit rate.
- `batch`: a feature whose traffic is not latency-bound (no end user on its calls, or calls in bulk) on a
  provider with a Batch API: its usage at the batch price.
- `cheaper-model`: a feature that uses a premium model for short outputs: the same usage on the same provider's
  cheaper model (an estimate: the cheaper model may need more tokens, or not do the job).
- `output-cap`: a feature with a long tail of outputs: the output tokens beyond its 90th percentile, which
  `max_tokens` at that length would not have generated.
Unpriced calls and calls without usage are left out of every figure, and the output says how many there were.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import asdict, dataclass
from decimal import Decimal

from ..writes import SAVE_COLUMNS, SAVE_SQL
from . import covered_seconds, exact, money, now_ns, per_month, rows_of, usage_groups

CHARS_PER_TOKEN = 4
MIN_CACHEABLE_TOKENS = 1024  # the providers' smallest cacheable prompt
BATCH_PROVIDERS = {"openai", "anthropic", "azure.ai.openai", "gcp.gen_ai", "gcp.vertex_ai", "gcp.gemini"}
RECENT_SECONDS = 7 * 86_400
HIT_RATE_DROP = Decimal("0.10")  # a fall of 10 points of cached input share is worth a look
NOT_LATENCY_BOUND = Decimal("0.8")  # share of a feature's calls without a user or in bulk
BULK_CALLS_PER_MINUTE = 20
SHORT_OUTPUT_TOKENS = 400
MIN_CALLS = 20
# A premium model and the same provider's cheaper one; the name without provider prefix or date suffix matches.
CHEAPER_MODELS = (
    (r"gpt-4o", "gpt-4o-mini"),
    (r"gpt-4\.1", "gpt-4.1-mini"),
    (r"gpt-5(\.\d+)?", "gpt-5-mini"),
    (r"o[13]", "o4-mini"),
    (r"claude-opus-4(-\d+)?(-\d+)?", "claude-sonnet-4-5"),
    (r"claude-sonnet-4(-\d+)?", "claude-haiku-4-5"),
    (r"claude-3-[57]-sonnet", "claude-3-5-haiku"),
    (r"gemini-(2\.5|3)-pro(-preview)?", "gemini-2.5-flash"),
)
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


@dataclass
class Finding:
    kind: str
    service_name: str
    project: str
    feature: str
    provider: str
    model: str
    monthly_savings_usd: Decimal
    detail: str
    estimate: bool
    query: str

    def as_json(self) -> dict:
        return {**asdict(self), "monthly_savings_usd": exact(self.monthly_savings_usd)}


def cheaper_model(model: str, extra: dict[str, str] | None = None) -> str | None:
    name = _DATE_SUFFIX.sub("", model.lower().rsplit("/", 1)[-1])
    for pattern, cheaper in (extra or {}).items():
        if re.fullmatch(pattern, name):
            return cheaper
    for pattern, cheaper in CHEAPER_MODELS:
        if re.fullmatch(pattern, name):
            return cheaper
    return None


class Finder:
    """Runs the queries once and prices what they found."""

    def __init__(self, store, seconds: int, catalog=None, cheaper: dict[str, str] | None = None) -> None:
        from ..collector.pricing import PriceCatalog

        self.store = store
        self.seconds = seconds
        self.catalog = catalog or PriceCatalog()
        self.cheaper = cheaper or {}
        self.now_ns = now_ns()
        self.groups, self.usage_query = usage_groups(store, seconds)
        self.covered = covered_seconds(self.groups, seconds)
        self.unknown_calls = sum(g.unknown_calls for g in self.groups)

    def price(self, provider: str, model: str, usage, tier: str = "") -> Decimal | None:
        price = self.catalog.price(provider, model, self.now_ns, usage, tier)
        return price.total if price.status == "priced" else None

    def monthly(self, amount: Decimal, seconds: int | None = None) -> Decimal:
        """An amount of `seconds` of traffic (the window's by default) per 30 days, to the nano-dollar."""
        return per_month(amount, seconds or self.covered)

    def find(self) -> list[Finding]:
        findings = [*self.uncached_prefixes(), *self.cache_hit_drops(), *self.batch_candidates(),
                    *self.cheaper_models(), *self.output_caps()]
        findings = [f for f in findings if f.monthly_savings_usd > 0]
        return sorted(findings, key=lambda f: f.monthly_savings_usd, reverse=True)

    # -- the findings -------------------------------------------------------------------------------------

    def uncached_prefixes(self) -> list[Finding]:
        from ..collector.price_records import PricedUsage

        rows, query = rows_of(self.store, "uncached_prefixes", {"seconds": self.seconds, "min_calls": MIN_CALLS})
        found = []
        for r in rows:
            tokens = int(r["prefix_chars"]) // CHARS_PER_TOKEN
            if tokens < MIN_CACHEABLE_TOKENS:
                continue
            uncached = self.price(r["provider"], r["model"], PricedUsage(input_tokens=tokens))
            read = self.price(r["provider"], r["model"], PricedUsage(input_tokens=tokens, cache_read_tokens=tokens))
            write = self.price(r["provider"], r["model"], PricedUsage(input_tokens=tokens, cache_write_tokens=tokens))
            if uncached is None or read is None or write is None:
                continue
            reads = max(0, int(r["calls_without_cache_read"]) - int(r["windows"]))
            saving = reads * (uncached - read) - int(r["windows"]) * max(Decimal(0), write - uncached)
            found.append(Finding(
                "prompt-cache", r["service_name"], r["project"], r["feature"], r["provider"], r["model"],
                self.monthly(saving),
                f"prefix {r['prefix_hash'][:12]} (~{tokens:,} tokens) sent {r['calls']:,} times, "
                f"{r['calls_without_cache_read']:,} without a cache read",
                True, query))
        return found

    def cache_hit_drops(self) -> list[Finding]:
        from ..collector.price_records import PricedUsage

        recent = min(RECENT_SECONDS, self.seconds // 2)
        rows, query = rows_of(self.store, "cache_hit_rate", {"seconds": self.seconds, "recent_seconds": recent})
        found = []
        for r in rows:
            earlier = Decimal(r["earlier_cache_read_tokens"]) / Decimal(r["earlier_input_tokens"])
            now = Decimal(r["recent_cache_read_tokens"]) / Decimal(r["recent_input_tokens"])
            if earlier - now < HIT_RATE_DROP:
                continue
            lost = int((earlier - now) * r["recent_input_tokens"])
            uncached = self.price(r["provider"], r["model"], PricedUsage(input_tokens=lost))
            cached = self.price(r["provider"], r["model"], PricedUsage(input_tokens=lost, cache_read_tokens=lost))
            if uncached is None or cached is None:
                continue
            found.append(Finding(
                "cache-hit-drop", r["service_name"], r["project"], r["feature"], r["provider"], r["model"],
                self.monthly(uncached - cached, recent),
                f"cached share of input fell from {earlier:.0%} to {now:.0%} in the last {recent // 86_400 or 1} days",
                False, query))
        return found

    def batch_candidates(self) -> list[Finding]:
        rows, query = rows_of(self.store, "batch_traffic",
                              {"seconds": self.seconds, "bulk_calls": BULK_CALLS_PER_MINUTE})
        eligible = {}
        for r in rows:
            calls = Decimal(r["calls"])
            alone = max(Decimal(r["calls_without_user"]), Decimal(r["calls_in_bulk_minutes"])) / calls
            if calls >= MIN_CALLS and alone >= NOT_LATENCY_BOUND:
                eligible[(r["service_name"], r["project"], r["feature"])] = (
                    f"{r['calls_without_user'] / r['calls']:.0%} of calls without a user, "
                    f"{r['calls_in_bulk_minutes'] / r['calls']:.0%} in bulk minutes")
        found = []
        for g in self.groups:
            why = eligible.get((g.service_name, g.project, g.feature))
            if why is None or g.provider not in BATCH_PROVIDERS or g.service_tier in ("batch", "flex"):
                continue
            standard = g.price(self.catalog, when_ns=self.now_ns)
            batch = g.price(self.catalog, tier="batch", when_ns=self.now_ns)
            if standard is None or batch is None:
                continue
            found.append(Finding("batch", g.service_name, g.project, g.feature, g.provider, g.model,
                                 self.monthly(standard - batch), f"{why}; batch price for {g.calls:,} calls",
                                 False, f"{query};\n{self.usage_query}"))
        return found

    def cheaper_models(self) -> list[Finding]:
        found = []
        for g in self.groups:
            if g.calls < MIN_CALLS:
                continue
            target = cheaper_model(g.model, self.cheaper)
            p90 = self._p90.get((g.service_name, g.project, g.feature, g.provider, g.model))
            if target is None or p90 is None or p90 > SHORT_OUTPUT_TOKENS:
                continue
            now = g.price(self.catalog, when_ns=self.now_ns)
            then = g.price(self.catalog, target, when_ns=self.now_ns)
            if now is None or then is None:
                continue
            found.append(Finding("cheaper-model", g.service_name, g.project, g.feature, g.provider, g.model,
                                 self.monthly(now - then),
                                 f"90% of outputs within {p90:,} tokens; the same usage on {target} (estimate)",
                                 True, self.usage_query))
        return found

    @property
    def _p90(self) -> dict[tuple, int]:
        rows, _ = self._long_outputs
        return {(r["service_name"], r["project"], r["feature"], r["provider"], r["model"]): int(r["p90_output_tokens"])
                for r in rows}

    @property
    def _long_outputs(self):
        if not hasattr(self, "_long_outputs_rows"):
            self._long_outputs_rows = rows_of(self.store, "long_outputs", {"seconds": self.seconds, "min_calls": MIN_CALLS})
        return self._long_outputs_rows

    def output_caps(self) -> list[Finding]:
        from ..collector.price_records import PricedUsage

        rows, query = self._long_outputs
        found = []
        for r in rows:
            beyond = int(r["tokens_beyond_p90"])
            if beyond <= 0:
                continue
            saving = self.price(r["provider"], r["model"], PricedUsage(output_tokens=beyond))
            if saving is None:
                continue
            found.append(Finding(
                "output-cap", r["service_name"], r["project"], r["feature"], r["provider"], r["model"],
                self.monthly(saving),
                f"max_tokens={r['p90_output_tokens']:,} (the 90th percentile) cuts {beyond:,} of "
                f"{r['output_tokens']:,} output tokens", True, query))
        return found


# -- the command ------------------------------------------------------------------------------------------

COLUMNS = ("monthly_savings_usd", "kind", "service_name", "project", "feature", "provider", "model", "estimate",
           "detail")


def print_findings(finder: Finder, findings: list[Finding], fmt: str, show_queries: bool, since_text: str,
                   out=None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        json.dump({"since": since_text, "days_of_traffic": round(finder.covered / 86_400, 2),
                   "unknown_calls_left_out": finder.unknown_calls,
                   "findings": [f.as_json() for f in findings]}, out, indent=2)
        out.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for f in findings:
            writer.writerow([exact(f.monthly_savings_usd) if c == "monthly_savings_usd" else getattr(f, c)
                             for c in COLUMNS])
        return
    days = finder.covered / 86_400
    print(f"Savings per month on your traffic of the last {since_text} ({days:.1f} days stored), largest first:",
          file=out)
    if not findings:
        print("  nothing found worth changing", file=out)
    for i, f in enumerate(findings, 1):
        where = " / ".join(x for x in (f.service_name, f.project, f.feature) if x) or "(no attribution)"
        mark = " (estimate)" if f.estimate else ""
        print(f"{i:>2}. {money(f.monthly_savings_usd):>11}/mo  {f.kind:<14} {where}  {f.model}{mark}", file=out)
        print(f"    {f.detail}", file=out)
    if finder.unknown_calls:
        print(f"note: {finder.unknown_calls:,} unpriced calls or calls without usage are not in these figures",
              file=out)
    if show_queries:
        seen: dict[str, int] = {}
        for i, f in enumerate(findings, 1):
            seen.setdefault(f.query, i)
        for query, first in seen.items():
            print(f"\n-- the query behind finding {first} (and others of its kind):\n{query}", file=out)
    else:
        print("(--show-queries prints the SQL behind each figure; --format json includes it)", file=out)




def save(store, findings: list[Finding], seconds: int) -> None:
    """Appends a run's findings to `llm_savings`, for the dashboard's savings panel."""
    if findings:
        columns = {c: [exact(f.monthly_savings_usd) if c == "monthly_savings_usd" else getattr(f, c) for f in findings]
                   for c in SAVE_COLUMNS}
        store.command(SAVE_SQL, {"since": seconds, **columns})


def cmd_savings(args: argparse.Namespace) -> int:
    from ..store import open_store

    cheaper = dict(args.cheaper or [])
    store = open_store(args.store)
    try:
        finder = Finder(store, args.since, cheaper=cheaper)
        findings = finder.find()
        if args.save:
            save(store, findings, args.since)
    finally:
        store.close()
    print_findings(finder, findings, args.format, args.show_queries, args.since_text)
    return 0


def model_pair(text: str) -> tuple[str, str]:
    premium, sep, cheaper = text.partition("=")
    if not sep or not premium.strip() or not cheaper.strip():
        raise argparse.ArgumentTypeError(f"expected MODEL_REGEX=MODEL, e.g. 'gpt-4o=gpt-4o-mini', not {text!r}")
    try:
        re.compile(premium)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{premium!r} is not a regular expression: {exc}") from None
    return premium.strip(), cheaper.strip()


def register(subparsers) -> None:
    p = subparsers.add_parser("savings", help="what caching, batching, a cheaper model or an output cap would save",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--store", help="store URL (default $OTEL_LLMCOST_STORE or chdb://./.llmcost)")
    p.add_argument("--since", default="30d", help="the traffic to learn from, back from now")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--show-queries", action="store_true", help="print the SQL behind each figure")
    p.add_argument("--save", action="store_true", help="also append the findings to llm_savings (the dashboard's "
                                                       "savings panel shows the latest run)")
    p.add_argument("--cheaper", action="append", type=model_pair, metavar="MODEL_REGEX=MODEL",
                   help="a cheaper model for a premium one (checked before the built-in list)")
    p.set_defaults(func=cmd_savings)
