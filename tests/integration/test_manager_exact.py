"""The doctor on a fleet written exactly as the real Ultrabase manager writes it
(`fleet up --manager-exact`): it reports each real defect clearly and nothing else, and a
listener of the test's own on a stopped instance's ports receives nothing secret."""

from __future__ import annotations

import base64
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from exporter.config import load_config
from exporter.diagnostic import Diagnostic
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from fleet import engine as fleet_engine
from fleet.fleet import Fleet
from tests.integration.conftest import FleetFactory

pytestmark = [pytest.mark.integration]

TIMEOUT = 5.0
# What the manager's layout exposes on every instance, whatever else happens.
EXPOSURE = {("PORT_EXPOSED", "kong"), ("PORT_EXPOSED", "db"), ("PORT_EXPOSED", "analytics"),
            ("PORT_EXPOSED", "supavisor"), ("DEFAULT_CREDENTIALS", "kong"),
            ("DEFAULT_CREDENTIALS", "analytics")}


@pytest.fixture(scope="module")
def exact(fleet_factory: FleetFactory) -> Iterator[Fleet]:
    with fleet_factory.private(2, manager_exact=True) as fleet:
        yield fleet


@pytest.fixture
def doctor(exact: Fleet) -> Iterator[DiagnosticsEngine]:
    config = load_config(exact.config_path)
    tuned = config.model_copy(update={"diagnostics": config.diagnostics.model_copy(
        update={"timeout_seconds": TIMEOUT})})
    made = DiagnosticsEngine(tuned, DockerHost(config.docker.base_url, TIMEOUT))
    try:
        yield made
    finally:
        made.close()


def serious(diagnostic: Diagnostic) -> set[tuple[str, str | None]]:
    return {(i.code, i.component) for i in diagnostic.issues
            if i.severity in ("critical", "warning")}


def pooler_running(fleet: Fleet, instance_id: str) -> bool:
    return fleet_engine.container(fleet.instance(instance_id), "supavisor").status == "running"


def test_each_real_defect_is_reported_and_nothing_else(exact: Fleet,
                                                       doctor: DiagnosticsEngine) -> None:
    results = {d.instance_id: d for d in doctor.sweep("on_demand")}
    assert sorted(results) == sorted(exact.ids)
    winners = [i for i in exact.ids if pooler_running(exact, i)]
    losers = [i for i in exact.ids if i not in winners]
    # Every pooler asks for host port 5432: at most one of them gets it.
    assert len(winners) <= 1 and losers
    for iid in winners:
        assert serious(results[iid]) == EXPOSURE, results[iid].to_dict()["issues"]
    for iid in losers:
        diagnostic = results[iid]
        assert serious(diagnostic) == EXPOSURE | {("PORT_CONFLICT", "supavisor"),
                                                  ("CONTAINER_NOT_RUNNING", "supavisor")}, \
            diagnostic.to_dict()["issues"]
        root = diagnostic.root_cause
        assert root is not None and (root.issue.code, root.issue.component) == (
            "PORT_CONFLICT", "supavisor")
        assert ("CONTAINER_NOT_RUNNING", "supavisor") in {
            (i.code, i.component) for i in root.explains}
        # The port's holder is named: the first instance's pooler, else the host's process.
        expected = (f"held by container {exact.instance(winners[0]).container_name('supavisor')}"
                    if winners else "held by process")
        assert "host port 5432 is taken" in root.issue.message
        assert expected in root.issue.message, root.issue.message
    for iid, diagnostic in results.items():
        by = {(i.code, i.component): i.message for i in diagnostic.issues}
        instance = exact.instance(iid)
        assert f"{instance.ports.kong_http} (to 8000)" in by["PORT_EXPOSED", "kong"]
        assert f"{instance.ports.postgres_ext} (to 5432)" in by["PORT_EXPOSED", "db"]
        assert "5432 (to 5432)" in by["PORT_EXPOSED", "supavisor"]
        assert "admin/admin" in by["DEFAULT_CREDENTIALS", "kong"]
        assert "LOGFLARE_API_KEY=your_logflare_key in .env-" in \
            by["DEFAULT_CREDENTIALS", "analytics"]
        # The manager's keys and login work: the synthetic user test passes.
        synthetic = diagnostic.results["auth_service"].details["synthetic_user"]
        assert synthetic["created"] and synthetic["deleted"], synthetic


@contextmanager
def listener(port: int) -> Iterator[list[bytes]]:
    """A listener of the test's own on 127.0.0.1:port: answers HTTP 404 to whatever comes,
    and keeps every byte it received."""
    received: list[bytes] = []
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    data = conn.recv(65536)
                    received.append(data)
                    if data:
                        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def test_a_stranger_on_a_stopped_instances_ports_receives_nothing_secret(
        exact: Fleet, doctor: DiagnosticsEngine) -> None:
    instance = exact.instances[0]
    for component in ("kong", "db"):
        fleet_engine.container(instance, component).stop(timeout=5)
    creds = instance.credentials
    basic = base64.b64encode(
        f"{creds.dashboard_username}:{creds.dashboard_password}".encode()).decode()
    secrets = [creds.anon_key, creds.service_role_key, creds.jwt_secret,
               creds.postgres_password, basic]
    with listener(instance.ports.kong_http) as gateway, \
            listener(instance.ports.postgres_ext) as db:
        diagnostic = doctor.run(instance.id, use_cache=False).diagnostic
    received = b"".join(gateway + db).decode("latin-1")
    for secret in secrets:
        assert secret not in received
    assert "apikey" not in received.lower() and "authorization" not in received.lower()
    found = {(i.check, i.code, i.component): i for i in diagnostic.issues}
    assert found["api_endpoints", "GATEWAY_UNREACHABLE", "kong"].evidence[
        "credentials_withheld"] is True
    assert found["database_connection", "DB_UNREACHABLE", "db"].evidence["outcome"] == \
        "credentials_withheld"
    synthetic = diagnostic.results["auth_service"].details["synthetic_user"]
    assert synthetic["ran"] is False and "withheld" in synthetic["reason"]
    for component in ("kong", "db"):
        conflict = found["network_connectivity", "PORT_CONFLICT", component]
        # The listeners are this test's own: the holder named is this process.
        assert "held by process" in conflict.message
        assert f"(pid {os.getpid()}," in conflict.message, conflict.message
