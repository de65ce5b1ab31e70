"""UltrabaseCollector: every ultrabase_* family, built fresh from one snapshot per collect."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Group:
    """One metric group: the builder of its families, and where its series come from."""

    build: Callable[[MetricsSnapshot, Refresh], list[Metric]]
    # True when every series is about one instance and comes from snapshot.diagnostics or
    # snapshot.instances alone (no family reads both): the renderer then keeps each
    # instance's share of the text and re-renders only the instances that changed.
    per_instance: bool


_MODULES: tuple[tuple[ModuleType, bool], ...] = (
    (status, False), (instances, True), (checks, True), (components, True), (issues, True),
    (endpoints, True), (auth, True), (database, True), (disk, True), (logs, True),
    (runs, False))
GROUPS: tuple[Group, ...] = tuple(Group(m.families, per_instance) for m, per_instance in _MODULES)


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

    def families(self, snapshot: MetricsSnapshot, *,
                 per_instance: bool | None = None) -> list[Metric]:
        """Every family of snapshot, each present even when it has no series (with
        per_instance, those of the groups of that kind only)."""
        out: list[Metric] = []
        for group in GROUPS:
            if per_instance is not None and group.per_instance != per_instance:
                continue
            try:
                out.extend(group.build(snapshot, self._refresh))
            except Exception:
                # The groups never raise on missing or malformed details; if one has a bug
                # anyway, the others must still reach Prometheus.
                log.exception("metric group %s failed; its families are left out",
                              group.build.__module__)
        return out
