"""The writes a running collector makes for a client, by name: fixed statements with typed parameters. The
collector's query endpoint and ClickHouse interface are read-only, and its embedded store can be opened by
that process only, so the CLI's writes (a budget, a savings run) travel as a name and parameters, never SQL.
The statements live here, so that the store, the budgets and the savings finder all read them from one place."""

from __future__ import annotations

BUDGET_SET_SQL = ("INSERT INTO llm_budgets (scope, scope_value, period, amount_usd, limit_tokens, updated_at, "
                  "is_deleted) "
                  "VALUES ({scope:String}, {value:String}, {period:String}, {amount:Decimal(18, 6)}, {tokens:UInt64}, "
                  "now64(3), 0)")
BUDGET_REMOVE_SQL = ("INSERT INTO llm_budgets (scope, scope_value, period, amount_usd, updated_at, is_deleted) "
                     "VALUES ({scope:String}, {value:String}, {period:String}, 0, now64(3), 1)")

SAVE_COLUMNS = ("kind", "service_name", "project", "feature", "provider", "model", "monthly_savings_usd", "estimate",
                "detail", "query")
# The findings travel as one array per column (query parameters: the same through a collector's query endpoint).
SAVE_SQL = """
INSERT INTO llm_savings (computed_at, since_seconds, {columns})
SELECT now64(3, 'UTC'), {{since:UInt64}}, f.1, f.2, f.3, f.4, f.5, f.6, toDecimal128(f.7, 9), f.8, f.9, f.10
FROM (SELECT arrayJoin(arrayZip({arrays})) AS f)
""".format(columns=", ".join(SAVE_COLUMNS), arrays=", ".join(
    f"{{{c}:Array({'Bool' if c == 'estimate' else 'String'})}}" for c in SAVE_COLUMNS))

NAMED_WRITES = {"budget.set": BUDGET_SET_SQL, "budget.remove": BUDGET_REMOVE_SQL, "savings.save": SAVE_SQL}


def name_of(sql: str) -> str | None:
    """The name of a statement of `NAMED_WRITES`, or None for any other SQL."""
    return next((name for name, statement in NAMED_WRITES.items() if statement == sql), None)
