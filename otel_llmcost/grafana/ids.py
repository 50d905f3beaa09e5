"""The names the Grafana files share: the datasource, the folder and the dashboards' uids.

Both generators (dashboards.py, provision.py) read them from here, so neither imports the other for them.
"""

DATASOURCE_UID = "llmcost-clickhouse"
DATASOURCE_TYPE = "grafana-clickhouse-datasource"
DATASOURCE = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
FOLDER = "LLM cost"
OVERVIEW_UID = "llmcost-overview"
DRILLDOWN_UID = "llmcost-drilldown"
