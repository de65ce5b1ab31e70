"""Bursts of events per instance, turned into one diagnostic each after a short settle."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Burst:
    """Events of one key not yet covered by a run."""

    first: float
    last: float
    settling: float | None  # the last event that starts the settle time, if any
    started: float | None = None  # when a container of the key (re)started, if one did


@dataclass(frozen=True)
class Due:
    """A key whose burst has settled: run it; events up to last_event are what it answers."""

    key: str
    last_event: float
    started: float | None = None  # when a container (re)started: it may not answer yet


class Debouncer:
    """Decides when each key's burst of events is due for one run; no threads, no clock.

    A burst is due `settle` seconds after its last event, but no later than `max_delay`
    after its first, and never sooner than `min_gap` after the key's previous run began
    (a crash loop sends events for as long as it lasts). A key runs once at a time: events
    arriving meanwhile form the next burst. An event that announces another (Docker's kill
    comes before the die, which may take seconds) does not start the settle time: until a
    settling event follows, only max_delay bounds the wait.
    """

    def __init__(self, settle: float, max_delay: float, min_gap: float) -> None:
        self.settle = settle
        self.max_delay = max(max_delay, settle)
        self.min_gap = min_gap
        self._lock = threading.Lock()
        self._pending: dict[str, _Burst] = {}
        # key -> when its current run began, and when the run before that one began
        self._running: dict[str, float | None] = {}
        self._last_start: dict[str, float] = {}

    def event(self, key: str, at: float, *, settles: bool = True,
              started: float | None = None) -> None:
        """Note one event of key at time `at` (settles False: more is announced; started:
        when a container started, so more looks may be needed until it answers)."""
        with self._lock:
            burst = self._pending.get(key)
            settling = at if settles else None
            if burst is None:
                self._pending[key] = _Burst(at, at, settling, started)
                return
            burst.first, burst.last = min(burst.first, at), max(burst.last, at)
            if started is not None:
                burst.started = max(burst.started or started, started)
            if settling is not None:
                burst.settling = max(burst.settling or settling, settling)

    def next_due(self) -> float | None:
        """When the earliest pending burst becomes due (None: nothing pending)."""
        with self._lock:
            times = [t for t in map(self._due_at, self._pending) if t is not None]
        return min(times) if times else None

    def take_due(self, now: float) -> list[Due]:
        """Every burst due at `now`, each marked running; in key order."""
        out: list[Due] = []
        with self._lock:
            for key in sorted(self._pending):
                at = self._due_at(key)
                if at is None or at > now:
                    continue
                burst = self._pending.pop(key)
                self._running[key] = self._last_start.get(key)
                self._last_start[key] = now
                out.append(Due(key, burst.last, burst.started))
        return out

    def finished(self, key: str, *, covered: bool, last_event: float) -> None:
        """key's run ended; covered False: its result predates last_event, so run again.

        A run that did not cover its events (it joined one already in flight) does not
        count for min_gap: the rerun is due at once.
        """
        with self._lock:
            previous = self._running.pop(key, None)
            if covered:
                return
            if previous is None:
                self._last_start.pop(key, None)
            else:
                self._last_start[key] = previous
            burst = self._pending.get(key)
            if burst is None:
                self._pending[key] = _Burst(last_event - self.max_delay, last_event, None)
            else:
                burst.first = min(burst.first, last_event - self.max_delay)

    def pending(self) -> set[str]:
        """Keys with events not yet taken."""
        with self._lock:
            return set(self._pending)

    def _due_at(self, key: str) -> float | None:
        if key in self._running:
            return None
        burst = self._pending[key]
        at = burst.first + self.max_delay
        if burst.settling is not None:
            at = min(at, burst.settling + self.settle)
        last = self._last_start.get(key)
        return at if last is None else max(at, last + self.min_gap)
