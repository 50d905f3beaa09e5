"""The ClickHouse datasource plugin's macros and Grafana's template variables, expanded the way they are.

Grafana cannot run here, so tests (and the backtest) expand what the plugin would before a query reaches
ClickHouse. As the plugin documents them (grafana-clickhouse-datasource v4):

    $__timeFilter(c)        c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)
    $__fromTime, $__toTime  toDateTime(<s>)
    $__timeInterval(c)      toStartOfInterval(toDateTime(c), INTERVAL <interval> second)
    $__interval_s           <interval in seconds>
    $__conditionalAll(cond, $var)   cond, or 1=1 when the variable selects All

Template variables: `${var:singlequote}` is the selected values quoted and joined with commas; `$var`
and `${var}` the values joined with commas. All (`$__all`) stands for every value of the variable.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

ALL = "$__all"


def epoch(moment: datetime | int | float) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp())
    return int(moment)


def _split_args(text: str) -> list[str]:
    args, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            args.append(current.strip())
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    args.append(current.strip())
    return args


def _replace_call(sql: str, name: str, fn) -> str:
    """Replaces every `name(args)` (balanced parentheses) with fn(args)."""
    out, pos = "", 0
    while True:
        start = sql.find(name + "(", pos)
        if start < 0:
            return out + sql[pos:]
        depth, i = 0, start + len(name)
        while True:
            depth += sql[i] == "("
            depth -= sql[i] == ")"
            if depth == 0:
                break
            i += 1
        out += sql[pos:start] + fn(_split_args(sql[start + len(name) + 1:i]))
        pos = i + 1


def expand(sql: str, time_from: datetime | int, time_to: datetime | int, interval_s: int = 60,
           variables: dict[str, list[str] | str] | None = None) -> str:
    """`sql` as ClickHouse receives it from the plugin for this time range, interval and variables."""
    variables = {k: ([v] if isinstance(v, str) else list(v)) for k, v in (variables or {}).items()}
    start, end = epoch(time_from), epoch(time_to)

    def is_all(var: str) -> bool:
        name = var.strip().lstrip("$").strip("{}").split(":")[0]
        return variables.get(name, [ALL]) == [ALL]

    sql = _replace_call(sql, "$__conditionalAll", lambda a: "1=1" if is_all(a[1]) else a[0])
    sql = _replace_call(sql, "$__timeFilter",
                        lambda a: f"{a[0]} >= toDateTime({start}) AND {a[0]} <= toDateTime({end})")
    sql = _replace_call(sql, "$__timeInterval",
                        lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {interval_s} second)")
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime", f"toDateTime({end})")
    sql = sql.replace("$__interval_s", str(interval_s))

    def var(match: re.Match) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        values = variables.get(name)
        if values is None:
            raise KeyError(f"template variable {name} has no value")
        if fmt == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        return ",".join(values)

    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)\b", var, sql)
