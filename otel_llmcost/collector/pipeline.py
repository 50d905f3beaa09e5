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
from .rows import COLUMNS, row

logger = logging.getLogger("otel_llmcost.collector")

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
