"""The SQLite store on real files: schema and migrations, diagnostics, counters, schedules,
generation, and concurrent writers (threads and two processes)."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import exporter.store as store_module
from exporter.checks.base import CheckResult
from exporter.diagnostic import Diagnostic, RootCause, UserTest
from exporter.issues import make_issue
from exporter.store import InstanceInfo, Schedule, Store, StoreError

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def diag(instance_id: str, minutes: float, *codes: str, trigger: str = "scheduled") -> Diagnostic:
    """A diagnostic at T0 + minutes with the given issue codes (on the database component)."""
    issues = tuple(make_issue(c, check="database_connection", message=c.lower(),
                              component="db", evidence={"port": 5432}) for c in codes)
    result = CheckResult("database_connection", "failed" if issues else "ok", 0.25, issues,
                         {"version": "15.8"})
    root = RootCause(issues[0], issues[1:]) if issues else None
    return Diagnostic(instance_id, T0 + timedelta(minutes=minutes), 1.5,
                      {"database_connection": result}, issues, root, trigger=trigger)


def stamps(diagnostics: list[Diagnostic]) -> list[datetime]:
    return [d.timestamp for d in diagnostics]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sub" / "store.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    s = Store(path, history_limit=5)
    yield s
    s.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# schema and files -------------------------------------------------------------------

def test_fresh_store_creates_private_files_in_wal_mode(store: Store, path: Path) -> None:
    assert store.schema_version() == Store.SCHEMA_VERSION == len(store_module.MIGRATIONS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"latest", "history", "counters", "instances", "meta", "schedules",
            "generation"} <= tables
    store.save(diag("aaaa0001", 0))
    wal = path.with_name(path.name + "-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600


def test_reopen_keeps_everything(path: Path) -> None:
    first = Store(path)
    saved = diag("aaaa0001", 0, "DB_UNREACHABLE", "AUTH_UNHEALTHY")
    first.save(saved)
    first.record_run("scheduled", "unhealthy")
    first.set_meta("docker_ok", "1")
    first.close()
    with Store(path) as second:
        assert second.schema_version() == Store.SCHEMA_VERSION
        latest = second.latest("aaaa0001")
        assert latest is not None
        assert latest.to_dict(now=T0) == saved.to_dict(now=T0)
        assert latest.root_cause is not None
        assert latest.root_cause.issue.code == "DB_UNREACHABLE"
        assert [i.code for i in latest.root_cause.explains] == ["AUTH_UNHEALTHY"]
        assert second.run_counts() == {("scheduled", "unhealthy"): 1}
        assert second.get_meta("docker_ok") == "1"


def test_newer_schema_is_refused(path: Path) -> None:
    Store(path).close()
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {Store.SCHEMA_VERSION + 1}")
    newer, known = Store.SCHEMA_VERSION + 1, Store.SCHEMA_VERSION
    with pytest.raises(StoreError, match=rf"schema version {newer}, newer than the {known} "
                                         r".*upgrade"):
        Store(path)


def test_appended_migration_is_applied_once_and_keeps_data(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(path) as old:
        old.save(diag("aaaa0001", 0))
    extra = "CREATE TABLE extra (id INTEGER PRIMARY KEY, what TEXT NOT NULL);"
    version = Store.SCHEMA_VERSION + 1
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, extra))
    monkeypatch.setattr(Store, "SCHEMA_VERSION", version)
    with Store(path) as new:
        assert new.schema_version() == version
        assert new.latest("aaaa0001") is not None
    # Reopening does not run it again (a second CREATE TABLE would fail).
    with Store(path) as again:
        assert again.schema_version() == version


def test_failing_migration_rolls_back_whole(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(path).close()
    shipped = Store.SCHEMA_VERSION
    broken = "CREATE TABLE half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, broken))
    monkeypatch.setattr(Store, "SCHEMA_VERSION", shipped + 1)
    with pytest.raises(StoreError, match="no_such_table"):
        Store(path)
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == shipped
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'"
                            ).fetchone()[0] == 0


def test_a_file_that_is_not_a_database_is_a_store_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(path)


def test_closed_store_refuses_use(path: Path) -> None:
    s = Store(path)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.latest("aaaa0001")


def test_lock_held_too_long_is_a_store_error_not_a_hang(path: Path) -> None:
    s = Store(path, busy_timeout=0.2)
    holder = raw(path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            s.record_run("scheduled", "healthy")
        assert time.monotonic() - started < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    s.record_run("scheduled", "healthy")
    assert s.run_counts() == {("scheduled", "healthy"): 1}
    s.close()


# diagnostics ------------------------------------------------------------------------

def test_latest_is_the_newest_even_when_saved_out_of_order(store: Store) -> None:
    store.save(diag("aaaa0001", 10, "DB_UNREACHABLE"))
    store.save(diag("aaaa0001", 5))
    latest = store.latest("aaaa0001")
    assert latest is not None and latest.timestamp == T0 + timedelta(minutes=10)
    assert not latest.healthy
    assert stamps(store.history("aaaa0001")) == [T0 + timedelta(minutes=m) for m in (10, 5)]
    assert store.latest("bbbb0002") is None


def test_history_is_newest_first_and_limited(store: Store) -> None:
    for m in (1, 3, 2, 4):
        store.save(diag("aaaa0001", m))
    store.save(diag("bbbb0002", 9))
    assert stamps(store.history("aaaa0001", 3)) == [T0 + timedelta(minutes=m) for m in (4, 3, 2)]
    assert [d.instance_id for d in store.history("bbbb0002")] == ["bbbb0002"]
    with pytest.raises(ValueError, match="limit"):
        store.history("aaaa0001", 0)


def test_history_is_trimmed_per_instance_keeping_the_newest(store: Store) -> None:
    for m in range(8):
        store.save(diag("aaaa0001", m))
    for m in range(2):
        store.save(diag("bbbb0002", m))
    assert stamps(store.history("aaaa0001", 100)) == \
        [T0 + timedelta(minutes=m) for m in (7, 6, 5, 4, 3)]
    assert len(store.history("bbbb0002", 100)) == 2


def test_history_since_is_oldest_first_and_inclusive(store: Store) -> None:
    for m in (1, 2, 3, 4):
        store.save(diag("aaaa0001", m))
    since = store.history_since("aaaa0001", T0 + timedelta(minutes=2))
    assert stamps(since) == [T0 + timedelta(minutes=m) for m in (2, 3, 4)]
    prior = store.last_before("aaaa0001", T0 + timedelta(minutes=2))
    assert prior is not None and prior.timestamp == T0 + timedelta(minutes=1)
    assert store.last_before("aaaa0001", T0) is None


def test_latest_all_by_instance(store: Store) -> None:
    store.save(diag("bbbb0002", 1))
    store.save(diag("aaaa0001", 1, "DB_UNREACHABLE"))
    store.save(diag("aaaa0001", 2))
    latest = store.latest_all()
    assert [(d.instance_id, d.healthy) for d in latest] == [("aaaa0001", True),
                                                            ("bbbb0002", True)]


def test_unreadable_payloads_are_skipped_with_a_log_line(
        store: Store, path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for m in (1, 2, 3):
        store.save(diag("aaaa0001", m))
    store.save(diag("bbbb0002", 1))
    with raw(path) as conn:
        conn.execute("UPDATE history SET payload = '{not json' WHERE timestamp = ?",
                     ((T0 + timedelta(minutes=2)).timestamp(),))
        conn.execute("UPDATE history SET payload = '[1, 2]' WHERE timestamp = ?",
                     ((T0 + timedelta(minutes=3)).timestamp(),))
        conn.execute("UPDATE latest SET payload = '{\"instance_id\": 1}' "
                     "WHERE instance_id = 'aaaa0001'")
    with caplog.at_level(logging.WARNING, logger="exporter.store"):
        assert stamps(store.history("aaaa0001")) == [T0 + timedelta(minutes=1)]
        assert store.latest("aaaa0001") is None
        assert [d.instance_id for d in store.latest_all()] == ["bbbb0002"]
        prior = store.last_before("aaaa0001", T0 + timedelta(minutes=4))
        assert prior is not None and prior.timestamp == T0 + timedelta(minutes=1)
    assert "skipping an unreadable diagnostic of aaaa0001" in caplog.text
    assert "{not json" not in caplog.text


def test_response_only_fields_are_not_stored(store: Store, path: Path) -> None:
    store.save(diag("aaaa0001", 0))
    with raw(path) as conn:
        payload = conn.execute("SELECT payload FROM latest").fetchone()[0]
    assert '"instance_id":"aaaa0001"' in payload
    assert "age_seconds" not in payload and "rate_limited" not in payload


# counters, instances, meta ------------------------------------------------------------

def test_counters_grow_and_are_kept_apart(store: Store) -> None:
    for _ in range(3):
        store.record_run("scheduled", "healthy")
    store.record_run("on_demand", "error")
    store.record_operation("safe_restart", "success")
    store.record_operation("safe_restart", "success")
    assert store.run_counts() == {("scheduled", "healthy"): 3, ("on_demand", "error"): 1}
    assert store.operation_counts() == {("safe_restart", "success"): 2}


def test_instances_are_replaced_by_the_last_discovery(store: Store) -> None:
    store.set_instances([InstanceInfo("bbbb0002", "Two", None),
                         InstanceInfo("aaaa0001", "One", "ana@example.org")])
    store.set_instances([InstanceInfo("cccc0003", "Three", "bo"),
                         InstanceInfo("aaaa0001", "One renamed", None)])
    assert store.instances() == [InstanceInfo("aaaa0001", "One renamed", None),
                                 InstanceInfo("cccc0003", "Three", "bo")]
    store.set_instances([])
    assert store.instances() == []


def test_a_complete_discovery_forgets_the_verdicts_of_departed_instances(store: Store) -> None:
    for iid in ("aaaa0001", "bbbb0002"):
        store.save(diag(iid, 0, "DB_UNREACHABLE"))
    store.save(diag("cccc0003", 10))  # saved after the discovery began: a new instance
    store.set_instances([InstanceInfo("aaaa0001", "One", None)])
    assert {d.instance_id for d in store.latest_all()} == {"aaaa0001", "bbbb0002",
                                                             "cccc0003"}
    before = store.generation()
    store.set_instances([InstanceInfo("aaaa0001", "One", None)],
                        departed_before=T0 + timedelta(minutes=5))
    assert {d.instance_id for d in store.latest_all()} == {"aaaa0001", "cccc0003"}
    assert store.generation() != before  # /metrics renders afresh
    assert [d.instance_id for d in store.history("bbbb0002")] == ["bbbb0002"]  # kept


def test_the_latest_user_test_is_kept_with_the_diagnostic(store: Store) -> None:
    tested = replace(diag("aaaa0001", 1), user_test=UserTest(T0, False))
    store.save(tested)
    assert store.latest("aaaa0001") == tested
    assert store.history("aaaa0001")[0].user_test == UserTest(T0, False)


def test_meta_values(store: Store) -> None:
    assert store.get_meta("docker_ok") is None
    store.set_meta("docker_ok", "1")
    store.set_meta("docker_ok", "0")
    assert store.get_meta("docker_ok") == "0"


def test_snapshot_holds_what_metrics_render(store: Store) -> None:
    store.save(diag("aaaa0001", 0, "DB_UNREACHABLE"))
    store.set_instances([InstanceInfo("aaaa0001", "One", None)])
    store.record_run("scheduled", "unhealthy")
    store.record_operation("repair", "failure")
    store.set_meta("sweep_duration_seconds", "1.250")
    snap = store.snapshot()
    assert snap.generation == store.generation()
    assert [d.instance_id for d in snap.latest] == ["aaaa0001"]
    assert snap.instances == (InstanceInfo("aaaa0001", "One", None),)
    assert snap.run_counts == {("scheduled", "unhealthy"): 1}
    assert snap.operation_counts == {("repair", "failure"): 1}
    assert snap.meta == {"sweep_duration_seconds": "1.250"}


def test_snapshot_since_reads_only_the_diagnostics_changed_after(store: Store) -> None:
    store.save(diag("aaaa0001", 0))
    store.save(diag("bbbb0002", 0))
    first = store.snapshot()
    assert [d.instance_id for d in first.latest] == ["aaaa0001", "bbbb0002"]
    assert set(first.latest_generations) == {"aaaa0001", "bbbb0002"}
    assert max(first.latest_generations.values()) <= first.generation
    store.save(diag("bbbb0002", 5, "DB_UNREACHABLE"))
    store.record_run("scheduled", "unhealthy")
    second = store.snapshot(since=first.generation)
    assert [d.instance_id for d in second.latest] == ["bbbb0002"]
    assert second.latest[0].issues[0].code == "DB_UNREACHABLE"
    assert second.latest_generations["aaaa0001"] == first.latest_generations["aaaa0001"]
    assert first.generation < second.latest_generations["bbbb0002"] <= second.generation
    # An older diagnostic goes to history only: the latest row, and its stamp, stay.
    store.save(diag("aaaa0001", -5))
    third = store.snapshot(since=second.generation)
    assert third.generation > second.generation
    assert third.latest == ()
    assert third.latest_generations == second.latest_generations
    assert store.snapshot(since=third.generation).latest == ()


def test_a_version_3_store_migrates_and_a_previous_release_writer_is_still_seen(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:3])
        m.setattr(Store, "SCHEMA_VERSION", 3)
        with Store(path) as old:
            old.save(diag("aaaa0001", 0))
            assert old.schema_version() == 3
    with Store(path) as new:
        assert new.schema_version() == Store.SCHEMA_VERSION >= 4
        before = new.snapshot()
        assert [d.instance_id for d in before.latest] == ["aaaa0001"]
        assert before.latest_generations == {"aaaa0001": 0}
        # The previous release's save, as it still runs in the other process: no
        # generation column in its statement, the triggers stamp the row anyway.
        with raw(path) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO latest (instance_id, timestamp, healthy, payload) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET "
                "timestamp = excluded.timestamp, healthy = excluded.healthy, "
                "payload = excluded.payload WHERE excluded.timestamp >= latest.timestamp",
                ("aaaa0001", T0.timestamp() + 60, 0,
                 store_module._encode(diag("aaaa0001", 1, "DB_UNREACHABLE"))))
            conn.execute("UPDATE generation SET value = value + 1 WHERE id = 1")
            conn.execute("COMMIT")
        after = new.snapshot(since=before.generation)
        assert [d.issues[0].code for d in after.latest] == ["DB_UNREACHABLE"]
        assert after.latest_generations["aaaa0001"] == after.generation


# generation -----------------------------------------------------------------------

def test_generation_changes_on_writes_from_another_connection(path: Path) -> None:
    reader, writer = Store(path), Store(path)
    try:
        seen = reader.generation()
        reader.latest_all()
        reader.history("aaaa0001")
        assert reader.generation() == seen  # reads change nothing
        writes: list[Callable[[], object]] = [
                  lambda: writer.save(diag("aaaa0001", 0)),
                  lambda: writer.record_run("scheduled", "healthy"),
                  lambda: writer.record_operation("repair", "success"),
                  lambda: writer.set_instances([InstanceInfo("aaaa0001", "One", None)]),
                  lambda: writer.set_meta("docker_ok", "1"),
                  lambda: writer.set_schedule(Schedule("aaaa0001", "6h", True, T0, None)),
                  lambda: writer.delete_schedule("aaaa0001")]
        for write in writes:
            write()
            now = reader.generation()
            assert now != seen
            seen = now
    finally:
        reader.close()
        writer.close()


# schedules ------------------------------------------------------------------------

def test_schedules_round_trip(store: Store, path: Path) -> None:
    first = Schedule("bbbb0002", "0 */6 * * *", True,
                     datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC), "admin")
    other = Schedule("aaaa0001", "1h", False,
                     datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), None)
    store.set_schedule(first)
    store.set_schedule(other)
    assert store.get_schedule("bbbb0002") == first
    got = store.get_schedule("aaaa0001")
    assert got is not None and got.updated_at == other.updated_at  # same instant, in UTC
    assert got.updated_at.utcoffset() == timedelta(0)
    changed = Schedule("bbbb0002", "12h", False, T0, "ops")
    store.set_schedule(changed)
    with Store(path) as reopened:
        assert [s.instance_id for s in reopened.schedules()] == ["aaaa0001", "bbbb0002"]
        assert reopened.get_schedule("bbbb0002") == changed
    assert store.delete_schedule("bbbb0002") is True
    assert store.delete_schedule("bbbb0002") is False
    assert store.get_schedule("bbbb0002") is None


# concurrency ------------------------------------------------------------------------

def test_many_threads_share_one_store(path: Path) -> None:
    s = Store(path, history_limit=1000)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(25):
                s.save(diag(f"inst{worker}", n))
                s.record_run("on_demand", "healthy")
                s.latest_all()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert s.run_counts() == {("on_demand", "healthy"): 200}
    assert all(len(s.history(f"inst{w}", 100)) == 25 for w in range(8))
    assert len(s._idle) <= store_module._MAX_IDLE
    s.close()


PER_PROCESS = 300


def _process_writer(path: str, worker: int, barrier: Any, spans: Any) -> None:
    """Open the (fresh) store with the other process, then write; meet it again half way."""
    barrier.wait(10)
    s = Store(Path(path), history_limit=10_000, busy_timeout=30)
    started = time.monotonic()
    try:
        for n in range(PER_PROCESS):
            if n == PER_PROCESS // 2:
                # Neither process can finish before the other has started writing.
                barrier.wait(10)
            s.save(diag(f"proc{worker}", n))
            s.save(diag("shared", 2 * n + worker))
            s.record_run("scheduled", "healthy")
            s.record_operation("safe_restart", "success")
        spans.put((started, time.monotonic()))
    finally:
        s.close()


def test_two_processes_write_at_once(path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, spans = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_process_writer, args=(str(path), w, barrier, spans))
             for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]  # a "database is locked" would exit 1
    (a_start, a_end), (b_start, b_end) = spans.get(timeout=5), spans.get(timeout=5)
    assert a_start < b_end and b_start < a_end
    with Store(path, history_limit=10_000) as s:
        assert s.schema_version() == Store.SCHEMA_VERSION
        assert len(s.history("proc0", 1000)) == PER_PROCESS
        assert len(s.history("proc1", 1000)) == PER_PROCESS
        assert len(s.history("shared", 1000)) == 2 * PER_PROCESS
        assert s.run_counts() == {("scheduled", "healthy"): 2 * PER_PROCESS}
        assert s.operation_counts() == {("safe_restart", "success"): 2 * PER_PROCESS}
        # 4 write transactions per iteration per process, each bumping the generation once.
        assert s.generation() == 8 * PER_PROCESS
        shared = s.latest("shared")
        assert shared is not None
        assert shared.timestamp == T0 + timedelta(minutes=2 * (PER_PROCESS - 1) + 1)
