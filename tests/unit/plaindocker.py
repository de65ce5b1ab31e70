"""A DockerHost answering from plain data, and container data in the Ultrabase layout.

For unit tests of the logic that stands on Docker's answers; nothing here tests Docker.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.discovery import COMPONENTS
from exporter.discovery.model import ultrabase_container_name
from exporter.dockerhost import (
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    ContainerDetails,
    ContainerSummary,
    DockerHost,
    PublishedPort,
)
from exporter.errors import DockerUnavailableError


class PlainDocker(DockerHost):
    """A DockerHost answering from plain data: for unit tests of the joining logic only."""

    def __init__(self, containers: list[ContainerSummary],
                 envs: Mapping[str, Mapping[str, str]] | None = None,
                 down: bool = False) -> None:
        super().__init__("unix:///nonexistent")
        self.containers, self.envs, self.down = containers, dict(envs or {}), down
        self.inspected: list[str] = []

    def list_containers(self) -> list[ContainerSummary]:
        self.api_calls += 1
        if self.down:
            raise DockerUnavailableError("cannot list containers: connection refused")
        return list(self.containers)

    def inspect(self, container_id: str) -> ContainerDetails | None:
        self.api_calls += 1
        self.inspected.append(container_id)
        details = ContainerDetails(container_id, self.envs.get(container_id, {}), 0, 0,
                                   False, "", "", "")
        self._config_cache[container_id] = details
        return details


def containers_for(iid: str, project: str | None = None, image: str = "local/x",
                   kong_port: int = 8100, db_port: int = 5433) -> list[ContainerSummary]:
    out = []
    for comp in COMPONENTS:
        ports: tuple[PublishedPort, ...] = ()
        if comp == "kong":
            ports = (PublishedPort(8000, "tcp", "127.0.0.1", kong_port),)
        if comp == "db":
            ports = (PublishedPort(5432, "tcp", "127.0.0.1", db_port),)
        out.append(ContainerSummary(
            id=f"{iid}-{comp}", name=ultrabase_container_name(comp, iid),
            image="supabase/gotrue:v2" if comp == "auth" else image, state="running",
            status="Up 1 minute (healthy)", created=0,
            labels={COMPOSE_PROJECT: project or f"supabase-{iid}", COMPOSE_SERVICE: comp},
            ports=ports))
    return out


def runtime_envs(iid: str, values: Mapping[str, str]) -> dict[str, dict[str, str]]:
    pw = values["POSTGRES_PASSWORD"]
    return {
        f"{iid}-auth": {"GOTRUE_JWT_SECRET": values["JWT_SECRET"],
                        "GOTRUE_DB_DATABASE_URL": f"postgres://supabase_auth_admin:{pw}@db:5432/x"},
        f"{iid}-db": {"POSTGRES_PASSWORD": pw, "JWT_SECRET": values["JWT_SECRET"]},
        f"{iid}-kong": {"SUPABASE_ANON_KEY": values["ANON_KEY"],
                        "SUPABASE_SERVICE_KEY": values["SERVICE_ROLE_KEY"],
                        "DASHBOARD_USERNAME": "supabase",
                        "DASHBOARD_PASSWORD": values["DASHBOARD_PASSWORD"]},
        f"{iid}-rest": {"PGRST_JWT_SECRET": values["JWT_SECRET"],
                        "PGRST_DB_URI": f"postgres://authenticator:{pw}@db:5432/x"},
    }
