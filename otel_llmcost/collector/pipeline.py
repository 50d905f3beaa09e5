"""normalize -> price -> write.

`Pipeline.rows_for(request)` turns an OTLP export request into rows of `llm_spans` (LLM spans only,
each call once, calls stored lately skipped). `Loader` is the one writer: it reads the spool in order,
batches rows (`batch_rows` rows or `batch_seconds` after the first one) and inserts each batch with a
deduplication token derived from its spool offsets, retrying while the store is down.

What is not the store being down cannot stop storage: a span that cannot be read or priced, and a row the store
refuses (found by splitting the batch in halves until the refused rows are alone), go to `llm_dead_letters` with
the reason; a batch spanning more months than ClickHouse takes in one insert is inserted in parts. The loader is
supervised: an unexpected error restarts it from its last checkpoint, and its progress is what health reports.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..store import Store, StoreError
from .normalize import (TWIN_SLACK_NS, Call, CallSummary, calls_in, one_per_call, request_text, same_call, truest,
                        twin_groups)
from .pricing import Price, PriceCatalog
from .rows import COLUMNS, row
from .spool import Spool

logger = logging.getLogger("otel_llmcost.collector")

SPANS_TABLE = "llm_spans"
# Test hook (collector/README.md): while this file exists, the loader dies right after an insert succeeds and
# before it records so in the spool checkpoint, the worst moment for a crash.
CRASH_AFTER_INSERT_FILE = os.environ.get("OTEL_LLMCOST_FAULT_CRASH_AFTER_INSERT_FILE") or None
# Test hook (collector/README.md): while this file exists, the loader fails (an unexpected exception) on every
# spool record it reads, as a bug would.
LOADER_FAIL_FILE = os.environ.get("OTEL_LLMCOST_FAULT_LOADER_FAIL_FILE") or None
DEAD_LETTERS_TABLE = "llm_dead_letters"
DEAD_LETTER_COLUMNS = ("trace_id", "span_id", "reason", "record", "spool_batch")
# ClickHouse refuses an insert whose rows fall in more partitions (months of `timestamp`) than this
# (`max_partitions_per_insert_block`, a server setting): larger batches are inserted in parts.
MAX_PARTITIONS_PER_INSERT = 100
# Server error codes of a store that cannot take writes now, whatever the rows (retry, do not set rows aside):
# timeouts, memory, disk space, too many parts or queries, read-only tables, replication and network trouble,
# unknown tables or columns (a schema being changed), authentication and access.
TRANSIENT_CODES = frozenset((3, 16, 32, 47, 60, 81, 159, 164, 202, 209, 210, 225, 236, 241, 242, 243, 252, 285, 286,
                             319, 394, 425, 497, 516, 999, 1000, 1001))
_ERROR_CODE = re.compile(r"\bCode:\s*(\d+)")
# When every row of a batch is refused, one at a time, this many times in a row, the store is refusing
# everything (not these rows): retry instead of setting the batch aside.
REFUSED_ALONE_BEFORE_RETRY = 8
# Benchmark hook (bench/collector.py's A/B of the cost of `Pipeline.settle`; never set it in production): the
# batch is not settled against the store, as before store look-ups existed.
BENCH_SKIP_SETTLE = bool(os.environ.get("OTEL_LLMCOST_BENCH_SKIP_SETTLE"))
# The loader's full garbage collections, this often (its young ones follow each insert; see Loader.run).
GC_FULL_SECONDS = 60.0


class StoreUnavailable(Exception):
    """The store cannot take writes now; retry later."""


class RowsRefused(Exception):
    """The store is up but refused these rows (a value it cannot hold, ...)."""


def store_is_down(exc: BaseException) -> bool:
    """Whether an insert failed because of the store (retry the same rows) rather than because of them."""
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, (StoreError, OperationalError, OSError)):
        return True  # (StoreError: the store-down test hook; OperationalError: no connection)
    message = str(exc)
    if "partitions for single INSERT block" in message:
        return False  # (code 252 too, but caused by the rows: split, see MAX_PARTITIONS_PER_INSERT)
    match = _ERROR_CODE.search(message)
    return bool(match) and int(match.group(1)) in TRANSIENT_CODES


@dataclass
class DeadLetter:
    """A span set aside: not stored in llm_spans, kept in llm_dead_letters with the reason."""
    trace_id: str
    span_id: str
    reason: str
    record: str  # the span, row or request as JSON text (private attributes already left out)


def row_text(values: tuple) -> str:
    """A row of llm_spans as JSON text (a dead letter's record)."""
    return json.dumps(dict(zip(COLUMNS, values)), default=str, ensure_ascii=False, separators=(",", ":"))


def partition_chunks(rows: list[tuple]) -> list[list[tuple]]:
    """`rows` in parts of at most MAX_PARTITIONS_PER_INSERT months of their timestamps (nearly always one part:
    the rows of a batch are checked by their span of time, without a look at each)."""
    stamps = [r[0] for r in rows]
    # (ClickHouse's toYYYYMM: months of UTC; 96 months of 28+ days is fewer than 100 months)
    if not stamps or max(stamps) - min(stamps) < 96 * 28 * 86_400 * 10**9:
        return [rows]
    months: dict[tuple[int, int], list[tuple]] = {}
    for r in rows:
        t = time.gmtime(r[0] // 10**9)
        months.setdefault((t.tm_year, t.tm_mon), []).append(r)
    ordered = [months[m] for m in sorted(months)]
    return [[r for group in ordered[i:i + MAX_PARTITIONS_PER_INSERT] for r in group]
            for i in range(0, len(ordered), MAX_PARTITIONS_PER_INSERT)]


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


class RecentCalls:
    """Keys of the spans stored lately, so that a span re-sent soon after is left out without asking the store.
    Bounded: the newest `capacity` keys at least, twice that at most. A key is trace id + span id (48 hex
    digits). What it has forgotten, and what other collector processes stored, `Pipeline.settle` asks the
    store about."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        # Two generations: `keys` fills up to `capacity`, then becomes `older` (the one before is dropped). A
        # key is looked up in both; nothing is ever copied (trimming one dict in place cost about 1 µs per span).
        self.keys: dict[str, None] = {}
        self.older: dict[str, None] = {}

    @staticmethod
    def span_key(trace_id: str, span_id: str) -> str:
        return trace_id + span_id

    def __contains__(self, key: str) -> bool:
        return key in self.keys or key in self.older

    def take(self, items: list[tuple[Call, Any]]) -> tuple[list[tuple[Call, Any]], list[Call]]:
        """The items whose span was not stored lately, nor already met earlier in `items` (remembered from now
        on), and the calls left out."""
        kept, left_out, keys, older = [], [], self.keys, self.older
        batch: dict[str, None] = {}  # (a dict: remembered in the order met)
        for item in items:
            call = item[0]
            span_key = call.trace_id + call.span_id  # span_key(), inlined: once per span
            if span_key in keys or span_key in older or span_key in batch:
                left_out.append(call)
                continue
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


# Column positions in a row (rows.COLUMNS) of what `settle` reads.
_COL = {name: i for i, name in enumerate(COLUMNS)}
(_TS, _DURATION, _TRACE, _SPAN, _PARENT, _SCOPE, _REQUEST_MODEL, _RESPONSE_MODEL, _RESPONSE_ID, _INPUT, _OUTPUT,
 _CACHE_READ, _CACHE_WRITE, _REASONING, _STATUS, _CACHE_HIT) = (_COL[c] for c in (
    "timestamp", "duration_ms", "trace_id", "span_id", "parent_span_id", "scope_name", "request_model",
    "response_model", "response_id", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "price_status", "cache_hit_kind"))
_MAX_INT64 = (1 << 63) - 1
# Stored rows within this distance of each other are read by one range of the look-up.
_LOOKUP_GAP_NS = 60_000_000_000

# The look-up's keys are lists of hex text, each one text parameter (comma-separated): span ids are hex
# already (`bytes.hex()` made them), response ids and scopes are hex-encoded here. A list can be 50,000 keys
# long: as an array, or as text the client escapes character by character, or as a literal in the SQL, it
# would cost the client or the server's parser far more than splitting it on the server. Span ids alone (64
# random bits) select the candidates; their trace ids are compared here.
STORED_SQL = """
SELECT trace_id, span_id, parent_span_id, response_id, scope_name
FROM llm_spans
WHERE ({ranges})
  AND (span_id IN (SELECT arrayJoin(splitByChar(',', {spans:String})) AS k)
       OR span_id IN (SELECT arrayJoin(splitByChar(',', {parents:String})) AS k)
       OR parent_span_id IN (SELECT arrayJoin(splitByChar(',', {spans:String})) AS k)
       OR (lower(hex(response_id)) IN (SELECT arrayJoin(splitByChar(',', {responses:String})) AS k)
           AND lower(hex(concat(response_id, ' ', scope_name))) NOT IN (SELECT arrayJoin(splitByChar(',', {alone:String})) AS k)))
"""

TWINS_SQL = """
SELECT toUnixTimestamp64Nano(timestamp) AS ts, duration_ms, trace_id, span_id, parent_span_id, scope_name,
       if(response_model != '', response_model, request_model) AS model, response_id, cache_hit_kind,
       price_status != 'no_usage' AS has_usage, input_tokens, output_tokens, cache_read_tokens + cache_write_tokens,
       reasoning_tokens, toUInt32(toStartOfMinute(timestamp)) AS minute
FROM llm_spans
WHERE ({ranges}) AND span_id IN (SELECT arrayJoin(splitByChar(',', {keys:String})) AS k)
"""


def summary_of_row(r: tuple) -> CallSummary:
    return CallSummary(r[_TS], r[_DURATION], r[_TRACE], r[_SPAN], r[_PARENT], r[_SCOPE],
                       r[_RESPONSE_MODEL] or r[_REQUEST_MODEL], r[_RESPONSE_ID], r[_CACHE_HIT], r[_STATUS] != "no_usage",
                       r[_INPUT], r[_OUTPUT], r[_CACHE_READ] + r[_CACHE_WRITE], r[_REASONING])


class HexList:
    """Hex keys as one comma-separated query parameter, bound as they are: clickhouse-connect quotes a `str`
    parameter character by character, and binds any other value as its str(), which here can only be hex
    digits and commas (checked)."""

    def __init__(self, keys: list[str]) -> None:
        self.text = ",".join(keys)
        if self.text.strip("0123456789abcdef,"):
            raise ValueError("not hex keys")  # (never: every key is made by bytes.hex())

    def __str__(self) -> str:
        return self.text


def time_ranges(starts: list[int], before: int, after: int) -> str:
    """A condition on `timestamp` for the union of the windows [start - before, start + after] (ns) of the
    sorted `starts`, as few ranges as the gaps allow (numbers the collector computed, never span text)."""
    merged = [[starts[0] - before, starts[0] + after]]
    for start in starts:
        if start - before <= merged[-1][1] + _LOOKUP_GAP_NS:
            merged[-1][1] = start + after
        else:
            merged.append([start - before, start + after])
    # (clamped to Int64, the argument fromUnixTimestamp64Nano takes: a span may last until its end of time)
    return " OR ".join(f"timestamp BETWEEN fromUnixTimestamp64Nano({max(lo, 0)}) "
                       f"AND fromUnixTimestamp64Nano({min(hi, _MAX_INT64)})" for lo, hi in merged)


class Pipeline:
    def __init__(self, store: Store, catalog: PriceCatalog | None = None, stats: Stats | None = None,
                 recent_calls: int | None = None) -> None:
        self.store = store
        self.catalog = catalog or PriceCatalog()
        # (OTEL_LLMCOST_RECENT_CALLS: for tests that need a memory they can exceed)
        self.recent = RecentCalls(recent_calls or int(os.environ.get("OTEL_LLMCOST_RECENT_CALLS") or 200_000))
        self.stats_ = stats or Stats()
        self.lock = threading.Lock()  # one writer: dedup check, insert and remember are one step

    def price(self, call: Call) -> Price:
        return self.catalog.price(call.provider, call.model, call.timestamp_ns, call.usage, call.service_tier)

    def rows_for(self, request: ExportTraceServiceRequest | bytes, recent: RecentCalls | None = None,
                 skip: set[tuple[str, str]] | None = None,
                 dead: list[DeadLetter] | None = None) -> tuple[list[tuple], list[tuple[str, str]]]:
        """Rows of the LLM calls in `request` (a message or its protobuf bytes) not stored lately, and the
        (trace_id, span_id) of the calls left out as already stored. The rows' calls are remembered as stored: the
        caller must store them. `recent`/`skip`: to rebuild a batch exactly as it was first built (a replay),
        dedup against an empty `recent` and leave out exactly the calls left out then. `dead`: spans that cannot
        be stored are appended to it (else they are dropped, logged)."""
        set_aside: list = []
        spans = list(calls_in(request, set_aside))
        calls = one_per_call(spans)
        items = []
        priced = unpriced = no_usage = 0
        price = self.price
        for call in calls:
            try:
                p = price(call)
                items.append((call, row(call, p)))
            except Exception as exc:  # a span no price or row can be made of: set aside, never the batch
                set_aside.append((call.trace_id, call.span_id, f"{type(exc).__name__}: {exc}", repr(call)))
                continue
            if not call.has_usage:
                no_usage += 1
            elif p.status == "priced":
                priced += 1
            else:
                unpriced += 1
        if set_aside:
            letters = [DeadLetter(*entry) for entry in set_aside]
            if dead is not None:
                dead.extend(letters)
            else:
                logger.warning("dropped %d spans that cannot be stored: %s", len(letters), letters[0].reason)
        if not items:
            if spans:
                self.stats_.add(llm_spans=len(spans))
            return [], []
        readable = len(items)
        if skip:
            items = [item for item in items if (item[0].trace_id, item[0].span_id) not in skip]
        recent = recent if recent is not None else self.recent
        with self.lock:
            fresh, left_out = recent.take(items)
        skipped = [(call.trace_id, call.span_id) for call in left_out]
        # (a second span of a call counts as a duplicate)
        self.stats_.add(llm_spans=len(spans), spans_priced=priced, spans_unpriced=unpriced, spans_no_usage=no_usage,
                        spans_duplicate=len(spans) - len(calls) + readable - len(fresh))
        return [r for _, r in fresh], skipped

    def settle(self, rows: list[tuple]) -> tuple[list[tuple], list[tuple[str, str]]]:
        """A batch about to be inserted, against itself and the store (whatever collector process stored what):
        its rows less the spans already stored and the spans of calls that a truer span describes, and the
        (trace_id, span_id) of the rows left out. A stored span that a row of the batch describes better is
        replaced: the rollups' minutes of it are rebuilt without it, then it is deleted, before the batch is
        inserted (a crash in between leaves the stored span there, and the next attempt settles again)."""
        if not rows or BENCH_SKIP_SETTLE:
            return rows, []
        dropped: set[int] = set()
        span_ids = {r[_SPAN] for r in rows}
        scopes: dict[str, str] = {}
        shared = False  # a response id named by two instrumentations, or a span nested in another of the batch
        for r in rows:
            rid = r[_RESPONSE_ID]
            if (rid and scopes.setdefault(rid, r[_SCOPE]) != r[_SCOPE]) or (r[_PARENT] and r[_PARENT] in span_ids):
                shared = True
                break
        if shared:
            summaries = [summary_of_row(r) for r in rows]
            for group in twin_groups(summaries):
                keep = truest(summaries, group)
                dropped.update(i for i in group if i != keep)
        live = [i for i in range(len(rows)) if i not in dropped] if dropped else range(len(rows))
        stored = self._stored_near(rows, live)
        replaced: dict[str, int] = {}  # key of a stored span to delete -> its minute
        if stored:
            by_key: dict[str, int] = {}
            by_parent: dict[str, list[int]] = {}
            by_response: dict[str, list[int]] = {}
            for i in live:
                r = rows[i]
                by_key[r[_TRACE] + r[_SPAN]] = i
                if r[_PARENT]:
                    by_parent.setdefault(r[_TRACE] + r[_PARENT], []).append(i)
                if r[_RESPONSE_ID]:
                    by_response.setdefault(r[_RESPONSE_ID], []).append(i)
            twins: dict[int, list[tuple[CallSummary, int]]] = {}
            for candidate, minute in stored:
                key = candidate.trace_id + candidate.span_id
                if key in by_key:
                    dropped.add(by_key[key])  # the same span, stored already
                    continue
                near = {*by_parent.get(key, ()), *by_response.get(candidate.response_id, ())}  # its children, ids
                child_of = by_key.get(candidate.trace_id + candidate.parent_span_id)  # its parent
                if child_of is not None:
                    near.add(child_of)
                for i in near:
                    if same_call(summary_of_row(rows[i]), candidate):
                        twins.setdefault(i, []).append((candidate, minute))
            for i, found in twins.items():
                if i in dropped:
                    continue
                group = [summary_of_row(rows[i])] + [c for c, _ in found]
                keep = truest(group, list(range(len(group))))
                if keep != 0:
                    dropped.add(i)
                for n, (candidate, minute) in enumerate(found, 1):
                    if n != keep:
                        replaced[candidate.trace_id + candidate.span_id] = minute
        if replaced:
            self._replace(replaced)
        if not dropped:
            return rows, []
        kept = [r for i, r in enumerate(rows) if i not in dropped]
        left_out = [(rows[i][_TRACE], rows[i][_SPAN]) for i in sorted(dropped)]
        self.stats_.add(spans_duplicate=len(left_out))
        return kept, left_out

    def _stored_near(self, rows: list[tuple], live) -> list[tuple[CallSummary, int]]:
        """Stored spans that are rows of the batch, or may describe the same calls (nested in one trace with
        one, or naming the same response from another instrumentation), with the minute of each: one query,
        reading only the rows stored around the batch's span times (migration 070's projection). The keys travel
        as one text parameter each (a long array literal would cost the server far more to parse)."""
        batch = rows if isinstance(live, range) else [rows[i] for i in live]
        if not batch:
            return []
        # (comprehensions rather than one loop: this runs over every row of every batch)
        spans = [r[_SPAN] for r in batch]
        parents = [r[_PARENT] for r in batch if r[_PARENT]]
        traces = {r[_TRACE] for r in batch}
        longest = int(max(r[_DURATION] for r in batch) * 1e6)
        ranges = time_ranges(sorted(r[_TS] for r in batch), TWIN_SLACK_NS, longest + TWIN_SLACK_NS)
        scopes: dict[str, set[str]] = {}
        for rid, scope in {(r[_RESPONSE_ID], r[_SCOPE]) for r in batch if r[_RESPONSE_ID]}:
            scopes.setdefault(rid, set()).add(scope)
        # A response named in the batch by one instrumentation only: its stored spans from that same one are
        # other calls (or the same spans, found by their keys), so they are not read.
        alone = [rid + " " + next(iter(named)) for rid, named in scopes.items() if len(named) == 1]
        try:
            found = self.store.query(STORED_SQL.replace("{ranges}", ranges), {
                "spans": HexList(spans), "parents": HexList(parents),
                "responses": HexList([rid.encode().hex() for rid in scopes]),
                "alone": HexList([key.encode().hex() for key in alone])}).rows
            # (a span id met in another trace is another span, unless the response id links them)
            found = [f for f in found if f[0] in traces or f[3] in scopes]
            if not found:
                return []
            keys = {r[_TRACE] + r[_SPAN] for r in batch}
            if all(trace + span in keys for trace, span, *_ in found):
                return [(CallSummary(0, 0.0, trace, span, parent, scope, "", rid, "", False, 0, 0, 0, 0), 0)
                        for trace, span, parent, rid, scope in found]
            wanted = {(trace, span) for trace, span, *_ in found}
            detail = self.store.query(TWINS_SQL.replace("{ranges}", ranges),
                                      {"keys": HexList(sorted({span for _, span in wanted}))}).rows
            detail = [r for r in detail if (r[2], r[3]) in wanted]
        except Exception as exc:
            self.stats_.add(insert_errors=1)
            self.stats_.set(store_down=True)
            raise StoreUnavailable(str(exc).strip()) from exc
        return [(CallSummary(*r[:14]), r[14]) for r in detail]

    def _replace(self, replaced: dict[str, int]) -> None:
        """Removes stored spans that a truer span of the same call replaces: their rollup minutes rebuilt
        without them first, then the rows deleted (both idempotent: a crash in between is repaired by the
        next attempt, which finds them stored still)."""
        from ..reprice import mutated, rebuild_rollups

        keys = list(replaced)
        try:
            for minute in sorted(set(replaced.values())):
                rebuild_rollups(self.store, minute, minute + 60, excluded=keys)
            lo, hi = min(replaced.values()), max(replaced.values()) + 60
            self.store.query(
                f"DELETE FROM {mutated(self.store, 'llm_spans')} "
                "WHERE timestamp >= toDateTime64({lo:UInt32}, 9, 'UTC') AND timestamp < toDateTime64({hi:UInt32}, 9, 'UTC') "
                "AND has({keys:Array(String)}, concat(trace_id, span_id))",
                {"lo": lo, "hi": hi, "keys": keys})
        except Exception as exc:
            self.stats_.add(insert_errors=1)
            self.stats_.set(store_down=True)
            raise StoreUnavailable(str(exc).strip()) from exc
        logger.info("replaced %d stored span(s) by a truer span of the same call", len(keys))

    def write(self, rows: list[tuple], dedup_token: str | None = None) -> None:
        """Inserts rows: StoreUnavailable if the store cannot take them now, RowsRefused if it refused them."""
        started = time.perf_counter()
        try:
            # distinct_keys: `rows_for` lets each (trace_id, span_id) into a batch once.
            self.store.insert(SPANS_TABLE, rows, COLUMNS, dedup_token=dedup_token, distinct_keys=True)
        except Exception as exc:
            if store_is_down(exc):
                self.stats_.add(insert_errors=1)
                self.stats_.set(store_down=True)
                raise StoreUnavailable(str(exc).strip()) from exc
            self.stats_.add(inserts_refused=1)
            raise RowsRefused(f"{type(exc).__name__}: {str(exc).strip()}"[:2000]) from exc
        self.stats_.insert_latency((time.perf_counter() - started) * 1000)
        self.stats_.add(insert_batches=1, spans_stored=len(rows))
        self.stats_.set(store_down=False)

    def write_batch(self, rows: list[tuple], dedup_token: str | None = None) -> list[DeadLetter]:
        """Inserts rows (in parts of at most MAX_PARTITIONS_PER_INSERT months); the rows the store refuses are
        found by halving the refused inserts and returned as dead letters, the rest are stored. Each part and half
        has a token derived from `dedup_token`, the same when the batch is replayed. StoreUnavailable if the
        store cannot take writes now (nothing is set aside then)."""
        dead: list[DeadLetter] = []
        chunks = partition_chunks(rows)
        state = {"stored": 0, "refused_alone": 0}
        # The client logs each value it cannot serialize, with a traceback: once per halving step. The refusal is
        # logged once, with the dead letters (Loader._flush).
        client_log = logging.getLogger("clickhouse_connect")
        level = client_log.level
        try:
            for i, chunk in enumerate(chunks):
                token = dedup_token if len(chunks) == 1 or dedup_token is None else f"{dedup_token}:p{i}"
                self._write_halving(chunk, token, dead, state, client_log)
        finally:
            client_log.setLevel(level)
        return dead

    def _write_halving(self, rows: list[tuple], token: str | None, dead: list[DeadLetter], state: dict,
                       client_log: logging.Logger) -> None:
        """Inserts rows; if refused, each half on its own; a row refused alone is a dead letter."""
        try:
            self.write(rows, token)
            state["stored"] += len(rows)
            return
        except RowsRefused as exc:
            refused = exc
        client_log.setLevel(logging.CRITICAL)
        if len(rows) > 1:
            middle = len(rows) // 2
            self._write_halving(rows[:middle], token and token + ":a", dead, state, client_log)
            self._write_halving(rows[middle:], token and token + ":b", dead, state, client_log)
            return
        state["refused_alone"] += 1
        if not state["stored"] and state["refused_alone"] >= REFUSED_ALONE_BEFORE_RETRY:
            self.stats_.set(store_down=True)
            raise StoreUnavailable(f"the store refuses every row, one at a time: {refused}") from refused
        values = rows[0]
        dead.append(DeadLetter(values[2], values[3], f"refused by the store: {refused}", row_text(values)))

    def write_dead_letters(self, letters: list[DeadLetter], dedup_token: str | None = None) -> None:
        """Stores dead letters (StoreUnavailable if it cannot: their batch is then retried as a whole)."""
        if not letters:
            return
        rows = [(d.trace_id, d.span_id, d.reason, d.record, dedup_token or "") for d in letters]
        try:
            self.store.insert(DEAD_LETTERS_TABLE, rows, DEAD_LETTER_COLUMNS,
                              dedup_token=dedup_token and dedup_token + ":dead")
        except Exception as exc:
            self.stats_.add(insert_errors=1)
            self.stats_.set(store_down=True)
            raise StoreUnavailable(f"cannot store dead letters: {exc}") from exc
        self.stats_.add(spans_dead_lettered=len(letters))

    def accept(self, request: ExportTraceServiceRequest) -> Outcome:
        """Synchronous path (no spool): normalize, price and insert one request now."""
        dead: list[DeadLetter] = []
        rows, _ = self.rows_for(request, dead=dead)
        if rows:
            dead += self.write_batch(rows)
        self.write_dead_letters(dead)
        stored = len(rows) - sum(1 for d in dead if d.reason.startswith("refused by the store"))
        return Outcome(received=len(rows), stored=stored)

    def warm_up(self, limit: int = 200_000) -> int:
        """Remembers the spans stored in the last minutes (by any earlier collector process), so that an
        exporter retrying across a collector restart is answered from memory (`settle` would find them too)."""
        try:
            result = self.store.query(
                "SELECT trace_id, span_id FROM llm_spans "
                "WHERE timestamp >= now64(9) - toIntervalDay(2) AND inserted_at >= now64(3) - toIntervalMinute(15) "
                "ORDER BY inserted_at DESC LIMIT {limit:UInt64}", {"limit": limit})
        except Exception as exc:
            logger.warning("could not read recently stored calls (%s): dedup of retries starts empty", exc)
            return 0
        keys = [RecentCalls.span_key(trace_id, span_id) for trace_id, span_id in result.rows]
        with self.lock:
            self.recent.remember_keys(keys)
        return len(result.rows)

    def stats(self) -> dict[str, Any]:
        return self.stats_.snapshot()


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

    def stalled(self, seconds: float) -> bool:
        """Whether the loader has had work (spooled data not stored) and neither stored a batch nor caught up for
        `seconds`, other than because the store is down (which health reports on its own)."""
        return (time.monotonic() - self.progress_at > seconds and self.spool.backlog > 0
                and not self.pipeline.stats_.values["store_down"])

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
        delay = self.retry_seconds
        try:
            while True:
                try:
                    self._run()
                    return
                except Exception as exc:  # a bug or an unforeseen failure: never a silent dead thread
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.pipeline.stats_.add(loader_restarts=1)
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
            if self.end > self.start and (stopping or time.monotonic() - self.first_at >= self.batch_seconds):
                if not self._flush():
                    return
                continue
            if stopping and caught_up:
                return
            timeout = self.batch_seconds if self.end == self.start else \
                max(self.first_at + self.batch_seconds - time.monotonic(), 0.001)
            if caught_up:
                self.progress_at = time.monotonic()
                if self.end == self.start:
                    self._collect_garbage(due_only=True)
                self.spool.wait(self.position, min(timeout, 0.5))

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
                self.pipeline.stats_.add(spool_write_errors=1)
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
