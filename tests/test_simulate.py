"""`otel-llmcost simulate`: backdated spans through the real OTLP exporter to a real collector process."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from otel_llmcost import cli
from otel_llmcost.simulate import FEATURES, calls, load_factor, send

END = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def history(collector):
    sent = send(collector.http_endpoint, 3, "spike", end=END)
    collector.wait_for_rows(sent, timeout=120)
    return sent


def test_history_is_backdated_attributed_and_priced(collector, history):
    (stats,) = collector.query(
        "SELECT count() AS n, min(timestamp) AS first, max(timestamp) AS last, uniqExact(service_name) AS services, "
        "uniqExact(project) AS projects, uniqExact(feature) AS features, uniqExact(user_id) AS users, "
        "uniqExact(request_model) AS models, uniqExact(provider) AS providers, "
        "countIf(price_status = 'priced') AS priced, countIf(status_code = 'ERROR') AS errors "
        "FROM llm_spans FINAL")
    assert stats["n"] == history
    first = datetime.fromisoformat(str(stats["first"])).replace(tzinfo=timezone.utc)
    last = datetime.fromisoformat(str(stats["last"])).replace(tzinfo=timezone.utc)
    assert END - timedelta(days=3) <= first < END - timedelta(days=3) + timedelta(minutes=10)
    assert END - timedelta(minutes=10) <= last < END
    assert (stats["services"], stats["projects"], stats["features"], stats["providers"]) == (4, 3, 6, 2)
    assert stats["models"] == 5 and stats["users"] > 50
    assert stats["priced"] + stats["errors"] == history and 0 < stats["errors"] < history * 0.03
    (app,) = collector.query("SELECT sum(app_cache_hits) AS hits, sum(calls) AS calls, "
                             "sum(app_cache_savings_usd) AS saved FROM llm_rollup_1m WHERE feature = 'semantic-search'")
    assert 0.2 < app["hits"] / (app["hits"] + app["calls"]) < 0.4 and app["saved"] > 0  # 30% served from cache
    rows = collector.query("SELECT service_name, project, feature FROM llm_spans FINAL GROUP BY ALL")
    assert {(r["service_name"], r["project"], r["feature"]) for r in rows} == {
        (f.service, f.project, f.feature) for f in FEATURES}
    (cached,) = collector.query("SELECT sum(cache_read_tokens) / sum(input_tokens) AS rate, "
                                "sum(cache_savings_usd) AS saved FROM llm_spans FINAL WHERE feature = 'ticket-triage'")
    assert 0.6 < cached["rate"] < 0.75 and cached["saved"] > 0


def test_history_has_daily_and_weekly_cycles():
    end = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)  # a Monday afternoon
    per_hour: dict = {}
    for call in calls(7, end):
        key = call.start.replace(minute=0, second=0, microsecond=0)
        per_hour[key] = per_hour.get(key, 0) + 1
    busiest = max(per_hour.values())
    assert per_hour[datetime(2026, 11, 20, 14, tzinfo=timezone.utc)] > 3 * per_hour[
        datetime(2026, 11, 20, 2, tzinfo=timezone.utc)]  # Friday afternoon vs night
    assert per_hour[datetime(2026, 11, 22, 14, tzinfo=timezone.utc)] < 0.6 * per_hour[
        datetime(2026, 11, 20, 14, tzinfo=timezone.utc)]  # Sunday vs Friday
    assert busiest < 200  # aggregated: a sensible volume
    assert load_factor(datetime(2026, 11, 18, 15, tzinfo=timezone.utc), 15.0) == pytest.approx(1.0)


def test_backtest_cli_over_the_collectors_store(collector, history, capsys):
    capsys.readouterr()
    assert cli.main(["alerts", "backtest", "--store", collector.store_url, "--rule", "spend_spike_without_traffic",
                     "--rule", "cache_collapse", "--from", "2026-11-18T09:00:00Z", "--to", "2026-11-18T15:00:00Z",
                     "--step", "5m", "--format", "json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["rule"], e["state"], e["labels"]) for e in events] == [
        ("spend_spike_without_traffic", "firing",
         {"service_name": "checkout-assistant", "project": "shop", "feature": "product-qa"})]
    event = events[0]
    at = datetime.fromisoformat(event["at"].replace("Z", "+00:00"))
    assert END - timedelta(minutes=85) <= at <= END and event["value"] > 1.5
    assert "top gpt-4o / product-qa" in event["summary"]
    # the table format says the same in one line
    assert cli.main(["alerts", "backtest", "--store", collector.store_url, "--rule", "spend_spike_without_traffic",
                     "--from", "2026-11-18T09:00Z", "--to", "2026-11-18T15:00Z", "--step", "5m"]) == 0
    out = capsys.readouterr().out
    assert "firing  spend_spike_without_traffic: spend up" in out and "(1 row)" in out


def test_simulate_command(collector, history, capsys):
    assert cli.main(["simulate", "--days", "0.1", "--scenario", "steady", "--seed", "99",
                     "--endpoint", collector.http_endpoint]) == 0
    out = capsys.readouterr().out
    sent = int(out.split()[1])
    assert out.startswith("sent ") and sent > 0
    collector.wait_for_rows(history + sent)
