"""Safe restart of an instance (or some of its components) and restart of one service.

Both run the same pipeline (DESIGN §8), each stage a recorded step:

backup → capture_state → silence → stop → verify_volumes → start → quick_health →
compare_state → expire_silence

quick_health is repeated for up to actions.settle_seconds until the critical path is clean:
a component without a healthcheck (rest, kong) counts as up once it runs, and answers a
moment later.

- stop: `docker stop` with a per-container timeout, in reverse dependency order (the
  containers of one dependency level together);
- start: in dependency order, honouring each compose depends_on condition (a dependency
  must be healthy, or only started, before its dependents start), then waiting until every
  container is healthy (running, when it has no healthcheck). A dependency's health is
  learnt by running its own healthcheck command as soon as it runs, instead of waiting for
  Docker's next scheduled check, so a chain of dependencies does not cost one healthcheck
  interval per link; Docker's own verdict is still awaited for every container;
- verify_volumes: every bind-mounted data directory still there with nothing removed at
  its top level, PGDATA still holding PG_VERSION, named volumes still present;
- compare_state: the same containers (ids), images and running/healthy states as before,
  and no fewer auth.users rows or tables per schema.

When a step after the first stop fails, what was running before is started again (what
was stopped before and got started is stopped again), the silence is expired and the
operation fails naming the step and the reason. Nothing is ever removed: the only Docker
calls that change anything are stop and start.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import docker.errors
import psycopg
import requests.exceptions

from actions.operations.health import settle_quick_health
from actions.operations.model import OperationError, StepFailed, utc_now
from actions.operations.runner import Body, OperationContext, describe
from exporter.checks.listener import withheld as withheld_login
from exporter.discovery import Instance
from exporter.discovery.topology import (
    Condition,
    Graph,
    dependents_in,
    topology_of,
)
from exporter.discovery.topology import levels as _levels
from exporter.discovery.topology import order as _topological
from exporter.pg import ADMIN_USERS, DbLogin, LoginFailedError, connect, instance_dbname
from exporter.safefs import SymlinkRefused, kind, list_dir, read_text, within

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 30.0
DEFAULT_HEALTH_TIMEOUT = 120.0
DEFAULT_SETTLE = 30.0
# Bringing back what ran gets at least this long, even when the restart's own health
# timeout was short.
ROLLBACK_MIN_TIMEOUT = 60.0
# A container restarted this often since we started it is crash-looping: waiting on.
CRASH_LOOP_RESTARTS = 3
_POLL_SECONDS = 0.25
_DB_TIMEOUT = 10.0
# Files Postgres removes on a clean shutdown: their absence after a stop is expected.
_TRANSIENT_ENTRIES = frozenset({"postmaster.pid"})
# What PGDATA/PG_VERSION holds: the major version, e.g. "15" (or "9.6" once).
_PG_VERSION = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3})?")
_DEFAULT_PGDATA = "/var/lib/postgresql/data"

# dependencies -------------------------------------------------------------------------

def dependency_graph(instance: Instance) -> dict[str, dict[str, Condition]]:
    """component -> {dependency: condition}: the instance topology's depends_on links.

    Components without a container or without the label fall back to the compose file,
    then to the reference template's chain; dependencies the instance does not have are
    dropped.
    """
    return topology_of(instance).start_graph()


def dependency_order(instance: Instance) -> list[str]:
    """Every component, each after the components it depends on."""
    return _topological(dependency_graph(instance), list(instance.components))


def dependents(instance: Instance, component: str) -> list[str]:
    """The components that depend on `component`, directly or not, in dependency order."""
    graph = dependency_graph(instance)
    found = dependents_in(graph, component) - {component}
    return [c for c in _topological(graph, list(instance.components)) if c in found]


# state --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MountInfo:
    """One mount of a container, from inspect."""

    type: str
    source: str
    destination: str
    name: str | None = None


@dataclass(frozen=True)
class ContainerState:
    """One container as inspected."""

    component: str
    id: str
    name: str
    state: str
    health: str | None
    image_id: str
    restart_count: int
    exit_code: int | None = None
    restart_policy: str = ""
    mounts: tuple[MountInfo, ...] = ()
    # The healthcheck as an exec argv (CMD-SHELL through /bin/sh -c); () when none.
    healthcheck: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        """Meant to be up: running, paused or being restarted by its restart policy."""
        return self.state in ("running", "restarting", "paused")

    @property
    def ok(self) -> bool:
        """Running, and healthy when it has a healthcheck."""
        return self.state == "running" and self.health in (None, "healthy")

    def to_dict(self) -> dict[str, Any]:
        """JSON shape (no env, no secrets)."""
        return {"container": self.name, "id": self.id[:12], "state": self.state,
                "health": self.health, "image_id": self.image_id[:19],
                "restart_count": self.restart_count}

    @classmethod
    def from_inspect(cls, component: str, raw: Mapping[str, Any]) -> ContainerState:
        """From `docker inspect` output."""
        state = raw.get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        policy = ((raw.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or ""
        mounts = tuple(MountInfo(str(m.get("Type", "")), str(m.get("Source", "")),
                                 str(m.get("Destination", "")), m.get("Name"))
                       for m in raw.get("Mounts") or [])
        exit_code = state.get("ExitCode")
        test = [str(t) for t in ((raw.get("Config") or {}).get("Healthcheck") or {})
                .get("Test") or []]
        return cls(component=component, id=str(raw.get("Id", "")),
                   name=str(raw.get("Name", "")).lstrip("/"),
                   state=str(state.get("Status", "")), health=health,
                   image_id=str(raw.get("Image", "")),
                   restart_count=int(raw.get("RestartCount") or 0),
                   exit_code=None if exit_code is None else int(exit_code),
                   restart_policy=str(policy), mounts=mounts, healthcheck=_probe_argv(test))


def _probe_argv(test: Sequence[str]) -> tuple[str, ...]:
    """Docker's healthcheck Test as the argv that runs it."""
    if len(test) > 1 and test[0] == "CMD":
        return tuple(test[1:])
    if len(test) > 1 and test[0] == "CMD-SHELL":
        return ("/bin/sh", "-c", test[1])
    return ()


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
    containers: Mapping[str, ContainerState]
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


class _Docker:
    """The few Docker calls a restart makes, with the tool's error type."""

    def __init__(self, ctx: OperationContext) -> None:
        self._api = ctx.docker.client.api

    def inspect(self, container_id: str) -> Mapping[str, Any] | None:
        """Inspect output, or None when the container is gone."""
        try:
            raw: Mapping[str, Any] = self._api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise OperationError(f"cannot inspect container {container_id[:12]}: "
                                 f"{_short(exc)}") from None
        return raw

    def stop(self, container_id: str, timeout: float) -> None:
        """docker stop (SIGTERM, then SIGKILL after `timeout`)."""
        try:
            # docker-py adds the stop timeout to the HTTP timeout of this call.
            self._api.stop(container_id, timeout=max(1, round(timeout)))
        except docker.errors.NotFound:
            raise OperationError(f"container {container_id[:12]} is gone") from None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise OperationError(f"cannot stop {container_id[:12]}: {_short(exc)}") from None

    def start(self, container_id: str) -> None:
        """docker start; a slow answer is checked against the container's state."""
        try:
            self._api.start(container_id)
        except requests.exceptions.RequestException as exc:
            # The engine may have started it after the client gave up waiting.
            time.sleep(1.0)
            raw = self.inspect(container_id)
            if raw is None or (raw.get("State") or {}).get("Status") not in ("running",
                                                                               "restarting"):
                raise OperationError(f"cannot start {container_id[:12]}: {_short(exc)}"
                                     ) from None
        except docker.errors.DockerException as exc:
            raise OperationError(f"cannot start {container_id[:12]}: {_short(exc)}") from None

    def probe(self, container_id: str, argv: Sequence[str]) -> bool:
        """Run the container's own healthcheck command once; True when it passes."""
        try:
            exec_id = self._api.exec_create(container_id, list(argv), stdout=True,
                                            stderr=True)["Id"]
            self._api.exec_start(exec_id)
            return bool(self._api.exec_inspect(exec_id).get("ExitCode") == 0)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False

    def log_tail(self, container_id: str, lines: int = 3) -> list[str]:
        """The container's last log lines (best effort)."""
        try:
            raw = self._api.logs(container_id, stdout=True, stderr=True, tail=lines)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return []
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return [line.strip()[:2000] for line in text.splitlines() if line.strip()]

    def volume_exists(self, name: str) -> bool:
        """Whether a named volume still exists."""
        try:
            self._api.inspect_volume(name)
        except docker.errors.NotFound:
            return False
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise OperationError(f"cannot inspect volume {name}: {_short(exc)}") from None
        return True


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def capture_state(ctx: OperationContext) -> InstanceState:
    """Containers (state, health, image, restarts, mounts), data paths and DB counts."""
    return _capture(ctx, _Docker(ctx))


def _capture(ctx: OperationContext, api: _Docker) -> InstanceState:
    instance = ctx.instance
    containers: dict[str, ContainerState] = {}
    for name, component in instance.components.items():
        if component.container is None:
            continue
        raw = api.inspect(component.container.id)
        if raw is not None:
            containers[name] = ContainerState.from_inspect(name, raw)
    watched = _watched_paths(instance, containers)
    pgdata = _pgdata(instance, containers)
    root = instance.files.root
    return InstanceState(
        captured_at=utc_now(), containers=containers, db=_db_counts(instance),
        paths={label: _path_state(path, root) for label, path in watched.items()},
        pgdata=None if pgdata is None else str(pgdata),
        pg_version=None if pgdata is None else _read_pg_version(pgdata, root),
        volumes=tuple(sorted({m.name for c in containers.values() for m in c.mounts
                              if m.type == "volume" and m.name})),
        root=None if root is None else str(root))


def _db_counts(instance: Instance) -> DbState:
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
            reason = f"query as {user}: {_short(exc)}"
    return DbState(error=reason)


def _data_roots(instance: Instance) -> list[Path]:
    roots = [p for p in (instance.files.volumes_dir,) if p is not None]
    if instance.files.volumes_dir is None and instance.files.compose_file is not None:
        roots.append(instance.files.compose_file.parent)
    return roots


def _watched_paths(instance: Instance, containers: Mapping[str, ContainerState]
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


def _pgdata(instance: Instance, containers: Mapping[str, ContainerState]) -> Path | None:
    """PGDATA on the host: the db container's mount that holds it, else db_data."""
    env = instance.runtime_env.get("db") or {}
    inside = PurePosixPath(env.get("PGDATA") or _DEFAULT_PGDATA)
    db = containers.get("db")
    for mount in db.mounts if db else ():
        target = PurePosixPath(mount.destination)
        if mount.source and (inside == target or target in inside.parents):
            return Path(mount.source) / inside.relative_to(target)
    return instance.files.volume_dirs.get("db_data")


def _read_pg_version(pgdata: Path, root: Path | None) -> str | None:
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


def _path_state(path: Path, root: Path | None) -> PathState:
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


def _lost_paths(before: InstanceState, after: InstanceState) -> dict[str, str]:
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


def _notes(before: InstanceState, after: InstanceState) -> list[str]:
    """Changes that are not losses (traffic or migrations meanwhile, crashes since healed)."""
    notes = []
    for component, was in sorted(before.containers.items()):
        now = after.containers.get(component)
        if now is not None and now.id == was.id and now.restart_count > was.restart_count:
            notes.append(f"{component} restarted {now.restart_count - was.restart_count} "
                         "time(s) by its restart policy meanwhile")
    db_before, db_after = before.db, after.db
    if db_before.error is not None or db_after.error is not None:
        return notes
    if db_before.users is not None and db_after.users is not None and \
            db_after.users > db_before.users:
        notes.append(f"auth.users grew from {db_before.users} to {db_after.users}")
    for schema, count in sorted(db_after.tables.items()):
        if count > db_before.tables.get(schema, 0):
            notes.append(f"schema {schema} has {count} tables, had "
                         f"{db_before.tables.get(schema, 0)}")
    return notes


# stop and start -------------------------------------------------------------------------

def _stop(api: _Docker, levels: Sequence[Sequence[str]], ids: Mapping[str, str],
          timeout: float, on_stopped: Callable[[str, float], None]) -> None:
    """Stop level by level, the last level first; the containers of a level together."""
    for level in reversed(levels):
        todo = [c for c in level if c in ids]
        if not todo:
            continue
        with ThreadPoolExecutor(len(todo), thread_name_prefix="ubd-stop") as pool:
            futures = {c: pool.submit(_timed, api.stop, ids[c], timeout) for c in todo}
        errors = []
        for component, future in futures.items():
            try:
                on_stopped(component, future.result())
            except OperationError as exc:
                errors.append(f"{component}: {exc}")
        if errors:
            raise StepFailed("stop", "; ".join(errors))


def _timed(call: Callable[..., None], *args: Any) -> float:
    began = time.monotonic()
    call(*args)
    return time.monotonic() - began


@dataclass
class _Started:
    """A container this restart started (or waits for): when, and its restart count then."""

    at: float
    baseline: int


@dataclass(frozen=True)
class _StartReport:
    """How a start went: per component, when it was started and when it was up."""

    started: Mapping[str, float]  # seconds from the beginning until docker start returned
    up: Mapping[str, float]  # seconds from the beginning until it was up
    failed: Mapping[str, str]

    def timeline(self) -> dict[str, dict[str, float | None]]:
        """component -> {started, up} offsets in seconds, for the step's detail."""
        return {c: {"started": round(t, 2),
                    "up": round(self.up[c], 2) if c in self.up else None}
                for c, t in sorted(self.started.items(), key=lambda item: item[1])}


def _start(api: _Docker, plan: Sequence[str], graph: Graph, ids: Mapping[str, str],
           timeout: float, *, strict: bool) -> _StartReport:
    """Start `plan` honouring depends_on conditions; wait until each one is up.

    Containers of the plan that already run are not started again, only waited for.
    The report gives each component's start and up times, and why others did not come up.
    Strict:
    the first failure raises StepFailed("start"). Otherwise (bringing back what ran) a
    container whose dependency failed or kept it waiting past `timeout` is started anyway,
    and nothing raises.
    """
    began = time.monotonic()
    pending = [c for c in plan if c in ids]
    started: dict[str, _Started] = {}
    ready: dict[str, float] = {}
    failed: dict[str, str] = {}
    blocked_since: dict[str, float] = {}
    # Passed their own healthcheck run by us, before Docker's next scheduled run says so.
    early: set[str] = set()
    gating = {d for c in plan for d, cond in graph.get(c, {}).items()
              if cond == "service_healthy" and d in plan}

    def satisfied(dep: str, condition: Condition) -> bool | None:
        """True when met, False while it may still be, None when it will not be."""
        if dep in failed:
            return None
        if dep in plan and dep in ids:
            if condition == "service_healthy":
                return dep in ready or dep in early
            return dep in started
        raw = api.inspect(ids[dep]) if dep in ids else None
        if raw is None:
            return True  # no container for it at all: nothing to wait for
        return _met(ContainerState.from_inspect(dep, raw), condition)

    while True:
        for component in list(started):
            if component in ready or component in failed:
                continue
            raw = api.inspect(ids[component])
            since = time.monotonic() - started[component].at
            verdict = _readiness(raw, started[component].baseline, since, timeout)
            if verdict == "up":
                ready[component] = time.monotonic() - began
            elif verdict == "waiting":
                _probe_early(api, component, raw, ids, gating, pending, early)
            else:
                line = _telling_line(api.log_tail(ids[component], 5))
                failed[component] = verdict + (f"; last error: {line}" if line else "")
                if strict:
                    raise StepFailed("start", f"{component}: {failed[component]}")
        to_start = []
        now = time.monotonic()
        for component in pending:
            deps = graph.get(component, {})
            verdicts = {d: satisfied(d, c) for d, c in deps.items()}
            waited = now - blocked_since.setdefault(component, now)
            # A dependency of the plan has its own timeout; one outside it gets this one.
            stuck = [d for d, v in verdicts.items() if v is None or
                     (v is False and d not in plan and waited > timeout)]
            if stuck and strict:
                failed[component] = (f"depends on {', '.join(stuck)}, which is not "
                                     "up" + (f" after {timeout:.0f}s" if waited > timeout
                                             else ""))
                raise StepFailed("start", f"{component}: {failed[component]}")
            if stuck or all(v for v in verdicts.values()):
                to_start.append(component)
        if to_start:
            _start_together(api, to_start, ids, started, failed, strict)
            pending = [c for c in pending if c not in to_start]
        if not pending and all(c in ready or c in failed for c in started):
            return _StartReport({c: s.at - began for c, s in started.items()}, ready, failed)
        time.sleep(_POLL_SECONDS)


def _probe_early(api: _Docker, component: str, raw: Mapping[str, Any] | None,
                 ids: Mapping[str, str], gating: set[str], pending: Sequence[str],
                 early: set[str]) -> None:
    """Run a gating container's healthcheck now rather than wait for Docker's interval.

    Docker runs a healthcheck only every `interval` after the start, so a chain of
    healthy-conditions (vector -> db -> analytics) would cost one interval per link. When
    the container's own check passes, its dependents may start; its Docker health is
    still awaited before the start step ends.
    """
    if component in early or component not in gating or not pending or raw is None:
        return
    state = ContainerState.from_inspect(component, raw)
    if state.state == "running" and state.health == "starting" and state.healthcheck and \
            api.probe(ids[component], state.healthcheck):
        early.add(component)


def _start_together(api: _Docker, components: Sequence[str], ids: Mapping[str, str],
                    started: dict[str, _Started], failed: dict[str, str], strict: bool) -> None:
    """docker start the components that are not up (concurrently); track them all."""
    current = {c: api.inspect(ids[c]) for c in components}
    needed = [c for c, raw in current.items()
              if raw is not None and (raw.get("State") or {}).get("Status")
              not in ("running", "restarting")]
    with ThreadPoolExecutor(max(1, len(needed)), thread_name_prefix="ubd-start") as pool:
        futures = {c: pool.submit(api.start, ids[c]) for c in needed}
    for component in components:
        future = futures.get(component)
        try:
            if current[component] is None:
                raise OperationError("the container is gone")
            if future is not None:
                future.result()
        except OperationError as exc:
            failed[component] = str(exc)
            if strict:
                raise StepFailed("start", f"{component}: {exc}") from None
            continue
        # The restart count right after the start: crash loops are counted from here
        # (docker start may or may not reset it, depending on the engine version).
        raw = api.inspect(ids[component]) if future is not None else current[component]
        started[component] = _Started(time.monotonic(),
                                      int((raw or {}).get("RestartCount") or 0))


def _met(state: ContainerState, condition: Condition) -> bool | None:
    """Whether a dependency meets a depends_on condition: True, False (not yet), None (no)."""
    if condition == "service_healthy":
        if state.ok:
            return True
        return False if state.state == "running" and state.health == "starting" else None
    if condition == "service_completed_successfully":
        if state.state == "exited":
            return True if state.exit_code == 0 else None
        return False if state.running else None
    return True if state.running else None


def _readiness(raw: Mapping[str, Any] | None, baseline: int, since: float,
               timeout: float) -> str:
    """"up", "waiting", or why the container will not come up."""
    if raw is None:
        return "the container disappeared"
    state = ContainerState.from_inspect("", raw)
    restarts = state.restart_count - baseline
    if state.ok:
        return "up"
    if restarts >= CRASH_LOOP_RESTARTS:
        return (f"crash-looping: restarted {restarts} times since started "
                f"(last exit code {state.exit_code})")
    if state.state in ("exited", "dead") and (
            state.restart_policy in ("", "no") or
            (state.restart_policy == "on-failure" and state.exit_code == 0)):
        return f"exited with code {state.exit_code}"
    if state.state == "paused":
        return "paused"
    if since > timeout:
        shown = state.state + (f", {state.health}" if state.health else "")
        return f"not up after {timeout:.0f}s ({shown})"
    return "waiting"


# the operation ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """What a restart touches."""

    targets: tuple[str, ...]
    graph: Graph
    stop_timeout: float
    health_timeout: float
    settle: float  # how long quick_health may take to come clean after the start


def _setting(ctx: OperationContext, key: str, default: float) -> float:
    return float(getattr(ctx.config.actions, key, default))


def safe_restart_body(components: Sequence[str] | None,
                      stop_timeout_seconds: float | None = None) -> Body:
    """Safe restart of the instance, or only of the named components (still ordered)."""
    def body(ctx: OperationContext) -> Mapping[str, Any]:
        instance = ctx.instance
        named = list(dict.fromkeys(components or ()))
        unknown = [c for c in named if c not in instance.components]
        if unknown:
            raise OperationError(f"unknown component(s): {', '.join(unknown)}")
        targets = named or list(instance.components)
        return _restart(ctx, targets, stop_timeout_seconds)
    return body


def restart_service_body(component: str, with_dependents: bool) -> Body:
    """Restart one component, and the components that depend on it when asked."""
    def body(ctx: OperationContext) -> Mapping[str, Any]:
        if component not in ctx.instance.components:
            raise OperationError(f"unknown component: {component}")
        targets = [component, *(dependents(ctx.instance, component) if with_dependents
                                else [])]
        return _restart(ctx, targets, None)
    return body


def _restart(ctx: OperationContext, targets: Sequence[str],
             stop_timeout: float | None) -> Mapping[str, Any]:
    """The shared pipeline: backup, capture, silence, stop, verify, start, check, compare."""
    asked = ctx.inputs.get("stop_timeout_seconds") if stop_timeout is None else stop_timeout
    graph = dependency_graph(ctx.instance)
    plan = _Plan(targets=tuple(_topological(graph, targets)), graph=graph,
                 stop_timeout=float(asked or _setting(ctx, "stop_timeout_seconds",
                                                      DEFAULT_STOP_TIMEOUT)),
                 health_timeout=_setting(ctx, "health_timeout_seconds",
                                         DEFAULT_HEALTH_TIMEOUT),
                 settle=_setting(ctx, "settle_seconds", DEFAULT_SETTLE))
    api = _Docker(ctx)
    with ctx.step("backup") as detail:
        backup = ctx.backups.create(ctx.instance, reason=f"{ctx.kind} {ctx.op_id}")
        detail["backup_id"] = backup.id
    with ctx.step("capture_state", components=list(plan.targets)) as detail:
        before = _capture(ctx, api)
        detail.update(_summary(before))
        _preflight(before, plan)
    silence = _silence(ctx, plan)
    try:
        outcome = _act(ctx, api, plan, before)
    finally:
        _expire_silence(ctx, silence)
    return {"components": list(plan.targets), "backup_id": backup.id,
            "silence_id": silence, **outcome}


def _preflight(before: InstanceState, plan: _Plan) -> None:
    """Refuse before stopping anything when a target could never be started again."""
    if not any(before.containers[c].running for c in plan.targets if c in before.containers):
        raise StepFailed("capture_state", f"none of {', '.join(plan.targets)} is running: "
                                          "nothing to restart")
    for component in plan.targets:
        for dep, condition in plan.graph.get(component, {}).items():
            state = before.containers.get(dep)
            if dep in plan.targets or state is None:
                continue
            if _met(state, condition) is None:
                raise StepFailed("capture_state",
                                 f"{component} depends on {dep} ({condition}), which is "
                                 f"{_shown_state(state)} and not part of this restart; "
                                 "restart it too or fix it first")


def _act(ctx: OperationContext, api: _Docker, plan: _Plan,
         before: InstanceState) -> dict[str, Any]:
    running = [c for c in plan.targets
               if c in before.containers and before.containers[c].running]
    ids = {c: s.id for c, s in before.containers.items()}
    try:
        with ctx.step("stop", order=list(reversed(running)),
                      timeout_seconds=plan.stop_timeout) as detail:
            stopped: dict[str, float] = {}

            def record(component: str, seconds: float) -> None:
                stopped[component] = round(seconds, 2)
                ctx.note(stopped=dict(stopped))

            _stop(api, _levels(plan.graph, running), ids, plan.stop_timeout, record)
        with ctx.step("verify_volumes") as detail:
            after_stop = _capture_paths(before)
            problems = list(_lost_paths(before, after_stop).values())
            problems += [f"volume {v} is gone" for v in before.volumes
                         if not api.volume_exists(v)]
            detail.update(checked=len(before.paths), pgdata=before.pgdata,
                          pg_version=after_stop.pg_version,
                          unverifiable=sorted(p.path for p in before.paths.values()
                                              if p.kind == "unreadable"))
            if problems:
                raise StepFailed("verify_volumes", "; ".join(problems))
        with ctx.step("start", order=running,
                      timeout_seconds=plan.health_timeout) as detail:
            report = _start(api, running, plan.graph, ids, plan.health_timeout, strict=True)
            detail["timeline"] = report.timeline()
        with ctx.step("quick_health", settle_seconds=plan.settle) as detail:
            health, _, runs = settle_quick_health(ctx, time.monotonic() + plan.settle)
            detail.update(healthy=health.healthy, runs=runs,
                          issues=[f"{i.code}[{i.component}]" for i in health.issues])
            if not health.healthy:
                raise StepFailed("quick_health", "; ".join(
                    f"{i.code} on {i.component}: {i.message}" for i in health.issues[:5]))
        with ctx.step("compare_state") as detail:
            after = _capture(ctx, api)
            problems = compare_states(before, after)
            notes = _notes(before, after)
            detail.update(db=after.db.to_dict(), notes=notes)
            if problems:
                raise StepFailed("compare_state", "; ".join(problems))
        return {"state_before": _summary(before), "state_after": _summary(after),
                "stopped_seconds": stopped,
                "start_timeline": report.timeline(),
                "notes": notes}
    except OperationError as exc:
        cause = exc.reason if isinstance(exc, StepFailed) else str(exc)
        where = exc.step if isinstance(exc, StepFailed) else "restart"
        try:
            unlike = _bring_back(ctx, api, plan, before)
        except OperationError as undo:
            unlike = [f"the rollback itself failed: {undo}"]
        if not unlike:
            raise OperationError(f"{where} failed: {cause}; brought back what was running "
                                 f"({', '.join(running) or 'nothing'})",
                                 rolled_back=True) from None
        raise OperationError(f"{where} failed: {cause}; brought back what was running "
                             f"except: {'; '.join(unlike)}") from None


def _capture_paths(before: InstanceState) -> InstanceState:
    """The data paths again (the containers are stopped: no inspect or DB needed)."""
    watched = {label: Path(p.path) for label, p in before.paths.items()}
    pgdata = Path(before.pgdata) if before.pgdata else None
    root = Path(before.root) if before.root else None
    return InstanceState(
        captured_at=utc_now(), containers=before.containers, db=before.db,
        paths={label: _path_state(path, root) for label, path in watched.items()},
        pgdata=before.pgdata,
        pg_version=_read_pg_version(pgdata, root) if pgdata else None,
        volumes=before.volumes, root=before.root)


def _bring_back(ctx: OperationContext, api: _Docker, plan: _Plan,
                before: InstanceState) -> list[str]:
    """Start what ran before, stop what we started that did not; what is still not as before.

    Containers whose data failed the integrity check are left stopped (with what depends
    on them): starting a database on a damaged data directory could initialise a new,
    empty one over it.
    """
    with ctx.undo_step("rollback") as detail:
        ids = {c: s.id for c, s in before.containers.items()}
        now = {c: ContainerState.from_inspect(c, raw) for c in plan.targets if c in ids
               and (raw := api.inspect(ids[c])) is not None}
        keep_down = _damaged(before, plan)
        for component in list(keep_down):
            keep_down.update(dependents_in(plan.graph, component))
        # What ran and is not up again: stopped ones are started, the others waited for.
        to_start = [c for c in plan.targets if c in now and before.containers[c].running
                    and not now[c].ok and c not in keep_down]
        to_stop = [c for c in plan.targets if c in now and not before.containers[c].running
                   and now[c].running]
        detail.update(start=to_start, stop=to_stop, left_stopped=sorted(keep_down))
        report = _start(api, to_start, plan.graph, ids,
                        max(plan.health_timeout, ROLLBACK_MIN_TIMEOUT), strict=False)
        failed = dict(report.failed)
        for component in to_stop:
            try:
                api.stop(ids[component], plan.stop_timeout)
            except OperationError as exc:
                failed[component] = str(exc)
        final = {c: ContainerState.from_inspect(c, raw) for c in plan.targets if c in ids
                 and (raw := api.inspect(ids[c])) is not None}
        unlike = sorted(c for c, was in before.containers.items() if c in plan.targets and (
            c not in final or was.running != final[c].running or (was.ok and not final[c].ok)))
        detail.update(back_up=report.timeline(), not_back=failed, differs_from_before=unlike)
    if unlike:
        ctx.mark("rollback", "failed")
    return [f"{c} ({_first_line(failed[c]) if c in failed else _shown_state(final.get(c))})"
            for c in unlike]


def _shown_state(state: ContainerState | None) -> str:
    if state is None:
        return "gone"
    return state.state + (f", {state.health}" if state.health else "")


def _first_line(text: str) -> str:
    return text.split("; last error: ", 1)[0]


def _telling_line(lines: Sequence[str]) -> str | None:
    """The last log line that reports an error (else the last line), shortened."""
    chosen = next((line for line in reversed(lines) if any(
        word in line.lower() for word in ("fatal", "error", "panic", "failed"))),
        lines[-1] if lines else None)
    if chosen is None or len(chosen) <= 400:
        return chosen
    # Long JSON log lines carry the cause at the end (the wrapped error's own message).
    return f"{chosen[:150]} ... {chosen[-240:]}"


def _damaged(before: InstanceState, plan: _Plan) -> set[str]:
    """Targets that mount a data path which is now gone or lost entries."""
    bad = list(_lost_paths(before, _capture_paths(before)))
    out = set()
    for component in plan.targets:
        state = before.containers.get(component)
        for mount in state.mounts if state else ():
            source = Path(mount.source)
            if any(Path(b) == source or Path(b) in source.parents or source in Path(b).parents
                   for b in bad):
                out.add(component)
    return out


def _silence(ctx: OperationContext, plan: _Plan) -> str | None:
    """Silence the instance's alerts for as long as the restart could take."""
    if ctx.alertmanager is None:
        ctx.skip("silence", reason="no Alertmanager configured")
        return None
    levels = len(_levels(plan.graph, plan.targets))
    duration = min(6 * 3600.0, plan.stop_timeout * len(plan.targets)
                   + max(plan.health_timeout, ROLLBACK_MIN_TIMEOUT) * (levels + 1)
                   + plan.settle + 300)
    try:
        with ctx.step("silence", duration_seconds=round(duration)) as detail:
            silence_id = ctx.alertmanager.create_silence(
                ctx.instance.id, comment=f"ultrabase-doctor {ctx.kind} (operation {ctx.op_id})",
                duration_seconds=duration)
            detail["silence_id"] = silence_id
            return silence_id
    except OperationError:
        raise
    except Exception as exc:
        # Alerts during a restart are noise, not danger: carry on without the silence.
        log.warning("operation %s: no silence: %s", ctx.op_id, describe(exc))
        ctx.mark("silence", "skipped")
        return None


def _expire_silence(ctx: OperationContext, silence_id: str | None) -> None:
    if silence_id is None or ctx.alertmanager is None:
        return
    try:
        with ctx.step("expire_silence", silence_id=silence_id):
            ctx.alertmanager.expire_silence(silence_id)
    except Exception as exc:
        # The silence ends by itself at its end time; the restart's outcome stands.
        log.warning("operation %s: cannot expire silence %s: %s", ctx.op_id, silence_id,
                    describe(exc))


def _summary(state: InstanceState) -> dict[str, Any]:
    running = sorted(c for c, s in state.containers.items() if s.running)
    return {"running": running,
            "not_running": sorted(set(state.containers) - set(running)),
            "unhealthy": sorted(c for c, s in state.containers.items()
                                if s.running and not s.ok),
            "db": state.db.to_dict(), "pg_version": state.pg_version,
            "data_paths": len(state.paths)}


