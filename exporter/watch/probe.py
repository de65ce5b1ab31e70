"""The quick probe: a cheap look at every instance; a full diagnostic only where it differs.

Each round costs one discovery (one container listing for all instances), a stat of each
volume dir and bounded requests per instance through its gateway on 127.0.0.1, those of
watch.probe_requests: auth's health with the anon key (as api_endpoints sends it); rest with
the anon key as Bearer (as clients send it); one page of GoTrue's admin user list with the
service key (a read: nothing is created). What it sees is compared with the same facts in
the latest stored diagnostic: a container that was fine and is now down, an answer that now
fails, or the reverse. Where they differ, the instance gets a full diagnostic (trigger
"watch"); the probe itself never publishes a verdict. A fact the diagnostic did not record
(the admin read outside the hourly synthetic user test) is compared with the previous
round instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from exporter.checks.auth import AUTH_SERVICE
from exporter.checks.base import D, Family, entries, part, timeout_through
from exporter.checks.containers import CONTAINER_STATUS
from exporter.checks.disk import DISK_USAGE
from exporter.checks.endpoints import API_ENDPOINTS
from exporter.checks.listener import url_port, withheld
from exporter.diagnostic import Diagnostic
from exporter.discovery import Instance
from exporter.engine import DiagnosticsEngine
from exporter.errors import DoctorError
from exporter.gateway import call
from exporter.watch.status import WatchStatus

log = logging.getLogger(__name__)

TRIGGER = "watch"
# A fact's key -> True when fine. Keys: container:<component>, gateway:<name>, volume:<name>.
Signals = Mapping[str, bool]


@dataclass(frozen=True)
class ProbeRequest:
    """One request through an instance's gateway."""

    key: str
    path: str
    upstream: str  # the component behind the gateway that answers it
    credential: Literal["anon_key", "service_role_key"]
    bearer: bool  # also send the key as `Authorization: Bearer`, as clients do
    params: Mapping[str, str | int] = field(default_factory=dict)


# watch.probe_requests names them.
REQUESTS: Mapping[str, ProbeRequest] = {
    "auth": ProbeRequest("gateway:auth", "/auth/v1/health", "auth", "anon_key", bearer=False),
    "rest": ProbeRequest("gateway:rest", "/rest/v1/", "rest", "anon_key", bearer=True),
    "admin": ProbeRequest("gateway:admin", "/auth/v1/admin/users", "auth", "service_role_key",
                          bearer=True, params={"page": 1, "per_page": 1}),
}
# Where the diagnostic recorded the same request: api_endpoints' endpoint label.
_ENDPOINTS = {"gateway:auth": "auth", "gateway:rest": "rest"}


@dataclass(frozen=True)
class Observation:
    """What one round saw of one instance: each fact fine or not, and why not."""

    instance_id: str
    signals: Signals
    notes: Mapping[str, str] = field(default_factory=dict)


def container_ok(state: Any, health: Any) -> bool:
    """A container is fine when it runs and its healthcheck (if any) does not fail."""
    return bool(state == "running" and health != "unhealthy")


def answer_ok(summary: Mapping[str, Any]) -> bool:
    """A request went fine when it got a 2xx or 3xx answer (GatewayCall.summary())."""
    status = summary.get("status")
    return isinstance(status, int) and not isinstance(status, bool) and 200 <= status < 400


def volume_exists(path: Path) -> bool | None:
    """Whether the volume dir is there (None: it cannot be told, e.g. no permission)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return os.path.isdir(path)


def expected(diagnostic: Diagnostic) -> dict[str, bool]:
    """The facts a diagnostic recorded, keyed as the probe keys what it sees."""
    out: dict[str, bool] = {}
    for name, seen in entries(_details(diagnostic, CONTAINER_STATUS).get("components")):
        out[f"container:{name}"] = container_ok(seen.get("state"), seen.get("health"))
    endpoints = part(_details(diagnostic, API_ENDPOINTS).get("endpoints")) or {}
    for key, endpoint in _ENDPOINTS.items():
        summary = part(endpoints.get(endpoint))
        if summary is not None:
            out[key] = answer_ok(summary)
    synthetic = part(_details(diagnostic, AUTH_SERVICE).get("synthetic_user"))
    if synthetic is not None and synthetic.get("ran") is True:
        # The test's user listing and create are admin calls with the service key.
        out["gateway:admin"] = synthetic.get("created") is True
    for name, volume in entries(_details(diagnostic, DISK_USAGE).get("volumes")):
        exists = volume.get("exists")
        if isinstance(exists, bool):
            out[f"volume:{name}"] = exists
    return out


def differences(seen: Signals, recorded: Signals | None,
                previous: Signals | None) -> dict[str, str]:
    """Facts that differ from the diagnostic (or, where it has none, the previous round).

    No diagnostic at all is a difference too: the instance has never been judged.
    """
    if recorded is None:
        return {"diagnostic": "none stored"}
    out: dict[str, str] = {}
    for key, ok in sorted(seen.items()):
        was = recorded.get(key)
        if was is None and previous is not None:
            was = previous.get(key)
        if was is not None and was != ok:
            out[key] = "now fine" if ok else "now failing"
    return out


@dataclass(frozen=True)
class Memory:
    """What the probe keeps of an instance between rounds."""

    previous: Signals | None = None
    # What the probe saw when it last asked for a diagnostic: while it sees the same, it
    # does not ask again (a fact the diagnostic judges otherwise must not loop).
    acted_on: Signals | None = None


def decide(seen: Signals, recorded: Signals | None,
           memory: Memory) -> tuple[dict[str, str], Memory]:
    """The differences that call for a diagnostic now (empty: none), and the new memory."""
    found = differences(seen, recorded, memory.previous)
    if not found:
        return {}, Memory(previous=seen)
    if memory.acted_on is not None and dict(seen) == dict(memory.acted_on):
        return {}, Memory(previous=seen, acted_on=memory.acted_on)
    return found, Memory(previous=seen, acted_on=seen)


@dataclass(frozen=True)
class ProbeRound:
    """What one round did."""

    instances: int
    diagnosed: Mapping[str, Mapping[str, str]]  # instance id -> the differences seen
    error: str | None = None


class QuickProbe:
    """One round over every instance per call of run_once (the scheduler calls it)."""

    def __init__(self, engine: DiagnosticsEngine, status: WatchStatus, *,
                 http: httpx.Client | None = None) -> None:
        self._engine = engine
        self._status = status
        timeout = engine.config.diagnostics.timeout_seconds
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout),
                                          follow_redirects=False, trust_env=False)
        self._pool = ThreadPoolExecutor(engine.config.diagnostics.concurrency, "ubd-probe")
        self._requests = tuple(REQUESTS[name] for name in engine.config.watch.probe_requests)
        self._memory: dict[str, Memory] = {}

    def close(self) -> None:
        """Stop the worker pool and the HTTP client."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def run_once(self) -> ProbeRound:
        """Look at every instance; diagnose those that differ from their latest diagnostic."""
        try:
            found = self._engine.discover(fresh=True)
        except DoctorError as exc:
            self._status.set("probe", False, str(exc))
            return ProbeRound(0, {}, str(exc))
        if not found.docker_ok:
            # Nothing can be told apart without Docker; the sweep reports DOCKER_UNREACHABLE.
            error = found.docker_error or "Docker cannot be read"
            self._status.set("probe", False, error)
            return ProbeRound(0, {}, error)
        instances = list(found.instances.values())
        observations = list(self._pool.map(self.observe, instances))
        self._status.set("probe", True)
        diagnose: dict[str, dict[str, str]] = {}
        for seen in observations:
            latest = self._engine.store.latest(seen.instance_id)
            reasons, memory = decide(seen.signals, expected(latest) if latest else None,
                                     self._memory.get(seen.instance_id, Memory()))
            self._memory[seen.instance_id] = memory
            if reasons:
                diagnose[seen.instance_id] = reasons
                log.warning("watch: %s differs from its latest diagnostic (%s); diagnosing",
                            seen.instance_id, _describe(reasons, seen.notes))
        for gone in set(self._memory) - set(found.instances):
            del self._memory[gone]
        if diagnose:
            self._engine.sweep(TRIGGER, list(diagnose))
        return ProbeRound(len(instances), diagnose)

    def observe(self, instance: Instance) -> Observation:
        """What one instance looks like now: containers, volume dirs, gateway answers."""
        signals: dict[str, bool] = {}
        notes: dict[str, str] = {}
        for name, component in instance.components.items():
            container = component.container
            ok = container is not None and container_ok(container.state, container.health)
            signals[f"container:{name}"] = ok
            if not ok:
                notes[f"container:{name}"] = (f"{container.state} {container.health or ''}"
                                              .strip() if container else "missing")
        for name, path in instance.files.volume_dirs.items():
            exists = volume_exists(path)
            if exists is not None:
                signals[f"volume:{name}"] = exists
        self._through_gateway(instance, signals, notes)
        return Observation(instance.id, signals, notes)

    def _through_gateway(self, instance: Instance, signals: dict[str, bool],
                         notes: dict[str, str]) -> None:
        """The configured requests through the instance's gateway, into signals and notes."""
        kong = instance.components.get("kong")
        base = instance.endpoints.gateway_url
        # With kong not running every request would only fail (or hang, if it is paused);
        # its container's state already tells.
        if base is None or (kong is not None and not kong.running):
            return
        # No key goes to a port that is not kong's own, as for the diagnostic's checks.
        timeout = self._engine.config.diagnostics.timeout_seconds
        why = withheld(instance, "kong", url_port(base), owners=self._engine.sockets,
                       timeout=timeout)
        if why is not None:
            notes["gateway"] = f"credentials withheld: {why}"
            return
        for request in self._requests:
            key = getattr(instance.credentials, request.credential)
            if not key:
                continue
            headers = {"apikey": key}
            if request.bearer:
                headers["Authorization"] = f"Bearer {key}"
            answer = call(self._http, "GET", base, request.path, headers=headers,
                          params=request.params or None,
                          timeout=timeout_through(instance, timeout, request.upstream)
                          ).summary()
            signals[request.key] = answer_ok(answer)
            if not signals[request.key]:
                notes[request.key] = str(answer.get("status") or answer.get("error"))


def _details(diagnostic: Diagnostic, family: Family[D]) -> D:
    result = diagnostic.results.get(family.name)
    return family.details(result if result is not None and result.status != "skipped" else None)


def _describe(reasons: Mapping[str, str], notes: Mapping[str, str]) -> str:
    return ", ".join(f"{key} {why}" + (f" ({notes[key]})" if key in notes else "")
                     for key, why in reasons.items())
