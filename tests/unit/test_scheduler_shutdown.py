"""A sweep still running at shutdown ends quietly: no error logged, no failure counted."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED

from exporter.discovery import Discovery
from exporter.engine import DiagnosticsEngine
from exporter.scheduler import DiagnosticScheduler
from exporter.store import InstanceInfo, StoreError


class ClosingStore:
    """A store that refuses every write once closed, as the real one does."""

    def __init__(self) -> None:
        self.closed = False
        self.runs: list[tuple[str, str]] = []

    def _write(self) -> None:
        if self.closed:
            raise StoreError("store is closed")

    def set_meta(self, key: str, value: str) -> None:
        self._write()

    def set_instances(self, infos: Sequence[InstanceInfo], *,
                      departed_before: datetime | None = None) -> None:
        self._write()

    def record_run(self, trigger: str, result: str) -> None:
        self._write()
        self.runs.append((trigger, result))


class BlockingEngine:
    """Discovers nothing; its sweep waits until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def discover(self, fresh: bool = False) -> Any:
        return Discovery(instances={})

    def sweep(self, trigger: str, ids: Sequence[str] | None = None) -> list[Any]:
        self.entered.set()
        assert self.release.wait(10)
        return []


@pytest.mark.parametrize("stop_first", [True, False])
def test_a_sweep_cut_by_shutdown_is_not_a_failure(caplog: pytest.LogCaptureFixture,
                                                  stop_first: bool) -> None:
    engine, store = BlockingEngine(), ClosingStore()
    done = threading.Event()
    scheduler = DiagnosticScheduler(cast(DiagnosticsEngine, engine), store, 3600)
    # Listeners run in the order added: this one after the scheduler's own.
    scheduler._scheduler.add_listener(lambda _event: done.set(),
                                      EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    caplog.set_level(logging.INFO)
    scheduler.start()
    try:
        assert engine.entered.wait(10)
        if stop_first:
            scheduler.shutdown()
        store.closed = True
        engine.release.set()
        assert done.wait(10)
    finally:
        scheduler.shutdown()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if stop_first:
        assert errors == [] and scheduler.failures == 0
        assert any("stopped by shutdown" in r.getMessage() for r in caplog.records)
    else:
        # Not shutting down: the same failure is a real one, logged and counted.
        assert scheduler.failures == 1
        assert any("scheduled job sweep failed" in r.getMessage() for r in errors)
