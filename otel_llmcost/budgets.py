"""Budgets: rows of `llm_budgets`, managed with `otel-llmcost budget set | list | remove` (or plain SQL).

A budget is a scope (`all`, or one `project`, `feature` or `user`), a period (`day` or `month`, UTC) and an
amount in USD. Setting a budget again replaces it; removing one writes a deletion row (the table is a
ReplacingMergeTree on `updated_at` with `is_deleted`), so plain SQL works the same way:

    INSERT INTO llm_budgets (scope, scope_value, period, amount_usd) VALUES ('project', 'checkout', 'month', 500)
    INSERT INTO llm_budgets (scope, scope_value, period, amount_usd, is_deleted) VALUES ('project', 'checkout', 'month', 0, 1)
    SELECT * FROM llm_budgets FINAL WHERE is_deleted = 0

The alert rules (`budget_*`) read the current budgets at every evaluation.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

SCOPES = ("all", "project", "feature", "user")
PERIODS = ("day", "month")

LIST_SQL = """
SELECT scope, scope_value, period, amount_usd, updated_at
FROM llm_budgets FINAL
WHERE is_deleted = 0
ORDER BY scope, scope_value, period
"""

# Spend of each budget's scope in its current period (UTC), next to the budget.
STATUS_SQL = """
WITH
    budgets AS (
        SELECT scope, scope_value, period, amount_usd FROM llm_budgets FINAL WHERE is_deleted = 0
    ),
    spend AS (
        SELECT 'all' AS scope, '' AS scope_value, minute, cost_usd FROM llm_rollup_1m
        WHERE minute >= toDateTime(toStartOfMonth(now('UTC')), 'UTC')
        UNION ALL SELECT 'project', project, minute, cost_usd FROM llm_rollup_1m
        WHERE minute >= toDateTime(toStartOfMonth(now('UTC')), 'UTC')
        UNION ALL SELECT 'feature', feature, minute, cost_usd FROM llm_rollup_1m
        WHERE minute >= toDateTime(toStartOfMonth(now('UTC')), 'UTC')
        UNION ALL SELECT 'user', user_id, minute, cost_usd FROM llm_user_rollup_1m
        WHERE minute >= toDateTime(toStartOfMonth(now('UTC')), 'UTC')
    )
SELECT b.scope, b.scope_value, b.period, b.amount_usd,
       if(b.period = 'day', s.today, s.month) AS spent_usd,
       round(100 * spent_usd / b.amount_usd, 1) AS spent_pct
FROM budgets AS b
LEFT JOIN (
    SELECT scope, scope_value, sum(cost_usd) AS month, sumIf(cost_usd, minute >= toStartOfDay(now('UTC'))) AS today
    FROM spend GROUP BY scope, scope_value
) AS s ON b.scope = s.scope AND b.scope_value = s.scope_value
ORDER BY b.scope, b.scope_value, b.period
"""


@dataclass
class Budget:
    scope: str
    scope_value: str
    period: str
    amount_usd: Decimal


def normalize(scope: str, value: str | None, period: str) -> tuple[str, str, str]:
    scope, period = scope.strip().lower(), period.strip().lower()
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    value = (value or "").strip()
    if scope == "all":
        value = ""
    elif not value:
        raise ValueError(f"a {scope} budget needs the {scope} it applies to (--scope {scope}=NAME)")
    return scope, value, period


SET_SQL = ("INSERT INTO llm_budgets (scope, scope_value, period, amount_usd, updated_at, is_deleted) "
           "VALUES ({scope:String}, {value:String}, {period:String}, {amount:Decimal(18, 6)}, now64(3), 0)")
REMOVE_SQL = ("INSERT INTO llm_budgets (scope, scope_value, period, amount_usd, updated_at, is_deleted) "
              "VALUES ({scope:String}, {value:String}, {period:String}, 0, now64(3), 1)")
# The only writes a running collector makes for a client (its query endpoint is read-only): by name, with
# typed parameters.
WRITES = {"budget.set": SET_SQL, "budget.remove": REMOVE_SQL}


def split_scope(text: str) -> tuple[str, str]:
    """`all`, `project=NAME`, `feature=NAME` or `user=ID` (the CLI's `--scope`) -> (scope, value)."""
    scope, _, value = text.partition("=")
    return scope.strip().lower(), value.strip()


def set_budget(store, scope: str, value: str | None, period: str, amount_usd) -> Budget:
    scope, value, period = normalize(scope, value, period)
    try:
        amount = Decimal(str(amount_usd))
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {amount_usd!r}") from exc
    if amount <= 0:
        raise ValueError("the amount must be above 0 (use remove to drop a budget)")
    store.command(SET_SQL, {"scope": scope, "value": value, "period": period, "amount": str(amount)})
    return Budget(scope, value, period, amount)


def remove_budget(store, scope: str, value: str | None, period: str) -> bool:
    """Removes a budget; False when there was none."""
    scope, value, period = normalize(scope, value, period)
    if not any(b.scope == scope and b.scope_value == value and b.period == period for b in list_budgets(store)):
        return False
    store.command(REMOVE_SQL, {"scope": scope, "value": value, "period": period})
    return True


def list_budgets(store) -> list[Budget]:
    result = store.query(LIST_SQL)
    return [Budget(r[0], r[1], r[2], Decimal(str(r[3]))) for r in result.rows]


def _open(args: argparse.Namespace):
    from .store import open_store

    return open_store(args.store)


def cmd_set(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        budget = set_budget(store, *split_scope(args.scope), args.period, args.amount)
    except ValueError as exc:
        print(f"otel-llmcost budget: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    what = budget.scope + (f" {budget.scope_value}" if budget.scope_value else "")
    print(f"budget set: {what}, ${budget.amount_usd} per {budget.period}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        removed = remove_budget(store, *split_scope(args.scope), args.period)
    except ValueError as exc:
        print(f"otel-llmcost budget: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print("budget removed" if removed else "no such budget")
    return 0 if removed else 1


def cmd_list(args: argparse.Namespace) -> int:
    from .cli import print_result

    store = _open(args)
    try:
        result = store.query(STATUS_SQL)
    finally:
        store.close()
    print_result(result, args.format, out=sys.stdout)
    return 0


def register(subparsers) -> None:
    store_help = "store URL (default $OTEL_LLMCOST_STORE or chdb://./.llmcost)"
    p = subparsers.add_parser("budget", help="spending limits the budget alerts watch (llm_budgets)")
    sub = p.add_subparsers(dest="budget_command", required=True)

    def scope_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--store", help=store_help)
        q.add_argument("--scope", default="all",
                       help="what the budget covers: all, project=NAME, feature=NAME or user=ID (default all)")
        q.add_argument("--period", choices=PERIODS, default="month", help="day or month, UTC (default month)")

    q = sub.add_parser("set", help="set (or replace) a budget")
    scope_args(q)
    q.add_argument("--amount", required=True, help="USD per period")
    q.set_defaults(func=cmd_set)

    q = sub.add_parser("remove", help="remove a budget")
    scope_args(q)
    q.set_defaults(func=cmd_remove)

    q = sub.add_parser("list", help="the budgets and what their scope spent this period")
    q.add_argument("--store", help=store_help)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.set_defaults(func=cmd_list)
