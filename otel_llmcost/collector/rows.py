"""A priced call as a row of `llm_spans`: the one place that knows the column order.

Amounts are stored as `Decimal(18, 9)`: each is rounded half-to-even at the ninth decimal here (the client
library would truncate small amounts and round large ones at 18 significant digits). A call whose cost
does not fit (a total or part of $1e9 or more, far beyond any real call, so a usage worth checking) is
stored `unpriced` with its cost in the note, never as a NULL cost marked `priced` that sums as $0.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from .. import names
from .normalize import Call
from .pricing import Price

COLUMNS = (
    "timestamp", "duration_ms", "trace_id", "span_id", "parent_span_id", "service_name", "span_name",
    "scope_name", "provider", "operation", "request_model", "response_model", "response_id", "status_code",
    "error_type", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
    "cost_usd", "input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd",
    "cache_savings_usd", "price_status", "price_note", "price_source", "priced_model", "project", "feature",
    "user_id", "attributes", "resource_json", "prefix_hash", "prefix_length", "cache_hit_kind",
    "app_cache_savings_usd", "input_audio_tokens", "output_audio_tokens", "input_image_tokens", "output_image_tokens",
    "request_fees_usd",
)

_ZERO = Decimal(0)
NANO = Decimal("1e-9")
# Decimal(18, 9) holds amounts below $1e9: the smallest amount that rounds to $1e9 does not fit.
STORABLE_LIMIT = Decimal("999999999.9999999995")
_UNPRICED = (None,) * 7


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


def row(call: Call, price: Price) -> tuple:
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
        tokens = (usage.input_tokens + usage.compaction_input_tokens, usage.output_tokens + usage.compaction_output_tokens,
                  usage.cache_read_tokens + usage.compaction_cache_read_tokens,
                  usage.cache_write_tokens + usage.compaction_cache_write_tokens)
    else:
        tokens = usage[:4]  # input, output, cache read, cache write
    priced = status == "priced" or status == "estimated"
    if priced:
        # (`stored`, written out: once per span; a zero, as most cache and fee parts are, needs no rounding)
        q, even = NANO, ROUND_HALF_EVEN
        cache_read, cache_write, savings, fees = price.cache_read, price.cache_write, price.cache_savings, price.fees
        amounts = (price.total.quantize(q, even), price.input.quantize(q, even),
                   cache_read.quantize(q, even) if cache_read else cache_read,
                   cache_write.quantize(q, even) if cache_write else cache_write, price.output.quantize(q, even),
                   savings.quantize(q, even) if savings else savings, fees.quantize(q, even) if fees else fees)
    else:
        amounts = _UNPRICED
    return (
        call.timestamp_ns, call.duration_ms, call.trace_id, call.span_id, call.parent_span_id,
        call.service_name, call.span_name, call.scope_name, call.provider, call.operation,
        call.request_model, call.response_model, call.response_id, call.status_code, call.error_type,
        *tokens, usage.reasoning_tokens,
        *amounts[:6],
        status, note, price.source if priced else "", price.model_id if priced else "",
        call.project, call.feature, call.user_id, call.attributes, call.resource_json,
        call.prefix_hash, call.prefix_length, "", None,
        usage.input_audio_tokens, usage.output_audio_tokens, usage.input_image_tokens, usage.output_image_tokens,
        amounts[6],
    )


def cache_hit_row(call: Call, price: Price) -> tuple:
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
    return (
        call.timestamp_ns, call.duration_ms, call.trace_id, call.span_id, call.parent_span_id,
        call.service_name, call.span_name, call.scope_name, call.provider, call.operation or "cache_hit",
        call.request_model, call.response_model, call.response_id, call.status_code, call.error_type,
        0, 0, 0, 0, 0,
        _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, None,
        "priced", note, source, model_id,
        call.project, call.feature, call.user_id, call.attributes, call.resource_json,
        call.prefix_hash, call.prefix_length, call.cache_hit_kind, savings,
        0, 0, 0, 0, _ZERO,
    )
