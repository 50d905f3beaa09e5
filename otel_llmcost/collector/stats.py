"""The collector's counters: what /llmcost/v1/stats, the log summary and the OTel metrics report."""

from __future__ import annotations

import threading
from typing import Any


class Stats:
    """The collector's counters (what /llmcost/v1/stats, the log summary and the OTel metrics report)."""

    COUNTERS = (
        "requests_received", "spans_received", "spans_rejected", "requests_rejected_full", "requests_spooled",
        "llm_spans", "spans_priced", "spans_unpriced", "spans_no_usage", "spans_duplicate", "spans_stored",
        "insert_batches", "insert_errors", "forward_sent", "forward_failed", "forward_dropped",
        "spans_dead_lettered", "inserts_refused", "loader_restarts", "spool_write_errors",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, Any] = dict.fromkeys(self.COUNTERS, 0)
        self.values.update(store_down=False, insert_latency_ms_last=0.0, insert_latency_ms_max=0.0,
                           insert_latency_ms_total=0.0)
        self.insert_latency_listeners: list = []

    def add(self, **deltas: int) -> None:
        with self.lock:
            for key, delta in deltas.items():
                self.values[key] += delta

    def set(self, **values: Any) -> None:
        with self.lock:
            self.values.update(values)

    def insert_latency(self, ms: float) -> None:
        with self.lock:
            v = self.values
            v["insert_latency_ms_last"] = ms
            v["insert_latency_ms_max"] = max(v["insert_latency_ms_max"], ms)
            v["insert_latency_ms_total"] += ms
        for listener in self.insert_latency_listeners:
            listener(ms)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.values)
