"""The collector's network surface and read path, tried as an attacker would, against real collector processes:
read-only user queries (the `sql` command with and without a running collector, the query endpoint), a long
query that does not hold up storage, tokens, browsers refused, bounded bodies, connections and decompression,
and a second collector on a busy gRPC port."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port
from intake_support import Collector, llm_spans, post, request_bytes, span_ids

TOKEN = "network-token"


def ATTACKS(tmp_path: Path) -> list[str]:
    """Statements a user query must never run: writes (into the rollups too), DDL, SYSTEM, KILL, a second
    statement, files and URLs, a query's own way out of read-only mode."""
    return [
        "DROP TABLE llm_spans",
        "ALTER TABLE llm_spans DELETE WHERE 1",
        "TRUNCATE TABLE llm_rollup_1m",
        "INSERT INTO llm_rollup_1m (minute, provider, model, calls, cost_usd) VALUES (now(), 'openai', 'fake', 1000, 1000000)",
        "INSERT INTO llm_spans (timestamp, trace_id, span_id) VALUES (now64(9), 'x', 'y')",
        "CREATE TABLE evil (x UInt8) ENGINE = Memory",
        "SYSTEM STOP MERGES",
        "KILL QUERY WHERE 1",
        "SELECT 1; DROP TABLE llm_spans",
        "SELECT count() FROM llm_spans;\nTRUNCATE TABLE llm_spans;",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
        f"INSERT INTO FUNCTION file('{tmp_path}/out.csv', 'CSV', 'x UInt8') SELECT 1",
        # readonly=1 lets these through on the embedded engine, its own client: checked before it sees them
        "SELECT file('/etc/passwd')",
        "SELECT `FILE`('/etc/passwd')",
        f"SELECT 1 INTO OUTFILE '{tmp_path}/into.txt'",
        f"SHOW TABLES INTO /* */ OUTFILE '{tmp_path}/into.txt'",
        "DESCRIBE file('/etc/passwd', 'CSV')",
        "SELECT 1 SETTINGS readonly = 0",
        "SET readonly = 0",
    ]


def store_fingerprint(query) -> dict:
    """What an attack could change: the tables, the rows and money of llm_spans and of the rollup."""
    tables = sorted(row["name"] for row in query("SELECT name FROM system.tables WHERE database = currentDatabase()"))
    [spans] = query("SELECT count() AS rows, toString(sum(cost_usd)) AS cost FROM llm_spans")
    [rollup] = query("SELECT sum(calls) AS calls, toString(sum(cost_usd)) AS cost FROM llm_rollup_1m")
    return {"tables": tables, "spans": spans, "rollup": rollup}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A collector with a token, a small query time limit and small body limits."""
    process = Collector(tmp_path_factory.mktemp("network") / "store", {
        "OTEL_LLMCOST_AUTH_TOKEN": TOKEN, "OTEL_LLMCOST_CLICKHOUSE_PORT": "0",
        "OTEL_LLMCOST_QUERY_SECONDS": "4", "OTEL_LLMCOST_MAX_REQUEST_BYTES": str(1 << 20)}).start()
    spans = llm_spans(5, feature="network")
    status, _, _ = post(process.http_endpoint, request_bytes(spans), headers=process.headers)
    assert status == 200
    process.wait_stored(span_ids(spans))
    # (an insert makes the table's rows visible a moment before its rollup's: the fingerprint waits for both)
    process.wait_for(lambda: process.query("SELECT sum(calls) AS calls FROM llm_rollup_1m")[0]["calls"] >= 5,
                     "the rollup of the 5 spans")
    yield process
    process.stop()


def endpoint_query(collector, sql: str, headers: dict | None = None, content_type: str = "application/json"):
    connection = http.client.HTTPConnection("127.0.0.1", collector.http_port, timeout=60)
    connection.request("POST", "/llmcost/v1/query", json.dumps({"sql": sql}).encode(),
                       {"Content-Type": content_type, **collector.headers, **(headers or {})})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def run_cli(args: list[str], env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_llmcost.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def test_user_queries_cannot_write_drop_or_reach_outside_through_the_endpoint_or_the_cli(guarded, tmp_path):
    before = store_fingerprint(guarded.query)
    for attack in ATTACKS(tmp_path):
        status, body = endpoint_query(guarded, attack)
        assert status == 400, (attack, body)
        message = json.loads(body)["message"]
        assert "READONLY" in message or "one statement" in message, (attack, message)
    # the CLI while the collector runs: its queries go to the endpoint; one line on stderr, exit 1
    script = ("import sys, json\nfrom otel_llmcost.cli import main\n"
              "print(json.dumps([main(['sql', '--store', sys.argv[1], q]) for q in json.loads(sys.argv[2])]))")
    done = subprocess.run([sys.executable, "-c", script, guarded.store_url, json.dumps(ATTACKS(tmp_path))],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OTEL_LLMCOST_AUTH_TOKEN": TOKEN})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1] * len(ATTACKS(tmp_path)), done.stderr
    lines = done.stderr.strip().splitlines()  # per refusal: the reason, and the hint that --debug says more
    assert len([line for line in lines if line.startswith("otel-llmcost sql: ")]) == len(ATTACKS(tmp_path))
    assert len(lines) <= 2 * len(ATTACKS(tmp_path)) and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())
    assert store_fingerprint(guarded.query) == before
    # a read still works, and a SET a user sends stays in the reading session: ingestion goes on
    assert endpoint_query(guarded, "SET readonly = 1")[0] in (200, 400)
    assert endpoint_query(guarded, "SELECT count() AS n FROM llm_spans")[0] == 200
    spans = llm_spans(3, feature="after-attacks")
    assert post(guarded.http_endpoint, request_bytes(spans), headers=guarded.headers)[0] == 200
    guarded.wait_stored(span_ids(spans))


def test_the_sql_command_on_a_store_it_opens_itself_is_read_only_too(tmp_path):
    """No collector: the CLI opens the embedded store; the same statements are refused, the store intact
    (one process runs them all: chDB opens one store per process)."""
    store_url = f"chdb://{tmp_path / 'store'}"
    attacks = ATTACKS(tmp_path / "out")
    (tmp_path / "out").mkdir()
    script = """
import contextlib, io, json, sys
from otel_llmcost.cli import main
from otel_llmcost.store import Store

url, attacks = sys.argv[1], json.loads(sys.argv[2])
Store(url).migrate()  # (the sql command reads only a store that exists)
codes = []
for q in attacks:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        codes.append(main(["sql", "--store", url, q]))
    assert err.getvalue().count("\\n") <= 2 and "Traceback" not in err.getvalue(), err.getvalue()
store = Store(url)
tables = sorted(r[0] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()").rows)
applied = [r[0] for r in store.query("SELECT version FROM llm_schema_migrations ORDER BY version").rows]
print(json.dumps({"codes": codes, "tables": tables, "applied": applied}))
"""
    done = subprocess.run([sys.executable, "-c", script, store_url, json.dumps(attacks)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [1] * len(attacks)
    assert {"llm_spans", "llm_rollup_1m", "llm_budgets"} <= set(result["tables"]) and "evil" not in result["tables"]
    assert not list((tmp_path / "out").iterdir())
    done = run_cli(["sql", "--store", store_url, "--format", "json", "SELECT count() AS n FROM llm_spans;"])
    assert done.returncode == 0 and json.loads(done.stdout) == {"n": 0}, done.stderr


def test_a_long_query_neither_holds_up_storage_nor_runs_past_its_time_limit(guarded):
    """A query that runs until its time limit (4 s here): spans sent meanwhile are stored as fast as without it."""
    outcome = {}

    def long_query():
        started = time.monotonic()
        outcome["status"], outcome["body"] = endpoint_query(
            guarded, "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1")
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=long_query)
    worker.start()
    time.sleep(0.5)
    delays = []
    while worker.is_alive() and len(delays) < 6:
        spans = llm_spans(2, feature="during-long-query")
        started = time.monotonic()
        assert post(guarded.http_endpoint, request_bytes(spans), headers=guarded.headers)[0] == 200
        guarded.wait_stored(span_ids(spans), timeout=20)
        delays.append(time.monotonic() - started)
    worker.join()
    assert outcome["status"] == 400 and b"TIMEOUT_EXCEEDED" in outcome["body"], outcome
    assert outcome["seconds"] < 15, outcome
    assert len(delays) >= 2 and max(delays) < 2.5, delays  # the batch timer is 0.2 s; the query ran 4 s


def test_tokens_schemes_and_browsers(guarded):
    body = request_bytes(llm_spans(1, feature="auth"))
    assert post(guarded.http_endpoint, body, headers={"Authorization": f"bearer {TOKEN}"})[0] == 200
    assert post(guarded.http_endpoint, body, headers={"Authorization": f"BEARER  {TOKEN}"})[0] == 200
    for wrong in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
                  {"Authorization": TOKEN}):
        assert post(guarded.http_endpoint, body, headers=wrong)[0] == 401
    # browsers: another site's Origin, a cross-site fetch, on OTLP and on the query endpoint
    assert post(guarded.http_endpoint, body, headers={**guarded.headers, "Origin": "http://evil.example"})[0] == 403
    assert post(guarded.http_endpoint, body, headers={**guarded.headers, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert endpoint_query(guarded, "SELECT 1", {"Origin": "http://evil.example"})[0] == 403
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        assert endpoint_query(guarded, "SELECT 1", content_type=content_type)[0] == 415
    # DNS rebinding: a page at evil.example, resolved to 127.0.0.1, names its own host
    assert endpoint_query(guarded, "SELECT 1", {"Host": f"evil.example:{guarded.http_port}"})[0] == 403
    assert post(guarded.http_endpoint, body, headers={**guarded.headers, "Host": "evil.example"})[0] == 403
    assert endpoint_query(guarded, "SELECT 1", {"Host": f"localhost:{guarded.http_port}"})[0] == 200
    # the counters need the token too; health stays open for load balancers
    connection = http.client.HTTPConnection("127.0.0.1", guarded.http_port, timeout=10)
    for path, status in (("/llmcost/v1/stats", 401), ("/llmcost/v1/health", 200)):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.status == status, path
        if response.getheader("Connection") == "close":
            connection.close()


def test_beyond_loopback_the_collector_needs_a_token_or_an_explicit_flag(tmp_path):
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port())]
    env = {"OTEL_LLMCOST_AUTH_TOKEN": "", "OTEL_LLMCOST_CLICKHOUSE_PORT": "0"}
    done = run_cli(["collector", "--store", f"chdb://{tmp_path / 's'}", "--host", "0.0.0.0", *ports], env, timeout=60)
    assert done.returncode == 2 and "OTEL_LLMCOST_AUTH_TOKEN" in done.stderr and "--allow-unauthenticated" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()  # refused before opening
    process = subprocess.Popen([sys.executable, "-m", "otel_llmcost.cli", "collector", "--store",
                                f"chdb://{tmp_path / 's'}", "--host", "0.0.0.0", "--allow-unauthenticated", *ports],
                               cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        line = process.stdout.readline()
        assert "OTLP/HTTP" in line, line
    finally:
        process.terminate()
        process.wait(timeout=30)


def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = 10) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def test_body_limits_hold_before_reading(guarded):
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    base = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n" + auth
    started = time.monotonic()
    assert raw_exchange(guarded.http_port, base + b"Content-Length: -1\r\n\r\n")[0] == 400
    assert raw_exchange(guarded.http_port, base + b"Content-Length: 12abc\r\n\r\n")[0] == 400
    assert raw_exchange(guarded.http_port, base + b"\r\n")[0] == 411
    # 10 GB announced, nothing sent: the answer comes at once, nothing is read
    assert raw_exchange(guarded.http_port, base + b"Content-Length: 10000000000\r\n\r\n")[0] == 413
    # without the token: 401 before the body, whatever its size
    no_auth = base.replace(auth, b"")
    assert raw_exchange(guarded.http_port, no_auth + b"Content-Length: 10000000000\r\n\r\n")[0] == 401
    assert time.monotonic() - started < 5
    # chunked: within the limit it is stored; past it, 413
    spans = llm_spans(3, feature="chunked")
    data = request_bytes(spans)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 100]), data[i:i + 100]) for i in range(0, len(data), 100))
    status, _ = raw_exchange(guarded.http_port, base + b"Transfer-Encoding: chunked\r\n\r\n", chunked + b"0\r\n\r\n")
    assert status == 200
    guarded.wait_stored(span_ids(spans))
    big = b"%x\r\n" % (1 << 20) + bytes(1 << 20) + b"\r\n" + b"%x\r\n" % (1 << 20)
    assert raw_exchange(guarded.http_port, base + b"Transfer-Encoding: chunked\r\n\r\n", big)[0] == 413


def process_memory(pid: int) -> tuple[int, int]:
    """(threads, peak RSS in kB) of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["Threads"]), int(fields["VmHWM"].split()[0])


def test_connections_threads_and_decompression_are_bounded(guarded):
    pid = guarded.process.pid
    threads_before, _ = process_memory(pid)
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", guarded.http_port), timeout=10))
        time.sleep(1)
        threads, _ = process_memory(pid)
        assert threads <= threads_before + 64 + 4, (threads_before, threads)
        # beyond the pool: 503 with Retry-After at once, not a hung connection
        status, head = raw_exchange(guarded.http_port, b"GET /llmcost/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 503 and b"Retry-After" in head
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)
    status, _ = raw_exchange(guarded.http_port, b"GET /llmcost/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 200
    # gzip bombs: 16 at once, each 2 kB inflating far past the 1 MiB limit: all refused, memory barely moves
    bomb = gzip.compress(bytes(64 << 20))
    _, peak_before = process_memory(pid)
    statuses = []

    def send() -> None:
        statuses.append(post(guarded.http_endpoint, bomb, headers={**guarded.headers, "Content-Encoding": "gzip"})[0])

    workers = [threading.Thread(target=send) for _ in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert set(statuses) <= {413, 503} and 413 in statuses, statuses
    _, peak_after = process_memory(pid)
    assert peak_after - peak_before < 64 * 1024, (peak_before, peak_after)  # kB: under 64 MB for all 16


def test_a_second_collector_on_a_busy_grpc_port_does_not_start(guarded, tmp_path):
    done = run_cli(["collector", "--store", f"chdb://{tmp_path / 'second'}", "--http-port", str(free_port()),
                    "--grpc-port", str(guarded.grpc_port)], {"OTEL_LLMCOST_CLICKHOUSE_PORT": "0"}, timeout=120)
    assert done.returncode == 1 and "gRPC" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_cli_writes_it_needs_go_through_the_running_collector_by_name(guarded):
    """`budget set` / `budget remove` while the collector holds the store: named writes, not SQL; the write
    endpoint takes nothing else."""
    env = {"OTEL_LLMCOST_AUTH_TOKEN": TOKEN}
    done = run_cli(["budget", "set", "--store", guarded.store_url, "--scope", "project=net", "--period", "day",
                    "--amount", "12.5"], env)
    assert done.returncode == 0, done.stderr
    [row] = guarded.query("SELECT toString(amount_usd) AS amount FROM llm_budgets FINAL "
                          "WHERE scope = 'project' AND scope_value = 'net' AND NOT is_deleted")
    assert row["amount"] == "12.5"
    done = run_cli(["budget", "remove", "--store", guarded.store_url, "--scope", "project=net", "--period", "day"], env)
    assert done.returncode == 0, done.stderr
    assert guarded.query("SELECT 1 FROM llm_budgets FINAL WHERE scope_value = 'net' AND NOT is_deleted") == []
    connection = http.client.HTTPConnection("127.0.0.1", guarded.http_port, timeout=30)
    for document in ({"write": "DROP TABLE llm_spans", "parameters": {}}, {"sql": "DROP TABLE llm_spans"}):
        connection.request("POST", "/llmcost/v1/write", json.dumps(document).encode(),
                           {"Content-Type": "application/json", **guarded.headers})
        response = connection.getresponse()
        assert response.status == 400 and b"unknown write" in response.read()
    assert "llm_spans" in {r["name"] for r in guarded.query("SELECT name FROM system.tables")}
