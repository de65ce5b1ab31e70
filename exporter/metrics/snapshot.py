"""What the metrics are rendered from: the store's content, read once per render."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from exporter.diagnostic import Diagnostic
from exporter.metrics.families import number


class InstanceRecord(Protocol):
    """An instance as the store lists it."""

    @property
    def id(self) -> str:
        """The instance id."""
        ...

    @property
    def name(self) -> str | None:
        """Its display name."""
        ...

    @property
    def owner(self) -> str | None:
        """Its owner, when the registry names one."""
        ...


class MetricsSource(Protocol):
    """The read side of the store that /metrics needs (exporter.store.Store provides it)."""

    def latest_all(self) -> Sequence[Diagnostic]:
        """The latest diagnostic of every instance."""
        ...

    def instances(self) -> Sequence[InstanceRecord]:
        """Every known instance."""
        ...

    def run_counts(self) -> Mapping[tuple[str, str], int]:
        """Diagnostic runs so far by (trigger, result)."""
        ...

    def operation_counts(self) -> Mapping[tuple[str, str], int]:
        """Operations so far by (operation, result)."""
        ...

    def get_meta(self, key: str) -> str | None:
        """An exporter-wide fact (docker_ok, sweep_duration_seconds), or None."""
        ...

    def generation(self) -> int:
        """A number that changes whenever the store's content changes, in any process."""
        ...


class StoreContent(Protocol):
    """Everything a MetricsSource holds, read in one transaction (Store.snapshot())."""

    @property
    def latest(self) -> Sequence[Diagnostic]:
        """The latest diagnostic of every instance."""
        ...

    @property
    def instances(self) -> Sequence[InstanceRecord]:
        """Every known instance."""
        ...

    @property
    def run_counts(self) -> Mapping[tuple[str, str], int]:
        """Diagnostic runs so far by (trigger, result)."""
        ...

    @property
    def operation_counts(self) -> Mapping[tuple[str, str], int]:
        """Operations so far by (operation, result)."""
        ...

    @property
    def meta(self) -> Mapping[str, str]:
        """Every exporter-wide fact."""
        ...


@runtime_checkable
class ConsistentSource(MetricsSource, Protocol):
    """A source that can also hand over all of its content from one consistent read."""

    def snapshot(self) -> StoreContent:
        """The whole content at one moment."""
        ...


@dataclass(frozen=True)
class InstanceLabels:
    """The labels of ultrabase_instance_info for one instance."""

    id: str
    name: str
    owner: str


@dataclass(frozen=True)
class MetricsSnapshot:
    """The store's content as one immutable value; every metric group reads only this."""

    diagnostics: tuple[Diagnostic, ...] = ()
    instances: tuple[InstanceLabels, ...] = ()
    run_counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    operation_counts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    docker_ok: bool | None = None
    sweep_duration_seconds: float | None = None

    @classmethod
    def take(cls, source: MetricsSource) -> MetricsSnapshot:
        """Read everything from source; its errors propagate (the renderer handles them)."""
        if isinstance(source, ConsistentSource):
            # One transaction: the counters, meta and diagnostics agree with each other.
            content = source.snapshot()
            return cls.build(content.latest, content.instances, content.run_counts,
                             content.operation_counts, content.meta.get("docker_ok"),
                             content.meta.get("sweep_duration_seconds"))
        return cls.build(source.latest_all(), source.instances(), source.run_counts(),
                         source.operation_counts(), source.get_meta("docker_ok"),
                         source.get_meta("sweep_duration_seconds"))

    @classmethod
    def build(cls, diagnostics: Iterable[Diagnostic], instances: Iterable[InstanceRecord],
              run_counts: Mapping[tuple[str, str], int],
              operation_counts: Mapping[tuple[str, str], int], docker_ok: str | None,
              sweep_duration_seconds: str | None) -> MetricsSnapshot:
        """A snapshot from the store's raw parts, in a stable order."""
        latest: dict[str, Diagnostic] = {}
        for diagnostic in diagnostics:
            # One series set per instance: should two diagnostics of one instance come
            # back, the newer wins rather than producing duplicate series.
            known = latest.get(diagnostic.instance_id)
            if known is None or diagnostic.timestamp > known.timestamp:
                latest[diagnostic.instance_id] = diagnostic
        return cls(
            diagnostics=tuple(latest[k] for k in sorted(latest)),
            instances=tuple(sorted((InstanceLabels(str(i.id), i.name or "", i.owner or "")
                                    for i in instances), key=lambda i: i.id)),
            run_counts=dict(sorted(run_counts.items())),
            operation_counts=dict(sorted(operation_counts.items())),
            docker_ok=None if docker_ok is None else docker_ok.strip() != "0",
            sweep_duration_seconds=_seconds(sweep_duration_seconds),
        )


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = number(float(value))
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
