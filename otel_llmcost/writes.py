"""The writes a running collector makes for a client, by name: fixed statements with typed parameters. The
collector's query endpoint and ClickHouse interface are read-only, and its embedded store can be opened by
that process only, so the CLI's writes (a budget, a savings run) travel as a name and parameters, never SQL."""

from __future__ import annotations


def named_writes() -> dict[str, str]:
    from .budgets import REMOVE_SQL, SET_SQL
    from .levers.savings import SAVE_SQL

    return {"budget.set": SET_SQL, "budget.remove": REMOVE_SQL, "savings.save": SAVE_SQL}


def name_of(sql: str) -> str | None:
    """The name of a statement of `named_writes`, or None for any other SQL."""
    return next((name for name, statement in named_writes().items() if statement == sql), None)
