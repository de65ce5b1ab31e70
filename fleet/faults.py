"""Named faults: how each is injected, what symptom proves it, and how it is undone.

Each fault has three steps: `inject` makes the change and returns what `undo` needs (the
fleet records it in state.json before waiting), `await_symptom` waits until the fault is
observable, and `undo` reverts it and waits until the symptom is gone. `undo` looks at the
real state where it can, so a heal after a repair, or without a recorded break, is safe.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
import yaml
from docker.errors import APIError, NotFound
from docker.models.containers import Container
from psycopg import sql

from fleet import credentials, engine, images, ports
from fleet.model import COMPONENTS, Expectation, FaultSpec, FleetError, Instance
from fleet.render import host_mounts, write_registry, write_text
from fleet.state import load as load_state
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
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(f"stop:{self.component}",
                         f"docker stop the {self.component} container (heal: start it)",
                         expect=self.expect)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stop the container (unpausing it first if paused); remember its address."""
        item = engine.container(ctx.instance, self.component)
        status = engine.state_of(item).status
        address = engine.address(item, engine.network_name(ctx.instance))
        if status == "paused":
            item.unpause()
        if status not in ("exited", "created", "dead"):
            item.stop(timeout=10)
        return {"address": address}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """The container has exited."""
        _wait_status(ctx, self.component, ("exited", "created", "dead"))

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Start it unless it runs; wait until it is healthy (and Kong knows where it is)."""
        item = engine.container(ctx.instance, self.component)
        status = engine.state_of(item).status
        if status == "paused":
            item.unpause()
        elif status != "running":
            item.start()
        _wait_component_ok(ctx, self.component)
        _kong_follows(ctx, self.component, (data or {}).get("address"))


@dataclass(frozen=True)
class PauseFault:
    """docker pause one component (it hangs); heal unpauses it."""

    component: str
    exclusive_group: str | None = None
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(f"pause:{self.component}",
                         f"docker pause the {self.component} container so it hangs "
                         "(heal: unpause it)", expect=self.expect)

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


# Services Kong's routes lead to: Kong caches their addresses (fleet/standins/kongdns.py).
KONG_UPSTREAMS = frozenset({"auth", "rest", "storage", "meta", "studio", "functions",
                            "analytics", "realtime"})


def _kong_follows(ctx: FaultContext, component: str, before: str | None) -> None:
    """Restart kong when a service it proxies to came back at another address.

    Docker gives a starting container the lowest free address, which is not always the
    one it had; Kong would keep the old one for its DNS TTL (600 s), as it does in
    production. A heal restores a healthy instance, so it restarts kong as an operator
    would. Without the address from the break it restarts kong to be sure.
    """
    if component not in KONG_UPSTREAMS:
        return
    now = engine.address(engine.container(ctx.instance, component),
                         engine.network_name(ctx.instance))
    if before is not None and now == before:
        return
    engine.container(ctx.instance, "kong").restart(timeout=5)
    _wait_component_ok(ctx, "kong")


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
class AuthStartFault:
    """A change in the db that GoTrue meets at its next start: auth is restarted (same
    container and address) and crash-loops, logging `logged`; heal reverts it."""

    name: str
    description: str
    change: Callable[[Instance], None]
    revert: Callable[[Instance], None]
    logged: str
    what: str  # what auth stops on, for the wait's message
    exclusive_group: str | None = None
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(self.name, self.description, expect=self.expect)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Change the db over a superuser connection, then restart auth."""
        self.change(ctx.instance)
        since = int(time.time())
        item = engine.container(ctx.instance, "auth")
        address = engine.address(item, engine.network_name(ctx.instance))
        item.restart(timeout=5)
        return {"since": since, "address": address}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """auth has crashed at least once since, logging the error."""
        _wait_auth_crash(ctx, int(data["since"]), self.logged, self.what)

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Revert the change, restart auth and wait until it is healthy."""
        self.revert(ctx.instance)
        if data is not None or not engine.component_state(ctx.instance, "auth").ok:
            engine.container(ctx.instance, "auth").restart(timeout=5)
        _wait_component_ok(ctx, "auth")
        _kong_follows(ctx, "auth", (data or {}).get("address"))


def _auth_schema_rights(grant: bool) -> Callable[[Instance], None]:
    """REVOKE or GRANT back supabase_auth_admin's rights (USAGE, CREATE) on the auth schema."""
    statement = ("GRANT ALL ON SCHEMA auth TO supabase_auth_admin" if grant
                 else "REVOKE ALL ON SCHEMA auth FROM supabase_auth_admin")

    def apply(instance: Instance) -> None:
        with engine.db_connect(instance) as conn:
            conn.execute(statement)  # a constant: no input reaches it

    return apply


def _wait_auth_crash(ctx: FaultContext, since: int, logged: str, what: str) -> None:
    """Wait until auth has crashed at least once since `since`, logging `logged`."""
    item = engine.container(ctx.instance, "auth")

    def crash_logged() -> bool:
        item.reload()
        if engine.state_of(item).restart_count < 1:
            return False
        text = item.logs(since=since).decode("utf-8", "replace")
        return logged in text.replace('\\"', '"')

    engine.wait_for(crash_logged, ctx.timeout, f"{item.name} to crash-loop on {what}",
                    lambda: str(engine.state_of(item)))


def _recreate(ctx: FaultContext, services: Sequence[str], *, refresh_gateway: bool) -> None:
    """compose up --force-recreate the services, as after editing their configuration.

    A recreated container usually gets a new address, which Kong 2.8 keeps cached for the
    DNS TTL; refresh_gateway restarts kong afterwards (as an operator would after a heal),
    so the gateway reaches the new containers at once.
    """
    engine.compose(ctx.instance, "up", "-d", "--no-deps", "--force-recreate", *services)
    if refresh_gateway:
        engine.container(ctx.instance, "kong").restart(timeout=5)


def _replace_in_file(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise FleetError(f"{path} does not hold the key to replace")
    write_text(path, text.replace(old, new), mode=path.stat().st_mode & 0o777)


def _edit_registry_record(ctx: FaultContext, creds: Mapping[str, str] | None = None,
                          record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set credentials of the record (or the whole record); the record as it was."""
    with locked(ctx.root):
        registry = json.loads(ctx.registry.read_text(encoding="utf-8"))
        before: dict[str, Any] = json.loads(json.dumps(registry[ctx.instance.id]))
        if record is not None:
            registry[ctx.instance.id] = record
        if creds:
            registry[ctx.instance.id]["credentials"].update(creds)
        write_registry(ctx.registry, registry, manager_exact=ctx.instance.manager_exact)
    return before


def _credential_files(instance: Instance) -> tuple[Path, ...]:
    """The rendered files that hold the instance's secrets and keys."""
    return (instance.env_file, instance.compose_file, instance.kong_file)


def _swap_credentials(ctx: FaultContext, swaps: Mapping[str, str],
                      record: Mapping[str, str]) -> list[str]:
    """Stash the credential files and the registry record, then write new values wherever
    the old ones are held; the compose services whose definition changed."""
    ctx.stash_dir.mkdir(parents=True, exist_ok=True)
    for path in _credential_files(ctx.instance):
        shutil.copy2(path, ctx.stash_dir / path.name)
    before = _edit_registry_record(ctx)
    write_text(ctx.stash_dir / "registry-record.json", json.dumps(before), mode=0o600)
    compose_before = ctx.instance.compose_file.read_text(encoding="utf-8")
    for path in _credential_files(ctx.instance):
        text = path.read_text(encoding="utf-8")
        if not any(old in text for old in swaps):
            raise FleetError(f"{path} holds none of the values to replace")
        for old, new in swaps.items():
            text = text.replace(old, new)
        write_text(path, text, mode=path.stat().st_mode & 0o777)
    _edit_registry_record(ctx, record)
    compose_after = ctx.instance.compose_file.read_text(encoding="utf-8")
    old_services = yaml.safe_load(compose_before)["services"]
    return [name for name, spec in yaml.safe_load(compose_after)["services"].items()
            if old_services.get(name) != spec]


def _restore_credentials(ctx: FaultContext, stash: Path) -> None:
    """Put the stashed credential files and registry record back."""
    for path in _credential_files(ctx.instance):
        write_text(path, (stash / path.name).read_text(encoding="utf-8"), mode=0o600)
    record = json.loads((stash / "registry-record.json").read_text(encoding="utf-8"))
    _edit_registry_record(ctx, record=record)


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
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(self.name, self.description, expect=self.expect)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stash the originals, write the bad key everywhere, recreate the key's readers."""
        creds = ctx.instance.credentials
        bad = (credentials.expired_key("service_role", creds.jwt_secret) if self.expired
               else credentials.wrong_secret_key("service_role"))
        _swap_credentials(ctx, {creds.service_role_key: bad}, {"service_role_key": bad})
        _recreate(ctx, SERVICE_KEY_READERS, refresh_gateway=False)
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
            _restore_credentials(ctx, stash)
            _recreate(ctx, SERVICE_KEY_READERS, refresh_gateway=False)
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
    expect: Expectation | None = None
    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "kong-key-mismatch",
            "put another (valid) service_role key in kong.yml only and restart kong, which then "
            "answers 401 to the env's key (heal: restore kong.yml, restart kong)",
            expect=self.expect)

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
    expect: Expectation | None = None
    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "volume-missing",
            "move volumes-<id>/storage into DIR/.fleet/stash (heal: move it back)",
            expect=self.expect)

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
    expect: Expectation | None = None
    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "port-taken",
            "stop kong, hold its kong_http port with another process, start kong (it fails: "
            "address in use) (heal: end the process, start kong)", expect=self.expect)

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


# The GoTrue setting the empty-setting fault empties: an int, so "" is fatal in envconfig.
EMPTY_SETTING = "GOTRUE_SMTP_PORT"


@dataclass(frozen=True)
class AuthEmptySettingFault:
    """One GOTRUE_* setting set to "" in the compose file: envconfig refuses it at start."""

    setting: str = EMPTY_SETTING
    exclusive_group: str | None = None
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "auth-empty-setting",
            f'set {self.setting} to "" in the compose file (as compose writes an empty .env '
            "value) and recreate auth: GoTrue stops at start with 'Failed to load "
            "configuration' and crash-loops (heal: restore the compose file, recreate auth)",
            expect=self.expect)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stash the compose file, empty the setting, recreate auth."""
        path = ctx.instance.compose_file
        ctx.stash_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, ctx.stash_dir / path.name)
        text = path.read_text(encoding="utf-8")
        line = re.compile(rf"^(?P<key>[ \t]+{re.escape(self.setting)}:)[ \t]*\S.*$",
                          re.MULTILINE)
        if not line.search(text):
            raise FleetError(f"{path} sets no {self.setting}")
        write_text(path, line.sub(lambda m: f'{m.group("key")} ""', text, count=1),
                   mode=path.stat().st_mode & 0o777)
        since = int(time.time())
        _recreate(ctx, ("auth",), refresh_gateway=False)
        return {"stash": str(ctx.stash_dir), "since": since}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """The new auth container has crashed, naming the setting."""
        _wait_auth_crash(ctx, int(data["since"]),
                         f"Failed to load configuration: envconfig.Process: assigning "
                         f"{self.setting} to", "its configuration")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Restore the compose file, recreate auth, wait until the gateway reaches it."""
        if data is not None:
            stash = Path(data["stash"])
            path = ctx.instance.compose_file
            write_text(path, (stash / path.name).read_text(encoding="utf-8"), mode=0o600)
            _recreate(ctx, ("auth",), refresh_gateway=True)
            shutil.rmtree(stash)
        engine.wait_healthy(ctx.instance, ctx.timeout)


# The length of the reference registry's sample secret `jwt_secret_key_123`.
SHORT_SECRET_LENGTH = 18


def _short_key(role: str, secret: str) -> str:
    """An API key as the manager signs them, with a secret PyJWT would warn about."""
    now = datetime.now(UTC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return credentials.sign_key(role, secret, now, now + credentials.KEY_LIFETIME)


@dataclass(frozen=True)
class JwtSecretShortFault:
    """The JWT secret replaced by an 18-byte one everywhere, the keys re-signed with it."""

    exclusive_group: str | None = "service-key"
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        return FaultSpec(
            "jwt-secret-short",
            f"replace the JWT secret by a {SHORT_SECRET_LENGTH}-character one everywhere it "
            "is held (registry, env, compose file), re-sign the anon and service keys with it "
            "(kong.yml too) and recreate every service whose configuration changed: GoTrue and "
            "Kong accept the keys, PostgREST v12 rejects every request carrying one (heal: "
            "restore the originals, recreate)", expect=self.expect)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Stash the files and record, write the short secret and its keys, recreate."""
        creds = ctx.instance.credentials
        secret = credentials.random_secret(SHORT_SECRET_LENGTH)
        anon, service = _short_key("anon", secret), _short_key("service_role", secret)
        changed = _swap_credentials(
            ctx, {creds.jwt_secret: secret, creds.anon_key: anon,
                  creds.service_role_key: service},
            {"jwt_secret": secret, "anon_key": anon, "service_role_key": service})
        _recreate(ctx, changed, refresh_gateway=False)
        return {"stash": str(ctx.stash_dir), "anon_key": anon, "services": changed}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """GoTrue answers through Kong; PostgREST refuses the (correctly signed) anon key."""
        anon = str(data["anon_key"])

        def refused_by_rest() -> bool:
            health = _gateway(ctx, "/auth/v1/health", anon)
            rest = _gateway(ctx, "/rest/v1/", anon)
            if health is None or health.status_code != 200 or rest is None:
                return False
            try:
                body = rest.json()
            except ValueError:
                return False
            return rest.status_code == 401 and isinstance(body, dict) \
                and body.get("code") == "PGRST301"

        engine.wait_for(refused_by_rest, ctx.timeout,
                        "PostgREST to refuse the key signed with the short secret")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Restore the files and record, recreate the same services, wait until healthy."""
        if data is not None:
            stash = Path(data["stash"])
            _restore_credentials(ctx, stash)
            _recreate(ctx, [str(s) for s in data["services"]], refresh_gateway=True)
            shutil.rmtree(stash)
        engine.wait_healthy(ctx.instance, ctx.timeout)


# Each recreated upstream's route through Kong (answers 200 to the anon key when it works).
UPSTREAM_ROUTES = {"auth": "/auth/v1/health", "rest": "/rest/v1/"}
# Where each serves inside the compose network (its compose service's port).
INNER_PORTS = {"auth": 9999, "rest": 3000}
# A log line that shows a service without a Docker healthcheck serves (PostgREST's
# "Schema cache loaded", src/PostgREST/Observation.hs).
_SERVING_LINES = {"rest": "Schema cache loaded"}
HOLDER_LABEL = "ultrabase-fleet.address-holder"
MAX_HOLDERS = 16


def _route_answers(ctx: FaultContext, path: str) -> bool:
    response = _gateway(ctx, path, ctx.instance.credentials.anon_key)
    return response is not None and response.status_code == 200


def _wait_serving(ctx: FaultContext, component: str) -> None:
    """The component runs healthy and, without a healthcheck, has logged that it serves."""
    line = _SERVING_LINES.get(component)

    def serving() -> bool:
        if not engine.component_state(ctx.instance, component).ok:
            return False
        return line is None or line in engine.logs(ctx.instance, component, tail=200)

    engine.wait_for(serving, ctx.timeout, f"{ctx.instance.container_name(component)} to serve",
                    lambda: str(engine.component_state(ctx.instance, component)))


def _hold_address(ctx: FaultContext, address: str) -> list[Container]:
    """Idle containers on the instance's network, started until one holds `address`.

    Docker gives a starting container the lowest free address, so a recreated container
    usually gets its old one back; holding it forces a new one. The holders carry the
    fleet's working-dir label, so `down` removes any that outlive a failure.
    """
    network = engine.network_name(ctx.instance)
    tags = load_state(ctx.root).images
    image = tags.get("kong") or next(iter(tags.values()))
    holders: list[Container] = []
    try:
        for _ in range(MAX_HOLDERS):
            # Any fleet image runs the fleet's Python by absolute path; no healthcheck.
            holder = engine.client().containers.run(
                image, entrypoint=[images.RUNTIME_PYTHON, "-c", "import time; time.sleep(3600)"],
                healthcheck={"test": ["NONE"]}, detach=True,
                init=True, network=network, volumes=list(host_mounts()),
                name=f"ultrabase-fleet-holder-{ctx.instance.id}-{secrets.token_hex(3)}",
                labels={engine.WORKING_DIR_LABEL: str(ctx.instance.core_dir),
                        HOLDER_LABEL: ctx.instance.id})
            holders.append(holder)
            if engine.address(holder, network) == address:
                return holders
    except BaseException:
        _release(holders)
        raise
    _release(holders)
    raise FleetError(f"no holder got {address} on {network} in {MAX_HOLDERS} tries")


def _release(holders: list[Container]) -> None:
    for holder in holders:
        with contextlib.suppress(NotFound):
            holder.remove(force=True)


@dataclass(frozen=True)
class RecreateFault:
    """An upstream of Kong recreated with a new address while Kong keeps the old one."""

    component: str
    exclusive_group: str | None = None
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        c = self.component
        return FaultSpec(
            f"recreate:{c}",
            f"recreate {c} (compose up -d --force-recreate --no-deps {c}) with a new address "
            f"while kong keeps the old one in its DNS cache: {c} serves, "
            f"{UPSTREAM_ROUTES[c]} through the gateway times out or answers 502 until the "
            "cached answer expires (heal: restart kong)", expect=self.expect)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Restart kong and let it cache the current address, then recreate elsewhere."""
        path = UPSTREAM_ROUTES[self.component]
        # A fresh kong caches the address on its first request, for a full TTL: the
        # symptom then lasts as long as Kong's own cache would keep it.
        engine.container(ctx.instance, "kong").restart(timeout=5)
        engine.wait_for(lambda: _route_answers(ctx, path), ctx.timeout,
                        f"Kong to proxy {path} after its restart")
        network = engine.network_name(ctx.instance)
        item = engine.container(ctx.instance, self.component)
        old = engine.address(item, network)
        if old is None:
            raise FleetError(f"{item.name} has no address on {network}")
        item.stop(timeout=10)
        holders = _hold_address(ctx, old)
        try:
            engine.compose(ctx.instance, "up", "-d", "--no-deps", "--force-recreate",
                           self.component)
        finally:
            _release(holders)
        new = engine.address(engine.container(ctx.instance, self.component), network)
        if new == old:
            raise FleetError(f"{self.component} kept its address {old}")
        return {"old_address": old, "new_address": new}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """The service serves again; its route through Kong does not answer."""
        _wait_serving(ctx, self.component)
        path = UPSTREAM_ROUTES[self.component]
        engine.wait_for(lambda: not _route_answers(ctx, path), ctx.timeout,
                        f"{path} to fail through Kong")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Restart kong (it resolves again); wait until the route answers."""
        path = UPSTREAM_ROUTES[self.component]
        if data is not None or not _route_answers(ctx, path):
            engine.container(ctx.instance, "kong").restart(timeout=5)
        _wait_serving(ctx, self.component)
        engine.wait_for(lambda: _route_answers(ctx, path), ctx.timeout,
                        f"{path} to answer through Kong")


def expect(codes: str, component: str | None, repair: str | None) -> Expectation:
    """An expectation from "CODE" or "CODE|OTHER" (any of them is right)."""
    return Expectation(frozenset(codes.split("|")), component, repair)


def _down(component: str) -> Expectation:
    """A stopped or paused (hung) component: start (or unpause) it.

    The db's unreachability is what its users see; either name for it is right.
    """
    codes = "CONTAINER_NOT_RUNNING|DB_UNREACHABLE" if component == "db" \
        else "CONTAINER_NOT_RUNNING"
    return expect(codes, component, "start_container")


def _aliases(item: Container, network: str) -> list[str]:
    """The names the container answers to on network besides its container name."""
    item.reload()
    found = (item.attrs.get("NetworkSettings", {}).get("Networks") or {}).get(network) or {}
    return list(found.get("Aliases") or [])


@dataclass(frozen=True)
class AliasLostFault:
    """An upstream of Kong back on its network without its compose alias: it serves, but
    its service name no longer resolves there (a link fault with both ends healthy)."""

    component: str
    exclusive_group: str | None = None
    expect: Expectation | None = None

    @property
    def spec(self) -> FaultSpec:
        """Name and description."""
        c = self.component
        return FaultSpec(
            f"alias-lost:{c}",
            f"disconnect {c} from the instance network and connect it again the way `docker "
            f"network connect` does by default, without the alias compose gave it: {c} runs, "
            f"serves and reaches the db, its container name resolves, but the name {c!r} "
            "that Kong and the other services use does not; Kong keeps the address it "
            "cached until its DNS answer expires (heal: reconnect with the aliases compose "
            "gave it, restart kong if its route still fails)", expect=self.expect)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Reconnect the container without its aliases; remember them for the heal."""
        network = engine.network_name(ctx.instance)
        item = engine.container(ctx.instance, self.component)
        aliases = _aliases(item, network)
        if self.component not in aliases:
            raise FleetError(f"{item.name} has no alias {self.component!r} on {network}")
        net = engine.client().networks.get(network)
        net.disconnect(item)
        # Docker resolves a container's name on a user-defined network by itself.
        net.connect(item)
        return {"aliases": [a for a in aliases if a != (item.id or "")[:12]]}

    def await_symptom(self, ctx: FaultContext, data: dict[str, Any]) -> None:
        """The alias is gone and the service answers at its container name inside the
        network (the first tries after a new address may time out)."""
        network = engine.network_name(ctx.instance)
        item = engine.container(ctx.instance, self.component)
        engine.wait_for(lambda: self.component not in _aliases(item, network), ctx.timeout,
                        f"{self.component} to lose its alias")
        _wait_serving(ctx, self.component)
        kong = engine.container(ctx.instance, "kong")
        # busybox's own `timeout` bounds wget (Debian's static busybox crashes on wget -T).
        argv = ["timeout", "5", "wget", "-q", "-O", "/dev/null",
                f"http://{item.name}:{INNER_PORTS[self.component]}/"]
        engine.wait_for(lambda: kong.exec_run(argv).exit_code == 0, ctx.timeout,
                        f"{item.name} to answer inside the network")

    def undo(self, ctx: FaultContext, data: dict[str, Any] | None) -> None:
        """Reconnect with the aliases; restart kong if it still holds "not found"."""
        network = engine.network_name(ctx.instance)
        item = engine.container(ctx.instance, self.component)
        if self.component not in _aliases(item, network):
            aliases = list((data or {}).get("aliases") or [self.component, item.name])
            net = engine.client().networks.get(network)
            net.disconnect(item)
            net.connect(item, aliases=aliases)
        _wait_serving(ctx, self.component)
        path = UPSTREAM_ROUTES[self.component]
        if not _route_answers(ctx, path):
            # Kong keeps a name error for KONG_DNS_NOT_FOUND_TTL (30 s, kongdns.py).
            engine.container(ctx.instance, "kong").restart(timeout=5)
        engine.wait_for(lambda: _route_answers(ctx, path), ctx.timeout,
                        f"{path} to answer through Kong")


def _catalogue() -> dict[str, Fault]:
    faults: list[Fault] = []
    faults += [StopFault(c, expect=_down(c)) for c in COMPONENTS]
    # Docker's proxy still accepts on a paused container's port: hung, never a conflict.
    faults += [PauseFault(c, expect=_down(c)) for c in COMPONENTS]
    faults += [
        AuthStartFault(
            "auth-db-password",
            "change supabase_auth_admin's DB password and restart auth, which crash-loops on "
            "'password authentication failed' (heal: set it back, restart auth)",
            change=lambda i: _set_role_password(i, "supabase_auth_admin",
                                                credentials.random_secret(32)),
            revert=lambda i: _set_role_password(i, "supabase_auth_admin",
                                                i.credentials.postgres_password),
            logged=AUTH_DB_ERROR, what="its DB login",
            expect=expect("DB_ROLE_PASSWORD_MISMATCH", "db", "sync_db_role_passwords")),
        ServiceKeyFault("service-key-wrong-secret",
                        "replace the service_role key everywhere it is held (registry, env, "
                        "compose file, kong.yml) by one signed with another secret and "
                        "recreate its readers: Kong accepts it, GoTrue rejects it "
                        "(403 bad_jwt) (heal: restore the originals, recreate)", expired=False,
                        expect=expect("JWT_SECRET_MISMATCH", "auth", "regenerate_jwt_keys")),
        ServiceKeyFault("service-key-expired",
                        "as service-key-wrong-secret, with a key signed with the right "
                        "secret whose exp is in the past", expired=True,
                        expect=expect("JWT_KEY_EXPIRED", "auth", "regenerate_jwt_keys")),
        KongKeyMismatchFault(
            expect=expect("GATEWAY_KEY_REJECTED", "kong", "sync_gateway_keys")),
        VolumeMissingFault(expect=expect("VOLUME_MISSING", "storage", None)),
        PortTakenFault(expect=expect("PORT_CONFLICT", "kong", None)),
        AuthStartFault(
            "auth-schema-rights",
            "revoke supabase_auth_admin's rights on the auth schema and restart auth: it logs "
            "in, but its migrations fail ('no schema has been selected to create in', SQLSTATE "
            "3F000) and it crash-loops; the password is right (heal: grant them back, restart "
            "auth)",
            change=_auth_schema_rights(grant=False), revert=_auth_schema_rights(grant=True),
            logged="(SQLSTATE 3F000)", what="its migrations",
            expect=expect("AUTH_MIGRATION_FAILED", "auth", None)),
        AuthEmptySettingFault(expect=expect("AUTH_CONFIG_INVALID", "auth", None)),
        JwtSecretShortFault(expect=expect("JWT_SECRET_WEAK", "auth", None)),
        # A new address while Kong's DNS cache holds the old one: the link is at fault, the
        # service is healthy; restarting kong makes it resolve again.
        *(RecreateFault(c, expect=expect("GATEWAY_UPSTREAM_STALE", "kong", "restart_component"))
          for c in UPSTREAM_ROUTES),
        # rest serves at its container name, its service name does not resolve: the link
        # kong->rest is at fault; recreating rest attaches it with its aliases.
        AliasLostFault("rest", expect=expect("INTERNAL_LINK_DOWN", "rest", "recreate_container")),
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
