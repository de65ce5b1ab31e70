"""Whether each watch (the event stream, the quick probe) works, for /healthz and /metrics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

log = logging.getLogger(__name__)

Part = Literal["events", "probe"]
PARTS: tuple[Part, ...] = ("events", "probe")
# Store meta key of each part: "1" up, "0" down; empty or absent when the part is off.
META_KEYS: dict[Part, str] = {"events": "watch_events_up", "probe": "watch_probe_up"}


class MetaStore(Protocol):
    """Where the state is published for /metrics (exporter.store.Store provides it)."""

    def set_meta(self, key: str, value: str) -> None:
        """Keep one value."""
        ...


@dataclass(frozen=True)
class PartState:
    """One part's state: up or down, since when, and why it is down."""

    up: bool
    since: float
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON shape for /healthz."""
        return {"state": "up" if self.up else "down",
                "since": datetime.fromtimestamp(self.since, UTC).isoformat(),
                "error": self.error}


class WatchStatus:
    """Thread-safe states of the watch parts; the store hears only of changes.

    Writing the store on every probe would re-render /metrics each time, so only a change
    between up and down is written.
    """

    def __init__(self, store: MetaStore | None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._parts: dict[Part, PartState] = {}

    def set(self, part: Part, up: bool, error: str | None = None) -> None:
        """Record part's state; a change is logged and written to the store."""
        with self._lock:
            before = self._parts.get(part)
            changed = before is None or before.up != up
            if changed or before is None:
                self._parts[part] = PartState(up, self._clock(), error)
            elif error != before.error:
                self._parts[part] = PartState(up, before.since, error)
        if not changed:
            return
        if up:
            log.warning("watch %s: up", part)
        else:
            log.warning("watch %s: down: %s", part, error or "unknown reason")
        if self._store is not None:
            try:
                self._store.set_meta(META_KEYS[part], "1" if up else "0")
            except Exception as exc:  # the store's own errors must not stop the watch
                log.warning("watch %s: state not stored: %s", part, exc)

    def clear(self) -> None:
        """Forget every state, in the store too (a previous process may have left one)."""
        with self._lock:
            self._parts.clear()
        if self._store is not None:
            for key in META_KEYS.values():
                self._store.set_meta(key, "")

    def get(self, part: Part) -> PartState | None:
        """part's state; None when it is off or has not started."""
        with self._lock:
            return self._parts.get(part)

    def to_dict(self) -> dict[str, object]:
        """Every part's state ("off" for parts not running), for /healthz."""
        with self._lock:
            parts = dict(self._parts)
        return {p: parts[p].to_dict() if p in parts else {"state": "off"} for p in PARTS}

    @property
    def healthy(self) -> bool:
        """True unless a running part is down."""
        with self._lock:
            return all(s.up for s in self._parts.values())
