"""A priced call as a row of `llm_spans`: the one place that knows the column order."""

from __future__ import annotations

from decimal import Decimal

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
    "app_cache_savings_usd",
)

_ZERO = Decimal(0)


def row(call: Call, price: Price) -> tuple:
    if call.cache_hit_kind:
        return cache_hit_row(call, price)
    if not call.has_usage:
        status, note = "no_usage", "the span reports no token usage"
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
    priced = status == "priced" or status == "estimated"
    return (
        call.timestamp_ns, call.duration_ms, call.trace_id, call.span_id, call.parent_span_id,
        call.service_name, call.span_name, call.scope_name, call.provider, call.operation,
        call.request_model, call.response_model, call.response_id, call.status_code, call.error_type,
        usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens,
        usage.reasoning_tokens,
        price.total if priced else None,
        price.input if priced else None,
        price.cache_read if priced else None,
        price.cache_write if priced else None,
        price.output if priced else None,
        price.cache_savings if priced else None,
        status, note, price.source if priced else "", price.model_id if priced else "",
        call.project, call.feature, call.user_id, call.attributes, call.resource_json,
        call.prefix_hash, call.prefix_length, "", None,
    )


def cache_hit_row(call: Call, price: Price) -> tuple:
    """An application-level cache hit: no call was made, so no tokens and a cost of exactly 0 (known, not
    missing); what the avoided call would have cost (its usage priced like any call) is the savings, NULL
    with the reason in the note when that model has no price."""
    usage = call.usage
    avoided = f"{usage.input_tokens} input and {usage.output_tokens} output tokens"
    if price.status == "priced":
        note = f"application cache hit ({call.cache_hit_kind}): no call made; avoided {avoided}"
        savings, source, model_id = price.total, price.source, price.model_id
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
    )
