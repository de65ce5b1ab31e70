"""The action API's store and the exporter's share one file: either opens it, in any order.

``tests/data/store-v4.sql`` is a version-4 store written by the release before the split,
whose ``exporter.store.Store`` still held the operations, locks and audit log.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actions.audit import AuditEntry
from actions.operations.model import Operation, Step
from actions.store import ActionStore
from exporter.store import InstanceInfo, Store

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "store-v4.sql"
IID = "aaaa0001"
DONE, HELD = "1" * 32, "2" * 32
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def previous_release_store(path: Path) -> Path:
    """The fixture's version-4 store, as a file."""
    with sqlite3.connect(path) as conn:
        conn.executescript(FIXTURE.read_text())
    conn.close()
    return path


@pytest.mark.parametrize("migrator", [Store, ActionStore])
def test_a_version_4_store_of_the_previous_layout_migrates_from_either_side(
        tmp_path: Path, migrator: type[Store]) -> None:
    path = previous_release_store(tmp_path / "store.sqlite3")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()
    with migrator(path) as first:
        assert first.schema_version() == Store.SCHEMA_VERSION
    with ActionStore(path) as store:
        assert store.schema_version() == Store.SCHEMA_VERSION > 4
        done = store.get_operation(DONE)
        assert done is not None and done.status == "succeeded" and done.kind == "safe_restart"
        assert done.steps == (Step("stop", "ok", T0, 1.5, {"stopped": ["rest"]}),)
        assert done.result == {"restarted": ["rest"]} and done.duration_seconds == 2.0
        assert [(e.action, e.result, e.operation_id) for e in store.audit(10)] == [
            ("safe_restart", "succeeded", DONE), ("config_edit", "refused", None)]
        assert store.instances() == [InstanceInfo(IID, "alpha", "ops@example.com")]
        assert store.operation_counts() == {("safe_restart", "succeeded"): 1}
        # The previous release's holder is on no host and long silent: taken over.
        assert store.lock_holder(IID) == HELD
        assert store.acquire_lock(IID, "3" * 32) is None
        abandoned = store.get_operation(HELD)
        assert abandoned is not None and abandoned.status == "failed"
        assert abandoned.failed_step == "restart_kong"
        assert (abandoned.error or "").startswith("abandoned: no heartbeat for")
        assert store.audit(1)[0].operation_id == HELD
        assert store.operation_counts()[("repair", "failed")] == 1
    with Store(path) as exporter_side:
        assert exporter_side.schema_version() == Store.SCHEMA_VERSION
        assert exporter_side.get_meta("docker_ok") == "1"


@pytest.mark.parametrize("first", [Store, ActionStore])
def test_either_side_creates_the_file_and_the_other_uses_it(
        tmp_path: Path, first: type[Store]) -> None:
    path = tmp_path / "store.sqlite3"
    with first(path) as opened:
        opened.set_meta("docker_ok", "1")
    operation = Operation(id="4" * 32, kind="backup", instance_id=IID, status="succeeded",
                          principal="ops", role="operator", inputs={"db_dump": False},
                          steps=(), result={}, error=None, failed_step=None, created_at=T0,
                          finished_at=T0)
    with ActionStore(path) as actions, Store(path) as exporter:
        assert actions.schema_version() == exporter.schema_version() == Store.SCHEMA_VERSION
        assert actions.get_meta("docker_ok") == exporter.get_meta("docker_ok") == "1"
        before = exporter.generation()
        actions.save_operation(operation)
        actions.append_audit(AuditEntry.for_operation(operation))
        assert actions.acquire_lock(IID, operation.id) is None
        # The action API's rows are not what /metrics renders: no new generation.
        assert exporter.generation() == before
        assert actions.get_operation(operation.id) == operation
        assert [e.action for e in actions.audit(5)] == ["backup"]
        exporter.record_operation(operation.kind, operation.status)
        assert actions.operation_counts() == {("backup", "succeeded"): 1}
