"""`otel-llmcost whatif`: the stored usage re-priced under changes, side by side with what it cost.

    otel-llmcost whatif --since 30d [--swap 'gpt-4o=gpt-4o-mini[@feature]'] [--batch FEATURE]
                        [--discount 'openai=15'] [--self-host 'MODEL:gpu_hour_usd=2.5,gpus=8,tokens_per_second=3000']
                        [--file whatif.yaml] [--format table|json|csv] [--store URL]

The file holds the same changes:

    swap:       [{from: "gpt-4o*", to: gpt-4o-mini, feature: product-qa}]   # feature optional (all)
    batch:      [ticket-triage]                                          # features, or "*"
    discounts:  [{provider: openai, percent: 15}, {model: "claude-*", percent: 10}]
    self_host:  [{model: claude-sonnet-4-5, gpu_hour_usd: 4.0, gpus: 8, tokens_per_second: 3000}]

How. The usage of each feature and model (`usage_by_feature.sql`, read-only) keeps its stored cost where no
change applies. Where one does, the usage is priced with the collector's catalog at today's prices: on the
swapped-to model, at the batch price, less the discount. A self-hosted model costs its GPUs for the whole
window (as many replicas as its tokens need at the stated throughput), shared among its features by tokens,
and the break-even volume per day is stated. Stored rows are never changed.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import sys
from dataclasses import dataclass, field
from decimal import Decimal

from . import UsageGroup, covered_seconds, exact, money, now_ns, usage_groups


class ScenarioError(ValueError):
    """A change that cannot be applied; the message says which and why."""


@dataclass(frozen=True)
class Swap:
    source: str  # glob over the model name
    target: str
    feature: str = "*"

    def applies(self, group: UsageGroup) -> bool:
        return fnmatch.fnmatch(group.model.lower(), self.source.lower()) and fnmatch.fnmatch(group.feature, self.feature)


@dataclass(frozen=True)
class Discount:
    percent: Decimal
    provider: str = "*"
    model: str = "*"

    def applies(self, provider: str, model: str) -> bool:
        return fnmatch.fnmatch(provider.lower(), self.provider.lower()) and fnmatch.fnmatch(model.lower(),
                                                                                            self.model.lower())


@dataclass(frozen=True)
class SelfHost:
    model: str  # glob over the model name (after any swap)
    gpu_hour_usd: Decimal
    gpus: int
    tokens_per_second: Decimal

    def cost_per_day(self) -> Decimal:
        return self.gpu_hour_usd * self.gpus * 24


@dataclass
class Scenario:
    swaps: list[Swap] = field(default_factory=list)
    batch: list[str] = field(default_factory=list)
    discounts: list[Discount] = field(default_factory=list)
    self_host: list[SelfHost] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.swaps or self.batch or self.discounts or self.self_host)


def _decimal(value, what: str, positive: bool = True) -> Decimal:
    try:
        number = Decimal(str(value).strip().rstrip("%"))
    except Exception:
        raise ScenarioError(f"{what}: not a number: {value!r}") from None
    if not number.is_finite() or number < 0 or (positive and number == 0):
        raise ScenarioError(f"{what}: must be a {'positive' if positive else 'non-negative'} number, not {value!r}")
    return number


def parse_swap(text: str) -> Swap:
    source, sep, rest = text.partition("=")
    target, _, feature = rest.partition("@")
    if not sep or not source.strip() or not target.strip():
        raise ScenarioError(f"--swap {text!r}: expected FROM=TO or FROM=TO@FEATURE, e.g. gpt-4o=gpt-4o-mini")
    return Swap(source.strip(), target.strip(), feature.strip() or "*")


def parse_discount(text: str) -> Discount:
    who, sep, percent = text.partition("=")
    if not sep or not who.strip():
        raise ScenarioError(f"--discount {text!r}: expected PROVIDER=PERCENT or MODEL=PERCENT, e.g. openai=15")
    value = _decimal(percent, f"--discount {text!r}")
    if value > 100:
        raise ScenarioError(f"--discount {text!r}: a percent is at most 100")
    who = who.strip()
    # A provider name has no model characters; anything with a digit, dash or glob is taken as a model.
    if who.isalpha() or who.replace(".", "").replace("_", "").isalpha():
        return Discount(value, provider=who)
    return Discount(value, model=who)


def self_host_of(entry: dict, where: str) -> SelfHost:
    known = {"model", "gpu_hour_usd", "gpus", "tokens_per_second"}
    unknown = set(entry) - known
    if unknown or not entry.get("model"):
        raise ScenarioError(f"{where}: expected model, gpu_hour_usd, gpus, tokens_per_second"
                            + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
    gpus = _decimal(entry.get("gpus", 1), f"{where}: gpus")
    if gpus != int(gpus):
        raise ScenarioError(f"{where}: gpus must be a whole number")
    return SelfHost(str(entry["model"]), _decimal(entry.get("gpu_hour_usd"), f"{where}: gpu_hour_usd"), int(gpus),
                    _decimal(entry.get("tokens_per_second"), f"{where}: tokens_per_second"))


def parse_self_host(text: str) -> SelfHost:
    model, sep, settings = text.partition(":")
    if not sep:
        raise ScenarioError(f"--self-host {text!r}: expected MODEL:gpu_hour_usd=2.5,gpus=8,tokens_per_second=3000")
    entry: dict = {"model": model.strip()}
    for item in filter(None, (s.strip() for s in settings.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ScenarioError(f"--self-host {text!r}: {item!r} is not KEY=VALUE")
        entry[key.strip()] = value.strip()
    return self_host_of(entry, f"--self-host {text!r}")


def load_file(path: str) -> Scenario:
    import yaml

    try:
        with open(path) as f:
            document = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise ScenarioError(f"{path}: expected a mapping with swap:, batch:, discounts: and/or self_host:")
    unknown = set(document) - {"swap", "batch", "discounts", "self_host"}
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}; known: swap, batch, discounts, self_host")
    scenario = Scenario()
    for i, s in enumerate(document.get("swap") or []):
        if not isinstance(s, dict) or not s.get("from") or not s.get("to"):
            raise ScenarioError(f"{path}: swap[{i}]: expected from: and to: (and feature:)")
        scenario.swaps.append(Swap(str(s["from"]), str(s["to"]), str(s.get("feature") or "*")))
    scenario.batch = [str(f) for f in document.get("batch") or []]
    for i, d in enumerate(document.get("discounts") or []):
        if not isinstance(d, dict) or "percent" not in d:
            raise ScenarioError(f"{path}: discounts[{i}]: expected percent: and provider: or model:")
        scenario.discounts.append(Discount(_decimal(d["percent"], f"{path}: discounts[{i}]"),
                                           str(d.get("provider") or "*"), str(d.get("model") or "*")))
    scenario.self_host = [self_host_of(h if isinstance(h, dict) else {}, f"{path}: self_host[{i}]")
                          for i, h in enumerate(document.get("self_host") or [])]
    return scenario


@dataclass
class Line:
    """One feature and model: what it cost and what it would cost."""

    service_name: str
    project: str
    feature: str
    model: str
    new_model: str
    calls: int
    unknown_calls: int
    current_usd: Decimal
    whatif_usd: Decimal | None  # None: the changed usage has no price
    changes: list[str]


@dataclass
class SelfHostVerdict:
    model: str
    tokens: int
    replicas: int
    gpu_cost_usd: Decimal
    api_cost_usd: Decimal
    gpu_cost_per_day_usd: Decimal
    break_even_tokens_per_day: int | None
    tokens_per_day: int


def reprice(groups: list[UsageGroup], scenario: Scenario, seconds: int, catalog=None,
            when_ns: int | None = None) -> tuple[list[Line], list[SelfHostVerdict]]:
    from ..collector.pricing import PriceCatalog

    catalog = catalog or PriceCatalog()
    when_ns = now_ns() if when_ns is None else when_ns
    lines: dict[tuple, Line] = {}
    hosted: dict[SelfHost, list[tuple[Line, UsageGroup]]] = {}
    for g in groups:
        model, tier, changes = g.model, g.service_tier, []
        for swap in scenario.swaps:
            if swap.applies(g):
                model = swap.target
                changes.append(f"{g.model} -> {model}")
                break
        if any(fnmatch.fnmatch(g.feature, b) for b in scenario.batch) and tier not in ("batch", "flex"):
            tier = "batch"
            changes.append("batch")
        discount = next((d for d in scenario.discounts if d.applies(g.provider, model)), None)
        host = next((h for h in scenario.self_host if fnmatch.fnmatch(model.lower(), h.model.lower())), None)
        key = (g.service_name, g.project, g.feature, g.model)
        line = lines.get(key)
        if line is None:
            line = lines[key] = Line(g.service_name, g.project, g.feature, g.model, model, 0, 0, Decimal(0),
                                     Decimal(0), [])
        line.calls += g.calls
        line.unknown_calls += g.unknown_calls
        line.current_usd += g.cost_usd
        if host is not None:
            line.changes = sorted(set(line.changes) | set(changes) | {"self-hosted"})
            hosted.setdefault(host, []).append((line, g))
            continue
        line.changes = sorted(set(line.changes) | set(changes) | ({f"-{discount.percent}%"} if discount else set()))
        if not changes:
            amount = g.cost_usd  # unchanged usage keeps exactly what it was stored at
        else:
            amount = g.price(catalog, model, tier, when_ns)
        if amount is not None and discount is not None:
            amount = amount * (100 - discount.percent) / 100
        line.whatif_usd = None if amount is None or line.whatif_usd is None else line.whatif_usd + amount
    verdicts = [_self_host(host, members, seconds) for host, members in hosted.items()]
    return sorted(lines.values(), key=lambda l: l.current_usd, reverse=True), verdicts


def _self_host(host: SelfHost, members: list[tuple[Line, UsageGroup]], seconds: int) -> SelfHostVerdict:
    tokens = sum(g.tokens for _, g in members)
    capacity = host.tokens_per_second * seconds
    replicas = max(1, math.ceil(Decimal(tokens) / capacity))
    gpu_cost = host.cost_per_day() * replicas * Decimal(seconds) / 86_400
    api_cost = sum((g.cost_usd for _, g in members), Decimal(0))
    for line, g in members:
        share = gpu_cost * g.tokens / tokens if tokens else Decimal(0)
        line.whatif_usd = None if line.whatif_usd is None else line.whatif_usd + share
    days = Decimal(seconds) / 86_400
    break_even = int(host.cost_per_day() / (api_cost / tokens)) if api_cost and tokens else None
    return SelfHostVerdict(host.model, tokens, replicas, gpu_cost, api_cost, host.cost_per_day(), break_even,
                           int(tokens / days))


# -- the command ------------------------------------------------------------------------------------------

def scenario_of(args: argparse.Namespace) -> Scenario:
    scenario = load_file(args.file) if args.file else Scenario()
    scenario.swaps += [parse_swap(s) for s in args.swap or []]
    scenario.batch += list(args.batch or [])
    scenario.discounts += [parse_discount(d) for d in args.discount or []]
    scenario.self_host += [parse_self_host(h) for h in args.self_host or []]
    if scenario.empty():
        raise ScenarioError("no change given: use --swap, --batch, --discount, --self-host or --file (see --help)")
    return scenario


def print_result(lines: list[Line], verdicts: list[SelfHostVerdict], fmt: str, since_text: str, days: float,
                 out=None) -> None:
    out = out or sys.stdout
    current = sum((l.current_usd for l in lines), Decimal(0))
    whatif = None if any(l.whatif_usd is None for l in lines) else sum((l.whatif_usd for l in lines), Decimal(0))
    unknown = sum(l.unknown_calls for l in lines)
    if fmt == "json":
        json.dump({
            "since": since_text, "days_of_traffic": round(days, 2), "current_usd": exact(current),
            "whatif_usd": exact(whatif), "unknown_calls_left_out": unknown,
            "lines": [{"service_name": l.service_name, "project": l.project, "feature": l.feature, "model": l.model,
                       "whatif_model": l.new_model, "calls": l.calls, "unknown_calls": l.unknown_calls,
                       "current_usd": exact(l.current_usd), "whatif_usd": exact(l.whatif_usd), "changes": l.changes}
                      for l in lines],
            "self_host": [{"model": v.model, "tokens": v.tokens, "replicas": v.replicas,
                           "gpu_cost_usd": exact(v.gpu_cost_usd), "api_cost_usd": exact(v.api_cost_usd),
                           "gpu_cost_per_day_usd": exact(v.gpu_cost_per_day_usd),
                           "break_even_tokens_per_day": v.break_even_tokens_per_day,
                           "tokens_per_day": v.tokens_per_day} for v in verdicts],
        }, out, indent=2)
        out.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(("service_name", "project", "feature", "model", "whatif_model", "calls", "unknown_calls",
                         "current_usd", "whatif_usd", "changes"))
        for l in lines:
            writer.writerow((l.service_name, l.project, l.feature, l.model, l.new_model, l.calls, l.unknown_calls,
                             exact(l.current_usd), exact(l.whatif_usd), " ".join(l.changes)))
        return
    print(f"What-if over the last {since_text} ({days:.1f} days stored); stored rows are not changed", file=out)
    header = f"{'feature':<22} {'model':<24} {'calls':>8} {'current':>11} {'what-if':>11} {'change':>8}  how"
    print(header, file=out)
    for l in lines:
        change = "" if l.whatif_usd is None or not l.current_usd else f"{(l.whatif_usd - l.current_usd) / l.current_usd:+.0%}"
        print(f"{(l.feature or '(none)')[:22]:<22} {l.model[:24]:<24} {l.calls:>8,} {money(l.current_usd):>11} "
              f"{money(l.whatif_usd):>11} {change:>8}  {', '.join(l.changes) or '-'}", file=out)
    delta = "" if whatif is None else f" ({money(whatif - current)})"
    print(f"total: {money(current)} -> {money(whatif)}{delta}", file=out)
    for v in verdicts:
        even = (f"it breaks even at {v.break_even_tokens_per_day:,} tokens/day"
                if v.break_even_tokens_per_day is not None else "no priced API traffic to compare")
        print(f"self-hosting {v.model}: {v.replicas} replica(s) at {money(v.gpu_cost_per_day_usd)}/day each; "
              f"{even}; your traffic: {v.tokens_per_day:,} tokens/day", file=out)
    if unknown:
        print(f"note: {unknown:,} unpriced calls or calls without usage are not in the current column", file=out)
    if whatif is None:
        print("note: a changed model has no price in the catalog or your price file: its what-if is unknown", file=out)


def cmd_whatif(args: argparse.Namespace) -> int:
    from ..store import open_store

    try:
        scenario = scenario_of(args)
    except ScenarioError as exc:
        print(f"otel-llmcost whatif: {exc}", file=sys.stderr)
        return 2
    store = open_store(args.store)
    try:
        groups, _ = usage_groups(store, args.since)
    finally:
        store.close()
    seconds = covered_seconds(groups, args.since)
    lines, verdicts = reprice(groups, scenario, seconds)
    print_result(lines, verdicts, args.format, args.since_text, seconds / 86_400)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("whatif", help="re-price stored usage under a model swap, batch, discount or self-hosting",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--store", help="store URL (default $OTEL_LLMCOST_STORE or chdb://./.llmcost)")
    p.add_argument("--since", default="30d", help="the traffic to re-price, back from now")
    p.add_argument("--swap", action="append", metavar="FROM=TO[@FEATURE]", help="use model TO instead of FROM (a glob)")
    p.add_argument("--batch", action="append", metavar="FEATURE", help="send this feature's calls (a glob) through the Batch API")
    p.add_argument("--discount", action="append", metavar="WHO=PERCENT",
                   help="percent off a provider's (openai=15) or a model's (claude-*=10) prices")
    p.add_argument("--self-host", action="append", metavar="MODEL:gpu_hour_usd=X,gpus=N,tokens_per_second=T",
                   help="serve this model on your own GPUs")
    p.add_argument("--file", help="a YAML file of changes (swap, batch, discounts, self_host)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_whatif)
