"""The instance's own exposure, as the manager's template leaves it: ports published on
every interface of the host, and default or placeholder credentials (PORT_EXPOSED,
DEFAULT_CREDENTIALS). network_connectivity reports them; the hint of each code says what to
change in the manager's template and what the doctor's config editor can change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypedDict

from exporter.discovery.model import Component, Instance
from exporter.issues import Issue, make_issue

# Host addresses that mean "every interface" (compose's empty host_ip binds 0.0.0.0 and ::).
ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - compared, never bound
# What an open port of each component lets a stranger reach.
REACHES: Mapping[str, str] = {
    "kong": "the API and Studio's login",
    "db": "the database's password login",
    "supavisor": "the pooler's database login",
    "analytics": "the logging API",
    "studio": "Studio",
}
# Logins anyone can read in the manager's code or Supabase's examples.
DEFAULT_LOGINS: Mapping[tuple[str, str], str] = {
    ("admin", "admin"): "the Ultrabase manager's fixed Studio login "
                        "(server.js generateInstanceConfig)",
    ("supabase", "this_password_is_insecure_and_should_be_updated"):
        "Supabase's docker/.env.example",
}
CHECK = "network_connectivity"


class ExposedPort(TypedDict):
    """A host port published on every interface."""

    host_port: int  # 0 when Docker picks it
    container_port: int
    protocol: str
    source: Literal["container", "compose_file"]  # the running container, else the file


class Exposure(TypedDict):
    """The exposure part of network_connectivity's details."""

    exposed_ports: dict[str, list[ExposedPort]]  # by component, only those with any


def exposure(instance: Instance) -> tuple[list[Issue], Exposure]:
    """PORT_EXPOSED per component published on every interface, DEFAULT_CREDENTIALS per
    default login or placeholder key; and the details (ports per component)."""
    issues: list[Issue] = []
    exposed: dict[str, list[ExposedPort]] = {}
    for name, component in instance.components.items():
        ports = _open_ports(instance, name, component)
        if not ports:
            continue
        exposed[name] = ports
        shown = ", ".join(
            f"{p['host_port'] or 'a port Docker picks'} (to {p['container_port']})"
            for p in ports)
        issues.append(make_issue(
            "PORT_EXPOSED", check=CHECK, component=name,
            message=f"{name} is published on every interface of the host: {shown}; anyone "
                    f"who reaches the host reaches {REACHES.get(name, name)}",
            evidence={"ports": ports}))
    creds = instance.credentials
    login = (creds.dashboard_username or "", creds.dashboard_password or "")
    if login in DEFAULT_LOGINS:
        issues.append(make_issue(
            "DEFAULT_CREDENTIALS", check=CHECK, component="kong",
            message=f"Studio's dashboard login (basic auth on the gateway) is "
                    f"{login[0]}/{login[1]}, {DEFAULT_LOGINS[login]}",
            evidence={"credential": "dashboard", "username": login[0],
                      "source": creds.sources.get("dashboard_password")}))
    placeholders = instance.layout.placeholders
    if placeholders:
        where = "; ".join(f"{key} in {', '.join(places)}"
                          for key, places in sorted(placeholders.items()))
        issues.append(make_issue(
            "DEFAULT_CREDENTIALS", check=CHECK, component="analytics",
            message=f"the logflare keys are a published placeholder: {where}",
            evidence={"credential": "logflare", "settings": {
                k: list(v) for k, v in sorted(placeholders.items())}}))
    return issues, {"exposed_ports": exposed}


def _open_ports(instance: Instance, name: str, component: Component
                ) -> list[ExposedPort]:
    """The component's ports on every interface: as the running container publishes them,
    else as the compose file asks for them."""
    container = component.container
    if container is not None and container.state == "running" and container.ports:
        seen: dict[tuple[int, int], ExposedPort] = {}
        for p in container.ports:
            if p.host_ip in ALL_INTERFACES:
                seen.setdefault((p.host_port, p.container_port), {
                    "host_port": p.host_port, "container_port": p.container_port,
                    "protocol": p.protocol, "source": "container"})
        return sorted(seen.values(), key=lambda p: (p["container_port"], p["host_port"]))
    return [{"host_port": host_port, "container_port": target, "protocol": "tcp",
             "source": "compose_file"}
            for host_ip, host_port, target in instance.layout.ports.get(name, ())
            if host_ip in ALL_INTERFACES]
