"""Grafana provisioning: every SQL run on chDB (what Grafana requires of the files: test_grafana_contract.py).

Grafana itself cannot run here, so the SQL is the contract: each panel query and each alert query is
expanded the way the ClickHouse plugin expands its macros and template variables, then run against the
real engine on seeded history.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from otel_llmcost.alerts import load_rules
from otel_llmcost.grafana.dashboards import PANELS, dashboards
from otel_llmcost.levers.savings import Finder, save
from otel_llmcost.alerts.macros import ALL, expand
from otel_llmcost.grafana.ids import DATASOURCE_TYPE, DATASOURCE_UID, DRILLDOWN_UID
from otel_llmcost.grafana.provision import generated_files
from otel_llmcost.budgets import set_budget
from otel_llmcost.simulate import seed_store

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
END = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)
ALL_VARS = {v: ALL for v in ("service", "project", "feature", "provider", "model")}


@pytest.fixture(scope="module")
def store(empty_store):
    seed_store(empty_store, 8, END, "spike")
    set_budget(empty_store, "all", None, "day", 50)
    set_budget(empty_store, "all", None, "month", 600)
    # a savings run, as `otel-llmcost savings --save` stores it, for the savings panel
    findings = Finder(empty_store, 30 * 86400).find()
    assert findings
    save(empty_store, findings, 30 * 86400)
    return empty_store


def read_yaml(relative: str) -> dict:
    return yaml.safe_load((GRAFANA / relative).read_text())


def test_committed_generated_files_are_up_to_date():
    for relative, text in generated_files().items():
        path = GRAFANA / relative
        assert path.exists(), f"{path} missing: run `otel-llmcost alerts provision`"
        assert path.read_text() == text, f"{path} is stale: run `otel-llmcost alerts provision`"


def test_dashboards_hold_the_panels_and_variables():
    built = dashboards()
    assert set(built) == {"llmcost-overview", "llmcost-drilldown"}
    for name, document in built.items():
        on_disk = json.loads((GRAFANA / "dashboards" / f"{name}.json").read_text())
        assert on_disk == document
        variables = document["templating"]["list"]
        assert [v["name"] for v in variables] == ["service", "project", "feature", "provider", "model"]
        for variable in variables:
            assert variable["includeAll"] and variable["multi"]
            assert variable["datasource"]["uid"] == DATASOURCE_UID
        panels = document["panels"]
        assert panels and all(p["datasource"]["uid"] == DATASOURCE_UID for p in panels)
        for panel in panels:
            (target,) = panel["targets"]
            assert target["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
            assert target["rawSql"] == PANELS[panel["title"]].sql and panel["id"] == PANELS[panel["title"]].id
        titles = {p["title"] for p in panels}
        assert "Calls without a known cost" in titles
        if name == "llmcost-overview":
            assert {"Spend today vs daily budget", "Month to date, projected month end vs budget",
                    "Spend by provider", "Spend by model", "Spend by service", "Spend by feature",
                    "Month over month", "Cost per request by model", "Top 10 features by cost", "Top users",
                    "Share of spend of the top 20% of users", "Prompt-cache hit rate", "Saved by caching",
                    "Unpriced calls, errors, tokens per minute"} <= titles
        # gridPos: panels never overlap
        cells = set()
        for panel in panels:
            g = panel["gridPos"]
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & area, panel["title"]
            cells |= area


def panel_rows(store, title: str, variables=None, hours: int = 24, interval: int = 300):
    sql = expand(PANELS[title].sql, END - timedelta(hours=hours), END, interval, variables or ALL_VARS)
    assert "$" not in re.sub(r"'(?:[^'\\]|\\.)*'", "''", sql), sql  # no macro or variable left outside literals
    result = store.query(sql)
    return [dict(zip(result.column_names, row)) for row in result.rows]


@pytest.mark.parametrize("title", sorted(PANELS))
def test_every_panel_query_runs_with_all_and_with_a_selection(store, title):
    rows = panel_rows(store, title)
    assert rows, title
    picked = panel_rows(store, title, {"service": ["checkout-assistant"], "project": ["shop"],
                                       "feature": ["product-qa", "order-summary"], "provider": ["openai"],
                                       "model": ["gpt-4o"]})
    if title in ("Top users", "Cost per request by model", "Top 10 features by cost", "Most expensive calls",
                 "By service, feature and model"):
        assert rows != picked
    for row in picked:
        for column in ("model", "service_name", "feature", "provider"):
            if column in row:
                assert row[column] in ("gpt-4o", "checkout-assistant", "product-qa", "openai"), row


def test_panel_numbers(store):
    today = panel_rows(store, "Spend today vs daily budget")[0]
    expected = store.query("SELECT sum(cost_usd) FROM llm_spans FINAL WHERE timestamp >= '2026-11-18 00:00:00' "
                           "AND timestamp < '2026-11-18 15:00:00'").rows[0][0]
    assert today["today_usd"] == expected and today["daily_budget_usd"] == Decimal(50)
    month = panel_rows(store, "Month to date, projected month end vs budget")[0]
    # 8 days of history by Nov 18 15:00 (17.625 days into a 30-day month)
    assert float(month["projected_month_end_usd"]) == pytest.approx(float(month["month_to_date_usd"]) / 17.625 * 30,
                                                                    rel=1e-6)
    assert month["monthly_budget_usd"] == Decimal(600)
    top = panel_rows(store, "Top 10 features by cost")
    assert len(top) == 6 and [r["spend_usd"] for r in top] == sorted((r["spend_usd"] for r in top), reverse=True)
    share = panel_rows(store, "Share of spend of the top 20% of users")[0]
    assert 0.2 < share["top_20pct_share"] <= 1 and share["users"] > 20
    series = panel_rows(store, "Spend by model", interval=3600)
    assert {r["model"] for r in series} == {"gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "claude-haiku-4-5",
                                           "claude-sonnet-4-5"}
    assert len({r["time"] for r in series}) == 24  # one point per hour ($__timeInterval)
    cache = panel_rows(store, "Saved by caching")[0]
    assert 0 < cache["prompt_cache_hit_rate"] < 1 and cache["prompt_cache_saved_usd"] > 0
    assert cache["app_cache_hits"] > 0 and cache["app_cache_saved_usd"] > 0
    mom = panel_rows(store, "Month over month")
    assert [r["month"] for r in mom] == ["2026-11"]
    per_minute = panel_rows(store, "Unpriced calls, errors, tokens per minute", interval=3600)
    tokens = store.query("SELECT sum(input_tokens + output_tokens) FROM llm_spans FINAL "
                         "WHERE timestamp >= '2026-11-18 14:00:00' AND timestamp < '2026-11-18 15:00:00'").rows[0][0]
    last = max(per_minute, key=lambda r: r["time"])
    assert float(last["tokens_per_minute"]) == pytest.approx(tokens / 60)


def test_variable_queries_list_the_values(store):
    for variable in dashboards()["llmcost-overview"]["templating"]["list"]:
        sql = expand(variable["query"], END - timedelta(days=1), END)
        values = [row[0] for row in store.query(sql).rows]
        assert values and values == sorted(values), variable["name"]


def test_alert_rules_file_structure_and_queries(store):
    document = read_yaml("provisioning/alerting/llmcost-rules.yaml")
    assert document["apiVersion"] == 1
    (group,) = document["groups"]
    assert group["interval"] == "1m" and group["folder"]
    rules = {r.name: r for r in load_rules()}
    assert [r["title"] for r in group["rules"]] == list(rules)
    for entry in group["rules"]:
        assert entry["condition"] == "C" and entry["noDataState"] == "OK"
        refs = {q["refId"]: q for q in entry["data"]}
        assert {"A", "B", "C"} <= set(refs)
        assert refs["C"]["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [0]}
        spec = rules[entry["title"]]
        assert set(refs) == {"A", "B", "C", *(c.upper() for c in spec.values), *(["TOP"] if spec.texts else [])}
        assert entry["labels"]["severity"] == spec.severity
        assert "$values." in entry["annotations"]["summary"] and entry["annotations"]["dashboard_url"].count(
            f"/d/{DRILLDOWN_UID}/") == 1
        for ref, query in refs.items():
            if query["datasourceUid"] == "__expr__":
                continue
            model = query["model"]
            assert model["datasource"]["uid"] == DATASOURCE_UID and model["format"] == 1
            # the plugin expands $__toTime to the end of the rule's relative time range: the evaluation time
            sql = expand(model["rawSql"], END - timedelta(minutes=10), END)
            if ref in ("A", "VALUE"):
                store.query(sql)  # runs (the others differ only in the column they keep)
            columns = store.query(f"DESCRIBE ({sql})").rows
            names, types = [c[0] for c in columns], [c[1] for c in columns]
            # Grafana turns table rows into alert instances: text columns become labels, and there must be
            # exactly one numeric column (the value)
            kinds = ["text" if "String" in t else "number" for t in types]
            assert kinds.count("number") == 1 and kinds[-1] == "number", (entry["title"], ref, types)
            assert names[:len(spec.labels)] == spec.labels


def test_contact_point_policy_templates_and_datasource():
    points = yaml.safe_load((GRAFANA / "slack/llmcost-contact-points.yaml").read_text())
    (point,) = points["contactPoints"]
    (receiver,) = point["receivers"]
    assert receiver["type"] == "slack" and receiver["settings"]["url"] == "${LLMCOST_SLACK_WEBHOOK_URL}"
    assert "llmcost.slack.text" in receiver["settings"]["text"]

    policies = yaml.safe_load((GRAFANA / "slack/llmcost-policies.yaml").read_text())
    (policy,) = policies["policies"]
    assert policy["receiver"] == point["name"] and all(r["receiver"] == point["name"] for r in policy["routes"])
    assert ["severity", "=", "page"] in policy["routes"][0]["object_matchers"]
    assert {"alertname", "service_name", "project", "feature"} <= set(policy["group_by"])

    templates = read_yaml("provisioning/alerting/llmcost-templates.yaml")
    (template,) = templates["templates"]
    for name in ("llmcost.slack.title", "llmcost.slack.text", "llmcost.slack.line"):
        assert f'define "{name}"' in template["template"]
    assert ".Annotations.summary" in template["template"] and ".Annotations.dashboard_url" in template["template"]

    for path in ("provisioning/datasources/llmcost-clickhouse.yaml", "collector/datasources/llmcost-clickhouse.yaml"):
        (source,) = read_yaml(path)["datasources"]
        assert source["type"] == DATASOURCE_TYPE and source["uid"] == DATASOURCE_UID
        assert str(source["secureJsonData"]["password"]).startswith("${LLMCOST_")
    (source,) = read_yaml("provisioning/datasources/llmcost-clickhouse.yaml")["datasources"]
    assert all(str(v).startswith("${LLMCOST_CLICKHOUSE_") for v in source["jsonData"].values())

    provider = read_yaml("provisioning/dashboards/llmcost.yaml")["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_no_secret_is_committed():
    for path in GRAFANA.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"hooks\.slack\.com/services/\w", text), path
            assert not re.search(r"password:\s*(?!\$\{)\S", text), path


def test_provision_needs_no_grafana_sdk(tmp_path):
    """`otel-llmcost alerts provision` runs in every install: nothing it imports needs grafana-foundation-sdk."""
    import subprocess
    import sys

    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'grafana_foundation_sdk':\n"
               "            raise ImportError('blocked: ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "from otel_llmcost.cli import main\n"
               "sys.exit(main(['alerts', 'provision', '--out', sys.argv[1]]))\n")
    done = subprocess.run([sys.executable, "-c", blocker, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for relative, text in generated_files().items():
        assert (tmp_path / relative).read_text() == text
