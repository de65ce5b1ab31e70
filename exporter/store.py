"""The SQLite store shared by the exporter and the action API.

One file in WAL mode, opened by both processes at once: readers never wait for the writer,
and writers queue on SQLite's lock (``busy_timeout``) instead of failing. Every write is one
short ``BEGIN IMMEDIATE`` transaction, so a writer takes the lock up front and never hits
the "cannot upgrade a read transaction" error that deferred transactions get under WAL.
Connections come from a small pool: safe from any number of threads, bounded in count.

This module keeps the file (pool, transactions, the schema and its migrations, retention)
and what the exporter stores. The action API's rows (operations, locks, the audit log) are
read and written by ``actions.store.ActionStore``, a ``Store`` on the same file with the
same pool, so nothing here knows the action API's types. The schema is the file's, one
version for both: every table is created here, whichever process opens the file first.

Schema (version 1; timestamps are UTC, as Unix epoch seconds unless said otherwise):

- ``latest(instance_id PK, timestamp, healthy, payload)`` — the newest diagnostic of each
  instance; ``payload`` is ``Diagnostic.to_dict()`` as JSON (already free of secrets).
- ``history(id PK, instance_id, timestamp, healthy, trigger, payload)``, indexed on
  ``(instance_id, timestamp)`` — past diagnostics, at most ``history_limit`` per instance.
- ``counters(kind, labels, value; PK (kind, labels))`` — counters that only grow;
  ``labels`` is a JSON array (``diagnostic_runs``: [trigger, result];
  ``operations``: [operation, result]).
- ``instances(id PK, name, owner)`` — the last discovery's instance list.
- ``meta(key PK, value)`` — small facts about the exporter (docker_ok, last_sweep_at, ...).
- ``schedules(instance_id PK, spec, enabled, updated_at ISO-8601 text, updated_by)``.
- ``generation(id = 1, value)`` — bumped by every write above, so a reader in any process
  learns with one tiny query whether anything changed.

Version 2 (the action API): ``operations(id PK, kind, instance_id, status, principal, role,
inputs, steps, result, error, failed_step, created_at, finished_at)`` — each operation as it
progresses, JSON columns already redacted; ``audit(id PK, at, who, role, action,
instance_id, operation_id, inputs, result, duration_seconds, steps, error)``. Version 3:
``locks(instance_id PK, op_id, pid, host, acquired_at, heartbeat_at)`` — one operation per
instance across processes (how they are taken and taken over: ``actions.store``). These
writes leave the generation alone: /metrics shows none of them.
Version 4 (incremental /metrics): ``latest.generation``, indexed with the instance id, is
the store generation at which the row last changed: triggers on ``latest`` stamp the row
with the generation its transaction commits (the one after the current, as every write
transaction bumps it once at its end), so every writer, including one still running the
previous release, keeps it right. A reader that rendered generation *G* re-reads only the rows
whose ``generation`` is above *G* (``Store.snapshot(since=G)``); rows from before the
migration hold 0.
Version 5: ``auto_repairs(id PK, instance_id, at, operation_id)`` — the auto-repair budget,
one row per repair the webhook started, counted and written in one ``BEGIN IMMEDIATE``
transaction so processes sharing the store cannot overspend it (these writes do bump the
generation: /metrics shows which instances spent their budget).

Retention: ``prune`` deletes audit entries and finished operations older than their
configured number of days, and budget rows older than a day.

The version lives in ``PRAGMA user_version``. ``MIGRATIONS`` is an ordered list of SQL
scripts; script *n* (0-based) takes the schema from version *n* to *n + 1* and runs in its
own transaction, together with the version bump. Adding a migration is appending one
script; never edit one that has shipped. The action API adds its tables this way:
migration 2 for the audit log, migration 3 for the cross-process operation locks. A store
whose version is newer than this code knows is refused rather than misread.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.config import StoreConfig
from exporter.diagnostic import Diagnostic
from exporter.errors import DoctorError
from exporter.reports import HealthPoint

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: diagnostics, counters, instances, meta, schedules, generation.
    """
    CREATE TABLE latest (
        instance_id TEXT PRIMARY KEY,
        timestamp   REAL NOT NULL,
        healthy     INTEGER NOT NULL,
        payload     TEXT NOT NULL
    );
    CREATE TABLE history (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        timestamp   REAL NOT NULL,
        healthy     INTEGER NOT NULL,
        trigger     TEXT NOT NULL,
        payload     TEXT NOT NULL
    );
    CREATE INDEX history_instance_time ON history (instance_id, timestamp);
    CREATE TABLE counters (
        kind   TEXT NOT NULL,
        labels TEXT NOT NULL,
        value  INTEGER NOT NULL,
        PRIMARY KEY (kind, labels)
    );
    CREATE TABLE instances (
        id    TEXT PRIMARY KEY,
        name  TEXT NOT NULL,
        owner TEXT
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE schedules (
        instance_id TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        enabled     INTEGER NOT NULL,
        updated_at  TEXT NOT NULL,
        updated_by  TEXT
    );
    CREATE TABLE generation (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
    );
    INSERT INTO generation (id, value) VALUES (1, 0);
    """,
    # 2: the action API's operations (with their steps, as they progress) and audit log.
    """
    CREATE TABLE operations (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        status      TEXT NOT NULL,
        principal   TEXT NOT NULL,
        role        TEXT NOT NULL,
        inputs      TEXT NOT NULL,
        steps       TEXT NOT NULL,
        result      TEXT NOT NULL,
        error       TEXT,
        failed_step TEXT,
        created_at  REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX operations_instance_time ON operations (instance_id, created_at);
    CREATE TABLE audit (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        at               REAL NOT NULL,
        who              TEXT NOT NULL,
        role             TEXT NOT NULL,
        action           TEXT NOT NULL,
        instance_id      TEXT,
        operation_id     TEXT,
        inputs           TEXT NOT NULL,
        result           TEXT NOT NULL,
        duration_seconds REAL,
        steps            TEXT NOT NULL,
        error            TEXT
    );
    CREATE INDEX audit_time ON audit (at);
    CREATE INDEX audit_instance_time ON audit (instance_id, at);
    """,
    # 3: one operation per instance across processes: the holder, where it runs, its pulse.
    """
    CREATE TABLE locks (
        instance_id  TEXT PRIMARY KEY,
        op_id        TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        host         TEXT NOT NULL,
        acquired_at  REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    """,
    # 4: which instances' latest diagnostics changed since a generation. The index covers
    # both the listing of (instance_id, generation) and the search for generation > G, so
    # neither reads the payloads stored before the column.
    """
    ALTER TABLE latest ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX latest_generation ON latest (generation, instance_id);
    CREATE TRIGGER latest_inserted AFTER INSERT ON latest BEGIN
        UPDATE latest SET generation = (SELECT value + 1 FROM generation WHERE id = 1)
            WHERE instance_id = NEW.instance_id;
    END;
    CREATE TRIGGER latest_updated AFTER UPDATE OF timestamp, healthy, payload ON latest BEGIN
        UPDATE latest SET generation = (SELECT value + 1 FROM generation WHERE id = 1)
            WHERE instance_id = NEW.instance_id;
    END;
    """,
    # 5: the auto-repair budget (one row per repair the webhook started), and an index to
    # prune finished operations by age.
    """
    CREATE TABLE auto_repairs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id  TEXT NOT NULL,
        at           REAL NOT NULL,
        operation_id TEXT
    );
    CREATE INDEX auto_repairs_instance_time ON auto_repairs (instance_id, at);
    CREATE INDEX operations_finished ON operations (finished_at);
    """,
)

RUNS = "diagnostic_runs"
# auto_repair_budget_per_hour counts the repairs started in this window.
AUTO_REPAIR_WINDOW_SECONDS = 3600.0
OPERATIONS = "operations"
# Idle connections kept for reuse; more are opened under load and closed when returned.
_MAX_IDLE = 4
# Keys of Diagnostic.to_dict() that describe one response, not the diagnostic.
_RESPONSE_KEYS = ("cached", "age_seconds", "rate_limited")


class StoreError(DoctorError):
    """The store cannot be opened, read or written, or its schema is newer than this code."""


@dataclass(frozen=True)
class InstanceInfo:
    """One instance as the last discovery saw it."""

    id: str
    name: str
    owner: str | None


@dataclass(frozen=True)
class Schedule:
    """A per-instance diagnostic schedule set through the API."""

    instance_id: str
    spec: str
    enabled: bool
    updated_at: datetime
    updated_by: str | None


def apply_retention(store: Store, config: StoreConfig) -> None:
    """Prune the audit log and finished operations as the config says; log what went."""
    try:
        audit, operations = store.prune(audit_days=config.audit_retention_days,
                                        operations_days=config.operations_retention_days)
    except StoreError as exc:
        log.warning("retention: %s", exc)
        return
    if audit or operations:
        log.info("retention: %d audit entries and %d operations pruned", audit, operations)


@dataclass(frozen=True)
class BudgetUse:
    """An instance's auto-repairs within the budget window."""

    used: int
    frees_at: float  # when the oldest of them leaves the window (Unix time)


@dataclass(frozen=True)
class StoreSnapshot:
    """What /metrics renders, read in one transaction so the parts agree.

    ``latest`` holds the diagnostics that changed after the reader's generation (all of
    them for a first read); ``latest_generations`` lists every instance that has one.
    """

    generation: int
    latest: tuple[Diagnostic, ...]
    latest_generations: Mapping[str, int]
    instances: tuple[InstanceInfo, ...]
    run_counts: Mapping[tuple[str, str], int]
    operation_counts: Mapping[tuple[str, str], int]
    meta: Mapping[str, str]
    auto_repairs: Mapping[str, BudgetUse] = field(default_factory=dict)


class Store:
    """The shared SQLite store; thread-safe and safe with other processes on the same file."""

    SCHEMA_VERSION: int = len(MIGRATIONS)

    def __init__(self, path: Path, history_limit: int = 100, *,
                 busy_timeout: float = 5.0) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.path = Path(path)
        self.history_limit = history_limit
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        _prepare_file(self.path)
        try:
            with self._connection() as conn:
                self._enable_wal(conn)
                self._migrate(conn)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every idle connection; connections in use close when returned."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            with suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ResultStore --------------------------------------------------------------------

    def latest(self, instance_id: str) -> Diagnostic | None:
        """The newest diagnostic of the instance, if any."""
        with self._read("read the latest diagnostic") as conn:
            row = conn.execute("SELECT instance_id, payload FROM latest WHERE instance_id = ?",
                               (instance_id,)).fetchone()
        return _decode(row[0], row[1], "latest") if row else None

    def save(self, diagnostic: Diagnostic) -> None:
        """Set the instance's latest, append to its history and trim it, in one transaction."""
        payload = _encode(diagnostic)
        stamp = epoch(diagnostic.timestamp)
        healthy = int(diagnostic.healthy)
        iid = diagnostic.instance_id
        with self._write("save a diagnostic") as conn:
            # Two processes may finish runs out of order: the newer diagnostic stays latest.
            conn.execute(
                "INSERT INTO latest (instance_id, timestamp, healthy, payload) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET "
                "timestamp = excluded.timestamp, healthy = excluded.healthy, "
                "payload = excluded.payload WHERE excluded.timestamp >= latest.timestamp",
                (iid, stamp, healthy, payload))
            conn.execute(
                "INSERT INTO history (instance_id, timestamp, healthy, trigger, payload) "
                "VALUES (?, ?, ?, ?, ?)", (iid, stamp, healthy, diagnostic.trigger, payload))
            conn.execute(
                "DELETE FROM history WHERE instance_id = ? AND id NOT IN ("
                "SELECT id FROM history WHERE instance_id = ? "
                "ORDER BY timestamp DESC, id DESC LIMIT ?)",
                (iid, iid, self.history_limit))

    def record_run(self, trigger: str, result: str) -> None:
        """Count one diagnostic run by trigger and result."""
        self._increment(RUNS, (trigger, result))

    # reads for the API and metrics -----------------------------------------------------

    def latest_all(self) -> list[Diagnostic]:
        """The newest diagnostic of every instance that has one, by instance id."""
        with self._read("read the latest diagnostics") as conn:
            return _latest_rows(conn)

    def history(self, instance_id: str, limit: int = 10) -> list[Diagnostic]:
        """Up to `limit` past diagnostics of the instance, newest first."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._read("read history") as conn:
            rows = conn.execute(
                "SELECT payload FROM history WHERE instance_id = ? "
                "ORDER BY timestamp DESC, id DESC LIMIT ?", (instance_id, limit)).fetchall()
        return _decode_all(instance_id, rows)

    def history_since(self, instance_id: str, since: datetime,
                      limit: int | None = None) -> list[Diagnostic]:
        """The instance's diagnostics at or after `since`, oldest first (the newest `limit`)."""
        with self._read("read history") as conn:
            rows = conn.execute(
                "SELECT payload FROM (SELECT payload, timestamp, id FROM history "
                "WHERE instance_id = ? AND timestamp >= ? ORDER BY timestamp DESC, id DESC "
                "LIMIT ?) ORDER BY timestamp, id",
                (instance_id, epoch(since), -1 if limit is None else limit)).fetchall()
        return _decode_all(instance_id, rows)

    def last_before(self, instance_id: str, before: datetime) -> Diagnostic | None:
        """The instance's newest diagnostic strictly before `before` (a report's prior state)."""
        with self._read("read history") as conn:
            rows = conn.execute(
                "SELECT payload FROM history WHERE instance_id = ? AND timestamp < ? "
                "ORDER BY timestamp DESC, id DESC", (instance_id, epoch(before)))
            # Lazily: usually the first row decodes and the rest are never fetched.
            for (payload,) in rows:
                found = _decode(instance_id, payload, "history")
                if found is not None:
                    return found
        return None

    def health_points(self, since: datetime, instance_id: str | None = None, *,
                      issues: bool = False) -> dict[str, list[HealthPoint]]:
        """Each instance's (or one's) diagnostics since `since` as time and verdict, oldest
        first, without decoding them; `issues` adds each one's issue count."""
        count = "json_array_length(payload, '$.issues')" if issues else "0"
        query = (f"SELECT instance_id, timestamp, healthy, {count} FROM history "  # noqa: S608
                 "WHERE timestamp >= ?")
        args: tuple[Any, ...] = (epoch(since),)
        if instance_id is not None:
            query += " AND instance_id = ?"
            args += (instance_id,)
        out: dict[str, list[HealthPoint]] = {}
        with self._read("read history") as conn:
            for iid, stamp, healthy, found in conn.execute(
                    query + " ORDER BY instance_id, timestamp, id", args):
                out.setdefault(str(iid), []).append(HealthPoint(
                    datetime.fromtimestamp(stamp, UTC), bool(healthy), int(found or 0)))
        return out

    def health_before(self, before: datetime) -> dict[str, HealthPoint]:
        """Each instance's newest diagnostic strictly before `before`, as time and verdict."""
        with self._read("read history") as conn:
            # SQLite gives the bare column (healthy) of the row holding the MAX.
            rows = conn.execute("SELECT instance_id, MAX(timestamp), healthy FROM history "
                                "WHERE timestamp < ? GROUP BY instance_id",
                                (epoch(before),)).fetchall()
        return {str(iid): HealthPoint(datetime.fromtimestamp(stamp, UTC), bool(healthy))
                for iid, stamp, healthy in rows}

    def run_counts(self) -> dict[tuple[str, str], int]:
        """Diagnostic runs by (trigger, result)."""
        with self._read("read counters") as conn:
            return _counts(conn, RUNS)

    def record_operation(self, operation: str, result: str) -> None:
        """Count one operation by name and result."""
        self._increment(OPERATIONS, (operation, result))

    def operation_counts(self) -> dict[tuple[str, str], int]:
        """Operations by (operation, result)."""
        with self._read("read counters") as conn:
            return _counts(conn, OPERATIONS)

    def set_instances(self, infos: Sequence[InstanceInfo], *,
                      departed_before: datetime | None = None) -> None:
        """Replace the instance list with the last discovery's.

        departed_before: the discovery was complete and began then; the latest diagnostic
        of an instance it did not find, saved before that, is forgotten (its history is
        kept), so /metrics stops publishing a verdict on an instance that is gone.
        """
        with self._write("save the instance list") as conn:
            conn.execute("DELETE FROM instances")
            conn.executemany("INSERT OR REPLACE INTO instances (id, name, owner) VALUES (?, ?, ?)",
                             [(i.id, i.name, i.owner) for i in infos])
            if departed_before is not None:
                conn.execute("DELETE FROM latest WHERE timestamp < ? AND instance_id NOT IN "
                             "(SELECT id FROM instances)", (epoch(departed_before),))

    def instances(self) -> list[InstanceInfo]:
        """The last discovery's instances, by id."""
        with self._read("read the instance list") as conn:
            return _instance_rows(conn)

    def set_meta(self, key: str, value: str) -> None:
        """Set one meta value."""
        with self._write("save a meta value") as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def get_meta(self, key: str) -> str | None:
        """One meta value, if set."""
        with self._read("read a meta value") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def generation(self) -> int:
        """A number that changes whenever the store's data changed, in any process."""
        with self._read("read the generation") as conn:
            return _generation(conn)

    def snapshot(self, since: int | None = None) -> StoreSnapshot:
        """Everything /metrics renders, from one consistent read.

        With since (a generation read earlier), only the latest diagnostics that changed
        after it are read and decoded; the instance ids and row generations are always all.
        """
        with self._read("read a snapshot") as conn:
            conn.execute("BEGIN")
            try:
                return StoreSnapshot(
                    generation=_generation(conn),
                    latest=tuple(_latest_rows(conn, since)),
                    latest_generations={
                        str(i): int(g) for i, g in
                        conn.execute("SELECT instance_id, generation FROM latest")},
                    instances=tuple(_instance_rows(conn)),
                    run_counts=_counts(conn, RUNS),
                    operation_counts=_counts(conn, OPERATIONS),
                    meta={str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")},
                    auto_repairs=_budget_rows(conn, None),
                )
            finally:
                conn.execute("COMMIT")

    # schedules ------------------------------------------------------------------------

    def get_schedule(self, instance_id: str) -> Schedule | None:
        """The instance's schedule, if one is set."""
        with self._read("read a schedule") as conn:
            row = conn.execute(
                "SELECT instance_id, spec, enabled, updated_at, updated_by FROM schedules "
                "WHERE instance_id = ?", (instance_id,)).fetchone()
        return _schedule(row) if row else None

    def set_schedule(self, schedule: Schedule) -> None:
        """Create or replace the instance's schedule."""
        with self._write("save a schedule") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO schedules "
                "(instance_id, spec, enabled, updated_at, updated_by) VALUES (?, ?, ?, ?, ?)",
                (schedule.instance_id, schedule.spec, int(schedule.enabled),
                 _utc(schedule.updated_at).isoformat(), schedule.updated_by))

    def delete_schedule(self, instance_id: str) -> bool:
        """Remove the instance's schedule; False when there was none."""
        with self._write("delete a schedule") as conn:
            cursor = conn.execute("DELETE FROM schedules WHERE instance_id = ?", (instance_id,))
            return cursor.rowcount > 0

    def schedules(self) -> list[Schedule]:
        """Every schedule, by instance id."""
        with self._read("read schedules") as conn:
            rows = conn.execute("SELECT instance_id, spec, enabled, updated_at, updated_by "
                                "FROM schedules ORDER BY instance_id").fetchall()
        return [_schedule(r) for r in rows]

    def schema_version(self) -> int:
        """The schema version of the file."""
        with self._read("read the schema version") as conn:
            return _user_version(conn)

    # internals ------------------------------------------------------------------------

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent, so a no-op after the first open)."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
                break
            except sqlite3.OperationalError as exc:
                # Two processes switching a new file at once deadlock on the lock upgrade,
                # and SQLite answers "locked" at once instead of calling the busy handler.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.05))
        if mode != "wal":
            log.warning("store %s: WAL mode unavailable (journal mode %s); concurrent "
                        "writers will wait longer", self.path, mode)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        self._refuse_newer(_user_version(conn))
        while _user_version(conn) < self.SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the lock: the other process may have migrated meanwhile.
                version = _user_version(conn)
                self._refuse_newer(version)
                if version < self.SCHEMA_VERSION:
                    for statement in _statements(MIGRATIONS[version]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version + 1:d}")
                    log.info("store %s migrated to schema version %d", self.path, version + 1)
                conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _refuse_newer(self, version: int) -> None:
        if version > self.SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than the "
                f"{self.SCHEMA_VERSION} this ultrabase-doctor knows: it was written by a newer "
                "release; upgrade ultrabase-doctor or point store.path at another file")

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended here, explicitly.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            # WAL with synchronous=NORMAL is durable across process crashes; a power loss
            # may drop the last few commits, which for diagnostics is acceptable.
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError(f"store {self.path} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            keep = False
            if not conn.in_transaction:
                with self._lock:
                    keep = not self._closed and len(self._idle) < _MAX_IDLE
                    if keep:
                        self._idle.append(conn)
            if not keep:
                with suppress(sqlite3.Error):
                    conn.close()

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        try:
            with self._connection() as conn:
                yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot {action}: {exc}") from None

    @contextmanager
    def _write(self, action: str, *, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; bump=False leaves the generation alone (for writes that
        nothing in /metrics shows, so they cost no re-render)."""
        try:
            with self._connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    if bump:
                        conn.execute("UPDATE generation SET value = value + 1 WHERE id = 1")
                    conn.execute("COMMIT")
                except BaseException:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot {action}: {exc}") from None

    def _increment(self, kind: str, labels: tuple[str, str]) -> None:
        with self._write("count") as conn:
            increment(conn, kind, labels)

    # the auto-repair budget (schema version 4): the action API takes it (actions/store.py)

    def auto_repairs_used(self, instance_id: str | None = None) -> dict[str, BudgetUse]:
        """Repairs started within the budget window, by instance (or for the one instance)."""
        with self._read("read the auto-repair budget") as conn:
            return _budget_rows(conn, instance_id)

    # retention --------------------------------------------------------------------------

    def prune(self, *, audit_days: float, operations_days: float) -> tuple[int, int]:
        """Delete audit entries and finished operations older than their retention.

        Returns how many of each went. Running operations are never touched.
        """
        now = time.time()
        with self._write("prune the audit log and operations", bump=False) as conn:
            audit = conn.execute("DELETE FROM audit WHERE at < ?",
                                 (now - audit_days * 86400,)).rowcount
            operations = conn.execute(
                "DELETE FROM operations WHERE finished_at IS NOT NULL AND finished_at < ? "
                "AND id NOT IN (SELECT op_id FROM locks)",
                (now - operations_days * 86400,)).rowcount
            conn.execute("DELETE FROM auto_repairs WHERE at < ?", (now - 86400,))
        return int(audit), int(operations)


def _budget_rows(conn: sqlite3.Connection, instance_id: str | None) -> dict[str, BudgetUse]:
    rows = conn.execute(
        "SELECT instance_id, COUNT(*), MIN(at) FROM auto_repairs WHERE at >= ? "
        "AND (? IS NULL OR instance_id = ?) GROUP BY instance_id",
        (time.time() - AUTO_REPAIR_WINDOW_SECONDS, instance_id, instance_id)).fetchall()
    return {str(iid): BudgetUse(int(count), float(oldest) + AUTO_REPAIR_WINDOW_SECONDS)
            for iid, count, oldest in rows}


def increment(conn: sqlite3.Connection, kind: str, labels: tuple[str, str]) -> None:
    """Count one more of kind with labels, inside the caller's write transaction."""
    conn.execute("INSERT INTO counters (kind, labels, value) VALUES (?, ?, 1) "
                 "ON CONFLICT (kind, labels) DO UPDATE SET value = value + 1",
                 (kind, json.dumps(list(labels))))


def _prepare_file(path: Path) -> None:
    """Create missing directories (0700) and the file (0600) before SQLite opens it."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        for directory in reversed(missing):
            # exist_ok: the other process may create it at the same moment.
            directory.mkdir(mode=0o700, exist_ok=True)
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create store {path}: {exc.strerror or exc}") from None


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into statements (sqlite3 knows where each one ends)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:60]!r}")


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM generation WHERE id = 1").fetchone()[0])


def _latest_rows(conn: sqlite3.Connection, since: int | None = None) -> list[Diagnostic]:
    """The latest diagnostics by instance id; with since, those changed after it only."""
    if since is None:
        rows = conn.execute("SELECT instance_id, payload FROM latest ORDER BY instance_id")
    else:
        # No ORDER BY: it would walk the primary key and read every payload to test the
        # generation; the index finds the few changed rows.
        rows = conn.execute("SELECT instance_id, payload FROM latest WHERE generation > ?",
                            (since,))
    found = [d for iid, payload in rows if (d := _decode(iid, payload, "latest")) is not None]
    return found if since is None else sorted(found, key=lambda d: d.instance_id)


def _instance_rows(conn: sqlite3.Connection) -> list[InstanceInfo]:
    return [InstanceInfo(str(i), str(n), None if o is None else str(o))
            for i, n, o in conn.execute("SELECT id, name, owner FROM instances ORDER BY id")]


def _counts(conn: sqlite3.Connection, kind: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for labels, value in conn.execute("SELECT labels, value FROM counters WHERE kind = ?",
                                      (kind,)):
        first, second = json.loads(labels)
        out[(str(first), str(second))] = int(value)
    return out


def _schedule(row: tuple[Any, ...]) -> Schedule:
    instance_id, spec, enabled, updated_at, updated_by = row
    return Schedule(instance_id=str(instance_id), spec=str(spec), enabled=bool(enabled),
                    updated_at=datetime.fromisoformat(str(updated_at)),
                    updated_by=None if updated_by is None else str(updated_by))


def _encode(diagnostic: Diagnostic) -> str:
    data = diagnostic.to_dict()
    for key in _RESPONSE_KEYS:
        data.pop(key, None)
    return json.dumps(data, separators=(",", ":"), default=str)


def _decode(instance_id: str, payload: Any, table: str) -> Diagnostic | None:
    """The stored diagnostic, or None (logged) when the payload cannot be read back."""
    try:
        return Diagnostic.from_dict(json.loads(payload))
    except Exception as exc:  # any malformed row: skip it, never fail the whole read
        log.warning("store: skipping an unreadable diagnostic of %s in %s (%s)",
                    instance_id, table, type(exc).__name__)
        return None


def _decode_all(instance_id: str, rows: Sequence[tuple[Any, ...]]) -> list[Diagnostic]:
    return [d for (payload,) in rows
            if (d := _decode(instance_id, payload, "history")) is not None]


def _utc(moment: datetime) -> datetime:
    """The moment in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def epoch(moment: datetime) -> float:
    """The moment as Unix epoch seconds, as every table keeps its times."""
    return _utc(moment).timestamp()
