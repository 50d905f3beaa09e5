"""Budgets: `otel-llmcost budget set | list | remove` and plain SQL, on the real chDB engine."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from otel_llmcost import cli
from otel_llmcost.budgets import list_budgets, remove_budget, set_budget
from otel_llmcost.store import Store


@pytest.fixture
def store_url(tmp_path):
    return f"chdb://{tmp_path / 'store'}"


def test_set_replace_remove_and_plain_sql(store_url):
    store = Store(store_url)
    store.migrate()
    try:
        set_budget(store, "project", "checkout", "month", 500)
        set_budget(store, "all", "ignored for scope all", "day", "12.5")
        set_budget(store, "project", "checkout", "month", 650)  # replaces
        assert [(b.scope, b.scope_value, b.period, b.amount_usd) for b in list_budgets(store)] == [
            ("all", "", "day", Decimal("12.5")), ("project", "checkout", "month", Decimal(650))]
        # plain SQL does the same
        store.command("INSERT INTO llm_budgets (scope, scope_value, period, amount_usd) "
                      "VALUES ('user', 'u-42', 'day', 3)")
        assert ("user", "u-42") in {(b.scope, b.scope_value) for b in list_budgets(store)}
        assert remove_budget(store, "project", "checkout", "month") is True
        assert remove_budget(store, "project", "checkout", "month") is False
        assert {b.scope for b in list_budgets(store)} == {"all", "user"}
        for bad in (("team", "x", "day", 1), ("project", "", "day", 1), ("project", "x", "week", 1),
                    ("project", "x", "day", 0), ("project", "x", "day", "lots")):
            with pytest.raises(ValueError):
                set_budget(store, *bad)
    finally:
        store.close()


def test_cli_set_list_remove(store_url, capsys):
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    store = Store(store_url)
    store.migrate()
    store.insert("llm_spans", [(now, "t1", "s1", "svc", "shop", "qa", "u1", Decimal("1.25")),
                               (now, "t2", "s2", "svc", "ops", "qa", "u2", Decimal("0.50"))],
                 ["timestamp", "trace_id", "span_id", "service_name", "project", "feature", "user_id", "cost_usd"])
    store.close()

    assert cli.main(["budget", "set", "--store", store_url, "--scope", "project=shop",
                     "--period", "day", "--amount", "5"]) == 0
    assert cli.main(["budget", "set", "--store", store_url, "--scope", "user=u2",
                     "--period", "month", "--amount", "1"]) == 0
    assert cli.main(["budget", "set", "--store", store_url, "--scope", "feature", "--period", "day",
                     "--amount", "5"]) == 2  # a feature budget needs its feature name
    capsys.readouterr()
    assert cli.main(["budget", "list", "--store", store_url, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["scope"], r["scope_value"], r["period"], r["spent_usd"], r["spent_pct"]) for r in rows] == [
        ("project", "shop", "day", 1.25, 25.0), ("user", "u2", "month", 0.5, 50.0)]
    assert cli.main(["budget", "remove", "--store", store_url, "--scope", "user=u2"]) == 0
    assert cli.main(["budget", "remove", "--store", store_url, "--scope", "user=u2"]) == 1
    capsys.readouterr()
    cli.main(["budget", "list", "--store", store_url, "--format", "json"])
    assert [json.loads(line)["scope"] for line in capsys.readouterr().out.splitlines()] == ["project"]
