"""Alert rules: one ClickHouse SQL file per rule (`rules/<name>.sql`), run by Grafana and by the backtest.

A rule file starts with a header of `-- key: value` lines:

    -- rule: spend_spike_without_traffic          the stable name (Grafana's alert title)
    -- severity: page | warning                    routes the notification
    -- for: 5m                                     how long it must hold before it fires
    -- labels: service_name, project, feature      the columns that name an alert instance
    -- values: value, spend_usd, ...               numeric columns the message quotes (`value` first)
    -- texts: top_model, top_feature               text columns the message quotes
    -- summary: ... {spend_usd:$} ...              the one-line message; {column:fmt} or {param}, and
                                                   {where} (service / project / feature, empty ones left
                                                   out), {budget} (scope and value), {top} ("; top MODEL /
                                                   FEATURE" when known); formats $ (money), n, x, %
    -- param NAME TYPE DEFAULT: what it means      a threshold or window, written {NAME:TYPE} in the SQL
    -- extends: other_rule                         (optional) the SQL of another rule, with this header's params

In the SQL, a line `-- include: _name` stands for the shared CTEs of `rules/_name.sql` (not a rule itself).

The SQL reads the evaluation time from `$__toTime`, the ClickHouse datasource's macro for the end of the
query's time range: in a Grafana alert rule that is the evaluation time. It appears once, in
`eval AS (SELECT toStartOfMinute($__toTime) AS t)`, and the rest of the query is written for a set of
evaluation times: the backtest expands the macro to every step of its range and gets every step's answer
from one query. The result has one row per evaluation time and instance: `eval_time`, the label columns,
`firing` (0 or 1), then the value and text columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..durations import parse_duration

TO_TIME = "$__toTime"
PARAM_RE = re.compile(r"\{(\w+):(\w+(?:\(\d+\))?)\}")
PLACEHOLDER_RE = re.compile(r"\{(\w+)(?::([$nx%.]))?\}")
RULE_NAMES = (
    "budget_burn_fast", "budget_burn_slow", "budget_threshold", "budget_projection",
    "spend_spike_without_traffic", "cost_per_request_jump", "cache_collapse", "unpriced_spend", "spend_anomaly",
)


@dataclass
class Param:
    name: str
    type: str
    default: str
    help: str

    def literal(self, value: Any) -> str:
        """The value as a SQL literal of the declared type (numbers only: rule parameters are thresholds)."""
        text = str(value).strip()
        if self.type.startswith(("UInt", "Int")):
            return str(int(float(text)))
        if self.type.startswith("Float"):
            return repr(float(text))
        raise ValueError(f"parameter {self.name}: unsupported type {self.type}")


@dataclass
class Rule:
    name: str
    severity: str
    for_: str
    labels: list[str]
    values: list[str]
    texts: list[str]
    summary: str
    params: dict[str, Param]
    sql: str
    description: str = ""
    header: dict[str, str] = field(default_factory=dict)

    def param_values(self, overrides: dict[str, Any] | None = None) -> dict[str, str]:
        overrides = overrides or {}
        unknown = set(overrides) - set(self.params)
        if unknown:
            raise ValueError(f"rule {self.name} has no parameter {', '.join(sorted(unknown))}")
        return {name: p.literal(overrides.get(name, p.default)) for name, p in self.params.items()}

    def render(self, overrides: dict[str, Any] | None = None) -> str:
        """The SQL with its parameters as literals and `$__toTime` left for Grafana (or the backtest)."""
        values = self.param_values(overrides)

        def sub(match: re.Match) -> str:
            name = match.group(1)
            if name not in values:
                raise ValueError(f"rule {self.name}: {{{name}}} is not a declared parameter")
            return values[name]

        return PARAM_RE.sub(sub, self.sql).strip()

    @property
    def for_seconds(self) -> int:
        return parse_duration(self.for_)


def parse_rule(text: str, base: Rule | None = None) -> Rule:
    """A rule file; with `-- extends: other`, `base` is that rule: its SQL, with this file's header on top."""
    header: dict[str, str] = {}
    params: dict[str, Param] = {}
    body: list[str] = []
    in_header = True
    for line in text.splitlines():
        if in_header and line.startswith("--"):
            content = line[2:].strip()
            param = re.fullmatch(r"param\s+(\w+)\s+(\S+)\s+(\S+):\s*(.*)", content)
            if param:
                name, type_, default, help_ = param.groups()
                params[name] = Param(name, type_, default, help_)
                continue
            key = re.fullmatch(r"([a-z]+):\s*(.*)", content)
            if key and key.group(1) not in header:
                header[key.group(1)] = key.group(2)
            continue
        in_header = False
        body.append(line)
    sql = "\n".join(body)
    split = lambda key: [x.strip() for x in header.get(key, "").split(",") if x.strip()]  # noqa: E731
    if base is not None:
        sql = base.sql
        params = {**base.params, **params}
        for key in ("labels", "values", "texts", "summary", "severity", "for"):
            header.setdefault(key, base.header.get(key, ""))
    rule = Rule(
        name=header["rule"], severity=header.get("severity", "warning"), for_=header.get("for", "0s"),
        labels=split("labels"), values=split("values"), texts=split("texts"), summary=header.get("summary", ""),
        params=params, sql=sql, header=header,
    )
    if sql.count(TO_TIME) != 1:
        raise ValueError(f"rule {rule.name}: {TO_TIME} must appear exactly once (in the eval CTE)")
    return rule


def include(text: str, fragments: dict[str, str]) -> str:
    """Replaces each `-- include: _name` line (`-- include: _name,` adds a comma) by the CTEs of rules/_name.sql,
    shared by several rules; the SQL Grafana and the backtest run is the expanded text."""

    def sub(match: re.Match) -> str:
        name = match.group(2)
        if name not in fragments:
            raise ValueError(f"no fragment rules/{name}.sql")
        return fragments[name].rstrip() + (match.group(3) or "") + "\n"

    return re.sub(r"^(\s*)-- include:\s*(_\w+)(,?)\s*\n", sub, text, flags=re.M)


def load_rules(names: list[str] | None = None) -> list[Rule]:
    """The packaged rules, in RULE_NAMES order; `names` picks some."""
    folder = resources.files(__name__).joinpath("rules")
    files = {entry.name[:-4]: entry.read_text() for entry in folder.iterdir() if entry.name.endswith(".sql")}
    fragments = {name: text for name, text in files.items() if name.startswith("_")}
    texts = {name: include(text, fragments) for name, text in files.items() if not name.startswith("_")}
    rules: dict[str, Rule] = {}

    def get(name: str) -> Rule:
        if name not in rules:
            extends = re.search(r"^-- extends:\s*(\w+)", texts[name], re.M)
            rule = parse_rule(texts[name], get(extends.group(1)) if extends else None)
            if rule.name != name:
                raise ValueError(f"{name}.sql declares rule {rule.name}")
            rules[name] = rule
        return rules[name]

    for name in texts:
        get(name)
    order = [n for n in RULE_NAMES if n in rules] + sorted(set(rules) - set(RULE_NAMES))
    if names:
        missing = [n for n in names if n not in rules]
        if missing:
            raise ValueError(f"no such rule: {', '.join(missing)} (rules: {', '.join(order)})")
        order = [n for n in order if n in names]
    return [rules[n] for n in order]


SCOPE_LABELS = ("service_name", "project", "feature")  # what {where} names, the non-empty ones
SPECIAL_PLACEHOLDERS = ("where", "budget", "top")


def placeholder_formats(rule: Rule) -> dict[str, str]:
    """column -> its format in the summary (one format per column: the query can then scale it, see provision)."""
    formats: dict[str, str] = {}
    for match in PLACEHOLDER_RE.finditer(rule.summary):
        name, fmt = match.group(1), match.group(2) or ""
        if formats.setdefault(name, fmt) != fmt:
            raise ValueError(f"rule {rule.name}: {{{name}}} is quoted with two formats")
    return formats


def format_money(value: float) -> str:
    """Dollars with the precision an amount needs: $1234, $12.34, $0.50, $0.0031 (and $0, under $0.0001)."""
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:.0f}"
    if value >= 0.1:
        return f"${value:.2f}"
    if value >= 0.0001:
        return f"${value:.2g}"
    return "under $0.0001"


def format_number(value: Any, fmt: str | None) -> str:
    """The Python side of a summary placeholder format (the Go side is `go_placeholder` in grafana/provision.py)."""
    if value is None:
        return ""
    if fmt == "$":
        return format_money(float(value))
    if fmt == "n":
        return f"{float(value):.0f}"
    if fmt == "x":
        return f"{float(value):.1f}x"
    if fmt == "%":
        return f"{100 * float(value):.0f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def where_text(rule: Rule, row: dict[str, Any]) -> str:
    """{where}: the instance's service / project / feature, the empty ones left out."""
    parts = [str(row.get(label) or "") for label in SCOPE_LABELS if label in rule.labels]
    return " / ".join(p for p in parts if p) or "(unattributed)"


def budget_text(row: dict[str, Any]) -> str:
    """{budget}: the budget's scope and value (`all` has none)."""
    return " ".join(p for p in (str(row.get("scope") or ""), str(row.get("scope_value") or "")) if p)


def top_text(row: dict[str, Any]) -> str:
    """{top}: `; top MODEL / FEATURE` with what is known of the two, nothing when neither is."""
    parts = [str(row.get(column) or "") for column in ("top_model", "top_feature")]
    known = " / ".join(p for p in parts if p)
    return f"; top {known}" if known else ""


def summarize(rule: Rule, row: dict[str, Any], overrides: dict[str, Any] | None = None) -> str:
    """The rule's one-line message for one result row (what the Slack message says)."""
    params = rule.param_values(overrides)
    special = {"where": lambda: where_text(rule, row), "budget": lambda: budget_text(row), "top": lambda: top_text(row)}

    def sub(match: re.Match) -> str:
        name, fmt = match.group(1), match.group(2)
        if name in special:
            return special[name]()
        if name in row:
            return format_number(row[name], fmt)
        if name in params:
            return params[name]
        return match.group(0)

    return f"{rule.name}: " + PLACEHOLDER_RE.sub(sub, rule.summary)
