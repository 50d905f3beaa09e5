"""The write step: normalize -> price -> rows, settled against the store, inserted.

`Pipeline.rows_for(request)` turns an OTLP export request into rows of `llm_spans` (LLM spans only, each call once,
calls stored lately skipped); `Pipeline.settle` checks a batch against what the store holds; `write_batch` inserts
it. `loader.Loader` drives these from the spool.

What is not the store being down cannot stop storage: a span that cannot be read or priced, and a row the store
refuses (found by splitting the batch in halves until the refused rows are alone), go to `llm_dead_letters` with
the reason; a batch spanning more months than ClickHouse takes in one insert is inserted in parts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..store import Store, StoreError
from .normalize import Call
from .otlp_lite import calls_in
from .price_records import Price
from .pricing import PriceCatalog
from .recent_calls import RecentCalls
from .rows import COLUMNS, Row, row
from .stats import Stats
from .twins import TWIN_SLACK_NS, CallSummary, dropped_twins, one_per_call, same_call, truest

logger = logging.getLogger("otel_llmcost.collector")

SPANS_TABLE = "llm_spans"
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


# Stored rows within this distance of each other are read by one range of the look-up.
_LOOKUP_GAP_NS = 60_000_000_000
_MAX_NS = (1 << 63) - 1

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


def summary_of_row(r: Row) -> CallSummary:
    return CallSummary(r.timestamp, r.duration_ms, r.trace_id, r.span_id, r.parent_span_id, r.scope_name,
                       r.response_model or r.request_model, r.response_id, r.cache_hit_kind,
                       r.price_status != "no_usage", r.input_tokens, r.output_tokens,
                       r.cache_read_tokens + r.cache_write_tokens, r.reasoning_tokens)


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
    # (cut to the Int64 the function takes: a span's end time is not checked, and may be near 2^64)
    return " OR ".join(f"timestamp BETWEEN fromUnixTimestamp64Nano({max(lo, -_MAX_NS)}) "
                       f"AND fromUnixTimestamp64Nano({min(hi, _MAX_NS)})" for lo, hi in merged)


class Pipeline:
    def __init__(self, store: Store, catalog: PriceCatalog | None = None, stats: Stats | None = None,
                 recent_calls: int | None = None) -> None:
        self.store = store
        self.catalog = catalog or PriceCatalog()
        # (OTEL_LLMCOST_RECENT_CALLS: for tests that need a memory they can exceed)
        self.recent = RecentCalls(recent_calls or int(os.environ.get("OTEL_LLMCOST_RECENT_CALLS") or 200_000))
        self.counters = stats or Stats()
        self.lock = threading.Lock()  # one writer: dedup check, insert and remember are one step

    def price(self, call: Call) -> Price:
        return self.catalog.price(call.provider, call.model, call.timestamp_ns, call.usage, call.service_tier)

    def rows_for(self, request: ExportTraceServiceRequest | bytes, recent: RecentCalls | None = None,
                 skip: set[tuple[str, str]] | None = None,
                 dead: list[DeadLetter] | None = None) -> tuple[list[Row], list[tuple[str, str]]]:
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
                self.counters.add(llm_spans=len(spans))
            return [], []
        readable = len(items)
        if skip:
            items = [item for item in items if (item[0].trace_id, item[0].span_id) not in skip]
        recent = recent if recent is not None else self.recent
        with self.lock:
            fresh, left_out = recent.take(items)
        skipped = [(call.trace_id, call.span_id) for call in left_out]
        # (a second span of a call counts as a duplicate)
        self.counters.add(llm_spans=len(spans), spans_priced=priced, spans_unpriced=unpriced, spans_no_usage=no_usage,
                        spans_duplicate=len(spans) - len(calls) + readable - len(fresh))
        return [r for _, r in fresh], skipped

    def settle(self, rows: list[Row]) -> tuple[list[Row], list[tuple[str, str]]]:
        """A batch about to be inserted, against itself and the store (whatever collector process stored what):
        its rows less the spans already stored and the spans of calls that a truer span describes, and the
        (trace_id, span_id) of the rows left out. A stored span that a row of the batch describes better is
        replaced: the rollups' minutes of it are rebuilt without it, then it is deleted, before the batch is
        inserted (a crash in between leaves the stored span there, and the next attempt settles again)."""
        if not rows or BENCH_SKIP_SETTLE:
            return rows, []
        dropped = dropped_twins(rows, summary_of_row)
        live = [i for i in range(len(rows)) if i not in dropped] if dropped else range(len(rows))
        stored = self._stored_near(rows, live)
        replaced: dict[str, int] = {}  # key of a stored span to delete -> its minute
        if stored:
            by_key: dict[str, int] = {}
            by_parent: dict[str, list[int]] = {}
            by_response: dict[str, list[int]] = {}
            for i in live:
                r = rows[i]
                by_key[r.trace_id + r.span_id] = i
                if r.parent_span_id:
                    by_parent.setdefault(r.trace_id + r.parent_span_id, []).append(i)
                if r.response_id:
                    by_response.setdefault(r.response_id, []).append(i)
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
        left_out = [(rows[i].trace_id, rows[i].span_id) for i in sorted(dropped)]
        self.counters.add(spans_duplicate=len(left_out))
        return kept, left_out

    def _stored_near(self, rows: list[Row], live) -> list[tuple[CallSummary, int]]:
        """Stored spans that are rows of the batch, or may describe the same calls (nested in one trace with
        one, or naming the same response from another instrumentation), with the minute of each: one query,
        reading only the rows stored around the batch's span times (migration 070's projection). The keys travel
        as one text parameter each (a long array literal would cost the server far more to parse)."""
        batch = rows if isinstance(live, range) else [rows[i] for i in live]
        if not batch:
            return []
        # (comprehensions rather than one loop: this runs over every row of every batch)
        spans = [r.span_id for r in batch]
        parents = [r.parent_span_id for r in batch if r.parent_span_id]
        traces = {r.trace_id for r in batch}
        longest = int(max(r.duration_ms for r in batch) * 1e6)
        ranges = time_ranges(sorted(r.timestamp for r in batch), TWIN_SLACK_NS, longest + TWIN_SLACK_NS)
        scopes: dict[str, set[str]] = {}
        for rid, scope in {(r.response_id, r.scope_name) for r in batch if r.response_id}:
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
            keys = {r.trace_id + r.span_id for r in batch}
            if all(trace + span in keys for trace, span, *_ in found):
                return [(CallSummary(0, 0.0, trace, span, parent, scope, "", rid, "", False, 0, 0, 0, 0), 0)
                        for trace, span, parent, rid, scope in found]
            wanted = {(trace, span) for trace, span, *_ in found}
            detail = self.store.query(TWINS_SQL.replace("{ranges}", ranges),
                                      {"keys": HexList(sorted({span for _, span in wanted}))}).rows
            detail = [r for r in detail if (r[2], r[3]) in wanted]
        except Exception as exc:
            self.counters.add(insert_errors=1)
            self.counters.set(store_down=True)
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
            self.counters.add(insert_errors=1)
            self.counters.set(store_down=True)
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
                self.counters.add(insert_errors=1)
                self.counters.set(store_down=True)
                raise StoreUnavailable(str(exc).strip()) from exc
            self.counters.add(inserts_refused=1)
            raise RowsRefused(f"{type(exc).__name__}: {str(exc).strip()}"[:2000]) from exc
        self.counters.insert_latency((time.perf_counter() - started) * 1000)
        self.counters.add(insert_batches=1, spans_stored=len(rows))
        self.counters.set(store_down=False)

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
            self.counters.set(store_down=True)
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
            self.counters.add(insert_errors=1)
            self.counters.set(store_down=True)
            raise StoreUnavailable(f"cannot store dead letters: {exc}") from exc
        self.counters.add(spans_dead_lettered=len(letters))

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
