"""The collector's ClickHouse HTTP interface (collector/clickhouse_http.py): Grafana's ClickHouse plugin and
clickhouse-connect read the embedded store through it as they read a ClickHouse server.

A real collector process over a store seeded with simulated history; the real clickhouse-connect HTTP client
(`get_client(host=..., port=...)`) runs every dashboard panel, template variable and alert rule query, expanded
as the plugin expands them, and gets what the store itself answers; raw HTTP requests check the handshake, the
headers the clients read, errors in ClickHouse's format, authentication and that nothing can write.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import clickhouse_connect
import pytest
import yaml

from conftest import ROOT, free_port
from intake_support import Collector
from otel_llmcost.store import RemoteStore, encode_value

TOKEN = "ch-interface-token"
END = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)
ALL_VARIABLES = ("service", "project", "feature", "provider", "model")

SEED = """
import sys
from datetime import datetime, timezone
from otel_llmcost.budgets import set_budget
from otel_llmcost.simulate import seed_store
from otel_llmcost.store import Store

store = Store("chdb://" + sys.argv[1])
store.migrate()
seed_store(store, 3, datetime.fromisoformat(sys.argv[2]), "spike")
set_budget(store, "all", None, "day", 50)
set_budget(store, "all", None, "month", 600)
store.close()
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A collector over a seeded store, with a token and the ClickHouse interface on a free port."""
    store_dir = tmp_path_factory.mktemp("chi") / "store"
    done = subprocess.run([sys.executable, "-c", SEED, str(store_dir), END.isoformat()], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    process = Collector(store_dir, {"OTEL_LLMCOST_AUTH_TOKEN": TOKEN,
                                    "OTEL_LLMCOST_CLICKHOUSE_PORT": str(free_port())})
    process.clickhouse_port = int(process.env["OTEL_LLMCOST_CLICKHOUSE_PORT"])
    process.start()
    yield process
    process.stop()


def client(served, **kwargs):
    return clickhouse_connect.get_client(host="127.0.0.1", port=served.clickhouse_port, username="llmcost",
                                         password=TOKEN, **kwargs)


def http(served, query: str | None = None, body: bytes | None = None, headers: dict | None = None,
         params: str = "", method: str | None = None, auth: bool = True) -> tuple[int, dict, bytes]:
    from urllib.parse import quote

    url = f"http://127.0.0.1:{served.clickhouse_port}/"
    query_string = "&".join(p for p in ([f"query={quote(query)}"] if query else []) + ([params] if params else []))
    if query_string:
        url += "?" + query_string
    all_headers = dict(headers or {})
    if auth:
        all_headers.setdefault("Authorization", "Basic " + base64.b64encode(f"llmcost:{TOKEN}".encode()).decode())
    request = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                                     headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def grafana_queries() -> list[tuple[str, str]]:
    """(where, SQL) of every query the shipped Grafana files send: each panel's and template variable's query in
    grafana/dashboards/*.json, each alert query in grafana/provisioning/alerting/*.yaml, and each rule of
    otel_llmcost/alerts/rules/ as rendered; macros expanded as the plugin expands them, every variable on All."""
    from otel_llmcost.alerts import TO_TIME, load_rules
    from otel_llmcost.alerts.macros import ALL, expand

    variables = {name: ALL for name in ALL_VARIABLES}
    start = END - timedelta(hours=36)
    found: list[tuple[str, str]] = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("rawSql", "query") and isinstance(value, str) and value.strip().upper().startswith(
                        ("SELECT", "WITH", "(")):
                    found.append((where, value))
                else:
                    walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{node[i].get('title', i) if isinstance(item, dict) else i}]")

    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    for path in sorted((ROOT / "grafana" / "provisioning" / "alerting").glob("*.yaml")):
        walk(yaml.safe_load(path.read_text()), path.name)
    expanded = [(where, expand(sql, start, END, 300, variables)) for where, sql in found]
    expanded += [(f"rule {rule.name}", rule.render().replace(TO_TIME, f"toDateTime({int(END.timestamp())})"))
                 for rule in load_rules()]
    return expanded


def comparable(rows) -> list[str]:
    # Float sums may add the same terms in another order from one run to the next: 12 significant digits.
    return sorted(repr(tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in row)) for row in rows)


def test_every_panel_variable_and_rule_query_answers_as_the_store_does(served):
    queries = grafana_queries()
    assert len(queries) >= 40, len(queries)
    over_http = client(served)
    assert over_http.server_version and over_http.server_tz is not None  # the connect handshake went through
    with_rows = 0
    own_store = RemoteStore(served.store_url, served.http_endpoint, TOKEN)
    for where, sql in queries:
        through_interface = over_http.query(sql)
        # the store's own answer: the collector's query endpoint, which runs it on its chDB client
        own = own_store.query(sql)
        assert list(through_interface.column_names) == own.column_names, where
        got = [tuple(encode_value(v) for v in row) for row in through_interface.result_rows]
        expected = [tuple(encode_value(v) for v in row) for row in own.rows]
        assert comparable(got) == comparable(expected), where
        with_rows += bool(got)
    assert with_rows >= len(queries) // 2  # the seeded history makes most of them return rows


def test_the_handshakes_and_headers_the_clients_read(served):
    status, headers, body = http(served, method="GET", auth=False, params="")
    assert status == 200 and body == b"Ok.\n"
    assert urllib.request.urlopen(f"http://127.0.0.1:{served.clickhouse_port}/ping", timeout=10).read() == b"Ok.\n"
    status, headers, body = http(served, body=b"SELECT version(), timezone() FORMAT TabSeparated")
    assert status == 200
    version, zone = body.decode().strip().split("\t")
    assert headers["X-ClickHouse-Format"] == "TabSeparated" and headers["X-ClickHouse-Timezone"] == zone
    assert headers["X-ClickHouse-Server-Display-Name"] and headers["X-ClickHouse-Query-Id"]
    summary = json.loads(headers["X-ClickHouse-Summary"])
    assert {"read_rows", "written_rows", "result_bytes", "elapsed_ns"} <= set(summary)
    # clickhouse-go (the Grafana plugin in HTTP mode): POST / with default_format=Native and database in the URL,
    # user and password as Basic auth, `SELECT timeZone()` first
    status, headers, body = http(served, body=b"SELECT timeZone()", params="database=default&default_format=Native")
    assert status == 200 and headers["X-ClickHouse-Format"] == "Native" and zone.encode() in body
    # the query in the URL, a FORMAT of its own, a query parameter
    status, headers, body = http(served, query="SELECT {n:UInt8} + 1 AS x FORMAT JSONEachRow", params="param_n=41")
    assert status == 200 and json.loads(body) == {"x": 42} and headers["X-ClickHouse-Format"] == "JSONEachRow"
    # errors in ClickHouse's format, with its code in a header
    status, headers, body = http(served, body=b"SELECT * FROM no_such_table")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "60" and body.startswith(b"Code: 60.")
    status, headers, body = http(served, body=b"SELECT 1", params="database=other")
    assert headers["X-ClickHouse-Exception-Code"] == "81"
    # settings as URL parameters: a limit is applied, a setting a read-only session may not change is ignored
    status, headers, body = http(served, body=b"SELECT getSetting('max_result_rows'), getSetting('max_execution_time')",
                                 params="max_result_rows=5&max_execution_time=7&allow_introspection_functions=1")
    assert status == 200 and body.decode().split() == ["5", "7"]


def test_only_the_token_or_llmcost_and_the_token_get_in(served):
    sql = b"SELECT 1"
    assert http(served, body=sql)[0] == 200
    assert http(served, body=sql, headers={"Authorization": f"bearer {TOKEN}"})[0] == 200
    assert http(served, body=sql, headers={"X-ClickHouse-User": "llmcost", "X-ClickHouse-Key": TOKEN})[0] == 200
    assert http(served, body=sql, params=f"user=llmcost&password={TOKEN}", auth=False)[0] == 200
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"default:").decode()},
                    {"Authorization": "Basic " + base64.b64encode(f"default:{TOKEN}".encode()).decode()},
                    {"Authorization": "Basic " + base64.b64encode(b"llmcost:wrong").decode()},
                    {"Authorization": "Bearer wrong"}):
        status, response_headers, body = http(served, body=sql, headers=headers, auth=False)
        assert status == 403 and response_headers["X-ClickHouse-Exception-Code"] == "516", headers
    with pytest.raises(Exception) as info:
        clickhouse_connect.get_client(host="127.0.0.1", port=served.clickhouse_port, username="llmcost",
                                      password="wrong")
    assert "516" in str(info.value) or "Authentication" in str(info.value)
    # a web page's request (Origin) is refused even with the right credentials
    assert http(served, body=sql, headers={"Origin": "http://evil.example"})[0] == 403
    assert http(served, body=sql, headers={"Host": "evil.example:8123"})[0] == 403


def test_nothing_can_write_or_reach_outside_through_the_interface(served, tmp_path):
    from test_network import ATTACKS, store_fingerprint

    before = store_fingerprint(served.query)
    over_http = client(served)
    for attack in ATTACKS(tmp_path):
        with pytest.raises(Exception) as info:
            over_http.query(attack)
        assert any(code in str(info.value) for code in ("164", "62", "READONLY", "one statement")), (attack, info.value)
        status, _, _ = http(served, body=attack.encode())
        assert status >= 400, attack
    assert not list(tmp_path.iterdir())  # INSERT INTO FUNCTION file(...) wrote nothing
    assert store_fingerprint(served.query) == before
