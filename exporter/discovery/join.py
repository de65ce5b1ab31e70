"""Joining what files say with what Docker runs: components, credentials, endpoints, drift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from exporter.discovery.files import CREDENTIAL_COMPONENTS, service_env_credentials
from exporter.discovery.model import (
    Component,
    Credentials,
    Endpoints,
    Instance,
    InstanceFiles,
    LayoutFacts,
    RegistryState,
)
from exporter.dockerhost import ContainerSummary, DockerHost
from exporter.issues import Issue, make_issue
from exporter.redaction import fingerprint

LOOPBACK = "127.0.0.1"

# Which source wins for each credential: runtime env first, then files (DESIGN §4).
_PRECEDENCE: Mapping[str, tuple[str, ...]] = {
    "postgres_password": ("runtime:db", "runtime:auth", "env_file", "compose_file", "registry"),
    "jwt_secret": ("runtime:auth", "runtime:rest", "env_file", "compose_file", "registry"),
    "anon_key": ("runtime:kong", "env_file", "compose_file", "registry", "kong_file"),
    "service_role_key": ("runtime:kong", "env_file", "compose_file", "registry", "kong_file"),
    "dashboard_username": ("kong_file", "runtime:kong", "env_file", "compose_file", "registry"),
    "dashboard_password": ("kong_file", "runtime:kong", "env_file", "compose_file", "registry"),
}
# Container ports that Ultrabase publishes on the host.
_GATEWAY_HTTP, _GATEWAY_HTTPS, _DB, _ANALYTICS = 8000, 8443, 5432, 4000
_REGISTRY_PORTS = {"kong_http": ("kong", _GATEWAY_HTTP), "kong_https": ("kong", _GATEWAY_HTTPS),
                   "postgres_ext": ("db", _DB), "analytics": ("analytics", _ANALYTICS)}


@dataclass(frozen=True, repr=False)
class Candidate:
    """An instance as a source sees it, before joining with Docker."""

    id: str
    name: str
    owner: str | None
    source: str
    compose_project: str
    # component -> expected container name (None: any container of that service)
    expected: Mapping[str, str | None]
    files: InstanceFiles = field(default_factory=InstanceFiles)
    # source name ("registry", "env_file", ...) -> credential field -> value
    file_credentials: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    registry_ports: Mapping[str, int] = field(default_factory=dict)
    problems: tuple[Issue, ...] = ()
    created_at: str | None = None
    registry: RegistryState = field(default_factory=RegistryState)
    layout: LayoutFacts = field(default_factory=LayoutFacts)


def index_by_project(containers: Sequence[ContainerSummary]
                     ) -> dict[str, list[ContainerSummary]]:
    """Containers grouped by their compose project label."""
    out: dict[str, list[ContainerSummary]] = {}
    for c in containers:
        if c.compose_project:
            out.setdefault(c.compose_project, []).append(c)
    return out


def build_instance(candidate: Candidate, project_containers: Sequence[ContainerSummary],
                   by_name: Mapping[str, ContainerSummary], docker: DockerHost | None,
                   runtime_known: bool) -> Instance:
    """The joined Instance; never raises for a bad instance, records problems instead."""
    by_service = {c.compose_service: c for c in project_containers if c.compose_service}
    components: dict[str, Component] = {}
    for name, container_name in candidate.expected.items():
        found = by_service.get(name)
        if found is None and container_name:
            found = by_name.get(container_name)
        components[name] = Component(name, container_name or (found.name if found else None),
                                     found)
    problems = list(candidate.problems)
    runtime_env: dict[str, Mapping[str, str]] = {}
    observed: dict[str, dict[str, str]] = {k: dict(v)
                                           for k, v in candidate.file_credentials.items()}
    if docker is not None and runtime_known:
        for name in CREDENTIAL_COMPONENTS:
            comp = components.get(name)
            if comp is None or comp.container is None:
                continue
            env = docker.env(comp.container.id)
            if env is None:
                continue
            runtime_env[name] = env
            observed[f"runtime:{name}"] = service_env_credentials(name, env)
    credentials = _credentials(observed)
    problems.extend(_drift(candidate, observed, components))
    return Instance(
        id=candidate.id, name=candidate.name, owner=candidate.owner, source=candidate.source,
        compose_project=candidate.compose_project, components=components,
        endpoints=_endpoints(components, candidate.registry_ports), credentials=credentials,
        files=candidate.files, problems=tuple(problems), created_at=candidate.created_at,
        runtime_env=runtime_env, runtime_known=runtime_known, registry=candidate.registry,
        layout=candidate.layout,
    )


def _credentials(observed: Mapping[str, Mapping[str, str]]) -> Credentials:
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for fld, order in _PRECEDENCE.items():
        values[fld] = None
        for source in order:
            value = observed.get(source, {}).get(fld)
            if value:
                values[fld] = value
                sources[fld] = source
                break
    return Credentials(**values, sources=sources)


def _drift(candidate: Candidate, observed: Mapping[str, Mapping[str, str]],
           components: Mapping[str, Component]) -> list[Issue]:
    disagreements: dict[str, dict[str, str | None]] = {}
    for fld in _PRECEDENCE:
        seen = {src: vals[fld] for src, vals in observed.items() if vals.get(fld)}
        if len(set(seen.values())) > 1:
            disagreements[fld] = {src: fingerprint(v) for src, v in sorted(seen.items())}
    ports: dict[str, dict[str, int | None]] = {}
    for key, (component, container_port) in _REGISTRY_PORTS.items():
        want = candidate.registry_ports.get(key)
        container = components.get(component)
        if want is None or container is None or container.container is None:
            continue
        published = [p.host_port for p in container.container.ports
                     if p.container_port == container_port]
        if published and want not in published:
            ports[key] = {"registry": want, "published": published[0]}
    if not disagreements and not ports:
        return []
    where = ", ".join([*disagreements, *ports])
    return [make_issue(
        "CONFIG_DRIFT", check="discovery",
        message=f"sources disagree on {where}",
        evidence={"credentials": disagreements, "ports": ports},
    )]


def _endpoints(components: Mapping[str, Component], registry_ports: Mapping[str, int]
               ) -> Endpoints:
    def host_port(component: str, container_port: int, registry_key: str) -> int | None:
        comp = components.get(component)
        if comp is not None and comp.container is not None:
            for p in comp.container.ports:
                if p.container_port == container_port and p.protocol == "tcp":
                    return p.host_port
        return registry_ports.get(registry_key)

    http = host_port("kong", _GATEWAY_HTTP, "kong_http")
    https = host_port("kong", _GATEWAY_HTTPS, "kong_https")
    db = host_port("db", _DB, "postgres_ext")
    analytics = host_port("analytics", _ANALYTICS, "analytics")
    return Endpoints(
        gateway_url=f"http://{LOOPBACK}:{http}" if http else None,
        gateway_https_url=f"https://{LOOPBACK}:{https}" if https else None,
        db_host=LOOPBACK, db_port=db,
        analytics_url=f"http://{LOOPBACK}:{analytics}" if analytics else None,
    )


def volume_dirs_from_binds(binds: Mapping[str, Sequence[tuple[Path, str]]]
                           ) -> dict[str, Path]:
    """Named host directories an instance keeps its data in, from compose bind mounts."""
    wanted = {("db", "/var/lib/postgresql/data"): "db_data",
              ("storage", "/var/lib/storage"): "storage",
              ("functions", "/home/deno/functions"): "functions"}
    out: dict[str, Path] = {}
    for service, mounts in binds.items():
        for source, target in mounts:
            label = wanted.get((service, target))
            if label:
                out[label] = source
    return out
