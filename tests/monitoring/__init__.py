"""Monitoring tests: Prometheus rules, Alertmanager routing, Grafana dashboards."""
