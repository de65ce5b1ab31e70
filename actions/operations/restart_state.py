"""What a restart must keep, captured before and compared after: containers, data, counts.

`capture_state` inspects the instance's containers (state, health, image, restarts,
mounts), looks at its data paths without following a link below its root, reads PGDATA's
PG_VERSION and counts auth.users rows and tables per schema over an admin login.
`compare_states` tells what got worse; `notes` what changed without being a loss.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import psycopg

from actions.containers import Containers
from actions.operations.model import utc_now
from actions.operations.runner import OperationContext
from exporter.checks.listener import withheld as withheld_login
from exporter.discovery import Instance
from exporter.dockerhost import ContainerDetails
from exporter.pg import ADMIN_USERS, DbLogin, LoginFailedError, connect, instance_dbname
from exporter.safefs import SymlinkRefused, kind, list_dir, read_text, within

_DB_TIMEOUT = 10.0
# Files Postgres removes on a clean shutdown: their absence after a stop is expected.
_TRANSIENT_ENTRIES = frozenset({"postmaster.pid"})
# What PGDATA/PG_VERSION holds: the major version, e.g. "15" (or "9.6" once).
_PG_VERSION = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3})?")
_DEFAULT_PGDATA = "/var/lib/postgresql/data"


@dataclass(frozen=True)
class DbState:
    """Row and table counts that a restart must not lower."""

    users: int | None = None
    tables: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"auth_users": self.users, "tables_per_schema": dict(sorted(self.tables.items())),
                "error": self.error}


PathKind = Literal["dir", "file", "missing", "unreadable", "symlink"]


@dataclass(frozen=True)
class PathState:
    """A data path on the host: what it is and, for a directory, its top-level entries."""

    path: str
    kind: PathKind
    entries: frozenset[str] = frozenset()


@dataclass(frozen=True)
class InstanceState:
    """What a restart must keep: containers, data paths, PGDATA and database counts."""

    captured_at: datetime
    containers: Mapping[str, ContainerDetails]
    db: DbState
    paths: Mapping[str, PathState] = field(default_factory=dict)
    pgdata: str | None = None
    pg_version: str | None = None
    volumes: tuple[str, ...] = ()
    # The instance's root (InstanceFiles.root): no link below it is followed.
    root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A summary for the operation's steps and result."""
        return {"captured_at": self.captured_at.isoformat(),
                "containers": {c: s.to_dict() for c, s in self.containers.items()},
                "db": self.db.to_dict(), "pgdata": self.pgdata, "pg_version": self.pg_version,
                "data_paths": {label: p.kind for label, p in sorted(self.paths.items())},
                "volumes": list(self.volumes)}


def capture_state(ctx: OperationContext, docker: Containers) -> InstanceState:
    """Containers (state, health, image, restarts, mounts), data paths and DB counts."""
    instance = ctx.instance
    containers: dict[str, ContainerDetails] = {}
    for name, component in instance.components.items():
        if component.container is None:
            continue
        found = docker.inspect(component.container.id)
        if found is not None:
            containers[name] = found
    watched = watched_paths(instance, containers)
    pgdata = pgdata_of(instance, containers)
    root = instance.files.root
    return InstanceState(
        captured_at=utc_now(), containers=containers, db=db_counts(instance),
        paths={label: path_state(path, root) for label, path in watched.items()},
        pgdata=None if pgdata is None else str(pgdata),
        pg_version=None if pgdata is None else read_pg_version(pgdata, root),
        volumes=tuple(sorted({m.name for c in containers.values() for m in c.mounts
                              if m.type == "volume" and m.name})),
        root=None if root is None else str(root))


def db_counts(instance: Instance) -> DbState:
    """auth.users rows and tables per schema, over an admin login to the published port."""
    port = instance.endpoints.db_port
    password = instance.credentials.postgres_password
    if port is None or not password:
        return DbState(error="no published database port or password known")
    withheld = withheld_login(instance, "db", port, listing=False)
    if withheld:
        return DbState(error=f"no login tried: {withheld}")
    reason = "no login tried"
    for user in ADMIN_USERS:
        login = DbLogin(user, password, instance_dbname(instance))
        try:
            with connect(instance.endpoints.db_host, port, login, _DB_TIMEOUT) as conn:
                tables = {str(schema): int(count) for schema, count in conn.execute(
                    "SELECT n.nspname, count(*) FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN "
                    "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                    "AND n.nspname NOT LIKE 'pg_temp%' GROUP BY n.nspname")}
                users = None
                row = conn.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone()
                if row and row[0]:
                    counted = conn.execute("SELECT count(*) FROM auth.users").fetchone()
                    users = int(counted[0]) if counted else None
                return DbState(users=users, tables=tables)
        except LoginFailedError as exc:
            reason = f"login as {user}: {exc.result.reason or exc.result.outcome}"
        except psycopg.Error as exc:
            reason = f"query as {user}: {_first_line(exc)}"
    return DbState(error=reason)


def _data_roots(instance: Instance) -> list[Path]:
    roots = [p for p in (instance.files.volumes_dir,) if p is not None]
    if instance.files.volumes_dir is None and instance.files.compose_file is not None:
        roots.append(instance.files.compose_file.parent)
    return roots


def watched_paths(instance: Instance, containers: Mapping[str, ContainerDetails]
                   ) -> dict[str, Path]:
    """The instance's data: its named volume dirs and the binds under its own directory."""
    watched = {f"volume_dir:{label}": path for label, path in instance.files.volume_dirs.items()}
    roots = _data_roots(instance)
    for state in containers.values():
        for mount in state.mounts:
            if mount.type != "bind" or not mount.source:
                continue
            source = Path(mount.source)
            # Host directories shared by everything (/usr, /etc, the docker socket) are not
            # the instance's data; only what lives under its own directory is watched.
            if any(source == root or root in source.parents for root in roots):
                watched.setdefault(f"bind:{source}", source)
    return watched


def pgdata_of(instance: Instance, containers: Mapping[str, ContainerDetails]) -> Path | None:
    """PGDATA on the host: the db container's mount that holds it, else db_data."""
    env = instance.runtime_env.get("db") or {}
    inside = PurePosixPath(env.get("PGDATA") or _DEFAULT_PGDATA)
    db = containers.get("db")
    for mount in db.mounts if db else ():
        target = PurePosixPath(mount.destination)
        if mount.source and (inside == target or target in inside.parents):
            return Path(mount.source) / inside.relative_to(target)
    return instance.files.volume_dirs.get("db_data")


def read_pg_version(pgdata: Path, root: Path | None) -> str | None:
    """PGDATA's PG_VERSION ("15"), read without following a link; None for anything else.

    PGDATA is written by the database container (and so by whoever holds its superuser
    password): a PG_VERSION swapped for a link to a host file must not be read, and
    whatever it holds is shown only when it is a version number.
    """
    path = pgdata / "PG_VERSION"
    try:
        text = read_text(within(root, path), path)
    except (OSError, UnicodeDecodeError, SymlinkRefused):
        return None
    version = text.strip()
    return version if _PG_VERSION.fullmatch(version) else None


def path_state(path: Path, root: Path | None) -> PathState:
    """What a data path is now, looked at without following a link below the root."""
    base = within(root, path)
    try:
        found = kind(base, path)
        if found == "dir":
            return PathState(str(path), "dir", frozenset(list_dir(base, path)))
        if found == "missing":
            return PathState(str(path), "missing")
        if found == "symlink":
            return PathState(str(path), "symlink")
        return PathState(str(path), "file")
    except PermissionError:
        return PathState(str(path), "unreadable")


def lost_paths(before: InstanceState, after: InstanceState) -> dict[str, str]:
    """Data a stop must not have removed: path -> what happened to it."""
    lost: dict[str, str] = {}
    for _, was in sorted(before.paths.items()):
        now = after.paths.get(_label_of(before, was.path))
        if was.kind in ("missing", "unreadable", "symlink") or now is None:
            continue
        if now.kind == "missing":
            lost[was.path] = f"{was.path} is gone"
        elif was.kind == "dir" and now.kind == "dir":
            gone = sorted(was.entries - now.entries - _TRANSIENT_ENTRIES)
            if gone:
                lost[was.path] = f"{was.path} lost {', '.join(gone[:10])}"
        elif was.kind != now.kind and now.kind != "unreadable":
            lost[was.path] = f"{was.path} was a {was.kind}, is now a {now.kind}"
    if before.pgdata and before.pg_version is not None and \
            after.pg_version != before.pg_version:
        lost[before.pgdata] = (f"PGDATA {before.pgdata} no longer holds PG_VERSION "
                               f"{before.pg_version}")
    return lost


def _label_of(state: InstanceState, path: str) -> str:
    return next(label for label, p in state.paths.items() if p.path == path)


def compare_states(before: InstanceState, after: InstanceState) -> list[str]:
    """What got worse between two captures: the reasons a restart did not keep the state."""
    problems: list[str] = []
    for component, was in sorted(before.containers.items()):
        now = after.containers.get(component)
        if now is None:
            problems.append(f"{component}: container {was.name} is gone")
            continue
        if now.id != was.id:
            problems.append(f"{component}: container was replaced ({was.id[:12]} -> "
                            f"{now.id[:12]})")
        if now.image_id != was.image_id:
            problems.append(f"{component}: image changed ({was.image_id[:19]} -> "
                            f"{now.image_id[:19]})")
        if was.running and not now.running:
            problems.append(f"{component}: was {was.state}, is {now.state}")
        elif was.ok and not now.ok:
            problems.append(f"{component}: was healthy, is {now.state}"
                            f"{f' ({now.health})' if now.health else ''}")
    problems.extend(_db_problems(before.db, after.db))
    return problems


def _db_problems(before: DbState, after: DbState) -> list[str]:
    if before.error is not None:
        return []
    if after.error is not None:
        return [f"database counts unavailable after the restart: {after.error}"]
    problems = []
    if before.users is not None and (after.users or 0) < before.users:
        problems.append(f"auth.users has {after.users} rows, had {before.users}")
    for schema, count in sorted(before.tables.items()):
        if after.tables.get(schema, 0) < count:
            problems.append(f"schema {schema} has {after.tables.get(schema, 0)} tables, "
                            f"had {count}")
    return problems


def notes(before: InstanceState, after: InstanceState) -> list[str]:
    """Changes that are not losses (traffic or migrations meanwhile, crashes since healed)."""
    found: list[str] = []
    for component, was in sorted(before.containers.items()):
        now = after.containers.get(component)
        if now is not None and now.id == was.id and now.restart_count > was.restart_count:
            found.append(f"{component} restarted {now.restart_count - was.restart_count} "
                         "time(s) by its restart policy meanwhile")
    db_before, db_after = before.db, after.db
    if db_before.error is not None or db_after.error is not None:
        return found
    if db_before.users is not None and db_after.users is not None and \
            db_after.users > db_before.users:
        found.append(f"auth.users grew from {db_before.users} to {db_after.users}")
    for schema, count in sorted(db_after.tables.items()):
        if count > db_before.tables.get(schema, 0):
            found.append(f"schema {schema} has {count} tables, had "
                         f"{db_before.tables.get(schema, 0)}")
    return found


def capture_paths(before: InstanceState) -> InstanceState:
    """The data paths again (the containers are stopped: no inspect or DB needed)."""
    watched = {label: Path(p.path) for label, p in before.paths.items()}
    pgdata = Path(before.pgdata) if before.pgdata else None
    root = Path(before.root) if before.root else None
    return InstanceState(
        captured_at=utc_now(), containers=before.containers, db=before.db,
        paths={label: path_state(path, root) for label, path in watched.items()},
        pgdata=before.pgdata,
        pg_version=read_pg_version(pgdata, root) if pgdata else None,
        volumes=before.volumes, root=before.root)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def summary(state: InstanceState) -> dict[str, Any]:
    running = sorted(c for c, s in state.containers.items() if s.running)
    return {"running": running,
            "not_running": sorted(set(state.containers) - set(running)),
            "unhealthy": sorted(c for c, s in state.containers.items()
                                if s.running and not s.ok),
            "db": state.db.to_dict(), "pg_version": state.pg_version,
            "data_paths": len(state.paths)}



