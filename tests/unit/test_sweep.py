"""What a scheduled sweep records besides its diagnostics: the instance list, and when the
discovery was complete, no verdict on an instance that is gone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from exporter.diagnostic import Diagnostic
from exporter.discovery import Discovery
from exporter.engine import DiagnosticsEngine
from exporter.issues import make_issue
from exporter.scheduler import run_sweep
from exporter.store import Store


class FoundNothing:
    """An engine whose discovery finds no instance (with the given problems) and whose
    sweep diagnoses nothing."""

    def __init__(self, *, docker_ok: bool = True, problem: bool = False) -> None:
        malformed = make_issue("INSTANCE_RECORD_INVALID", check="discovery",
                               message="registry entry at instances[2] has no valid id")
        problems = (malformed,) if problem else ()
        self.found = Discovery(instances={}, problems=problems, docker_ok=docker_ok)

    def discover(self, fresh: bool = False) -> Discovery:
        return self.found

    def sweep(self, trigger: str, ids: Sequence[str] | None = None) -> list[Diagnostic]:
        return []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.sqlite3")
    # A verdict on an instance that has since been deleted in the manager.
    s.save(Diagnostic("dddd0004", datetime.now(UTC) - timedelta(minutes=3), 1.0, {}, (),
                      None, trigger="scheduled"))
    yield s
    s.close()


def test_a_complete_discovery_ends_the_verdict_on_a_departed_instance(store: Store) -> None:
    run_sweep(cast(DiagnosticsEngine, FoundNothing()), store)
    assert store.latest("dddd0004") is None
    assert len(store.history("dddd0004")) == 1  # its history is kept


@pytest.mark.parametrize("engine", [FoundNothing(docker_ok=False), FoundNothing(problem=True)],
                         ids=["docker down", "a malformed registry entry"])
def test_an_incomplete_discovery_forgets_nothing(store: Store, engine: FoundNothing) -> None:
    run_sweep(cast(DiagnosticsEngine, engine), store)
    assert store.latest("dddd0004") is not None
