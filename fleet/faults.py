"""Named faults: how each is injected, what symptom proves it, and how it is undone.

Each fault has three steps: `inject` makes the change and returns what `undo` needs (the
fleet records it in state.json before waiting), `await_symptom` waits until the fault is
observable, and `undo` reverts it and waits until the symptom is gone. `undo` looks at the
real state where it can, so a heal after a repair, or without a recorded break, is safe.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from docker.errors import APIError
from docker.models.containers import Container
from psycopg import sql

from fleet import credentials, engine, ports
from fleet.model import COMPONENTS, FaultSpec, FleetError, Instance
from fleet.render import write_registry, write_text
from fleet.state import locked

AUTH_DB_ERROR = 'password authentication failed for user "supabase_auth_admin"'
# Services whose environment holds the service_role key.
SERVICE_KEY_READERS = ("kong", "studio", "storage", "functions")


@dataclass(frozen=True)
class FaultContext:
    """What a fault acts on."""

    root: Path
    instance: Instance
    stash_dir: Path  # private to this instance and fault
    timeout: float

    @property
    def registry(self) -> Path:
        """The fleet's instances.json."""
        return self.root / "instances.json"


class Fault(Protocol):
    """A named, reversible fault."""

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""

    @property
    def exclusive_group(self) -> str | None:
        """Faults of one group cannot be active together on an instance."""

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Make the change; return what undo needs."""

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """Wait until the fault is observable."""

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Revert (data is None when no break was recorded) and wait for the symptom to go."""


def _wait_component_ok(ctx: FaultContext, component: str) -> None:
    engine.wait_for(lambda: engine.component_state(ctx.instance, component).ok, ctx.timeout,
                    f"{ctx.instance.container_name(component)} to run healthy",
                    lambda: str(engine.component_state(ctx.instance, component)))


def _wait_status(ctx: FaultContext, component: str, statuses: tuple[str, ...]) -> None:
    engine.wait_for(
        lambda: engine.component_state(ctx.instance, component).status in statuses,
        ctx.timeout, f"{ctx.instance.container_name(component)} to be {'/'.join(statuses)}",
        lambda: str(engine.component_state(ctx.instance, component)))


@dataclass(frozen=True)
class StopFault:
    """docker stop one component; heal starts it again."""

    component: str
    exclusive_group: str | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(f"stop:{self.component}",
                         f"docker stop the {self.component} container (heal: start it)")

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stop the container (unpausing it first if paused)."""
        item = engine.container(ctx.instance, self.component)
        status = engine.state_of(item).status
        if status == "paused":
            item.unpause()
        if status not in ("exited", "created", "dead"):
            item.stop(timeout=10)
        return {}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """The container has exited."""
        _wait_status(ctx, self.component, ("exited", "created", "dead"))

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Start it unless it runs; wait until it is healthy."""
        item = engine.container(ctx.instance, self.component)
        status = engine.state_of(item).status
        if status == "paused":
            item.unpause()
        elif status != "running":
            item.start()
        _wait_component_ok(ctx, self.component)


@dataclass(frozen=True)
class PauseFault:
    """docker pause one component (it hangs); heal unpauses it."""

    component: str
    exclusive_group: str | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(f"pause:{self.component}",
                         f"docker pause the {self.component} container so it hangs "
                         "(heal: unpause it)")

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Pause the container; it must be running."""
        item = engine.container(ctx.instance, self.component)
        status = engine.state_of(item).status
        if status == "running":
            _pause(item)
        elif status != "paused":
            raise FleetError(f"cannot pause {item.name}: it is {status}")
        return {}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """The container is paused."""
        _wait_status(ctx, self.component, ("paused",))

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Unpause it when paused; wait until it is healthy."""
        item = engine.container(ctx.instance, self.component)
        if engine.state_of(item).status == "paused":
            item.unpause()
        _wait_component_ok(ctx, self.component)


def _pause(item: Container, attempts: int = 5) -> None:
    """docker pause, tried again while the freezer cannot catch every process at once.

    cgroup v1's freezer gives up ("unable to freeze") when a process stays busy in the
    kernel, e.g. Postgres writing on a loaded host; a moment later it usually succeeds.
    """
    for attempt in range(attempts):
        try:
            item.pause()
            return
        except APIError as exc:
            if "unable to freeze" not in str(exc) or attempt == attempts - 1:
                raise FleetError(f"cannot pause {item.name}: {exc}") from None
        time.sleep(1.0)


def _set_role_password(instance: Instance, role: str, password: str) -> None:
    with engine.db_connect(instance) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))


@dataclass(frozen=True)
class AuthDbPasswordFault:
    """supabase_auth_admin's password no longer matches the one auth is configured with."""

    exclusive_group: str | None = None
    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "auth-db-password",
            "change supabase_auth_admin's DB password and restart auth, which crash-loops on "
            "'password authentication failed' (heal: set it back, restart auth)")

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """ALTER ROLE over a superuser connection, then restart auth."""
        _set_role_password(ctx.instance, "supabase_auth_admin", credentials.random_secret(32))
        since = int(time.time())
        engine.container(ctx.instance, "auth").restart(timeout=5)
        return {"since": since}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """auth has crashed at least once since, logging the error."""
        item = engine.container(ctx.instance, "auth")

        def crash_logged() -> bool:
            item.reload()
            if engine.state_of(item).restart_count < 1:
                return False
            text = item.logs(since=int(data["since"])).decode("utf-8", "replace")
            return AUTH_DB_ERROR in text.replace('\\"', '"')

        engine.wait_for(crash_logged, ctx.timeout, f"{item.name} to crash-loop on its DB login",
                        lambda: str(engine.state_of(item)))

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Set the password back, restart auth and wait until it is healthy."""
        _set_role_password(ctx.instance, "supabase_auth_admin",
                           ctx.instance.credentials.postgres_password)
        if data is not None or not engine.component_state(ctx.instance, "auth").ok:
            engine.container(ctx.instance, "auth").restart(timeout=5)
        _wait_component_ok(ctx, "auth")


def _replace_in_file(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise FleetError(f"{path} does not hold the key to replace")
    write_text(path, text.replace(old, new), mode=path.stat().st_mode & 0o777)


def _edit_registry_key(ctx: FaultContext, key: str | None,
                       record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set the record's service_role_key (or the whole record); the record as it was."""
    with locked(ctx.root):
        registry = json.loads(ctx.registry.read_text(encoding="utf-8"))
        before: dict[str, Any] = json.loads(json.dumps(registry[ctx.instance.id]))
        if record is not None:
            registry[ctx.instance.id] = record
        if key is not None:
            registry[ctx.instance.id]["credentials"]["service_role_key"] = key
        write_registry(ctx.registry, registry)
    return before


def rejected_by_gotrue(response: httpx.Response) -> bool:
    """GoTrue's own rejection of a JWT (403 bad_jwt, as GoTrue v2.167 answers; 401 for
    older wording), not Kong's key rejection (which has no error_code)."""
    if response.status_code not in (401, 403):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "error_code" in body


def _gateway(ctx: FaultContext, path: str, key: str) -> httpx.Response | None:
    try:
        return engine.gateway_get(ctx.instance, path, key, timeout=3.0)
    except httpx.HTTPError:
        return None


@dataclass(frozen=True)
class ServiceKeyFault:
    """The service_role key replaced by a bad one wherever it is held, services recreated."""

    name: str
    description: str
    expired: bool  # True: right secret, exp in the past; False: signed with another secret
    exclusive_group: str | None = "service-key"

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(self.name, self.description)

    def _files(self, ctx: FaultContext) -> tuple[Path, ...]:
        inst = ctx.instance
        return (inst.env_file, inst.compose_file, inst.kong_file)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stash the originals, write the bad key everywhere, recreate the key's readers."""
        creds = ctx.instance.credentials
        bad = (credentials.expired_key("service_role", creds.jwt_secret) if self.expired
               else credentials.wrong_secret_key("service_role"))
        ctx.stash_dir.mkdir(parents=True, exist_ok=True)
        for path in self._files(ctx):
            shutil.copy2(path, ctx.stash_dir / path.name)
        record = _edit_registry_key(ctx, None)
        write_text(ctx.stash_dir / "registry-record.json", json.dumps(record), mode=0o600)
        for path in self._files(ctx):
            _replace_in_file(path, creds.service_role_key, bad)
        _edit_registry_key(ctx, bad)
        engine.compose(ctx.instance, "up", "-d", "--no-deps", "--force-recreate",
                       *SERVICE_KEY_READERS)
        return {"stash": str(ctx.stash_dir), "key": bad}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """Kong accepts the bad key (health 200) and GoTrue rejects it (admin users)."""
        key = str(data["key"])

        def rejected_by_auth() -> bool:
            health = _gateway(ctx, "/auth/v1/health", key)
            if health is None or health.status_code != 200:
                return False
            admin = _gateway(ctx, "/auth/v1/admin/users", key)
            return admin is not None and rejected_by_gotrue(admin)

        engine.wait_for(rejected_by_auth, ctx.timeout,
                        "GoTrue to reject the bad service key behind Kong")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Restore the stashed files and record, recreate, wait for the key to work."""
        if data is not None:
            stash = Path(data["stash"])
            for path in self._files(ctx):
                write_text(path, (stash / path.name).read_text(encoding="utf-8"),
                           mode=0o600)
            record = json.loads((stash / "registry-record.json").read_text(encoding="utf-8"))
            _edit_registry_key(ctx, None, record=record)
            engine.compose(ctx.instance, "up", "-d", "--no-deps", "--force-recreate",
                           *SERVICE_KEY_READERS)
            shutil.rmtree(stash)
        _wait_key_accepted(ctx)


def _wait_key_accepted(ctx: FaultContext) -> None:
    key = ctx.instance.credentials.service_role_key

    def accepted() -> bool:
        response = _gateway(ctx, "/auth/v1/admin/users", key)
        return response is not None and response.status_code == 200

    engine.wait_for(accepted, ctx.timeout,
                    "the service key to be accepted by Kong and GoTrue")


@dataclass(frozen=True)
class KongKeyMismatchFault:
    """Only kong.yml's service_role key differs from the env and registry."""

    exclusive_group: str | None = "service-key"
    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "kong-key-mismatch",
            "put another (valid) service_role key in kong.yml only and restart kong, which then "
            "answers 401 to the env's key (heal: restore kong.yml, restart kong)")

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stash kong.yml, write another key into it, restart kong."""
        creds = ctx.instance.credentials
        ctx.stash_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ctx.instance.kong_file, ctx.stash_dir / "kong.yml")
        _replace_in_file(ctx.instance.kong_file, creds.service_role_key,
                         credentials.other_valid_key("service_role", creds.jwt_secret))
        engine.container(ctx.instance, "kong").restart(timeout=5)
        return {"stash": str(ctx.stash_dir)}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """Kong rejects the env's service key with 401."""
        key = ctx.instance.credentials.service_role_key

        def rejected() -> bool:
            response = _gateway(ctx, "/auth/v1/health", key)
            return response is not None and response.status_code == 401

        engine.wait_for(rejected, ctx.timeout, "Kong to reject the env's service key")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Restore kong.yml, restart kong, wait for the key to work."""
        if data is not None:
            stash = Path(data["stash"])
            write_text(ctx.instance.kong_file,
                       (stash / "kong.yml").read_text(encoding="utf-8"), mode=0o600)
            engine.container(ctx.instance, "kong").restart(timeout=5)
            shutil.rmtree(stash)
        _wait_key_accepted(ctx)


@dataclass(frozen=True)
class VolumeMissingFault:
    """volumes-<id>/storage moved away into the fleet's stash (never deleted)."""

    exclusive_group: str | None = None
    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "volume-missing",
            "move volumes-<id>/storage into DIR/.fleet/stash (heal: move it back)")

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Move the storage dir into the stash."""
        source = ctx.instance.volumes_dir / "storage"
        target = ctx.stash_dir / "storage"
        if target.exists():
            raise FleetError(f"{target} already exists")
        ctx.stash_dir.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        return {"stash": str(target)}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """The dir is gone."""
        if (ctx.instance.volumes_dir / "storage").exists():
            raise FleetError("volumes storage dir still exists")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Move it back (an empty dir created meanwhile is replaced)."""
        if data is None:
            return
        source = Path(data["stash"])
        target = ctx.instance.volumes_dir / "storage"
        if target.exists():
            if any(target.iterdir()):
                raise FleetError(f"{target} exists again and is not empty; "
                                 f"the original is kept at {source}")
            target.rmdir()
        source.rename(target)
        shutil.rmtree(source.parent)


@dataclass(frozen=True)
class PortTakenFault:
    """Kong's published HTTP port held by another process, so kong cannot start."""

    exclusive_group: str | None = None
    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "port-taken",
            "stop kong, hold its kong_http port with another process, start kong (it fails: "
            "address in use) (heal: end the process, start kong)")

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stop kong, start the holder, try to start kong."""
        port = ctx.instance.ports.kong_http
        kong = engine.container(ctx.instance, "kong")
        kong.stop(timeout=5)
        engine.wait_for(lambda: ports.is_free(port), ctx.timeout, f"port {port} to be released")
        pid = ports.start_holder(port, ctx.root / ".fleet" / "holders.log")
        try:
            kong.start()
        except APIError:
            pass
        else:
            raise FleetError(f"{kong.name} started although port {port} is held")
        return {"pid": pid, "port": port}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """kong is not running and the holder owns the port."""
        def held() -> bool:
            running = engine.component_state(ctx.instance, "kong").status == "running"
            return not running and ports.is_holder(int(data["pid"])) and not ports.is_free(
                int(data["port"]))

        engine.wait_for(held, ctx.timeout, "kong to be down with its port held")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """End the holder, start kong, wait until Kong answers."""
        port = ctx.instance.ports.kong_http
        if data is not None:
            ports.stop_holder(int(data["pid"]))
            engine.wait_for(lambda: ports.is_free(port), ctx.timeout,
                            f"port {port} to be released")
        kong = engine.container(ctx.instance, "kong")
        if engine.state_of(kong).status != "running":
            kong.start()
        _wait_component_ok(ctx, "kong")


def _catalogue() -> dict[str, Fault]:
    faults: list[Fault] = []
    faults += [StopFault(c) for c in COMPONENTS]
    faults += [PauseFault(c) for c in COMPONENTS]
    faults += [
        AuthDbPasswordFault(),
        ServiceKeyFault("service-key-wrong-secret",
                        "replace the service_role key everywhere it is held (registry, env, "
                        "compose file, kong.yml) by one signed with another secret and "
                        "recreate its readers: Kong accepts it, GoTrue rejects it "
                        "(403 bad_jwt) (heal: restore the originals, recreate)", expired=False),
        ServiceKeyFault("service-key-expired",
                        "as service-key-wrong-secret, with a key signed with the right "
                        "secret whose exp is in the past", expired=True),
        KongKeyMismatchFault(),
        VolumeMissingFault(),
        PortTakenFault(),
    ]
    return {f.spec.name: f for f in faults}


FAULTS: dict[str, Fault] = _catalogue()


def get(name: str) -> Fault:
    """The fault with this name; FleetError naming the known ones otherwise."""
    try:
        return FAULTS[name]
    except KeyError:
        raise FleetError(f"unknown fault {name!r}; run `python -m fleet faults`") from None


def specs() -> tuple[FaultSpec, ...]:
    """Every fault's name and description."""
    return tuple(f.spec for f in FAULTS.values())
