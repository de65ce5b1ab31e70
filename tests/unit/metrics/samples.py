"""Plain in-memory metric sources for the metrics tests, holding bench.samples' diagnostics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bench.samples import diagnostic
from exporter.diagnostic import Diagnostic
from exporter.issues import make_issue
from exporter.store import BudgetUse, InstanceInfo, StoreSnapshot


@dataclass
class MemorySource:
    """A plain in-memory metrics source that counts its reads.

    Like the store, it stamps each saved diagnostic with the generation it changed at, and
    a read with since returns only the diagnostics stamped after it.
    """

    diagnostics: list[Diagnostic] = field(default_factory=list)
    infos: list[InstanceInfo] = field(default_factory=list)
    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    operations: dict[tuple[str, str], int] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    budgets: dict[str, BudgetUse] = field(default_factory=dict)
    gen: int = 0
    stamps: dict[str, int] = field(default_factory=dict)
    reads: int = 0  # snapshots taken
    error: Exception | None = None

    def save(self, diagnostic: Diagnostic) -> None:
        """Replace the instance's latest diagnostic and change the generation."""
        self.forget(diagnostic.instance_id)
        self.diagnostics.append(diagnostic)
        self.stamps[diagnostic.instance_id] = self.gen

    def forget(self, instance_id: str) -> None:
        """Drop the instance's latest diagnostic (the store never does; a source may)."""
        self.diagnostics = [d for d in self.diagnostics if d.instance_id != instance_id]
        self.stamps.pop(instance_id, None)
        self.gen += 1

    def snapshot(self, since: int | None = None) -> StoreSnapshot:
        """Everything, or only the diagnostics changed after since."""
        self._fail()
        self.reads += 1
        stamps = {d.instance_id: self.stamps.get(d.instance_id, 0) for d in self.diagnostics}
        return StoreSnapshot(
            generation=self.gen,
            latest=tuple(d for d in self.diagnostics
                         if since is None or stamps[d.instance_id] > since),
            latest_generations=stamps, instances=tuple(self.infos), run_counts=dict(self.runs),
            operation_counts=dict(self.operations), meta=dict(self.meta),
            auto_repairs=dict(self.budgets))

    def generation(self) -> int:
        """The generation."""
        self._fail()
        return self.gen

    def _fail(self) -> None:
        if self.error is not None:
            raise self.error


def fleet(count: int = 3, *, broken: Sequence[str] = ("inst-001",)) -> MemorySource:
    """A source with count instances (inst-000 ...), some broken, and some activity."""
    ids = [f"inst-{i:03d}" for i in range(count)]
    diagnostics = [diagnostic(i, broken=i in broken) for i in ids]
    if count >= 3:
        # The last one as the manager writes it: its gateway open on every interface.
        last = diagnostics[-1]
        diagnostics[-1] = replace(last, issues=(*last.issues, make_issue(
            "PORT_EXPOSED", check="network_connectivity", component="kong",
            message="kong is published on every interface of the host",
            evidence={"ports": [{"host_port": 8165, "container_port": 8000}]})))
    return MemorySource(
        diagnostics=diagnostics,
        infos=[InstanceInfo(i, f"Project {i}", None if n % 2 else f"owner{n}")
               for n, i in enumerate(ids)],
        runs={("scheduled", "healthy"): 10, ("on_demand", "unhealthy"): 2},
        operations={("safe_restart", "success"): 1},
        meta={"docker_ok": "1", "sweep_duration_seconds": "3.250", "watch_events_up": "1",
              "watch_probe_up": "1"},
        # The last instance spent its auto-repair budget (frees in a far future).
        budgets={ids[-1]: BudgetUse(used=3, frees_at=4.0e9)},
        gen=1)
