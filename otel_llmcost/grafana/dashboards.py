"""The Grafana dashboards (overview and drill-down) as dashboard JSON.

Every panel's SQL is in `PANELS` (title -> spec); the tests expand the ClickHouse plugin's macros and the
template variables in each one (`macros.py`) and run it against the chDB engine. `otel-llmcost alerts
provision` writes the dashboards to grafana/dashboards/*.json. Plain JSON, no SDK: `alerts provision` runs in
every install, and the contract tests check the JSON against what Grafana itself requires.

How the queries are written, and why:
- A dashboard variable reaches the SQL only as `${var:percentencode}` inside a string literal, decoded by
  ClickHouse (`selected`): the percent-encoding's alphabet has no quote, backslash or newline, so a project
  or model name can never end the literal, whatever it contains. (`${var:singlequote}` escapes a quote with a
  backslash but leaves a backslash as is: a name ending in one ends the literal.)
- Time series bucket whole minutes of the per-minute rollup (`BUCKET`): Grafana picks intervals of 5 to 20 s
  for short ranges, and a bucket shorter than the rollup's minute would leave most buckets empty and put a
  minute's total in the others. A rate divides by the bucket's minutes (`BUCKET_MINUTES`), so it is the same
  at any interval.
- Calls without a known cost (price status `unpriced`: usage known, no price; `no_usage`: no usage known) are
  never a silent $0: `FLAGGED` counts them with a rough figure of what they cost (their tokens at the average
  price per token of the same model's priced calls in the range, or of all priced calls when the model has
  none; a call without usage at the average priced call), next to the calls whose usage was `estimated`.
  A failed call without usage is not billed and not counted there.
- Rows of `llm_spans` are read with FINAL: a re-sent span or a repriced row (reprice writes a newer copy) is
  listed once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .ids import DATASOURCE, DRILLDOWN_UID, OVERVIEW_UID

FORMAT_TIMESERIES, FORMAT_TABLE = 0, 1
VARIABLES = {  # variable -> column of llm_rollup_1m
    "service": "service_name",
    "project": "project",
    "feature": "feature",
    "provider": "provider",
    "model": "model",
}
SPAN_MODEL = "if(response_model != '', response_model, request_model)"  # the rollups' model, on llm_spans
ROLLUP = "llm_rollup_1m"
BUCKET_MINUTES = "greatest(1, intDiv($__interval_s + 59, 60))"
BUCKET = f"toStartOfInterval(minute, toIntervalMinute({BUCKET_MINUTES}))"


def selected(variable: str, column: str) -> str:
    """`column` is one of the values selected in `variable` (always true when All or nothing is selected).

    Grafana's percentencode turns a selection into `{a,b}` percent-encoded; the decoded text without its
    braces is split at the commas. The whole text is a candidate too, so that one selected name that
    contains a comma matches itself."""
    # No `$` in the condition but the variable's: the plugin puts it in place with JavaScript's String.replace,
    # where `$'` and `$&` are patterns (hence `\\z`, the regex's end of text, rather than `$`).
    decoded = f"replaceRegexpOne(decodeURLComponent('${{{variable}:percentencode}}'), '(?s)^[{{](.*)[}}]\\\\z', '\\\\1')"
    return f"$__conditionalAll(has(arrayPushBack(splitByChar(',', {decoded}), {decoded}), {column}), ${variable})"


def where(*variables: str, columns: dict[str, str] | None = None) -> str:
    """The filter every panel applies: one condition per dashboard variable (All = no filter)."""
    columns = {**VARIABLES, **(columns or {})}
    return "\n  AND ".join(selected(v, columns[v]) for v in (variables or tuple(VARIABLES)))


F = where()
F_USER = where("service", "project", "feature", "model")  # the user rollup has no provider column
F_SPANS = where(columns={"model": SPAN_MODEL})


def _series(dimension: str) -> str:
    return f"""SELECT {BUCKET} AS time, {dimension}, sum(cost_usd) AS spend_usd
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY time, {dimension}
ORDER BY time"""


def flagged(dimensions: tuple[str, ...] = ()) -> str:
    """Per `dimensions` (columns of llm_spans, `model` as the rollups name it): the calls without a known
    cost in the range and a rough dollar figure for them, the calls with estimated usage and their cost."""
    keys = "".join(f"{d}, " for d in dimensions)
    outer_keys = "".join(f"f.{d} AS {d}, " for d in dimensions)
    span_keys = "".join(f"{SPAN_MODEL if d == 'model' else d} AS {d}, " for d in dimensions)
    rates = """toFloat64(sum(cost_usd)) / greatest(sum(calls), 1) AS per_call,
               toFloat64(sum(input_cost_usd + cache_read_cost_usd + cache_write_cost_usd))
                   / greatest(sum(input_tokens), 1) AS per_input_token,
               toFloat64(sum(output_cost_usd)) / greatest(sum(output_tokens), 1) AS per_output_token"""
    priced_minutes = f"FROM {ROLLUP} WHERE $__timeFilter(minute) AND unpriced_calls = 0 AND cost_usd > 0"
    return f"""SELECT {outer_keys}
    toUInt64(sumIf(f.calls, f.price_status IN ('unpriced', 'no_usage'))) AS calls_without_cost,
    sumIf(f.calls * if(m.priced_calls > 0, m.per_call, a.per_call), f.price_status = 'no_usage')
      + sumIf(f.input_tokens * if(m.priced_calls > 0, m.per_input_token, a.per_input_token)
              + f.output_tokens * if(m.priced_calls > 0, m.per_output_token, a.per_output_token),
              f.price_status = 'unpriced') AS rough_missing_usd,
    toUInt64(sumIf(f.calls, f.price_status = 'estimated')) AS estimated_calls,
    sumIf(f.cost, f.price_status = 'estimated') AS estimated_usd
FROM (
    SELECT {span_keys}{SPAN_MODEL} AS span_model, price_status, count() AS calls,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           toFloat64(sum(ifNull(cost_usd, 0))) AS cost
    FROM llm_spans FINAL
    WHERE $__timeFilter(timestamp) AND price_status != 'priced' AND cache_hit_kind = ''
      AND NOT (price_status = 'no_usage' AND status_code = 'ERROR')
      AND {F_SPANS}
    GROUP BY {keys}span_model, price_status
) AS f
LEFT JOIN (
    SELECT model AS rate_model, sum(calls) AS priced_calls, {rates}
    {priced_minutes}
    GROUP BY rate_model
) AS m ON f.span_model = m.rate_model
CROSS JOIN (SELECT {rates} {priced_minutes}) AS a
{"GROUP BY " + ", ".join(dimensions) if dimensions else ""}"""


# The month so far at the dashboard's end time, and the budget of the whole organisation (scope all).
_MONTH = f"""SELECT
    sum(cost_usd) AS month_to_date_usd,
    toFloat64(month_to_date_usd) / greatest(1, dateDiff('second', toDateTime(toStartOfMonth(toTimeZone($__toTime, 'UTC')), 'UTC'), $__toTime))
        * toDayOfMonth(toLastDayOfMonth(toTimeZone($__toTime, 'UTC'))) * 86400 AS projected_month_end_usd,
    (SELECT sum(amount_usd) FROM llm_budgets FINAL
     WHERE is_deleted = 0 AND scope = 'all' AND period = 'month') AS monthly_budget_usd
FROM {ROLLUP}
WHERE minute >= toDateTime(toStartOfMonth(toTimeZone($__toTime, 'UTC')), 'UTC') AND minute < $__toTime
  AND {F}"""

_TODAY = f"""SELECT
    sum(cost_usd) AS today_usd,
    (SELECT sum(amount_usd) FROM llm_budgets FINAL
     WHERE is_deleted = 0 AND scope = 'all' AND period = 'day') AS daily_budget_usd
FROM {ROLLUP}
WHERE minute >= toStartOfDay(toTimeZone($__toTime, 'UTC')) AND minute < $__toTime
  AND {F}"""

_USERS = f"""SELECT user_id, sum(cost_usd) AS spend_usd, sum(calls) AS calls
FROM llm_user_rollup_1m
WHERE $__timeFilter(minute)
  AND {F_USER}
GROUP BY user_id"""

_BY_KEY = ("service_name", "project", "feature", "provider", "model")

# The findings of the latest `otel-llmcost savings --save` run (llm_savings, migration 101), whatever the
# dashboard's range: a run looks back over its own window (`since_seconds`), and an older run's findings
# would be counted again next to the newer one's.
SAVINGS = f"""SELECT kind, service_name, project, feature, provider, model, monthly_savings_usd, estimate, detail,
    query, computed_at, intDiv(since_seconds, 86400) AS window_days
FROM llm_savings
WHERE computed_at = (SELECT max(computed_at) FROM llm_savings)
  AND {F}
ORDER BY monthly_savings_usd DESC
LIMIT 100"""


@dataclass
class PanelSpec:
    id: int  # stable: alert rules link to a panel by its id
    title: str
    kind: str  # stat | timeseries | table | barchart
    sql: str
    fmt: int = FORMAT_TABLE
    unit: str = "currencyUSD"
    width: int = 12
    height: int = 8
    description: str = ""
    overrides: dict[str, str] = field(default_factory=dict)  # column -> unit
    no_value: str = ""  # what the panel says when its query returns nothing


PANELS: dict[str, PanelSpec] = {p.title: p for p in [
    PanelSpec(1, "Spend today vs daily budget", "stat", _TODAY, width=6, height=5,
              description="Spend since midnight UTC, next to the daily budget of scope all (llm_budgets)."),
    PanelSpec(2, "Month to date, projected month end vs budget", "stat", _MONTH, width=9, height=5,
              description="Projected: the month so far at its average pace, over the whole month."),
    PanelSpec(3, "Spend in range", "stat", f"""SELECT sum(cost_usd) AS spend_usd, sum(calls) AS requests,
    sum(cost_usd) / greatest(1, sum(calls)) AS cost_per_request_usd
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}""", width=9, height=5, overrides={"requests": "short"}),
    PanelSpec(4, "Calls without a known cost", "stat", flagged(), width=24, height=5,
              overrides={"calls_without_cost": "short", "estimated_calls": "short"},
              description="Not in any spend figure: calls to a model without a price (unpriced) and calls whose "
                          "usage is unknown (no_usage), with a rough figure of what they cost (their tokens at the "
                          "average price of the same model's priced calls in the range, or of all priced calls; a "
                          "call without usage at the average priced call). In the spend figures but flagged: calls "
                          "whose usage was estimated (e.g. a stream cut short) and their cost."),
    PanelSpec(5, "Spend by provider", "timeseries", _series("provider"), FORMAT_TIMESERIES),
    PanelSpec(6, "Spend by model", "timeseries", _series("model"), FORMAT_TIMESERIES),
    PanelSpec(7, "Spend by service", "timeseries", _series("service_name"), FORMAT_TIMESERIES),
    PanelSpec(8, "Spend by feature", "timeseries", _series("feature"), FORMAT_TIMESERIES),
    # The whole hours from the rollup's hourly projection (031: grouped by toStartOfHour(minute)), the minutes
    # of the last, partial hour from the rollup: a year of hours rather than half a million minute rows.
    PanelSpec(9, "Month over month", "barchart", f"""SELECT formatDateTime(toStartOfMonth(hour), '%Y-%m') AS month,
    sum(cost) AS spend_usd, sum(n) AS requests
FROM (
    SELECT toStartOfHour(minute) AS hour, sum(cost_usd) AS cost, sum(calls) AS n
    FROM {ROLLUP}
    WHERE toStartOfHour(minute) >= toDateTime(toStartOfMonth(toTimeZone($__toTime, 'UTC')), 'UTC') - toIntervalMonth(12)
      AND toStartOfHour(minute) < toStartOfHour(toTimeZone($__toTime, 'UTC'))
      AND {F}
    GROUP BY hour
    UNION ALL
    SELECT toStartOfHour(minute) AS hour, sum(cost_usd) AS cost, sum(calls) AS n
    FROM {ROLLUP}
    WHERE minute >= toStartOfHour(toTimeZone($__toTime, 'UTC')) AND minute < $__toTime
      AND {F}
    GROUP BY hour
)
GROUP BY month
ORDER BY month""", overrides={"requests": "short"}),
    PanelSpec(10, "Cost per request by model", "table", f"""SELECT provider, model, sum(calls) AS requests,
    sum(cost_usd) AS spend_usd, sum(cost_usd) / greatest(1, sum(calls)) AS cost_per_request_usd,
    sum(input_tokens + output_tokens) / greatest(1, sum(calls)) AS tokens_per_request
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY provider, model
ORDER BY cost_per_request_usd DESC""", overrides={"requests": "short", "tokens_per_request": "short"}),
    PanelSpec(11, "Top 10 features by cost", "table", f"""SELECT project, feature, sum(cost_usd) AS spend_usd,
    sum(calls) AS requests, argMax(model, cost_usd) AS top_model
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY project, feature
ORDER BY spend_usd DESC
LIMIT 10""", overrides={"requests": "short"}),
    PanelSpec(12, "Top users", "table", f"""{_USERS}
ORDER BY spend_usd DESC
LIMIT 20""", overrides={"calls": "short"}),
    PanelSpec(13, "Share of spend of the top 20% of users", "stat", f"""SELECT
    sumIf(spend_usd, user_rank <= ceil(n_users * 0.2)) / greatest(sum(spend_usd), 1e-12) AS top_20pct_share,
    max(n_users) AS users
FROM (
    SELECT spend_usd, row_number() OVER (ORDER BY spend_usd DESC) AS user_rank, count() OVER () AS n_users
    FROM ({_USERS})
)""", unit="percentunit", width=6, overrides={"users": "short"}),
    PanelSpec(14, "Prompt-cache hit rate", "timeseries", f"""SELECT {BUCKET} AS time,
    sum(cache_read_tokens) / greatest(sum(input_tokens), 1) AS cache_hit_rate
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY time
ORDER BY time""", FORMAT_TIMESERIES, unit="percentunit", width=6,
              description="Cached input tokens over all input tokens (cache reads are counted in input)."),
    PanelSpec(15, "Saved by caching", "stat", f"""SELECT
    sum(cache_read_tokens) / greatest(sum(input_tokens), 1) AS prompt_cache_hit_rate,
    sum(cache_savings_usd) AS prompt_cache_saved_usd,
    sum(app_cache_hits) AS app_cache_hits,
    sum(app_cache_savings_usd) AS app_cache_saved_usd
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}""", overrides={"prompt_cache_hit_rate": "percentunit", "app_cache_hits": "short"},
              description="Prompt caching (cache_savings_usd) and application-level cache hits, calls not made "
                          "(app_cache_hits, app_cache_savings_usd)."),
    PanelSpec(16, "Unpriced calls, errors, tokens per minute", "timeseries", f"""SELECT {BUCKET} AS time,
    sum(unpriced_calls) / {BUCKET_MINUTES} AS unpriced_calls_per_minute,
    sum(errors) / greatest(sum(calls), 1) AS error_rate,
    sum(input_tokens + output_tokens) / {BUCKET_MINUTES} AS tokens_per_minute
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY time
ORDER BY time""", FORMAT_TIMESERIES, unit="short", width=12,
              overrides={"error_rate": "percentunit"},
              description="Per minute whatever the panel's interval: each point is its bucket's total over the "
                          "bucket's whole minutes."),
    PanelSpec(17, "By service, feature and model", "table", f"""SELECT service_name, project, feature, provider, model,
    sum(r.calls) AS requests, sum(r.errors) AS errors,
    any(f.calls_without_cost) AS calls_without_cost, any(f.rough_missing_usd) AS rough_missing_usd,
    any(f.estimated_calls) AS estimated_calls,
    sum(r.cost_usd) AS spend_usd, sum(r.cost_usd) / greatest(1, sum(r.calls)) AS cost_per_request_usd,
    sum(r.cache_read_tokens) / greatest(sum(r.input_tokens), 1) AS cache_hit_rate,
    sum(r.cache_savings_usd) AS cache_saved_usd, sum(r.app_cache_hits) AS app_cache_hits
FROM {ROLLUP} AS r
LEFT JOIN ({flagged(_BY_KEY)}) AS f USING ({", ".join(_BY_KEY)})
WHERE $__timeFilter(r.minute)
  AND {F}
GROUP BY service_name, project, feature, provider, model
ORDER BY spend_usd DESC""", width=24, height=10,
              overrides={"requests": "short", "errors": "short", "calls_without_cost": "short",
                         "estimated_calls": "short", "cache_hit_rate": "percentunit", "app_cache_hits": "short"},
              description="spend_usd leaves out calls_without_cost (unpriced or without usage); rough_missing_usd "
                          "is a rough figure for them."),
    PanelSpec(19, "Savings found (latest savings run)", "table", SAVINGS, width=24, height=9,
              overrides={"window_days": "d", "computed_at": "dateTimeAsIso"},
              description="What `otel-llmcost savings --save` found on this team's own traffic, in dollars per "
                          "month, largest first, with the query behind each figure: uncached repeated prompt "
                          "prefixes, prompt-cache hit drops, batch candidates, premium models for short outputs "
                          "(an estimate), output caps. Run it daily (cron or a systemd timer); the panel shows the "
                          "latest run, whatever the time range.",
              no_value="No savings run stored yet: run `otel-llmcost savings --save` (daily, from cron)"),
    PanelSpec(18, "Most expensive calls", "table", f"""SELECT timestamp, service_name, project, feature, user_id,
    provider, {SPAN_MODEL} AS model,
    input_tokens, cache_read_tokens, output_tokens, cost_usd, price_status, price_note, trace_id, span_id
FROM llm_spans FINAL
WHERE $__timeFilter(timestamp)
  AND {F_SPANS}
ORDER BY cost_usd DESC NULLS FIRST
LIMIT 50""", width=24, height=10,
              overrides={"input_tokens": "short", "cache_read_tokens": "short", "output_tokens": "short"},
              description="Calls without a cost (unpriced or without usage) first, then the most expensive. One row "
                          "per call (FINAL), also right after a reprice."),
]}

OVERVIEW = [
    "Spend today vs daily budget", "Month to date, projected month end vs budget", "Spend in range",
    "Calls without a known cost",
    "Spend by provider", "Spend by model", "Spend by service", "Spend by feature",
    "Month over month", "Cost per request by model", "Top 10 features by cost", "Top users",
    "Share of spend of the top 20% of users", "Prompt-cache hit rate", "Saved by caching",
    "Unpriced calls, errors, tokens per minute", "Savings found (latest savings run)",
]
DRILLDOWN = [
    "Spend in range", "Spend today vs daily budget", "Month to date, projected month end vs budget",
    "Calls without a known cost",
    "By service, feature and model", "Spend by model", "Spend by feature", "Cost per request by model",
    "Top users", "Prompt-cache hit rate", "Saved by caching", "Unpriced calls, errors, tokens per minute",
    "Most expensive calls",
]


def target(spec: PanelSpec) -> dict[str, Any]:
    """A query of the grafana-clickhouse-datasource plugin (v4): raw SQL in the SQL editor."""
    return {
        "refId": "A",
        "datasource": dict(DATASOURCE),
        "editorType": "sql",
        "queryType": "timeseries" if spec.fmt == FORMAT_TIMESERIES else "table",
        "format": spec.fmt,
        "rawSql": spec.sql,
    }


def panel(spec: PanelSpec, grid: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": spec.id,
        "type": spec.kind,
        "title": spec.title,
        "datasource": dict(DATASOURCE),
        "gridPos": grid,
        "targets": [target(spec)],
        "fieldConfig": {
            "defaults": {"unit": spec.unit},
            "overrides": [{"matcher": {"id": "byName", "options": column},
                           "properties": [{"id": "unit", "value": unit}]}
                          for column, unit in spec.overrides.items()],
        },
        "options": {},
    }
    if spec.description:
        out["description"] = spec.description
    if spec.no_value:
        out["fieldConfig"]["defaults"]["noValue"] = spec.no_value
    if spec.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "values": False, "fields": "/.*/"},
                          "graphMode": "none", "colorMode": "value", "textMode": "auto"}
    if spec.kind == "barchart":
        out["options"] = {"xField": "month"}
    return out


def layout(specs: list[PanelSpec]) -> list[dict[str, int]]:
    """Left to right on Grafana's 24-column grid, a new row when a panel does not fit."""
    grids, x, y, row_height = [], 0, 0, 0
    for spec in specs:
        if x + spec.width > 24:
            x, y, row_height = 0, y + row_height, 0
        grids.append({"h": spec.height, "w": spec.width, "x": x, "y": y})
        x, row_height = x + spec.width, max(row_height, spec.height)
    return grids


def variable(name: str, column: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": name,
        "datasource": dict(DATASOURCE),
        "query": f"SELECT DISTINCT {column} FROM {ROLLUP} WHERE $__timeFilter(minute) ORDER BY {column}",
        "definition": f"SELECT DISTINCT {column} FROM {ROLLUP} WHERE $__timeFilter(minute) ORDER BY {column}",
        "multi": True,
        "includeAll": True,
        "refresh": 2,  # on time range change
        "sort": 0,
        "hide": 0,
        "options": [],
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def build(uid: str, title: str, titles: list[str], description: str, link_to: tuple[str, str]) -> dict[str, Any]:
    specs = [PANELS[t] for t in titles]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["llm", "cost", "otel-llmcost"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 0,
        "schemaVersion": 39,
        "time": {"from": "now-7d", "to": "now"},
        "refresh": "1m",
        "annotations": {"list": []},
        "links": [{"title": link_to[1], "type": "link", "url": f"/d/{link_to[0]}", "includeVars": True,
                   "keepTime": True, "asDropdown": False, "targetBlank": False, "tags": [], "icon": "external link",
                   "tooltip": ""}],
        "templating": {"list": [variable(name, column) for name, column in VARIABLES.items()]},
        "panels": [panel(spec, grid) for spec, grid in zip(specs, layout(specs))],
    }


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        "llmcost-overview": build(OVERVIEW_UID, "LLM cost overview", OVERVIEW,
                                  "What every LLM API call cost: spend against budget, by provider, model, service "
                                  "and feature, caching, calls without a known cost.", (DRILLDOWN_UID, "Drill down")),
        "llmcost-drilldown": build(DRILLDOWN_UID, "LLM cost drill-down", DRILLDOWN,
                                   "One service, project, feature or model: where its money goes, call by call.",
                                   (OVERVIEW_UID, "Overview")),
    }


def dashboard_files() -> dict[str, str]:
    """grafana/dashboards/<name>.json -> its text."""
    return {f"{name}.json": json.dumps(document, indent=2) + "\n" for name, document in dashboards().items()}
