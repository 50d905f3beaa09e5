"""What Grafana and the ClickHouse plugin require of the files we ship, written from their documented behaviour
and source (each test names the file it follows). No Grafana binary runs here; these checks are the evidence
that the provisioning loads at start-up in every documented set-up, and that the queries mean what they say.

Sources (github.com/grafana/grafana unless said otherwise):
- pkg/services/provisioning/alerting/rules_types.go: `AlertRuleGroupV1.MapToModel`, `AlertRuleV1.mapToModel`
  (title, uid, condition, data required; `for` and the group interval parsed by Prometheus' model.ParseDuration;
  noDataState / execErrState from a fixed set; annotations expanded with `ValueWithBracedVars`).
- pkg/services/ngalert/models/alert_rule.go: `ValidateAlertRule` (util.ValidateUID: at most 40 characters of
  [a-zA-Z0-9-_]; interval a multiple of the 10 s base interval; labels the user cannot set),
  `NoDataStateFromString`, `ErrStateFromString`, `SetDashboardAndPanelFromAnnotations` (both of
  `__dashboardUid__` and `__panelId__` or neither; the panel id an integer).
- pkg/services/provisioning/provisioning.go: a failed alerting provisioning stops Grafana's start-up.
- pkg/services/provisioning/values: provisioning values expand `$VAR` / `${VAR}` from the environment.
- grafana/alerting receivers/slack: a Slack integration without `url` uses the chat API and then requires
  `token` and `recipient`.
- grafana/clickhouse-datasource src/data/CHDatasource.ts (`applyConditionalAll`, `format`) and pkg/macros
  (macros.go, statement.go: comments blanked before expansion); grafana/scenes formatRegistry.ts (variable
  formats). Our expansion of them is otel_llmcost/alerts/macros.py.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from gotemplate import Renderer, TemplateError
from otel_llmcost.alerts import format_money, load_rules, summarize
from otel_llmcost.alerts.backtest import evaluate
from otel_llmcost.grafana.dashboards import PANELS, VARIABLES, dashboards
from otel_llmcost.grafana.ids import DATASOURCE_UID
from otel_llmcost.alerts.macros import ALL, expand, js_replace_first, strip_comments
from otel_llmcost.grafana.provision import RULE_PANELS
from otel_llmcost.store import StoreError

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
RULES_FILE = GRAFANA / "provisioning/alerting/llmcost-rules.yaml"
PROM_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
ENV_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def prom_seconds(text: str) -> float:
    """Prometheus model.ParseDuration (common/model/time.go): units y w d h m s ms, in that order, no spaces."""
    if text == "0":
        return 0
    match = PROM_DURATION.match(text)
    if not text or not match:
        raise ValueError(f"not a valid duration string: {text!r}")
    units = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
    return sum(int(g) * u for g, u in zip(match.groups(), units) if g)


# -- the set-ups ------------------------------------------------------------------------------------------------

def compose_setup(name: str) -> tuple[dict[str, str], list[Path], dict[str, str]]:
    """A compose file's Grafana: its environment, the provisioning files it mounts, the dashboards folder."""
    document = read_yaml(GRAFANA / name)
    service = document["services"]["grafana"]
    env = {k: str(v) for k, v in service["environment"].items()}
    files: list[Path] = []
    mounts = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = GRAFANA / source
        if target.startswith("/etc/grafana/provisioning"):
            files += sorted(p for p in (GRAFANA / source).rglob("*.yaml"))
    return env, files, {k: str(v) for k, v in mounts.items()}


def compose_env(env: dict[str, str], shell: dict[str, str]) -> dict[str, str]:
    """What the container gets: compose's `${VAR:-default}` from the shell's environment."""
    def sub(match: re.Match) -> str:
        return shell.get(match.group(1)) or match.group(2)

    return {k: re.sub(r"\$\{(\w+):-([^}]*)\}", sub, v) for k, v in env.items()}


def expand_env(text: str, env: dict[str, str]) -> str:
    """pkg/services/provisioning/values: an unset variable expands to the empty string."""
    return ENV_REF.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


SETUPS = {
    # name -> (files provisioned, the Grafana process's environment)
    "compose, no Slack": lambda: _compose("docker-compose.yaml", {}),
    "compose, Slack files added": lambda: _compose("docker-compose.yaml",
                                                   {"LLMCOST_SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/x"},
                                                   slack=True),
    "collector compose, no Slack": lambda: _compose("docker-compose.collector.yaml", {"LLMCOST_COLLECTOR_TOKEN": "t"}),
    "own Grafana, files copied": lambda: (
        sorted((GRAFANA / "provisioning").rglob("*.yaml")),
        {"LLMCOST_CLICKHOUSE_HOST": "ch", "LLMCOST_CLICKHOUSE_PORT": "9000", "LLMCOST_CLICKHOUSE_PROTOCOL": "native",
         "LLMCOST_CLICKHOUSE_SECURE": "false", "LLMCOST_CLICKHOUSE_USER": "reader",
         "LLMCOST_CLICKHOUSE_PASSWORD": "x", "LLMCOST_CLICKHOUSE_DATABASE": "llmcost"}),
}


def _compose(name: str, shell: dict[str, str], slack: bool = False):
    env, files, _ = compose_setup(name)
    if slack:
        files += sorted((GRAFANA / "slack").glob("*.yaml"))
    return files, compose_env(env, shell)


def of_kind(files: list[Path], key: str) -> list[dict]:
    return [doc for doc in (read_yaml(f) for f in files) if isinstance(doc, dict) and key in doc]


def slack_settings_error(settings: dict) -> str | None:
    """grafana/alerting receivers/slack: without a webhook `url` the integration posts to the chat API, which
    needs a `token` and a `recipient`."""
    if settings.get("url"):
        return None
    if not settings.get("token"):
        return "token must be specified when using the Slack chat API"
    if not settings.get("recipient"):
        return "recipient must be specified when using the Slack chat API"
    return None


def start_up_errors(files: list[Path], env: dict[str, str]) -> list[str]:
    """What makes Grafana's provisioning of these files fail at start (each a fatal error)."""
    errors = []
    datasources = {d["uid"] for doc in of_kind(files, "datasources") for d in doc["datasources"]}
    receivers = {"grafana-default-email"}  # a new organisation's own contact point
    for doc in of_kind(files, "contactPoints"):
        for point in doc["contactPoints"]:
            receivers.add(point["name"])
            for receiver in point["receivers"]:
                if not str(receiver.get("uid", "")).strip():
                    errors.append(f"contact point {point['name']}: no uid")
                settings = {k: expand_env(str(v), env) for k, v in receiver.get("settings", {}).items()}
                if receiver["type"] == "slack" and (problem := slack_settings_error(settings)):
                    errors.append(f"contact point {point['name']}: {problem}")
    for doc in of_kind(files, "policies"):
        for policy in doc["policies"]:
            stack = [policy]
            while stack:
                route = stack.pop()
                if "receiver" in route and route["receiver"] not in receivers:
                    errors.append(f"policy: receiver {route['receiver']} does not exist")
                for key in ("group_wait", "group_interval", "repeat_interval"):
                    if key in route:
                        prom_seconds(route[key])
                stack += route.get("routes", [])
    dashboards_by_uid = {d["uid"]: d for d in dashboards().values()}
    for doc in of_kind(files, "groups"):
        for group in doc["groups"]:
            errors += rule_group_errors(group, datasources, dashboards_by_uid)
    return errors


def rule_group_errors(group: dict, datasources: set[str], dashboards_by_uid: dict[str, dict]) -> list[str]:
    errors = []
    if not str(group.get("name", "")).strip() or not str(group.get("folder", "")).strip():
        errors.append("rule group has no name or folder")
    interval = prom_seconds(group["interval"])
    if interval <= 0 or interval % 10:
        errors.append(f"interval {group['interval']} is not a multiple of the 10 s base interval")
    for rule in group["rules"]:
        title = rule.get("title", "")
        if not title or not rule.get("uid"):
            errors.append(f"rule {title!r}: no title or uid")
        if not re.fullmatch(r"[a-zA-Z0-9\-_]{1,40}", rule.get("uid", "")):
            errors.append(f"rule {title}: uid {rule.get('uid')!r} is not a valid UID")
        refs = [q["refId"] for q in rule["data"]]
        if not refs or len(set(refs)) != len(refs):
            errors.append(f"rule {title}: no data, or a refId twice")
        if rule.get("condition") not in refs:
            errors.append(f"rule {title}: condition {rule.get('condition')} is not a refId of its data")
        for query in rule["data"]:
            uid = query["datasourceUid"]
            if uid != "__expr__" and uid not in datasources:
                errors.append(f"rule {title}: datasource {uid} is not provisioned")
            if uid == "__expr__" and query["model"].get("expression") not in (None, *refs):
                errors.append(f"rule {title}: expression {query['refId']} reads a missing refId")
            span = query.get("relativeTimeRange", {})
            if span.get("from", 0) < span.get("to", 0):
                errors.append(f"rule {title}: relativeTimeRange from < to")
        prom_seconds(rule.get("for", "0s"))
        if rule.get("noDataState", "NoData") not in ("Alerting", "NoData", "OK", "KeepLast"):
            errors.append(f"rule {title}: noDataState {rule.get('noDataState')}")
        if rule.get("execErrState", "Alerting") not in ("Alerting", "Error", "OK", "KeepLast"):
            errors.append(f"rule {title}: execErrState {rule.get('execErrState')}")
        reserved = {"__grafana_autogenerated__", "__grafana_receiver__", "__grafana_route_settings_hash__"}
        if reserved & set(rule.get("labels", {})):
            errors.append(f"rule {title}: reserved label")
        annotations = rule.get("annotations", {})
        has_dashboard, has_panel = "__dashboardUid__" in annotations, "__panelId__" in annotations
        if has_dashboard != has_panel:
            errors.append(f"rule {title}: both annotations __dashboardUid__ and __panelId__ must be specified")
        if has_panel:
            if not re.fullmatch(r"-?\d+", str(annotations["__panelId__"])):
                errors.append(f"rule {title}: __panelId__ is not an integer")
            board = dashboards_by_uid.get(annotations["__dashboardUid__"])
            if board is None or int(annotations["__panelId__"]) not in {p["id"] for p in board["panels"]}:
                errors.append(f"rule {title}: links to a panel that does not exist")
        for key, text in annotations.items():
            if "${" in text:
                errors.append(f"rule {title}: annotation {key} has a braced env reference")
    return errors


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_every_documented_set_up_provisions_without_a_start_up_error(setup):
    files, env = SETUPS[setup]()
    assert of_kind(files, "groups"), "the rules are provisioned"
    assert of_kind(files, "datasources") and of_kind(files, "providers")
    assert start_up_errors(files, env) == []


def test_the_checks_catch_what_stopped_grafana_before():
    """The same checks on the files as they were: each failure Grafana reported at start-up is found."""
    group = read_yaml(RULES_FILE)["groups"][0]
    broken = json.loads(json.dumps(group))
    del broken["rules"][0]["annotations"]["__panelId__"]
    broken["rules"][1]["annotations"]["summary"] = "spend ${{ printf \"%.2f\" $values.A.Value }}"
    broken["rules"][2]["condition"] = "D"
    broken["rules"][3]["annotations"]["__panelId__"] = "999"
    errors = rule_group_errors(broken, {DATASOURCE_UID}, {d["uid"]: d for d in dashboards().values()})
    assert any("both annotations" in e for e in errors) and any("braced env" in e for e in errors)
    assert any("condition D" in e for e in errors) and any("does not exist" in e for e in errors)
    # the Slack contact point with the variable unset: the chat API without token or recipient
    files = [GRAFANA / "slack/llmcost-contact-points.yaml"]
    assert start_up_errors(files, {}) == ["contact point llmcost-slack: token must be specified when using the "
                                          "Slack chat API"]


def test_slack_is_added_with_its_own_files_and_is_routed():
    default = sorted((GRAFANA / "provisioning").rglob("*.yaml"))
    assert not of_kind(default, "contactPoints") and not of_kind(default, "policies"), \
        "without Slack the alerts follow the organisation's own policy"
    slack = sorted((GRAFANA / "slack").glob("*.yaml"))
    (policy,) = of_kind(slack, "policies")[0]["policies"]
    assert policy["receiver"] == "llmcost-slack"
    assert ["severity", "=", "page"] in policy["routes"][0]["object_matchers"]
    for route in policy["routes"]:
        for matcher in route["object_matchers"]:
            assert len(matcher) == 3 and matcher[1] in ("=", "!=", "=~", "!~")
    (point,) = of_kind(slack, "contactPoints")[0]["contactPoints"]
    assert point["receivers"][0]["settings"]["url"] == "${LLMCOST_SLACK_WEBHOOK_URL}"


def test_compose_installs_the_plugin_before_start():
    for name in ("docker-compose.yaml", "docker-compose.collector.yaml"):
        env, _, mounts = compose_setup(name)
        assert env["GF_PLUGINS_PREINSTALL_SYNC"] == "grafana-clickhouse-datasource" and "GF_INSTALL_PLUGINS" not in env
        provider = read_yaml(GRAFANA / "provisioning/dashboards/llmcost.yaml")["providers"][0]
        assert Path(mounts[provider["options"]["path"]]) == GRAFANA / "dashboards"
    datasource = read_yaml(GRAFANA / "collector/datasources/llmcost-clickhouse.yaml")["datasources"][0]
    assert datasource["uid"] == DATASOURCE_UID and datasource["jsonData"]["protocol"] == "http"
    assert datasource["jsonData"]["port"] == 8123 and datasource["jsonData"]["username"] == "llmcost"


# -- dashboards -------------------------------------------------------------------------------------------------

def test_dashboards_panels_variables_and_datasources():
    """Dashboard JSON (Grafana's dashboard schema v1, public/app/features/dashboard): unique panel ids, every
    datasource a provisioned uid, every variable a query query of the same datasource, every `$name` in a query a
    variable or a macro, panels inside the 24-column grid."""
    for name, board in dashboards().items():
        on_disk = json.loads((GRAFANA / "dashboards" / f"{name}.json").read_text())
        assert on_disk == board
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
        names = [v["name"] for v in board["templating"]["list"]]
        assert names == list(VARIABLES) and len(set(names)) == len(names)
        for variable in board["templating"]["list"]:
            assert variable["datasource"]["uid"] == DATASOURCE_UID and variable["multi"] and variable["includeAll"]
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
            assert panel["datasource"]["uid"] == DATASOURCE_UID
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID and target["format"] in (0, 1)
                for ref in re.findall(r"\$\{?(\w+)", target["rawSql"]):
                    assert ref.startswith("__") or ref in names, (panel["title"], ref)
                assert "singlequote" not in target["rawSql"] and "sqlstring" not in target["rawSql"]
    for rule, title in RULE_PANELS.items():
        assert title in PANELS and title in {p["title"] for p in dashboards()["llmcost-overview"]["panels"]}, rule


# -- the plugin's macros and Grafana's variables ----------------------------------------------------------------

END = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)


def test_comments_are_blanked_before_the_macros():
    """pkg/macros/statement.go: comments blanked to spaces (length kept), quoted text untouched."""
    sql = "SELECT 1 -- to $__toTime, it's\n, '--not a comment' /* $__fromTime */ AS x"
    comment, block = "-- to $__toTime, it's", "/* $__fromTime */"
    assert strip_comments(sql) == sql.replace(comment, " " * len(comment)).replace(block, " " * len(block))
    expanded = expand(sql, END - timedelta(hours=1), END)
    assert "toDateTime" not in expanded and "'--not a comment'" in expanded


def test_interval_is_at_least_one_second_and_ms_macros_are_their_own():
    """pkg/macros/macros.go: IntervalSeconds and TimeInterval use max(interval, 1 s); fromTime_ms / toTime_ms
    are fromUnixTimestamp64Milli (a plain replace of $__fromTime would leave `toDateTime(..)_ms`)."""
    assert expand("$__interval_s", 0, 10, 0.2) == "1"
    assert expand("$__timeInterval(t)", 0, 10, 0.5) == "toStartOfInterval(toDateTime(t), INTERVAL 1 second)"
    sql = expand("$__fromTime_ms, $__toTime_ms, $__fromTime, $__toTime, $__timeFilter_ms(t)", 100, 200)
    assert sql == ("fromUnixTimestamp64Milli(100000), fromUnixTimestamp64Milli(200000), toDateTime(100), "
                   "toDateTime(200), t >= fromUnixTimestamp64Milli(100000) AND t <= fromUnixTimestamp64Milli(200000)")


def test_variable_selection_all_empty_and_plain_format():
    """CHDatasource.ts: `$__conditionalAll` is 1=1 for All or an empty selection; a plain `$var` is the values
    quoted and joined without escaping; formatRegistry.ts: All stands for every option."""
    cond = "$__conditionalAll(p IN ($project), $project)"
    assert expand(cond, 0, 1, variables={"project": ALL}) == "1=1"
    assert expand(cond, 0, 1, variables={"project": []}) == "1=1"
    assert expand(cond, 0, 1, variables={"project": ["a", "b"]}) == "p IN ('a','b')"
    assert expand("$project", 0, 1, variables={"project": ALL}, options={"project": ["x", "y"]}) == "'x','y'"
    assert expand("${project:singlequote}", 0, 1, variables={"project": ["it's"]}) == "'it\\'s'"
    with pytest.raises(KeyError):
        expand("$project", 0, 1, variables={"project": ALL})  # All outside conditionalAll needs the options


def test_conditional_all_is_put_in_place_by_javascript_replace():
    """CHDatasource.ts replaces the call with `rawQuery.replace(call, phrase)`: in a JavaScript replacement
    `$'` and `$&` are patterns, so a condition with `$'` in it (a regex's end anchor in a literal) would be
    mangled. Ours has no `$` but its variables'."""
    assert js_replace_first("a X b", "X", "[$'] [$&] [$$]") == "a [ b] [X] [$] b"
    mangled = expand("SELECT $__conditionalAll(match(p, '^x$'), $project)", 0, 1, variables={"project": ["x"]})
    assert mangled == "SELECT match(p, '^x)"
    conditions = [(spec.title, c) for spec in PANELS.values()
                  for c in re.findall(r"\$__conditionalAll\((.*?), \$\w+\)(?:\n|$)", spec.sql)]
    assert len(conditions) >= 5 * len(PANELS) - 10
    for title, condition in conditions:
        assert not re.search(r"\$(?!\{\w+:percentencode\})", condition), title


# -- against the engine: rates, quoting, the truth ----------------------------------------------------------------

@pytest.fixture(scope="module")
def store(empty_store):
    from otel_llmcost.simulate import seed_store

    seed_store(empty_store, 2, END, "unpriced")
    return empty_store


def run_panel(store, title, variables=None, interval=60, hours=6):
    sql = expand(PANELS[title].sql, END - timedelta(hours=hours), END, interval,
                 {**{v: ALL for v in VARIABLES}, **(variables or {})})
    result = store.query(sql)
    return [dict(zip(result.column_names, row)) for row in result.rows]


def test_rates_are_the_same_at_every_interval(store):
    """Grafana picks 5-20 s intervals for ranges under about 12 h: a per-minute rate must not depend on it."""
    title = "Unpriced calls, errors, tokens per minute"
    by_interval = {i: run_panel(store, title, interval=i) for i in (5, 20, 60, 300)}
    per_minute = {r["time"]: r["tokens_per_minute"] for r in by_interval[60]}
    assert len(per_minute) > 200
    for interval in (5, 20):
        assert {r["time"]: r["tokens_per_minute"] for r in by_interval[interval]} == per_minute
    truth = store.query("SELECT toStartOfMinute(timestamp) AS m, sum(input_tokens + output_tokens) FROM llm_spans FINAL "
                        "WHERE timestamp >= {a:DateTime} AND timestamp < {b:DateTime} GROUP BY m",
                        {"a": (END - timedelta(hours=1)).replace(tzinfo=None), "b": END.replace(tzinfo=None)}).rows
    naive = {t.replace(tzinfo=None): v for t, v in per_minute.items()}
    assert len(truth) > 30
    for minute, tokens in truth:
        assert naive[minute.replace(tzinfo=None)] == pytest.approx(tokens)
    for row in by_interval[300]:
        start = row["time"]
        inside = [v for t, v in per_minute.items() if start <= t < start + timedelta(minutes=5)]
        # the range starts on a 5-minute boundary: every bucket is whole, its rate the mean of its 5 minutes
        assert row["tokens_per_minute"] == pytest.approx(sum(inside) / 5)


CRAFTED = ["it's", "ends with \\", "back\\'slash", "new\nline", "x') OR 1=1 --", "comma, name", "ü ñ $var {a}"]


def test_crafted_names_stay_values(store):
    """Dashboard variables reach the SQL percent-encoded in a literal: each crafted name selects its own rows."""
    from otel_llmcost.simulate import SEED_COLUMNS

    rows = []
    for i, name in enumerate(CRAFTED):
        rows.append((END - timedelta(minutes=30), 100.0, f"{i:032x}", f"{i:016x}", "svc", "openai", "chat", "gpt-4o",
                     "gpt-4o", "OK", "", 1000, 100, 0, None, None, None, None, None, "unpriced", name, name, "u", "", None))
    store.insert("llm_spans", rows, SEED_COLUMNS)
    for name in CRAFTED:
        for title in ("By service, feature and model", "Most expensive calls", "Spend in range",
                      "Calls without a known cost", "Top users"):
            got = run_panel(store, title, {"project": [name], "feature": [name]})
            if "project" in (got[0] if got else {}):
                assert {r["project"] for r in got} == {name}, (title, name)
            if title == "Calls without a known cost":
                assert got[0]["calls_without_cost"] == 1, name
    # the format we do not use: Grafana's singlequote escapes a quote with a backslash, not a backslash
    broken = expand("SELECT count() FROM llm_spans WHERE project IN (${project:singlequote})", 0, 1,
                    variables={"project": ["ends with \\"]})
    with pytest.raises(StoreError):
        store.query(broken)


def test_calls_without_a_cost_are_shown_with_a_rough_figure(store):
    from otel_llmcost.simulate import SEED_COLUMNS

    at = END - timedelta(minutes=20)
    rows = [(at, 1.0, "e" * 32, f"{i:016x}", "svc-t", "openai", "chat", "gpt-4o", "gpt-4o", status_code, "",
             tokens, 10, 0, None if cost is None else Decimal(cost), None, None, None, None, status, "truth", "t", "u",
             "", None)
            for i, (status, status_code, tokens, cost) in enumerate([
                ("no_usage", "OK", 0, None), ("no_usage", "ERROR", 0, None),  # a failed call is not billed
                ("estimated", "OK", 500, "0.004"), ("unpriced", "OK", 2000, None)])]
    store.insert("llm_spans", rows, SEED_COLUMNS)
    (row,) = run_panel(store, "Calls without a known cost", {"project": ["truth"]})
    assert row["calls_without_cost"] == 2 and row["estimated_calls"] == 1
    assert float(row["estimated_usd"]) == pytest.approx(0.004)
    # the rough figure: gpt-4o's priced calls in the range give a price per call and per token
    rates = store.query(
        "SELECT sum(cost_usd) / sum(calls), sum(input_cost_usd + cache_read_cost_usd + cache_write_cost_usd) "
        "/ sum(input_tokens), sum(output_cost_usd) / sum(output_tokens) FROM llm_rollup_1m "
        "WHERE model = 'gpt-4o' AND minute >= {a:DateTime} AND minute <= {b:DateTime} AND unpriced_calls = 0 "
        "AND cost_usd > 0", {"a": (END - timedelta(hours=6)).replace(tzinfo=None), "b": END.replace(tzinfo=None)}).rows[0]
    per_call, per_in, per_out = map(float, rates)
    assert row["rough_missing_usd"] == pytest.approx(per_call + 2000 * per_in + 10 * per_out, rel=1e-6)
    table = [r for r in run_panel(store, "By service, feature and model", {"project": ["truth"]})]
    assert [(r["calls_without_cost"], r["estimated_calls"]) for r in table] == [(2, 1)]
    # the rule fires on them, and says what it knows
    rule = load_rules(["unpriced_spend"])[0]
    (fired,) = [r for r in evaluate(store, rule, END, END) if r["project"] == "truth"]
    assert fired["firing"] == 1 and (fired["unpriced"], fired["no_usage"], fired["estimated"]) == (1, 1, 1)
    assert fired["rough_usd"] > 0
    message = summarize(rule, fired)
    assert "1 without a price, 1 without usage: roughly $" in message and "1 with estimated usage" in message


def test_drill_down_lists_a_call_once_after_a_reprice(store):
    """reprice updates the changed rows in place: plain SELECTs, FINAL and the drill-down all see each call
    once."""
    from otel_llmcost.collector.pricing import PriceCatalog
    from otel_llmcost.reprice import reprice

    since, until = END - timedelta(minutes=50), END - timedelta(minutes=40)
    done = reprice(store, PriceCatalog(price_file=None), since, until, progress_out=None)
    assert done["changed"] > 0  # the seed's prices are not the catalog's: rows were written again
    (copies, calls), = store.query(
        "SELECT count(), uniqExact(trace_id, span_id) FROM llm_spans WHERE model_ = 'gpt-4o' "
        "AND timestamp >= {a:DateTime} AND timestamp < {b:DateTime}".replace(
            "model_", "if(response_model != '', response_model, request_model)"),
        {"a": since.replace(tzinfo=None), "b": until.replace(tzinfo=None)}).rows
    assert copies == calls > 0, "a repriced call must stay one row"
    sql = expand(PANELS["Most expensive calls"].sql, since, until - timedelta(seconds=1), 60,
                 {**{v: ALL for v in VARIABLES}, "model": ["gpt-4o"]})
    result = store.query(sql)
    keys = [row[result.column_names.index("trace_id")] + row[result.column_names.index("span_id")]
            for row in result.rows]
    assert len(keys) == len(set(keys)) == min(50, calls)


# -- alert messages -----------------------------------------------------------------------------------------------

def annotation_renderer(text: str) -> Renderer:
    return Renderer(text, {"externalURL": lambda: "https://grafana.example"})


def grafana_values(rule, row) -> dict:
    """$values as Grafana gives them: per refId, Value (float64) and Labels; percentages x100 (provision.py)."""
    from otel_llmcost.alerts import placeholder_formats

    formats = placeholder_formats(rule)
    labels = {k: str(row[k]) for k in rule.labels}
    values = {c.upper(): {"Value": float(row[c]) * (100 if formats.get(c) == "%" else 1), "Labels": labels}
              for c in rule.values}
    if rule.texts:
        values["TOP"] = {"Value": 1.0, "Labels": {**labels, **{t: str(row[t] or "") for t in rule.texts}}}
    return values


def rendered_summaries(rule_entry, rule, row) -> str:
    labels = {k: str(row[k]) for k in rule.labels}
    return annotation_renderer(rule_entry["annotations"]["summary"]).render(
        {}, {"$labels": labels, "$values": grafana_values(rule, row)})


def test_annotations_parse_and_render_like_the_backtest():
    """Each rule's summary as Grafana renders it (Go template, $labels/$values) equals the backtest's message,
    for amounts small and large, empty labels and unknown top model/feature."""
    entries = {r["title"]: r for r in read_yaml(RULES_FILE)["groups"][0]["rules"]}
    for rule in load_rules():
        entry = entries[rule.name]
        for key in ("summary", "dashboard_url", "description"):
            annotation_renderer(entry["annotations"][key])  # parses
        for amount, labels, top in ((0.0031, ("travel-desk", "", ""), ("", "")),
                                    (1234.5, ("svc", "shop", "qa"), ("gpt-4o", "qa")),
                                    (0.0, ("", "", ""), ("gpt-4o", "")),
                                    (0.55, ("", "support", ""), ("", "reply"))):
            row = {c: amount for c in rule.values}
            row.update({c: v for c, v in zip(("service_name", "project", "feature"), labels)})
            row.update({c: "x" for c in rule.labels if c not in row})
            row.update({"scope": "all", "scope_value": ""} if "scope" in rule.labels else {})
            row.update(dict(zip(("top_model", "top_feature"), top)))
            assert rendered_summaries(entry, rule, row) == summarize(rule, row), rule.name
            message = summarize(rule, row)
            assert " /  / " not in message and "/ :" not in message and "( " not in message
            assert not re.search(r"\$0\.00\b", message), message
            if not any(top):
                assert "; top" not in message


def test_money_reads_well_at_every_size():
    assert [format_money(v) for v in (0, 0.0000123, 0.0031, 0.0449, 0.5, 3.96, 42.126, 1234.4)] == [
        "$0", "under $0.0001", "$0.0031", "$0.045", "$0.50", "$3.96", "$42.13", "$1234"]


def test_dashboard_link_keeps_names_intact():
    entries = {r["title"]: r for r in read_yaml(RULES_FILE)["groups"][0]["rules"]}
    url = annotation_renderer(entries["cost_per_request_jump"]["annotations"]["dashboard_url"]).render(
        {}, {"$labels": {"service_name": "a&b", "project": "", "feature": "x y", "model": "m/1"}, "$values": {}})
    assert url == ("https://grafana.example/d/llmcost-drilldown/llm-cost-drill-down?var-service=a%26b"
                   "&var-project=%24__all&var-feature=x+y&var-model=m%2F1&from=now-24h&to=now")


def test_notification_template_renders_a_slack_message():
    """grafana/alerting templates: `define`d templates over ExtendedData (.Status, .Alerts.Firing, ...)."""
    (template,) = read_yaml(GRAFANA / "provisioning/alerting/llmcost-templates.yaml")["templates"]
    renderer = Renderer(template["template"])

    class Alerts(list):
        @property
        def Firing(self):  # noqa: N802 (Go's name)
            return [a for a in self if a["Status"] == "firing"]

        @property
        def Resolved(self):  # noqa: N802
            return [a for a in self if a["Status"] == "resolved"]

    alert = {"Status": "firing", "Annotations": {"summary": "spend_anomaly: unusual", "dashboard_url": "https://g/d"}}
    data = {"Status": "firing", "CommonLabels": {"alertname": "spend_anomaly"}, "Alerts": Alerts([alert, alert])}
    assert renderer.render(data, name="llmcost.slack.title") == ":rotating_light: LLM cost: spend_anomaly (2)"
    text = renderer.render(data, name="llmcost.slack.text")
    assert text.count("[FIRING] spend_anomaly: unusual <https://g/d|dashboard>") == 2
    with pytest.raises(TemplateError):
        Renderer("{{ humanizeMoney 1 }}").render({})  # strict: an unknown function is an error, as in Go
