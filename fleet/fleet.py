"""The fleet: create N instances in the Ultrabase layout, break and heal them, tear down."""

from __future__ import annotations

import compileall
import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from docker import DockerClient
from docker.errors import APIError, NotFound
from docker.models.networks import Network

from fleet import engine, faults, images, ports, render, state
from fleet.credentials import manager_credentials, new_credentials, random_secret
from fleet.faults import FaultContext
from fleet.model import (
    COMPONENTS,
    FaultResult,
    FaultSpec,
    FleetError,
    Instance,
    Ports,
    UpResult,
)

log = logging.getLogger("fleet")

UP_TIMEOUT = 170.0
BREAK_TIMEOUT = 90.0
HEAL_TIMEOUT = 120.0
NETWORK_REMOVE_TIMEOUT = 30.0
NETWORK_ROOT_LABEL = "ultrabase-fleet.root"


class Fleet:
    """A fleet of instances under one root directory."""

    def __init__(self, root: Path, up_result: UpResult | None = None) -> None:
        """Open the fleet at `root` (see `Fleet.open`)."""
        self.root = root.resolve()
        self._state = state.load(self.root)
        self.up_result = up_result

    # -- creation and lookup --

    @classmethod
    def open(cls, root: Path) -> Fleet:
        """The existing fleet at `root`; FleetError when there is none."""
        return cls(Path(root))

    @classmethod
    def up(cls, root: Path, count: int = 2, *, timeout: float = UP_TIMEOUT,
           keep_on_failure: bool = False,
           health_interval: str = render.DEFAULT_HEALTH_INTERVAL,
           kong_dns_ttl: int | None = None, manager_exact: bool = False,
           port_range: range = ports.PORT_RANGE) -> Fleet:
        """Create `count` healthy instances under `root` (absent or empty); the fleet.

        manager_exact writes the files exactly as the real Ultrabase manager does, its
        defects included (fleet/README.md, "--manager-exact"): every pooler after the first
        cannot bind host port 5432, so those instances come up without their pooler, with
        registry status "error" when compose reported the failure, as the manager records
        a failed compose up ("running" when compose printed the error but exited 0).

        health_interval ("10s") is every Docker healthcheck's interval. kong_dns_ttl, when
        given, is how many seconds Kong keeps a DNS answer (KONG_DNS_VALID_TTL, fleet-only);
        without it Kong keeps Docker's answers for their TTL, 600 s, as in production.
        port_range is where the instances' host ports are picked (ports.share() gives
        processes that make fleets side by side parts of their own).

        On failure everything created is removed (unless keep_on_failure) and FleetError
        carries the containers' states and log tails.
        """
        root = Path(root).resolve()
        _check_up_arguments(root, count, health_interval, kong_dns_ttl)
        started = time.monotonic()
        client = engine.client()
        engine.compose_command()
        # The containers mount fleet/ read-only: byte-compile the stand-ins once here, or
        # every start and every `kong health` would compile them again.
        compileall.compile_dir(render.FLEET_DIR, quiet=1)
        admin_token = secrets.token_urlsafe(32)
        with images.in_use():
            tags = images.ensure_images(client)
            log.info("component images %s", ", ".join(sorted(set(tags.values()))))
            root.mkdir(parents=True, exist_ok=True)
            instances = _new_instances(root, count, manager_exact, port_range)
            state.save(state.FleetState(root=root, images=tags, instances=instances,
                                        faults={}))
            try:
                _render(root, tags, instances, admin_token, health_interval, kong_dns_ttl)
                outcomes = _start_all(instances, started + timeout)
                if manager_exact:
                    _record_outcomes(root, instances, outcomes)
            except BaseException as exc:
                if keep_on_failure:
                    raise
                _remove_failed(root)
                if isinstance(exc, FleetError) or not isinstance(exc, Exception):
                    raise
                raise FleetError(f"up failed: {exc!r}") from exc
        result = UpResult(root=root, instances=tuple(i.id for i in instances),
                          config=root / "doctor.yaml", admin_token=admin_token,
                          seconds=time.monotonic() - started)
        log.info("fleet of %d up in %.1fs", count, result.seconds)
        return cls(root, result)

    @property
    def instances(self) -> tuple[Instance, ...]:
        """The instances, as created."""
        return self._state.instances

    @property
    def ids(self) -> tuple[str, ...]:
        """The instance ids."""
        return tuple(i.id for i in self._state.instances)

    @property
    def image_tags(self) -> dict[str, str]:
        """The image tag of each component."""
        return dict(self._state.images)

    @property
    def config_path(self) -> Path:
        """The ultrabase-doctor config file."""
        return self.root / "doctor.yaml"

    @property
    def registry_path(self) -> Path:
        """instances.json."""
        return self.root / "instances.json"

    @property
    def core_dir(self) -> Path:
        """supabase-core, holding env files, compose files and volumes."""
        return self.root / "supabase-core"

    def instance(self, instance_id: str) -> Instance:
        """One instance; FleetError for an unknown id."""
        return self._state.instance(instance_id)

    def active_faults(self) -> dict[str, tuple[str, ...]]:
        """Recorded faults per instance id."""
        self._state = state.load(self.root)
        return {k: tuple(v) for k, v in self._state.faults.items() if v}

    def holder_pids(self) -> tuple[int, ...]:
        """Pids of the processes holding ports for active port-taken faults."""
        self._state = state.load(self.root)
        return tuple(self._state.holder_pids())

    def wait_healthy(self, instance_id: str, timeout: float = HEAL_TIMEOUT) -> None:
        """Wait until the instance is healthy (containers, gateway and db)."""
        engine.wait_healthy(self.instance(instance_id), timeout)

    # -- faults --

    @staticmethod
    def faults() -> tuple[FaultSpec, ...]:
        """Every fault's name and description."""
        return faults.specs()

    def break_(self, instance_id: str, fault: str, *,
               timeout: float = BREAK_TIMEOUT) -> FaultResult:
        """Inject `fault` into the instance and wait until its symptom shows."""
        started = time.monotonic()
        instance = self.instance(instance_id)
        kind = faults.get(fault)
        with state.locked(self.root, f"instance-{instance_id}"):
            active = self._recorded(instance_id)
            if fault in active:
                return FaultResult(instance_id, fault, "break", False,
                                   time.monotonic() - started, "already broken")
            clash = [name for name in active if kind.exclusive_group is not None
                     and faults.get(name).exclusive_group == kind.exclusive_group]
            if clash:
                raise FleetError(f"{fault} cannot be combined with active {clash[0]} on "
                                 f"{instance_id}; heal it first")
            ctx = self._context(instance, fault, timeout)
            data = kind.inject(ctx)
            self._record(instance_id, fault, data)
            kind.await_symptom(ctx, data)
        log.info("%s: %s broken", instance_id, fault)
        return FaultResult(instance_id, fault, "break", True, time.monotonic() - started)

    def heal(self, instance_id: str, fault: str, *,
             timeout: float = HEAL_TIMEOUT) -> FaultResult:
        """Undo `fault` and wait until the instance is healthy again."""
        started = time.monotonic()
        instance = self.instance(instance_id)
        kind = faults.get(fault)
        with state.locked(self.root, f"instance-{instance_id}"):
            data = self._recorded(instance_id).get(fault)
            ctx = self._context(instance, fault, timeout)
            kind.undo(ctx, data)
            if data is not None:
                self._record(instance_id, fault, None)
            engine.wait_healthy(instance, max(5.0, timeout - (time.monotonic() - started)))
        log.info("%s: %s healed", instance_id, fault)
        return FaultResult(instance_id, fault, "heal", data is not None,
                           time.monotonic() - started)

    @contextlib.contextmanager
    def broken(self, instance_id: str, fault: str) -> Iterator[FaultResult]:
        """Break on entry, heal on exit (also when the body fails)."""
        result = self.break_(instance_id, fault)
        try:
            yield result
        finally:
            self.heal(instance_id, fault)

    def _context(self, instance: Instance, fault: str, timeout: float) -> FaultContext:
        stash = state.state_dir(self.root) / "stash" / instance.id / fault.replace(":", "-")
        return FaultContext(root=self.root, instance=instance, stash_dir=stash,
                                   timeout=timeout)

    def _recorded(self, instance_id: str) -> dict[str, dict[str, object]]:
        self._state = state.load(self.root)
        return dict(self._state.faults.get(instance_id, {}))

    def _record(self, instance_id: str, fault: str, data: dict[str, object] | None) -> None:
        with state.locked(self.root):
            current = state.load(self.root)
            entries = dict(current.faults.get(instance_id, {}))
            if data is None:
                entries.pop(fault, None)
            else:
                entries[fault] = data
            current.faults[instance_id] = entries
            state.save(current)
            self._state = current

    # -- teardown --

    def down(self) -> None:
        """Remove every container, network, holder process and file of the fleet."""
        teardown(self.root)


def manager_time(moment: datetime) -> str:
    """A time as the manager writes it (JavaScript's toISOString: milliseconds, Z)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _check_up_arguments(root: Path, count: int, health_interval: str,
                        kong_dns_ttl: int | None) -> None:
    """FleetError for arguments `up` cannot use; nothing is created before this passes."""
    if count < 1:
        raise FleetError("a fleet needs at least one instance")
    if not render.HEALTH_INTERVAL.match(health_interval):
        raise FleetError(f"health interval {health_interval!r} is not like 2s or 10s")
    if kong_dns_ttl is not None and not 1 <= kong_dns_ttl <= 3600:
        raise FleetError(f"kong DNS TTL {kong_dns_ttl} is not between 1 and 3600 seconds")
    if state.is_fleet_root(root) or (root / "instances.json").exists():
        raise FleetError(f"a fleet already exists at {root}; run `down` first")
    if root.exists() and any(root.iterdir()):
        raise FleetError(f"{root} is not empty; give a new or empty directory")


def _remove_failed(root: Path) -> None:
    """Tear down what a failed `up` created, its images kept for the next attempt (and
    `up` still holds them in use); a failing cleanup is logged, not raised."""
    try:
        teardown(root, remove_images=False)
    except FleetError as cleanup_error:
        log.error("cleanup after the failed up also failed: %s", cleanup_error)


# --manager-exact: who creates each instance, in turn (the review's runs: admin's project,
# then one by a registered user with an organization of its own).
_MANAGER_CREATORS = (("admin", "Default Organization"), ("alice", "Alice Org"))


def _new_instances(root: Path, count: int, manager_exact: bool = False,
                   port_range: range = ports.PORT_RANGE) -> tuple[Instance, ...]:
    # The plain listing: containers.list() inspects each one, and on a shared host another
    # fleet's container may be gone by then.
    taken = {(c.get("Labels") or {}).get(engine.PROJECT_LABEL, "")
             for c in engine.client().api.containers(all=True)}
    ids: list[str] = []
    while len(ids) < count:
        candidate = secrets.token_hex(4)
        if candidate not in ids and f"supabase-{candidate}" not in taken:
            ids.append(candidate)
    free = ports.free_ports(5 * count, within=port_range)
    created = datetime.now(UTC)
    stamp = manager_time(created) if manager_exact else created.strftime("%Y-%m-%dT%H:%M:%SZ")
    instances = []
    for n, instance_id in enumerate(ids):
        p = free[5 * n:5 * n + 5]
        owner, organization = (_MANAGER_CREATORS[n % 2] if manager_exact
                               else ("admin", "Fleet Organization"))
        instances.append(Instance(
            id=instance_id, name=f"Fleet instance {n + 1}", created_at=stamp,
            ports=Ports(kong_http=p[0], kong_https=p[1], postgres_ext=p[2], supavisor=p[3],
                        analytics=p[4]),
            credentials=(manager_credentials(created) if manager_exact
                         else new_credentials(created)),
            core_dir=root / "supabase-core", owner=owner, organization=organization,
            manager_exact=manager_exact))
    return tuple(instances)


def _render(root: Path, tags: dict[str, str], instances: tuple[Instance, ...],
            admin_token: str, health_interval: str, kong_dns_ttl: int | None) -> None:
    for instance in instances:
        values = render.template_values(instance, image_tags=tags, root=root,
                                        secret_key_base=random_secret(64),
                                        health_interval=health_interval,
                                        kong_dns_ttl=kong_dns_ttl)
        render.render_instance_files(instance, values)
    exact = any(i.manager_exact for i in instances)
    # The manager saves the record with status "creating" before it runs generate.bash.
    render.write_registry(root / "instances.json",
                          {i.id: render.registry_record(i, "creating" if exact else "running")
                           for i in instances}, manager_exact=exact)
    render.write_users(root / "users.json", instances, manager_exact=exact)
    render.write_doctor_config(root / "doctor.yaml", root, admin_token)


# (status, updated_at, error_message) as the manager records the outcome of generate.bash.
Outcome = tuple[str, str | None, str | None]
_PORT_TAKEN = ("port is already allocated", "address already in use")


def _record_outcomes(root: Path, instances: tuple[Instance, ...],
                     outcomes: dict[str, Outcome]) -> None:
    """Rewrite instances.json with each instance's outcome, as the manager does."""
    render.write_registry(root / "instances.json", {
        i.id: {**render.registry_record(i, *outcomes[i.id][:2]),
               **({"error_message": outcomes[i.id][2]} if outcomes[i.id][2] else {})}
        for i in instances}, manager_exact=True)


def _compose_up(instance: Instance, deadline: float) -> tuple[str | None, set[str]]:
    """compose up -d, as generate.bash ends; compose's error and the components that could
    not start because a host port was taken (--manager-exact only: otherwise it raises).

    The manager runs generate.bash up to 3 times (server.js executeWithRetry), each run
    starting what the previous left created; here the rest is started at once by name,
    which ends in the same state without the manager's 5 s and 10 s pauses. Compose (seen
    with v2.40) may print a container's start error and still exit 0: the manager then
    records success, and the containers left created are found all the same.
    """
    error: str | None = None
    try:
        engine.compose(instance, "up", "-d", timeout=max(10.0, deadline - time.monotonic()))
    except FleetError as exc:
        if not instance.manager_exact:
            raise
        error = str(exc)
    stuck = _unstartable(instance) if instance.manager_exact else set()
    if not stuck:
        if error is not None:
            raise FleetError(error)
        return None, set()
    log.info("%s: %s cannot start (a host port is taken); starting the rest", instance.id,
             ", ".join(sorted(stuck)))
    engine.compose(instance, "up", "-d", *(c for c in COMPONENTS if c not in stuck),
                   timeout=max(10.0, deadline - time.monotonic()))
    return error, stuck


def _unstartable(instance: Instance) -> set[str]:
    """Components whose container was created but could not start: a host port taken."""
    out: set[str] = set()
    for component, item in engine.containers(instance).items():
        error = str((item.attrs.get("State") or {}).get("Error") or "")
        if item.status == "created" and any(word in error for word in _PORT_TAKEN):
            out.add(component)
    return out


def _start_all(instances: tuple[Instance, ...], deadline: float) -> dict[str, Outcome]:
    """Start every instance at once; each one's outcome as the manager records it."""
    def start(instance: Instance) -> Outcome:
        began = time.monotonic()
        log.info("%s: compose up", instance.id)
        try:
            error, ignore = _compose_up(instance, deadline)
            engine.wait_healthy(instance, max(5.0, deadline - time.monotonic()), ignore)
        except FleetError as exc:
            raise FleetError(f"{exc}\ncontainers of {instance.id}:\n"
                             f"{engine.report(instance)}") from None
        log.info("%s: healthy after %.1fs%s", instance.id, time.monotonic() - began,
                 f" except {', '.join(sorted(ignore))}" if ignore else "")
        updated = manager_time(datetime.now(UTC))
        if error is None:
            return "running", updated, None
        # execAsync's message: "Command failed: <command>\n<stderr>", wrapped by the manager.
        return ("error", updated, "Erro ao executar generate.bash: Command failed: "
                f'cd "{instance.core_dir}" && bash generate.bash\n{error}')

    with ThreadPoolExecutor(max_workers=len(instances)) as pool:
        futures = {i.id: pool.submit(start, i) for i in instances}
        errors = [str(f.exception()) for f in futures.values() if f.exception() is not None]
    if errors:
        raise FleetError("the fleet did not come up:\n" + "\n".join(errors))
    return {key: future.result() for key, future in futures.items()}


def teardown(root: Path, *, remove_images: bool = True) -> None:
    """Remove the fleet at `root`: holders, containers, networks, its images if unused
    (and remove_images), DIR.

    A root that does not exist is a no-op; a directory without fleet state is refused.
    """
    root = Path(root).resolve()
    if not root.exists():
        return
    if not state.is_fleet_root(root):
        raise FleetError(f"{root} holds no fleet (no .fleet/state.json); not removing it")
    try:
        current: state.FleetState | None = state.load(root)
    except FleetError:
        current = None
    for pid in current.holder_pids() if current else []:
        ports.stop_holder(pid)
    client = engine.client()
    projects = {i.project for i in current.instances} if current else set()
    _remove_containers(client, root, projects)
    _remove_networks(client, root, projects)
    _remove_volumes(client, projects)
    for tag in sorted(set(current.images.values())) if current and remove_images else []:
        if not images.remove_image(client, tag):
            log.info("image %s kept: other containers still use it", tag)
    shutil.rmtree(root)
    log.info("removed %s", root)


def _project_labels(projects: set[str]) -> list[str]:
    """The compose project label filter of each project."""
    return [f"{engine.PROJECT_LABEL}={project}" for project in sorted(projects)]


def _remove_containers(client: DockerClient, root: Path, projects: set[str]) -> None:
    """Remove the containers of the fleet's working directory and of its compose projects."""
    labels = [f"{engine.WORKING_DIR_LABEL}={root / 'supabase-core'}", *_project_labels(projects)]
    # The plain listing (containers.list() inspects each one, and a container may go
    # meanwhile: one started with auto-remove, or removed by another process).
    found = {c["Id"]: c for label in labels
             for c in client.api.containers(all=True, filters={"label": label})}
    log.info("removing %d containers", len(found))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(partial(_remove_container, client), found.values()))


def _remove_networks(client: DockerClient, root: Path, projects: set[str]) -> None:
    """Remove the fleet's own networks and its compose projects' networks."""
    labels = [f"{NETWORK_ROOT_LABEL}={root}", *_project_labels(projects)]
    networks = {n.id: n for label in labels
                for n in client.networks.list(filters={"label": label})}
    for network in networks.values():
        _remove_network(client, network, time.monotonic() + NETWORK_REMOVE_TIMEOUT)


def _remove_volumes(client: DockerClient, projects: set[str]) -> None:
    """Remove the compose projects' volumes; one that will not go is logged."""
    # The manager's template declares a named volume (db-data-<id>) that compose creates.
    for label in _project_labels(projects):
        for volume in client.volumes.list(filters={"label": label}):
            try:
                volume.remove(force=True)
            except NotFound:
                pass
            except APIError as exc:
                log.error("cannot remove volume %s: %s", volume.name, exc)


def _remove_network(client: DockerClient, network: Network, deadline: float) -> None:
    """Remove a network, first removing what is still attached to it.

    The engine releases a removed container's endpoint a moment later, and a container
    recreated during a test may hold one: "has active endpoints" is retried until deadline.
    """
    while True:
        try:
            network.remove()
            return
        except NotFound:
            return
        except APIError as exc:
            if "active endpoints" not in str(exc) or time.monotonic() > deadline:
                raise FleetError(f"cannot remove network {network.name}: {exc}") from None
        with contextlib.suppress(NotFound):
            network.reload()
            for key, endpoint in (network.attrs.get("Containers") or {}).items():
                _remove_container(client, {"Id": key})
                # An endpoint the engine kept after its container went (seen under load;
                # listed as "ep-<id>") only goes with a forced disconnect, which finds it by
                # its name, the container's (moby's ForceEndpointDelete: EndpointByName).
                name = (endpoint or {}).get("Name") or key
                with contextlib.suppress(APIError):
                    client.api.disconnect_container_from_network(name, network.id or "",
                                                                 force=True)
        time.sleep(0.5)


def _remove_container(client: DockerClient, item: Mapping[str, Any]) -> None:
    """Remove one container of a plain listing (unpaused first); gone already is fine."""
    names = item.get("Names") or [item["Id"][:12]]
    try:
        if item.get("State") == "paused":
            client.api.unpause(item["Id"])
        client.api.remove_container(item["Id"], v=True, force=True)
    except NotFound:
        pass
    except APIError as exc:
        raise FleetError(f"cannot remove container {names[0].lstrip('/')}: {exc}") from None
