"""The command line's contract, tried the way a new user tries it: every ordinary mistake, through the real
`otel-llmcost` command, ends in one or two lines on stderr that say what was wrong (and what to do), a
non-zero exit code, and no Python traceback; nothing is created or changed by a command that failed.

MISTAKES is the list, one row each. Placeholders in a row's arguments are filled in by the fixtures:
{store} an existing embedded store (no collector on it), {missing} a store directory that does not exist,
{running} the store of a running collector, {http_port}/{grpc_port} that collector's ports, {busy} a port a
plain socket listens on, {bad_prices} a broken price file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from otel_llmcost.cli import report_lines

BIN = Path(sys.executable).parent / "otel-llmcost"

# Blocks the import of the modules named in $LLMCOST_TEST_BLOCK, as in an environment installed without them.
BLOCKER = '''
import os, sys
class _Block:
    blocked = tuple(filter(None, os.environ.get("LLMCOST_TEST_BLOCK", "").split(",")))
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''
WITHOUT_COLLECTOR_EXTRA = "genai_prices,clickhouse_connect,chdb,yaml"


@dataclass
class Mistake:
    name: str
    argv: list[str]
    code: int
    message: str  # a regular expression that stderr must match
    env: dict[str, str] = field(default_factory=dict)
    max_lines: int = 2
    absent: str = ""  # a path that must not exist afterwards


MISTAKES = [
    # alerts backtest
    Mistake("backtest --to before --from", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h", "--to", "now-2h"],
            2, r"--to .* is before --from"),
    Mistake("backtest --rule nosuch", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h", "--rule", "nosuch"],
            2, r"no such rule: nosuch"),
    Mistake("backtest --set bad value", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h",
                                         "--set", "cache_collapse.drop=abc"], 2, r"drop must be a finite number"),
    Mistake("backtest --set negative window", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h",
                                               "--set", "window_minutes=-5"], 2, r"window_minutes must be a whole number"),
    Mistake("backtest --set nosuch.x=1", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h",
                                          "--set", "nosuch.x=1"], 2, r"rule 'nosuch' does not exist"),
    Mistake("backtest --set x=1", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h", "--set", "x=1"],
            2, r"no rule backtested here has a parameter 'x'"),
    Mistake("backtest --set rule.nosuch=1", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h",
                                             "--set", "cache_collapse.nosuch=1"], 2, r"cache_collapse has no parameter 'nosuch'"),
    Mistake("backtest --set without value", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h", "--set", "drop"],
            2, r"use RULE.PARAM=VALUE"),
    Mistake("backtest too many steps", ["alerts", "backtest", "--store", "{store}", "--from", "2020-01-01"],
            2, r"evaluations .* at most 200,000[\s\S]*--step \d+m"),
    Mistake("backtest --from not a time", ["alerts", "backtest", "--store", "{store}", "--from", "yesterday"],
            2, r"not a time: 'yesterday'"),
    Mistake("backtest --step not whole minutes", ["alerts", "backtest", "--store", "{store}", "--from", "now-1h",
                                                  "--step", "90s"], 2, r"whole minutes"),
    Mistake("backtest on a store that does not exist", ["alerts", "backtest", "--store", "{missing}", "--from", "now-1h"],
            1, r"no store at .*missing", absent="{missing}"),
    Mistake("alerts list --rule nosuch", ["alerts", "list", "--rule", "nosuch"], 2, r"no such rule: nosuch"),
    # budgets
    Mistake("budget set --amount nan", ["budget", "set", "--store", "{store}", "--amount", "nan"], 2, r"not an amount: 'nan'"),
    Mistake("budget set --amount inf", ["budget", "set", "--store", "{store}", "--amount", "inf"], 2, r"not an amount: 'inf'"),
    Mistake("budget set --amount -5", ["budget", "set", "--store", "{store}", "--amount=-5"], 2, r"must be above 0"),
    Mistake("budget set --amount abc", ["budget", "set", "--store", "{store}", "--amount", "abc"], 2, r"not an amount"),
    Mistake("budget set --amount 1e30", ["budget", "set", "--store", "{store}", "--amount", "1e30"], 2, r"too large"),
    Mistake("budget set combined scope", ["budget", "set", "--store", "{store}", "--scope", "project=a,feature=b",
                                          "--amount", "5"], 2, r"combined scopes are not supported"),
    Mistake("budget set unknown scope", ["budget", "set", "--store", "{store}", "--scope", "team=a", "--amount", "5"],
            2, r"scope must be one of all, project, feature, user"),
    Mistake("budget set scope without name", ["budget", "set", "--store", "{store}", "--scope", "project", "--amount", "5"],
            2, r"needs the project it applies to"),
    Mistake("budget remove on a store that does not exist", ["budget", "remove", "--store", "{missing}", "--scope", "all"],
            1, r"no store at", absent="{missing}"),
    Mistake("budget list on a store that does not exist", ["budget", "list", "--store", "{missing}"],
            1, r"no store at", absent="{missing}"),
    # reprice
    Mistake("reprice --prices missing file", ["reprice", "--store", "{store}", "--since", "1d", "--prices", "/nonexistent/p.yaml"],
            2, r"cannot read price file /nonexistent/p.yaml"),
    Mistake("reprice --prices broken file", ["reprice", "--store", "{store}", "--since", "1d", "--prices", "{bad_prices}"],
            2, r"not valid YAML"),
    Mistake("reprice --since not a time", ["reprice", "--store", "{store}", "--since", "last week"], 2, r"not a time"),
    Mistake("reprice on a store that does not exist", ["reprice", "--store", "{missing}", "--since", "1d"],
            1, r"no store at", absent="{missing}"),
    # simulate
    Mistake("simulate --days -3", ["simulate", "--days=-3"], 2, r"not a number of days: '-3'"),
    Mistake("simulate --days nan", ["simulate", "--days", "nan"], 2, r"not a number of days"),
    Mistake("simulate --incident-minutes -1", ["simulate", "--incident-minutes=-1"], 2, r"not a number of minutes"),
    Mistake("simulate without a collector", ["simulate", "--days", "0.01", "--endpoint", "http://127.0.0.1:{busy_closed}"],
            1, r"no collector answers at"),
    Mistake("simulate --endpoint not a URL", ["simulate", "--endpoint", "127.0.0.1:4318"], 2, r"use the collector's OTLP/HTTP URL"),
    # report and sql
    Mistake("report on a mistyped --store", ["report", "--store", "{missing}"], 1, r"no store at .*missing",
            absent="{missing}"),
    Mistake("report in a directory without a store", ["report"], 1, r"no store at .*\.llmcost"),
    Mistake("report --format json on a store that does not exist", ["report", "--store", "{missing}", "--format", "json"],
            1, r"no store at", absent="{missing}"),
    Mistake("report --since abc", ["report", "--store", "{store}", "--since", "abc"], 2, r"not a duration: 'abc'"),
    Mistake("report --since 0", ["report", "--store", "{store}", "--since", "0"], 2, r"longer than 0"),
    Mistake("sql on a store that does not exist", ["sql", "--store", "{missing}", "SELECT 1"], 1, r"no store at",
            absent="{missing}"),
    Mistake("sql syntax error", ["sql", "--store", "{running}", "SELECT count( FROM llm_spans"], 1,
            r"^otel-llmcost sql: SQL syntax error at line 1, column \d+"),
    Mistake("sql not a read", ["sql", "--store", "{running}", "SELEC 1"], 1,
            r"^otel-llmcost sql: only reads may run here \(SELECT, WITH, SHOW, EXISTS, DESCRIBE a table\), not 'SELEC'"),
    Mistake("sql syntax error, no collector", ["sql", "--store", "{store}", "SELECT count( FROM llm_spans"], 1,
            r"SQL syntax error at line 1"),
    Mistake("sql unknown column", ["sql", "--store", "{running}", "SELECT nosuch FROM llm_spans"], 1, r"unknown column nosuch"),
    Mistake("sql unknown table", ["sql", "--store", "{running}", "SELECT * FROM nosuch"], 1, r"unknown table nosuch"),
    Mistake("sql unknown store scheme", ["sql", "--store", "foo://x", "SELECT 1"], 1, r"unknown store URL scheme 'foo'"),
    Mistake("unknown command", ["reprot"], 2, r"invalid choice: 'reprot'"),
    # collector and sandbox
    Mistake("second collector on a store in use", ["collector", "--store", "{running}", "--http-port", "0", "--grpc-port", "0"],
            1, r"the store .* is in use by the collector at http://127.0.0.1:{http_port} \(pid \d+\)"),
    Mistake("collector on a busy HTTP port", ["collector", "--store", "{missing}", "--http-port", "{busy}", "--grpc-port", "0"],
            1, r"OTLP/HTTP port {busy} on 127.0.0.1 is already in use by another program", absent="{missing}"),
    Mistake("collector on another collector's HTTP port", ["collector", "--store", "{missing}", "--http-port", "{http_port}",
                                                           "--grpc-port", "0"],
            1, r"port {http_port} .* in use by another otel-llmcost collector", absent="{missing}"),
    Mistake("collector on another collector's gRPC port", ["collector", "--store", "{missing}", "--http-port", "0",
                                                           "--grpc-port", "{grpc_port}"],
            1, r"OTLP/gRPC port {grpc_port} on 127.0.0.1 is already in use", absent="{missing}"),
    Mistake("collector --http-port 99999", ["collector", "--http-port", "99999"], 2, r"not a port: '99999'"),
    Mistake("collector --retention 5x", ["collector", "--store", "{missing}", "--retention", "5x"], 2, r"not a retention: '5x'",
            absent="{missing}"),
    Mistake("collector --prices broken file", ["collector", "--store", "{missing}", "--prices", "{bad_prices}"],
            2, r"not valid YAML", absent="{missing}"),
    Mistake("collector --tls-cert missing", ["collector", "--store", "{missing}", "--tls-cert", "/nonexistent/cert.pem",
                                             "--http-port", "0", "--grpc-port", "0"], 2, r"--tls-cert .* no such file",
            absent="{missing}"),
    # collector settings, refused before anything is created (Options.validate)
    Mistake("collector OTEL_LLMCOST_BATCH_ROWS not a number", ["collector", "--store", "{missing}"], 2,
            r"OTEL_LLMCOST_BATCH_ROWS='abc' is not a whole number", env={"OTEL_LLMCOST_BATCH_ROWS": "abc"},
            absent="{missing}"),
    Mistake("collector --spool-max-bytes 0", ["collector", "--store", "{missing}", "--spool-max-bytes", "0"], 2,
            r"--spool-max-bytes \(OTEL_LLMCOST_SPOOL_MAX_BYTES\) 0: must be a whole number greater than 0",
            absent="{missing}"),
    Mistake("collector OTEL_LLMCOST_BATCH_SECONDS negative", ["collector", "--store", "{missing}"], 2,
            r"OTEL_LLMCOST_BATCH_SECONDS -1.0: must be a number of seconds greater than 0",
            env={"OTEL_LLMCOST_BATCH_SECONDS": "-1"}, absent="{missing}"),
    Mistake("collector --clickhouse-port 70000", ["collector", "--store", "{missing}", "--clickhouse-port", "70000"], 2,
            r"--clickhouse-port \(OTEL_LLMCOST_CLICKHOUSE_PORT\) 70000: not a port", absent="{missing}"),
    Mistake("collector --tls-key without --tls-cert", ["collector", "--store", "{missing}", "--tls-key", "{bad_prices}"],
            2, r"--tls-key \(OTEL_LLMCOST_TLS_KEY\) is set but --tls-cert \(OTEL_LLMCOST_TLS_CERT\) is not",
            absent="{missing}"),
    Mistake("collector --forward-endpoint not a URL", ["collector", "--store", "{missing}", "--forward-endpoint",
                                                       "127.0.0.1:4318"], 2,
            r"--forward-endpoint \(OTEL_LLMCOST_FORWARD_ENDPOINT\) '127.0.0.1:4318': not an OTLP/HTTP URL",
            absent="{missing}"),
    Mistake("collector on a ClickHouse server that does not answer",
            ["collector", "--store", "clickhouse://u:secret@127.0.0.1:{busy_closed}/db", "--store-wait", "0"],
            1, r"cannot reach ClickHouse at 127.0.0.1:{busy_closed}"),
    Mistake("sandbox on a busy port", ["sandbox", "--port", "{busy}"], 1, r"sandbox port {busy} .* already in use"),
    # an app's environment, installed without the collector extra
    Mistake("reprice without the collector extra", ["reprice", "--since", "1d"], 1,
            r"needs the Python module 'genai_prices'[\s\S]*pip install 'otel-llmcost\[collector\]'",
            env={"LLMCOST_TEST_BLOCK": WITHOUT_COLLECTOR_EXTRA}),
    Mistake("collector without the collector extra", ["collector"], 1, r"pip install 'otel-llmcost\[collector\]'",
            env={"LLMCOST_TEST_BLOCK": WITHOUT_COLLECTOR_EXTRA}),
    Mistake("budget list without the collector extra", ["budget", "list", "--store", "{store}"], 1,
            r"'clickhouse_connect'[\s\S]*otel-llmcost\[collector\]", env={"LLMCOST_TEST_BLOCK": WITHOUT_COLLECTOR_EXTRA}),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory, collector):
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "blocker").mkdir()
    (root / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (root / "bad-prices.yaml").write_text("models: [\n")
    store = root / "store"
    made = run(["budget", "set", "--store", str(store), "--amount", "100"], root)
    assert made.returncode == 0, made.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    values = {"store": str(store), "missing": str(root / "missing"), "running": collector.store_url,
              "http_port": str(collector.http_port), "grpc_port": str(collector.grpc_port),
              "busy": str(busy.getsockname()[1]), "busy_closed": str(closed.getsockname()[1]),
              "bad_prices": str(root / "bad-prices.yaml"), "tmp": str(root)}
    yield root, values
    busy.close()
    closed.close()


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_LLMCOST_")}
    return subprocess.run([str(BIN), *argv], capture_output=True, text=True, cwd=cwd, env={**clean, **(env or {})},
                          timeout=timeout)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_mistake(mistake: Mistake, places) -> None:
    root, values = places
    env = dict(mistake.env)
    if "LLMCOST_TEST_BLOCK" in env:
        env["PYTHONPATH"] = str(root / "blocker")
    done = run([arg.format(**values) for arg in mistake.argv], root, env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == mistake.code, done.stderr
    assert "Traceback" not in done.stderr and "DB::Exception" not in done.stderr, done.stderr
    assert 1 <= len(lines) <= mistake.max_lines, done.stderr
    assert re.search(mistake.message.format(**values), done.stderr, re.M), done.stderr
    assert done.stdout == "", done.stdout
    if mistake.absent:
        assert not Path(mistake.absent.format(**values)).exists()


def test_debug_shows_the_traceback_and_the_engine_message(places) -> None:
    root, values = places
    bad = "SELECT count( FROM llm_spans"
    for argv, env in ((["sql", "--store", values["store"], bad, "--debug"], {}),
                      (["sql", "--store", values["store"], bad], {"OTEL_LLMCOST_LOG_LEVEL": "debug"})):
        done = run(argv, root, env)
        assert done.returncode == 1
        assert "Traceback" in done.stderr and "DB::Exception" in done.stderr and "SQL syntax error" in done.stderr


def test_grpc_port_is_bound_exclusively() -> None:
    """grpcio binds with SO_REUSEPORT by default: a second server on a held port would start and split the
    traffic. Our receivers bind without it, so the second one fails."""
    from otel_llmcost.collector.receivers import Receivers

    first = Receivers(None, None, dict, "127.0.0.1", 0, 0)
    try:
        with pytest.raises((RuntimeError, OSError)):
            Receivers(None, None, dict, "127.0.0.1", 0, first.grpc_port)
    finally:
        first.http.server_close()
        first.grpc.stop(None)


def test_help_version_and_instrumentation_side_without_the_collector_extra(places) -> None:
    root, _ = places
    env = {"LLMCOST_TEST_BLOCK": WITHOUT_COLLECTOR_EXTRA, "PYTHONPATH": str(root / "blocker")}
    for argv in (["--help"], ["report", "--help"], ["alerts", "list"], ["sandbox", "--help"], ["--version"]):
        done = run(argv, root, env)
        assert done.returncode == 0 and done.stderr == "", (argv, done.stderr)
    assert re.fullmatch(r"otel-llmcost \d+\.\d+\.\d+\S*\n", run(["--version"], root).stdout)


def test_every_command_has_help_with_its_defaults(places) -> None:
    root, _ = places
    commands = [["collector"], ["sql"], ["report"], ["sandbox"], ["budget", "set"], ["budget", "list"],
                ["budget", "remove"], ["alerts", "list"], ["alerts", "backtest"], ["alerts", "provision"],
                ["simulate"], ["schema"], ["reprice"]]
    for command in commands:
        done = run([*command, "--help"], root)
        assert done.returncode == 0, done.stderr
        options = re.findall(r"^  (--[\w-]+)", done.stdout, re.M)
        assert options, done.stdout
    shown = " ".join(run(["report", "--help"], root).stdout.split())
    assert "(default: 24h)" in shown and "(default: table)" in shown
    shown = " ".join(run(["alerts", "backtest", "--help"], root).stdout.split())
    assert "(default: now)" in shown and "(default: 1m)" in shown
    shown = " ".join(run(["collector", "--help"], root).stdout.split())
    assert "(default: 4318)" in shown and "(default: 4317)" in shown and "--retention" in shown


def test_machine_formats_print_only_data(places, collector) -> None:
    root, values = places
    done = run(["report", "--store", values["running"], "--format", "json"], root)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        json.loads(line)
    done = run(["report", "--store", values["running"], "--format", "csv"], root)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0][:3] == ["provider", "model", "calls"]
    done = run(["budget", "list", "--store", values["store"], "--format", "csv"], root)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows[0]["amount_usd"] == "100.000000" and "E" not in done.stdout  # no 0E-9
    done = run(["alerts", "backtest", "--store", values["store"], "--from", "now-1h", "--format", "json"], root)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # piped: no progress


def test_a_plain_directory_is_a_store(places) -> None:
    root, values = places
    done = run(["budget", "list", "--store", "store"], root)  # relative, no chdb:// prefix
    assert done.returncode == 0 and "100" in done.stdout, done.stderr


def test_reprice_says_it_leaves_the_last_minutes_out(places) -> None:
    root, values = places
    done = run(["reprice", "--store", values["store"], "--since", "1h"], root)
    assert done.returncode == 0, done.stderr
    assert "the last 5 minutes are left out" in done.stderr


def test_report_fits_100_columns_and_shows_unknowns() -> None:
    from decimal import Decimal

    rows = [
        ("anthropic", "claude-sonnet-4-5-20250929-with-a-very-long-fine-tune-suffix", 1_234_567, 89_012_345_678,
         45_000_000, 1_000_000, 987_654_321, Decimal("123456.789012345"), 0, 12),
        ("openai", "my-own-model", 40, 4000, 0, 0, 400, Decimal("0E-9"), 40, 0),
        ("openai", "gpt-4o", 10, 4000, 0, 0, 400, Decimal("0.012345678"), 2, 0),
        ("openai", "gpt-4o-mini", 5, 100, 0, 0, 0, None, 0, 5),
    ]
    # (cost as the report's SQL gives it: NULL when no call of the row has a known cost)
    rows[1] = rows[1][:7] + (None,) + rows[1][8:]
    lines = report_lines(rows, 100)
    assert all(len(line) <= 100 for line in lines), "\n".join(lines)
    by_model = {line.split()[0]: line for line in lines[2:]}
    assert by_model["openai/my-own-model"].endswith("unknown")
    assert by_model["openai/gpt-4o-mini"].endswith("unknown")
    assert by_model["openai/gpt-4o"].endswith("0.012346 +?")
    assert "123,456.79" in lines[2] and "89.01B" in lines[2] and "…" in lines[2]
