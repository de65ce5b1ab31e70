"""Instance discovery: the Ultrabase registry, generic compose projects and a static list."""

from __future__ import annotations

import logging

from exporter.config import Config
from exporter.discovery.compose import compose_candidates
from exporter.discovery.join import Candidate, build_instance, index_by_project
from exporter.discovery.model import (
    COMPONENTS,
    CRITICAL_PATH,
    Component,
    Credentials,
    Discovery,
    Endpoints,
    Instance,
    InstanceFiles,
)
from exporter.discovery.static import static_candidates
from exporter.discovery.ultrabase import ultrabase_candidates
from exporter.dockerhost import ContainerSummary, DockerHost
from exporter.errors import DockerUnavailableError
from exporter.issues import Issue, make_issue

__all__ = [
    "COMPONENTS", "CRITICAL_PATH", "Component", "Credentials", "Discovery", "Endpoints",
    "Instance", "InstanceFiles", "discover",
]

log = logging.getLogger(__name__)


def discover(config: Config, docker: DockerHost) -> Discovery:
    """Find every instance; one Docker listing call, inspects only for unseen containers.

    Raises RegistryError when the Ultrabase registry itself cannot be read.
    """
    containers: list[ContainerSummary] = []
    docker_error: str | None = None
    try:
        containers = docker.list_containers()
    except DockerUnavailableError as exc:
        docker_error = str(exc)
    runtime_known = docker_error is None
    projects = index_by_project(containers)
    by_name = {c.name: c for c in containers}

    candidates: list[Candidate] = []
    problems: list[Issue] = []
    sources = config.discovery.sources
    if "ultrabase" in sources:
        found, registry = ultrabase_candidates(config.ultrabase)
        candidates.extend(found)
        problems.extend(registry.problems)
    if "static" in sources:
        candidates.extend(static_candidates(config.discovery.static))
    if "compose" in sources and runtime_known:
        claimed = {c.compose_project for c in candidates}
        candidates.extend(compose_candidates(projects, claimed))
    if docker_error:
        problems.append(make_issue("DOCKER_UNREACHABLE", check="discovery",
                                   message=docker_error))

    instances: dict[str, Instance] = {}
    for candidate in candidates:
        if candidate.id in instances:
            log.warning("instance id %s found by %s and %s; keeping the first", candidate.id,
                        instances[candidate.id].source, candidate.source)
            continue
        try:
            instances[candidate.id] = build_instance(
                candidate, projects.get(candidate.compose_project, []), by_name,
                docker if runtime_known else None, runtime_known)
        except DockerUnavailableError as exc:
            # Docker went away mid-pass: keep the instance, runtime unknown.
            instances[candidate.id] = build_instance(candidate, [], {}, None, False)
            docker_error = docker_error or str(exc)
    if runtime_known:
        docker.forget({c.id for c in containers})
    return Discovery(instances=instances, problems=tuple(problems),
                     docker_ok=docker_error is None, docker_error=docker_error)
