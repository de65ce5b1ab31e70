"""The action side's Docker: the only place that changes a container, and the one wait loop.

Reads go through the exporter's `DockerHost` and give its one container model,
`ContainerDetails`; the writes (stop, start, restart, pause, unpause, and recreate through
compose) are here, each failure an `OperationError` with a short reason. Restart, repair,
the config editor and backup restore all reach Docker through `Containers`, and wait for
containers with `wait_healthy` (built on `poll_until`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import docker.errors
import requests.exceptions

from actions.compose import ComposeRunner
from actions.operations.model import OperationError
from exporter.discovery.model import Instance
from exporter.dockerhost import COMPOSE_PROJECT, COMPOSE_SERVICE, ContainerDetails, DockerHost
from exporter.errors import DoctorError

T = TypeVar("T")

# A slow `docker start` answer is checked against the container's state this much later.
_START_RECHECK_SECONDS = 1.0
# Last-log reasons keep this many characters (the cause is usually at the end of a line).
LOG_CHARS = 400


def poll_until(tick: Callable[[], T | None], *, interval: float,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `tick` until it returns something, `interval` apart; it raises to give up."""
    while True:
        found = tick()
        if found is not None:
            return found
        sleep(interval)


@dataclass(frozen=True)
class Readiness:
    """Whether one container is up yet, and its state as the caller shows it."""

    up: bool
    shown: str = ""


def wait_healthy(look: Callable[[Sequence[str]], Mapping[str, Readiness]],
                 components: Sequence[str], timeout: float, *, interval: float,
                 timed_out: Callable[[Mapping[str, Readiness]], Exception],
                 ) -> dict[str, Readiness]:
    """Look at the components not up yet until all are, or raise timed_out(those left).

    `look` judges the pending components in one pass (it raises when one of them will
    never come up); the last verdict of each component is returned.
    """
    deadline = time.monotonic() + timeout
    pending = list(dict.fromkeys(components))
    seen: dict[str, Readiness] = {}

    def tick() -> dict[str, Readiness] | None:
        seen.update(look(pending))
        pending[:] = [c for c in pending if not seen[c].up]
        if not pending:
            return seen
        if time.monotonic() >= deadline:
            raise timed_out({c: seen[c] for c in pending})
        return None

    return poll_until(tick, interval=interval)


class Containers:
    """Docker as operations use it: inspect, find, stop, start, restart, recreate, logs."""

    def __init__(self, host: DockerHost, compose: ComposeRunner | None = None) -> None:
        self.host = host
        self._compose = compose

    # reads ----------------------------------------------------------------------------

    def inspect(self, container_id: str) -> ContainerDetails | None:
        """The container as inspected now, or None when it is gone."""
        try:
            return self.host.inspect(container_id)
        except DoctorError as exc:
            raise OperationError(str(exc)) from None

    def find(self, instance: Instance, component: str) -> ContainerDetails | None:
        """The component's container by compose labels, else by its expected name."""
        project = instance.compose_project
        try:
            listed = self.host.list_containers()
        except DoctorError as exc:
            raise OperationError(str(exc)) from None
        found = next((c for c in listed if c.labels.get(COMPOSE_PROJECT) == project
                      and c.labels.get(COMPOSE_SERVICE) == component), None)
        if found is not None:
            return self.inspect(found.id)
        name = instance.component(component).container_name
        named = next((c for c in listed if c.name == name), None) if name else None
        return self.inspect(named.id) if named is not None else None

    def probe(self, container_id: str, argv: Sequence[str]) -> bool:
        """Run the container's own healthcheck command once; True when it passes."""
        try:
            return self.host.exec(container_id, list(argv)).exit_code == 0
        except DoctorError:
            return False

    def log_tail(self, container_id: str, lines: int = 3) -> list[str]:
        """The container's last non-empty log lines, without timestamps (best effort)."""
        try:
            raw = self.host.logs(container_id, since=0, tail=lines)
        except DoctorError:
            return []
        # Each line starts with Docker's timestamp.
        text = (line.split(" ", 1)[-1].strip() for line in raw)
        return [line[:2000] for line in text if line]

    def volume_exists(self, name: str) -> bool:
        """Whether a named volume still exists."""
        try:
            self._api.inspect_volume(name)
        except docker.errors.NotFound:
            return False
        except _FAILURES as exc:
            raise OperationError(f"cannot inspect volume {name}: {_short(exc)}") from None
        return True

    # writes ---------------------------------------------------------------------------

    def stop(self, container_id: str, timeout: float) -> None:
        """docker stop (SIGTERM, then SIGKILL after `timeout`)."""
        # docker-py adds the stop timeout to the HTTP timeout of this call.
        self._call("stop", container_id, lambda: self._api.stop(
            container_id, timeout=max(1, round(timeout))))

    def start(self, container_id: str) -> None:
        """docker start; a slow answer is checked against the container's state."""
        try:
            self._api.start(container_id)
        except requests.exceptions.RequestException as exc:
            # The engine may have started it after the client gave up waiting.
            time.sleep(_START_RECHECK_SECONDS)
            now = self.inspect(container_id)
            if now is None or now.state not in ("running", "restarting"):
                raise OperationError(f"cannot start {container_id[:12]}: {_short(exc)}"
                                     ) from None
        except docker.errors.DockerException as exc:
            raise OperationError(f"cannot start {container_id[:12]}: {_short(exc)}") from None

    def restart(self, container_id: str, timeout: float) -> None:
        """docker restart (stop with `timeout`, then start)."""
        self._call("restart", container_id, lambda: self._api.restart(
            container_id, timeout=max(1, round(timeout))))

    def pause(self, container_id: str) -> None:
        """docker pause."""
        self._call("pause", container_id, lambda: self._api.pause(container_id))

    def unpause(self, container_id: str) -> None:
        """docker unpause."""
        self._call("unpause", container_id, lambda: self._api.unpause(container_id))

    def recreate(self, instance: Instance, services: Sequence[str]) -> None:
        """compose up -d --no-deps --force-recreate the services."""
        if self._compose is None:
            raise OperationError("no compose runner: cannot recreate containers")
        self._compose.up(instance, services, recreate=True)

    @property
    def _api(self) -> Any:
        return self.host.client.api

    def _call(self, verb: str, container_id: str, call: Callable[[], object]) -> None:
        try:
            call()
        except docker.errors.NotFound:
            raise OperationError(f"container {container_id[:12]} is gone") from None
        except _FAILURES as exc:
            raise OperationError(f"cannot {verb} {container_id[:12]}: {_short(exc)}"
                                 ) from None


_FAILURES = (docker.errors.DockerException, requests.exceptions.RequestException)


def last_message(lines: Sequence[str]) -> str | None:
    """The last log line's message (a JSON log line's "msg"), or None without lines."""
    if not lines:
        return None
    text = lines[-1]
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    if isinstance(parsed, dict) and isinstance(parsed.get("msg"), str):
        return str(parsed["msg"])
    return text


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
