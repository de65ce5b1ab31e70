"""network_connectivity: real listeners on 127.0.0.1 for the published ports and the port
holder found through /proc; container networks and exec answers from plain data."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from exporter.checks.base import status_of
from exporter.checks.network import NetworkConnectivityCheck, listeners_on
from exporter.checks.probes import TCP_PROBE_SCRIPT, probe_tcp
from exporter.checks.services import ServiceHealthCheck
from exporter.discovery.model import Instance
from exporter.dockerhost import ExecResult
from exporter.rootcause import find_root_cause
from tests.unit.checks.plainhost import (
    LocalExec,
    Ports,
    ScriptedDocker,
    busybox_path,
    codes,
    container,
    context,
    details,
    healthy,
    make_instance,
    only,
    probe_reply,
    published,
    with_container,
)

Listen = Callable[[], int]


@pytest.fixture
def listen() -> Iterator[Listen]:
    """Opens real IPv4 listeners on ephemeral 127.0.0.1 ports; returns each port."""
    with ExitStack() as stack:
        def open_one() -> int:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
            return int(sock.getsockname()[1])
        yield open_one


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def links_docker(http: dict[str, tuple[int | None, str]] | None = None,
                 tcp: str = "@@ pg_isready 0\n127.0.0.1:5432 - accepting connections\n",
                 **kw: object) -> ScriptedDocker:
    """A docker whose execs answer like the link probes would."""
    def handler(container_id: str, argv: list[str]) -> ExecResult:
        if argv[2] == TCP_PROBE_SCRIPT:
            return ExecResult(0, tcp)
        return ExecResult(0, probe_reply(http or {})(argv))
    return ScriptedDocker(exec_handler=handler, **kw)  # type: ignore[arg-type]


def live_ports(listen: Listen) -> Ports:
    return Ports(gateway=listen(), gateway_https=listen(), db=listen(), analytics=listen())


def no_ipv6_localhost() -> list[str]:
    return ["127.0.0.1"]


def test_healthy_instance(listen: Listen) -> None:
    ports = live_ports(listen)
    docker = links_docker()
    check = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost)
    findings = check.run(context(make_instance(ports=ports), docker))
    assert findings.issues == ()
    assert findings.details["ports"]["db"]["ipv4"] is True
    assert findings.details["ports"]["db"]["published"] is True
    assert findings.details["network"]["expected"] == "supabase-abcd1234_default"
    assert findings.details["links"]["kong->auth"]["ok"] is True
    assert findings.details["links"]["auth->db"] == {"ok": True, "tool": "pg_isready"}
    # Two execs (kong -> auth/rest together, auth -> db), no inspect, no listing.
    kong = make_instance(ports=ports).components["kong"].container
    auth = make_instance(ports=ports).components["auth"].container
    assert sorted(c for c, _ in docker.execs) == sorted([kong.id, auth.id])  # type: ignore[union-attr]
    assert docker.inspected == [] and docker.listed == 0


def test_port_not_listening(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=closed_port(), analytics=listen())
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(make_instance(ports=ports), links_docker()))
    issue = only(findings.issues, "PORT_NOT_LISTENING")
    assert issue.component == "db" and issue.severity == "critical"
    assert issue.evidence["port"] == ports.db and issue.evidence["error"] == "refused"


def test_port_held_by_another_process_names_its_pid(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    # db exited: it publishes nothing, yet its port answers: the test process holds it.
    instance = with_container(make_instance(ports=ports), "db",
                              container("db", state="exited"))
    docker = links_docker()
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, docker))
    issue = only(findings.issues, "PORT_CONFLICT")
    assert issue.component == "db" and issue.evidence["port"] == ports.db
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp here")
    pids = [x["pid"] for x in issue.evidence["listeners"]]
    assert os.getpid() in pids
    holder = next(x for x in issue.evidence["listeners"] if x["pid"] == os.getpid())
    assert holder["address"] == "127.0.0.1"
    assert issue.evidence["holder_container"] is None
    assert f"held by process {holder['process']} (pid {os.getpid()}, 127.0.0.1)" in \
        issue.message
    assert docker.listed == 1  # one listing, only because a conflict was suspected


def test_a_paused_container_still_holds_its_port_and_is_no_conflict(listen: Listen) -> None:
    # pause:kong: Docker's proxy accepts on kong's port, nobody answers. container_status
    # reports the paused container; a conflict would send the operator hunting a holder.
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    paused = with_container(make_instance(ports=ports), "kong", container(
        "kong", state="paused", status="Up 2 hours (Paused)",
        ports=published(8000, ports.gateway or 0)))
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(paused, links_docker()))
    assert "PORT_CONFLICT" not in codes(findings.issues)
    assert findings.details["ports"]["gateway"]["published"] is True


def test_port_held_by_another_instances_container(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    instance = with_container(make_instance(ports=ports), "db",
                              container("db", state="exited"))
    other = container("supavisor", iid="ffff0000", project="supabase-ffff0000",
                      ports=published(5432, ports.db or 0))
    docker = links_docker(listing=[other])
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, docker))
    issue = only(findings.issues, "PORT_CONFLICT")
    assert issue.evidence["holder_container"] == {
        "name": "supabase-pooler-ffff0000", "compose_project": "supabase-ffff0000",
        "same_instance": False}
    assert issue.message.endswith(
        "held by container supabase-pooler-ffff0000 (of supabase-ffff0000)")


def test_start_error_port_allocated_is_a_conflict_once(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    kong = container("kong", state="created", status="Created")
    pooler = container("supavisor", state="created", status="Created")
    error = (f"driver failed programming external connectivity on endpoint {kong.name}: "
             f"Bind for 127.0.0.1:{ports.gateway} failed: port is already allocated")
    pooler_error = "listen tcp4 0.0.0.0:5432: bind: address already in use"
    instance = with_container(make_instance(ports=ports), "kong", kong)
    instance = with_container(instance, "supavisor", pooler)
    docker = links_docker(inspects={kong.id: details(kong, exit_code=128, error=error),
                                    pooler.id: details(pooler, exit_code=128,
                                                       error=pooler_error)})
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, docker))
    conflicts = [i for i in findings.issues if i.code == "PORT_CONFLICT"]
    assert sorted((i.component, i.evidence["port"]) for i in conflicts) == [
        ("kong", ports.gateway), ("supavisor", 5432)]
    kong_issue = next(i for i in conflicts if i.component == "kong")
    assert "port is already allocated" in kong_issue.evidence["start_error"]
    pooler_issue = next(i for i in conflicts if i.component == "supavisor")
    assert "address already in use" in pooler_issue.evidence["error"]
    assert pooler_issue.message.startswith(f"{pooler.name} cannot start: host port 5432 is "
                                           "taken: ")


def test_ipv4_only_port_is_info_when_localhost_means_ipv6(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    check = NetworkConnectivityCheck(localhost_addresses=lambda: ["127.0.0.1", "::1"])
    findings = check.run(context(make_instance(ports=ports), links_docker()))
    if findings.details["ports"]["db"]["ipv6"] is None:
        pytest.skip("no IPv6 loopback on this host")
    assert findings.details["ports"]["db"]["ipv6"] is False
    infos = [i for i in findings.issues if i.code == "PORT_NOT_LISTENING"]
    assert len(infos) == 3 and {i.severity for i in infos} == {"info"}
    assert status_of(findings) == "ok"  # worth knowing, not a failure
    quiet = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(make_instance(ports=ports), links_docker()))
    assert quiet.issues == ()


def test_container_detached_from_the_network(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    instance = with_container(make_instance(ports=ports), "rest",
                              container("rest", networks=()))
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, links_docker()))
    issue = only(findings.issues, "NETWORK_MISSING")
    assert issue.component == "rest" and issue.evidence["expected"] == \
        "supabase-abcd1234_default"


def test_no_container_on_any_network(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    bare = {name: container(name, networks=("none",)) for name in healthy()}
    for name in ("kong", "db", "analytics"):
        bare[name] = container(name, networks=("none",), ports=healthy(ports)[name].ports)  # type: ignore[union-attr]
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(make_instance(bare, ports=ports), links_docker()))
    issue = only(findings.issues, "NETWORK_MISSING")
    assert issue.component is None


def test_network_gone_in_start_error(listen: Listen) -> None:
    ports = Ports(gateway=closed_port(), db=listen(), analytics=listen())
    kong = container("kong", state="created", status="Created")
    instance = with_container(make_instance(ports=ports), "kong", kong)
    docker = links_docker(inspects={kong.id: details(
        kong, exit_code=128, error="network 3f2a1b0c9d8e not found")})
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, docker))
    assert codes(findings.issues) == ["NETWORK_MISSING", "PORT_NOT_LISTENING"]
    assert only(findings.issues, "PORT_NOT_LISTENING").evidence["container_state"] == "created"


def test_internal_links_down(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    docker = links_docker(http={"auth": (None, "dns"), "rest": (401, "-")},
                          tcp="@@ pg_isready 2\ndb:5432 - no response\n")
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(make_instance(ports=ports), docker))
    downs = sorted((i.component, i.evidence["from"], i.evidence["error"])
                   for i in findings.issues if i.code == "INTERNAL_LINK_DOWN")
    assert downs == [("auth", "kong", "dns"), ("db", "auth", "db:5432 - no response")]
    # Any HTTP answer, even 401, proves the link works.
    assert findings.details["links"]["kong->rest"]["ok"] is True


def renamed_docker(instance: Instance, target: str, answers: bool) -> ScriptedDocker:
    """Execs where `target`'s service name does not resolve; its container name answers
    when `answers`."""
    container = instance.component(target).container
    assert container is not None
    name = container.name

    def handler(container_id: str, argv: list[str]) -> ExecResult:
        if argv[2] == TCP_PROBE_SCRIPT:
            return ExecResult(0, "@@ pg_isready 0\n127.0.0.1:5432 - accepting connections\n")
        urls = dict(zip(argv[5::2], argv[6::2], strict=True))
        at_container = f"//{name}:" in urls.get(target, "")
        return ExecResult(0, probe_reply(
            {target: (200, "-") if answers and at_container else (None, "dns")})(argv))
    return ScriptedDocker(exec_handler=handler)


def test_a_name_that_no_longer_resolves_is_the_links_own_fault(listen: Listen) -> None:
    instance = make_instance(ports=live_ports(listen))
    docker = renamed_docker(instance, "rest", answers=True)
    ctx = context(instance, docker)
    network = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(ctx)
    services = ServiceHealthCheck().run(ctx)
    link = only(network.issues, "INTERNAL_LINK_DOWN")
    rest = instance.component("rest").container
    assert rest is not None
    assert (link.component, link.repair) == ("rest", "recreate_container")
    assert link.evidence["ends_healthy"] is True
    assert (link.evidence["from"], link.evidence["answers_at"]) == ("kong", rest.name)
    # The link is the root: what kong's probe sees of rest follows from it.
    root = find_root_cause([*services.issues, *network.issues])
    assert root is not None and root.issue is link
    assert root.chain[0]["link"] == "kong->rest"
    assert ("COMPONENT_UNREACHABLE", "rest") in {(i.code, i.component) for i in root.explains}


def test_a_name_that_does_not_resolve_anywhere_is_no_link_fault(listen: Listen) -> None:
    instance = make_instance(ports=live_ports(listen))
    network = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, renamed_docker(instance, "rest", answers=False)))
    link = only(network.issues, "INTERNAL_LINK_DOWN")
    assert link.repair is None and "ends_healthy" not in link.evidence


def test_links_skipped_without_tools_or_running_targets(listen: Listen) -> None:
    ports = Ports(gateway=listen(), db=listen(), analytics=listen())
    instance = with_container(make_instance(ports=ports), "rest",
                              container("rest", state="exited"))
    docker = links_docker(tcp="@@ none\n")
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, docker))
    assert findings.issues == ()
    links = findings.details["links"]
    assert links["kong->rest"] == {"ok": None, "skipped": "a side is not running"}
    assert links["auth->db"]["ok"] is None and "pg_isready" in links["auth->db"]["skipped"]
    probed = next(argv for _, argv in docker.execs if argv[2] != TCP_PROBE_SCRIPT)[5::2]
    assert "auth" in probed and "rest" not in probed


def test_kong_links_come_from_the_service_health_probe(listen: Listen) -> None:
    instance = make_instance(ports=live_ports(listen))
    docker = links_docker({"auth": (None, "refused")})
    ctx = context(instance, docker)
    network = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(ctx)
    services = ServiceHealthCheck().run(ctx)
    http_execs = [cid for cid, argv in docker.execs if argv[2] != TCP_PROBE_SCRIPT]
    assert http_execs == [instance.component("kong").container.id]  # one exec, both checks
    assert ("INTERNAL_LINK_DOWN", "auth") in {(i.code, i.component) for i in network.issues}
    assert ("COMPONENT_UNREACHABLE", "auth") in {(i.code, i.component)
                                                 for i in services.issues}
    # A new diagnostic gets a new context: nothing is reused across runs.
    NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(instance, docker))
    assert len([1 for _, argv in docker.execs if argv[2] != TCP_PROBE_SCRIPT]) == 2


def test_docker_unreachable_still_tries_the_ports() -> None:
    ports = Ports(gateway=closed_port(), db=None, analytics=None)
    docker = ScriptedDocker(down=True)
    findings = NetworkConnectivityCheck(localhost_addresses=no_ipv6_localhost).run(
        context(make_instance(ports=ports, runtime_known=False), docker))
    assert findings.skipped == "docker unreachable"
    assert codes(findings.issues) == ["PORT_NOT_LISTENING"]
    assert docker.execs == [] and docker.inspected == [] and docker.listed == 0


def test_listeners_on_finds_this_process(listen: Listen) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp here")
    port = listen()
    found = listeners_on(Path("/proc"), port, time.monotonic() + 5)
    assert [(x.pid, x.address) for x in found] == [(os.getpid(), "127.0.0.1")]
    assert listeners_on(Path("/proc"), closed_port(), time.monotonic() + 5) == []


def test_tcp_probe_script_runs_locally() -> None:
    if shutil.which("pg_isready") is None:
        pytest.skip("no pg_isready on this host")
    outcome = probe_tcp(LocalExec(), "local", "127.0.0.1", closed_port(), timeout=2.0)
    assert outcome.tool == "pg_isready" and outcome.reachable is False
    assert "no response" in outcome.detail


@pytest.fixture
def busybox_bin(tmp_path: Path) -> str:
    """A PATH with busybox's sh, nc and timeout only, as in the auth image."""
    path = busybox_path(tmp_path / "bb", ("sh", "nc", "timeout"))
    if path is None:
        pytest.skip("no busybox on this host")
    return path


def test_tcp_probe_with_busybox_nc_against_real_sockets(busybox_bin: str) -> None:
    docker = LocalExec({"PATH": busybox_bin}, shell=str(Path(busybox_bin) / "sh"))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]

        def hang_up_at_eof() -> None:
            # What PostgreSQL does with a client that sends no startup packet.
            conn, _ = server.accept()
            with conn:
                conn.recv(1)

        thread = threading.Thread(target=hang_up_at_eof, daemon=True)
        thread.start()
        up = probe_tcp(docker, "local", "127.0.0.1", port, timeout=2.0)
        thread.join(5)
        assert (up.tool, up.reachable) == ("nc", True)
        # Connected, but the server never closes: a hung server, still a working link.
        hung = probe_tcp(docker, "local", "127.0.0.1", port, timeout=2.0)
        assert (hung.tool, hung.reachable) == ("nc", True)
        assert "did not close" in hung.detail
    down = probe_tcp(docker, "local", "127.0.0.1", closed_port(), timeout=2.0)
    assert (down.tool, down.reachable) == ("nc", False)
    assert "refused" in down.detail.lower()


@pytest.mark.parametrize(("output", "reachable"), [
    ("@@ pg_isready 0\ndb:5432 - accepting connections\n", True),
    ("@@ pg_isready 1\ndb:5432 - rejecting connections\n", True),
    ("@@ pg_isready 2\ndb:5432 - no response\n", False),
    ("@@ pg_isready 1\nError: no cluster found\n", None),
    ("@@ pg_isready 124\n\n", None),
    ("@@ pg_isready 2\nError: pg_wrapper: cannot run\n", None),
    ("@@ nc 0\n\n", True),
    ("@@ nc 1\nnc: bad address 'db'\n", False),
    ("@@ nc 143\n\n", True),
    ("@@ none\n", None),
    ('OCI runtime exec failed: exec: "sh": executable file not found\n', None),
])
def test_tcp_probe_reading(output: str, reachable: bool | None) -> None:
    docker = ScriptedDocker(exec_handler=lambda cid, argv: ExecResult(0, output))
    assert probe_tcp(docker, "c", "db", 5432, timeout=2.0).reachable is reachable


def test_a_probe_whose_output_the_engine_lost_runs_once_more() -> None:
    outputs = iter(["", "@@ pg_isready 0\ndb:5432 - accepting connections\n"])
    docker = ScriptedDocker(exec_handler=lambda cid, argv: ExecResult(0, next(outputs)))
    outcome = probe_tcp(docker, "c", "db", 5432, timeout=2.0)
    assert (outcome.tool, outcome.reachable) == ("pg_isready", True)
    assert len(docker.execs) == 2


def test_a_probe_that_prints_nothing_twice_says_so_and_stops() -> None:
    docker = ScriptedDocker(exec_handler=lambda cid, argv: ExecResult(0, ""))
    outcome = probe_tcp(docker, "c", "db", 5432, timeout=2.0)
    assert outcome.reachable is None and outcome.tool is None
    assert outcome.detail == "the probe printed nothing (no sh in the container?), exit code 0"
    assert len(docker.execs) == 2
    answered = ScriptedDocker(exec_handler=lambda cid, argv: ExecResult(0, "@@ none\n"))
    assert probe_tcp(answered, "c", "db", 5432, timeout=2.0).reachable is None
    assert len(answered.execs) == 1, "a probe that answered is not run again"
