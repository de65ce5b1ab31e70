"""Following Docker's event stream: a burst of container events is one diagnostic.

The engine's container events (die, stop, kill, oom, pause, health_status, ...) are mapped to
the instance they belong to, by compose project label or container name, and debounced:
the instance is diagnosed (trigger "event") once its burst has settled. A broken stream is
reconnected with backoff, replaying what the engine still holds since the last event seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from exporter.config import WatchConfig
from exporter.discovery import Instance
from exporter.dockerhost import COMPOSE_PROJECT, EventStream
from exporter.engine import DiagnosticsEngine
from exporter.errors import DockerUnavailableError, DoctorError
from exporter.watch.debounce import Debouncer, Due
from exporter.watch.status import WatchStatus

log = logging.getLogger(__name__)

TRIGGER = "event"
# Container events that can change a verdict. health_status covers "health_status: healthy"
# and the other states (the engine matches it as a prefix).
WATCHED_ACTIONS: tuple[str, ...] = (
    "create", "start", "restart", "die", "kill", "oom", "stop", "pause", "unpause",
    "health_status", "destroy")
# Events that announce another: a kill is followed by the die once the process has exited
# (seconds later on a loaded host), and until then the container still lists as running.
ANNOUNCING_ACTIONS: frozenset[str] = frozenset({"kill"})
# Events after which a container runs but may not answer yet (no healthcheck tells when it
# does): while a diagnostic finds the instance unhealthy, it is looked at again, at most
# every event_min_gap_seconds, until watch.start_grace_seconds after the start.
STARTING_ACTIONS: frozenset[str] = frozenset({"start", "restart", "unpause"})
# An event of an unknown container looks the instances up again at most this often (other
# compose projects on the host send events too).
INDEX_REFRESH_SECONDS = 10.0
_FIRST_BACKOFF_SECONDS = 1.0
# The dispatcher wakes at least this often, so stop() and clock jumps are noticed.
_MAX_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class ContainerEvent:
    """One container event, as far as deciding whom to diagnose needs it."""

    action: str
    name: str | None
    project: str | None
    at: float  # the engine's time of the event (UNIX seconds)


def parse_event(raw: Mapping[str, Any]) -> ContainerEvent | None:
    """The event, or None when it is no container event of WATCHED_ACTIONS."""
    if raw.get("Type", "container") != "container":
        return None
    action = str(raw.get("Action") or raw.get("status") or "").split(":", 1)[0].strip()
    if action not in WATCHED_ACTIONS:
        return None
    actor = raw.get("Actor")
    attributes = actor.get("Attributes") if isinstance(actor, Mapping) else None
    if not isinstance(attributes, Mapping):
        attributes = {}
    nano, seconds = raw.get("timeNano"), raw.get("time")
    at = nano / 1e9 if isinstance(nano, int) else float(seconds) if isinstance(
        seconds, int | float) else 0.0
    name, project = attributes.get("name"), attributes.get(COMPOSE_PROJECT)
    return ContainerEvent(action, name if isinstance(name, str) else None,
                          project if isinstance(project, str) else None, at)


@dataclass(frozen=True)
class InstanceIndex:
    """Which instance a container belongs to: by compose project, else by container name."""

    projects: Mapping[str, str]
    names: Mapping[str, str]

    @classmethod
    def of(cls, instances: Iterable[Instance]) -> InstanceIndex:
        """The index of discovered instances."""
        projects: dict[str, str] = {}
        names: dict[str, str] = {}
        for instance in instances:
            projects.setdefault(instance.compose_project, instance.id)
            for component in instance.components.values():
                if component.container_name:
                    names.setdefault(component.container_name, instance.id)
        return cls(projects, names)

    def instance_of(self, event: ContainerEvent) -> str | None:
        """The id of the instance the event's container belongs to, if known."""
        if event.project is not None and event.project in self.projects:
            return self.projects[event.project]
        return self.names.get(event.name) if event.name is not None else None


class EventWatch:
    """Follows the engine's events in one thread and runs the debounced diagnostics."""

    def __init__(self, engine: DiagnosticsEngine, config: WatchConfig, status: WatchStatus,
                 *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._status = status
        self._clock = clock
        self._backoff_max = config.reconnect_max_seconds
        self._start_grace = config.start_grace_seconds
        self.debouncer = Debouncer(config.event_settle_seconds,
                                   config.event_max_delay_seconds,
                                   config.event_min_gap_seconds)
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._lock = threading.Lock()
        self._stream: EventStream | None = None
        self._index: tuple[float, InstanceIndex] | None = None
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(engine.config.diagnostics.concurrency, "ubd-event")

    def start(self) -> None:
        """Start following events and running diagnostics, each in a thread of its own."""
        if self._threads:
            return
        for name, target in (("watch-events", self._follow),
                             ("watch-event-runs", self._dispatch)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop following; a diagnostic in progress is not waited for."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self._pool.shutdown(wait=False, cancel_futures=True)

    def handle(self, event: ContainerEvent) -> str | None:
        """Count the event towards its instance's next diagnostic; the instance id, if any."""
        instance_id = self._resolve(event)
        if instance_id is None:
            return None
        now = self._clock()
        self.debouncer.event(instance_id, now,
                             settles=event.action not in ANNOUNCING_ACTIONS,
                             started=now if event.action in STARTING_ACTIONS else None)
        with self._wake:
            self._wake.notify_all()
        return instance_id

    # following the stream ---------------------------------------------------------------

    def _follow(self) -> None:
        backoff, since = _FIRST_BACKOFF_SECONDS, None
        while not self._stop.is_set():
            try:
                stream = self._engine.docker.events(WATCHED_ACTIONS, since)
                with self._lock:
                    self._stream = stream
                if self._stop.is_set():
                    stream.close()
                    return
                # Connected: the engine accepted the stream.
                self._status.set("events", True)
                backoff = _FIRST_BACKOFF_SECONDS
                connected_at = self._clock()
                for raw in stream:
                    event = parse_event(raw)
                    if event is not None:
                        # Replayed after a reconnect from just past the last one seen.
                        since = event.at + 1e-6
                        self.handle(event)
                # The engine (or a proxy's idle timeout) closed it: reconnect at once, unless
                # it closes as soon as it opens (then back off as after a failure).
                since = since or connected_at
                if self._clock() - connected_at >= _FIRST_BACKOFF_SECONDS:
                    continue
            except DockerUnavailableError as exc:
                if self._stop.is_set():
                    return
                self._status.set("events", False, str(exc))
                since = since or self._clock()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    def _resolve(self, event: ContainerEvent) -> str | None:
        now = self._clock()
        with self._lock:
            cached = self._index
        if cached is not None:
            found = cached[1].instance_of(event)
            if found is not None or now - cached[0] < INDEX_REFRESH_SECONDS:
                return found
        try:
            index = InstanceIndex.of(self._engine.discover().instances.values())
        except DoctorError as exc:
            log.warning("watch events: instances not looked up: %s", exc)
            return cached[1].instance_of(event) if cached else None
        with self._lock:
            self._index = (now, index)
        return index.instance_of(event)

    # running the diagnostics ----------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                due_at = self.debouncer.next_due()
                wait = _MAX_WAIT_SECONDS if due_at is None else due_at - self._clock()
                if wait > 0:
                    self._wake.wait(min(wait, _MAX_WAIT_SECONDS))
            if self._stop.is_set():
                return
            for due in self.debouncer.take_due(self._clock()):
                try:
                    self._pool.submit(self._diagnose, due)
                except RuntimeError:  # the pool was shut down: stopping
                    return

    def _diagnose(self, due: Due) -> None:
        covered, again = True, False
        try:
            diagnostics = self._engine.sweep(TRIGGER, [due.key])
            if diagnostics:
                # A run already in flight when the events came is shared (single flight):
                # if it began before the last event, it does not answer for it.
                found = diagnostics[0]
                began = found.timestamp.timestamp() - found.duration_seconds
                covered = began >= due.last_event
                # A component that has just started may not answer yet; rest and kong have
                # no healthcheck whose event would say when they do: look again, for a while.
                again = (covered and not found.healthy and due.started is not None
                         and self._clock() - due.started < self._start_grace)
        except Exception:  # one failed run must not stop the watch
            log.exception("watch events: diagnosing %s failed", due.key)
        finally:
            self.debouncer.finished(due.key, covered=covered, last_event=due.last_event)
            if again:
                self.debouncer.event(due.key, self._clock(), started=due.started)
            with self._wake:
                self._wake.notify_all()
