"""Read access to the Docker engine: one listing call per sweep, typed container models."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import docker
import docker.errors
import requests.exceptions

from exporter.errors import DockerUnavailableError

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_DEPENDS_ON = "com.docker.compose.depends_on"
COMPOSE_WORKING_DIR = "com.docker.compose.project.working_dir"
COMPOSE_CONFIG_FILES = "com.docker.compose.project.config_files"


@dataclass(frozen=True)
class PublishedPort:
    """A container port published on the host."""

    container_port: int
    protocol: str
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class Mount:
    """A bind mount or volume of a container."""

    type: str
    source: str
    destination: str
    read_only: bool
    name: str | None = None  # a named volume's name (inspect tells it; the listing may not)


@dataclass(frozen=True)
class ContainerSummary:
    """What the container listing says about one container (no inspect needed)."""

    id: str
    name: str
    image: str
    state: str  # created, running, paused, restarting, removing, exited, dead
    status: str  # Docker's human text, e.g. "Up 3 minutes (healthy)"
    created: int
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PublishedPort, ...] = ()
    mounts: tuple[Mount, ...] = ()
    networks: tuple[str, ...] = ()
    # The IPv4 address on each network, as the listing reports it (read, never dialled).
    addresses: Mapping[str, str] = field(default_factory=dict)

    @property
    def health(self) -> str | None:
        """healthy, unhealthy or starting when a healthcheck exists, else None."""
        for word in ("unhealthy", "healthy", "health: starting"):
            if f"({word})" in self.status:
                return "starting" if word == "health: starting" else word
        return None

    @property
    def compose_project(self) -> str | None:
        """The compose project label, if any."""
        return self.labels.get(COMPOSE_PROJECT)

    @property
    def compose_service(self) -> str | None:
        """The compose service label, if any."""
        return self.labels.get(COMPOSE_SERVICE)

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Compose services this one depends on, from compose v2's label."""
        raw = self.labels.get(COMPOSE_DEPENDS_ON, "")
        return tuple(part.split(":", 1)[0] for part in raw.split(",") if part)


@dataclass(frozen=True)
class ContainerDetails:
    """One container as `docker inspect` tells it: state, config in force, restart history.

    The one container model of reads and writes alike: checks read env and restarts, the
    operations read state, health, image, mounts and the healthcheck.
    """

    id: str
    env: Mapping[str, str]
    restart_count: int
    exit_code: int | None
    oom_killed: bool
    error: str
    started_at: str
    finished_at: str
    health_log: tuple[str, ...] = ()
    tty: bool = False  # Config.Tty: the container's output is one raw stream, not framed
    name: str = ""
    state: str = ""  # created, running, paused, restarting, removing, exited, dead
    health: str | None = None  # starting, healthy or unhealthy; None without a healthcheck
    image_id: str = ""
    restart_policy: str = ""
    mounts: tuple[Mount, ...] = ()
    # The healthcheck as an exec argv (CMD-SHELL through /bin/sh -c); () when none.
    healthcheck: tuple[str, ...] = ()
    # The IPv4 address on each network (read, never dialled).
    addresses: Mapping[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        """Meant to be up: running, paused or being restarted by its restart policy."""
        return self.state in ("running", "restarting", "paused")

    @property
    def ok(self) -> bool:
        """Running, and healthy when it has a healthcheck."""
        return self.state == "running" and self.health in (None, "healthy")

    @property
    def shown(self) -> str:
        """Its state as operations show it: "running/healthy", "exited", ..."""
        if self.state == "running" and self.health:
            return f"running/{self.health}"
        return self.state or "unknown"

    def to_dict(self) -> dict[str, Any]:
        """JSON shape (no env, no secrets)."""
        return {"container": self.name, "id": self.id[:12], "state": self.state,
                "health": self.health, "image_id": self.image_id[:19],
                "restart_count": self.restart_count}


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run inside a container."""

    exit_code: int | None
    output: str


def _summary(raw: Mapping[str, Any]) -> ContainerSummary:
    names = raw.get("Names") or ["/" + raw.get("Id", "")[:12]]
    ports = tuple(
        PublishedPort(p["PrivatePort"], p.get("Type", "tcp"), p.get("IP", ""), p["PublicPort"])
        for p in raw.get("Ports") or [] if p.get("PublicPort")
    )
    mounts = tuple(
        Mount(m.get("Type", ""), m.get("Source", ""), m.get("Destination", ""),
              not m.get("RW", True))
        for m in raw.get("Mounts") or []
    )
    attached = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    networks = tuple(attached.keys())
    addresses = {name: str(net.get("IPAddress")) for name, net in attached.items()
                 if isinstance(net, Mapping) and net.get("IPAddress")}
    return ContainerSummary(
        id=raw["Id"], name=names[0].lstrip("/"), image=raw.get("Image", ""),
        state=raw.get("State", ""), status=raw.get("Status", ""),
        created=int(raw.get("Created", 0)), labels=dict(raw.get("Labels") or {}),
        ports=ports, mounts=mounts, networks=networks, addresses=addresses,
    )


def details_of(raw: Mapping[str, Any]) -> ContainerDetails:
    """The model of one `docker inspect` answer."""
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    health = state.get("Health") or {}
    log = tuple(str(entry.get("Output", "")).strip()[-500:] for entry in health.get("Log") or [])
    policy = ((raw.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or ""
    mounts = tuple(Mount(str(m.get("Type", "")), str(m.get("Source", "")),
                         str(m.get("Destination", "")), not m.get("RW", True), m.get("Name"))
                   for m in raw.get("Mounts") or [])
    attached = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    addresses = {name: str(net.get("IPAddress")) for name, net in attached.items()
                 if isinstance(net, Mapping) and net.get("IPAddress")}
    exit_code = state.get("ExitCode")
    test = [str(t) for t in (config.get("Healthcheck") or {}).get("Test") or []]
    return ContainerDetails(
        id=str(raw.get("Id", "")), env=env, restart_count=int(raw.get("RestartCount") or 0),
        exit_code=None if exit_code is None else int(exit_code),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error", ""), started_at=state.get("StartedAt", ""),
        finished_at=state.get("FinishedAt", ""), health_log=log, tty=bool(config.get("Tty")),
        name=str(raw.get("Name", "")).lstrip("/"), state=str(state.get("Status", "")),
        health=health.get("Status"), image_id=str(raw.get("Image", "")),
        restart_policy=str(policy), mounts=mounts, healthcheck=_probe_argv(test),
        addresses=addresses,
    )


def _probe_argv(test: Sequence[str]) -> tuple[str, ...]:
    """Docker's healthcheck Test as the argv that runs it."""
    if len(test) > 1 and test[0] == "CMD":
        return tuple(test[1:])
    if len(test) > 1 and test[0] == "CMD-SHELL":
        return ("/bin/sh", "-c", test[1])
    return ()


class EventStream:
    """The engine's event stream: iterating yields events (dicts) until the connection ends.

    Iterating blocks between events (there is no read timeout) and raises
    DockerUnavailableError when the stream breaks; close() ends it from any thread.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        try:
            for item in self._stream:
                if isinstance(item, Mapping):
                    yield item
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError,
                ValueError) as exc:
            raise DockerUnavailableError(f"the event stream broke: {_reason(exc)}") from None

    def close(self) -> None:
        """End the stream; a blocked iteration returns or raises."""
        with suppress(Exception):  # closing a stream that already broke may fail: it is over
            self._stream.close()


# Connections kept to the engine: a sweep reads logs and runs probes of several instances
# at once, and a full pool would open and drop a connection per call.
_POOL_SIZE = 32


class DockerHost:
    """The tool's one way to read the Docker engine, with a timeout on every call."""

    def __init__(self, base_url: str, timeout: float = 5.0,
                 client: docker.DockerClient | None = None) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client = client
        self._lock = threading.Lock()
        # A container's config (env, TTY) cannot change without recreating it (new id), so
        # inspect results are kept by id for env() and logs(); state is always read fresh.
        self._config_cache: dict[str, ContainerDetails] = {}
        self.api_calls = 0

    @property
    def client(self) -> docker.DockerClient:
        """The docker-py client, created on first use."""
        with self._lock:
            if self._client is None:
                try:
                    client = docker.DockerClient(base_url=self._base_url,
                                                 timeout=int(max(1, self._timeout)),
                                                 max_pool_size=_POOL_SIZE)
                    # The engine is local: without this, requests reads the proxy
                    # variables of the environment again on every call.
                    client.api.trust_env = False
                    self._client = client
                except docker.errors.DockerException as exc:
                    raise DockerUnavailableError(f"cannot reach Docker at {self._base_url}: "
                                                 f"{_reason(exc)}") from None
            return self._client

    def _count(self) -> None:
        with self._lock:
            self.api_calls += 1

    def ping(self) -> bool:
        """True when the engine answers."""
        try:
            self._count()
            return bool(self.client.api.ping())
        except (DockerUnavailableError, docker.errors.DockerException,
                requests.exceptions.RequestException):
            return False

    def list_containers(self) -> list[ContainerSummary]:
        """Every container on the host, in one API call."""
        try:
            self._count()
            raw = self.client.api.containers(all=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailableError(f"cannot list containers at {self._base_url}: "
                                         f"{_reason(exc)}") from None
        return [_summary(item) for item in raw]

    def inspect(self, container_id: str) -> ContainerDetails | None:
        """Inspect one container; None when it vanished meanwhile."""
        try:
            self._count()
            raw = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailableError(f"cannot inspect container {container_id[:12]}: "
                                         f"{_reason(exc)}") from None
        details = details_of(raw)
        with self._lock:
            self._config_cache[container_id] = details
        return details

    def env(self, container_id: str) -> Mapping[str, str] | None:
        """The container's environment, inspecting only containers not seen before."""
        details = self._config(container_id)
        return details.env if details else None

    def _config(self, container_id: str) -> ContainerDetails | None:
        """The kept inspect result, inspecting only the first time; None when it is gone.

        Raises DockerUnavailableError ("cannot inspect container ...") when that fails.
        """
        with self._lock:
            cached = self._config_cache.get(container_id)
        return cached if cached is not None else self.inspect(container_id)

    def exec(self, container_id: str, argv: list[str]) -> ExecResult:
        """Run argv inside a running container; bounded by the client timeout."""
        try:
            self._count()
            exec_id = self.client.api.exec_create(container_id, argv, stdout=True, stderr=True)
            self._count()
            output = self.client.api.exec_start(exec_id["Id"], demux=False)
            self._count()
            code = self.client.api.exec_inspect(exec_id["Id"]).get("ExitCode")
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailableError(f"exec in {container_id[:12]} failed: "
                                         f"{_reason(exc)}") from None
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return ExecResult(code, text[-4000:])

    def events(self, actions: Sequence[str], since: float | None = None) -> EventStream:
        """Follow container events of these actions (die, stop, ...), from `since` or now.

        since is a UNIX time; the engine replays what it still holds from then on.
        """
        filters = {"type": ["container"], "event": list(actions)}
        try:
            self._count()
            # docker-py sends `since` as given; its stubs allow only int and datetime,
            # which would drop the fraction the replay needs.
            stream = self.client.api.events(  # type: ignore[call-overload]
                since=_unix_time(since) if since is not None else None, filters=filters,
                decode=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailableError(f"cannot follow events at {self._base_url}: "
                                         f"{_reason(exc)}") from None
        # docker-py reports a refusal (a proxy's 403, say) only at the first read; the
        # status line has arrived already, so tell it now.
        response = getattr(stream, "_response", None)
        status = getattr(response, "status_code", 200)
        if isinstance(status, int) and status >= 400:
            EventStream(stream).close()
            raise DockerUnavailableError(f"cannot follow events at {self._base_url}: "
                                         f"the engine answered {status}")
        return EventStream(stream)

    def logs(self, container_id: str, since: float, tail: int) -> list[str]:
        """Recent log lines (stdout and stderr, each prefixed by its RFC 3339 timestamp).

        since is a UNIX time, floored to the microsecond; Docker includes the lines logged
        at since. tail is the most lines returned (the latest ones).
        """
        tty = self._tty(container_id)
        if tty is None:
            return []
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": 0,
                                  "tail": tail if tail >= 0 else "all"}
        if since > 0:
            params["since"] = _unix_time(since)
        try:
            self._count()
            api: Any = self.client.api  # its private helpers are not in docker-py's stubs
            # docker-py's APIClient.logs() inspects the container on every call to learn
            # whether its output is framed (no TTY) or raw. That cannot change for a
            # container id, so it is kept, and the logs endpoint is called through the
            # private helpers APIClient.logs() itself uses (as in docker-py 7.1 and 7.2;
            # tests/integration/test_log_cache_live.py reads real logs through them).
            response = api._get(api._url("/containers/{0}/logs", container_id), params=params)
            raw = api._get_result_tty(False, response, tty)
        except docker.errors.NotFound:
            return []
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise DockerUnavailableError(f"cannot read logs of {container_id[:12]}: "
                                         f"{_reason(exc)}") from None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return text.splitlines()

    def _tty(self, container_id: str) -> bool | None:
        """Whether the container has a TTY; None when it does not exist."""
        details = self._config(container_id)
        return details.tty if details is not None else None

    def forget(self, live_ids: set[str]) -> None:
        """Drop kept inspect results of containers that no longer exist."""
        with self._lock:
            for cid in set(self._config_cache) - live_ids:
                del self._config_cache[cid]


def _unix_time(seconds: float) -> str:
    """A UNIX time as Docker's API reads it: seconds and a six-digit fraction, floored.

    The float's shortest repr is its decimal value as written, so 1700000000.123456 stays
    exactly that instead of becoming ...123455 through binary rounding.
    """
    return f"{Decimal(repr(float(seconds))).quantize(Decimal('0.000001'), ROUND_FLOOR):f}"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    # docker-py wraps connection errors verbosely; the first line carries the reason.
    return text.splitlines()[0][:300] if text else type(exc).__name__
