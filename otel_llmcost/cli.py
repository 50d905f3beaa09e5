"""`otel-llmcost`: collector, sql, report, sandbox.

The contract of every command (README.md, "The command line"): an error is one or two lines on stderr with a
non-zero exit code, never a traceback unless `--debug`; `--format json|csv` writes only data to stdout; a
command that reads a store never creates one. Imports of the collector extra are made inside the commands
that need them, so `--help` and the rest work in an app's environment without it."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

from .commands import existing_store, format_value, open_existing_store, print_result
from .durations import parse_duration
from .errors import EXIT_FAILURE, INSTALL_COLLECTOR, UserError, debug_requested, missing_extra, redact_url, \
    report
from .store import ENDPOINT_FILE, QueryResult, StoreError, chdb_dir, collector_alive, open_store, \
    resolve_url

# Modules that add their own subcommands (each defines `register(subparsers)`).
COMMAND_MODULES: tuple[str, ...] = ("otel_llmcost.budgets", "otel_llmcost.alerts.cli", "otel_llmcost.simulate",
                                     "otel_llmcost.collector.schema", "otel_llmcost.reprice",
                                     "otel_llmcost.levers.savings", "otel_llmcost.levers.whatif")

# From the per-minute rollup (calls are de-duplicated before they reach it): ~50x faster than raw rows. The
# minutes before the first whole hour of the range are read by the minute, the whole hours from the rollup's
# hourly projection (031): a month is a few thousand hourly rows, not millions of minute rows.
REPORT_SQL = """
SELECT provider, model, calls, input_tokens, cached_tokens, cache_write_tokens, output_tokens,
       -- unknown (NULL), not 0, when no call of the row has a known cost (all unpriced, or failed without usage)
       if(calls > unpriced_calls + failed_calls OR cost != 0, cost, NULL) AS cost_usd,
       unpriced_calls, failed_calls
FROM (
SELECT
    provider,
    model,
    sum(calls) AS calls,
    sum(input_tokens) AS input_tokens,
    sum(cache_read_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost,
    sum(unpriced_calls) AS unpriced_calls,
    sum(errors) AS failed_calls
FROM (
    SELECT provider, model, calls, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, cost_usd,
           unpriced_calls, errors
    FROM llm_rollup_1m
    WHERE minute >= toStartOfMinute(now('UTC') - toIntervalSecond({seconds:UInt64}))
      AND minute < toStartOfHour(toStartOfMinute(now('UTC') - toIntervalSecond({seconds:UInt64})) + toIntervalMinute(59))
    UNION ALL
    SELECT provider, model, sum(calls), sum(input_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
           sum(output_tokens), sum(cost_usd), sum(unpriced_calls), sum(errors)
    FROM llm_rollup_1m
    WHERE toStartOfHour(minute) >= toStartOfHour(toStartOfMinute(now('UTC') - toIntervalSecond({seconds:UInt64})) + toIntervalMinute(59))
    GROUP BY provider, model
)
GROUP BY provider, model
HAVING calls > 0
)
ORDER BY cost_usd DESC, calls DESC
"""


# Calls whose usage is estimated or missing, and a rough cost of the missing ones: their count times the average
# cost of the same model's calls with usage (nothing where the model has none).
USAGE_FLAGS_SQL = """
SELECT
    sum(estimated) AS estimated_calls,
    toDecimal128(sum(estimated_cost), 9) AS estimated_cost_usd,
    sum(no_usage) AS no_usage_calls,
    toDecimal128(sum(if(known > 0, no_usage * cost / greatest(known, 1), 0)), 9) AS no_usage_rough_cost_usd,
    sum(if(known > 0, 0, no_usage)) AS no_usage_without_comparison
FROM (
    SELECT sum(estimated_calls) AS estimated, sum(estimated_cost_usd) AS estimated_cost,
           sum(no_usage_calls) AS no_usage, sum(cost_usd) AS cost,
           sum(calls) - sum(unpriced_calls) - sum(no_usage_calls) AS known
    FROM llm_rollup_1m
    WHERE minute >= toStartOfMinute(now('UTC') - toIntervalSecond({seconds:UInt64}))
    GROUP BY provider, model
)
"""


def print_usage_flags(flags: Sequence[Any]) -> None:
    """The report's lines about calls without the provider's usage (a `USAGE_FLAGS_SQL` row): never silent."""
    estimated, estimated_cost, no_usage, rough, incomparable = flags
    if estimated:
        print(f"warning: {estimated} calls have estimated usage (tokens estimated from the text, e.g. a stream "
              f"closed before its usage report): ${format_value(estimated_cost)} of the total is estimated; "
              "see: otel-llmcost sql \"SELECT request_model, price_note FROM llm_spans WHERE price_status = 'estimated'\"")
    if no_usage:
        unknown = f" ({incomparable} of them of models with no priced call to compare)" if incomparable else ""
        print(f"warning: {no_usage} calls have no usage (cost unknown, not in the total): at their models' average "
              f"they would cost about ${format_value(rough)}{unknown}; "
              "see: otel-llmcost sql \"SELECT request_model, price_note FROM llm_spans WHERE price_status = 'no_usage'\"")


REPORT_COLUMNS = ("provider", "model", "calls", "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens",
                  "cost_usd", "unpriced_calls", "failed_calls")


def duration_arg(text: str) -> int:
    """A `--since`-like flag: a duration longer than 0, in seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds == 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (it must be longer than 0, e.g. 24h)")
    return seconds


def store_arg(text: str) -> str:
    """A --store value: a URL, or the directory of an embedded store written as a plain path."""
    if "://" in text or text.startswith("chdb:"):
        return text
    return "chdb://" + str(Path(text).expanduser().resolve())


def wait_seconds(text: str) -> int:
    return 0 if text.strip() in ("0", "0s") else duration_arg(text)


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r} (use 1-65535, or 0 for any free port)")
    return port


def port_in_use(host: str, port: int, what: str, flag: str, http: bool = True) -> UserError:
    try:
        ours = http and collector_alive(f"http://{host}:{port}")
    except Exception:  # whatever answers there does not speak HTTP
        ours = False
    holder = "another otel-llmcost collector" if ours else "another program"
    return UserError(f"{what} port {port} on {host} is already in use by {holder}",
                     f"stop it, or choose another port with {flag}", EXIT_FAILURE)


def check_port_free(host: str, port: int, what: str, flag: str, http: bool = True) -> None:
    """Fails before the store is opened when a port is taken (the servers bind it exclusively, as this does)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        raise UserError(f"cannot listen on {host}: {exc.strerror or exc}", "check --host", EXIT_FAILURE) from exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise port_in_use(host, port, what, flag, http) from exc
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                            f"check --host and {flag}", EXIT_FAILURE) from exc


def refuse_store_in_use(directory: Path) -> None:
    """A second collector on an embedded store: name the running one before chDB refuses the lock."""
    from .errors import store_in_use

    try:
        info = json.loads((directory / ENDPOINT_FILE).read_text())
        held = collector_alive(info["endpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        held = False
    if held:
        message, hint = store_in_use(str(directory))
        raise UserError(message, hint, EXIT_FAILURE)


def wait_for_server(url: str, seconds: float) -> None:
    """Waits (with backoff and a log line per try) until the ClickHouse server of `url` answers: a collector
    started right after `docker compose up -d` would otherwise exit before the server is up."""
    from .errors import explain
    from .store import Store

    log = logging.getLogger("otel_llmcost.collector")
    deadline, delay = time.monotonic() + seconds, 1.0
    while True:
        # The client's own warnings about each refused connection: our one line per try says it.
        quiet = [logging.getLogger(name) for name in ("urllib3", "urllib3.connectionpool", "clickhouse_connect")]
        levels = [logger.level for logger in quiet]
        try:
            for logger in quiet:
                logger.setLevel(logging.CRITICAL)
            Store(url).close()
            return
        except StoreError as exc:
            message = explain(exc)[0]
            if not message.startswith("cannot reach") or time.monotonic() + delay > deadline:
                raise
            log.warning("%s; retrying in %.0f s (waiting up to %.0f s in all, --store-wait)", message, delay, seconds)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        finally:
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)


def cmd_collector(args: argparse.Namespace) -> int:
    from .collector import run
    from .retention import parse_retention

    try:
        retention = parse_retention(args.retention)
    except ValueError as exc:
        raise UserError(f"--retention: {exc}") from exc
    if args.prices:
        from .collector.price_overrides import load_price_file

        load_price_file(args.prices)  # refuse a bad price file before listening
        os.environ["OTEL_LLMCOST_PRICES"] = args.prices  # read by the collector's PriceCatalog

    logging.basicConfig(level=os.environ.get("OTEL_LLMCOST_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .collector import ConfigError, Options

    try:  # refuse a bad setting before waiting for ports or the store
        options = Options.with_overrides(
            cluster=args.cluster, spool_dir=args.spool_dir, spool_max_bytes=args.spool_max_bytes,
            max_request_bytes=args.max_request_bytes, tls_cert=args.tls_cert, tls_key=args.tls_key,
            forward_endpoint=args.forward_endpoint, retention_days=retention,
            keep_attributes=args.keep_attributes, clickhouse_port=args.clickhouse_port,
            allow_unauthenticated=args.allow_unauthenticated or None)
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    check_port_free(args.host, args.http_port, "the OTLP/HTTP", "--http-port")
    check_port_free(args.host, args.grpc_port, "the OTLP/gRPC", "--grpc-port", http=False)
    url = resolve_url(args.store)
    directory = chdb_dir(url)
    if directory is not None:
        refuse_store_in_use(directory)
    else:
        wait_for_server(url, args.store_wait)
    try:
        run(url, args.host, args.http_port, args.grpc_port, os.environ.get("OTEL_LLMCOST_AUTH_TOKEN") or None,
            options=options)
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise port_in_use(args.host, args.http_port, "the OTLP/HTTP", "--http-port") from exc
        if "gRPC" in str(exc) or "Failed to bind" in str(exc):  # grpcio: RuntimeError, or a port of 0
            raise port_in_use(args.host, args.grpc_port, "the OTLP/gRPC", "--grpc-port", http=False) from exc
        raise
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        result = store.user_query(args.query)  # read-only, one statement, time-limited (store.py)
    finally:
        store.close()
    print_result(result, args.format)
    return 0


def compact_count(n: int) -> str:
    """Token counts for a narrow table: 9,999 / 45.2k / 1.23M / 4.56B."""
    if n < 10_000:
        return f"{n:,}"
    for size, unit, digits in ((10**9, "B", 2), (10**6, "M", 2), (10**3, "k", 1)):
        if n >= size:
            return f"{n / size:.{digits}f}{unit}"
    return str(n)


def money(value: Decimal | None) -> str:
    if value is None:
        return "unknown"
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    text = f"{value:.6f}".rstrip("0")
    return text if text != "0." else "<0.000001"


def report_lines(rows: Sequence[tuple], width: int = 100) -> list[str]:
    """The report as a table that fits `width` columns; a row's cost is `unknown` when none of its calls has a
    known cost, and `+?` marks a cost that leaves unpriced calls out."""
    header = ("provider/model", "calls", "failed", "input", "cached", "cache wr", "output", "cost USD")
    cells = []
    for provider, model, calls, inp, cached, written, out, cost, unpriced, failed in (row[:10] for row in rows):
        cost_text = money(cost) + (" +?" if unpriced and cost is not None else "")
        cells.append([f"{provider}/{model}", f"{calls:,}", f"{failed:,}", compact_count(inp), compact_count(cached),
                      compact_count(written), compact_count(out), cost_text])
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    widths[0] = max(len(header[0]), min(widths[0], width - sum(widths[1:]) - 2 * (len(header) - 1)))

    def line(values: Sequence[str]) -> str:
        first = values[0] if len(values[0]) <= widths[0] else values[0][:widths[0] - 1] + "…"
        return "  ".join([first.ljust(widths[0])] + [v.rjust(w) for v, w in zip(values[1:], widths[1:])]).rstrip()

    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]


def cmd_report(args: argparse.Namespace) -> int:
    store = open_existing_store(args.store)
    try:
        result = store.query(REPORT_SQL, {"seconds": args.since})
        flags = store.query(USAGE_FLAGS_SQL, {"seconds": args.since}).rows[0] if args.format == "table" else None
    finally:
        store.close()
    if args.format != "table":  # data only: the output parses
        if not result.column_names:  # (an empty result may come without its columns)
            result = QueryResult(list(REPORT_COLUMNS), [], [])
        print_result(result, args.format)
        return 0
    width = min(100, max(60, shutil.get_terminal_size((100, 24)).columns))
    print(f"LLM spend by provider and model, last {args.since_text}")
    print(f"store {redact_url(store.url)}")
    for text in report_lines(result.rows, width):
        print(text)
    total = sum((row[7] for row in result.rows if row[7] is not None), Decimal(0))
    calls = sum(row[2] for row in result.rows)
    unpriced = sum(row[8] for row in result.rows)
    failed = sum(row[9] for row in result.rows)
    print(f"total: {calls} calls, ${format_value(total)}" + (" + unknown" if unpriced else ""))
    if unpriced:
        print(f"warning: {unpriced} calls are unpriced (model without a price): their cost is unknown, "
              "not in the total;")
        print("  list them: otel-llmcost sql \"SELECT request_model, price_note FROM llm_spans "
              "WHERE price_status = 'unpriced'\"")
    if failed:
        print(f"note: {failed} calls failed; a failed call without usage has no known cost")
    print_usage_flags(flags)
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import serve_forever

    try:
        serve_forever(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(args.host, args.port, "the sandbox", "--port") from exc
        raise
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in help_text or not action.option_strings:
            return help_text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Usage errors in two lines (what was wrong, where the help is), instead of the whole usage text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}\n  see: {self.prog} --help\n")


class MissingExtra:
    """Stands in for a command module that needs the collector extra, in an environment without it."""

    def __init__(self, module: str, exc: ModuleNotFoundError) -> None:
        self.name = module.rsplit(".", 1)[-1]
        self.exc = exc

    def register(self, subparsers) -> None:
        p = subparsers.add_parser(self.name, help=f"(needs the collector extra: {INSTALL_COLLECTOR})",
                                  add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=self.run)

    def run(self, args: argparse.Namespace) -> int:
        raise self.exc


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="otel-llmcost", description="What every LLM API call cost.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback and the engine's own message "
                             "(also OTEL_LLMCOST_LOG_LEVEL=DEBUG); may be given anywhere on the line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store_help = "store URL: chdb:///dir or a directory (embedded), or clickhouse://user:pass@host:8123/db " \
                 "(default $OTEL_LLMCOST_STORE, else ./.llmcost)"

    p = sub.add_parser("collector", help="receive OTLP, price LLM spans, store them")
    p.add_argument("--store", help=store_help)
    p.add_argument("--host", default=os.environ.get("OTEL_LLMCOST_HOST", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for all; $OTEL_LLMCOST_HOST)")
    p.add_argument("--http-port", type=port_number, default=4318, help="OTLP/HTTP port")
    p.add_argument("--grpc-port", type=port_number, default=4317, help="OTLP/gRPC port")
    p.add_argument("--prices", default=os.environ.get("OTEL_LLMCOST_PRICES"),
                   help="price file (YAML) layered over genai-prices ($OTEL_LLMCOST_PRICES)")
    p.add_argument("--retention", default=os.environ.get("OTEL_LLMCOST_RETENTION"),
                   help="how long raw spans and rollups are kept, e.g. 400d or 56w; off removes it "
                        "(default $OTEL_LLMCOST_RETENTION; unset: the store's current setting, forever on a new one)")
    p.add_argument("--store-wait", type=wait_seconds, default=os.environ.get("OTEL_LLMCOST_STORE_WAIT", "60s"),
                   help="how long to wait for a ClickHouse server to answer at start ($OTEL_LLMCOST_STORE_WAIT)")
    # Each defaults to its OTEL_LLMCOST_* variable (collector/README.md, "Settings").
    p.add_argument("--cluster", help="ClickHouse cluster: Replicated + Distributed tables, DDL ON CLUSTER "
                                     "(default $OTEL_LLMCOST_CLUSTER)")
    p.add_argument("--spool-dir", help="spool directory (default <store dir>/spool, or ./.llmcost-spool for a server)")
    p.add_argument("--spool-max-bytes", type=int, help="unstored data the spool may hold before 429/503 (default 1 GiB)")
    p.add_argument("--max-request-bytes", type=int, help="larger OTLP requests get 413 (default 64 MiB)")
    p.add_argument("--tls-cert", help="PEM certificate: serve both receivers over TLS (default $OTEL_LLMCOST_TLS_CERT)")
    p.add_argument("--tls-key", help="PEM key of --tls-cert (default $OTEL_LLMCOST_TLS_KEY)")
    p.add_argument("--forward-endpoint", help="also forward every span to this OTLP/HTTP endpoint "
                                              "(default $OTEL_LLMCOST_FORWARD_ENDPOINT)")
    p.add_argument("--keep-attributes", help="comma-separated glob patterns of span attributes to store even though "
                   "they hold prompt/completion content or look like secrets, e.g. 'gen_ai.input.messages,gen_ai.output"
                   ".messages' (default $OTEL_LLMCOST_KEEP_ATTRIBUTES; none: such attributes are not stored)")
    p.add_argument("--clickhouse-port", type=int,
                   help="port of the read-only ClickHouse HTTP interface for Grafana (default 8123 with the embedded "
                        "store, off with a ClickHouse server; 0 = off; $OTEL_LLMCOST_CLICKHOUSE_PORT)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="listen beyond loopback without OTEL_LLMCOST_AUTH_TOKEN (anyone who reaches the ports may "
                        "send spans and read the store)")
    p.set_defaults(func=cmd_collector)

    p = sub.add_parser("sql", help="run a query against the store")
    p.add_argument("--store", help=store_help)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="json: one object per line; csv: a header line, then the rows")
    p.add_argument("query", help="the SQL (ClickHouse dialect), e.g. \"SELECT count() FROM llm_spans\"")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("report", help="spend by provider and model")
    p.add_argument("--store", help=store_help)
    p.add_argument("--since", default="24h", help="time range back from now, e.g. 90m, 24h, 7d")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="json and csv print only the rows (no title, no totals)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sandbox", help="a local fake OpenAI/Anthropic API for demos and load tests")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=port_number, default=8089, help="port to listen on")
    p.set_defaults(func=cmd_sandbox)

    # Commands that live with their feature: each module has `register(subparsers)`. A module that needs the
    # collector extra cannot be imported without it: its command then says what to install.
    for module in COMMAND_MODULES:
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if missing_extra(exc) is None:
                raise
            found = MissingExtra(module, exc)
        found.register(sub)
    return parser


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otel-llmcost")
    except PackageNotFoundError:
        return "unknown (not installed)"


# Commands that only read a store: on a store that does not exist they say so instead of creating it.
READS_STORE = {("report",), ("sql",), ("budget", "list"), ("budget", "remove"), ("alerts", "backtest"),
               ("reprice",)}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    command = "otel-llmcost"
    try:
        args = build_parser().parse_args(argv)
        path = tuple(filter(None, (args.command, getattr(args, "budget_command", None),
                                   getattr(args, "alerts_command", None))))
        command = " ".join(("otel-llmcost",) + path)
        if getattr(args, "store", None) is None and os.environ.get("OTEL_LLMCOST_STORE", "").strip():
            args.store = os.environ["OTEL_LLMCOST_STORE"].strip()
        if getattr(args, "store", None):
            args.store = store_arg(args.store)
        if path in READS_STORE and not isinstance(getattr(args.func, "__self__", None), MissingExtra):
            existing_store(args.store)
        if getattr(args, "since", None) is not None:
            args.since_text = args.since
            args.since = duration_arg(args.since)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Quiet the flush at exit, which would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the last line of the contract: one or two lines, never a traceback
        return report(exc, command, debug)


if __name__ == "__main__":
    sys.exit(main())
