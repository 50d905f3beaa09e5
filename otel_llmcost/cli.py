"""`otel-llmcost`: collector, sql, report, sandbox."""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import os
import re
import sys
from decimal import Decimal
from typing import Any, Sequence

from .store import QueryResult, StoreError, encode_value, open_store

# Modules that add their own subcommands (each defines `register(subparsers)`).
COMMAND_MODULES: tuple[str, ...] = ("otel_llmcost.budgets", "otel_llmcost.alerts.cli", "otel_llmcost.simulate",
                                     "otel_llmcost.collector.schema", "otel_llmcost.reprice")

# From the per-minute rollup (calls are de-duplicated before they reach it): ~50x faster than raw rows. The
# minutes before the first whole hour of the range are read by the minute, the whole hours from the rollup's
# hourly projection (031): a month is a few thousand hourly rows, not millions of minute rows.
REPORT_SQL = """
SELECT
    provider,
    model,
    sum(calls) AS calls,
    sum(input_tokens) AS input_tokens,
    sum(cache_read_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost_usd,
    sum(unpriced_calls) AS unpriced_calls
FROM (
    SELECT provider, model, calls, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, cost_usd,
           unpriced_calls
    FROM llm_rollup_1m
    WHERE minute >= toStartOfMinute(now('UTC') - toIntervalSecond({seconds:UInt64}))
      AND minute < toStartOfHour(toStartOfMinute(now('UTC') - toIntervalSecond({seconds:UInt64})) + toIntervalMinute(59))
    UNION ALL
    SELECT provider, model, sum(calls), sum(input_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
           sum(output_tokens), sum(cost_usd), sum(unpriced_calls)
    FROM llm_rollup_1m
    WHERE toStartOfHour(minute) >= toStartOfHour(toStartOfMinute(now('UTC') - toIntervalSecond({seconds:UInt64})) + toIntervalMinute(59))
    GROUP BY provider, model
)
GROUP BY provider, model
HAVING calls > 0
ORDER BY cost_usd DESC, calls DESC
"""


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `24h`, `7d` -> seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d)")
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}" if value != 0 else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(encode_value(value))


def print_table(result: QueryResult, out=sys.stdout) -> None:
    header = result.column_names
    cells = [[format_value(v) for v in row] for row in result.rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    numeric = [bool(cells) and all(_looks_numeric(r[i]) for r in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    print(line(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)
    print(f"({len(cells)} row{'s' if len(cells) != 1 else ''})", file=out)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?|NULL", text))


def json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return encode_value(value)


def print_result(result: QueryResult, fmt: str, out=sys.stdout) -> None:
    if fmt == "json":
        for row in result.rows:
            print(json.dumps({k: json_value(v) for k, v in zip(result.column_names, row)}), file=out)
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(result.column_names)
        for row in result.rows:
            writer.writerow(["" if v is None else encode_value(v) for v in row])
    else:
        print_table(result, out)


def cmd_collector(args: argparse.Namespace) -> int:
    from .collector import run

    if args.prices:
        from .collector.price_overrides import PriceFileError, load_price_file

        try:
            load_price_file(args.prices)  # refuse a bad price file before listening
        except PriceFileError as exc:
            print(f"otel-llmcost: {exc}", file=sys.stderr)
            return 2
        os.environ["OTEL_LLMCOST_PRICES"] = args.prices  # read by the collector's PriceCatalog

    logging.basicConfig(level=os.environ.get("OTEL_LLMCOST_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .collector import ConfigError

    try:
        run(args.store, args.host, args.http_port, args.grpc_port, os.environ.get("OTEL_LLMCOST_AUTH_TOKEN") or None,
            cluster=args.cluster, spool_dir=args.spool_dir, spool_max_bytes=args.spool_max_bytes,
            max_request_bytes=args.max_request_bytes, tls_cert=args.tls_cert, tls_key=args.tls_key,
            forward_endpoint=args.forward_endpoint, clickhouse_port=args.clickhouse_port,
            allow_unauthenticated=args.allow_unauthenticated or None)
    except (ConfigError, OSError) as exc:
        print(f"otel-llmcost collector: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        result = store.user_query(args.query)  # read-only, one statement, time-limited (store.py)
    finally:
        store.close()
    print_result(result, args.format)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        result = store.query(REPORT_SQL, {"seconds": args.since})
    finally:
        store.close()
    print(f"LLM spend by provider and model, last {args.since_text} ({store.url})")
    if args.format != "table":
        print_result(result, args.format)
        return 0
    print_table(result)
    total = sum((row[7] for row in result.rows if row[7] is not None), Decimal(0))
    calls = sum(row[2] for row in result.rows)
    unpriced = sum(row[8] for row in result.rows)
    print(f"total: {calls} calls, ${format_value(total)}")
    if unpriced:
        print(f"warning: {unpriced} calls are unpriced (model without a price): their cost is not in the total; "
              "see: otel-llmcost sql \"SELECT request_model, price_note FROM llm_spans WHERE price_status = 'unpriced'\"")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import serve_forever

    serve_forever(args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-llmcost", description="What every LLM API call cost.")
    sub = parser.add_subparsers(dest="command", required=True)
    store_help = "store URL: chdb:///dir (embedded, default .llmcost) or clickhouse://user:pass@host:8123/db; " \
                 "default $OTEL_LLMCOST_STORE"

    p = sub.add_parser("collector", help="receive OTLP, price LLM spans, store them")
    p.add_argument("--store", help=store_help)
    p.add_argument("--host", default=os.environ.get("OTEL_LLMCOST_HOST", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--http-port", type=int, default=4318)
    p.add_argument("--grpc-port", type=int, default=4317)
    p.add_argument("--prices", default=os.environ.get("OTEL_LLMCOST_PRICES"),
                   help="price file (YAML) layered over genai-prices; default $OTEL_LLMCOST_PRICES")
    # Each defaults to its OTEL_LLMCOST_* variable (collector/README.md, "Settings").
    p.add_argument("--cluster", help="ClickHouse cluster: Replicated + Distributed tables, DDL ON CLUSTER "
                                     "(default $OTEL_LLMCOST_CLUSTER)")
    p.add_argument("--spool-dir", help="spool directory (default <store dir>/spool, or ./.llmcost-spool for a server)")
    p.add_argument("--spool-max-bytes", type=int, help="unstored data the spool may hold before 429/503 (default 1 GiB)")
    p.add_argument("--max-request-bytes", type=int, help="larger OTLP requests get 413 (default 64 MiB)")
    p.add_argument("--tls-cert", help="PEM certificate: serve both receivers over TLS ($OTEL_LLMCOST_TLS_CERT)")
    p.add_argument("--tls-key", help="PEM key of --tls-cert ($OTEL_LLMCOST_TLS_KEY)")
    p.add_argument("--forward-endpoint", help="also forward every span to this OTLP/HTTP endpoint "
                                              "($OTEL_LLMCOST_FORWARD_ENDPOINT)")
    p.add_argument("--clickhouse-port", type=int,
                   help="port of the read-only ClickHouse HTTP interface for Grafana (default 8123 with the embedded "
                        "store, off with a ClickHouse server; 0 = off; $OTEL_LLMCOST_CLICKHOUSE_PORT)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="listen beyond loopback without OTEL_LLMCOST_AUTH_TOKEN (anyone who reaches the ports may "
                        "send spans and read the store)")
    p.set_defaults(func=cmd_collector)

    p = sub.add_parser("sql", help="run a query against the store")
    p.add_argument("--store", help=store_help)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("query")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("report", help="spend by provider and model")
    p.add_argument("--store", help=store_help)
    p.add_argument("--since", default="24h", help="time range back from now (default 24h)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sandbox", help="a local fake OpenAI/Anthropic API for demos and load tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.set_defaults(func=cmd_sandbox)

    # Commands that live with their feature: each module has `register(subparsers)`.
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "since", None) is not None:
        args.since_text = args.since
        try:
            args.since = parse_duration(args.since)
        except argparse.ArgumentTypeError as exc:
            print(f"otel-llmcost: {exc}", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except StoreError as exc:
        print(f"otel-llmcost: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
