"""normalize -> price -> write: what the receivers hand each OTLP export request to."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..store import Store
from .normalize import Call, calls_in, one_per_call
from .pricing import Price, PriceCatalog

logger = logging.getLogger("otel_llmcost.collector")

COLUMNS = (
    "timestamp", "duration_ms", "trace_id", "span_id", "parent_span_id", "service_name", "span_name",
    "scope_name", "provider", "operation", "request_model", "response_model", "response_id", "status_code",
    "error_type", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
    "cost_usd", "input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd",
    "cache_savings_usd", "price_status", "price_note", "price_source", "priced_model", "project", "feature",
    "user_id", "attributes", "resource_attributes", "prefix_hash", "prefix_length",
)


class StoreUnavailable(Exception):
    """The store refused a write; the exporter should retry later."""


@dataclass
class Outcome:
    received: int = 0  # LLM spans in the request
    stored: int = 0
    duplicates: int = 0


class RecentCalls:
    """Keys of the calls stored lately, so that a re-sent span, or a second span describing the same
    response, is not counted twice. Bounded; the table's ReplacingMergeTree key is the backstop."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.keys: OrderedDict[tuple, None] = OrderedDict()

    @staticmethod
    def keys_of(call: Call) -> list[tuple]:
        keys = [("span", call.trace_id, call.span_id)]
        if call.response_id:
            keys.append(("response", call.trace_id, call.response_id))
        return keys

    def fresh(self, items: list[tuple[Call, Any]]) -> list[tuple[Call, Any]]:
        """The items whose call was not stored lately, nor already met earlier in `items`."""
        kept, batch = [], set()
        for item in items:
            keys = self.keys_of(item[0])
            if any(key in self.keys or key in batch for key in keys):
                continue
            batch.update(keys)
            kept.append(item)
        return kept

    def remember(self, calls: list[Call]) -> None:
        for call in calls:
            for key in self.keys_of(call):
                self.keys[key] = None
        while len(self.keys) > self.capacity:
            self.keys.popitem(last=False)


def row(call: Call, price: Price) -> tuple:
    if not call.has_usage:
        status, note = "no_usage", "the span reports no token usage"
    else:
        status, note = price.status, price.note
    if call.notes:
        note = "; ".join(filter(None, [note, *call.notes]))
    usage = call.usage
    priced = status == "priced"
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
        call.project, call.feature, call.user_id, call.attributes, call.resource_attributes,
        call.prefix_hash, call.prefix_length,
    )


class Pipeline:
    def __init__(self, store: Store, catalog: PriceCatalog | None = None) -> None:
        self.store = store
        self.catalog = catalog or PriceCatalog()
        self.recent = RecentCalls()
        self.lock = threading.Lock()  # one writer: dedup check, insert and remember are one step
        self.counters = {"spans_received": 0, "spans_stored": 0, "spans_duplicate": 0, "spans_unpriced": 0}

    def price(self, call: Call) -> Price:
        return self.catalog.price(call.provider, call.model, call.timestamp_ns, call.usage, call.service_tier)

    def accept(self, request: ExportTraceServiceRequest) -> Outcome:
        calls = one_per_call(list(calls_in(request)))
        outcome = Outcome(received=len(calls))
        if not calls:
            return outcome
        rows = []
        unpriced = 0
        for call in calls:
            price = self.price(call)
            unpriced += price.status != "priced" and call.has_usage
            rows.append((call, row(call, price)))
        with self.lock:
            fresh = self.recent.fresh(rows)
            if fresh:
                try:
                    self.store.insert("llm_spans", [r for _, r in fresh], COLUMNS)
                except Exception as exc:
                    logger.warning("store write failed: %s", exc)
                    raise StoreUnavailable(str(exc)) from exc
                self.recent.remember([call for call, _ in fresh])
            outcome.stored = len(fresh)
            outcome.duplicates = len(rows) - len(fresh)
            self.counters["spans_received"] += outcome.received
            self.counters["spans_stored"] += outcome.stored
            self.counters["spans_duplicate"] += outcome.duplicates
            self.counters["spans_unpriced"] += unpriced
        return outcome

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)
