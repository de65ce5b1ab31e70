"""L7, L12 and L13 of the security review: what grows without bound, and how often.

The attacks: (L12) an operator scheduled `* * * * *`, a full diagnostic of the instance
every minute; (L13) a viewer asked for diagnostic-history?limit=10000 and a 365-day report,
decoding every stored diagnostic per request; (L7) the audit log and the operations table
were never pruned. Now schedules have a least interval, history reads are bounded, and
both tables have a retention, all in the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.audit import AuditEntry
from actions.operations.model import Operation
from actions.store import ActionStore
from exporter.config import Config, StoreConfig
from exporter.reports import load_report
from exporter.scheduler import DiagnosticScheduler, ScheduleError, checked_cron
from exporter.store import Store, apply_retention
from tests.unit.access_matrix import ALPHA
from tests.unit.metrics.samples import diagnostic
from tests.unit.test_exporter_app import World

AUTH = {"Authorization": "Bearer tok-admin-3f8e62aa"}
OPERATOR = {"Authorization": "Bearer tok-operator-9d2a4c11"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.close()


@pytest.mark.parametrize("spec", ["* * * * *", "*/5 * * * *", "0-59/1 0 * * *",
                                  "0,10 * * * *", "*/14 3 * * 1"])
def test_a_schedule_more_often_than_the_least_interval_is_refused(world: World,
                                                                  spec: str) -> None:
    answer = world.app.test_client().put(f"/api/instances/{ALPHA}/schedule",
                                         json={"schedule": spec}, headers=OPERATOR)
    assert answer.status_code == 400
    assert "least interval is 15 min" in answer.json["error"]["message"]
    assert world.store.get_schedule(ALPHA) is None


@pytest.mark.parametrize("spec", ["*/15 * * * *", "1h", "6h", "0 3 * * *", "5 */2 * * 1-5"])
def test_schedules_at_or_beyond_it_are_taken(world: World, spec: str) -> None:
    answer = world.app.test_client().put(f"/api/instances/{ALPHA}/schedule",
                                         json={"schedule": spec}, headers=OPERATOR)
    assert answer.status_code == 200
    assert world.store.get_schedule(ALPHA) is not None


def test_a_too_frequent_saved_schedule_is_not_restored(world: World) -> None:
    scheduler = DiagnosticScheduler(world.engine, world.store, 300,
                                    min_instance_interval_seconds=900)
    with pytest.raises(ScheduleError):
        scheduler.set_instance(ALPHA, "* * * * *")
    assert scheduler.instance_jobs() == {}
    assert checked_cron("*/30 * * * *", 1800) == "*/30 * * * *"


def test_history_and_report_reads_are_bounded(world: World, tmp_path: Path) -> None:
    client = world.app.test_client()
    assert client.get(f"/api/instances/{ALPHA}/diagnostic-history?limit=10000",
                      headers=AUTH).status_code == 400
    assert client.get(f"/api/instances/{ALPHA}/diagnostic-history?limit=500",
                      headers=AUTH).status_code == 200
    # A report reads at most store.max_report_diagnostics, the newest ones.
    store = Store(tmp_path / "history.sqlite3", history_limit=50)
    now = datetime.now(UTC)
    for minutes in range(40, 0, -1):
        store.save(diagnostic(ALPHA, at=now - timedelta(minutes=minutes),
                              broken=minutes > 20))
    reads: list[int | None] = []
    real = store.history_since

    def counting(instance_id: str, since: datetime, limit: int | None = None) -> Any:
        found = real(instance_id, since, limit)
        reads.append(len(found))
        return found

    store.history_since = counting  # type: ignore[method-assign]
    report = load_report(store, ALPHA, 1, now=now, limit=10)
    assert reads == [11]
    assert report.total_diagnostics == 10
    assert report.uptime_percentage == 100.0  # the newest ten are all healthy
    whole = load_report(store, ALPHA, 1, now=now)
    assert whole.total_diagnostics == 40
    assert whole.uptime_percentage is not None and whole.uptime_percentage < 100
    store.close()
    defaults = Config().store
    assert (defaults.max_history_limit, defaults.max_report_diagnostics) == (500, 2016)


def _operation(op_id: str, finished: datetime | None) -> Operation:
    return Operation(id=op_id, kind="backup", instance_id=ALPHA,
                     status="running" if finished is None else "succeeded", principal="ops",
                     role="operator", inputs={}, steps=(), result={}, error=None,
                     failed_step=None, created_at=finished or datetime.now(UTC),
                     finished_at=finished)


def test_audit_and_operations_have_a_retention(tmp_path: Path) -> None:
    store = ActionStore(tmp_path / "store.sqlite3")
    now = datetime.now(UTC)
    for days in (200, 100, 40, 1):
        store.append_audit(AuditEntry(at=now - timedelta(days=days), who="ops",
                                      role="operator", action="backup", instance_id=ALPHA,
                                      inputs={}, result="succeeded"))
    old, recent, running = "a" * 32, "b" * 32, "c" * 32
    store.save_operation(_operation(old, now - timedelta(days=31)))
    store.save_operation(_operation(recent, now - timedelta(days=29)))
    # An operation still running is never pruned, however old.
    store.save_operation(dataclasses.replace(_operation(running, None),
                                             created_at=now - timedelta(days=400)))
    assert store.acquire_lock(ALPHA, running) is None
    apply_retention(store, StoreConfig(path=store.path))
    assert sorted(round((now - e.at).total_seconds() / 86400) for e in store.audit(10)) == [1, 40]
    assert store.get_operation(old) is None
    assert store.get_operation(recent) is not None and store.get_operation(running) is not None
    apply_retention(store, StoreConfig(path=store.path, audit_retention_days=7,
                                       operations_retention_days=7))
    assert len(store.audit(10)) == 1 and store.get_operation(recent) is None
    store.close()


def test_the_sweep_applies_the_retention(world: World) -> None:
    calls: list[str] = []
    scheduler = DiagnosticScheduler(world.engine, world.store, 300,
                                    housekeeping=lambda: calls.append("prune"))
    scheduler._sweep()
    assert calls == ["prune"]
