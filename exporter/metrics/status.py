"""Exporter-wide state: ultrabase_up, ultrabase_watch_up and ultrabase_build_info."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from exporter import __version__
from exporter.metrics.families import Refresh, gauge
from exporter.metrics.snapshot import MetricsSnapshot


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """Whether the last sweep reached Docker, and the running version."""
    # Before the first sweep nothing says Docker is down, so the exporter reports up.
    up = 0.0 if snapshot.docker_ok is False else 1.0
    return [
        gauge("ultrabase_up",
              "1 if the last diagnostic sweep could reach the Docker engine, 0 if not "
              f"(1 before the first sweep); sweeps run every {refresh.sweep_interval_seconds:g} s",
              (), [((), up)]),
        gauge("ultrabase_watch_up",
              "1 while a watch works, 0 while it is down: watch=\"events\" follows the "
              "Docker engine's event stream (diagnostics on container events), "
              "watch=\"probe\" is the quick probe (a full diagnostic where an instance "
              "differs from its latest one); absent when switched off (config watch)",
              ("watch",), [((part,), 1.0 if up else 0.0) for part, up in snapshot.watch.items()]),
        gauge("ultrabase_build_info", "Ultrabase Doctor's version; the value is always 1",
              ("version",), [((__version__,), 1.0)]),
    ]
