"""Grafana side of Ultrabase Doctor: dashboards as code (dashboards_src) and provisioning."""
