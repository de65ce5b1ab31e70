"""Plain-data instances with containers, and DockerHosts answering from plain data.

For the container_status, service_health, network_connectivity and disk_usage tests.
Nothing here tests Docker: ScriptedDocker answers inspect/exec/list from Python data, and
LocalExec runs an exec's argv as a local process (to run the real probe scripts against
real sockets on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from exporter.checks.base import CheckContext
from exporter.config import DiagnosticsConfig, Thresholds
from exporter.discovery.model import (
    COMPONENTS,
    Component,
    Credentials,
    Endpoints,
    Instance,
    InstanceFiles,
    ultrabase_container_name,
)
from exporter.dockerhost import (
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    ContainerDetails,
    ContainerSummary,
    DockerHost,
    ExecResult,
    PublishedPort,
)
from exporter.errors import DockerUnavailableError
from exporter.issues import Issue
from exporter.redaction import Redactor

IID = "abcd1234"
PROJECT = f"supabase-{IID}"
NETWORK = f"{PROJECT}_default"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PG_PASSWORD = "plainhost-pg-password-7731"
JWT_SECRET = "plainhost-jwt-secret-0123456789abcdef"


def cid(name: str) -> str:
    """A 64-hex container id derived from a name, like Docker's."""
    return hashlib.sha256(name.encode()).hexdigest()


def container(component: str, *, state: str = "running", status: str | None = None,
              ports: tuple[PublishedPort, ...] = (), networks: tuple[str, ...] = (NETWORK,),
              project: str = PROJECT, iid: str = IID) -> ContainerSummary:
    """One container of an Ultrabase instance as the listing describes it."""
    name = ultrabase_container_name(component, iid)
    if status is None:
        status = "Up 2 hours (healthy)" if state == "running" else "Exited (1) 3 minutes ago"
    return ContainerSummary(
        id=cid(name), name=name, image="local/fleet", state=state, status=status,
        created=0, labels={COMPOSE_PROJECT: project, COMPOSE_SERVICE: component},
        ports=ports, networks=networks)


def published(container_port: int, host_port: int) -> tuple[PublishedPort, ...]:
    """A port published on 127.0.0.1."""
    return (PublishedPort(container_port, "tcp", "127.0.0.1", host_port),)


@dataclass(frozen=True)
class Ports:
    """Host ports of one instance."""

    gateway: int | None = 8100
    gateway_https: int | None = None
    db: int | None = 5433
    analytics: int | None = 4100


def healthy(ports: Ports = Ports()) -> dict[str, ContainerSummary | None]:
    """Every component running and healthy, publishing the given ports."""
    out: dict[str, ContainerSummary | None] = {}
    for comp in COMPONENTS:
        pub: tuple[PublishedPort, ...] = ()
        if comp == "kong":
            pub = (published(8000, ports.gateway) if ports.gateway else ()) + (
                published(8443, ports.gateway_https) if ports.gateway_https else ())
        elif comp == "db" and ports.db:
            pub = published(5432, ports.db)
        elif comp == "analytics" and ports.analytics:
            pub = published(4000, ports.analytics)
        out[comp] = container(comp, ports=pub)
    return out


def make_instance(containers: Mapping[str, ContainerSummary | None] | None = None, *,
                  ports: Ports = Ports(), files: InstanceFiles | None = None,
                  runtime_known: bool = True) -> Instance:
    """An Ultrabase instance as discovery hands it to the checks."""
    if containers is None:
        containers = healthy(ports)
    components = {
        name: Component(name, ultrabase_container_name(name, IID), c)
        for name, c in containers.items()
    }
    endpoints = Endpoints(
        gateway_url=f"http://127.0.0.1:{ports.gateway}" if ports.gateway else None,
        gateway_https_url=f"https://127.0.0.1:{ports.gateway_https}"
        if ports.gateway_https else None,
        db_port=ports.db,
        analytics_url=f"http://127.0.0.1:{ports.analytics}" if ports.analytics else None)
    return Instance(
        id=IID, name="Plain", owner="admin", source="ultrabase", compose_project=PROJECT,
        components=components, endpoints=endpoints,
        credentials=Credentials(postgres_password=PG_PASSWORD, jwt_secret=JWT_SECRET),
        files=files or InstanceFiles(), runtime_known=runtime_known)


def with_container(instance: Instance, component: str, c: ContainerSummary | None) -> Instance:
    """The instance with one component's container replaced."""
    components = dict(instance.components)
    components[component] = Component(component, components[component].container_name, c)
    return replace(instance, components=components)


def details(c: ContainerSummary, *, restart_count: int = 0, exit_code: int | None = 0,
            oom_killed: bool = False, error: str = "", started_at: str = "",
            finished_at: str = "", health_log: tuple[str, ...] = ()) -> ContainerDetails:
    """What inspect would say about a container."""
    return ContainerDetails(c.id, {}, restart_count, exit_code, oom_killed, error,
                            started_at, finished_at, health_log)


ExecHandler = Callable[[str, list[str]], ExecResult]


class ScriptedDocker(DockerHost):
    """A DockerHost answering inspect, exec and list from plain data; counts every call."""

    def __init__(self, *, inspects: Mapping[str, ContainerDetails] | None = None,
                 exec_handler: ExecHandler | None = None,
                 listing: list[ContainerSummary] | None = None,
                 down: bool = False) -> None:
        super().__init__("unix:///nonexistent")
        self.inspects = dict(inspects or {})
        self.exec_handler = exec_handler
        self.listing = listing or []
        self.down = down
        self.inspected: list[str] = []
        self.execs: list[tuple[str, list[str]]] = []
        self.listed = 0
        self._calls = threading.Lock()

    def inspect(self, container_id: str) -> ContainerDetails | None:
        with self._calls:
            self.inspected.append(container_id)
        if self.down:
            raise DockerUnavailableError("cannot inspect: engine timed out")
        return self.inspects.get(container_id) or ContainerDetails(
            container_id, {}, 0, 0, False, "", "", "")

    def exec(self, container_id: str, argv: list[str]) -> ExecResult:
        with self._calls:
            self.execs.append((container_id, list(argv)))
        if self.down:
            raise DockerUnavailableError("exec failed: engine timed out")
        if self.exec_handler is None:
            raise AssertionError("no exec expected")
        return self.exec_handler(container_id, argv)

    def list_containers(self) -> list[ContainerSummary]:
        with self._calls:
            self.listed += 1
        if self.down:
            raise DockerUnavailableError("cannot list containers")
        return list(self.listing)


def busybox_path(directory: Path, applets: tuple[str, ...]) -> str | None:
    """A PATH directory holding only these busybox applets, or None without busybox."""
    busybox = shutil.which("busybox")
    if busybox is None:
        return None
    directory.mkdir()
    for applet in applets:
        (directory / applet).symlink_to(busybox)
    return str(directory)


class LocalExec(ScriptedDocker):
    """Runs an exec's argv as a local process: the probe scripts against real sockets."""

    def __init__(self, path_env: Mapping[str, str] | None = None, shell: str | None = None,
                 limit: float = 30.0) -> None:
        super().__init__()
        self.path_env = dict(path_env) if path_env is not None else None
        self.shell = shell  # the sh to run the script with (e.g. busybox's), else argv[0]
        self.limit = limit

    def exec(self, container_id: str, argv: list[str]) -> ExecResult:
        with self._calls:
            self.execs.append((container_id, list(argv)))
        command = [self.shell, *argv[1:]] if self.shell else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, env=self.path_env,
                              timeout=self.limit, check=False)
        return ExecResult(done.returncode, (done.stdout + done.stderr)[-4000:])


def probe_reply(lines: Mapping[str, tuple[int | None, str]]) -> Callable[[list[str]], str]:
    """Output of the HTTP probe script: name -> (status or None, failure word)."""
    def render(argv: list[str]) -> str:
        names = argv[5::2]
        out = []
        for name in names:
            status, why = lines.get(name, (200, "-"))
            code = str(status) if status is not None else "-"
            rc = "0" if status is not None and status < 400 else "4"
            out.append(f"@@ {name} {code} {rc} 100.00 100.02 {why if status is None else '-'}")
        return "\n".join(out) + "\n"
    return render


def context(instance: Instance, docker: DockerHost, *, timeout: float = 2.0,
            thresholds: Thresholds | None = None, now: datetime = NOW,
            http: httpx.Client | None = None) -> CheckContext:
    """A CheckContext over plain data (the HTTP client is real, for 127.0.0.1 only)."""
    config = DiagnosticsConfig(timeout_seconds=timeout,
                               thresholds=thresholds or Thresholds())
    client = http or httpx.Client(timeout=timeout, trust_env=False)
    return CheckContext(instance=instance, config=config, docker=docker, http=client,
                        redactor=Redactor(instance.secrets()), now=now)


@dataclass
class Answers:
    """What a local HTTP server answers: path prefix -> status."""

    statuses: dict[str, int] = field(default_factory=dict)
    default: int = 200


@contextmanager
def http_server(answers: Answers) -> Iterator[int]:
    """A real HTTP server on an ephemeral 127.0.0.1 port; yields the port."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = next((s for p, s in answers.statuses.items() if self.path.startswith(p)),
                          answers.default)
            body = b'{"message":"no Route matched with those values"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def codes(issues: tuple[Issue, ...] | list[Issue]) -> list[str]:
    """The issue codes, sorted."""
    return sorted(i.code for i in issues)


def only(issues: tuple[Issue, ...] | list[Issue], code: str) -> Issue:
    """The single issue with code."""
    found = [i for i in issues if i.code == code]
    assert len(found) == 1, f"expected one {code}, got {codes(issues)}"
    return found[0]


def tmp_file(path: Path, size: int) -> None:
    """A file of exactly size bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
