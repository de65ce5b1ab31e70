"""Per-component state: probe result, container state set and restart count."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from exporter.checks.base import entries
from exporter.checks.containers import CONTAINER_STATUS
from exporter.checks.services import SERVICE_HEALTH
from exporter.metrics.families import Refresh, Row, details, flag, gauge, number
from exporter.metrics.snapshot import MetricsSnapshot

# Docker's container states plus "missing" (expected but absent); each gets a series so
# that `ultrabase_container_state{state="running"} == 0` works without absent().
CONTAINER_STATES = ("created", "running", "paused", "restarting", "removing", "exited",
                    "dead", "missing")

_LABELS = ("instance_id", "component")


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_component_up, ultrabase_container_state, ultrabase_container_restarts."""
    return [
        gauge("ultrabase_component_up",
              refresh.cached("1 if the component answered its health probe (or Docker "
                             "reports it healthy), 0 if not"),
              _LABELS, _component_up(snapshot)),
        gauge("ultrabase_container_state",
              refresh.cached("State set of the component's container: 1 for its current "
                             "state, 0 for the others"),
              (*_LABELS, "state"), _container_states(snapshot)),
        gauge("ultrabase_container_restarts",
              refresh.cached("Docker's restart count of the component's container (only "
                             "when the container was inspected)"),
              _LABELS, _restarts(snapshot)),
    ]


def _component_up(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        for name, entry in entries(details(d, SERVICE_HEALTH).get("components")):
            up = flag(entry.get("up"))
            if up is not None:
                yield (d.instance_id, name), up


def _container_states(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        for name, entry in entries(details(d, CONTAINER_STATUS).get("components")):
            current = entry.get("state")
            if not isinstance(current, str):
                continue
            for state in CONTAINER_STATES:
                yield (d.instance_id, name, state), float(state == current)
            if current not in CONTAINER_STATES:
                # A state Docker may add later is shown rather than lost.
                yield (d.instance_id, name, current), 1.0


def _restarts(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        for name, entry in entries(details(d, CONTAINER_STATUS).get("components")):
            restarts = number(entry.get("restarts"))
            if restarts is not None:
                yield (d.instance_id, name), restarts
