"""`otel-llmcost reprice`: recompute the stored costs of a time range after a price change (a new genai-prices,
a new or edited price file), idempotently.

    otel-llmcost reprice --since 2026-11-01 [--until 2026-11-15] [--model 'gpt-4o*'] [--prices prices.yaml] [--store URL]

How. The rows of the range are read from `llm_spans FINAL` and priced again, exactly as the collector prices
them (`PriceCatalog` over the tokens, the service tier and the span time; the price file from `--prices` or
`OTEL_LLMCOST_PRICES`). A row whose cost columns come out unchanged is left alone, so a second run with the
same prices changes nothing. Changed rows are updated in place, server-side: `ALTER TABLE llm_spans UPDATE`
of their price columns (the new values travel as query parameters), waited for, so a span stays one row and
plain SQL without FINAL sums it once (a re-inserted newer version would be a second row until a merge).
Everything goes through `store.query`, so it works on a ClickHouse server and on an embedded store; while a
collector holds the embedded store, the collector runs it on its own store (asked by the CLI through
`/llmcost/v1/reprice`: the collector's query endpoint is read-only).

The per-minute rollups (every materialized view that reads `llm_spans` into a table with a `minute` column:
`llm_rollup_1m`, `llm_user_rollup_1m`, ...) do not see an update, so the minutes of the range are
rebuilt: their rollup rows are deleted (`ALTER TABLE ... DELETE`, synchronously) and re-aggregated from
`llm_spans FINAL` with the view's own SELECT (all of the range's minutes, so that a run that died half-way is
repaired by the next one). Rebuilding a minute while the collector still receives spans for
it could count those spans twice, so `--until` defaults to 5 minutes ago and may not be later than that.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any, TextIO

from .collector import normalize
from .collector.pricing import Price, PriceCatalog
from .collector.rows import COLUMNS, row as make_row
from .store import RemoteStore, open_store, quote_identifier

SETTLE = timedelta(minutes=5)  # minutes younger than this may still receive spans: not rebuilt
PAGE = 2000
UPDATE_ROWS = 50_000  # rows updated by one mutation

# Columns reprice rewrites (the rest of the row is copied as stored).
PRICE_COLUMNS = ("cost_usd", "input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd",
                 "cache_savings_usd", "app_cache_savings_usd", "request_fees_usd")
TEXT_COLUMNS = ("price_status", "price_note", "price_source", "priced_model")
# Beginnings of the notes normalize.py makes about a span (not about its price): kept as they are.
SPAN_NOTES = ("input tokens ", "odd token count", "non-numeric token count")

READ_SQL = """
SELECT trace_id, span_id, toUnixTimestamp64Nano(timestamp) AS ts, provider, request_model, response_model,
       input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cache_hit_kind,
       input_audio_tokens, output_audio_tokens, input_image_tokens, output_image_tokens,
       attributes, {price_columns}, {text_columns}
FROM llm_spans FINAL
WHERE timestamp >= fromUnixTimestamp64Nano({lo:Int64}) AND timestamp < fromUnixTimestamp64Nano({hi:Int64})
  AND (toUnixTimestamp64Nano(timestamp), trace_id, span_id) > ({after_ts:Int64}, {after_trace:String}, {after_span:String})
  {model_filter}
ORDER BY toUnixTimestamp64Nano(timestamp), trace_id, span_id
LIMIT {page:UInt32}
"""

COUNT_SQL = """
SELECT count() AS n FROM llm_spans FINAL
WHERE timestamp >= fromUnixTimestamp64Nano({lo:Int64}) AND timestamp < fromUnixTimestamp64Nano({hi:Int64}) {model_filter}
"""

MODEL_FILTER = ("AND (match(response_model, {model_re:String}) OR "
                "(response_model = '' AND match(request_model, {model_re:String})))")


def nano_string(value: Decimal | None) -> str:
    """A cost as the store keeps it (Decimal(18, 9), truncated as clickhouse-connect writes it), as text; ''
    for NULL."""
    if value is None:
        return ""
    with localcontext() as ctx:
        ctx.prec = 18
        nanos = int(Decimal(str(value)) * 1_000_000_000)
    return format(Decimal(nanos).scaleb(-9), "f")


def new_values(record: dict, catalog: PriceCatalog) -> dict[str, Any] | None:
    """The price and text columns of a stored row priced again; None for a row without usage."""
    if record["price_status"] == "no_usage":
        return None
    attributes = record["attributes"] or {}
    usage = normalize.stored_usage(record)
    model = record["response_model"] or record["request_model"]
    tier = normalize.stored_service_tier(attributes)
    price: Price = catalog.price(record["provider"], model, record["ts"], usage, tier or None)
    call = normalize.Call(
        timestamp_ns=record["ts"], duration_ms=0.0, trace_id="", span_id="", parent_span_id="", service_name="",
        span_name="", scope_name="", provider=record["provider"], operation="", request_model="",
        response_model="", response_id="", status_code="", error_type="", usage=usage, has_usage=True,
        service_tier=tier, project="", feature="", user_id="", attributes=attributes, resource_attributes={},
        cache_hit_kind=record["cache_hit_kind"])
    values = dict(zip(COLUMNS, make_row(call, price)))
    # Notes the collector made about the span itself (odd token counts, cache counted in) are kept.
    span_notes = [part for part in record["price_note"].split("; ") if part.startswith(SPAN_NOTES)]
    if span_notes:
        values["price_note"] = "; ".join(filter(None, [values["price_note"], *span_notes]))
    return {key: values[key] for key in PRICE_COLUMNS + TEXT_COLUMNS}


def changed(record: dict, new: dict[str, Any]) -> bool:
    for key in PRICE_COLUMNS:
        if nano_string(record[key]) != nano_string(new[key]):
            return True
    return any(record[key] != new[key] for key in TEXT_COLUMNS)


class Progress:
    """A plain-text progress bar on stderr (one line, redrawn; a new line per update when not a terminal)."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.out, self.width = total, out, width
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.last_percent = -1

    def update(self, done: int, changed_rows: int) -> None:
        percent = 100 if not self.total else min(100, done * 100 // self.total)
        if not self.tty and percent // 10 == self.last_percent // 10 and done < self.total:
            return
        self.last_percent = percent
        filled = self.width * percent // 100
        line = f"reprice [{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}% {done}/{self.total} rows, " \
               f"{changed_rows} changed"
        self.out.write(("\r" + line) if self.tty else (line + "\n"))
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def mutated(store: Any, table: str) -> str:
    """The table an ALTER ... UPDATE/DELETE or a DELETE names: on a cluster, the shards' local tables (a
    Distributed table takes no mutation)."""
    cluster = getattr(store, "cluster", None)
    if not cluster:
        return table
    local = table if table.endswith("_local") else f"{table}_local"  # (a view's target is local already)
    return f"{local} ON CLUSTER {quote_identifier(cluster)}"


def _write_back(store: Any, rows: list[tuple[dict, dict]], lo: int, hi: int) -> None:
    """Updates the stored rows' price columns in place (one mutation, waited for): each span stays one row, so
    plain SQL, FINAL and the rollups rebuilt from the rows agree as soon as this returns."""
    params: dict[str, Any] = {"lo": lo, "hi": hi, "k": [r["trace_id"] + r["span_id"] for r, _ in rows]}
    at = "indexOf({k:Array(String)}, concat(trace_id, span_id))"
    assignments = []
    for i, key in enumerate(PRICE_COLUMNS):
        params[f"p{i}"] = [nano_string(n[key]) for _, n in rows]
        value = f"arrayElement({{p{i}:Array(String)}}, {at})"
        assignments.append(f"{key} = if({value} = '', NULL, toDecimal64({value}, 9))")
    for i, key in enumerate(TEXT_COLUMNS):
        params[f"x{i}"] = [str(n[key]) for _, n in rows]
        assignments.append(f"{key} = arrayElement({{x{i}:Array(String)}}, {at})")
    store.query(
        f"ALTER TABLE {mutated(store, 'llm_spans')} UPDATE {', '.join(assignments)} "
        "WHERE timestamp >= fromUnixTimestamp64Nano({lo:Int64}) AND timestamp < fromUnixTimestamp64Nano({hi:Int64}) "
        f"AND {at} > 0 SETTINGS mutations_sync = 2", params)


def rollup_views(store: Any) -> list[tuple[str, str, str]]:
    """(view, target table, SELECT) of every materialized view that reads llm_spans into a per-minute table."""
    result = store.query(
        "SELECT name, create_table_query, as_select FROM system.tables "
        "WHERE database = currentDatabase() AND engine = 'MaterializedView'")
    views = []
    for name, create, select in result.rows:
        target = re.search(r"\bTO\s+([`\"\w.]+)", create)
        if not target or not re.search(r"\bFROM\s+(?:[`\"\w]+\.)?`?llm_spans`?(?=\s|$)", select):
            continue
        table = target.group(1).replace("`", "").split(".")[-1]
        columns = store.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
            {"t": table})
        if "minute" not in {r[0] for r in columns.rows}:
            print(f"reprice: warning: {name} -> {table} has no minute column; not rebuilt", file=sys.stderr)
            continue
        views.append((name, table, select))
    return views


def rebuild_rollups(store: Any, lo_minute: int, hi_minute: int, excluded: list[str] | None = None) -> None:
    """Deletes the rollup rows of the minutes [lo_minute, hi_minute) (unix seconds) and re-aggregates them from
    llm_spans FINAL with each view's own SELECT; without the spans `excluded` (trace id + span id), which the
    collector is about to delete."""
    params: dict[str, Any] = {"lo": lo_minute, "hi": hi_minute, "excluded": excluded or []}
    for _, table, select in rollup_views(store):
        store.query(f"ALTER TABLE {mutated(store, table)} DELETE WHERE minute >= toDateTime({{lo:UInt32}}, 'UTC') "
                    "AND minute < toDateTime({hi:UInt32}, 'UTC') SETTINGS mutations_sync = 2", params)
        source = ("(SELECT * FROM llm_spans FINAL WHERE timestamp >= toDateTime64({lo:UInt32}, 9, 'UTC') "
                  "AND timestamp < toDateTime64({hi:UInt32}, 9, 'UTC') "
                  "AND NOT has({excluded:Array(String)}, concat(trace_id, span_id))) AS llm_spans")
        rebuilt = re.sub(r"\bFROM\s+(?:[`\"\w]+\.)?`?llm_spans`?(?=\s|$)", lambda _: "FROM " + source, select,
                         count=1)
        store.query(f"INSERT INTO {table} SETTINGS insert_deduplicate = 0 {rebuilt}", params)


def reprice(store: Any, catalog: PriceCatalog, since: datetime, until: datetime, model: str | None = None,
            progress_out: TextIO | None = sys.stderr) -> dict[str, int]:
    """Prices the rows of [since, until) again; returns counts (rows, changed, minutes rebuilt)."""
    lo = int(since.timestamp()) * 10**9 + since.microsecond * 1000
    hi = int(until.timestamp()) * 10**9 + until.microsecond * 1000
    model_filter = ""
    params: dict[str, Any] = {"lo": lo, "hi": hi}
    if model:
        import fnmatch

        model_filter = MODEL_FILTER
        params["model_re"] = "(?i)" + fnmatch.translate(model).replace("\\Z", "$")
    total = store.query(COUNT_SQL.replace("{model_filter}", model_filter), params).rows[0][0]
    progress = Progress(total, progress_out) if progress_out is not None else None
    sql = READ_SQL.replace("{price_columns}", ", ".join(PRICE_COLUMNS)).replace(
        "{text_columns}", ", ".join(TEXT_COLUMNS)).replace("{model_filter}", model_filter)
    after = (-1, "", "")
    done = changed_rows = 0
    minutes: set[int] = set()
    pending: list[tuple[dict, dict]] = []  # updates not written yet: a mutation rewrites parts, so few and large
    while True:
        page = store.query(sql, {**params, "after_ts": after[0], "after_trace": after[1], "after_span": after[2],
                                 "page": PAGE})
        if not page.rows:
            break
        names = page.column_names
        updates = []
        for values in page.rows:
            record = dict(zip(names, values))
            new = new_values(record, catalog)
            if new is not None and changed(record, new):
                updates.append((record, new))
                minutes.add(record["ts"] // 10**9 // 60 * 60)
        pending += updates
        changed_rows += len(updates)
        if len(pending) >= UPDATE_ROWS:
            _write_back(store, pending, lo, hi)
            pending = []
        done += len(page.rows)
        last = dict(zip(names, page.rows[-1]))
        after = (last["ts"], last["trace_id"], last["span_id"])
        if progress:
            progress.update(done, changed_rows)
    if pending:
        _write_back(store, pending, lo, hi)
    # Every minute of the range, not only those that changed: a run that died between a write-back and this
    # rebuild leaves no trace in the rows, so the next run must still repair the rollup.
    rebuild_rollups(store, lo // 10**9 // 60 * 60, -(-hi // (60 * 10**9)) * 60)
    if progress:
        if progress.last_percent < 100:
            progress.update(total, changed_rows)
        progress.close()
    return {"rows": done, "changed": changed_rows, "minutes_changed": len(minutes)}


# -- the command ---------------------------------------------------------------------------------------------


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or datetime (UTC unless it says otherwise), or a duration back from now (`24h`, `7d`)."""
    now = now or datetime.now(timezone.utc)
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return now - timedelta(seconds=seconds)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use 2026-11-01, 2026-11-01T12:00 or 7d)") from exc
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def cmd_reprice(args: argparse.Namespace) -> int:
    now = datetime.now(timezone.utc)
    try:
        since = parse_time(args.reprice_since, now)
        until = parse_time(args.until, now) if args.until else now - SETTLE
    except argparse.ArgumentTypeError as exc:
        print(f"otel-llmcost reprice: {exc}", file=sys.stderr)
        return 2
    if until > now - SETTLE and not args.force_recent:
        print(f"otel-llmcost reprice: --until may not be later than {SETTLE.seconds // 60} minutes ago (the "
              "collector may still be writing those minutes); pass --force-recent if it is stopped", file=sys.stderr)
        return 2
    if since >= until:
        print("otel-llmcost reprice: --since must be before --until", file=sys.stderr)
        return 2
    catalog = PriceCatalog(args.prices) if args.prices else PriceCatalog()
    if not args.until:
        print(f"otel-llmcost reprice: note: the last {SETTLE.seconds // 60} minutes are left out (the collector may "
              "still be writing them); run it again later, or give --until, to include them", file=sys.stderr)
    store = open_store(args.store)
    try:
        print(f"repricing {since.isoformat()} .. {until.isoformat()} with {catalog.describe()}"
              + (f", model {args.model}" if args.model else "") + f" ({store.url})", file=sys.stderr)
        if isinstance(store, RemoteStore):  # the collector holds the store and reprices it itself
            counts = store.reprice(since.isoformat(), until.isoformat(), args.model, args.prices)
            progress = Progress(counts["rows"])
            progress.update(counts["rows"], counts["changed"])  # (its progress is the collector's: the end only)
            progress.close()
        else:
            counts = reprice(store, catalog, since, until, args.model)
    finally:
        store.close()
    print(f"repriced {counts['rows']} rows: {counts['changed']} changed, "
          f"{counts['minutes_changed']} minutes changed; rollups rebuilt for the range")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("reprice", help="recompute stored costs after a price change (idempotent)")
    p.add_argument("--since", dest="reprice_since", required=True,
                   help="start of the range: 2026-11-01, 2026-11-01T12:00 (UTC) or a duration back, e.g. 7d")
    p.add_argument("--until", help="end of the range (exclusive; default and latest: 5 minutes ago)")
    p.add_argument("--model", help="only these models (a name or a glob such as 'gpt-4o*')")
    p.add_argument("--prices", default=os.environ.get("OTEL_LLMCOST_PRICES"),
                   help="the price file (default $OTEL_LLMCOST_PRICES)")
    p.add_argument("--force-recent", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help="store URL (default $OTEL_LLMCOST_STORE)")
    p.set_defaults(func=cmd_reprice)
