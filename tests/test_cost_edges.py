"""The edges of a stored cost, in a real collector and store: amounts round half-to-even at the ninth decimal
(never truncated), a cost too large for `Decimal(18, 9)` is flagged `unpriced` (never a NULL marked `priced`
that sums as $0), and `sql --format json` prints the exact decimals.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

import pytest
from genai_prices import Usage, calc_price

from otel_llmcost import commands, names

from test_pricing import emit

NANO = Decimal("1e-9")


def when(timestamp_ns: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ns // 10**9, tz=timezone.utc).replace(
        microsecond=timestamp_ns // 1000 % 1_000_000)


def chat(model: str, **usage) -> dict:
    return {names.OPERATION: "chat", names.PROVIDER: "openai", names.REQUEST_MODEL: model, **usage}


def rows_of(collector, ids: list[str]) -> list[dict]:
    return collector.query("SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id) ORDER BY timestamp",
                           {"ids": ids})


def test_amounts_round_half_to_even_at_the_ninth_decimal(collector):
    """A usage whose exact cost has a tenth decimal that truncation would drop: found among small usages of a
    flex-tier model, its cost computed by genai-prices."""
    start = time.time_ns()
    context = {"service_tier": "flex"}
    cases = []
    for cached in range(1, 40):
        usage = Usage(input_tokens=cached + 1, cache_read_tokens=cached, output_tokens=1)
        exact = calc_price(usage, "gpt-5", provider_id="openai", genai_request_timestamp=when(start),
                           price_context=context).total_price
        if exact.quantize(NANO, ROUND_HALF_EVEN) != exact.quantize(NANO, ROUND_DOWN):
            cases.append((cached, exact))
        if len(cases) == 2:
            break
    assert len(cases) == 2, "no usage tells rounding from truncation"
    ids = emit(collector, [
        {"attributes": chat("gpt-5", **{names.INPUT_TOKENS: cached + 1, names.CACHE_READ_TOKENS: cached,
                                        names.OUTPUT_TOKENS: 1, names.SERVICE_TIER: "flex"}), "start": start + i}
        for i, (cached, _) in enumerate(cases)])
    for row, (_, exact) in zip(rows_of(collector, ids), cases):
        assert row["price_status"] == "priced"
        assert row["cost_usd"] == exact.quantize(NANO, ROUND_HALF_EVEN) != exact.quantize(NANO, ROUND_DOWN)


def test_a_cost_too_large_for_its_column_is_flagged_not_a_silent_null(collector):
    start = time.time_ns()
    price = calc_price(Usage(input_tokens=1_000_000), "gpt-4o", provider_id="openai",
                       genai_request_timestamp=when(start)).total_price  # USD per million input tokens
    largest = int((Decimal("999999999.999999999") / price) * 1_000_000)  # tokens whose cost still fits
    ids = emit(collector, [
        {"attributes": chat("gpt-4o", **{names.INPUT_TOKENS: largest, names.OUTPUT_TOKENS: 0}), "start": start},
        {"attributes": chat("gpt-4o", **{names.INPUT_TOKENS: 10**15, names.OUTPUT_TOKENS: 0}), "start": start + 1},
    ])
    fits, too_large = rows_of(collector, ids)
    expected = calc_price(Usage(input_tokens=largest), "gpt-4o", provider_id="openai",
                          genai_request_timestamp=when(start)).total_price
    assert fits["price_status"] == "priced" and fits["cost_usd"] == expected.quantize(NANO, ROUND_HALF_EVEN)
    assert too_large["price_status"] == "unpriced" and too_large["cost_usd"] is None
    assert "too large to store" in too_large["price_note"]
    assert too_large["input_tokens"] == 10**15  # the usage is kept, to be checked
    [summary] = collector.query(
        "SELECT countIf(price_status != 'priced') AS flagged, countIf(price_status = 'priced' AND cost_usd IS NULL) "
        "AS silent FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id)", {"ids": ids})
    assert summary == {"flagged": 1, "silent": 0}


def test_sql_json_output_keeps_exact_decimals(collector):
    start = time.time_ns()
    [span_id] = emit(collector, [{"attributes": chat("gpt-4o-mini", **{names.INPUT_TOKENS: 1149,
                                                                        names.OUTPUT_TOKENS: 353}), "start": start}])
    sql = ("SELECT toDecimal64('123456789.123456789', 9) AS big, cost_usd, toDecimal128(cost_usd, 9) * 3 AS tripled, "
           f"CAST(NULL AS Nullable(Decimal(18, 9))) AS missing FROM llm_spans FINAL WHERE span_id = '{span_id}'")
    line = subprocess.run([sys.executable, "-m", "otel_llmcost.cli", "sql", "--store", collector.store_url, "--format",
                           "json", sql], capture_output=True, text=True, check=True).stdout.strip()
    assert '"big": 123456789.123456789' in line
    document = json.loads(line, parse_float=Decimal)
    expected = calc_price(Usage(input_tokens=1149, output_tokens=353), "gpt-4o-mini", provider_id="openai",
                          genai_request_timestamp=when(start)).total_price.quantize(NANO, ROUND_HALF_EVEN)
    assert document == {"big": Decimal("123456789.123456789"), "cost_usd": expected, "tripled": expected * 3,
                        "missing": None}


@pytest.mark.parametrize("value, text", [(Decimal("0.000000001"), "0.000000001"), (Decimal("1E-9"), "0.000000001"),
                                         (Decimal("-2.50"), "-2.50"), (None, "null"), ("a\"b", '"a\\"b"')])
def test_json_value_writes_decimals_as_exact_numbers(value, text):
    assert commands.json_value(value) == text
