"""Where the engine keeps diagnostics: the interface, and an in-memory implementation."""

from __future__ import annotations

import threading
from typing import Protocol

from exporter.diagnostic import Diagnostic


class ResultStore(Protocol):
    """What the engine needs from a store of diagnostics."""

    def latest(self, instance_id: str) -> Diagnostic | None:
        """The newest diagnostic of the instance, if any."""
        ...

    def save(self, diagnostic: Diagnostic) -> None:
        """Keep a finished diagnostic (latest and history)."""
        ...

    def record_run(self, trigger: str, result: str) -> None:
        """Count one diagnostic run by trigger and result (healthy, unhealthy, error)."""
        ...


class MemoryResultStore:
    """Latest diagnostics in memory, for the CLI and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Diagnostic] = {}
        self.runs: dict[tuple[str, str], int] = {}

    def latest(self, instance_id: str) -> Diagnostic | None:
        """The newest diagnostic of the instance, if any."""
        with self._lock:
            return self._latest.get(instance_id)

    def save(self, diagnostic: Diagnostic) -> None:
        """Keep it as the instance's latest."""
        with self._lock:
            self._latest[diagnostic.instance_id] = diagnostic

    def record_run(self, trigger: str, result: str) -> None:
        """Count the run."""
        with self._lock:
            self.runs[(trigger, result)] = self.runs.get((trigger, result), 0) + 1
