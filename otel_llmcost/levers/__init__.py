"""Levers: what a change would save, computed from the team's own stored traffic.

`otel-llmcost savings` finds changes worth making (prompt caching, the Batch API, a cheaper model, an output cap);
`otel-llmcost whatif` re-prices the stored usage under changes the user names. Both read `llm_spans` with the
SQL files beside this module (read-only) and price usage with the collector's own `PriceCatalog`
(genai-prices plus the user's price file), so a figure is what the collector would have stored.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..collector import normalize

HERE = Path(__file__).resolve().parent
MONTH_SECONDS = 30 * 86_400
NANO = Decimal("1e-9")

_PARAMETER = re.compile(r"\{(\w+):([\w()]+)\}")


def sql(name: str) -> str:
    return (HERE / f"{name}.sql").read_text()


def literal(value: Any) -> str:
    """A parameter as a ClickHouse literal: a number, or an array of strings."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join("'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'" for v in value) + "]"
    return str(int(value))


def runnable(text: str, parameters: dict[str, Any]) -> str:
    """The query with its parameters written in, so that it can be pasted into `otel-llmcost sql`."""
    return _PARAMETER.sub(lambda m: literal(parameters[m.group(1)]), text).strip()


def rows_of(store, name: str, parameters: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The rows of one SQL file as dicts, and the query that made them."""
    text = sql(name)
    result = store.query(text, parameters)
    return [dict(zip(result.column_names, row)) for row in result.rows], runnable(text, parameters)


# The token kinds a group sums, as `PricedUsage` names them.
USAGE_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
               "reasoning_tokens", "web_searches")


@dataclass(frozen=True)
class UsageGroup:
    """One row of `usage_by_feature.sql`: calls of one feature and model that price alike."""

    service_name: str
    project: str
    feature: str
    provider: str
    model: str
    service_tier: str
    calls: int
    unknown_calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    web_searches: int
    cost_usd: Decimal
    first_call: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "UsageGroup":
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name != "cost_usd"},
                   cost_usd=Decimal(row["cost_usd"] or 0))

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def usage(self, calls: int = 1, **extra: int):
        """`calls` times the group's mean call (rounded down), plus `extra` of each kind, as the catalog prices it."""
        from ..collector.price_records import PricedUsage

        n = self.calls
        return PricedUsage(**{kind: getattr(self, kind) // n * calls + extra.get(kind, 0) for kind in USAGE_KINDS})

    def price(self, catalog, model: str | None = None, tier: str | None = None, when_ns: int | None = None):
        """What the group's calls cost on `model` at `tier`, priced call by call: the catalog applies a
        long-context tier (and a per-request fee) per call, so the summed usage must not be priced as one call.
        The calls of a group share a tier (see the SQL file), so n times the mean call plus the remainder, priced
        on top of one mean call, is the sum of the calls' prices. None when the model has no price."""
        when_ns = now_ns() if when_ns is None else when_ns
        model = model or self.model
        tier = self.service_tier if tier is None else tier
        rest = {kind: getattr(self, kind) - getattr(self, kind) // self.calls * self.calls for kind in USAGE_KINDS}
        mean = catalog.price(self.provider, model, when_ns, self.usage(), tier)
        last = catalog.price(self.provider, model, when_ns, self.usage(**rest), tier)
        if mean.status != "priced" or last.status != "priced":
            return None
        return mean.total * (self.calls - 1) + last.total


def usage_groups(store, seconds: int) -> tuple[list[UsageGroup], str]:
    rows, query = rows_of(store, "usage_by_feature",
                          {"seconds": seconds, "service_tier_keys": list(normalize.SERVICE_TIER_KEYS)})
    return [UsageGroup.from_row(row) for row in rows], query


def covered_seconds(groups: list[UsageGroup], seconds: int, now: float | None = None) -> int:
    """How much of the window the stored traffic covers: from its first call (or the window's start) to now."""
    now = time.time() if now is None else now
    first = min((g.first_call for g in groups), default=int(now))
    return max(60, min(seconds, int(now) - first))


def per_month(amount: Decimal, seconds: int) -> Decimal:
    """An amount spent over `seconds` of traffic, per 30 days, to the nano-dollar (half to even)."""
    return (amount * MONTH_SECONDS / seconds).quantize(NANO)


def now_ns() -> int:
    return time.time_ns()


def money(value: Decimal | None) -> str:
    """Dollars for people: cents from a dollar up, four significant digits below it."""
    if value is None:
        return "unknown"
    sign, value = ("-" if value < 0 else ""), abs(value)
    if value >= 1 or value == 0:
        return f"{sign}${value:,.2f}"
    return f"{sign}${float(value):.4g}"


def exact(value: Decimal | None) -> str | None:
    """Dollars for machines: the exact decimal as text (no float rounding)."""
    return None if value is None else format(value.quantize(NANO), "f")
