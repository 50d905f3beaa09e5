"""Query latency at 10 million stored spans: every dashboard panel and alert rule, the CLI report, and a
few representative rollup queries, on the embedded store.

The store is made by `Store(url).migrate()` (so the rollups' materialized views fill as rows arrive) and
filled with one `INSERT ... SELECT ... FROM numbers(N)` of realistic distributions over 60 days; it is
cached under `.bench-data/` and made again when the schema files, the generator or N change, or when it
is more than 12 hours old (queries are relative to the time of generation). Its tables are then merged once
(`OPTIMIZE TABLE ... FINAL`, see `merge_tables`).

Discovered queries: alert rules through `otel_llmcost.alerts.load_rules()` (parameters at their defaults,
`$__toTime` = the end of the data); dashboard panels: every `rawSql` in `grafana/**/*.json`, expanded with
`otel_llmcost.alerts.macros.expand` over the last 24 h (interval 60 s), template variables set to the
dashboard's current value, or to All.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .common import DATA_DIR, ROOT, log, median, percentile, table

ROWS = 10_000_000
MAX_AGE_S = 12 * 3600
DAYS = 60

# (provider, model, input $/Mtok, output $/Mtok, share %)
MODELS = [
    ("openai", "gpt-4o-mini-2024-07-18", 0.15, 0.6, 35),
    ("openai", "gpt-4.1-2025-04-14", 2.0, 8.0, 15),
    ("openai", "o3-mini-2025-01-31", 1.1, 4.4, 5),
    ("openai", "text-embedding-3-small", 0.02, 0.0, 10),
    ("anthropic", "claude-sonnet-4-5-20250929", 3.0, 15.0, 15),
    ("anthropic", "claude-3-5-haiku-20241022", 0.8, 4.0, 8),
    ("anthropic", "claude-opus-4-1-20250805", 15.0, 75.0, 2),
    ("gcp.gemini", "gemini-2.5-pro", 1.25, 10.0, 5),
    ("gcp.gemini", "gemini-2.5-flash", 0.3, 2.5, 4),
    ("groq", "llama-3.3-70b-versatile", 0.59, 0.79, 1),
]
SERVICES = ["checkout-assistant", "search-api", "support-bot", "docs-qa", "ingest-worker", "sales-copilot",
            "eval-runner", "internal-tools"]
PROJECTS = ["checkout", "search", "support", "docs", "ingest", "sales", "evals", "platform", "growth", "risk",
            "legal", "hr"]
FEATURES = [f"feature-{i:02d}" for i in range(30)]


def _array(values) -> str:
    return "[" + ",".join("'" + v + "'" for v in values) + "]"


def generator_sql(rows: int, anchor: int) -> str:
    """One INSERT ... SELECT making `rows` calls over the 60 days before `anchor` (epoch seconds)."""
    cumulative, acc = [], 0
    for *_, share in MODELS:
        acc += share
        cumulative.append(acc)
    model_index = "multiIf(" + ", ".join(f"m < {c}, {i + 1}" for i, c in enumerate(cumulative[:-1])) + f", {len(MODELS)})"
    return f"""
INSERT INTO llm_spans (timestamp, duration_ms, trace_id, span_id, parent_span_id, service_name, span_name,
    scope_name, provider, operation, request_model, response_model, response_id, status_code, error_type,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd,
    input_cost_usd, cache_read_cost_usd, cache_write_cost_usd, output_cost_usd, cache_savings_usd,
    price_status, price_note, price_source, priced_model, project, feature, user_id, attributes,
    resource_json)
SELECT
    ts, duration_ms, trace_id, span_id, '', service_name, concat('chat ', model), 'otel_llmcost', provider,
    if(provider = 'openai' AND model LIKE 'text-embedding%', 'embeddings', 'chat'), model, model,
    concat('resp_', span_id), if(is_error, 'ERROR', 'UNSET'), if(is_error, 'RateLimitError', ''),
    input_tokens, output_tokens, cache_read, cache_write, reasoning,
    if(priced, toDecimal64(input_cost + cache_read_cost + output_cost, 9), NULL),
    if(priced, toDecimal64(input_cost, 9), NULL), if(priced, toDecimal64(cache_read_cost, 9), NULL),
    if(priced, toDecimal64(0, 9), NULL), if(priced, toDecimal64(output_cost, 9), NULL),
    if(priced AND cache_read > 0, toDecimal64(cache_read * in_price * 0.9 / 1e6, 9), NULL),
    if(priced, 'priced', 'unpriced'), if(priced, '', 'no price for model'),
    if(priced, 'genai-prices 0.2.3', ''), if(priced, model, ''),
    project, feature, user_id,
    map('server.address', concat('api.', provider, '.com'), 'gen_ai.request.max_tokens', '1024'),
    toJSONString(map('service.name', service_name, 'service.version', '1.4.2', 'deployment.environment', 'prod',
                     'host.name', concat('host-', toString(number % 16))))
FROM (
    SELECT
        number,
        -- more traffic in the last weeks and in working hours: a skewed age, a diurnal bump
        toDateTime64({anchor}, 9, 'UTC') - toIntervalMillisecond(toUInt64(pow(randCanonical(), 1.3) * {DAYS} * 86400000)) AS ts,
        round(200 + randExponential(1 / 1500.), 1) AS duration_ms,
        lower(concat(hex(cityHash64(number, 1)), hex(cityHash64(number, 2)))) AS trace_id,
        lower(hex(cityHash64(number, 3))) AS span_id,
        toUInt32(rand(1) % 100) AS m,
        {model_index} AS mi,
        {_array(p for p, *_ in MODELS)}[mi] AS provider,
        {_array(name for _, name, *_ in MODELS)}[mi] AS model,
        [{",".join(str(m[2]) for m in MODELS)}][mi] AS in_price,
        [{",".join(str(m[3]) for m in MODELS)}][mi] AS out_price,
        {_array(SERVICES)}[1 + toUInt32(pow(randCanonical(), 2) * {len(SERVICES)})] AS service_name,
        {_array(PROJECTS)}[1 + toUInt32(pow(randCanonical(), 1.5) * {len(PROJECTS)})] AS project,
        {_array(FEATURES)}[1 + toUInt32(pow(randCanonical(), 2) * {len(FEATURES)})] AS feature,
        concat('user-', toString(toUInt32(pow(randCanonical(), 3) * 20000))) AS user_id,
        toUInt64(exp(4 + randCanonical() * 6)) AS input_tokens,
        if(model LIKE 'text-embedding%', 0, toUInt64(exp(2 + randCanonical() * 5.5))) AS output_tokens,
        if(rand(2) % 3 = 0, toUInt64(input_tokens * 0.8), 0) AS cache_read,
        toUInt64(0) AS cache_write,
        if(model LIKE 'o3%', toUInt64(output_tokens * 0.5), 0) AS reasoning,
        rand(3) % 100 < 2 AS is_error,
        rand(4) % 100 != 0 AS priced,
        (input_tokens - cache_read) * in_price / 1e6 AS input_cost,
        cache_read * in_price * 0.1 / 1e6 AS cache_read_cost,
        output_tokens * out_price / 1e6 AS output_cost
    FROM numbers({rows})
)
"""


BUDGETS_SQL = """
INSERT INTO llm_budgets (scope, scope_value, period, amount_usd) VALUES
    ('all', '', 'month', 250000), ('all', '', 'day', 9000), ('project', 'checkout', 'month', 40000),
    ('project', 'search', 'day', 1500), ('feature', 'feature-00', 'month', 30000), ('user', 'user-0', 'day', 50)
"""


def schema_hash() -> str:
    from otel_llmcost.store import migrations

    digest = hashlib.sha256()
    for version, name, sql in migrations():
        digest.update(f"{version}{name}{sql}".encode())
    digest.update(generator_sql(0, 0).encode())
    return digest.hexdigest()[:16]


MERGED = ("llm_spans", "llm_rollup_1m", "llm_user_rollup_1m")


def merge_tables(store, tables=MERGED) -> None:
    """The one bulk INSERT leaves each table in several unmerged parts per month (each rollup in ~15, repeating
    the same (minute, key) rows: 2.9M rows in llm_rollup_1m instead of 0.8M); a server's background merges
    collapse them soon after the inserts, as far as the engine then picks, which varies from run to run (a
    FINAL query over `llm_spans` took 70 ms with one part per month and 820 ms with six). Merged once, the
    store is in one steady state, the same in every run."""
    for table in tables:
        store.command(f"OPTIMIZE TABLE {table} FINAL")


def ensure_store(rows: int):
    """(Store, anchor epoch seconds, generation seconds or None when reused)."""
    from otel_llmcost.store import Store

    directory = DATA_DIR / f"store-{rows}"
    meta_path = DATA_DIR / f"store-{rows}.json"
    key = schema_hash()
    if meta_path.exists() and directory.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and time.time() - meta["anchor"] < MAX_AGE_S:
            store = Store(f"chdb://{directory}")
            unmerged = [t for t in MERGED if t not in meta.get("merged", ())]  # a store cached before
            if unmerged:
                merge_tables(store, unmerged)
                meta_path.write_text(json.dumps({**meta, "merged": MERGED}))
            return store, meta["anchor"], None
    shutil.rmtree(directory, ignore_errors=True)
    meta_path.unlink(missing_ok=True)
    directory.mkdir(parents=True)
    store = Store(f"chdb://{directory}")
    store.migrate()
    anchor = int(time.time())
    log(f"queries: generating {rows:,} spans in {directory} ...")
    t0 = time.monotonic()
    store.command(generator_sql(rows, anchor))
    store.command(BUDGETS_SQL)
    merge_tables(store)
    took = time.monotonic() - t0
    meta_path.write_text(json.dumps({"key": key, "anchor": anchor, "rows": rows, "generation_s": took,
                                     "merged": MERGED}))
    return store, anchor, took


def own_queries(anchor: int) -> list[tuple[str, str, dict | None]]:
    now = f"toDateTime({anchor}, 'UTC')"
    return [
        ("rollup: spend per day by project, 30 d",
         f"SELECT toDate(minute) AS day, project, sum(cost_usd) AS cost FROM llm_rollup_1m "
         f"WHERE minute >= {now} - INTERVAL 30 DAY GROUP BY day, project ORDER BY day, cost DESC", None),
        ("rollup: spend per hour by model, 24 h",
         f"SELECT toStartOfHour(minute) AS hour, model, sum(cost_usd) AS cost, sum(calls) AS calls FROM llm_rollup_1m "
         f"WHERE minute >= {now} - INTERVAL 24 HOUR GROUP BY hour, model ORDER BY hour", None),
        ("rollup: top 10 features by spend, 7 d",
         f"SELECT feature, sum(cost_usd) AS cost, sum(calls) AS calls, sum(cache_savings_usd) AS saved "
         f"FROM llm_rollup_1m WHERE minute >= {now} - INTERVAL 7 DAY GROUP BY feature ORDER BY cost DESC LIMIT 10", None),
        ("rollup: month to date by service and provider",
         f"SELECT service_name, provider, sum(cost_usd), sum(input_tokens), sum(output_tokens), sum(errors) "
         f"FROM llm_rollup_1m WHERE minute >= toStartOfMonth({now}) GROUP BY service_name, provider", None),
        ("user rollup: top 20 users by spend, 7 d",
         f"SELECT user_id, sum(cost_usd) AS cost, sum(calls) FROM llm_user_rollup_1m "
         f"WHERE minute >= {now} - INTERVAL 7 DAY GROUP BY user_id ORDER BY cost DESC LIMIT 20", None),
        ("raw: p50/p95 duration by model, 24 h",
         f"SELECT response_model, quantiles(0.5, 0.95)(duration_ms), count() FROM llm_spans "
         f"WHERE timestamp >= {now} - INTERVAL 24 HOUR GROUP BY response_model", None),
        ("raw: unpriced calls, 24 h (FINAL)",
         f"SELECT request_model, price_note, count() FROM llm_spans FINAL WHERE price_status = 'unpriced' "
         f"AND timestamp >= {now} - INTERVAL 24 HOUR GROUP BY request_model, price_note", None),
        ("raw: spend by host (resource attribute), 24 h",
         f"SELECT resource_attributes['host.name'] AS host, sum(cost_usd), count() FROM llm_spans "
         f"WHERE timestamp >= {now} - INTERVAL 24 HOUR GROUP BY host ORDER BY host", None),
        ("raw: spend by host, grouped by resource_json first (README), 24 h",
         f"SELECT JSONExtractString(resource_json, 'host.name') AS host, sum(cost), sum(calls) FROM ("
         f"SELECT resource_json, sum(cost_usd) AS cost, count() AS calls FROM llm_spans "
         f"WHERE timestamp >= {now} - INTERVAL 24 HOUR GROUP BY resource_json) GROUP BY host ORDER BY host", None),
        ("raw: one trace by id (bloom filter index)",
         "SELECT * FROM llm_spans WHERE trace_id = lower(concat(hex(cityHash64(4242, 1)), hex(cityHash64(4242, 2))))",
         None),
    ]


def report_queries(anchor: int) -> list[tuple[str, str, dict | None]]:
    from otel_llmcost.cli import REPORT_SQL

    # The report is relative to now(); the data ends at the anchor, a few seconds or hours ago.
    lag = int(time.time()) - anchor
    return [
        ("CLI `report --since 24h`", REPORT_SQL, {"seconds": 86400 + lag}),
        ("CLI `report --since 30d`", REPORT_SQL, {"seconds": 30 * 86400 + lag}),
    ]


def alert_queries(anchor: int) -> tuple[list[tuple[str, str, dict | None]], str]:
    try:
        from otel_llmcost.alerts import TO_TIME, load_rules
    except Exception as exc:  # the alerts package is optional for this harness
        return [], f"alert rules not loaded: {exc}"
    try:
        rules = load_rules()
    except Exception as exc:
        return [], f"alert rules not loaded: {exc}"
    return [(f"alert: {rule.name}", rule.render().replace(TO_TIME, f"toDateTime({anchor}, 'UTC')"), None)
            for rule in rules], ""


def _panels(node, title=""):
    if isinstance(node, dict):
        title = node.get("title", title) if "targets" in node or "panels" in node or "rawSql" not in node else title
        if isinstance(node.get("rawSql"), str):
            yield title, node["rawSql"]
        for value in node.values():
            yield from _panels(value, title)
    elif isinstance(node, list):
        for value in node:
            yield from _panels(value, title)


def dashboard_queries(store, anchor: int) -> tuple[list[tuple[str, str, dict | None]], str]:
    files = sorted((ROOT / "grafana").rglob("*.json")) if (ROOT / "grafana").exists() else []
    if not files:
        return [], "no dashboards under grafana/ yet"
    try:
        from otel_llmcost.alerts.macros import ALL, expand
    except Exception as exc:
        return [], f"macros not loaded: {exc}"
    queries, problems = [], []
    start = anchor - 86400
    for path in files:
        try:
            document = json.loads(path.read_text())
        except ValueError:
            continue
        dashboard = document.get("dashboard", document)
        variables = {}
        for var in (dashboard.get("templating") or {}).get("list", []):
            current = (var.get("current") or {}).get("value")
            if current in (None, "", "$__all", ["$__all"]) or var.get("includeAll") and current in ("All", ["All"]):
                variables[var["name"]] = ALL
            else:
                variables[var["name"]] = current
        for title, raw in _panels(dashboard):
            name = f"panel: {path.stem} / {title or '?'}"
            try:
                sql = expand(raw, start, anchor, 60, {k: _all_values(store, k, v, ALL) for k, v in variables.items()})
            except Exception as exc:
                problems.append(f"{name}: {exc}")
                continue
            queries.append((name, sql, None))
    return queries, "; ".join(problems)


def _all_values(store, name: str, value, all_marker):
    """All stands for every value of the variable: the distinct values of the column of that name."""
    if value != all_marker:
        return value
    column = {"service": "service_name", "model": "model", "user": "user_id"}.get(name, name)
    try:
        rows = store.query(f"SELECT DISTINCT {column} FROM llm_rollup_1m LIMIT 1000").rows
        return [str(r[0]) for r in rows] or all_marker
    except Exception:
        return all_marker


def run(rounds: int = 5, quick: bool = False) -> str:
    rows = 200_000 if quick else ROWS
    rounds = max(rounds, 1 if quick else 10)
    store, anchor, generation = ensure_store(rows)
    try:
        counts = store.query("SELECT (SELECT count() FROM llm_spans), (SELECT count() FROM llm_rollup_1m), "
                             "(SELECT count() FROM llm_spans WHERE timestamp >= now() - INTERVAL 1 DAY)").rows[0]
        alerts, alert_note = alert_queries(anchor)
        panels, panel_note = dashboard_queries(store, anchor)
        queries = panels + alerts + report_queries(anchor) + own_queries(anchor)
        times: dict[str, list[float]] = {name: [] for name, _, _ in queries}
        errors: dict[str, str] = {}
        result_rows: dict[str, int] = {}
        slow: set[str] = set()
        for name, sql, params in queries:  # warm-up (and the error, if any)
            try:
                t0 = time.perf_counter()
                result_rows[name] = len(store.query(sql, params).rows)
                if time.perf_counter() - t0 > 1.0:
                    slow.add(name)  # over a second: 3 rounds are enough to say so, and keep `make bench` short
            except Exception as exc:
                errors[name] = str(exc).splitlines()[0][:160]
        for r in range(rounds):
            log(f"queries round {r + 1}/{rounds}")
            for name, sql, params in queries:  # interleaved: every query once per round
                if name in errors or (name in slow and r >= 3):
                    continue
                t0 = time.perf_counter()
                store.query(sql, params)
                times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        store.close()
    table_rows = []
    for name, _, _ in queries:
        if name in errors:
            table_rows.append([name, "error", "—", errors[name]])
            continue
        p95 = percentile(times[name], 0.95)
        verdict = "ok" if p95 < 100 else "**over 100 ms**"
        table_rows.append([name, f"{median(times[name]):.1f}", f"{p95:.1f}", f"{result_rows.get(name, 0)} rows, {verdict}"])
    made = f"generated in {generation:.0f} s" if generation is not None else "reused from the cache"
    notes = (f"\n\nEmbedded store (chDB, in-process), {counts[0]:,} rows in `llm_spans` over {DAYS} days "
             f"({counts[2]:,} in the last 24 h), {counts[1]:,} rows in `llm_rollup_1m`; every table merged once "
             f"(`OPTIMIZE ... FINAL`, as a server's background merges would, in time); store {made}. "
             f"Wall ms per query including the client's result conversion, {rounds} interleaved rounds after a warm-up "
             f"(3 for a query whose warm-up took over 1 s). "
             + (f"Dashboards: {panel_note}. " if panel_note else "")
             + (f"Alerts: {alert_note}. " if alert_note else ""))
    return table(["query", "median ms", "p95 ms", "result"], table_rows) + notes


if __name__ == "__main__":
    print(run())
