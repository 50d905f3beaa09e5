"""The loader: the one thread that writes spans to the store.

It reads the spool in order, batches rows (`batch_rows` rows or `batch_seconds` after the first one) and inserts
each batch through `Pipeline` with a deduplication token derived from its spool offsets, retrying while the store
is down. It is supervised: an unexpected error restarts it from its last checkpoint, and its progress is what
health reports.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time

from .otlp_lite import request_text
from .pipeline import DEAD_LETTERS_TABLE, DeadLetter, Pipeline, StoreUnavailable
from .recent_calls import RecentCalls
from .spool import Spool

logger = logging.getLogger("otel_llmcost.collector")

# Test hook (collector/README.md): while this file exists, the loader dies right after an insert succeeds and
# before it records so in the spool checkpoint, the worst moment for a crash.
CRASH_AFTER_INSERT_FILE = os.environ.get("OTEL_LLMCOST_FAULT_CRASH_AFTER_INSERT_FILE") or None
# Test hook (collector/README.md): while this file exists, the loader fails (an unexpected exception) on every
# spool record it reads, as a bug would.
LOADER_FAIL_FILE = os.environ.get("OTEL_LLMCOST_FAULT_LOADER_FAIL_FILE") or None
# The loader's full garbage collections, this often (its young ones follow each insert; see Loader.run).
GC_FULL_SECONDS = 60.0


class Loader(threading.Thread):
    """Spool -> store, in order, in batches; the only thread that writes spans to the store.

    Supervised: an unexpected error is logged and the loader starts again from the spool checkpoint (as after a
    restart of the collector), after a pause that doubles up to `max_retry_seconds`. `progress_at` is when it
    last stored a batch or had caught up with the spool: `stalled()` is what health and the receivers look at."""

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
        self.last_error = ""
        self.spool_failing = ""  # why the last checkpoint write failed, while it does
        self.collects = False
        self.collected_at = self.full_collected_at = time.monotonic()
        self.progress_at = time.monotonic()
        self.flushed_at = -self.batch_seconds  # when the last insert began (none yet: long enough ago)

    def stalled(self, seconds: float) -> bool:
        """Whether the loader has had work (spooled data not stored) and neither stored a batch nor caught up for
        `seconds`, other than because the store is down (which health reports on its own)."""
        return (time.monotonic() - self.progress_at > seconds and self.spool.backlog > 0
                and not self.pipeline.counters.values["store_down"])

    # The batch being built: rows, dead letters, and the spool range [start, end) they came from.
    def _new_batch(self) -> None:
        self.rows: list[tuple] = []
        self.dead: list[DeadLetter] = []
        self.skipped: list[tuple[str, str]] = []
        self.records = 0
        self.start = self.end = self.position
        self.first_at = 0.0

    def run(self) -> None:
        # What is alive by now (modules, the price catalog, the servers) lives as long as the process: frozen out
        # of the garbage collector's view, so that the collections the per-span garbage triggers do not walk it
        # each time.
        gc.freeze()
        # And collected when no batch is alive: right after each insert (and once a second when idle), rather
        # than every 700 allocations (the default), when a collection walks the batch being built, row by row,
        # and again in each older generation it is promoted to. The automatic
        # collections stay, rarely, as a backstop (a loader waiting on a down store makes no collections).
        threshold, *older = gc.get_threshold()
        self.collects = bool(threshold)  # (0: the application turned automatic collection off)
        if self.collects:
            gc.set_threshold(max(threshold, 100_000), *older)
        delay = self.retry_seconds
        try:
            while True:
                try:
                    self._run()
                    return
                except Exception as exc:  # a bug or an unforeseen failure: never a silent dead thread
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.pipeline.counters.add(loader_restarts=1)
                    logger.exception("loader failed; starting again from the spool checkpoint in %.1fs "
                                     "(spooled spans stay in the spool)", delay)
                    if self.stopping.wait(delay):
                        return
                    delay = min(delay * 2, self.max_retry_seconds)
                    self._restart()
        except BaseException as exc:  # never silently: the spool keeps the data for the next start
            self.failed = exc
            logger.exception("loader stopped: spooled spans stay in the spool until the next start")
        finally:
            if self.collects:
                gc.set_threshold(threshold, *older)

    def _restart(self) -> None:
        """As after a collector restart: read from the checkpoint again (replaying the batch in flight, if one
        was), with the memory of recent calls rebuilt from the store (the rows of the batch given up were
        remembered as stored)."""
        self.position = self.spool.committed
        with self.pipeline.lock:
            self.pipeline.recent = RecentCalls(self.pipeline.recent.capacity)
        self.pipeline.warm_up()

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
            if not self._flush(replay=True):
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
            if self.end > self.start and (stopping or time.monotonic() >= self._flush_due(caught_up)):
                if not self._flush():
                    return
                continue
            if stopping and caught_up:
                return
            timeout = self.batch_seconds if self.end == self.start else \
                max(self._flush_due(caught_up) - time.monotonic(), 0.001)
            if caught_up:
                self.progress_at = time.monotonic()
                if self.end == self.start:
                    self._collect_garbage(due_only=True)
                self.spool.wait(self.position, min(timeout, 0.5))

    def _flush_due(self, caught_up: bool) -> float:
        """When the batch being built is inserted (unless it fills first): `batch_seconds` after its first row,
        or, once the loader has caught up with the spool, `batch_seconds` after the last insert began, if that
        is sooner. Inserts stay at least `batch_seconds` apart under a light load either way (the store's
        parts); the second rule stores the tail of a backlog, or a call after a quiet spell, at once instead of
        holding it for the timer of a batch that was built behind the backlog."""
        due = self.first_at + self.batch_seconds
        return min(due, self.flushed_at + self.batch_seconds) if caught_up else due

    def _add(self, offset: int, payload: bytes, record_end: int, recent: RecentCalls | None = None,
             skip: set | None = None) -> None:
        if LOADER_FAIL_FILE and os.path.exists(LOADER_FAIL_FILE):
            raise RuntimeError(f"loader failure (fault injection: {LOADER_FAIL_FILE} exists)")
        if self.end == self.start:
            self.first_at = time.monotonic()
        try:
            rows, skipped = self.pipeline.rows_for(payload, recent, skip, dead=self.dead)
        except Exception as exc:  # a record no span can be read from: set aside whole, never a stalled loader
            logger.exception("spool record at offset %d cannot be read: set aside as a dead letter", offset)
            rows, skipped = [], []
            self.dead.append(DeadLetter("", "", f"unreadable spool record at offset {offset}: "
                                                f"{type(exc).__name__}: {exc}", request_text(payload)))
        self.rows.extend(rows)
        self.skipped.extend(skipped)
        self.records += 1
        self.end = self.position = record_end

    def _flush(self, replay: bool = False) -> bool:
        """Stores the batch (retrying while the store is down), its dead letters, and advances the checkpoint.
        False if stopping gave up on a down store or an unwritable spool (the batch stays in the spool). The
        batch is first settled against the store (`Pipeline.settle`), and what that leaves out is recorded with
        the batch's range, so that a `replay` rebuilds exactly the rows of the first attempt."""
        if self.rows or self.dead:
            self.flushed_at = time.monotonic()
            token = self.spool.token(self.start, self.end)
            settled = replay
            if replay and not self._spool_write(lambda: self.spool.begin(self.start, self.end, self.skipped)):
                return False
            delay = self.retry_seconds
            while True:
                try:
                    if not settled:
                        self.rows, left_out = self.pipeline.settle(self.rows)
                        self.skipped.extend(left_out)
                        settled = True
                        if not self._spool_write(lambda: self.spool.begin(self.start, self.end, self.skipped)):
                            return False
                    refused = self.pipeline.write_batch(self.rows, token) if self.rows else []
                    self.pipeline.write_dead_letters(self.dead + refused, token)
                    if CRASH_AFTER_INSERT_FILE and os.path.exists(CRASH_AFTER_INSERT_FILE):
                        os._exit(137)  # test hook: die between the insert and the checkpoint
                    break
                except StoreUnavailable as exc:
                    if self.stopping.is_set() and time.monotonic() >= self.drain_deadline:
                        logger.warning("stopping with the store down: %d spooled bytes kept for the next start",
                                       self.spool.backlog)
                        return False
                    logger.warning("store write failed (%s); retrying in %.1fs, spooling meanwhile", exc, delay)
                    self.progress_at = time.monotonic()  # waiting for the store (health says so), not stalled
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_retry_seconds)
            letters = self.dead + refused
            if letters:  # once per batch, after they are stored (not at each retry)
                logger.warning("set aside %d spans as dead letters (table %s), first: %s %s: %s", len(letters),
                               DEAD_LETTERS_TABLE, letters[0].trace_id, letters[0].span_id, letters[0].reason)
        if not self._spool_write(lambda: self.spool.commit(self.end, self.records)):
            return False
        self.progress_at = time.monotonic()
        self._new_batch()
        self._collect_garbage()
        return True

    def _spool_write(self, write) -> bool:
        """Runs a checkpoint write, retrying while it fails (a disk briefly full); meanwhile health says so and
        the receivers, whose appends fail too, push back. False if stopping gave up."""
        delay = self.retry_seconds
        while True:
            try:
                write()
                if self.spool_failing:
                    logger.info("spool checkpoint written again")
                    self.spool_failing = ""
                return True
            except OSError as exc:
                self.pipeline.counters.add(spool_write_errors=1)
                if not self.spool_failing:
                    logger.error("spool checkpoint write failed (%s); retrying", exc)
                self.spool_failing = str(exc)
                if self.stopping.is_set() and time.monotonic() >= self.drain_deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, self.max_retry_seconds)

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
