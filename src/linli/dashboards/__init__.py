"""Grafana dashboards as code: the big screen and one drill-down per subsystem."""
