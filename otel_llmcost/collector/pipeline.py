"""normalize -> price -> write.

`Pipeline.rows_for(request)` turns an OTLP export request into rows of `llm_spans` (LLM spans only,
each call once, calls stored lately skipped). `Loader` is the one writer: it reads the spool in order,
batches rows (`batch_rows` rows or `batch_seconds` after the first one) and inserts each batch with a
deduplication token derived from its spool offsets, retrying while the store is down.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..store import Store
from .normalize import Call, calls_in, one_per_call
from .pricing import Price, PriceCatalog
from .rows import COLUMNS, row
from .spool import Spool

logger = logging.getLogger("otel_llmcost.collector")

SPANS_TABLE = "llm_spans"
# Test hook (collector/README.md): while this file exists, the loader dies right after an insert succeeds and
# before it records so in the spool checkpoint, the worst moment for a crash.
CRASH_AFTER_INSERT_FILE = os.environ.get("OTEL_LLMCOST_FAULT_CRASH_AFTER_INSERT_FILE") or None
# The loader's full garbage collections, this often (its young ones follow each insert; see Loader.run).
GC_FULL_SECONDS = 60.0


class StoreUnavailable(Exception):
    """The store refused a write; the exporter should retry later."""


@dataclass
class Outcome:
    received: int = 0  # LLM spans in the request
    stored: int = 0
    duplicates: int = 0


class Stats:
    """The collector's counters (what /llmcost/v1/stats, the log summary and the OTel metrics report)."""

    COUNTERS = (
        "requests_received", "spans_received", "spans_rejected", "requests_rejected_full", "requests_spooled",
        "llm_spans", "spans_priced", "spans_unpriced", "spans_no_usage", "spans_duplicate", "spans_stored",
        "insert_batches", "insert_errors", "forward_sent", "forward_failed", "forward_dropped",
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


class RecentCalls:
    """Keys of the calls stored lately, so that a re-sent span, or a second span describing the same
    response, is not counted twice. Bounded: the newest `capacity` keys at least, twice that at most; the
    table's ReplacingMergeTree key is the backstop.
    A key is one string: trace id + span id (48 hex digits), or trace id + "/" + response id."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        # Two generations: `keys` fills up to `capacity`, then becomes `older` (the one before is dropped). A
        # key is looked up in both; nothing is ever copied (trimming one dict in place cost about 1 µs per span).
        self.keys: dict[str, None] = {}
        self.older: dict[str, None] = {}

    @staticmethod
    def span_key(trace_id: str, span_id: str) -> str:
        return trace_id + span_id

    @staticmethod
    def response_key(trace_id: str, response_id: str) -> str:
        return trace_id + "/" + response_id  # a span key has no "/": the two kinds never meet

    def __contains__(self, key: str) -> bool:
        return key in self.keys or key in self.older

    def take(self, items: list[tuple[Call, Any]]) -> tuple[list[tuple[Call, Any]], list[Call]]:
        """The items whose call was not stored lately, nor already met earlier in `items` (remembered from now
        on), and the calls left out."""
        kept, left_out, keys, older = [], [], self.keys, self.older
        batch: dict[str, None] = {}  # (a dict: remembered in the order met)
        for item in items:
            call = item[0]
            span_key = call.trace_id + call.span_id  # span_key(), inlined: once per span
            if span_key in keys or span_key in older or span_key in batch:
                left_out.append(call)
                continue
            if call.response_id:
                response_key = call.trace_id + "/" + call.response_id  # response_key()
                if response_key in keys or response_key in older or response_key in batch:
                    left_out.append(call)
                    continue
                batch[response_key] = None
            batch[span_key] = None
            kept.append(item)
        self.remember_keys(batch)
        return kept, left_out

    def remember_keys(self, keys) -> None:
        self.keys.update(dict.fromkeys(keys))
        if len(self.keys) >= self.capacity:
            self.older, self.keys = self.keys, {}

    def all_keys(self) -> list[str]:
        """Every key remembered, oldest first."""
        return [*self.older, *self.keys]


class Pipeline:
    def __init__(self, store: Store, catalog: PriceCatalog | None = None, stats: Stats | None = None) -> None:
        self.store = store
        self.catalog = catalog or PriceCatalog()
        self.recent = RecentCalls()
        self.stats_ = stats or Stats()
        self.lock = threading.Lock()  # one writer: dedup check, insert and remember are one step

    def price(self, call: Call) -> Price:
        return self.catalog.price(call.provider, call.model, call.timestamp_ns, call.usage, call.service_tier)

    def rows_for(self, request: ExportTraceServiceRequest | bytes, recent: RecentCalls | None = None,
                 skip: set[tuple[str, str]] | None = None) -> tuple[list[tuple], list[tuple[str, str]]]:
        """Rows of the LLM calls in `request` (a message or its protobuf bytes) not stored lately, and the
        (trace_id, span_id) of the calls left out as already stored. The rows' calls are remembered as stored: the
        caller must store them. `recent`/`skip`: to rebuild a batch exactly as it was first built (a replay),
        dedup against an empty `recent` and leave out exactly the calls left out then."""
        calls = one_per_call(list(calls_in(request)))
        if not calls:
            return [], []
        items = []
        priced = unpriced = no_usage = 0
        price = self.price
        for call in calls:
            p = price(call)
            if not call.has_usage:
                no_usage += 1
            elif p.status == "priced":
                priced += 1
            else:
                unpriced += 1
            items.append((call, row(call, p)))
        if skip:
            items = [item for item in items if (item[0].trace_id, item[0].span_id) not in skip]
        recent = recent if recent is not None else self.recent
        with self.lock:
            fresh, left_out = recent.take(items)
        skipped = [(call.trace_id, call.span_id) for call in left_out]
        self.stats_.add(llm_spans=len(calls), spans_priced=priced, spans_unpriced=unpriced, spans_no_usage=no_usage,
                        spans_duplicate=len(calls) - len(fresh))
        return [r for _, r in fresh], skipped

    def write(self, rows: list[tuple], dedup_token: str | None = None) -> None:
        started = time.perf_counter()
        try:
            # distinct_keys: `rows_for` lets each (trace_id, span_id) into a batch once.
            self.store.insert(SPANS_TABLE, rows, COLUMNS, dedup_token=dedup_token, distinct_keys=True)
        except Exception as exc:
            self.stats_.add(insert_errors=1)
            self.stats_.set(store_down=True)
            raise StoreUnavailable(str(exc).strip()) from exc
        self.stats_.insert_latency((time.perf_counter() - started) * 1000)
        self.stats_.add(insert_batches=1, spans_stored=len(rows))
        self.stats_.set(store_down=False)

    def accept(self, request: ExportTraceServiceRequest) -> Outcome:
        """Synchronous path (no spool): normalize, price and insert one request now."""
        rows, _ = self.rows_for(request)
        if rows:
            self.write(rows)
        return Outcome(received=len(rows), stored=len(rows))

    def warm_up(self, limit: int = 200_000) -> int:
        """Remembers the calls stored in the last minutes (by any earlier collector process), so that an
        exporter retrying across a collector restart does not count them twice."""
        try:
            result = self.store.query(
                "SELECT trace_id, span_id, response_id FROM llm_spans "
                "WHERE timestamp >= now64(9) - toIntervalDay(2) AND inserted_at >= now64(3) - toIntervalMinute(15) "
                "ORDER BY inserted_at DESC LIMIT {limit:UInt64}", {"limit": limit})
        except Exception as exc:
            logger.warning("could not read recently stored calls (%s): dedup of retries starts empty", exc)
            return 0
        keys: list[str] = []
        for trace_id, span_id, response_id in result.rows:
            keys.append(RecentCalls.span_key(trace_id, span_id))
            if response_id:
                keys.append(RecentCalls.response_key(trace_id, response_id))
        with self.lock:
            self.recent.remember_keys(keys)
        return len(result.rows)

    def stats(self) -> dict[str, Any]:
        return self.stats_.snapshot()


class Loader(threading.Thread):
    """Spool -> store, in order, in batches; the only thread that writes spans to the store."""

    def __init__(self, pipeline: Pipeline, spool: Spool, batch_rows: int = 50_000, batch_seconds: float = 1.0,
                 retry_seconds: float = 0.5, max_retry_seconds: float = 5.0) -> None:
        super().__init__(name="llmcost-loader", daemon=True)
        self.pipeline = pipeline
        self.spool = spool
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.stopping = threading.Event()
        self.drain_deadline = 0.0
        self.position = spool.committed
        self.failed: BaseException | None = None
        self.collects = False
        self.collected_at = self.full_collected_at = time.monotonic()

    # The batch being built: rows, and the spool range [start, end) they came from.
    def _new_batch(self) -> None:
        self.rows: list[tuple] = []
        self.skipped: list[tuple[str, str]] = []
        self.records = 0
        self.start = self.end = self.position
        self.first_at = 0.0

    def run(self) -> None:
        # What is alive by now (modules, the price catalog, the servers) lives as long as the process: frozen out
        # of the garbage collector's view, so that the collections the per-span garbage triggers do not walk it
        # each time (a full collection of it costs tens of ms).
        gc.freeze()
        # And collected when no batch is alive: right after each insert (and once a second when idle), rather
        # than every 700 allocations (the default), when a collection walks the batch being built, row by row,
        # and again in each older generation it is promoted to (about 1 µs per span). The automatic
        # collections stay, rarely, as a backstop (a loader waiting on a down store makes no collections).
        threshold, *older = gc.get_threshold()
        self.collects = bool(threshold)  # (0: the application turned automatic collection off)
        if self.collects:
            gc.set_threshold(max(threshold, 100_000), *older)
        try:
            self._run()
        except BaseException as exc:  # never silently: the spool keeps the data for the next start
            self.failed = exc
            logger.exception("loader stopped: spooled spans stay in the spool until the next start")
        finally:
            if self.collects:
                gc.set_threshold(threshold, *older)

    def _run(self) -> None:
        if self.spool.inflight:
            start, end, skipped = self.spool.inflight
            logger.info("spool: re-sending the batch that was being inserted at the last stop [%d, %d)", start, end)
            # Exactly the rows of the first attempt, with its token: if that insert reached the table (or only
            # the table and not the rollup), the table drops the block and the rollup gets it at most once.
            self.position = start
            self._new_batch()
            replay_recent, skip = RecentCalls(), {tuple(key) for key in skipped}
            for offset, record_end, payload in self.spool.read(start, max_bytes=1 << 62, until=end):
                self._add(offset, payload, record_end, replay_recent, skip)
            self.end = end
            with self.pipeline.lock:
                self.pipeline.recent.remember_keys(replay_recent.all_keys())
            if not self._flush():
                return
        self._new_batch()
        while True:
            stopping = self.stopping.is_set()
            for offset, record_end, payload in self.spool.read(self.position):
                self._add(offset, payload, record_end)
                if len(self.rows) >= self.batch_rows:
                    if not self._flush():
                        return
            caught_up = self.position >= self.spool.synced
            if self.end > self.start and (stopping or time.monotonic() - self.first_at >= self.batch_seconds):
                if not self._flush():
                    return
                continue
            if stopping and caught_up:
                return
            timeout = self.batch_seconds if self.end == self.start else \
                max(self.first_at + self.batch_seconds - time.monotonic(), 0.001)
            if caught_up:
                if self.end == self.start:
                    self._collect_garbage(due_only=True)
                self.spool.wait(self.position, min(timeout, 0.5))

    def _add(self, offset: int, payload: bytes, record_end: int, recent: RecentCalls | None = None,
             skip: set | None = None) -> None:
        if self.end == self.start:
            self.first_at = time.monotonic()
        rows, skipped = self.pipeline.rows_for(payload, recent, skip)
        self.rows.extend(rows)
        self.skipped.extend(skipped)
        self.records += 1
        self.end = self.position = record_end

    def _flush(self) -> bool:
        """Stores the batch (retrying while the store is down) and advances the checkpoint. False if
        stopping gave up on a down store (the batch stays in the spool)."""
        if self.rows:
            token = self.spool.token(self.start, self.end)
            self.spool.begin(self.start, self.end, self.skipped)
            delay = self.retry_seconds
            while True:
                try:
                    self.pipeline.write(self.rows, token)
                    if CRASH_AFTER_INSERT_FILE and os.path.exists(CRASH_AFTER_INSERT_FILE):
                        os._exit(137)  # test hook: die between the insert and the checkpoint
                    break
                except StoreUnavailable as exc:
                    if self.stopping.is_set() and time.monotonic() >= self.drain_deadline:
                        logger.warning("stopping with the store down: %d spooled bytes kept for the next start",
                                       self.spool.backlog)
                        return False
                    logger.warning("store write failed (%s); retrying in %.1fs, spooling meanwhile", exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_retry_seconds)
        self.spool.commit(self.end, self.records)
        self._new_batch()
        self._collect_garbage()
        return True

    def _collect_garbage(self, due_only: bool = False) -> None:
        """A young collection (see run), and a full one every GC_FULL_SECONDS; with `due_only`, only if the
        last was a second ago or more."""
        if not self.collects:
            return
        now = time.monotonic()
        if due_only and now < self.collected_at + 1.0:
            return
        full = now >= self.full_collected_at + GC_FULL_SECONDS
        gc.collect(2 if full else 1)
        self.collected_at = now
        if full:
            self.full_collected_at = now

    def stop(self, drain_seconds: float = 10.0) -> None:
        """Stores what is spooled (for up to `drain_seconds` if the store is down) and stops."""
        self.drain_deadline = time.monotonic() + drain_seconds
        self.stopping.set()
        with self.spool.synced_changed:
            self.spool.synced_changed.notify_all()
        self.join(timeout=drain_seconds + 30)
