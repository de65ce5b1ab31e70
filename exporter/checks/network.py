"""network_connectivity: published ports, who holds them, the compose network, inner links.

The host only connects to 127.0.0.1 and ::1; links between services are tested from inside
the compose network by exec, never via a container's IP: kong -> auth/rest are read from
the in-network probe service_health runs in kong (one exec for both checks), auth -> db is
a TCP test from auth.
"""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NotRequired, Required, TypedDict

from exporter.checks.base import CheckContext, Family, Findings
from exporter.checks.exposure import Exposure, exposure
from exporter.checks.listener import url_port
from exporter.checks.probes import (
    Connect,
    HttpProbeRun,
    HttpTarget,
    TcpOutcome,
    call_bounded,
    probe_http,
    probe_tcp,
    run_bounded,
    service_host,
    tcp_connect,
)
from exporter.checks.services import in_network_probe
from exporter.checks.sockets import listeners_on
from exporter.discovery.model import Instance
from exporter.dockerhost import ContainerSummary
from exporter.errors import DockerUnavailableError
from exporter.issues import Issue, make_issue

IPV4, IPV6 = "127.0.0.1", "::1"
# Components whose start fails when a host port they publish is taken.
PUBLISHING = ("kong", "db", "analytics", "supavisor")
_PORT_TAKEN = ("address already in use", "port is already allocated")
_PORT_IN_ERROR = re.compile(r"(?:Bind for|listen tcp[46]?)\s+\[?[0-9A-Fa-f.:]*\]?:(\d{1,5})\b")
_NETWORK_GONE = re.compile(r"network \S+ not found", re.IGNORECASE)
# Links tested from inside: (from, to, port, path); path None means a plain TCP test.
LINKS: tuple[tuple[str, str, int, str | None], ...] = (
    ("kong", "auth", 9999, "/health"),
    ("kong", "rest", 3000, "/"),
    ("auth", "db", 5432, None),
)
_NO_NETWORK = {"none", "host"}


class PortState(TypedDict):
    """One published port as the host sees it on both loopbacks."""

    component: str
    port: int
    ipv4: bool | None  # accepts connections on 127.0.0.1 (None: no IPv4 here)
    ipv6: bool | None  # on ::1 (None: no IPv6 here, or not tried in time)
    ipv4_error: str | None
    published: bool  # the instance's own container publishes it


class NetworkState(TypedDict):
    """The compose network the instance's containers should share, and theirs."""

    expected: str | None
    attached: dict[str, list[str]]  # running component -> its networks


class LinkState(TypedDict, total=False):
    """One inner link (LINKS): whether it works, or why it was not tested."""

    ok: Required[bool | None]
    skipped: str
    http_status: int | None
    error: str | None
    tool: str | None  # what tested a TCP link inside the container


class NetworkDetails(Exposure):
    """network_connectivity's details (network and links only with Docker reachable)."""

    ports: dict[str, PortState]  # by PublishedEndpoint.label
    localhost_ipv6: bool | None  # localhost resolves to ::1 here
    network: NotRequired[NetworkState]
    links: NotRequired[dict[str, LinkState]]  # by "source->target"


NETWORK_CONNECTIVITY: Family[NetworkDetails] = Family("network_connectivity")


@dataclass(frozen=True)
class PublishedEndpoint:
    """A host port the instance should publish, and the component that owns it."""

    label: str
    component: str
    port: int


class NetworkConnectivityCheck:
    """Published ports answer, nothing else holds them, the network and inner links work."""

    name = NETWORK_CONNECTIVITY.name

    def __init__(self, proc_root: Path = Path("/proc"),
                 localhost_addresses: Callable[[], list[str]] | None = None) -> None:
        self._proc = proc_root
        self._localhost = localhost_addresses or _localhost_addresses

    def run(self, ctx: CheckContext) -> Findings:
        """Ports from the host, then network membership and links from the containers."""
        instance = ctx.instance
        issues: list[Issue] = []
        endpoints = published_endpoints(instance)
        ports, localhost_v6 = self._probe_ports(ctx, endpoints)
        # The instance's own exposure comes from its files and the listing: always judged.
        exposed, exposure_details = exposure(instance)
        issues.extend(exposed)
        details: NetworkDetails = {"ports": ports, "localhost_ipv6": localhost_v6,
                                   "exposed_ports": exposure_details["exposed_ports"]}
        if not instance.runtime_known:
            # The ports were still tried: that needs no Docker.
            for ep in endpoints:
                if not ports[ep.label]["ipv4"]:
                    issues.append(self._not_listening(ep, ports[ep.label], None))
            return Findings(tuple(issues), details, skipped="docker unreachable")

        holders = _HolderFinder(ctx, self._proc)
        start_errors = self._start_errors(ctx)
        conflicts: set[tuple[str, int]] = set()
        for ep in endpoints:
            issues.extend(self._judge_port(ctx, ep, ports[ep.label], localhost_v6, holders,
                                           start_errors.get(ep.component), conflicts))
        issues.extend(self._start_error_issues(ctx, start_errors, holders, conflicts))
        network_issues, network = self._networks(ctx)
        issues.extend(network_issues)
        details["network"] = network
        link_issues, links = self._links(ctx)
        issues.extend(link_issues)
        details["links"] = links
        return Findings(tuple(issues), ctx.redactor.data(details))

    # ports ---------------------------------------------------------------------------

    def _probe_ports(self, ctx: CheckContext, endpoints: Sequence[PublishedEndpoint]
                     ) -> tuple[dict[str, PortState], bool | None]:
        """Connect to every port on both loopbacks at once; resolve localhost alongside."""
        calls: list[Callable[[], Any]] = []
        for ep in endpoints:
            calls.append(partial(tcp_connect, IPV4, ep.port, ctx.timeout))
            calls.append(partial(tcp_connect, IPV6, ep.port, ctx.timeout))
        calls.append(self._localhost)
        results = run_bounded(calls, ctx.timeout + 1)
        resolved = results[-1]
        localhost_v6 = (any(":" in a for a in resolved) if isinstance(resolved, list)
                        else None)
        ports: dict[str, PortState] = {}
        for i, ep in enumerate(endpoints):
            v4, v6 = results[2 * i], results[2 * i + 1]
            owner = instance_container(ctx.instance, ep.component)
            ports[ep.label] = {
                "component": ep.component, "port": ep.port,
                "ipv4": v4.ok if isinstance(v4, Connect) else False,
                "ipv6": v6.ok if isinstance(v6, Connect) else None,
                "ipv4_error": v4.error if isinstance(v4, Connect) else "timeout",
                "published": owner is not None and publishes(owner, ep.port),
            }
        return ports, localhost_v6

    def _judge_port(self, ctx: CheckContext, ep: PublishedEndpoint, seen: PortState,
                    localhost_v6: bool | None, holders: _HolderFinder,
                    start_error: str | None, conflicts: set[tuple[str, int]]) -> list[Issue]:
        owner = instance_container(ctx.instance, ep.component)
        if not seen["ipv4"]:
            return [self._not_listening(ep, seen, owner)]
        if not seen["published"]:
            # It answers, yet not through this instance's container: someone else has it.
            conflicts.add((ep.component, ep.port))
            return [self._conflict(ctx, ep.component, ep.port, holders,
                                   f"{ep.component}'s host port {ep.port} is held by "
                                   "something else",
                                   {"owner_state": owner.state if owner else "missing",
                                    "start_error": start_error})]
        if seen["ipv6"] is False and localhost_v6:
            return [make_issue(
                "PORT_NOT_LISTENING", check=self.name, component=ep.component,
                severity="info", repair=None,
                message=f"port {ep.port} ({ep.label}) answers on 127.0.0.1 but not on ::1, "
                        "and localhost resolves to ::1 here: clients using localhost fail",
                evidence={"port": ep.port, "ipv4": True, "ipv6": False,
                          "localhost_resolves_to_ipv6": True})]
        return []

    def _not_listening(self, ep: PublishedEndpoint, seen: PortState,
                       owner: ContainerSummary | None) -> Issue:
        return make_issue(
            "PORT_NOT_LISTENING", check=self.name, component=ep.component,
            message=f"nothing accepts connections on 127.0.0.1:{ep.port} ({ep.label})",
            evidence={"port": ep.port, "address": IPV4, "error": seen.get("ipv4_error"),
                      "ipv6": seen.get("ipv6"),
                      "container_state": owner.state if owner else "missing",
                      "published_by_container": seen.get("published")})

    def _conflict(self, ctx: CheckContext, component: str, port: int,
                  holders: _HolderFinder, message: str, extra: dict[str, Any]) -> Issue:
        holder = holders.describe(port, exclude=component)
        return make_issue(
            "PORT_CONFLICT", check=self.name, component=component,
            message=f"{message}: {holder_text(holder)}",
            evidence=ctx.redactor.data({"port": port, **extra, **holder}))

    def _start_errors(self, ctx: CheckContext) -> dict[str, str]:
        """State.Error of each port-publishing container that is down (redacted)."""
        errors: dict[str, str] = {}
        for name in PUBLISHING:
            container = instance_container(ctx.instance, name)
            if container is None or container.state in ("running", "paused"):
                continue
            try:
                details = ctx.docker.inspect(container.id)
            except DockerUnavailableError:
                break  # the engine is in trouble; container_status reports it
            if details is not None and details.error:
                errors[name] = ctx.redactor.text(details.error)[:500]
        return errors

    def _start_error_issues(self, ctx: CheckContext, errors: dict[str, str],
                            holders: _HolderFinder, conflicts: set[tuple[str, int]]
                            ) -> list[Issue]:
        """A taken port or a vanished network, as a failed start reports them."""
        issues: list[Issue] = []
        for name, error in errors.items():
            container = instance_container(ctx.instance, name)
            assert container is not None  # errors come from existing containers only
            evidence = {"error": error, "state": container.state}
            if any(word in error for word in _PORT_TAKEN):
                match = _PORT_IN_ERROR.search(error)
                port = int(match.group(1)) if match else None
                if port is None:
                    issues.append(make_issue(
                        "PORT_CONFLICT", check=self.name, component=name,
                        message=f"{container.name} cannot start: a port it publishes is taken",
                        evidence=evidence))
                elif (name, port) not in conflicts:
                    conflicts.add((name, port))
                    issues.append(self._conflict(
                        ctx, name, port, holders,
                        f"{container.name} cannot start: host port {port} is taken",
                        evidence))
            elif _NETWORK_GONE.search(error):
                issues.append(make_issue(
                    "NETWORK_MISSING", check=self.name, component=name,
                    message=f"{container.name} cannot start: its network is gone",
                    evidence=evidence))
        return issues

    # networks ------------------------------------------------------------------------

    def _networks(self, ctx: CheckContext) -> tuple[list[Issue], NetworkState]:
        """Every running container is attached to the instance's compose network."""
        instance = ctx.instance
        running = {name: c.container for name, c in instance.components.items()
                   if c.running and c.container is not None}
        attached = {name: [n for n in c.networks if n not in _NO_NETWORK]
                    for name, c in running.items()}
        default = f"{instance.compose_project}_default"
        counts = Counter(n for nets in attached.values() for n in nets)
        expected = default if default in counts else (
            min(counts, key=lambda n: (-counts[n], n)) if counts else None)
        info: NetworkState = {"expected": expected, "attached": attached}
        issues: list[Issue] = []
        if running and expected is None:
            issues.append(make_issue(
                "NETWORK_MISSING", check=self.name,
                message="no running container of the instance is attached to a network",
                evidence={"expected": default, "containers": sorted(running)}))
            return issues, info
        for name, nets in sorted(attached.items()):
            if expected not in nets:
                issues.append(make_issue(
                    "NETWORK_MISSING", check=self.name, component=name,
                    message=f"{running[name].name} is not attached to {expected}",
                    evidence={"expected": expected, "attached": nets}))
        return issues, info

    # links ---------------------------------------------------------------------------

    def _links(self, ctx: CheckContext) -> tuple[list[Issue], dict[str, LinkState]]:
        """kong -> auth/rest from service_health's probe, auth -> db by exec, side by side."""
        instance = ctx.instance
        links: dict[str, LinkState] = {}
        http: dict[str, list[tuple[str, str]]] = {}  # source -> [(key, target)]
        tcp: list[tuple[str, str, str, str, int]] = []  # (key, source, target, host, port)
        for source, target, port, path in LINKS:
            key = f"{source}->{target}"
            if not (instance.component(source).running and instance.component(target).running):
                links[key] = {"ok": None, "skipped": "a side is not running"}
            elif path is None:
                tcp.append((key, source, target, service_host(instance.component(target)),
                            port))
            else:
                # The in-network probe covers every running HTTP component, at the same
                # port and path as LINKS names, so the link is one of its outcomes.
                http.setdefault(source, []).append((key, target))
        calls: list[Callable[[], Any]] = [partial(in_network_probe, ctx, source)
                                          for source in http]
        calls.extend(partial(probe_tcp, ctx.docker, _cid(instance, source), host, port,
                             ctx.timeout) for _, source, _, host, port in tcp)
        results = iter(run_bounded(calls, ctx.timeout + 2))
        judged: list[tuple[str, tuple[LinkState, Issue | None]]] = []
        for source, pairs in http.items():
            run = next(results)
            judged.extend((key, self._http_link(ctx, source, target, run))
                          for key, target in pairs)
        judged.extend((key, self._tcp_link(source, target, f"{host}:{port}", next(results)))
                      for key, source, target, host, port in tcp)
        issues: list[Issue] = []
        for key, (state, issue) in judged:
            links[key] = state
            if issue is not None:
                issues.append(issue)
        return issues, links

    def _http_link(self, ctx: CheckContext, source: str, target: str, run: object
                   ) -> tuple[LinkState, Issue | None]:
        """A link read from source's in-network probe (or what that probe failed with)."""
        probe = run if isinstance(run, HttpProbeRun) else None
        outcome = probe.outcomes.get(target) if probe is not None and probe.usable else None
        if outcome is None:
            return {"ok": None, "skipped": probe.error if probe is not None and probe.error
                    else "probe did not finish"}, None
        state: LinkState = {"ok": outcome.answered, "http_status": outcome.http_status,
                            "error": outcome.error}
        if outcome.answered:
            return state, None
        issue = self._link_down(source, target, outcome.url, outcome.error)
        if outcome.error == "dns":
            issue = self._name_fault(ctx, issue, outcome.url)
        return state, issue

    def _name_fault(self, ctx: CheckContext, issue: Issue, url: str) -> Issue:
        """A name that does not resolve: if the target answers at its container name, the
        link is at fault, not its ends (the container lost its compose alias)."""
        source, target = issue.evidence["from"], issue.evidence["to"]
        container = instance_container(ctx.instance, target)
        name = service_host(ctx.instance.component(target))
        if container is None or f"//{name}:" not in url:
            return issue
        other = url.replace(f"//{name}:", f"//{container.name}:", 1)
        try:
            run = call_bounded(lambda: probe_http(
                ctx.docker, _cid(ctx.instance, source), source, [HttpTarget(target, other)],
                ctx.timeout), ctx.timeout + 2)
        except TimeoutError:
            return issue
        answer = run.outcomes.get(target) if run.usable else None
        if answer is None or not answer.answered:
            return issue
        return make_issue(
            "INTERNAL_LINK_DOWN", check=self.name, component=target, repair="recreate_container",
            message=f"{source} cannot resolve {target}'s name {name!r} while {target} answers "
                    f"at {container.name}: the link is at fault, not its ends (the container "
                    "is on the network without its compose alias)",
            evidence={**issue.evidence, "ends_healthy": True, "name": name,
                      "answers_at": container.name, "http_status": answer.http_status})

    def _tcp_link(self, source: str, target: str, where: str, tested: object
                  ) -> tuple[LinkState, Issue | None]:
        """A link tested by a TCP connect from inside source's container."""
        if not isinstance(tested, TcpOutcome) or tested.reachable is None:
            return {"ok": None, "skipped": tested.detail if isinstance(tested, TcpOutcome)
                    else "probe did not finish"}, None
        state: LinkState = {"ok": tested.reachable, "tool": tested.tool}
        if tested.reachable:
            return state, None
        return state, self._link_down(source, target, where, tested.detail or "no response")

    def _link_down(self, source: str, target: str, where: str, error: str | None) -> Issue:
        return make_issue(
            "INTERNAL_LINK_DOWN", check=self.name, component=target,
            message=f"{source} cannot reach {target} at {where} ({error})",
            evidence={"from": source, "to": target, "target": where, "error": error})


# ---- helpers ---------------------------------------------------------------------------

def published_endpoints(instance: Instance) -> list[PublishedEndpoint]:
    """The host ports the instance publishes, from its endpoints (registry or containers)."""
    eps = instance.endpoints
    found: list[PublishedEndpoint] = []
    for label, component, url in (("gateway", "kong", eps.gateway_url),
                                  ("gateway_https", "kong", eps.gateway_https_url),
                                  ("analytics", "analytics", eps.analytics_url)):
        port = url_port(url)
        if port is not None:
            found.append(PublishedEndpoint(label, component, port))
    if eps.db_port:
        found.append(PublishedEndpoint("db", "db", eps.db_port))
    return found


def holder_text(holder: dict[str, Any]) -> str:
    """Who holds the port, in words: the container (and its instance) the listing shows,
    else the processes /proc shows; the engine's own proxy is named through its container."""
    container = holder.get("holder_container")
    if container:
        project = container.get("compose_project")
        where = ("of this instance" if container.get("same_instance")
                 else f"of {project}" if project else "outside any compose project")
        return f"held by container {container['name']} ({where})"
    processes = [x for x in holder.get("listeners", [])]
    if processes:
        return "held by " + ", ".join(f"process {x['process']} (pid {x['pid']}, "
                                      f"{x['address']})" for x in processes)
    return "its holder is not visible to this process"


def instance_container(instance: Instance, component: str) -> ContainerSummary | None:
    """The component's container from the listing, if any."""
    return instance.component(component).container


def publishes(container: ContainerSummary, port: int) -> bool:
    """True when the listing shows the container publishing this host port.

    A paused container still holds its ports (Docker's proxy accepts, nobody answers): it
    is a hung component (container_status says so), never a port conflict.
    """
    return (container.state in ("running", "paused")
            and any(p.host_port == port for p in container.ports))


def _cid(instance: Instance, component: str) -> str:
    container = instance.component(component).container
    assert container is not None  # only running components are probed
    return container.id


def _localhost_addresses() -> list[str]:
    """What localhost resolves to on this host (from /etc/hosts, normally)."""
    infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class _HolderFinder:
    """Who holds a host port: a process via /proc, a container via the listing."""

    def __init__(self, ctx: CheckContext, proc: Path) -> None:
        self._ctx = ctx
        self._proc = proc
        self._listing: list[ContainerSummary] | None = None

    def describe(self, port: int, exclude: str) -> dict[str, Any]:
        """Evidence naming the holder of port (never the component it belongs to)."""
        deadline = time.monotonic() + self._ctx.timeout
        try:
            listeners = call_bounded(lambda: listeners_on(self._proc, port, deadline),
                                     self._ctx.timeout + 1)
        except (OSError, TimeoutError):
            listeners = []
        out: dict[str, Any] = {
            "listeners": [x.to_dict() for x in listeners],
            "holder_container": self._container_on(port, exclude),
        }
        if not listeners:
            out["listeners_note"] = "no owner found in /proc (not visible to this process)"
        return out

    def _container_on(self, port: int, exclude: str) -> dict[str, Any] | None:
        instance = self._ctx.instance
        for name, component in instance.components.items():
            c = component.container
            if name != exclude and c is not None and publishes(c, port):
                return {"name": c.name, "compose_project": c.compose_project,
                        "same_instance": True}
        if self._listing is None:
            # One listing at most, and only because a conflict is suspected.
            try:
                self._listing = self._ctx.docker.list_containers()
            except DockerUnavailableError:
                self._listing = []
        for c in self._listing:
            if c.compose_project != instance.compose_project and publishes(c, port):
                return {"name": c.name, "compose_project": c.compose_project,
                        "same_instance": False}
        return None
