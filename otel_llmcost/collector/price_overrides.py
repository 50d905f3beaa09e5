"""The user's price file (YAML; `OTEL_LLMCOST_PRICES=/path/prices.yaml`), layered over genai-prices.

    models:                       # custom, fine-tuned and self-hosted models (checked before the catalog)
      - model: "ft:gpt-4o-mini-2024-07-18:acme::*"   # exact name or a glob (* ?), case-insensitive
        provider: openai          # optional: gen_ai.provider.name or genai-prices' provider id
        input: 0.30               # USD per million tokens
        cache_read: 0.15          # optional (otherwise cache reads are priced as input)
        cache_write: 0.375        # optional; cache_write_1h: ... for 1-hour writes
        output: 1.20
        per_request: 0.001        # optional, USD per call
        from: 2026-01-01          # optional: in force from this UTC date (or datetime) on
      - model: llama-3.1-70b-local
        gpu_hour_usd: 2.50        # self-hosted: the cost of one GPU hour ...
        gpus: 2                   # ... times the GPUs serving the model ...
        tokens_per_second: 1500   # ... over the measured throughput (input and output tokens together);
                                  # or input_tokens_per_second / output_tokens_per_second separately
    discounts:                    # negotiated discounts, percent off every amount (catalog or custom)
      - provider: anthropic
        percent: 15
        from: 2026-01-01          # optional; until: 2026-12-31 (exclusive) too
      - model: "gpt-4o*"          # by model (the span's name or the catalog's model id)
        percent: 10

For one model, the entry with the latest `from` that is not after the call's time wins; the first matching
discount in file order applies. Rows priced with the file record it in `price_source` as
`prices.yaml sha256:<first 8 hex digits of the file's SHA-256>`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from genai_prices import types as price_types

_DAY_NS = 86_400 * 10**9

# File key -> genai-prices price key (USD per million tokens).
TOKEN_PRICES = {
    "input": "input_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "output": "output_mtok",
}
SELF_HOSTED = ("gpu_hour_usd", "gpus", "tokens_per_second", "input_tokens_per_second", "output_tokens_per_second")
MODEL_KEYS = {"model", "provider", "from", "per_request", "note", *TOKEN_PRICES, *SELF_HOSTED}
DISCOUNT_KEYS = {"model", "provider", "percent", "from", "until"}


class PriceFileError(ValueError):
    """A price file that cannot be used; the message names the file, the entry and the problem."""


def _instant(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise PriceFileError(f"{where}: not a date: {value!r} (use 2026-01-01)") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise PriceFileError(f"{where}: not a date: {value!r} (use 2026-01-01)")


def _aligned(instant: datetime | None) -> bool:
    return instant is None or (instant.astimezone(timezone.utc).time() == time(0))


def _decimal(value: Any, where: str, positive: bool = False) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise PriceFileError(f"{where}: not a number: {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise PriceFileError(f"{where}: not a number: {value!r}") from exc
    if not number.is_finite() or number < 0 or (positive and number == 0):
        raise PriceFileError(f"{where}: must be {'greater than zero' if positive else 'zero or more'}, not {value!r}")
    return number


def _pattern(value: Any, where: str) -> re.Pattern:
    if not isinstance(value, str) or not value.strip():
        raise PriceFileError(f"{where}: expected a name or a glob pattern, not {value!r}")
    return re.compile(fnmatch.translate(value.strip().lower()))


@dataclass
class CustomPrice:
    """Prices of one model (or glob of models) from the file, in force from `start` on."""

    name: str
    pattern: re.Pattern
    provider: re.Pattern | None
    start: datetime | None
    model_price: Any  # genai_prices.types.ModelPrice
    note: str = ""

    @property
    def granularity(self) -> int:
        return _DAY_NS if _aligned(self.start) else 1

    def matches(self, providers: set[str], names: set[str]) -> bool:
        if self.provider is not None and not any(self.provider.fullmatch(p.lower()) for p in providers):
            return False
        return any(self.pattern.fullmatch(n.lower()) for n in names)

    def active(self, when: datetime) -> bool:
        return self.start is None or when >= self.start


@dataclass
class Discount:
    percent: Decimal
    provider: re.Pattern | None
    model: re.Pattern | None
    start: datetime | None
    end: datetime | None
    text: str = ""

    @property
    def factor(self) -> Decimal:
        return (100 - self.percent) / 100

    @property
    def granularity(self) -> int:
        return _DAY_NS if _aligned(self.start) and _aligned(self.end) else 1

    def matches(self, providers: set[str], names: set[str]) -> bool:
        if self.provider is not None and not any(self.provider.fullmatch(p.lower()) for p in providers):
            return False
        if self.model is not None and not any(self.model.fullmatch(n.lower()) for n in names):
            return False
        return True

    def active(self, when: datetime) -> bool:
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)

    def describe(self) -> str:
        return self.text


@dataclass
class PriceFile:
    path: str
    digest: str
    models: list[CustomPrice] = field(default_factory=list)
    discounts: list[Discount] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"{Path(self.path).name} sha256:{self.digest[:8]}"

    def custom_for(self, providers: set[str], names: set[str]) -> list[CustomPrice]:
        """Entries for this model, the latest `from` first (an entry without `from` last)."""
        found = [c for c in self.models if c.matches(providers, names)]
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        return sorted(found, key=lambda c: c.start or epoch, reverse=True)

    def discounts_for(self, providers: set[str], names: set[str]) -> list[Discount]:
        return [d for d in self.discounts if d.matches(providers, names)]


def _check_entry(raw: Any, where: str, known: set[str], required: str, shape: str) -> None:
    if not isinstance(raw, dict):
        raise PriceFileError(f"{where}: expected a mapping with {shape}")
    unknown = set(raw) - known
    if unknown:
        raise PriceFileError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    if required not in raw:
        raise PriceFileError(f"{where}: {required}: is required")


def _model_entry(raw: Any, where: str) -> CustomPrice:
    _check_entry(raw, where, MODEL_KEYS, "model", "model: and prices")
    name = str(raw["model"]).strip()
    where = f"{where} ({name})"
    prices: dict[str, Decimal] = {}
    note = str(raw.get("note") or "")
    self_hosted = [k for k in SELF_HOSTED if k in raw]
    token_keys = [k for k in TOKEN_PRICES if k in raw]
    if self_hosted and token_keys:
        raise PriceFileError(f"{where}: give either per-token prices ({token_keys}) or a GPU cost ({self_hosted}), not both")
    if self_hosted:
        if "gpu_hour_usd" not in raw:
            raise PriceFileError(f"{where}: gpu_hour_usd: is required for a self-hosted model")
        hourly = _decimal(raw["gpu_hour_usd"], f"{where} gpu_hour_usd") * _decimal(raw.get("gpus", 1), f"{where} gpus", True)
        both = raw.get("tokens_per_second")
        rates = {"input": raw.get("input_tokens_per_second", both), "output": raw.get("output_tokens_per_second", both)}
        for direction, rate in rates.items():
            if rate is None:
                raise PriceFileError(f"{where}: tokens_per_second: (or {direction}_tokens_per_second:) is required")
            per_second = _decimal(rate, f"{where} {direction} tokens per second", positive=True)
            # $/hour over tokens/hour, per million tokens
            prices[TOKEN_PRICES[direction]] = hourly / 3600 / per_second * 1_000_000
        note = note or (f"self-hosted: ${hourly}/hour of GPUs over the measured throughput")
    else:
        if "input" not in raw or "output" not in raw:
            raise PriceFileError(f"{where}: input: and output: (USD per million tokens) are required")
        for key in token_keys:
            prices[TOKEN_PRICES[key]] = _decimal(raw[key], f"{where} {key}")
    if raw.get("per_request") is not None:
        prices["requests_kcount"] = _decimal(raw["per_request"], f"{where} per_request") * 1000
    return CustomPrice(
        name=name,
        pattern=_pattern(name, f"{where} model"),
        provider=_pattern(raw["provider"], f"{where} provider") if raw.get("provider") else None,
        start=_instant(raw.get("from"), f"{where} from"),
        model_price=price_types.ModelPrice(**prices),
        note=note,
    )


def _discount_entry(raw: Any, where: str) -> Discount:
    _check_entry(raw, where, DISCOUNT_KEYS, "percent", "percent: and provider: or model:")
    if not raw.get("provider") and not raw.get("model"):
        raise PriceFileError(f"{where}: name a provider: or a model: (or both)")
    percent = _decimal(raw["percent"], f"{where} percent")
    if percent > 100:
        raise PriceFileError(f"{where}: percent must be at most 100, not {raw['percent']!r}")
    text = ", ".join(f"{k} {raw[k]}" for k in ("provider", "model", "from", "until") if raw.get(k) is not None)
    return Discount(
        percent=percent,
        provider=_pattern(raw["provider"], f"{where} provider") if raw.get("provider") else None,
        model=_pattern(raw["model"], f"{where} model") if raw.get("model") else None,
        start=_instant(raw.get("from"), f"{where} from"),
        end=_instant(raw.get("until"), f"{where} until"),
        text=text,
    )


def parse_price_file(text: str, path: str = "prices.yaml") -> PriceFile:
    import yaml

    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PriceFileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise PriceFileError(f"{path}: expected a mapping with models: and/or discounts:")
    unknown = set(document) - {"models", "discounts"}
    if unknown:
        raise PriceFileError(f"{path}: unknown top-level keys {sorted(unknown)}; known: models, discounts")
    models = document.get("models") or []
    discounts = document.get("discounts") or []
    if not isinstance(models, list) or not isinstance(discounts, list):
        raise PriceFileError(f"{path}: models: and discounts: must be lists")
    return PriceFile(
        path=path,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        models=[_model_entry(raw, f"{path}: models[{i}]") for i, raw in enumerate(models)],
        discounts=[_discount_entry(raw, f"{path}: discounts[{i}]") for i, raw in enumerate(discounts)],
    )


def load_price_file(path: str | os.PathLike) -> PriceFile:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PriceFileError(f"cannot read price file {path}: {exc}") from exc
    return parse_price_file(text, str(path))
