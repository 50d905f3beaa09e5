"""Budgets: rows of `llm_budgets`, managed with `otel-llmcost budget set | list | remove` (or plain SQL).

A budget is a scope (`all`, or one `project`, `feature` or `user`), a period (`hour`, `day` or `month`, UTC)
and a limit: an amount in USD, a number of tokens (input plus output), or both (0 is no limit of that kind). Setting a budget again replaces it; removing one writes a deletion row (the table is a
ReplacingMergeTree on `updated_at` with `is_deleted`), so plain SQL works the same way:

    INSERT INTO llm_budgets (scope, scope_value, period, amount_usd) VALUES ('project', 'checkout', 'month', 500)
    INSERT INTO llm_budgets (scope, scope_value, period, amount_usd, is_deleted) VALUES ('project', 'checkout', 'month', 0, 1)
    SELECT * FROM llm_budgets FINAL WHERE is_deleted = 0

The alert rules (`budget_*`) read the current budgets at every evaluation.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .writes import BUDGET_REMOVE_SQL, BUDGET_SET_SQL

SCOPES = ("all", "project", "feature", "user")
PERIODS = ("hour", "day", "month")

LIST_SQL = """
SELECT scope, scope_value, period, amount_usd, limit_tokens, updated_at
FROM llm_budgets FINAL
WHERE is_deleted = 0
ORDER BY scope, scope_value, period
"""

# Spend of each budget's scope in its current period (UTC), next to the budget, and the scope's spend this
# month (the guard prices a process's own recent tokens at the scope's average price per token).
STATUS_SQL = """
WITH
    toDateTime(toStartOfMonth(now('UTC')), 'UTC') AS month_start,
    budgets AS (
        SELECT scope, scope_value, period, amount_usd, limit_tokens FROM llm_budgets FINAL WHERE is_deleted = 0
    ),
    spend AS (
        SELECT 'all' AS scope, '' AS scope_value, minute, cost_usd, input_tokens + output_tokens AS tokens
        FROM llm_rollup_1m WHERE minute >= month_start
        UNION ALL SELECT 'project', project, minute, cost_usd, input_tokens + output_tokens FROM llm_rollup_1m
        WHERE minute >= month_start
        UNION ALL SELECT 'feature', feature, minute, cost_usd, input_tokens + output_tokens FROM llm_rollup_1m
        WHERE minute >= month_start
        UNION ALL SELECT 'user', user_id, minute, cost_usd, input_tokens + output_tokens FROM llm_user_rollup_1m
        WHERE minute >= month_start
    )
SELECT b.scope, b.scope_value, b.period, b.amount_usd,
       multiIf(b.period = 'hour', s.hour_usd, b.period = 'day', s.today_usd, s.month_usd) AS spent_usd,
       if(b.amount_usd > 0, round(100 * spent_usd / b.amount_usd, 1), NULL) AS spent_pct,
       b.limit_tokens,
       multiIf(b.period = 'hour', s.hour_tokens, b.period = 'day', s.today_tokens, s.month_tokens) AS spent_tokens,
       s.month_usd AS month_usd, s.month_tokens AS month_tokens
FROM budgets AS b
LEFT JOIN (
    SELECT scope, scope_value,
           sum(cost_usd) AS month_usd, sum(tokens) AS month_tokens,
           sumIf(cost_usd, minute >= toStartOfDay(now('UTC'))) AS today_usd,
           sumIf(tokens, minute >= toStartOfDay(now('UTC'))) AS today_tokens,
           sumIf(cost_usd, minute >= toStartOfHour(now('UTC'))) AS hour_usd,
           sumIf(tokens, minute >= toStartOfHour(now('UTC'))) AS hour_tokens
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
    limit_tokens: int = 0


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


def split_scope(text: str) -> tuple[str, str]:
    """`all`, `project=NAME`, `feature=NAME` or `user=ID` (the CLI's `--scope`) -> (scope, value). A budget has
    one scope: `project=a,feature=b` is refused, not taken for a project named `a,feature=b`."""
    scope, _, value = text.partition("=")
    if re.search(r"[,;&]\s*(" + "|".join(SCOPES) + r")\s*=", value, re.I):
        raise ValueError(f"--scope {text!r}: combined scopes are not supported; a budget covers all, one project, "
                         "one feature or one user")
    return scope.strip().lower(), value.strip()


MAX_AMOUNT = Decimal("999999999999.999999")  # Decimal(18, 6)


def parse_amount(amount_usd) -> Decimal:
    """A budget amount: a finite number of USD above 0 that `Decimal(18, 6)` holds."""
    try:
        amount = Decimal(str(amount_usd).strip().lstrip("$").replace(",", "").replace("_", ""))
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {amount_usd!r} (use USD, e.g. 500 or 12.50)") from exc
    if not amount.is_finite():
        raise ValueError(f"not an amount: {amount_usd!r} (use a finite number of USD, e.g. 500)")
    if amount <= 0:
        raise ValueError(f"the amount must be above 0, not {amount_usd} (use budget remove to drop a budget)")
    if amount > MAX_AMOUNT:
        raise ValueError(f"the amount {amount_usd} is too large (at most {int(MAX_AMOUNT):,} USD)")
    return amount


def parse_tokens(tokens) -> int:
    """A token limit: a whole number above 0 that `UInt64` holds."""
    try:
        limit = int(str(tokens).strip().replace("_", "").replace(",", ""))
    except ValueError as exc:
        raise ValueError(f"not a number of tokens: {tokens!r} (use a whole number, e.g. 200000)") from exc
    if not 0 < limit < 2**63:
        raise ValueError(f"the token limit must be a whole number above 0, not {tokens}")
    return limit


def set_budget(store, scope: str, value: str | None, period: str, amount_usd=None, tokens=None) -> Budget:
    """Sets (or replaces) a budget of `amount_usd` dollars and/or `tokens` tokens per period."""
    scope, value, period = normalize(scope, value, period)
    amount = parse_amount(amount_usd) if amount_usd is not None else Decimal(0)
    limit = parse_tokens(tokens) if tokens is not None else 0
    if not amount and not limit:
        raise ValueError("a budget needs an amount in USD (--amount), a number of tokens (--tokens), or both")
    store.command(BUDGET_SET_SQL, {"scope": scope, "value": value, "period": period, "amount": format(amount, "f"),
                            "tokens": limit})
    return Budget(scope, value, period, amount, limit)


def remove_budget(store, scope: str, value: str | None, period: str) -> bool:
    """Removes a budget; False when there was none."""
    scope, value, period = normalize(scope, value, period)
    if not any(b.scope == scope and b.scope_value == value and b.period == period for b in list_budgets(store)):
        return False
    store.command(BUDGET_REMOVE_SQL, {"scope": scope, "value": value, "period": period})
    return True


def list_budgets(store) -> list[Budget]:
    result = store.query(LIST_SQL)
    return [Budget(r[0], r[1], r[2], Decimal(str(r[3])), int(r[4])) for r in result.rows]


def budget_status(store) -> list[dict]:
    """Each budget with its spend this period (what `budget list` prints and the guard polls)."""
    result = store.query(STATUS_SQL)
    return [dict(zip(result.column_names, row)) for row in result.rows]


def _open(args: argparse.Namespace):
    from .commands import open_existing_store

    return open_existing_store(args.store)


def checked(args: argparse.Namespace, amount: bool = False) -> tuple[str, str, str]:
    """The scope and period of the command line, checked before any store is opened."""
    from .errors import UserError

    try:
        scope, value, period = normalize(*split_scope(args.scope), args.period)
        if amount:
            if args.amount is None and args.tokens is None:
                raise ValueError("a budget needs an amount in USD (--amount), a number of tokens (--tokens), or both")
            if args.amount is not None:
                parse_amount(args.amount)
            if args.tokens is not None:
                parse_tokens(args.tokens)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    return scope, value, period


def cmd_set(args: argparse.Namespace) -> int:
    from .store import chdb_dir, open_store, resolve_url

    scope, value, period = checked(args, amount=True)
    directory = chdb_dir(resolve_url(args.store))
    if directory is not None and not (directory / "metadata").is_dir():
        print(f"otel-llmcost budget: note: no store at {directory} yet; creating it", file=sys.stderr)
    store = open_store(args.store)  # a budget may be set before the collector first runs
    try:
        budget = set_budget(store, scope, value, period, args.amount, args.tokens)
    finally:
        store.close()
    what = budget.scope + (f" {budget.scope_value}" if budget.scope_value else "")
    limits = [f"${budget.amount_usd:f}"] * bool(budget.amount_usd) + [f"{budget.limit_tokens:,} tokens"] * bool(
        budget.limit_tokens)
    print(f"budget set: {what}, {' and '.join(limits)} per {budget.period}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    scope, value, period = checked(args)
    store = _open(args)
    try:
        removed = remove_budget(store, scope, value, period)
    finally:
        store.close()
    print("budget removed" if removed else "no such budget")
    return 0 if removed else 1


def cmd_list(args: argparse.Namespace) -> int:
    from .commands import print_result

    store = _open(args)
    try:
        result = store.query(STATUS_SQL)
    finally:
        store.close()
    print_result(result, args.format, out=sys.stdout)
    return 0


def register(subparsers) -> None:
    store_help = "store URL or directory (default $OTEL_LLMCOST_STORE, else ./.llmcost)"
    p = subparsers.add_parser("budget", help="spending limits the budget alerts watch (llm_budgets)")
    sub = p.add_subparsers(dest="budget_command", required=True)

    def scope_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--store", help=store_help)
        q.add_argument("--scope", default="all",
                       help="what the budget covers: all, project=NAME, feature=NAME or user=ID")
        q.add_argument("--period", choices=PERIODS, default="month", help="hour, day or month, UTC")

    q = sub.add_parser("set", help="set (or replace) a budget")
    scope_args(q)
    q.add_argument("--amount", help="USD per period, above 0 (e.g. 500 or 12.50)")
    q.add_argument("--tokens", help="tokens (input plus output) per period, e.g. 200000")
    q.set_defaults(func=cmd_set)

    q = sub.add_parser("remove", help="remove a budget")
    scope_args(q)
    q.set_defaults(func=cmd_remove)

    q = sub.add_parser("list", help="the budgets and what their scope spent this period")
    q.add_argument("--store", help=store_help)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="json and csv print only the rows")
    q.set_defaults(func=cmd_list)
