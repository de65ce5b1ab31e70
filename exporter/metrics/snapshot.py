"""What the metrics are rendered from: the store's content as one immutable value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from exporter.diagnostic import Diagnostic
from exporter.metrics.families import number
from exporter.store import BudgetUse, InstanceInfo, StoreSnapshot
from exporter.watch.status import META_KEYS


class MetricsSource(Protocol):
    """The read side of the store that /metrics needs (exporter.store.Store provides it)."""

    def generation(self) -> int:
        """A number that changes whenever the store's content changes, in any process."""
        ...

    def snapshot(self, since: int | None = None) -> StoreSnapshot:
        """The whole content at one moment; with since, only the diagnostics changed after."""
        ...


@dataclass(frozen=True)
class InstanceLabels:
    """The labels of ultrabase_instance_info for one instance."""

    id: str
    name: str
    owner: str

    @classmethod
    def of(cls, record: InstanceInfo) -> InstanceLabels:
        """The labels of a store record ("" for a missing name or owner)."""
        return cls(str(record.id), record.name or "", record.owner or "")


def newest(diagnostics: Iterable[Diagnostic]) -> dict[str, Diagnostic]:
    """One diagnostic per instance: should two of one instance come back, the newer wins
    (rather than producing duplicate series)."""
    latest: dict[str, Diagnostic] = {}
    for diagnostic in diagnostics:
        known = latest.get(diagnostic.instance_id)
        if known is None or diagnostic.timestamp > known.timestamp:
            latest[diagnostic.instance_id] = diagnostic
    return latest


@dataclass(frozen=True)
class MetricsSnapshot:
    """The store's content as one immutable value; every metric group reads only this."""

    diagnostics: tuple[Diagnostic, ...] = ()
    instances: tuple[InstanceLabels, ...] = ()
    run_counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    operation_counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    docker_ok: bool | None = None
    sweep_duration_seconds: float | None = None
    # Instance id -> auto-repairs started within the budget window (only those with any).
    auto_repairs: Mapping[str, BudgetUse] = field(default_factory=dict)
    # watch part (events, probe) -> up; parts that are off are absent
    watch: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def take(cls, source: MetricsSource) -> MetricsSnapshot:
        """Read everything from source at once; its errors propagate (the renderer handles
        them)."""
        content = source.snapshot()
        return cls.build(content.latest, content.instances, content.run_counts,
                         content.operation_counts, content.meta, content.auto_repairs)

    def budget_frees_at(self, budget: int) -> float | None:
        """When the next exhausted auto-repair budget frees up (its series then changes
        with no write to the store), if any is exhausted."""
        times = [use.frees_at for use in self.auto_repairs.values()
                 if budget and use.used >= budget]
        return min(times) if times else None

    @classmethod
    def build(cls, diagnostics: Iterable[Diagnostic], instances: Iterable[InstanceInfo],
              run_counts: Mapping[tuple[str, str], int],
              operation_counts: Mapping[tuple[str, str], int],
              meta: Mapping[str, str],
              auto_repairs: Mapping[str, BudgetUse] | None = None) -> MetricsSnapshot:
        """A snapshot from the store's raw parts, in a stable order."""
        latest = newest(diagnostics)
        return cls(
            diagnostics=tuple(latest[k] for k in sorted(latest)),
            instances=tuple(sorted((InstanceLabels.of(i) for i in instances),
                                   key=lambda i: i.id)),
            run_counts=dict(sorted(run_counts.items())),
            operation_counts=dict(sorted(operation_counts.items())),
            docker_ok=_docker_ok(meta.get("docker_ok")),
            sweep_duration_seconds=_seconds(meta.get("sweep_duration_seconds")),
            auto_repairs=dict(sorted((auto_repairs or {}).items())),
            watch=_watch(meta),
        )


def _watch(meta: Mapping[str, str]) -> dict[str, bool]:
    """Each watch part's state ("1" up, "0" down); empty or absent: the part is off."""
    out: dict[str, bool] = {}
    for part, key in META_KEYS.items():
        value = (meta.get(key) or "").strip()
        if value in ("0", "1"):
            out[part] = value == "1"
    return out


def _docker_ok(value: str | None) -> bool | None:
    return None if value is None else value.strip() != "0"


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = number(float(value))
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
