"""The ClickHouse datasource plugin's macros and Grafana's template variables, expanded the way they are.

Grafana cannot run here, so tests (and the backtest) expand what Grafana and the plugin would before a query
reaches ClickHouse, in their order:

1. In the browser (grafana/clickhouse-datasource `src/data/CHDatasource.ts`, `applyTemplateVariables`):
   `$__conditionalAll(cond, $var)` becomes `1=1` when the variable's current value is All (`$__all`) or
   empty (nothing selected), else `cond`; then Grafana's template service replaces the variables. A plain
   `$var` / `${var}` goes through the plugin's own format: a list of values becomes `'a','b'` (joined, no
   escaping), a single value stays as is. `${var:fmt}` uses Grafana's format of that name
   (grafana/scenes `packages/scenes/src/variables/interpolation/formatRegistry.ts`). All selected stands for
   every value of the variable (its options), as Grafana expands it when the variable has no custom All value.
2. In the plugin's backend (`pkg/macros/macros.go`, through macropro): comments are blanked first (a macro
   inside a comment never expands), then:

       $__timeFilter(c)               c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)
       $__timeFilter_ms(c)            the same with fromUnixTimestamp64Milli(<ms>)
       $__fromTime, $__toTime         toDateTime(<s>)
       $__fromTime_ms, $__toTime_ms   fromUnixTimestamp64Milli(<ms>)
       $__timeInterval(c)             toStartOfInterval(toDateTime(c), INTERVAL <interval, >= 1> second)
       $__interval_s                  <interval in seconds, at least 1>

Alert rules have no template variables and no `$__conditionalAll` (that one is browser-only).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from urllib.parse import quote

ALL = "$__all"


def epoch(moment: datetime | int | float) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp())
    return int(moment)


def epoch_ms(moment: datetime | int | float) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp() * 1000)
    return int(moment) * 1000


def _skip_quoted(sql: str, pos: int) -> int:
    """The index after the quoted region opening at `pos` ('...', "..." or `...`): a backslash escapes the next
    character and a doubled quote continues the region, as ClickHouse reads them."""
    quote_char, i = sql[pos], pos + 1
    while i < len(sql):
        if sql[i] == "\\":
            i += 2
        elif sql[i] == quote_char:
            if sql[i + 1:i + 2] == quote_char:
                i += 2
                continue
            return i + 1
        else:
            i += 1
    return len(sql)


def strip_comments(sql: str) -> str:
    """`-- ...` and `/* ... */` comments outside quoted text blanked to spaces (newlines kept)."""
    out, i = [], 0
    while i < len(sql):
        char = sql[i]
        if char in "'\"`":
            end = _skip_quoted(sql, i)
            out.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = len(sql) if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", sql[i:end]))
            i = end
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _split_args(text: str) -> list[str]:
    args, depth, current, i = [], 0, "", 0
    while i < len(text):
        char = text[i]
        if char in "'\"`":
            end = _skip_quoted(text, i)
            current += text[i:end]
            i = end
            continue
        if char == "," and depth == 0:
            args.append(current.strip())
            current, i = "", i + 1
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
        i += 1
    args.append(current.strip())
    return args


def _replace_call(sql: str, name: str, fn) -> str:
    """Replaces every `name(args)` (balanced parentheses, quoted text skipped) with fn(args)."""
    pattern = re.compile(re.escape(name) + r"(?!\w)\(")
    out, pos = "", 0
    while True:
        match = pattern.search(sql, pos)
        if not match:
            return out + sql[pos:]
        depth, i = 0, match.end() - 1
        while i < len(sql):
            if sql[i] in "'\"`":
                i = _skip_quoted(sql, i)
                continue
            depth += sql[i] == "("
            depth -= sql[i] == ")"
            if depth == 0:
                break
            i += 1
        out += sql[pos:match.start()] + fn(_split_args(sql[match.end():i]))
        pos = i + 1


def _macro_args(sql: str, open_paren: int) -> list[str] | None:
    """CHDatasource.ts `getMacroArgs`: split at commas where the bracket depth is 1, quotes not considered;
    the arguments are kept as written (not trimmed)."""
    args, depth, last = [], 0, open_paren + 1
    for i in range(open_paren, len(sql)):
        char = sql[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 1:
            args.append(sql[last:i])
            last = i + 1
        if depth == 0:
            args.append(sql[last:i])
            return args
    return None


def js_replace_first(text: str, pattern: str, replacement: str) -> str:
    """JavaScript's `text.replace(pattern, replacement)` for a string pattern: the first occurrence, and in the
    replacement `$$`, `$&`, `` $` `` and `$'` are patterns."""
    at = text.find(pattern)
    if at < 0:
        return text
    before, after = text[:at], text[at + len(pattern):]
    expanded = re.sub(r"\$([$&`'])", lambda m: {"$": "$", "&": pattern, "`": before, "'": after}[m.group(1)],
                      replacement)
    return before + expanded + after


def conditional_all(sql: str, is_all, name_of) -> str:
    """CHDatasource.ts `applyConditionalAll`: from the last `$__conditionalAll(` backwards, the call (rebuilt from
    its two arguments) is replaced by `1=1` when the variable is All or empty, else by its condition."""
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index >= 0:
        args = _macro_args(sql, index + len(macro) - 1)
        if args is None or len(args) != 2:
            return sql
        phrase = "1=1" if is_all(name_of(args[1])) else args[0]
        sql = js_replace_first(sql, f"{macro}{args[0]},{args[1]})", phrase)
        index = sql.rfind(macro)
    return sql


def _strict_percent(value: str) -> str:
    """JavaScript's encodeURIComponent, plus the sub-delimiters !'()* (Grafana's encodeURIComponentStrict)."""
    return quote(value, safe="-_.~")


FORMATS = {
    # Grafana's formatRegistry (see the module docstring), for a list of values
    "singlequote": lambda values: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
    "sqlstring": lambda values: ",".join("'" + v.replace("'", "''").replace('"', '\\"') + "'" for v in values),
    "doublequote": lambda values: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
    "csv": ",".join,
    "raw": ",".join,
    "percentencode": lambda values: _strict_percent("{" + ",".join(values) + "}"),
}


def plugin_format(values: list[str]) -> str:
    """The ClickHouse plugin's format for a plain `$var`: a list quoted and joined, without any escaping."""
    return "'" + "','".join(values) + "'"


def expand(sql: str, time_from: datetime | int, time_to: datetime | int, interval_s: float = 60,
           variables: dict[str, list[str] | str] | None = None,
           options: dict[str, list[str]] | None = None) -> str:
    """`sql` as ClickHouse receives it for this time range, interval and variables.

    `variables` maps a variable to its selection: a list of values, a single value, ALL or [] (nothing
    selected). `options` maps a variable to all its values, what a selected All stands for outside
    `$__conditionalAll`."""
    selections = {k: ([v] if isinstance(v, str) else list(v)) for k, v in (variables or {}).items()}
    options = options or {}
    start, end = epoch(time_from), epoch(time_to)
    start_ms, end_ms = epoch_ms(time_from), epoch_ms(time_to)
    interval = max(int(interval_s), 1)

    def name_of(ref: str) -> str:
        return ref.strip().lstrip("$").strip("{}").split(":")[0]

    def is_all(name: str) -> bool:
        return selections.get(name, [ALL]) in ([ALL], [])

    def values_of(name: str) -> list[str]:
        if name not in selections:
            raise KeyError(f"template variable {name} has no value")
        if is_all(name):
            if name not in options:
                raise KeyError(f"template variable {name} is All: its options are needed")
            return list(options[name])
        return selections[name]

    # 1. the browser: $__conditionalAll, then the template variables
    sql = conditional_all(sql, is_all, name_of)

    def var(match: re.Match) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        if name.startswith("__"):  # a macro, not a variable
            return match.group(0)
        values = values_of(name)
        if fmt is None:
            return plugin_format(values)
        if fmt not in FORMATS:
            raise ValueError(f"variable format {fmt} is not modelled")
        return FORMATS[fmt](values)

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", var, sql)

    # 2. the plugin's backend: comments blanked, then the macros
    sql = strip_comments(sql)
    sql = _replace_call(sql, "$__timeFilter_ms", lambda a: f"{a[0]} >= fromUnixTimestamp64Milli({start_ms}) "
                                                          f"AND {a[0]} <= fromUnixTimestamp64Milli({end_ms})")
    sql = _replace_call(sql, "$__timeFilter",
                        lambda a: f"{a[0]} >= toDateTime({start}) AND {a[0]} <= toDateTime({end})")
    sql = _replace_call(sql, "$__timeInterval",
                        lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {interval} second)")
    replacements = {
        "$__fromTime_ms": f"fromUnixTimestamp64Milli({start_ms})", "$__toTime_ms": f"fromUnixTimestamp64Milli({end_ms})",
        "$__fromTime": f"toDateTime({start})", "$__toTime": f"toDateTime({end})", "$__interval_s": str(interval),
    }
    return re.sub(r"\$__(?:fromTime_ms|toTime_ms|fromTime|toTime|interval_s)(?!\w)",
                  lambda m: replacements[m.group(0)], sql)
