"""The store's insert path on the real engine (chDB): values arrive exactly as given."""

from __future__ import annotations

from decimal import Decimal


def test_decimals_are_stored_exactly_whatever_their_text_looks_like(empty_store):
    """Decimal columns are sent as text: the smallest amounts (whose str() is in exponent form, "1E-9"),
    trailing zeros, the largest a Decimal(18, 9) holds, NULL, and the integers and text a caller may pass."""
    costs = [Decimal("1E-9"), Decimal("0.000000100"), Decimal("1.00E-7"), Decimal("0.000123450"),
             Decimal("123456789.123456789"), Decimal("999999999.999999999"), Decimal(0), Decimal("0E-9"), None, 7,
             "0.5"]
    rows = [(10**18 + i, f"{i:032x}", f"{i:016x}", cost, Decimal("0.25") if cost is not None else None)
            for i, cost in enumerate(costs)]
    empty_store.insert("llm_spans", rows, ("timestamp", "trace_id", "span_id", "cost_usd", "input_cost_usd"))
    stored = empty_store.query("SELECT cost_usd, input_cost_usd FROM llm_spans ORDER BY timestamp").rows
    expected = [(None if c is None else Decimal(str(c)), None if c is None else Decimal("0.25")) for c in costs]
    assert stored == expected
    # the rollup, fed by its materialized view from the same insert, sums the same amounts
    total = empty_store.query("SELECT sum(cost_usd) FROM llm_rollup_1m").rows[0][0]
    assert total == sum(Decimal(str(c)) for c in costs if c is not None)

    empty_store.insert("llm_budgets", [("project", "p", "day", Decimal("12.500000")), ("all", "", "month", 3)],
                 ("scope", "scope_value", "period", "amount_usd"))
    assert empty_store.query("SELECT amount_usd FROM llm_budgets ORDER BY scope").rows == [(Decimal(3),), (Decimal("12.5"),)]
