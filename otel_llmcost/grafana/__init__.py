"""Grafana's files, generated: the dashboards (`dashboards.py`) and the provisioning (`provision.py`: the
datasource, the alert rules made from `alerts/rules/*.sql`, the dashboards' folder) that `otel-llmcost alerts
provision` writes to the repository's `grafana/` folder. The alert rules are their input; nothing in
`alerts/` imports from here except the `provision` command itself."""
