"""The operation runner on a real store file: steps, outcomes, audit, redaction, locks across
processes, stale-lock takeover, heartbeats and wait()."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from actions.audit import REDACTED, AuditEntry, looks_secret, redact_inputs
from actions.operations.model import (
    Operation,
    OperationConflict,
    OperationError,
    OperationNotFound,
    Step,
    StepFailed,
)
from actions.operations.runner import OperationContext, OperationRunner
from actions.store import LOCK_STALE_SECONDS, ActionStore
from exporter.access import Principal
from exporter.config import Config
from exporter.discovery.model import Credentials, Endpoints, Instance, InstanceFiles
from exporter.errors import InstanceNotFoundError
from exporter.redaction import Redactor

IID = "inst0001"
OTHER = "inst0002"
PG_SECRET = "pg-secret-0123456789"
JWT_SECRET = "jwt-secret-abcdefghijklmnop"
ALICE = Principal("alice", "operator", None, "token")


def make_instance(instance_id: str) -> Instance:
    return Instance(id=instance_id, name=instance_id, owner=None, source="static",
                    compose_project=f"supabase-{instance_id}", components={},
                    endpoints=Endpoints(),
                    credentials=Credentials(postgres_password=PG_SECRET, jwt_secret=JWT_SECRET),
                    files=InstanceFiles())


class FakeEngine:
    """Only what the runner asks the engine: the instance."""

    def __init__(self) -> None:
        self.instances = {i: make_instance(i) for i in (IID, OTHER)}

    def instance(self, instance_id: str, fresh: bool = False) -> Instance:
        if instance_id not in self.instances:
            raise InstanceNotFoundError(f"unknown instance {instance_id}")
        return self.instances[instance_id]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[ActionStore]:
    s = ActionStore(path)
    yield s
    s.close()


def make_runner(store: ActionStore, **kw: Any) -> OperationRunner:
    return OperationRunner(Config(), cast(Any, FakeEngine()), store, cast(Any, None),
                           cast(Any, None), cast(Any, None), None, **kw)


@pytest.fixture
def runner(store: ActionStore) -> Iterator[OperationRunner]:
    made = make_runner(store)
    yield made
    assert made.join(10), "an operation thread did not finish"


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def two_steps(ctx: OperationContext) -> Mapping[str, Any]:
    with ctx.step("first", planned=2) as detail:
        time.sleep(0.02)
        detail["done"] = True
    with ctx.step("second"):
        ctx.note(progress="half")
        time.sleep(0.01)
    return {"answer": 42}


# outcomes ---------------------------------------------------------------------------------

def test_success_records_steps_with_durations_audit_and_counter(
        runner: OperationRunner, store: ActionStore) -> None:
    op = runner.run_inline("safe_restart", IID, ALICE, {"components": ["auth"]}, two_steps)
    assert op.status == "succeeded" and op.error is None and op.failed_step is None
    assert [(s.name, s.status) for s in op.steps] == [("first", "ok"), ("second", "ok")]
    assert op.steps[0].duration_seconds is not None and op.steps[0].duration_seconds >= 0.02
    assert op.steps[0].detail == {"planned": 2, "done": True}
    assert op.steps[1].detail == {"progress": "half"}
    assert op.result == {"answer": 42}
    assert op.finished_at is not None and op.duration_seconds is not None
    assert runner.get(op.id) == op  # what the API serves is what was stored
    [entry] = store.audit(10)
    assert (entry.who, entry.role, entry.action, entry.instance_id, entry.result) == \
        ("alice", "operator", "safe_restart", IID, "succeeded")
    assert entry.inputs == {"components": ["auth"]} and entry.operation_id == op.id
    assert [s["name"] for s in entry.steps] == ["first", "second"]
    assert entry.duration_seconds == pytest.approx(op.duration_seconds, abs=1e-3)
    assert store.operation_counts() == {("safe_restart", "succeeded"): 1}
    assert store.lock_holder(IID) is None


def test_step_failure_marks_the_step_and_the_operation(
        runner: OperationRunner, store: ActionStore) -> None:
    reached: list[str] = []

    def body(ctx: OperationContext) -> Mapping[str, Any]:
        with ctx.step("backup"):
            pass
        with ctx.step("stop"):
            raise StepFailed("stop", "kong did not stop in 30s")
        reached.append("after")  # pragma: no cover - must not run
        return {}

    op = runner.run_inline("safe_restart", IID, ALICE, {}, body)
    assert op.status == "failed" and op.failed_step == "stop"
    assert op.error == "stop failed: kong did not stop in 30s"
    assert [(s.name, s.status) for s in op.steps] == [("backup", "ok"), ("stop", "failed")]
    assert op.steps[1].detail["error"] == "stop failed: kong did not stop in 30s"
    assert reached == []
    assert store.audit(1)[0].result == "failed"
    assert store.audit(1)[0].error == op.error
    assert store.operation_counts() == {("safe_restart", "failed"): 1}
    assert store.lock_holder(IID) is None


def test_rolled_back_names_the_first_failed_step(runner: OperationRunner) -> None:
    def body(ctx: OperationContext) -> Mapping[str, Any]:
        try:
            with ctx.step("start"):
                raise StepFailed("start", "auth is crash-looping")
        except StepFailed:
            with ctx.undo_step("rollback"):
                pass
            raise OperationError("start failed: auth; brought back", rolled_back=True) from None

    op = runner.run_inline("safe_restart", IID, ALICE, {}, body)
    assert op.status == "rolled_back" and op.failed_step == "start"
    assert [(s.name, s.status) for s in op.steps] == [("start", "failed"), ("rollback", "ok")]


def test_unexpected_exception_fails_the_operation_and_frees_the_lock(
        runner: OperationRunner, store: ActionStore) -> None:
    def body(ctx: OperationContext) -> Mapping[str, Any]:
        with ctx.step("capture_state"):
            raise ValueError(f"bad value near {PG_SECRET}")

    op = runner.run_inline("safe_restart", IID, ALICE, {}, body)
    assert op.status == "failed" and op.failed_step == "capture_state"
    assert op.error is not None and op.error.startswith("internal error: ValueError")
    assert PG_SECRET not in op.error
    assert store.lock_holder(IID) is None
    assert runner.run_inline("safe_restart", IID, ALICE, {}, two_steps).status == "succeeded"


def test_unknown_instance_is_refused_before_anything(runner: OperationRunner,
                                                     store: ActionStore) -> None:
    with pytest.raises(InstanceNotFoundError):
        runner.submit("safe_restart", "nope0001", ALICE, {}, two_steps)
    assert store.audit(10) == []


# redaction ------------------------------------------------------------------------------

def test_no_secret_reaches_the_store(runner: OperationRunner, store: ActionStore,
                                     path: Path) -> None:
    new_password = "brand-new-dashboard-pass"

    def body(ctx: OperationContext) -> Mapping[str, Any]:
        with ctx.step("write", note=f"wrote {new_password} and {JWT_SECRET}"):
            ctx.note(dsn=f"postgres://postgres:{PG_SECRET}@db:5432/postgres")
        raise OperationError(f"kong rejected {new_password}")

    inputs = {"changes": {"dashboard_password": new_password, "site_url": "https://x.test"},
              "comment": f"rotating {PG_SECRET}", "api_key": "abc"}
    op = runner.run_inline("config_edit", IID, ALICE, inputs, body)
    assert op.inputs == {"changes": {"dashboard_password": REDACTED,
                                     "site_url": "https://x.test"},
                         "comment": op.inputs["comment"], "api_key": REDACTED}
    assert PG_SECRET not in op.inputs["comment"] and "redacted" in op.inputs["comment"]
    assert op.error is not None and new_password not in op.error
    store.close()
    # Nothing in the database file or its WAL holds any of the secrets.
    blob = b"".join(p.read_bytes() for p in path.parent.iterdir()
                    if p.name.startswith(path.name))
    for secret in (new_password, PG_SECRET, JWT_SECRET):
        assert secret.encode() not in blob, secret


def test_redact_inputs_and_secret_keys() -> None:
    redactor = Redactor([PG_SECRET])
    assert looks_secret("smtp_pass") and looks_secret("jwt_secret") and \
        looks_secret("service_role_key") and not looks_secret("site_url")
    data = {"smtp_pass": "x", "nested": [{"token": "t", "name": PG_SECRET}], "empty_key": ""}
    assert redact_inputs(data, redactor) == {
        "smtp_pass": REDACTED, "nested": [{"token": REDACTED,
                                           "name": redactor.text(PG_SECRET)}],
        "empty_key": ""}


# background, progress, wait ---------------------------------------------------------------

class Gate:
    """A body that records a step and blocks until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, ctx: OperationContext) -> Mapping[str, Any]:
        with ctx.step("stop") as detail:
            detail["stopped"] = ["kong"]
            ctx.note(stopped=["kong", "auth"])
            self.entered.set()
            assert self.release.wait(10)
        return {"ok": True}


def test_submit_runs_in_background_with_progress_persisted(runner: OperationRunner,
                                                           store: ActionStore) -> None:
    gate = Gate()
    submitted = runner.submit("safe_restart", IID, ALICE, {}, gate)
    assert submitted.status in ("pending", "running") and not submitted.finished
    assert gate.entered.wait(5)
    seen = store.get_operation(submitted.id)
    assert seen is not None and seen.status == "running"
    assert [(s.name, s.status) for s in seen.steps] == [("stop", "running")]
    assert seen.steps[0].detail == {"stopped": ["kong", "auth"]}
    assert store.lock_holder(IID) == submitted.id
    gate.release.set()
    done = runner.wait(submitted.id, 5)
    assert done.status == "succeeded" and done.steps[0].status == "ok"
    assert store.lock_holder(IID) is None


def test_second_operation_on_the_instance_conflicts(runner: OperationRunner,
                                                    store: ActionStore) -> None:
    gate = Gate()
    first = runner.submit("safe_restart", IID, ALICE, {}, gate)
    assert gate.entered.wait(5)
    with pytest.raises(OperationConflict) as caught:
        runner.submit("restart_service", IID, ALICE, {"component": "auth"}, two_steps)
    assert caught.value.running_id == first.id
    assert caught.value.status == 409 and caught.value.code == "operation_running"
    assert first.id in str(caught.value)
    # Another instance is not blocked.
    assert runner.run_inline("safe_restart", OTHER, ALICE, {}, two_steps).status == "succeeded"
    conflict = store.audit(10, action="restart_service")
    assert [(e.result, e.operation_id) for e in conflict] == [("conflict", first.id)]
    gate.release.set()
    assert runner.wait(first.id, 5).status == "succeeded"
    assert runner.run_inline("restart_service", IID, ALICE, {}, two_steps).status == \
        "succeeded"


def test_wait_returns_the_running_operation_after_its_timeout(runner: OperationRunner) -> None:
    gate = Gate()
    op = runner.submit("safe_restart", IID, ALICE, {}, gate)
    assert gate.entered.wait(5)
    began = time.monotonic()
    seen = runner.wait(op.id, 0.3)
    waited = time.monotonic() - began
    assert seen.status == "running" and 0.3 <= waited < 2
    gate.release.set()
    assert runner.wait(op.id, 5).status == "succeeded"


def test_wait_follows_an_operation_of_another_runner(store: ActionStore, path: Path) -> None:
    gate = Gate()
    mine = make_runner(store)
    other_store = ActionStore(path)
    other = make_runner(other_store)
    try:
        op = mine.submit("safe_restart", IID, ALICE, {}, gate)
        assert gate.entered.wait(5)
        threading.Timer(0.3, gate.release.set).start()
        began = time.monotonic()
        seen = other.wait(op.id, 5)  # not its own: it polls the shared store
        assert seen.status == "succeeded" and time.monotonic() - began < 4
    finally:
        gate.release.set()
        mine.join(10)
        other_store.close()


def test_wait_and_get_unknown(runner: OperationRunner) -> None:
    with pytest.raises(OperationNotFound):
        runner.wait("0" * 32, 0.1)
    assert runner.get("../../etc/passwd") is None
    assert runner.get("f" * 32) is None


# locks --------------------------------------------------------------------------------------

RACED = [f"race{n:04d}" for n in range(8)]


def _race_for_locks(path: str, op_id: str, barrier: Any, results: Any) -> None:
    store = ActionStore(Path(path))
    try:
        for instance_id in RACED:
            barrier.wait(30)  # both processes ask for this instance's lock at once
            results.put((instance_id, op_id, store.acquire_lock(instance_id, op_id)))
    finally:
        store.close()


def test_two_processes_racing_for_one_lock_exactly_one_wins(path: Path) -> None:
    ActionStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    ids = ["1" * 32, "2" * 32]
    procs = [ctx.Process(target=_race_for_locks, args=(str(path), i, barrier, results))
             for i in ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    outcomes = [results.get(timeout=5) for _ in range(len(ids) * len(RACED))]
    with ActionStore(path) as check:
        for instance_id in RACED:
            answers = {op: holder for iid, op, holder in outcomes if iid == instance_id}
            winners = [op for op, holder in answers.items() if holder is None]
            assert len(winners) == 1, (instance_id, answers)
            [loser] = set(ids) - set(winners)
            assert answers[loser] == winners[0]  # the loser learns the winner's op id
            assert check.lock_holder(instance_id) == winners[0]


def _take_lock_and_exit(path: str, op_id: str) -> None:
    store = ActionStore(Path(path))
    assert store.acquire_lock(IID, op_id) is None
    store.close()


def running_op(op_id: str) -> Operation:
    now = datetime.now(UTC)
    return Operation(id=op_id, kind="safe_restart", instance_id=IID, status="running",
                     principal="bob", role="admin", inputs={},
                     steps=(Step("stop", "running", now),), result={}, error=None,
                     failed_step=None, created_at=now)


def test_lock_of_a_dead_process_is_taken_over_and_its_operation_closed(
        store: ActionStore, path: Path) -> None:
    dead = "d" * 32
    store.save_operation(running_op(dead))
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_take_lock_and_exit, args=(str(path), dead))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert store.lock_holder(IID) == dead
    assert store.acquire_lock(IID, "a" * 32) is None
    assert store.lock_holder(IID) == "a" * 32
    closed = store.get_operation(dead)
    assert closed is not None and closed.status == "failed" and closed.finished_at
    assert closed.error is not None and "abandoned" in closed.error
    assert closed.failed_step == "stop" and closed.steps[0].status == "failed"
    assert [e.result for e in store.audit(10, action="safe_restart")] == ["failed"]


def test_lock_with_an_old_heartbeat_is_taken_over(store: ActionStore, path: Path) -> None:
    assert store.acquire_lock(IID, "a" * 32) is None
    # A live holder with a fresh heartbeat keeps it ...
    assert store.acquire_lock(IID, "b" * 32) == "a" * 32
    old = time.time() - LOCK_STALE_SECONDS - 5
    with raw(path) as conn:
        conn.execute("UPDATE locks SET heartbeat_at = ?", (old,))
    # ... until its heartbeat is older than 10 minutes, even though its pid lives.
    assert store.acquire_lock(IID, "b" * 32) is None
    assert store.lock_holder(IID) == "b" * 32
    assert not store.heartbeat(IID, "a" * 32) and store.heartbeat(IID, "b" * 32)
    assert not store.release_lock(IID, "a" * 32) and store.lock_holder(IID) == "b" * 32


def test_holder_on_another_host_is_judged_by_heartbeat_only(store: ActionStore, path: Path) -> None:
    assert store.acquire_lock(IID, "a" * 32) is None
    with raw(path) as conn:
        conn.execute("UPDATE locks SET host = 'elsewhere', pid = 999999999")
    assert store.acquire_lock(IID, "b" * 32) == "a" * 32


def test_runner_start_reaps_locks_of_dead_processes(store: ActionStore, path: Path) -> None:
    dead = "e" * 32
    store.save_operation(running_op(dead))
    assert store.acquire_lock(IID, dead) is None
    with raw(path) as conn:
        conn.execute("UPDATE locks SET pid = 999999999")  # no such process here
    make_runner(store)
    assert store.lock_holder(IID) is None
    closed = store.get_operation(dead)
    assert closed is not None and closed.status == "failed"


def test_heartbeat_keeps_the_lock_fresh(store: ActionStore, path: Path) -> None:
    runner = make_runner(store, heartbeat_seconds=0.05)
    beats: list[float] = []

    def body(ctx: OperationContext) -> Mapping[str, Any]:
        with raw(path) as conn:
            for _ in range(4):
                time.sleep(0.1)
                beats.append(conn.execute("SELECT heartbeat_at FROM locks").fetchone()[0])
        return {}

    assert runner.run_inline("safe_restart", IID, ALICE, {}, body).status == "succeeded"
    assert beats == sorted(beats) and beats[-1] > beats[0]


def test_losing_the_lock_stops_the_operation_at_its_next_step(store: ActionStore,
                                                              path: Path) -> None:
    runner = make_runner(store, heartbeat_seconds=0.05)

    def body(ctx: OperationContext) -> Mapping[str, Any]:
        with ctx.step("stop"):
            with raw(path) as conn:  # another process took the lock over
                conn.execute("UPDATE locks SET op_id = ?", ("c" * 32,))
            time.sleep(0.4)
        with ctx.step("start"):
            pass  # pragma: no cover - refused
        return {}

    op = runner.run_inline("safe_restart", IID, ALICE, {}, body)
    assert op.status == "failed" and "taken over" in (op.error or "")
    assert [s.name for s in op.steps] == ["stop"]
    assert store.lock_holder(IID) == "c" * 32  # the new holder's lock is left alone


# audit log ----------------------------------------------------------------------------------

def test_audit_filters_and_paging(store: ActionStore) -> None:
    base = datetime(2026, 5, 1, tzinfo=UTC)
    for n, (who, action, iid) in enumerate([("alice", "safe_restart", IID),
                                            ("bob", "repair", IID),
                                            ("alice", "config_edit", OTHER)]):
        store.append_audit(AuditEntry(at=base + timedelta(minutes=n), who=who, role="admin",
                                      action=action, instance_id=iid, inputs={"n": n},
                                      result="succeeded", duration_seconds=1.5,
                                      steps=({"name": "x", "status": "ok"},)))
    assert [e.action for e in store.audit(10)] == ["config_edit", "repair", "safe_restart"]
    assert [e.action for e in store.audit(10, who="alice")] == ["config_edit", "safe_restart"]
    assert [e.action for e in store.audit(10, instance_id=IID)] == ["repair", "safe_restart"]
    assert [e.action for e in store.audit(10, action="repair")] == ["repair"]
    assert [e.action for e in store.audit(10, since=base + timedelta(minutes=1))] == \
        ["config_edit", "repair"]
    assert [e.action for e in store.audit(1, 1)] == ["repair"]
    entry = store.audit(1)[0]
    assert entry.to_dict()["at"] == (base + timedelta(minutes=2)).isoformat()
    assert entry.inputs == {"n": 2} and entry.steps == ({"name": "x", "status": "ok"},)
    with pytest.raises(ValueError):
        store.audit(0)


def test_operation_round_trips_through_json(runner: OperationRunner) -> None:
    op = runner.run_inline("safe_restart", IID, ALICE, {"x": 1}, two_steps)
    assert Operation.from_dict(op.to_dict()) == op
    assert op.to_dict()["steps"][0]["name"] == "first"


def test_store_migrates_to_the_action_tables(path: Path) -> None:
    with ActionStore(path) as s:
        assert s.schema_version() == ActionStore.SCHEMA_VERSION >= 3  # 3 added the locks
    with raw(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")}
    assert {"operations", "audit", "locks", "auto_repairs"} <= tables
    assert os.stat(path).st_mode & 0o077 == 0
