"""The Grafana dashboards (overview and drill-down), built with grafana-foundation-sdk.

Every panel's SQL is in `PANELS` (title -> query); the tests expand the ClickHouse plugin's macros and the
template variables in each one and run it against the chDB engine. `otel-llmcost alerts provision`
writes the dashboards to grafana/dashboards/*.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import barchart, common as common_builders, dashboard as dash, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder, variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard as models

from .provision import DATASOURCE_TYPE, DATASOURCE_UID, DRILLDOWN_UID, OVERVIEW_UID

FORMAT_TIMESERIES, FORMAT_TABLE = 0, 1
VARIABLES = {  # variable -> column of llm_rollup_1m
    "service": "service_name",
    "project": "project",
    "feature": "feature",
    "provider": "provider",
    "model": "model",
}


def where(*variables: str) -> str:
    """The filter every panel applies: one $__conditionalAll per dashboard variable (All = no filter)."""
    names = variables or tuple(VARIABLES)
    return "\n  AND ".join(
        f"$__conditionalAll({VARIABLES[v]} IN (${{{v}:singlequote}}), ${v})" for v in names
    )


ROLLUP = "llm_rollup_1m"
F = where()
F_USER = where("service", "project", "feature", "model")  # the user rollup has no provider column


def _series(dimension: str) -> str:
    return f"""SELECT $__timeInterval(minute) AS time, {dimension}, sum(cost_usd) AS spend_usd
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY time, {dimension}
ORDER BY time"""


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


@dataclass
class PanelSpec:
    title: str
    kind: str  # stat | timeseries | table | barchart
    sql: str
    fmt: int = FORMAT_TABLE
    unit: str = "currencyUSD"
    width: int = 12
    height: int = 8
    description: str = ""
    overrides: dict[str, str] = field(default_factory=dict)  # column -> unit


PANELS: dict[str, PanelSpec] = {p.title: p for p in [
    PanelSpec("Spend today vs daily budget", "stat", _TODAY, width=6, height=5,
              description="Spend since midnight UTC, next to the daily budget of scope all (llm_budgets)."),
    PanelSpec("Month to date, projected month end vs budget", "stat", _MONTH, width=9, height=5,
              description="Projected: the month so far at its average pace, over the whole month."),
    PanelSpec("Spend in range", "stat", f"""SELECT sum(cost_usd) AS spend_usd, sum(calls) AS requests,
    sum(cost_usd) / greatest(1, sum(calls)) AS cost_per_request_usd
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}""", width=9, height=5, overrides={"requests": "short"}),
    PanelSpec("Spend by provider", "timeseries", _series("provider"), FORMAT_TIMESERIES),
    PanelSpec("Spend by model", "timeseries", _series("model"), FORMAT_TIMESERIES),
    PanelSpec("Spend by service", "timeseries", _series("service_name"), FORMAT_TIMESERIES),
    PanelSpec("Spend by feature", "timeseries", _series("feature"), FORMAT_TIMESERIES),
    # The whole hours from the rollup's hourly projection (031: grouped by toStartOfHour(minute)), the minutes
    # of the last, partial hour from the rollup: a year of hours rather than half a million minute rows.
    PanelSpec("Month over month", "barchart", f"""SELECT formatDateTime(toStartOfMonth(hour), '%Y-%m') AS month,
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
    PanelSpec("Cost per request by model", "table", f"""SELECT provider, model, sum(calls) AS requests,
    sum(cost_usd) AS spend_usd, sum(cost_usd) / greatest(1, sum(calls)) AS cost_per_request_usd,
    sum(input_tokens + output_tokens) / greatest(1, sum(calls)) AS tokens_per_request
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY provider, model
ORDER BY cost_per_request_usd DESC""", overrides={"requests": "short", "tokens_per_request": "short"}),
    PanelSpec("Top 10 features by cost", "table", f"""SELECT project, feature, sum(cost_usd) AS spend_usd,
    sum(calls) AS requests, argMax(model, cost_usd) AS top_model
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY project, feature
ORDER BY spend_usd DESC
LIMIT 10""", overrides={"requests": "short"}),
    PanelSpec("Top users", "table", f"""{_USERS}
ORDER BY spend_usd DESC
LIMIT 20""", overrides={"calls": "short"}),
    PanelSpec("Share of spend of the top 20% of users", "stat", f"""SELECT
    sumIf(spend_usd, user_rank <= ceil(n_users * 0.2)) / greatest(sum(spend_usd), 1e-12) AS top_20pct_share,
    max(n_users) AS users
FROM (
    SELECT spend_usd, row_number() OVER (ORDER BY spend_usd DESC) AS user_rank, count() OVER () AS n_users
    FROM ({_USERS})
)""", unit="percentunit", width=6, overrides={"users": "short"}),
    PanelSpec("Prompt-cache hit rate", "timeseries", f"""SELECT $__timeInterval(minute) AS time,
    sum(cache_read_tokens) / greatest(sum(input_tokens), 1) AS cache_hit_rate
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY time
ORDER BY time""", FORMAT_TIMESERIES, unit="percentunit", width=6,
              description="Cached input tokens over all input tokens (cache reads are counted in input)."),
    PanelSpec("Saved by caching", "stat", f"""SELECT
    sum(cache_read_tokens) / greatest(sum(input_tokens), 1) AS prompt_cache_hit_rate,
    sum(cache_savings_usd) AS prompt_cache_saved_usd,
    sum(app_cache_hits) AS app_cache_hits,
    sum(app_cache_savings_usd) AS app_cache_saved_usd
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}""", overrides={"prompt_cache_hit_rate": "percentunit", "app_cache_hits": "short"},
              description="Prompt caching (cache_savings_usd) and application-level cache hits, calls not made "
                          "(app_cache_hits, app_cache_savings_usd)."),
    PanelSpec("Unpriced calls, errors, tokens per minute", "timeseries", f"""SELECT $__timeInterval(minute) AS time,
    sum(unpriced_calls) AS unpriced_calls,
    sum(errors) / greatest(sum(calls), 1) AS error_rate,
    sum(input_tokens + output_tokens) / ($__interval_s / 60) AS tokens_per_minute
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY time
ORDER BY time""", FORMAT_TIMESERIES, unit="short", width=12,
              overrides={"error_rate": "percentunit"}),
    PanelSpec("By service, feature and model", "table", f"""SELECT service_name, project, feature, provider, model,
    sum(calls) AS requests, sum(errors) AS errors, sum(unpriced_calls) AS unpriced_calls,
    sum(cost_usd) AS spend_usd, sum(cost_usd) / greatest(1, sum(calls)) AS cost_per_request_usd,
    sum(cache_read_tokens) / greatest(sum(input_tokens), 1) AS cache_hit_rate,
    sum(cache_savings_usd) AS cache_saved_usd, sum(app_cache_hits) AS app_cache_hits
FROM {ROLLUP}
WHERE $__timeFilter(minute)
  AND {F}
GROUP BY service_name, project, feature, provider, model
ORDER BY spend_usd DESC""", width=24, height=10,
              overrides={"requests": "short", "errors": "short", "unpriced_calls": "short",
                         "cache_hit_rate": "percentunit", "app_cache_hits": "short"}),
    PanelSpec("Most expensive calls", "table", f"""SELECT timestamp, service_name, project, feature, user_id,
    provider, if(response_model != '', response_model, request_model) AS model,
    input_tokens, cache_read_tokens, output_tokens, cost_usd, price_status, trace_id
FROM llm_spans
WHERE $__timeFilter(timestamp)
  AND {F.replace("model IN", "if(response_model != '', response_model, request_model) IN")}
ORDER BY cost_usd DESC NULLS FIRST
LIMIT 50""", width=24, height=10,
              overrides={"input_tokens": "short", "cache_read_tokens": "short", "output_tokens": "short"},
              description="Unpriced calls (no cost) first, then the most expensive."),
]}

OVERVIEW = [
    "Spend today vs daily budget", "Month to date, projected month end vs budget", "Spend in range",
    "Spend by provider", "Spend by model", "Spend by service", "Spend by feature",
    "Month over month", "Cost per request by model", "Top 10 features by cost", "Top users",
    "Share of spend of the top 20% of users", "Prompt-cache hit rate", "Saved by caching",
    "Unpriced calls, errors, tokens per minute",
]
DRILLDOWN = [
    "Spend in range", "Spend today vs daily budget", "Month to date, projected month end vs budget",
    "By service, feature and model", "Spend by model", "Spend by feature", "Cost per request by model",
    "Top users", "Prompt-cache hit rate", "Saved by caching", "Unpriced calls, errors, tokens per minute",
    "Most expensive calls",
]


class ClickHouseQuery(cogvariants.Dataquery):
    """A query of the grafana-clickhouse-datasource plugin (v4): raw SQL in the SQL editor."""

    def __init__(self, ref_id: str, sql: str, fmt: int) -> None:
        self.ref_id, self.sql, self.fmt = ref_id, sql, fmt

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorType": "sql",
            "queryType": "timeseries" if self.fmt == FORMAT_TIMESERIES else "table",
            "format": self.fmt,
            "rawSql": self.sql,
        }


class ClickHouseQueryBuilder(cogbuilder.Builder[ClickHouseQuery]):
    def __init__(self, ref_id: str, sql: str, fmt: int) -> None:
        self._query = ClickHouseQuery(ref_id, sql, fmt)

    def build(self) -> ClickHouseQuery:
        return self._query


DATASOURCE = models.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


def panel(spec: PanelSpec) -> cogbuilder.Builder[models.Panel]:
    builder = {"stat": stat.Panel, "timeseries": timeseries.Panel, "table": table.Panel,
               "barchart": barchart.Panel}[spec.kind]()
    builder = (builder.title(spec.title).datasource(DATASOURCE).unit(spec.unit).span(spec.width)
               .height(spec.height).with_target(ClickHouseQueryBuilder("A", spec.sql, spec.fmt)))
    if spec.description:
        builder = builder.description(spec.description)
    if spec.kind == "stat":
        builder = builder.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
                                         .fields("/.*/"))
        builder = builder.graph_mode(common.BigValueGraphMode.NONE)
    if spec.kind == "barchart":
        builder = builder.x_field("month")
    for column, unit in spec.overrides.items():
        builder = builder.override_by_name(column, [models.DynamicConfigValue(id_val="unit", value=unit)])
    return builder


def variable(name: str, column: str) -> dash.QueryVariable:
    return (dash.QueryVariable(name).label(name).datasource(DATASOURCE)
            .query(f"SELECT DISTINCT {column} FROM {ROLLUP} WHERE $__timeFilter(minute) ORDER BY {column}")
            .multi(True).include_all(True).refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .current(models.VariableOption(selected=True, text="All", value="$__all")))


def build(uid: str, title: str, titles: list[str], description: str, link_to: tuple[str, str]) -> dict[str, Any]:
    builder = (dash.Dashboard(title).uid(uid).description(description).tags(["llm", "cost", "otel-llmcost"])
               .timezone("utc").time("now-7d", "now").refresh("1m").editable()
               .link(dash.DashboardLink(link_to[1]).type(models.DashboardLinkType.LINK).url(f"/d/{link_to[0]}")
                     .include_vars(True).keep_time(True)))
    for name, column in VARIABLES.items():
        builder = builder.with_variable(variable(name, column))
    for title_ in titles:
        builder = builder.with_panel(panel(PANELS[title_]))
    import json

    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        "llmcost-overview": build(OVERVIEW_UID, "LLM cost overview", OVERVIEW,
                                  "What every LLM API call cost: spend against budget, by provider, model, service "
                                  "and feature, caching, unpriced calls.", (DRILLDOWN_UID, "Drill down")),
        "llmcost-drilldown": build(DRILLDOWN_UID, "LLM cost drill-down", DRILLDOWN,
                                   "One service, project, feature or model: where its money goes, call by call.",
                                   (OVERVIEW_UID, "Overview")),
    }
