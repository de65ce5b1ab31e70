"""Kong's route to a service against the service itself: does Kong proxy to its current address?

Kong resolves a service's host through its own DNS cache and keeps each answer for the
answer's TTL; Docker's embedded DNS answers container names with TTL 600 (Kong 2.8
kong/resty/dns/client.lua; moby libnetwork/resolver.go `respTTL = 600`). A container that
was recreated with another address stays unreachable through the gateway for up to ten
minutes while it is healthy, and a name Kong found missing stays missing for 30 s
(`dns_not_found_ttl`). The evidence that tells this apart from a broken service:

- the in-network probe, run in kong's own network namespace, resolves the name afresh and
  gets an answer from the service;
- Kong's error log names the address it proxied the route to (`upstream: "http://ip:port/"`),
  and the container listing gives the service's address now; they differ.

The second decides when the log has it. Without it, Kong's own 502/504 (it could not
connect) to a service that answers there is enough; a timeout alone is not, since a slow
service on a loaded host looks the same.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from exporter.checks.base import CheckContext
from exporter.checks.probes import HttpProbeRun
from exporter.checks.services import in_network_probe
from exporter.discovery.model import Instance
from exporter.errors import DockerUnavailableError

GATEWAY = "kong"
# The path prefix of each upstream's route in Ultrabase's kong.yml; a route shared by
# several upstreams (studio's "/") cannot be told apart in Kong's log and has none.
ROUTE_PREFIXES: Mapping[str, str] = {
    "auth": "/auth/v1/", "rest": "/rest/v1/", "storage": "/storage/v1/",
}
# How far back Kong's log is read for the address it used (only when a route failed).
KONG_LOG_SECONDS = 600.0
KONG_LOG_LINES = 400
# nginx's request context: `request: "GET /auth/v1/health HTTP/1.1", upstream: "http://..."`.
_PROXIED = re.compile(
    r'request: "[A-Z]+ (?P<path>\S+) HTTP/[0-9.]+", upstream: "[a-z]+://'
    r'(?P<host>\[[0-9A-Fa-f:.]+\]|[0-9.]+):(?P<port>\d+)')


@dataclass(frozen=True)
class UpstreamView:
    """One upstream as the gateway sees it and as it is."""

    upstream: str
    running: bool
    answered_inside: bool | None  # the probe from kong's namespace got an answer; None: no probe
    inside: Mapping[str, Any]  # that probe's outcome, for the evidence
    kong_address: str | None  # "ip:port" Kong last proxied the route to, from its log
    current_address: str | None  # the container's address on the instance network

    @property
    def kong_holds_old_address(self) -> bool:
        """True when Kong's log names an address the container no longer has."""
        if self.kong_address is None or self.current_address is None:
            return False
        return self.kong_address.rsplit(":", 1)[0].strip("[]") != self.current_address

    @property
    def answers(self) -> bool:
        """The service runs and answers its name inside kong's network."""
        return self.running and bool(self.answered_inside)

    def stale(self, kong_failed_to_connect: bool) -> bool:
        """Kong's cache is old: the service answers at an address other than Kong's.

        Without Kong's address in its log, Kong's own connect failure (502/504) to a
        service that answers still shows it; a timeout alone does not (a slow service on
        a loaded host looks the same).
        """
        if not self.answers:
            return False
        if self.kong_address is not None and self.current_address is not None:
            return self.kong_holds_old_address
        return kong_failed_to_connect

    def evidence(self) -> dict[str, Any]:
        """The facts behind the verdict, as issue evidence."""
        return {"upstream": self.upstream, "upstream_running": self.running,
                "in_network_probe": dict(self.inside), "kong_address": self.kong_address,
                "upstream_address": self.current_address}


def upstream_view(ctx: CheckContext, upstream: str) -> UpstreamView:
    """The view of one upstream, computed once per diagnostic (checks share it)."""
    return ctx.shared.get(("upstream-view", upstream), partial(_view, ctx, upstream))


def _view(ctx: CheckContext, upstream: str) -> UpstreamView:
    instance = ctx.instance
    component = instance.component(upstream)
    running = component.running
    answered: bool | None = None
    inside: dict[str, Any] = {"from": GATEWAY}
    if running and instance.component(GATEWAY).running:
        run = in_network_probe(ctx, GATEWAY)
        outcome = run.outcomes.get(upstream) if isinstance(run, HttpProbeRun) else None
        if run.usable and outcome is not None:
            answered = outcome.answered
            inside.update(url=outcome.url, http_status=outcome.http_status,
                          error=outcome.error, latency_seconds=outcome.latency_seconds)
        else:
            inside["skipped"] = run.error or "no result"
    return UpstreamView(upstream, running, answered, inside,
                        kong_address(ctx, upstream) if answered else None,
                        container_address(instance, upstream))


def container_address(instance: Instance, name: str) -> str | None:
    """The component's IPv4 address on the instance's network, from the listing."""
    container = instance.component(name).container
    if container is None or not container.addresses:
        return None
    default = f"{instance.compose_project}_default"
    if default in container.addresses:
        return container.addresses[default]
    gateway = instance.component(GATEWAY).container
    shared = [n for n in container.addresses if gateway is not None and n in gateway.networks]
    return container.addresses[shared[0]] if shared else None


def kong_address(ctx: CheckContext, upstream: str) -> str | None:
    """The address Kong last proxied the upstream's route to, from its recent log."""
    prefix = ROUTE_PREFIXES.get(upstream)
    kong = ctx.instance.component(GATEWAY).container
    if prefix is None or kong is None:
        return None
    try:
        lines = ctx.docker.logs(kong.id, since=time.time() - KONG_LOG_SECONDS,
                                tail=KONG_LOG_LINES)
    except DockerUnavailableError:
        return None
    return last_proxied_address(lines, prefix)


def last_proxied_address(lines: list[str], prefix: str) -> str | None:
    """The upstream "ip:port" of the latest log line for a request under prefix."""
    for line in reversed(lines):
        match = _PROXIED.search(line)
        if match and match.group("path").startswith(prefix):
            return f"{match.group('host')}:{match.group('port')}"
    return None
