"""A DockerHost answering `logs` from plain data, and an instance whose containers it serves.

For unit tests of log parsing and analysis only; nothing here tests Docker itself.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from exporter.discovery.model import (
    Component,
    Credentials,
    Endpoints,
    Instance,
    InstanceFiles,
    ultrabase_container_name,
)
from exporter.dockerhost import COMPOSE_PROJECT, COMPOSE_SERVICE, ContainerSummary, DockerHost
from exporter.errors import DockerUnavailableError

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
IID = "abcd1234"
PG_PASSWORD = "pg-pass-s3cr3t-value"
JWT_SECRET = "jwt-secret-abcd1234-0123456789abcdef0123"


def stamp(seconds_ago: float, body: str) -> str:
    """A log line as `docker logs --timestamps` prints it, seconds_ago before NOW."""
    when = NOW - timedelta(seconds=seconds_ago)
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S')}.{when.microsecond:06d}123Z {body}"


class LogDocker(DockerHost):
    """Serves each container's log lines from a dict; applies since and tail like Docker."""

    def __init__(self, lines: Mapping[str, Sequence[str]], *, failing: Sequence[str] = (),
                 hanging: Sequence[str] = ()) -> None:
        super().__init__("unix:///nonexistent")
        self.lines = {cid: list(v) for cid, v in lines.items()}
        self.failing, self.hanging = set(failing), set(hanging)
        self.calls: list[tuple[str, float, int]] = []
        self.release = threading.Event()

    def logs(self, container_id: str, since: float, tail: int) -> list[str]:
        self.api_calls += 1
        self.calls.append((container_id, since, tail))
        if container_id in self.failing:
            raise DockerUnavailableError(f"cannot read logs of {container_id[:12]}: "
                                         "connection refused")
        if container_id in self.hanging:
            self.release.wait(10)
            return []
        kept = [line for line in self.lines.get(container_id, [])
                if _docker_time(line) >= int(since)]
        return kept[-tail:]


def _docker_time(line: str) -> float:
    return datetime.fromisoformat(line.split(" ", 1)[0][:19] + "+00:00").timestamp()


def container_id(component: str) -> str:
    """The id LogDocker and make_instance give a component's container."""
    return f"{IID}-{component}"


def make_instance(components: Sequence[str] = ("db", "auth", "rest", "kong"),
                  without_container: Sequence[str] = (), state: str = "running") -> Instance:
    """An Ultrabase-style instance whose components have the given containers."""
    comps = {}
    for name in [*components, *without_container]:
        container = None
        if name not in without_container:
            container = ContainerSummary(
                id=container_id(name), name=ultrabase_container_name(name, IID),
                image="local/x", state=state, status="Up 1 minute", created=0,
                labels={COMPOSE_PROJECT: f"supabase-{IID}", COMPOSE_SERVICE: name})
        comps[name] = Component(name, ultrabase_container_name(name, IID), container)
    return Instance(
        id=IID, name="Project", owner="admin", source="ultrabase",
        compose_project=f"supabase-{IID}", components=comps, endpoints=Endpoints(),
        credentials=Credentials(postgres_password=PG_PASSWORD, jwt_secret=JWT_SECRET),
        files=InstanceFiles(),
        runtime_env={"auth": {"GOTRUE_DB_DATABASE_URL":
                              f"postgres://supabase_auth_admin:{PG_PASSWORD}@db:5432/postgres"}},
    )
