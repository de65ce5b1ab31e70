"""Docker and compose access for the fleet: client, compose runner, states and waits."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import docker
import httpx
import psycopg
from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from fleet.model import COMPONENTS, FleetError, Instance

T = TypeVar("T")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


@functools.cache
def client() -> docker.DockerClient:
    """The Docker client (DOCKER_HOST or the default socket); FleetError if unreachable."""
    try:
        result = docker.from_env(timeout=60)
        result.ping()
    except DockerException as exc:
        raise FleetError(f"cannot reach the Docker engine: {exc}") from None
    return result


@functools.cache
def compose_command() -> tuple[str, ...]:
    """A Compose v2 command: docker-compose next to this Python, on PATH, or `docker compose`."""
    candidates: list[tuple[str, ...]] = []
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.exists():
        candidates.append((str(beside),))
    found = shutil.which("docker-compose")
    if found:
        candidates.append((found,))
    docker_cli = shutil.which("docker")
    if docker_cli:
        candidates.append((docker_cli, "compose"))
    for command in candidates:
        probe = subprocess.run([*command, "version", "--short"], capture_output=True,
                               text=True, check=False, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2"):
            return command
    raise FleetError("no Compose v2 found (docker-compose v2 or the docker compose plugin)")


def compose(instance: Instance, *args: str, timeout: float = 180.0) -> str:
    """Run compose on the instance's rendered files as the manager does; its stdout."""
    command = [*compose_command(), "-p", instance.project, "-f", str(instance.compose_file),
               "--env-file", str(instance.env_file), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    try:
        done = subprocess.run(command, cwd=instance.core_dir, capture_output=True, text=True,
                              check=False, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise FleetError(f"compose {' '.join(args)} for {instance.id} timed out") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise FleetError(f"compose {' '.join(args)} for {instance.id} failed:\n{tail}")
    return done.stdout


def containers(instance: Instance) -> dict[str, Container]:
    """The instance's containers by compose service."""
    found = client().containers.list(all=True,
                                     filters={"label": f"{PROJECT_LABEL}={instance.project}"})
    return {c.labels.get(SERVICE_LABEL, c.name or ""): c for c in found}


def container(instance: Instance, component: str) -> Container:
    """One component's container; FleetError when it does not exist."""
    try:
        return client().containers.get(instance.container_name(component))
    except NotFound:
        raise FleetError(f"{instance.container_name(component)} does not exist") from None


def network_name(instance: Instance) -> str:
    """The instance's compose network (the project's default network)."""
    return f"{instance.project}_default"


def address(item: Container, network: str) -> str | None:
    """The container's IPv4 address on network, from a fresh inspect (never dialled)."""
    item.reload()
    found = (item.attrs.get("NetworkSettings", {}).get("Networks") or {}).get(network) or {}
    return found.get("IPAddress") or None


@dataclass(frozen=True)
class ContainerState:
    """Docker's view of one container."""

    status: str  # created, running, paused, restarting, exited, dead, missing
    health: str | None  # starting, healthy, unhealthy, or None without a healthcheck
    restart_count: int

    @property
    def ok(self) -> bool:
        """Running, and healthy when it has a healthcheck."""
        return self.status == "running" and self.health in (None, "healthy")


def state_of(item: Container) -> ContainerState:
    """Status, health and restart count from an inspect."""
    state = item.attrs.get("State", {})
    health = state.get("Health")
    return ContainerState(status=str(state.get("Status", "unknown")),
                          health=str(health["Status"]) if health else None,
                          restart_count=int(item.attrs.get("RestartCount", 0)))


def component_state(instance: Instance, component: str) -> ContainerState:
    """The current state of one component (status "missing" when there is no container)."""
    try:
        item = client().containers.get(instance.container_name(component))
    except NotFound:
        return ContainerState("missing", None, 0)
    return state_of(item)


def gateway_get(instance: Instance, path: str, key: str, *,
                timeout: float = 5.0) -> httpx.Response:
    """GET through Kong on 127.0.0.1 with `key` as apikey and bearer token."""
    return httpx.get(f"{instance.gateway_url}{path}", timeout=timeout,
                     headers={"apikey": key, "Authorization": f"Bearer {key}"})


def db_connect(instance: Instance, user: str = "supabase_admin", password: str | None = None,
               timeout: int = 5) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the instance's published db port on 127.0.0.1 (autocommit)."""
    return psycopg.connect(host="127.0.0.1", port=instance.ports.postgres_ext, user=user,
                           password=password or instance.credentials.postgres_password,
                           dbname="postgres", connect_timeout=timeout, autocommit=True)


# Routes that answer 200 to the anon key once auth and rest serve behind Kong.
GATEWAY_READY_PATHS = ("/auth/v1/health", "/rest/v1/")


def health_problems(instance: Instance, ignore: Collection[str] = ()) -> list[str]:
    """What keeps the instance from being healthy (empty when it is healthy); components in
    `ignore` (which cannot start by design, as in --manager-exact) are not looked at."""
    problems: list[str] = []
    found = containers(instance)
    for component in COMPONENTS:
        if component in ignore:
            continue
        item = found.get(component)
        if item is None:
            problems.append(f"{component}: no container")
            continue
        state = state_of(item)
        if not state.ok:
            problems.append(f"{component}: {state.status}"
                            + (f" ({state.health})" if state.health else ""))
    if problems:
        return problems
    # rest has no healthcheck: running is not answering, so it is asked through Kong too.
    for path in GATEWAY_READY_PATHS:
        try:
            response = gateway_get(instance, path, instance.credentials.anon_key)
            if response.status_code != 200:
                problems.append(f"gateway {path} answered {response.status_code}")
        except httpx.HTTPError as exc:
            problems.append(f"gateway {path}: {type(exc).__name__}")
    try:
        with db_connect(instance, timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        problems.append(f"db login on 127.0.0.1:{instance.ports.postgres_ext}: "
                        f"{type(exc).__name__}")
    return problems


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             describe: Callable[[], str] | None = None, interval: float = 0.5) -> T:
    """Poll `check` until it returns a truthy value; FleetError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f": {describe()}" if describe else ""
            raise FleetError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def wait_healthy(instance: Instance, timeout: float = 120.0,
                 ignore: Collection[str] = ()) -> None:
    """Wait until every container runs (healthy where checked), Kong and the db answer."""
    last: list[str] = []

    def check() -> bool:
        last[:] = health_problems(instance, ignore)
        return not last

    wait_for(check, timeout, f"instance {instance.id} to be healthy",
             lambda: "; ".join(last), interval=1.0)


def logs(instance: Instance, component: str, tail: int = 200) -> str:
    """The last lines of a component's log (stdout and stderr)."""
    raw: bytes = container(instance, component).logs(tail=tail, stdout=True, stderr=True)
    return raw.decode("utf-8", "replace")


def report(instance: Instance, components: Sequence[str] = COMPONENTS, tail: int = 15) -> str:
    """Container states, and the log tail of every container that is not ok."""
    lines: list[str] = []
    found = containers(instance)
    for component in components:
        item = found.get(component)
        if item is None:
            lines.append(f"  {component}: missing")
            continue
        state = state_of(item)
        lines.append(f"  {component}: {state.status} health={state.health} "
                     f"restarts={state.restart_count}")
        if not state.ok:
            text = item.logs(tail=tail).decode("utf-8", "replace").rstrip()
            lines.extend(f"    | {line}" for line in text.splitlines())
    return "\n".join(lines)
