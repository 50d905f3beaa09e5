"""Prices a call's usage: the `genai-prices` catalog in force at the call's start time, with the user's price
file (`OTEL_LLMCOST_PRICES`, see `price_overrides.py`) layered on top.

Exactness. The total is what `genai_prices.calc_price` gives for the same usage (with
`price_context={"service_tier": ...}`, `{"processing": "batch"}`, `{"speed": "fast"}`); the split into input,
cache read, cache write, output and fees (per-call and per-tool-call prices, such as web searches) comes from the
same priced units, so the parts add up to the total. Usage by modality (audio, image, video tokens and their
cache reads) and file searches are priced under genai-prices' own usage keys; an Anthropic call's compaction
iterations are priced as a usage of their own (without a second per-request fee) and added. Custom prices from
the price file go through the same machinery (a `ModelPrice` built from the file), so they follow the same rules.
Self-hosted providers (`otel_llmcost.hosts`) are priced by the price file only.

Model names. A provider prefix (`openai/gpt-4o`, `anthropic/claude-...`, `models/gemini-...`) is tried with and
without; Bedrock ids (`us.anthropic.claude-...-v1:0`) are priced at Bedrock's price, else the vendor's; an OpenAI
fine-tune (`ft:BASE:org::id`) at genai-prices' price for it, else at its base model's, and `price_note` says so
(name it in the price file for its real price). A name nobody knows is `unpriced` with the reason, never $0.

Price sources. `price_source` names what priced a row: `genai-prices 0.2.3`, `prices.yaml sha256:1a2b3c4d` (a
model of the price file), `genai-prices 0.2.3 + prices.yaml sha256:1a2b3c4d -15%` (a negotiated discount),
`genai-prices 0.2.3 + batch -50%` (our batch rule, below).

Service tiers. `flex`, `priority` and `batch` (and any other tier the API reports) select genai-prices'
price variant for that tier when the model has one in force at the call's time. When it has none:
- `batch` and `flex`: 50% of the standard price. This is our rule, not genai-prices' (OpenAI's Batch API
  and Flex processing, and Anthropic's Message Batches, all bill half the standard price); the row's
  `price_source` ends with `+ batch -50%` and `price_note` says so. It applies to price-file prices as well.
  (genai-prices 0.2.3 has batch prices, `processing: batch`, for about a hundred models, some only from a
  date on, e.g. Claude from 2026-10-14: before that date our rule applies.)
- `priority` (and unknown tiers): the standard price, and `price_note` says no tier price was known.

Speed. Matching a model reference and selecting its prices are done once per (provider, model, tier, UTC
day) (per minute for the few models priced by time of day). Each resolved price is priced by
`fast_pricing.FastPlan` (integer coefficients derived from genai-prices, identical arithmetic), whose plain
reference, and fallback, is `PublicPlan` below.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices import types as price_types


from ..hosts import SELF_HOSTED, is_self_hosted
from .price_overrides import Discount, PriceFile, load_price_file
from .price_records import USAGE_KEYS, Price, PricedUsage, unpriced

logger = logging.getLogger("otel_llmcost.collector")

PRICE_SOURCE = f"genai-prices {genai_prices.__version__}"
PRICES_ENV = "OTEL_LLMCOST_PRICES"

# Our rule for batch (and flex) calls of models genai-prices has no price variant for: half the standard price.
BATCH_FACTOR = Decimal("0.5")
HALF_PRICE_TIERS = {"batch": "batch", "flex": "flex"}
# Tier values that mean "the standard price" (no variant is looked for, nothing is noted).
STANDARD_TIERS = {"", "default", "auto", "standard", "standard_only", "on_demand", "on-demand"}
# A speed tier (Anthropic's `usage.speed`) travels with the service tier: `priority+speed:fast` (`with_speed`).
SPEED_MARK = "+speed:"
STANDARD_SPEEDS = {"", "standard", "default"}


def with_speed(service_tier: str, speed: str) -> str:
    """The service tier a call is priced at, with its speed tier when that is not the standard one."""
    return service_tier if speed.lower() in STANDARD_SPEEDS else f"{service_tier}{SPEED_MARK}{speed}"

# gen_ai.provider.name (and older gen_ai.system spellings) -> genai-prices provider id.
PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure": "azure",
    "azure_openai": "azure",
    "aws.bedrock": "aws",
    "aws_bedrock": "aws",
    "bedrock": "aws",
    "aws": "aws",
    "gcp.vertex_ai": "google",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "google": "google",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "mistral": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "openrouter": "openrouter",
    "together": "together",
    "together_ai": "together",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "cohere": "cohere",
}

_ZERO = Decimal(0)
_DAY_NS = 86_400 * 10**9
_MINUTE_NS = 60 * 10**9

# Bedrock model ids: [region.]anthropic.claude-...-v1:0
_BEDROCK = re.compile(r"^(?:(?:us|eu|apac|ap|global|us-gov|ca|jp|au)\.)?(anthropic|meta|amazon|mistral|cohere|ai21|"
                      r"deepseek|openai|qwen|writer)\.(.+?)(?:-v\d+(?::\d+)?)?$")
_FINE_TUNE = re.compile(r"^ft:([^:]+):")


def scaled(price: Price, factor: Decimal) -> Price:
    """Every amount of a priced call times `factor` (a discount); exact in Decimal."""
    if price.status != "priced" or factor == 1:
        return price

    def times(value: Decimal | None) -> Decimal | None:
        return None if value is None else value * factor

    return replace(price, total=times(price.total), input=times(price.input), cache_read=times(price.cache_read),
                   cache_write=times(price.cache_write), output=times(price.output),
                   cache_savings=times(price.cache_savings), fees=times(price.fees))


def added(price: Price, more: Price) -> Price:
    """Two priced usages of one call (its top-level usage and its compaction iterations) as one price."""
    if more.status != "priced":
        return more

    def plus(a: Decimal | None, b: Decimal | None) -> Decimal | None:
        return b if a is None else a if b is None else a + b

    return replace(price, total=plus(price.total, more.total), input=plus(price.input, more.input),
                   cache_read=plus(price.cache_read, more.cache_read),
                   cache_write=plus(price.cache_write, more.cache_write), output=plus(price.output, more.output),
                   cache_savings=plus(price.cache_savings, more.cache_savings), fees=plus(price.fees, more.fees))


def _price_key_part(price_key: str) -> int:
    """Which part a price goes to, by its key (input_mtok, cache_audio_read_mtok, web_searches_kcount, ...)."""
    if price_key.startswith("cache_"):
        return 1 if "_read" in price_key else 2
    if price_key.startswith(("input_", "output_")):
        return 0 if price_key.startswith("input_") else 3
    return 4


class PublicPlan:
    """Prices a usage through genai-prices' public API only (`ModelPrice.calc_price`): the reference of
    `fast_pricing.FastPlan`, and what prices when that cannot be built. Each part is the total of a copy of the
    prices with the other parts' prices set to zero (a zero price keeps its unit, so the usage splits into the
    same leaves). Slower, memoized."""

    MEMO_SIZE = 8192
    __slots__ = ("model_price", "parts", "request_fee", "input_price", "memo")

    def __init__(self, model_price: Any) -> None:
        self.model_price = model_price
        prices = {key: value for key, value in model_price.__dict__.items()
                  if value is not None and not key.startswith("_")}
        self.parts = tuple(
            (part, price_types.ModelPrice(**{key: value if _price_key_part(key) == part else _ZERO
                                              for key, value in prices.items()}))
            for part in range(5) if any(_price_key_part(key) == part for key in prices))
        fee = prices.get("requests_kcount")
        self.request_fee = fee / 1000 if isinstance(fee, Decimal) else _ZERO
        self.input_price = prices.get("input_mtok")
        self.memo: dict[tuple, Price] = {}

    def price(self, values: tuple[int, ...], source: str, model_id: str, requests: int = 1) -> Price:
        cached = self.memo.get((values, requests))
        if cached is not None and cached.source == source and cached.model_id == model_id:
            return cached
        usage = Usage(**{key: value for key, value in zip(USAGE_KEYS, values) if value})
        amounts = [_ZERO] * 5
        try:
            for part, model_price in self.parts:
                amounts[part] = model_price.calc_price(usage)["total_price"]
        except ValueError as exc:
            return unpriced(f"invalid usage: {exc}")
        if requests != 1:
            amounts[4] += (requests - 1) * self.request_fee
        savings = None
        if values[2] and self.input_price is not None:
            savings = price_types.calc_unit_price(self.input_price, values[2], values[0], 1_000_000) - amounts[1]
        result = Price("priced", total=sum(amounts, _ZERO), input=amounts[0], cache_read=amounts[1],
                       cache_write=amounts[2], output=amounts[3], cache_savings=savings, source=source,
                       model_id=model_id, fees=amounts[4])
        if len(self.memo) >= self.MEMO_SIZE:
            self.memo.clear()
        self.memo[(values, requests)] = result
        return result


def new_plan(model_price: Any) -> Any:
    """The fast plan (`fast_pricing.FastPlan`), or the public-API `PublicPlan` when the fast one cannot be built
    (a genai-prices whose unit functions changed)."""
    try:
        from .fast_pricing import FastPlan  # (here: a genai-prices without its modules falls back below)

        return FastPlan(model_price)
    except Exception:  # a changed genai-prices API: never stop pricing over it
        logger.warning("genai-prices %s: the fast pricing path failed; pricing through its public API "
                       "(slower)", genai_prices.__version__, exc_info=True)
    return PublicPlan(model_price)


class _Entry:
    """A catalog model matched from a model reference, and how finely its prices vary in time."""

    __slots__ = ("provider", "model", "granularity", "note")

    def __init__(self, provider: Any, model: Any, note: str = "") -> None:
        self.provider = provider
        self.model = model
        self.note = note
        self.granularity = _granularity(model)


def _granularity(model: Any) -> int:
    """The span of time (ns) within which the model's prices cannot change: a UTC day, unless some price
    depends on the time of day (per minute if every boundary is a whole minute, else no caching)."""
    constraints = []
    if not isinstance(model.prices, price_types.ModelPrice):
        constraints += [c.constraint for c in model.prices if c.constraint is not None]
    constraints += [v.constraint for v in (model.price_variants or ()) if v.constraint is not None]
    granularity = _DAY_NS
    for constraint in constraints:
        if isinstance(constraint, price_types.TimeOfDateConstraint):
            whole = all(t.second == 0 and t.microsecond == 0 for t in (constraint.start_time, constraint.end_time))
            granularity = min(granularity, _MINUTE_NS if whole else 1)
    return granularity


@dataclass
class _Target:
    """How one (provider, model, service tier) is priced: custom prices, the catalog entry, discounts."""

    provider_name: str
    model: str
    tier: str
    custom: list  # CustomPrice entries of the price file that match, latest `from` first
    entry: _Entry | None
    reason: str  # why the catalog has no price (when entry is None)
    discounts: list[Discount]
    granularity: int
    speed: str = ""


@dataclass
class _Resolved:
    """A target at one time: the plan to use and what to say about it."""

    plan: Any
    source: str
    model_id: str
    note: str = ""
    factor: Decimal = Decimal(1)
    reason: str = ""  # when plan is None: why unpriced

    def price(self, usage: PricedUsage) -> Price:
        if self.plan is None:
            return unpriced(self.reason)
        price = self.plan.price(usage.priced_fields(), self.source, self.model_id)
        if price.status != "priced":
            return price
        if usage[16] or usage[17]:  # compaction input or output tokens
            price = added(price, self.plan.price(usage.compaction(), self.source, self.model_id, requests=0))
            if price.status != "priced":
                return price
        if self.factor != 1:
            price = scaled(price, self.factor)
        if self.note:
            price = replace(price, note=self.note)
        return price


class PriceCatalog:
    """`price(provider, model, timestamp_ns, usage, service_tier)`: genai-prices plus the user's price file."""

    CACHE_SIZE = 65_536

    def __init__(self, price_file: PriceFile | str | os.PathLike | None = None) -> None:
        self.snapshot = data_snapshot.get_snapshot()
        if price_file is None and os.environ.get(PRICES_ENV):
            price_file = os.environ[PRICES_ENV]
        if price_file is not None and not isinstance(price_file, PriceFile):
            price_file = load_price_file(price_file)
        self.price_file: PriceFile | None = price_file
        self.source = PRICE_SOURCE
        if price_file is not None:
            logger.info("prices: %s (%s: %d models, %d discounts)", self.describe(), price_file.path,
                        len(price_file.models), len(price_file.discounts))
        self._entries: dict[tuple[str | None, str], _Entry | str] = {}
        self._targets: dict[tuple[str, str, str], _Target] = {}
        self._resolved: dict[tuple, _Resolved] = {}
        self._plans: dict[tuple, Any] = {}

    # -- public -----------------------------------------------------------------------------------------

    def price(self, provider_name: str, model: str, timestamp_ns: int, usage: PricedUsage,
              service_tier: str | None = None) -> Price:
        key = (provider_name or "", model or "", (service_tier or "").lower())
        target = self._targets.get(key)
        if target is None:
            if not model:
                return unpriced("span names no model")
            target = self._target(*key)
            if len(self._targets) >= self.CACHE_SIZE:
                self._targets.clear()
            self._targets[key] = target
        rkey = (key, timestamp_ns // target.granularity)
        resolved = self._resolved.get(rkey)
        if resolved is None:
            resolved = self._resolve(target, timestamp_ns)
            if len(self._resolved) >= self.CACHE_SIZE:
                self._resolved.clear()
            self._resolved[rkey] = resolved
        return resolved.price(usage)

    def describe(self) -> str:
        """What prices this catalog: for logs and the reprice command."""
        if self.price_file is None:
            return self.source
        return f"{self.source} + {self.price_file.source}"

    # -- finding the model ------------------------------------------------------------------------------

    def find(self, provider_id: str | None, model_ref: str) -> _Entry | str:
        """The catalog entry for a model reference, or the reason there is none (cached)."""
        key = (provider_id, model_ref)
        found = self._entries.get(key)
        if found is None:
            found = self._find_uncached(provider_id, model_ref)
            self._entries[key] = found
        return found

    def _lookup(self, ref: str, provider_id: str | None) -> tuple[Any, Any] | str:
        try:
            return self.snapshot.find_provider_model(ref, None, provider_id, None)
        except LookupError as exc:
            return str(exc)

    def _find_uncached(self, provider_id: str | None, model_ref: str) -> _Entry | str:
        candidates: list[tuple[str, str | None, str]] = []  # (reference, provider id, note)
        ref = model_ref.strip()
        prefix_provider = None
        if "/" in ref:  # provider prefixes such as openai/gpt-4o, anthropic/claude-..., models/gemini-2.5-pro
            head, tail = ref.rsplit("/", 1)
            prefix_provider = PROVIDER_IDS.get(head.split("/")[0].lower())
            candidates.append((ref, provider_id, ""))
            ref = tail
        bedrock = _BEDROCK.match(ref)
        if bedrock:  # us.anthropic.claude-...-v1:0: Bedrock's own prices first, then the vendor's
            candidates.append((ref, "aws", ""))
            vendor = PROVIDER_IDS.get(bedrock.group(1), bedrock.group(1))
            candidates.append((bedrock.group(2), vendor, f"Bedrock model id {model_ref!r} priced as {vendor}'s "
                                                          f"{bedrock.group(2)}"))
        fine_tune = _FINE_TUNE.match(ref)
        for pid in dict.fromkeys([provider_id, prefix_provider, None]):
            candidates.append((ref, pid, ""))
        if fine_tune:
            base = fine_tune.group(1)
            for pid in dict.fromkeys([provider_id, prefix_provider, None]):
                candidates.append((base, pid, f"fine-tuned model {model_ref!r} priced at its base model {base!r} "
                                              "(genai-prices has no price for the fine-tune; name it in the price file)"))
        reason = ""
        seen = set()
        for candidate, pid, note in candidates:
            if (candidate, pid) in seen:
                continue
            seen.add((candidate, pid))
            found = self._lookup(candidate, pid)
            if isinstance(found, str):
                reason = reason or found
                continue
            provider, model = found
            if fine_tune and not note and not model.id.startswith("ft:"):
                note = (f"fine-tuned model {model_ref!r} priced at {model.id!r} "
                        "(genai-prices has no price for the fine-tune; name it in the price file)")
            return _Entry(provider, model, note)
        return f"no price for model {model_ref!r}" + (f" ({reason})" if reason else "")

    # -- targets and their resolution at a time ---------------------------------------------------------

    def _target(self, provider_name: str, model: str, tier: str) -> _Target:
        tier, _, speed = tier.partition(SPEED_MARK)
        provider_id = PROVIDER_IDS.get(provider_name.lower()) if provider_name else None
        self_hosted = is_self_hosted(provider_name)
        # A self-hosted model is priced by the price file only: the catalog would guess a hosted API from its name.
        found = self_hosted_reason(provider_name, model) if self_hosted else self.find(provider_id, model)
        entry = found if isinstance(found, _Entry) else None
        reason = found if isinstance(found, str) else ""
        custom: list = []
        discounts: list[Discount] = []
        granularity = entry.granularity if entry else _DAY_NS
        if self.price_file is not None:
            names = {model, model.rsplit("/", 1)[-1]}
            providers = {provider_name, provider_id or "", entry.provider.id if entry else "",
                         SELF_HOSTED if self_hosted else ""} - {""}
            custom = self.price_file.custom_for(providers, names)
            if entry is not None:
                names.add(entry.model.id)
            discounts = self.price_file.discounts_for(providers, names)
            granularity = min([granularity] + [c.granularity for c in custom] + [d.granularity for d in discounts])
        return _Target(provider_name, model, tier, custom, entry, reason, discounts, granularity, speed)

    def _plan(self, model_price: Any) -> Any:
        key = tuple((k, id(v)) for k, v in model_price.__dict__.items())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = new_plan(model_price)
        return plan

    def _resolve(self, target: _Target, timestamp_ns: int) -> _Resolved:
        when = instant(timestamp_ns)
        notes: list[str] = []
        factor = Decimal(1)
        custom = next((c for c in target.custom if c.active(when)), None)
        if custom is not None:
            plan = self._plan(custom.model_price)
            source = self.price_file.source
            model_id = custom.name
            if custom.note:
                notes.append(custom.note)
            tier_factor, tier_note = self._tier_rule(target.tier, has_variant=False)
        elif target.entry is not None:
            entry = target.entry
            context, tier_factor, tier_note = self._tier_context(entry, target.tier, when)
            context, speed_note = self._speed_context(entry, target.speed, when, context)
            if speed_note:
                notes.append(speed_note)
            plan = self._plan(entry.model.get_prices(when, context))
            source = self.source
            model_id = entry.model.id
            if entry.note:
                notes.append(entry.note)
        else:
            return _Resolved(None, "", "", reason=target.reason)
        if tier_factor != 1:
            factor *= tier_factor
            source += f" + {target.tier} -{percent((1 - tier_factor) * 100)}%"
        if tier_note:
            notes.append(tier_note)
        discount = next((d for d in target.discounts if d.active(when)), None)
        if discount is not None:
            factor *= discount.factor
            if source == self.price_file.source:
                source += f" -{percent(discount.percent)}%"
            else:
                source += f" + {self.price_file.source} -{percent(discount.percent)}%"
            notes.append(f"negotiated discount {percent(discount.percent)}% ({discount.describe()})")
        return _Resolved(plan, source, model_id, "; ".join(notes), factor)

    def _tier_context(self, entry: _Entry, tier: str, when: datetime) -> tuple[dict | None, Decimal, str]:
        """genai-prices' price context for a service tier, or our rule when it has no variant for it."""
        if tier in STANDARD_TIERS:
            return ({"service_tier": tier} if tier else None), Decimal(1), ""
        context = {"processing": "batch"} if tier == "batch" else {"service_tier": tier}
        own_model = any(entry.model is m for m in entry.provider.models)  # calc_price's own condition
        has_variant = own_model and any(
            v.when == context and (v.constraint is None or v.constraint.active(when))
            for v in (entry.model.price_variants or ()))
        factor, note = self._tier_rule(tier, has_variant)
        return (context if own_model else None), factor, note

    @staticmethod
    def _speed_context(entry: _Entry, speed: str, when: datetime, context: dict | None) -> tuple[dict | None, str]:
        """genai-prices' price context with a speed tier (`{speed: fast}` variants), or a note when the model has
        no price for that speed."""
        if not speed:
            return context, ""
        wanted = {"speed": speed}
        own_model = any(entry.model is m for m in entry.provider.models)  # calc_price's own condition
        if own_model and any(v.when == wanted and (v.constraint is None or v.constraint.active(when))
                             for v in (entry.model.price_variants or ())):
            return {**(context or {}), **wanted}, ""
        return context, f"speed {speed!r}: no price for this speed known; priced at the standard speed"

    @staticmethod
    def _tier_rule(tier: str, has_variant: bool) -> tuple[Decimal, str]:
        if has_variant or tier in STANDARD_TIERS:
            return Decimal(1), ""
        if tier in HALF_PRICE_TIERS:
            return BATCH_FACTOR, (f"service tier {tier!r}: 50% of the standard price (otel-llmcost's rule; "
                                  "genai-prices has no price for this tier of this model)")
        return Decimal(1), f"service tier {tier!r}: no price for this tier known; priced at the standard price"


def self_hosted_reason(provider_name: str, model: str) -> str:
    """Why a self-hosted model is unpriced, and how to price it."""
    return (f"self-hosted model {model!r} (provider {provider_name}) has no price: name it in the price file "
            f"(OTEL_LLMCOST_PRICES), e.g. models: [{{model: {model!r}, provider: {provider_name}, gpu_hour_usd: 2.50, "
            f"tokens_per_second: 1500}}]; if its host stands for a hosted API (a gateway or proxy), map it: "
            f"OTEL_LLMCOST_PROVIDER_HOSTS=<host>=hosted")


def percent(value: Decimal) -> str:
    """50, 12.5: a percentage as people write it."""
    return format(value.normalize(), "f")


def instant(timestamp_ns: int) -> datetime:
    """A span time (ns since the epoch) as an aware UTC datetime, exact to the microsecond."""
    return datetime.fromtimestamp(timestamp_ns // 10**9, tz=timezone.utc).replace(
        microsecond=(timestamp_ns // 1000) % 1_000_000)
