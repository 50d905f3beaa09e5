"""A priced call as a row of `llm_spans`: the one place that knows the column order.

Amounts are stored as `Decimal(18, 9)`: each is rounded half-to-even at the ninth decimal here (the client
library would truncate small amounts and round large ones at 18 significant digits). A call whose cost
does not fit (a total or part of $1e9 or more, far beyond any real call, so a usage worth checking) is
stored `unpriced` with its cost in the note, never as a NULL cost marked `priced` that sums as $0.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from .. import names
from .normalize import Call
from .price_records import Price
from .records import by_keyword

_Amount = Decimal | None  # (None: not priced)
# A row of `llm_spans`: its fields are the columns the collector inserts, in order (timestamp in ns). Built by
# keyword (`records.by_keyword`), inserted as the tuple it is.
Row = NamedTuple("Row", [
    ("timestamp", int), ("duration_ms", float), ("trace_id", str), ("span_id", str), ("parent_span_id", str),
    ("service_name", str), ("span_name", str), ("scope_name", str), ("provider", str), ("operation", str),
    ("request_model", str), ("response_model", str), ("response_id", str), ("status_code", str), ("error_type", str),
    ("input_tokens", int), ("output_tokens", int), ("cache_read_tokens", int), ("cache_write_tokens", int),
    ("reasoning_tokens", int), ("cost_usd", _Amount), ("input_cost_usd", _Amount), ("cache_read_cost_usd", _Amount),
    ("cache_write_cost_usd", _Amount), ("output_cost_usd", _Amount), ("cache_savings_usd", _Amount),
    ("price_status", str), ("price_note", str), ("price_source", str), ("priced_model", str), ("project", str),
    ("feature", str), ("user_id", str), ("attributes", dict[str, str]), ("resource_json", str), ("prefix_hash", str),
    ("prefix_length", int), ("cache_hit_kind", str), ("app_cache_savings_usd", _Amount), ("input_audio_tokens", int),
    ("output_audio_tokens", int), ("input_image_tokens", int), ("output_image_tokens", int),
    ("request_fees_usd", _Amount),
])

COLUMNS = Row._fields

_ZERO = Decimal(0)
NANO = Decimal("1e-9")
# Decimal(18, 9) holds amounts below $1e9: the smallest amount that rounds to $1e9 does not fit.
STORABLE_LIMIT = Decimal("999999999.9999999995")


def stored(amount: Decimal | None) -> Decimal | None:
    """An amount as the store keeps it: rounded half-to-even at the ninth decimal."""
    return None if amount is None else amount.quantize(NANO, rounding=ROUND_HALF_EVEN)


def too_large(total: Decimal | None, savings: Decimal | None = None) -> bool:
    """Whether a price's amounts fit: its parts are each at most its total (none is negative); the savings
    are apart."""
    return (total is not None and total >= STORABLE_LIMIT) or (savings is not None and abs(savings) >= STORABLE_LIMIT)


def too_large_note(amount: Decimal | None) -> str:
    return (f"cost ${amount:f} is too large to store (the cost columns are Decimal(18, 9), below $1e9): "
            "stored as unpriced; check the span's usage")


@by_keyword(Row)
def row(call: Call, price: Price) -> Row:
    if call.cache_hit_kind:
        return cache_hit_row(call, price)
    if not call.has_usage:
        status, note = "no_usage", "the span reports no token usage"
    elif price.status == "priced" and too_large(price.total, price.cache_savings):
        status, note = "unpriced", "; ".join(filter(None, [too_large_note(price.total), price.note]))
    else:
        status, note = price.status, price.note
    attributes = call.attributes
    usage_note = attributes.get(names.USAGE_NOTE)
    if attributes.get(names.USAGE_ESTIMATED) == "true" and call.has_usage:
        # Tokens the instrumentation estimated (a stream without its usage report): priced, and flagged so.
        usage_note = f"usage estimated by the instrumentation: {usage_note or 'no usage report'}"
        if status == "priced":
            status = "estimated"
    if usage_note or call.notes:
        note = "; ".join(filter(None, [note, usage_note, *call.notes]))
    usage = call.usage
    if usage.compaction_input_tokens or usage.compaction_output_tokens:
        # Compaction iterations are billed tokens of the call too: counted in (`stored_usage` takes them out).
        input_tokens = usage.input_tokens + usage.compaction_input_tokens
        output_tokens = usage.output_tokens + usage.compaction_output_tokens
        cache_read_tokens = usage.cache_read_tokens + usage.compaction_cache_read_tokens
        cache_write_tokens = usage.cache_write_tokens + usage.compaction_cache_write_tokens
    else:
        input_tokens, output_tokens, cache_read_tokens, cache_write_tokens = usage[:4]
    priced = status == "priced" or status == "estimated"
    if priced:
        # (`stored`, written out: once per span; a zero, as most cache and fee parts are, needs no rounding)
        q, even = NANO, ROUND_HALF_EVEN
        cache_read, cache_write, savings, fees = price.cache_read, price.cache_write, price.cache_savings, price.fees
        cost, input_cost, output_cost = price.total.quantize(q, even), price.input.quantize(q, even), \
            price.output.quantize(q, even)
        cache_read_cost = cache_read.quantize(q, even) if cache_read else cache_read
        cache_write_cost = cache_write.quantize(q, even) if cache_write else cache_write
        savings = savings.quantize(q, even) if savings else savings
        fees = fees.quantize(q, even) if fees else fees
    else:
        cost = input_cost = output_cost = cache_read_cost = cache_write_cost = savings = fees = None
    return Row(
        timestamp=call.timestamp_ns, duration_ms=call.duration_ms, trace_id=call.trace_id, span_id=call.span_id,
        parent_span_id=call.parent_span_id, service_name=call.service_name, span_name=call.span_name,
        scope_name=call.scope_name, provider=call.provider, operation=call.operation,
        request_model=call.request_model, response_model=call.response_model, response_id=call.response_id,
        status_code=call.status_code, error_type=call.error_type,
        input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens, reasoning_tokens=usage.reasoning_tokens,
        cost_usd=cost, input_cost_usd=input_cost, cache_read_cost_usd=cache_read_cost,
        cache_write_cost_usd=cache_write_cost, output_cost_usd=output_cost, cache_savings_usd=savings,
        price_status=status, price_note=note, price_source=price.source if priced else "",
        priced_model=price.model_id if priced else "",
        project=call.project, feature=call.feature, user_id=call.user_id, attributes=call.attributes,
        resource_json=call.resource_json, prefix_hash=call.prefix_hash, prefix_length=call.prefix_length,
        cache_hit_kind="", app_cache_savings_usd=None,
        input_audio_tokens=usage.input_audio_tokens, output_audio_tokens=usage.output_audio_tokens,
        input_image_tokens=usage.input_image_tokens, output_image_tokens=usage.output_image_tokens,
        request_fees_usd=fees,
    )


@by_keyword(Row)
def cache_hit_row(call: Call, price: Price) -> Row:
    """An application-level cache hit: no call was made, so no tokens and a cost of exactly 0 (known, not
    missing); what the avoided call would have cost (its usage priced like any call) is the savings, NULL
    with the reason in the note when that model has no price."""
    usage = call.usage
    avoided = f"{usage.input_tokens} input and {usage.output_tokens} output tokens"
    if price.status == "priced" and too_large(price.total):
        note = (f"application cache hit ({call.cache_hit_kind}): no call made; the avoided call is unpriced: "
                f"{too_large_note(price.total)}")
        savings, source, model_id = None, "", ""
    elif price.status == "priced":
        note = f"application cache hit ({call.cache_hit_kind}): no call made; avoided {avoided}"
        savings, source, model_id = stored(price.total), price.source, price.model_id
    else:
        note = f"application cache hit ({call.cache_hit_kind}): no call made; the avoided call is unpriced: {price.note}"
        savings, source, model_id = None, "", ""
    if call.notes:
        note = "; ".join([note, *call.notes])
    return Row(
        timestamp=call.timestamp_ns, duration_ms=call.duration_ms, trace_id=call.trace_id, span_id=call.span_id,
        parent_span_id=call.parent_span_id, service_name=call.service_name, span_name=call.span_name,
        scope_name=call.scope_name, provider=call.provider, operation=call.operation or "cache_hit",
        request_model=call.request_model, response_model=call.response_model, response_id=call.response_id,
        status_code=call.status_code, error_type=call.error_type,
        input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, reasoning_tokens=0,
        cost_usd=_ZERO, input_cost_usd=_ZERO, cache_read_cost_usd=_ZERO, cache_write_cost_usd=_ZERO,
        output_cost_usd=_ZERO, cache_savings_usd=None,
        price_status="priced", price_note=note, price_source=source, priced_model=model_id,
        project=call.project, feature=call.feature, user_id=call.user_id, attributes=call.attributes,
        resource_json=call.resource_json, prefix_hash=call.prefix_hash, prefix_length=call.prefix_length,
        cache_hit_kind=call.cache_hit_kind, app_cache_savings_usd=savings,
        input_audio_tokens=0, output_audio_tokens=0, input_image_tokens=0, output_image_tokens=0,
        request_fees_usd=_ZERO,
    )
