"""service_health: does each running component answer HTTP, seen from inside its network.

One exec (in kong, else auth) probes every running HTTP component in parallel, and
network_connectivity reads kong's links to auth and rest from the same exec; kong itself
is probed through its published gateway on 127.0.0.1. Components without an HTTP probe are
judged by Docker's healthcheck from the listing. Non-running components are
container_status's business: they are reported as down here but raise nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TypedDict

import httpx

from exporter.checks.base import CheckContext, Family, Findings
from exporter.checks.probes import (
    HttpOutcome,
    HttpProbeRun,
    HttpTarget,
    probe_http,
    run_bounded,
    service_host,
)
from exporter.discovery.model import Component, Instance
from exporter.issues import Issue, make_issue

# component -> (port, path) of its health endpoint inside the compose network.
HTTP_PROBES: Mapping[str, tuple[int, str]] = {
    "auth": (9999, "/health"),
    "rest": (3000, "/"),
    "storage": (5000, "/status"),
    "meta": (8080, "/health"),
    "studio": (3000, "/api/profile"),
    "analytics": (4000, "/health"),
    "realtime": (4000, "/api/tenants/realtime/health"),
    "imgproxy": (5001, "/health"),
    "functions": (9000, "/"),
    "supavisor": (4000, "/api/health"),
}
GATEWAY = "kong"
GATEWAY_INTERNAL_PORT = 8000
# Containers the probe may run in, in order of preference; both ship wget.
PROBE_RUNNERS: tuple[str, ...] = ("kong", "auth")
# Any answer below this means the component is up (a 401 or 404 still proves it serves).
SERVER_ERROR = 500


class ComponentHealth(TypedDict):
    """One component as details show it: up by its HTTP probe, else by Docker's health."""

    up: bool
    http_status: int | None
    latency_seconds: float | None
    state: str
    docker_health: str | None
    probed: bool  # an HTTP probe answered for it (else Docker's healthcheck decided)


class ProbeInfo(TypedDict):
    """Which container ran the in-network probe, and why it told nothing."""

    ran_in: str | None
    error: str | None


class ServiceHealthDetails(TypedDict):
    """service_health's details."""

    components: dict[str, ComponentHealth]
    probe: ProbeInfo


SERVICE_HEALTH: Family[ServiceHealthDetails] = Family("service_health")


class ServiceHealthCheck:
    """Each running component answers its health endpoint without a server error."""

    name = SERVICE_HEALTH.name

    def run(self, ctx: CheckContext) -> Findings:
        """Probe running components (one exec, plus one gateway request) and judge them."""
        instance = ctx.instance
        if not instance.runtime_known:
            return Findings(skipped="docker unreachable")
        outcomes, probe, skipped = self._probe(ctx)
        issues: list[Issue] = []
        components: dict[str, ComponentHealth] = {}
        for name, component in instance.components.items():
            components[name], issue = self._judge(component, outcomes.get(name),
                                                  probe["ran_in"])
            if issue is not None:
                issues.append(issue)
        details: ServiceHealthDetails = {"components": components,
                                         "probe": ctx.redactor.data(probe)}
        if not any(c.running for c in instance.components.values()):
            # Nothing was probed: that is no evidence of health (container_status says why).
            skipped = "no component of the instance runs, so none was probed"
        return Findings(tuple(issues), details, skipped=skipped)

    def _probe(self, ctx: CheckContext) -> tuple[dict[str, HttpOutcome], ProbeInfo, str | None]:
        """Each probed component's outcome, where the in-network probe ran, and why the
        check is skipped when that probe could not run."""
        instance = ctx.instance
        targets = inside_targets(instance)
        runner = next((r for r in PROBE_RUNNERS if instance.component(r).running), None)
        probe: ProbeInfo = {"ran_in": runner, "error": None}
        skipped: str | None = None
        if targets and runner is None:
            skipped = probe["error"] = "neither kong nor auth runs to probe from"
        calls: dict[str, Callable[[], HttpProbeRun | HttpOutcome]] = {}
        if targets and runner is not None:
            calls["inside"] = partial(self._probe_inside, ctx, runner, targets)
        gateway_url = instance.endpoints.gateway_url
        if gateway_from_host(instance) and gateway_url is not None:
            calls["gateway"] = partial(probe_gateway, ctx.http, gateway_url)
        # The exec and the gateway request run side by side: one timeout, not two.
        results = dict(zip(calls, run_bounded(list(calls.values()), ctx.timeout * 2 + 1),
                           strict=True))
        outcomes: dict[str, HttpOutcome] = {}
        inside = results.get("inside")
        if isinstance(inside, BaseException):
            probe["error"] = f"probe did not finish: {type(inside).__name__}"
            skipped = "in-network probe unavailable"
        elif isinstance(inside, HttpProbeRun):
            probe.update({"ran_in": inside.ran_in, "error": inside.error})
            if inside.usable:
                outcomes.update(inside.outcomes)
            else:
                skipped = f"in-network probe unavailable: {inside.error}"
        gateway = results.get("gateway")
        if gateway is not None:
            outcomes[GATEWAY] = gateway if isinstance(gateway, HttpOutcome) else HttpOutcome(
                GATEWAY, gateway_url or "", None, None, "timeout")
        return outcomes, probe, skipped

    def _probe_inside(self, ctx: CheckContext, runner: str,
                      targets: list[HttpTarget]) -> HttpProbeRun:
        """Probe from the runner; if nothing answered there, once more from auth."""
        instance = ctx.instance
        run = in_network_probe(ctx, runner)
        nothing_answered = run.usable and len(targets) > 1 and not any(
            o.answered for o in run.outcomes.values())
        if nothing_answered and runner != "auth" and instance.component("auth").running:
            # Everything failing from kong points at kong's own network, not at every
            # component: a second vantage point tells the two apart.
            retry = in_network_probe(ctx, "auth")
            if retry.usable:
                return retry
        return run

    def _judge(self, component: Component, outcome: HttpOutcome | None,
               ran_in: str | None) -> tuple[ComponentHealth, Issue | None]:
        name = component.name
        health = component.container.health if component.container else None
        entry: ComponentHealth = {"up": False, "http_status": None, "latency_seconds": None,
                                 "state": component.state, "docker_health": health,
                                 "probed": False}
        if not component.running:
            return entry, None
        if outcome is None:
            # No HTTP probe for it (db, vector) or the probe could not run: Docker's
            # healthcheck is the only signal; "starting" is not yet proven up.
            entry["up"] = health in (None, "healthy")
            return entry, None
        entry.update({"probed": True, "http_status": outcome.http_status,
                      "latency_seconds": outcome.latency_seconds,
                      "up": outcome.answered and (outcome.http_status or 0) < SERVER_ERROR})
        where = "the host, through the published gateway" if name == GATEWAY and \
            outcome.url.startswith("http://127.0.0.1") else f"inside the {ran_in} container"
        if not outcome.answered:
            return entry, make_issue(
                "COMPONENT_UNREACHABLE", check=self.name, component=name,
                message=f"{name} does not answer {outcome.url} ({outcome.error})",
                evidence={"url": outcome.url, "error": outcome.error, "probed_from": where,
                          "latency_seconds": outcome.latency_seconds,
                          "docker_health": health})
        if (outcome.http_status or 0) >= SERVER_ERROR:
            return entry, make_issue(
                "COMPONENT_UNHEALTHY", check=self.name, component=name,
                message=f"{name} answers {outcome.url} with HTTP {outcome.http_status}",
                evidence={"url": outcome.url, "http_status": outcome.http_status,
                          "probed_from": where, "latency_seconds": outcome.latency_seconds,
                          "docker_health": health})
        return entry, None


def gateway_from_host(instance: Instance) -> bool:
    """True when kong runs and publishes a gateway port the host can probe directly."""
    return instance.component(GATEWAY).running and instance.endpoints.gateway_url is not None


def inside_targets(instance: Instance) -> list[HttpTarget]:
    """What the in-network probe covers: every HTTP component, kong too unless published."""
    return internal_targets(instance, include_gateway=not gateway_from_host(instance))


def in_network_probe(ctx: CheckContext, runner: str) -> HttpProbeRun:
    """Every running HTTP component probed from inside runner's container, once per run."""
    container_id = _container_id(ctx.instance, runner)
    targets = inside_targets(ctx.instance)
    return ctx.shared.get(("http-probe", container_id, tuple(targets)), partial(
        probe_http, ctx.docker, container_id, runner, targets, ctx.timeout))


def internal_targets(instance: Instance, include_gateway: bool) -> list[HttpTarget]:
    """The in-network URLs of every running component that has an HTTP probe."""
    targets: list[HttpTarget] = []
    for name, component in instance.components.items():
        if not component.running:
            continue
        if name == GATEWAY and include_gateway:
            port, path = GATEWAY_INTERNAL_PORT, "/"
        elif name in HTTP_PROBES:
            port, path = HTTP_PROBES[name]
        else:
            continue
        host = service_host(component)
        if name == "realtime" and component.container is not None:
            # Realtime picks its tenant from the Host header: its container name
            # (realtime-dev.…) names the tenant the health route belongs to.
            host = component.container.name
        targets.append(HttpTarget(name, f"http://{host}:{port}{path}"))
    return targets


def probe_gateway(http: httpx.Client, gateway_url: str) -> HttpOutcome:
    """GET the gateway's root on 127.0.0.1; any answer below 500 means kong serves."""
    url = gateway_url.rstrip("/") + "/"
    started = time.monotonic()
    try:
        response = http.get(url)
    except httpx.TimeoutException:
        return HttpOutcome(GATEWAY, url, None, round(time.monotonic() - started, 3), "timeout")
    except httpx.ConnectError:
        return HttpOutcome(GATEWAY, url, None, round(time.monotonic() - started, 3), "refused")
    except httpx.HTTPError as exc:
        return HttpOutcome(GATEWAY, url, None, round(time.monotonic() - started, 3),
                           type(exc).__name__)
    return HttpOutcome(GATEWAY, url, response.status_code,
                       round(time.monotonic() - started, 3), None)


def _container_id(instance: Instance, component: str) -> str:
    container = instance.component(component).container
    assert container is not None  # callers pick running components only
    return container.id
