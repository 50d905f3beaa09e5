"""Prices a call's usage with the `genai-prices` catalog, in force at the call's start time.

The total is what `genai_prices.calc_price` gives for the same usage; the split into input, cache read,
cache write and output comes from the same priced units, so the parts add up to the total (per-request
fees, such as web searches, are in the total only). Look-ups are cached: matching a model reference
against the catalog is the expensive part, and a collector sees the same few models all day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices import types as price_types
from genai_prices.units import _get_registry

PRICE_SOURCE = f"genai-prices {genai_prices.__version__}"

# gen_ai.provider.name (and older gen_ai.system spellings) -> genai-prices provider id.
PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure": "azure",
    "aws.bedrock": "aws",
    "aws_bedrock": "aws",
    "bedrock": "aws",
    "gcp.vertex_ai": "google",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "gemini": "google",
    "google": "google",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
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


@dataclass(frozen=True)
class PricedUsage:
    """Token counts of one call, as the conventions count them (input includes cache reads and writes)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    web_searches: int = 0


@dataclass(frozen=True)
class Price:
    status: str  # priced | unpriced
    total: Decimal | None = None
    input: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    output: Decimal | None = None
    cache_savings: Decimal | None = None
    note: str = ""
    source: str = ""
    model_id: str = ""


def unpriced(note: str) -> Price:
    return Price("unpriced", note=note)


class _Entry:
    """A matched model: its catalog entry, plus the unit table of each price in force, built once."""

    __slots__ = ("provider", "model", "units")

    def __init__(self, provider: Any, model: Any) -> None:
        self.provider = provider
        self.model = model
        self.units: dict[int, tuple] = {}

    def resolved(self, model_price: Any) -> tuple:
        key = id(model_price)
        units = self.units.get(key)
        if units is None:
            registry = _get_registry()  # the same unit tables calc_price uses
            resolved = price_types._collect_resolved_model_prices(model_price, registry)  # noqa: SLF001
            tiered = any(isinstance(price, price_types.TieredPrices) for _, price in resolved)
            units = (resolved, tiered, getattr(model_price, "input_mtok", None), model_price)
            self.units[key] = units
        return units


class PriceCatalog:
    """`price(provider, model, timestamp_ns, usage, service_tier)` with cached look-ups."""

    def __init__(self) -> None:
        self.snapshot = data_snapshot.get_snapshot()
        self.source = PRICE_SOURCE
        self._find = lru_cache(maxsize=4096)(self._find_uncached)

    def _find_uncached(self, provider_id: str | None, model_ref: str) -> _Entry | str:
        """The catalog entry for a model, or the reason there is none."""
        candidates = [model_ref]
        if "/" in model_ref:  # provider prefixes such as openai/gpt-4o or models/gemini-2.5-pro
            candidates.append(model_ref.rsplit("/", 1)[1])
        reason = ""
        for ref in candidates:
            for pid in ([provider_id, None] if provider_id else [None]):
                try:
                    provider, model = self.snapshot.find_provider_model(ref, None, pid, None)
                    return _Entry(provider, model)
                except LookupError as exc:
                    reason = reason or str(exc)
        return reason or f"no price for model {model_ref!r}"

    def price(self, provider_name: str, model: str, timestamp_ns: int, usage: PricedUsage,
              service_tier: str | None = None) -> Price:
        if not model:
            return unpriced("span names no model")
        provider_id = PROVIDER_IDS.get(provider_name.lower()) if provider_name else None
        found = self._find(provider_id, model)
        if isinstance(found, str):
            return unpriced(found)
        when = datetime.fromtimestamp(timestamp_ns / 1e9, tz=timezone.utc)
        context = {"service_tier": service_tier} if service_tier else None
        if context and not any(found.model is m for m in found.provider.models):
            context = None  # calc_price applies price variants only to the provider's own models
        model_price = found.model.get_prices(when, context)
        return self._split(found, model_price, usage)

    def _split(self, entry: _Entry, model_price: Any, usage: PricedUsage) -> Price:
        resolved, tiered, input_price, _ = entry.resolved(model_price)
        priced = Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
            cache_write_1h_tokens=usage.cache_write_1h_tokens or None,
            output_reasoning_tokens=usage.reasoning_tokens or None,
            web_searches=usage.web_searches or None,
        )
        try:
            counts = price_types._compute_registry_priced_counts(resolved, priced)  # noqa: SLF001
        except ValueError as exc:  # e.g. cache reads larger than the input: odd usage, say so
            return unpriced(f"invalid usage: {exc}")
        total_input = usage.input_tokens if tiered else 0
        parts = {"input": _ZERO, "cache_read": _ZERO, "cache_write": _ZERO, "output": _ZERO}
        total = _ZERO
        for unit, price in resolved:
            amount = price_types.calc_unit_price(price, counts.get(unit.usage_key), total_input, unit.per)
            total += amount
            key = unit.usage_key
            if key.startswith("cache_"):
                parts["cache_read" if "_read" in key else "cache_write"] += amount
            else:
                direction = unit.dimensions.get("direction")
                if direction in ("input", "output") and not key.startswith(("web_", "requests")):
                    parts[direction] += amount
        savings = None
        if usage.cache_read_tokens and input_price is not None:
            as_uncached = price_types.calc_unit_price(input_price, usage.cache_read_tokens, total_input, 1_000_000)
            savings = as_uncached - parts["cache_read"]
        return Price(
            "priced",
            total=total,
            input=parts["input"],
            cache_read=parts["cache_read"],
            cache_write=parts["cache_write"],
            output=parts["output"],
            cache_savings=savings,
            source=self.source,
            model_id=entry.model.id,
        )
