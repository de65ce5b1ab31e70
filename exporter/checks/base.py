"""What every check is given and what it returns."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

import httpx

from exporter.checks.sockets import SocketOwners
from exporter.config import DiagnosticsConfig
from exporter.discovery.model import Instance
from exporter.dockerhost import DockerHost
from exporter.issues import Issue
from exporter.redaction import Redactor

CheckStatus = Literal["ok", "degraded", "failed", "skipped"]
T = TypeVar("T")
# The shape of one check family's details: a TypedDict declared in the family's module.
D = TypeVar("D", bound=Mapping[str, object])
M = TypeVar("M", bound=Mapping[str, object])  # a mapping inside such details


@dataclass(frozen=True)
class Family(Generic[D]):
    """A check family's public name, typed by the shape of the details it writes.

    The check builds its details as D, and readers (the metric groups) look them up through
    the same Family, so mypy sees every key on both sides.
    """

    name: str

    def details(self, result: CheckResult | None) -> D:
        """result's details in this family's shape; empty without a result.

        Read every key with .get() and check every value: a skipped check writes no details,
        one that raised writes only "error", and an older store row may hold anything.
        """
        found = result.details if result is not None and isinstance(result.details,
                                                                    Mapping) else {}
        return cast(D, found)


class RunOnce:
    """Results the checks of one diagnostic share: each key computed once, others wait.

    service_health and network_connectivity both need kong's view of auth and rest (one
    exec); database_connection and auth_service both log in as GoTrue's role (one login).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[Hashable, Future[Any]] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """compute()'s result, computed by the first caller with this key."""
        with self._lock:
            future = self._results.get(key)
            owner = future is None
            if future is None:
                future = self._results[key] = Future()
        if owner:
            try:
                future.set_result(compute())
            except BaseException as exc:  # handed to every waiter, then raised here too
                future.set_exception(exc)
                raise
        result: T = future.result()
        return result


# How long a request through a container known not to run is waited for (timeout_through).
DOWN_PATH_TIMEOUT_SECONDS = 1.0


def timeout_through(instance: Instance, timeout: float, *components: str) -> float:
    """timeout, or less for a request whose path runs through a container not running.

    A path through a container that the listing shows not running can only fail, and often
    hangs: Kong keeps connecting to the address it resolved last, a paused container takes
    the connection and never answers. Its answer (or silence) is still recorded, waited for
    DOWN_PATH_TIMEOUT_SECONDS at most, so that a diagnostic of a container fault is not a
    full timeout long.
    """
    if all(instance.component(name).running for name in components):
        return timeout
    return min(timeout, DOWN_PATH_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may use; checks make no other outside calls."""

    instance: Instance
    config: DiagnosticsConfig
    docker: DockerHost
    http: httpx.Client  # timeouts set; use only 127.0.0.1 URLs from instance.endpoints
    redactor: Redactor  # knows this instance's secrets
    now: datetime  # UTC
    run_synthetic_user: bool = True
    shared: RunOnce = field(default_factory=RunOnce)  # this run's checks only
    sockets: SocketOwners = field(default_factory=SocketOwners)  # the engine's, shared

    @property
    def timeout(self) -> float:
        """The per-call timeout in seconds."""
        return self.config.timeout_seconds

    def timeout_through(self, *components: str) -> float:
        """The timeout of a request whose path runs through these components' containers."""
        return timeout_through(self.instance, self.timeout, *components)


def part(value: M | None) -> M | None:
    """value when it is a mapping, else None (the same caution as Family.details)."""
    return value if isinstance(value, Mapping) else None


def entries(value: Mapping[str, M] | None) -> Iterator[tuple[str, M]]:
    """(name, mapping) pairs of a mapping of mappings, skipping malformed entries."""
    if not isinstance(value, Mapping):
        return
    for name, entry in value.items():
        if isinstance(entry, Mapping):
            yield str(name), entry


@dataclass(frozen=True)
class Findings:
    """What a check found: issues plus details (both already free of secrets)."""

    issues: tuple[Issue, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    skipped: str | None = None  # the reason, when the check could not apply


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome in a diagnostic."""

    name: str
    status: CheckStatus
    duration_seconds: float
    issues: tuple[Issue, ...]
    details: Mapping[str, Any]

    @property
    def healthy(self) -> bool:
        """True unless the check found a warning or worse."""
        return self.status in ("ok", "skipped")

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape of one check."""
        return {
            "healthy": self.healthy,
            "status": self.status,
            "duration_seconds": round(self.duration_seconds, 4),
            "issues": [i.to_dict() for i in self.issues],
            "details": dict(self.details),
        }


class Check(Protocol):
    """A check family: a name and a run method that never raises for instance faults."""

    name: str

    def run(self, ctx: CheckContext) -> Findings:
        """Inspect the instance and report findings."""
        ...


def status_of(findings: Findings) -> CheckStatus:
    """failed with a critical issue, degraded with a warning, else ok (or skipped)."""
    if findings.skipped is not None and not findings.issues:
        return "skipped"
    severities = {i.severity for i in findings.issues}
    if "critical" in severities:
        return "failed"
    if "warning" in severities:
        return "degraded"
    return "ok"
