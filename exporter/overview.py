"""The fleet at a glance: each instance the caller may see, with its latest diagnostic.

Read from discovery (cached for a moment by the engine) and the store; nothing is run.
Shared by the diagnostics API's instance list and the console's fleet view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from exporter.diagnostic import Diagnostic
from exporter.discovery import Instance
from exporter.issues import Issue
from exporter.reports import HealthPoint, uptime_percentage
from exporter.store import Store

Status = Literal["unhealthy", "unknown", "healthy"]
# Worst first: what needs attention leads.
STATUS_ORDER: Mapping[Status, int] = {"unhealthy": 0, "unknown": 1, "healthy": 2}
UPTIME_DAYS = (1, 7)


@dataclass(frozen=True)
class InstanceSummary:
    """One instance as discovery sees it and as its latest diagnostic found it."""

    instance: Instance
    latest: Diagnostic | None
    # Uptime in percent over each of UPTIME_DAYS (None: no history in that window).
    uptime: Mapping[int, float | None] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """healthy, unhealthy, or unknown before the first diagnostic."""
        if self.latest is None:
            return "unknown"
        return "healthy" if self.latest.healthy else "unhealthy"

    @property
    def root_cause(self) -> Issue | None:
        """The issue that explains the others, if the latest diagnostic found one."""
        return self.latest.root_cause.issue if self.latest and self.latest.root_cause else None

    def sort_key(self) -> tuple[int, int, str]:
        """Worst first: unhealthy (most critical issues first), unknown, healthy; then name."""
        critical = sum(1 for i in self.latest.issues if i.severity == "critical") \
            if self.latest else 0
        return STATUS_ORDER[self.status], -critical, (self.instance.name or "").lower()

    def to_dict(self) -> dict[str, Any]:
        """The diagnostics API's instance list entry."""
        inst, latest = self.instance, self.latest
        return {
            "id": inst.id, "name": inst.name, "owner": inst.owner, "source": inst.source,
            "gateway_url": inst.endpoints.gateway_url,
            "components_running": sum(1 for c in inst.components.values() if c.running),
            "components_expected": len(inst.components),
            "problems": sorted({p.code for p in inst.problems}),
            "healthy": latest.healthy if latest else None,
            "last_diagnostic_at": latest.timestamp.isoformat() if latest else None,
            "root_cause": self.root_cause.code if self.root_cause else None,
        }


def summarize(instances: Iterable[Instance], store: Store, can_see: Callable[[str], bool],
              *, uptime: bool = False, now: datetime | None = None) -> list[InstanceSummary]:
    """The visible instances in the order given; with `uptime`, over 24 h and 7 days."""
    visible = [i for i in instances if can_see(i.id)]
    now = now or datetime.now(UTC)
    points: dict[str, list[HealthPoint]] = {}
    before: dict[str, HealthPoint] = {}
    if uptime and visible:
        since = now - timedelta(days=max(UPTIME_DAYS))
        # One instance: its rows only; several: one read for all of them.
        points = store.health_points(since, visible[0].id if len(visible) == 1 else None)
        before = store.health_before(since)
    # One read of every latest diagnostic beats one read per instance from a handful on.
    latest = {d.instance_id: d for d in store.latest_all()} if len(visible) > 3 else {
        i.id: d for i in visible if (d := store.latest(i.id)) is not None}
    out = []
    for inst in visible:
        spans = {days: uptime_percentage(points.get(inst.id, ()), days, now,
                                         before=before.get(inst.id))
                 for days in UPTIME_DAYS} if uptime else {}
        out.append(InstanceSummary(inst, latest.get(inst.id), spans))
    return out


def worst_first(summaries: Sequence[InstanceSummary]) -> list[InstanceSummary]:
    """The summaries sorted worst first."""
    return sorted(summaries, key=InstanceSummary.sort_key)
