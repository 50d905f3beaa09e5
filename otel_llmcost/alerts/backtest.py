"""Replays the rules over stored history: at every step, what Grafana would have evaluated.

Each rule's own SQL runs once for the whole range: `$__toTime` becomes every step of it (see
`otel_llmcost.alerts`), and the rows turn into firing/resolved events the way Grafana's state machine
does: an instance fires once its condition has held for the rule's `for` duration, and resolves when the
condition no longer holds (or the instance is gone from the result).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from . import Rule, TO_TIME, summarize

MAX_STEPS = 200_000


@dataclass
class Event:
    rule: str
    labels: dict[str, str]
    state: str  # firing | resolved
    at: datetime
    value: float
    summary: str

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "labels": self.labels, "state": self.state,
                "at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": self.value, "summary": self.summary}


def to_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def steps_sql(start: datetime, end: datetime, step_s: int) -> str:
    """The expression `$__toTime` becomes: every step from `start` to `end` (inclusive), one row each."""
    first = int(to_utc(start).timestamp())
    count = (int(to_utc(end).timestamp()) - first) // step_s + 1
    if count < 1:
        raise ValueError("--to must not be before --from")
    if count > MAX_STEPS:
        raise ValueError(f"{count} steps: use a larger --step or a shorter range")
    return f"arrayJoin(arrayMap(i -> toDateTime({first}, 'UTC') + i * {step_s}, range({count})))"


def evaluate(store, rule: Rule, start: datetime, end: datetime, step_s: int = 60,
             overrides: dict[str, Any] | None = None, changes_only: bool = False) -> list[dict[str, Any]]:
    """Every result row of the rule at every step, ordered by evaluation time (with `changes_only`, only the
    firing rows and the first row after each firing run: what the state machine needs)."""
    sql = rule.render(overrides).replace(TO_TIME, steps_sql(start, end, step_s))
    labels = ", ".join(rule.labels)
    result = store.query(f"SELECT * FROM ({sql}) ORDER BY eval_time") if not changes_only else store.query(
        f"SELECT * EXCEPT was_firing FROM (SELECT *, lagInFrame(firing, 1, 0) OVER (PARTITION BY {labels} "
        f"ORDER BY eval_time ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS was_firing FROM ({sql})) "
        f"WHERE firing = 1 OR was_firing = 1 ORDER BY eval_time")
    rows = []
    for row in result.rows:
        record = dict(zip(result.column_names, row))
        for key, value in record.items():
            if isinstance(value, Decimal):
                record[key] = float(value)
        when = record["eval_time"]
        if isinstance(when, str):  # through a collector's query endpoint: ISO 8601
            when = datetime.fromisoformat(when)
        record["eval_time"] = to_utc(when)
        rows.append(record)
    return rows


def events(rule: Rule, rows: list[dict[str, Any]], overrides: dict[str, Any] | None = None) -> list[Event]:
    """Grafana's state machine over the rows: pending for `for`, then firing; resolved when it stops holding."""
    out: list[Event] = []
    since: dict[tuple, datetime] = {}  # instance -> when its condition started holding
    firing: dict[tuple, dict] = {}  # instance -> the row it fired with
    by_time: dict[datetime, list[dict]] = {}
    for row in rows:
        by_time.setdefault(row["eval_time"], []).append(row)
    for at in sorted(by_time):
        holding = set()
        for row in by_time[at]:
            key = tuple(str(row[label]) for label in rule.labels)
            if not row["firing"]:
                continue
            holding.add(key)
            since.setdefault(key, at)
            if key not in firing and (at - since[key]).total_seconds() >= rule.for_seconds:
                firing[key] = row
                out.append(Event(rule.name, dict(zip(rule.labels, key)), "firing", at, _num(row.get("value")),
                                 summarize(rule, row, overrides)))
        for key in list(since):
            if key not in holding:
                del since[key]
                row = firing.pop(key, None)
                if row is not None:
                    now = next((r for r in by_time[at] if tuple(str(r[l]) for l in rule.labels) == key), row)
                    out.append(Event(rule.name, dict(zip(rule.labels, key)), "resolved", at,
                                     _num(now.get("value")), summarize(rule, now, overrides)))
    return out


def _num(value: Any) -> float:
    return round(float(value), 6) if value is not None else 0.0


def backtest(store, rules: list[Rule], start: datetime, end: datetime, step_s: int = 60,
             overrides: dict[str, dict[str, Any]] | None = None) -> list[Event]:
    """The events of every rule over [start, end], ordered by time."""
    overrides = overrides or {}
    found: list[Event] = []
    for rule in rules:
        own = overrides.get(rule.name)
        found.extend(events(rule, evaluate(store, rule, start, end, step_s, own, changes_only=True), own))
    return sorted(found, key=lambda e: (e.at, e.rule))
