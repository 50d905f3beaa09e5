"""The alert rules' own SQL (as Grafana runs it) over seeded scenarios, on the real chDB engine.

Each scenario is 8 days of simulated traffic (several services, features, users and models with daily and
weekly cycles) ending on a Wednesday afternoon; the last 90 minutes are the incident. The backtest expands
`$__toTime` to every step, exactly the macro Grafana's ClickHouse plugin expands to the evaluation time.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from otel_llmcost.alerts import PARAM_RE, PLACEHOLDER_RE, RULE_NAMES, SPECIAL_PLACEHOLDERS, TO_TIME, load_rules
from otel_llmcost.alerts.backtest import backtest, evaluate
from otel_llmcost.budgets import set_budget
from otel_llmcost.simulate import seed_store

END = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)  # a Wednesday
INCIDENT = END - timedelta(minutes=90)
DAYS = 8


@pytest.fixture(scope="module")
def store(empty_store):
    return empty_store


def load(store, scenario: str, budgets=()) -> None:
    for table in ("llm_spans", "llm_rollup_1m", "llm_user_rollup_1m", "llm_budgets"):
        store.command(f"TRUNCATE TABLE {table}")
    seed_store(store, DAYS, END, scenario)
    for scope, value, period, amount in budgets:
        set_budget(store, scope, value, period, amount)


def run(store, names=None, hours: float = 6, step: int = 300, overrides=None):
    return backtest(store, load_rules(names), END - timedelta(hours=hours), END, step, overrides)


def firing(events, rule):
    return [e for e in events if e.rule == rule and e.state == "firing"]


# Budgets the steady history stays well inside (a steady day spends about $3 on support, $2.5 on shop).
QUIET_BUDGETS = (("all", "", "month", 1000), ("project", "support", "day", 40), ("project", "shop", "month", 400),
                 ("feature", "product-qa", "day", 30))


def test_rule_files_are_complete_and_consistent():
    rules = load_rules()
    assert [r.name for r in rules] == list(RULE_NAMES)
    for rule in rules:
        assert rule.sql.count(TO_TIME) == 1, rule.name
        used = {m.group(1) for m in PARAM_RE.finditer(rule.sql)}
        assert used <= set(rule.params), f"{rule.name}: undeclared {used - set(rule.params)}"
        assert all(p.help for p in rule.params.values()), rule.name
        assert TO_TIME not in rule.render() or rule.render().count(TO_TIME) == 1
        assert not PARAM_RE.search(rule.render()), f"{rule.name}: a parameter was left unrendered"
        for match in PLACEHOLDER_RE.finditer(rule.summary):
            assert match.group(1) in (*rule.labels, *rule.values, *rule.texts, *rule.params, *SPECIAL_PLACEHOLDERS), \
                f"{rule.name}: summary names {match.group(1)}"
        assert rule.severity in ("page", "warning")
        assert {"service_name", "project"} <= set(rule.labels) or rule.labels == ["project"], rule.name
    by_name = {r.name: r for r in rules}
    assert by_name["budget_burn_fast"].params["burn_rate"].default == "14.4"
    assert by_name["budget_burn_fast"].params["long_window_minutes"].default == "60"
    assert by_name["budget_burn_fast"].params["short_window_minutes"].default == "5"
    assert by_name["budget_burn_slow"].params["burn_rate"].default == "6"
    assert by_name["budget_burn_slow"].params["long_window_minutes"].default == "360"
    assert by_name["budget_burn_slow"].params["short_window_minutes"].default == "30"
    assert by_name["spend_spike_without_traffic"].params["spend_growth"].default == "0.5"
    assert by_name["spend_spike_without_traffic"].params["traffic_growth"].default == "0.1"
    assert by_name["spend_anomaly"].params["sigmas"].default == "3"
    assert by_name["spend_anomaly"].params["history_days"].default == "14"


def test_steady_traffic_is_silent(store):
    load(store, "steady", QUIET_BUDGETS)
    events = run(store, hours=12)
    assert events == [], [e.summary for e in events]
    # ... and the rules did evaluate something: every instance is there, not firing
    rows = evaluate(store, load_rules(["spend_spike_without_traffic"])[0], END, END)
    assert {r["feature"] for r in rows} >= {"product-qa", "ticket-triage", "reply-draft", "semantic-search"}
    assert all(0.5 < r["value"] < 1.6 for r in rows if r["baseline_usd"] > 0.2), rows


def test_spend_growing_with_traffic_is_silent(store):
    load(store, "growth", QUIET_BUDGETS)
    rows = evaluate(store, load_rules(["spend_spike_without_traffic"])[0], END, END)
    qa = next(r for r in rows if r["feature"] == "product-qa")
    assert qa["value"] > 2 and qa["calls"] > 2 * qa["baseline_calls"]  # spend and traffic both tripled
    events = run(store, ["spend_spike_without_traffic", "cost_per_request_jump", "cache_collapse"])
    assert events == [], [e.summary for e in events]


def test_spend_up_with_flat_traffic_fires(store):
    load(store, "spike", QUIET_BUDGETS)
    events = run(store, ["spend_spike_without_traffic", "cost_per_request_jump"])
    spikes = firing(events, "spend_spike_without_traffic")
    assert [e.labels for e in spikes] == [
        {"service_name": "checkout-assistant", "project": "shop", "feature": "product-qa"}]
    spike = spikes[0]
    # within the incident, after the rule's 5-minute `for`
    assert INCIDENT + timedelta(minutes=5) <= spike.at <= INCIDENT + timedelta(minutes=60)
    assert spike.value > 1.5
    assert re.search(r"\$[\d.]+ in the last 60m vs \$[\d.]+ baseline; requests \d+ vs \d+; top gpt-4o / product-qa",
                     spike.summary), spike.summary
    jumps = firing(events, "cost_per_request_jump")
    assert {(e.labels["feature"], e.labels["model"]) for e in jumps} <= {("product-qa", "gpt-4o"),
                                                                        ("product-qa", "gpt-4o-mini")}
    assert ("product-qa", "gpt-4o") in {(e.labels["feature"], e.labels["model"]) for e in jumps}
    # thresholds are parameters: demand +1000% and the same history is silent
    quiet = run(store, ["spend_spike_without_traffic"],
                overrides={"spend_spike_without_traffic": {"spend_growth": 10}})
    assert quiet == []


def test_fast_budget_burn_fires_within_its_window(store):
    load(store, "burn", (("project", "support", "day", 8), ("project", "shop", "month", 400)))
    events = run(store, ["budget_burn_fast", "budget_burn_slow", "budget_threshold"], step=60)
    fast = firing(events, "budget_burn_fast")
    assert [e.labels["scope_value"] for e in fast] == ["support"]
    # the 1 h window reaches 14.4x the even pace well within the hour; the 5 min window already has
    assert INCIDENT < fast[0].at <= INCIDENT + timedelta(minutes=60)
    assert fast[0].labels == {"service_name": "", "project": "support", "feature": "", "scope": "project",
                              "scope_value": "support", "period": "day"}
    assert "top claude-sonnet-4-5 / reply-draft" in fast[0].summary
    assert fast[0].value > 14.4
    # the slow burn (6 h at 6x) takes longer, and the plain thresholds follow
    slow = firing(events, "budget_burn_slow")
    assert not slow or slow[0].at >= fast[0].at
    thresholds = {e.labels["threshold"] for e in firing(events, "budget_threshold")}
    assert thresholds == {"80%", "100%"}
    assert all(e.labels["scope_value"] == "support" for e in firing(events, "budget_threshold"))
    # nothing burned before the incident
    assert all(e.at > INCIDENT for e in events)


def test_budget_projection_fires_before_the_budget_is_spent(store):
    load(store, "steady")
    rule = load_rules(["budget_projection"])[0]
    mtd = float(store.query(
        "SELECT sum(cost_usd) FROM llm_rollup_1m WHERE project = 'shop' AND minute >= '2026-11-01' "
        "AND minute < {end:DateTime}", {"end": END.replace(tzinfo=None)}).rows[0][0])
    set_budget(store, "project", "shop", "month", round(mtd * 1.2, 2))  # not spent yet, but the pace overruns it
    rows = [r for r in evaluate(store, rule, END, END) if r["scope_value"] == "shop"]
    assert rows[0]["firing"] == 1 and rows[0]["spend_usd"] < rows[0]["budget_usd"] < rows[0]["projected_usd"]
    threshold = load_rules(["budget_threshold"])[0]
    assert {r["threshold"]: r["firing"] for r in evaluate(store, threshold, END, END)} == {"80%": 1, "100%": 0}


def test_cache_collapse_fires(store):
    load(store, "cache-collapse", QUIET_BUDGETS)
    events = run(store, ["cache_collapse", "spend_spike_without_traffic"])
    collapsed = firing(events, "cache_collapse")
    assert [e.labels["feature"] for e in collapsed] == ["ticket-triage"]
    cached, baseline = map(int, re.search(r"(\d+)% of input tokens cached vs (\d+)% baseline",
                                          collapsed[0].summary).groups())
    assert baseline > 60 and cached < baseline / 2
    assert INCIDENT < collapsed[0].at <= INCIDENT + timedelta(minutes=60)


def test_unpriced_calls_fire(store):
    load(store, "unpriced", QUIET_BUDGETS)
    events = run(store, ["unpriced_spend"])
    assert [(e.labels["feature"], e.labels["model"]) for e in firing(events, "unpriced_spend")] == [
        ("report-writer", "acme-llm-2-preview")]


def test_daily_anomaly_is_per_project(store):
    load(store, "burn")
    events = run(store, ["spend_anomaly"], step=600)
    assert {e.labels["project"] for e in firing(events, "spend_anomaly")} == {"support"}
    load(store, "steady")
    assert run(store, ["spend_anomaly"], step=600) == []


def test_backtest_resolves_and_is_fast_over_a_week(store):
    import time

    load(store, "spike")
    rules = load_rules(["spend_spike_without_traffic"])
    # evaluate a range that ends an hour after the incident: the data stops at END, so the spike resolves
    events = backtest(store, rules, END - timedelta(hours=3), END + timedelta(minutes=90), 300)
    assert [e.state for e in events] == ["firing", "resolved"]
    assert events[1].at > END
    began = time.monotonic()
    week = backtest(store, load_rules(), END - timedelta(days=7), END, 300)  # 2,017 steps x 9 rules
    elapsed = time.monotonic() - began
    print(f"7 days at 5m, all rules: {elapsed:.1f} s, {len(week)} events")
    assert any(e.rule == "spend_spike_without_traffic" for e in week)


def test_periods_are_utc_whatever_the_servers_time_zone(store):
    """Budget periods are UTC days and months, and the rollups' hours UTC hours, on a server (or the embedded
    engine) in any time zone, with Grafana's `$__toTime` (a DateTime in the server's zone) as the evaluation time:
    every rule, the budget status, the report and every dashboard panel give what they give in UTC. Kolkata is 5:30 ahead (its midnights
    and hours fall inside UTC hours), Los Angeles 8 hours behind."""
    from otel_llmcost.grafana.dashboards import PANELS
    from otel_llmcost.alerts.macros import ALL, expand
    from otel_llmcost.budgets import STATUS_SQL
    from otel_llmcost.cli import REPORT_SQL

    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)  # the status and the report read now()
    for table in ("llm_spans", "llm_rollup_1m", "llm_user_rollup_1m", "llm_budgets"):
        store.command(f"TRUNCATE TABLE {table}")
    seed_store(store, 3, now, "burn")
    for scope, value, period, amount in (("all", "", "day", 5), ("all", "", "month", 20), ("project", "support", "day", 2),
                                         ("feature", "reply-draft", "month", 6)):
        set_budget(store, scope, value, period, amount)
    grafana_to_time = f"toDateTime({int(now.timestamp())})"  # as the ClickHouse datasource expands it
    queries = [(rule.name, rule.render().replace(TO_TIME, grafana_to_time), None) for rule in load_rules()]
    queries += [("budget status", STATUS_SQL, None), ("report 36h", REPORT_SQL, {"seconds": 36 * 3600})]
    every_value = {v: ALL for v in ("service", "project", "feature", "provider", "model")}
    queries += [(f"panel {title}", expand(panel.sql, now - timedelta(hours=36), now, 300, every_value), None)
                for title, panel in PANELS.items()]

    def comparable(row):
        # Float sums may add the same terms in another order in another zone's plan (seen: 0.315315 against
        # 0.31531500000000007 in cost_per_request_jump): compared to 12 significant digits, the rest exactly.
        return repr(tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in row))

    def results(zone):
        store.client.set_client_setting("session_timezone", zone)
        try:
            return {name: sorted(map(comparable, store.query(sql, parameters).rows))
                    for name, sql, parameters in queries}
        finally:
            store.client.set_client_setting("session_timezone", "UTC")

    # The status and the report read now(): the report's window starts a minute later each minute, so the three
    # zones are compared within one minute of the clock (again if a minute began meanwhile).
    for _ in range(3):
        minute = int(time.time() // 60)
        by_zone = {zone: results(zone) for zone in ("UTC", "Asia/Kolkata", "America/Los_Angeles")}
        if int(time.time() // 60) == minute:
            break
    in_utc = by_zone.pop("UTC")
    assert any(in_utc[rule] for rule in ("budget_threshold", "budget_projection")), "the budgets should be read"
    assert in_utc["budget status"] and in_utc["report 36h"]
    for zone, elsewhere in by_zone.items():
        differ = sorted(name for name, rows in elsewhere.items() if rows != in_utc[name])
        assert differ == [], zone
