"""The action API's part of the shared store: operations, their locks and the audit log.

``ActionStore`` is the exporter's ``Store`` (same file, same connection pool, same
transactions and schema) with the rows only the action API writes and reads:

- ``operations``: each operation as it progresses, its JSON columns already redacted;
- ``locks``: one operation per instance across processes. A lock is taken in one
  ``BEGIN IMMEDIATE`` transaction, so two processes racing cannot both win; a holder whose
  process is gone from this host, or whose heartbeat is older than ``LOCK_STALE_SECONDS``,
  is taken over, and its unfinished operation is marked failed ("abandoned"), audited and
  counted;
- ``audit``: who did what to which instance, and how it ended;
- ``auto_repairs``: the units of the auto-repair budget taken by the alert webhook (the
  exporter only reads them, for ``ultrabase_auto_repair_budget_exhausted``).

None of these writes bumps the store's generation: /metrics shows none of them (the
operation counters it shows are the exporter's ``counters`` rows). The tables, their
migrations and their retention are the file's, in ``exporter.store``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actions.audit import AuditEntry
from actions.operations.model import Operation, Step
from exporter.store import AUTO_REPAIR_WINDOW_SECONDS, OPERATIONS, Store, epoch, increment

log = logging.getLogger(__name__)

# A lock whose holder has not heartbeaten for this long is stale, wherever the holder runs.
LOCK_STALE_SECONDS = 600.0
_HOST = socket.gethostname()


@dataclass(frozen=True)
class AuditScope:
    """What a caller narrowed to some instances may read of the audit log."""

    instances: frozenset[str]
    caller: str


class ActionStore(Store):
    """The shared store as the action API uses it: the exporter's tables and its own."""

    # the auto-repair budget (schema version 4; the exporter reads it for /metrics) --------

    def reserve_auto_repair(self, instance_id: str, budget: int) -> int | None:
        """Take one unit of the instance's budget: its reservation id, or None when spent.

        Counting and taking happen in one BEGIN IMMEDIATE transaction, so processes sharing
        the store cannot both take the last unit. A reservation not followed by a started
        repair must be released (`release_auto_repair`); one left by a crash still counts.
        """
        now = time.time()
        with self._write("reserve an auto-repair") as conn:
            used = int(conn.execute(
                "SELECT COUNT(*) FROM auto_repairs WHERE instance_id = ? AND at >= ?",
                (instance_id, now - AUTO_REPAIR_WINDOW_SECONDS)).fetchone()[0])
            if used >= budget:
                return None
            cursor = conn.execute("INSERT INTO auto_repairs (instance_id, at) VALUES (?, ?)",
                                  (instance_id, now))
            return int(cursor.lastrowid or 0)

    def confirm_auto_repair(self, reservation: int, operation_id: str) -> None:
        """Record the operation a reservation started."""
        with self._write("record an auto-repair", bump=False) as conn:
            conn.execute("UPDATE auto_repairs SET operation_id = ? WHERE id = ?",
                         (operation_id, reservation))

    def release_auto_repair(self, reservation: int) -> None:
        """Give a unit back: the repair it was taken for did not start."""
        with self._write("release an auto-repair") as conn:
            conn.execute("DELETE FROM auto_repairs WHERE id = ?", (reservation,))

    def save_operation(self, operation: Operation) -> None:
        """Create or replace an operation (called as its steps progress)."""
        with self._write("save an operation", bump=False) as conn:
            _put_operation(conn, operation)

    def get_operation(self, op_id: str) -> Operation | None:
        """The operation with this id, if any."""
        with self._read("read an operation") as conn:
            return _get_operation(conn, op_id)

    def acquire_lock(self, instance_id: str, op_id: str) -> str | None:
        """Take the instance's operation lock: None when taken, else the holder's op id.

        One BEGIN IMMEDIATE transaction, so two processes racing cannot both win. A holder
        whose process is gone from this host, or whose heartbeat is older than
        LOCK_STALE_SECONDS, is taken over and its operation marked abandoned.
        """
        now = time.time()
        with self._write("take an operation lock", bump=False) as conn:
            row = conn.execute("SELECT op_id, pid, host, heartbeat_at FROM locks "
                               "WHERE instance_id = ?", (instance_id,)).fetchone()
            if row is not None:
                holder, pid, host, beat = str(row[0]), int(row[1]), str(row[2]), float(row[3])
                why = _stale_reason(pid, host, beat, now)
                if why is None:
                    return holder
                log.warning("instance %s: taking over the lock of operation %s (%s)",
                            instance_id, holder, why)
                _abandon(conn, holder, why, now)
            conn.execute("INSERT OR REPLACE INTO locks (instance_id, op_id, pid, host, "
                         "acquired_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (instance_id, op_id, os.getpid(), _HOST, now, now))
        return None

    def release_lock(self, instance_id: str, op_id: str) -> bool:
        """Release the lock if this operation holds it; False when it did not."""
        with self._write("release an operation lock", bump=False) as conn:
            cursor = conn.execute("DELETE FROM locks WHERE instance_id = ? AND op_id = ?",
                                  (instance_id, op_id))
            return cursor.rowcount > 0

    def heartbeat(self, instance_id: str, op_id: str) -> bool:
        """Mark the holder alive; False when this operation no longer holds the lock."""
        with self._write("refresh an operation lock", bump=False) as conn:
            cursor = conn.execute("UPDATE locks SET heartbeat_at = ? "
                                  "WHERE instance_id = ? AND op_id = ?",
                                  (time.time(), instance_id, op_id))
            return cursor.rowcount > 0

    def lock_holder(self, instance_id: str) -> str | None:
        """The op id holding the instance's lock, stale or not."""
        with self._read("read an operation lock") as conn:
            row = conn.execute("SELECT op_id FROM locks WHERE instance_id = ?",
                               (instance_id,)).fetchone()
        return str(row[0]) if row else None

    def reap_stale_locks(self) -> list[str]:
        """Release every stale lock and mark its operation abandoned; the instance ids."""
        now = time.time()
        reaped: list[str] = []
        with self._write("reap stale operation locks", bump=False) as conn:
            rows = conn.execute("SELECT instance_id, op_id, pid, host, heartbeat_at "
                                "FROM locks").fetchall()
            for instance_id, holder, pid, host, beat in rows:
                why = _stale_reason(int(pid), str(host), float(beat), now)
                if why is None:
                    continue
                _abandon(conn, str(holder), why, now)
                conn.execute("DELETE FROM locks WHERE instance_id = ? AND op_id = ?",
                             (instance_id, holder))
                reaped.append(str(instance_id))
        return reaped

    def append_audit(self, entry: AuditEntry) -> int:
        """Store one audit entry; its id."""
        with self._write("write the audit log", bump=False) as conn:
            return _put_audit(conn, entry)

    def audit(self, limit: int = 100, offset: int = 0, *, instance_id: str | None = None,
              who: str | None = None, action: str | None = None,
              since: datetime | None = None,
              scope: AuditScope | None = None) -> list[AuditEntry]:
        """Audit entries, newest first, filtered by any of instance, who, action and since.

        With `scope`, only entries about its instances, and the entries about no instance
        that its caller wrote, are read: the rest is left out, not refused.
        """
        if limit < 1 or offset < 0:
            raise ValueError("limit must be at least 1 and offset not negative")
        params: dict[str, Any] = {
            "iid": instance_id, "who": who, "action": action,
            "since": None if since is None else epoch(since), "limit": limit,
            "offset": offset, "scoped": scope is not None,
            "scope": json.dumps(sorted(scope.instances) if scope is not None else []),
            "caller": scope.caller if scope is not None else None}
        with self._read("read the audit log") as conn:
            rows = conn.execute(
                "SELECT id, at, who, role, action, instance_id, operation_id, inputs, result, "
                "duration_seconds, steps, error FROM audit "
                "WHERE (:iid IS NULL OR instance_id = :iid) AND (:who IS NULL OR who = :who) "
                "AND (:action IS NULL OR action = :action) AND (:since IS NULL OR at >= :since) "
                "AND (NOT :scoped OR instance_id IN (SELECT value FROM json_each(:scope)) "
                "OR (instance_id IS NULL AND who = :caller)) "
                "ORDER BY at DESC, id DESC LIMIT :limit OFFSET :offset", params).fetchall()
        return [_audit_entry(r) for r in rows]


def _stale_reason(pid: int, host: str, heartbeat_at: float, now: float) -> str | None:
    """Why a lock holder counts as gone, or None while it may still be working."""
    if host == _HOST and not _pid_alive(pid):
        return f"its process {pid} is gone"
    if now - heartbeat_at > LOCK_STALE_SECONDS:
        return f"no heartbeat for {now - heartbeat_at:.0f}s"
    return None


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a zombie does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the parenthesised command name, which may itself hold ") ".
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _abandon(conn: sqlite3.Connection, op_id: str, why: str, now: float) -> None:
    """Mark a dead holder's unfinished operation failed, audit it and count it."""
    operation = _get_operation(conn, op_id)
    if operation is None or operation.finished:
        return
    moment = datetime.fromtimestamp(now, UTC)
    steps = tuple(step if step.status != "running" else
                  Step(step.name, "failed", step.started_at,
                       (moment - step.started_at).total_seconds(),
                       {**step.detail, "error": "abandoned"})
                  for step in operation.steps)
    running = [s.name for s in operation.steps if s.status == "running"]
    abandoned = Operation(
        id=operation.id, kind=operation.kind, instance_id=operation.instance_id,
        status="failed", principal=operation.principal, role=operation.role,
        inputs=operation.inputs, steps=steps, result=operation.result,
        error=f"abandoned: {why}; check the instance", failed_step=running[-1] if running
        else operation.failed_step, created_at=operation.created_at, finished_at=moment)
    _put_operation(conn, abandoned)
    _put_audit(conn, AuditEntry.for_operation(abandoned))
    increment(conn, OPERATIONS, (abandoned.kind, abandoned.status))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _put_operation(conn: sqlite3.Connection, op: Operation) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO operations (id, kind, instance_id, status, principal, role, "
        "inputs, steps, result, error, failed_step, created_at, finished_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (op.id, op.kind, op.instance_id, op.status, op.principal, op.role,
         _json(dict(op.inputs)), _json([s.to_dict() for s in op.steps]),
         _json(dict(op.result)), op.error, op.failed_step, epoch(op.created_at),
         epoch(op.finished_at) if op.finished_at else None))


def _get_operation(conn: sqlite3.Connection, op_id: str) -> Operation | None:
    row = conn.execute(
        "SELECT id, kind, instance_id, status, principal, role, inputs, steps, result, error, "
        "failed_step, created_at, finished_at FROM operations WHERE id = ?",
        (op_id,)).fetchone()
    if row is None:
        return None
    (oid, kind, iid, status, principal, role, inputs, steps, result, error, failed,
     created, finished) = row
    return Operation.from_dict({
        "id": oid, "kind": kind, "instance_id": iid, "status": status,
        "principal": principal, "role": role, "inputs": json.loads(inputs),
        "steps": json.loads(steps), "result": json.loads(result), "error": error,
        "failed_step": failed, "created_at": datetime.fromtimestamp(created, UTC),
        "finished_at": None if finished is None else datetime.fromtimestamp(finished, UTC)})


def _put_audit(conn: sqlite3.Connection, entry: AuditEntry) -> int:
    cursor = conn.execute(
        "INSERT INTO audit (at, who, role, action, instance_id, operation_id, inputs, result, "
        "duration_seconds, steps, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (epoch(entry.at), entry.who, entry.role, entry.action, entry.instance_id,
         entry.operation_id, _json(dict(entry.inputs)), entry.result, entry.duration_seconds,
         _json([dict(s) for s in entry.steps]), entry.error))
    return int(cursor.lastrowid or 0)


def _audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    (eid, at, who, role, action, iid, op_id, inputs, result, duration, steps, error) = row
    return AuditEntry(
        id=int(eid), at=datetime.fromtimestamp(at, UTC), who=str(who), role=str(role),
        action=str(action), instance_id=None if iid is None else str(iid),
        inputs=json.loads(inputs), result=str(result),
        duration_seconds=None if duration is None else float(duration),
        steps=tuple(json.loads(steps)), error=None if error is None else str(error),
        operation_id=None if op_id is None else str(op_id))
