"""The fast path of the pricing: `FastPlan` prices a usage exactly as genai-prices does, from a few integer sums.

For one resolved `ModelPrice`, the leaf counts genai-prices derives from a usage (uncached input = input -
cache reads - cache writes, and so on) are a linear function of the usage's fields. The integer coefficients
are derived once per pattern of non-zero fields, from genai-prices itself (`compute_leaf_values`), and
checked for linearity; a price whose division by its unit is exact becomes a rate, so each priced unit costs
one Decimal multiply, the same number genai-prices' `calc_unit_price` gives. Results are memoized per usage.
Anything this path cannot vouch for (a negative leaf, a pattern that is not linear, an inexact rate) goes
through genai-prices' own computation.

Its reference is `pricing.PublicPlan` (genai-prices' public `ModelPrice.calc_price`, part by part):
`tests/test_pricing_fast_path.py` prices many usages both ways and against `genai_prices.calc_price`.
Only public genai-prices APIs are used; `pricing.new_plan` falls back to `PublicPlan` if one is missing or
fails.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from genai_prices import Usage
from genai_prices import types as price_types
from genai_prices.data_units import unit_data
from genai_prices.decompose import compute_leaf_values
from genai_prices.units import UnitRegistry

from .price_records import USAGE_KEYS, Price, unpriced

_ZERO = Decimal(0)
# genai-prices' unit table, built from its bundled unit data as `calc_price` builds its own.
REGISTRY = UnitRegistry(unit_data)


def resolved_prices(model_price: Any) -> tuple[tuple[Any, Any], ...]:
    """(unit, price) of each price a `ModelPrice` sets, in its order: the units `calc_price` prices (a key
    genai-prices does not know is skipped, as it does). ValueError for a price it would refuse."""
    resolved = []
    for key, price in model_price.__dict__.items():
        if key.startswith("_") or price is None:
            continue
        try:
            unit = REGISTRY.unit_for_price_key(key)
        except KeyError:
            continue
        valid_decimal = isinstance(price, Decimal) and price.is_finite() and price >= 0
        if not valid_decimal and not isinstance(price, price_types.TieredPrices):
            raise ValueError(f"invalid price value for {key}: {price!r}")
        resolved.append((unit, price))
    return tuple(resolved)


# Values from which the linear coefficients are derived: valid for every pattern (1h writes within writes, audio
# cache reads within cache reads and audio input, ...).
_BASE = (10**9, 10**9, 10**6, 10**6, 10**5, 10**6, 10, 10**6, 10**4, 10**6, 10**6, 10**4, 10**6, 10**6, 10**6, 10)


def _part(unit: Any) -> int:
    """Which part a priced unit's amount goes to: 0 input, 1 cache read, 2 cache write, 3 output,
    4 the total only (per-request fees, such as web searches)."""
    key = unit.usage_key
    if key.startswith("cache_"):
        return 1 if "_read" in key else 2
    direction = unit.dimensions.get("direction")
    if direction in ("input", "output") and not key.startswith(("web_", "requests")):
        return 0 if direction == "input" else 3
    return 4


def _exact_rate(price: Decimal, per: int) -> Decimal | None:
    rate = price / per
    return rate if rate * per == price else None


def _rates(price: Any, per: int) -> tuple[tuple[int, Decimal], ...] | None:
    """(threshold, price / per) pairs, highest threshold first, ending with the base price at -1: the first whose
    threshold the call's input exceeds applies (calc_unit_price's tier rule). None when a division is not exact
    (then genai-prices' own arithmetic is used)."""
    if type(price) is Decimal:
        pairs = [(-1, price)]
    elif isinstance(price, price_types.TieredPrices):
        pairs = [(tier.start, tier.price) for tier in reversed(price.tiers)] + [(-1, price.base)]
    else:
        return None
    rates = []
    for threshold, value in pairs:
        rate = _exact_rate(value, per) if type(value) is Decimal else None
        if rate is None:
            return None
        rates.append((threshold, rate))
    return tuple(rates)


class FastPlan:
    """One resolved `ModelPrice`, ready to price usages fast and exactly like genai-prices."""

    __slots__ = ("model_price", "resolved", "leaf_units", "tiered", "input_price", "input_rates", "units", "patterns",
                 "memo")

    MEMO_SIZE = 8192

    def __init__(self, model_price: Any) -> None:
        self.model_price = model_price
        self.resolved = resolved_prices(model_price)
        self.leaf_units = {unit.usage_key: unit for unit, _ in self.resolved if unit.usage_key != "requests"}
        self.tiered = any(isinstance(price, price_types.TieredPrices) for _, price in self.resolved)
        self.input_price = getattr(model_price, "input_mtok", None)
        self.input_rates = _rates(self.input_price, 1_000_000) if self.input_price is not None else None
        # (usage_key, price, per, part, rates) of each priced unit, in genai-prices' order (the total's order);
        # rates: price / per of each tier when exact (then rate * count == price * count / per, the same number).
        self.units = tuple((unit.usage_key, price, unit.per, _part(unit), _rates(price, unit.per))
                           for unit, price in self.resolved)
        self.patterns: dict[tuple[bool, ...], tuple | None] = {}
        self.memo: dict[tuple[int, ...], Price] = {}

    # -- genai-prices' own leaf computation ---------------------------------------------------------------

    def counts(self, values: tuple[int, ...]) -> dict[str, Any]:
        """The count genai-prices prices under each usage key (the per-request fee apart)."""
        usage = Usage(**{key: value for key, value in zip(USAGE_KEYS, values) if value})
        return compute_leaf_values(set(self.leaf_units), usage, self.leaf_units)

    # -- the fast path -----------------------------------------------------------------------------------

    def _matrix(self, pattern: tuple[bool, ...]) -> tuple | None:
        """For usages whose non-zero fields are `pattern` (a flag per field): each unit's leaf count as integer
        coefficients of the usage fields; None when genai-prices must be asked each time."""
        present = [i for i, nonzero in enumerate(pattern) if nonzero]
        base = [(_BASE[i] if i in present else 0) for i in range(len(USAGE_KEYS))]
        try:
            at_base = self.counts(tuple(base))
            steps = {}
            for i in present:
                bumped = list(base)
                bumped[i] += 1
                steps[i] = self.counts(tuple(bumped))
            doubled = self.counts(tuple(2 * v for v in base))
        except ValueError:
            return None
        rows = []
        for key, *_ in self.units:
            if key == "requests":
                rows.append(None)  # one request per call
                continue
            terms = tuple((i, steps[i][key] - at_base[key]) for i in present if steps[i][key] != at_base[key])
            if any(not isinstance(c, int) for _, c in terms):
                return None
            linear = sum(c * base[i] for i, c in terms)
            if linear != at_base[key] or 2 * linear != doubled[key]:
                return None  # not linear after all: leave it to genai-prices
            rows.append(terms)
        return tuple(rows)

    def leaf_counts(self, values: tuple[int, ...], requests: int = 1) -> list[int] | None:
        pattern = tuple(map(bool, values))
        try:
            rows = self.patterns[pattern]
        except KeyError:
            rows = self.patterns[pattern] = self._matrix(pattern)
        if rows is None:
            return None
        out = []
        for terms in rows:
            if terms is None:
                out.append(requests)
                continue
            n = 0
            for i, c in terms:
                n += c * values[i]
            if n < 0:
                return None  # genai-prices rejects this usage: let it say why
            out.append(n)
        return out

    def price(self, values: tuple[int, ...], source: str, model_id: str, requests: int = 1) -> Price:
        """`requests`: how many per-call fees apply (0 for the compaction iterations of a call already counted)."""
        memo = requests == 1
        cached = self.memo.get(values) if memo else None
        if cached is not None and cached.source == source and cached.model_id == model_id:
            return cached
        counts = self.leaf_counts(values, requests)
        if counts is None:
            try:
                by_key = self.counts(values)
            except ValueError as exc:  # e.g. cache reads larger than the input: odd usage, say so
                return unpriced(f"invalid usage: {exc}")
            counts = [requests if unit[0] == "requests" else by_key.get(unit[0]) for unit in self.units]
        total_input = values[0] if self.tiered else 0
        parts = [_ZERO, _ZERO, _ZERO, _ZERO, _ZERO]  # input, cache read, cache write, output, fees
        total = _ZERO
        for (_, price, per, part, rates), count in zip(self.units, counts):
            if not count:
                continue  # genai-prices adds a zero here
            if rates is not None:
                for threshold, rate in rates:
                    if total_input > threshold:
                        break
                amount = rate * count
            elif price is None:
                continue
            else:
                amount = price_types.calc_unit_price(price, count, total_input, per)
            total += amount
            parts[part] += amount
        savings = None
        if values[2] and self.input_price is not None:
            if self.input_rates is not None:
                for threshold, rate in self.input_rates:
                    if total_input > threshold:
                        break
                as_uncached = rate * values[2]
            else:
                as_uncached = price_types.calc_unit_price(self.input_price, values[2], total_input, 1_000_000)
            savings = as_uncached - parts[1]
        result = Price("priced", total=total, input=parts[0], cache_read=parts[1], cache_write=parts[2],
                       output=parts[3], cache_savings=savings,
                       source=source, model_id=model_id, fees=parts[4])
        if memo:
            if len(self.memo) >= self.MEMO_SIZE:
                self.memo.clear()
            self.memo[values] = result
        return result


