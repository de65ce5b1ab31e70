"""UltrabaseCollector: every ultrabase_* family, built fresh from one snapshot per collect."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import ModuleType

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.config import Config
from exporter.metrics import (
    auth,
    checks,
    components,
    database,
    disk,
    endpoints,
    instances,
    issues,
    logs,
    runs,
    status,
)
from exporter.metrics.families import Refresh
from exporter.metrics.snapshot import MetricsSnapshot, MetricsSource

log = logging.getLogger(__name__)

Group = Callable[[MetricsSnapshot, Refresh], list[Metric]]

_MODULES: tuple[ModuleType, ...] = (status, instances, checks, components, issues, endpoints,
                                    auth, database, disk, logs, runs)
GROUPS: tuple[Group, ...] = tuple(m.families for m in _MODULES)


class UltrabaseCollector(Collector):
    """A custom collector: no long-lived metric objects, so no stale label sets survive."""

    def __init__(self, source: MetricsSource, registry: CollectorRegistry | None = None, *,
                 config: Config | None = None) -> None:
        self._source = source
        self._refresh = Refresh.from_config(config)
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable[Metric]:
        """Read the source once and build every family; the source's errors propagate."""
        return self.families(MetricsSnapshot.take(self._source))

    def describe(self) -> Iterable[Metric]:
        """The families without touching the source (so registering reads nothing)."""
        return self.families(MetricsSnapshot())

    def families(self, snapshot: MetricsSnapshot) -> list[Metric]:
        """Every family of snapshot, each present even when it has no series."""
        out: list[Metric] = []
        for group in GROUPS:
            try:
                out.extend(group(snapshot, self._refresh))
            except Exception:
                # The groups never raise on missing or malformed details; if one has a bug
                # anyway, the others must still reach Prometheus.
                log.exception("metric group %s failed; its families are left out",
                              group.__module__)
        return out
