"""No credential to a stranger (issue 13 item 9), and the instance's own exposure
(issue 13 item 10), over plain data and real 127.0.0.1 sockets of the test's own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter.checks.auth import AuthServiceCheck
from exporter.checks.database import DatabaseConnectionCheck
from exporter.checks.endpoints import ApiEndpointsCheck
from exporter.checks.exposure import exposure
from exporter.checks.listener import withheld
from exporter.discovery.model import COMPONENTS, Component, Endpoints, Instance, LayoutFacts
from exporter.dockerhost import ContainerSummary, PublishedPort
from exporter.redaction import Redactor
from tests.unit.checks import support
from tests.unit.checks.plainhost import context
from tests.unit.plaindocker import PlainDocker


@contextmanager
def recording_server() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """An HTTP listener of the test's own on 127.0.0.1 that keeps every request it gets."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"path": self.path, "headers": dict(self.headers),
                         "body": self.rfile.read(length).decode("latin-1")})
            self.send_response(404)
            self.end_headers()

        do_GET = do_POST = do_PUT = do_DELETE = _record

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener of the test's own that records the first bytes of each connection."""
    received: list[bytes] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.settimeout(0.5)
            with suppress(OSError):
                received.append(conn.recv(65536))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], received
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def container(component: str, state: str = "running",
              ports: tuple[PublishedPort, ...] = ()) -> ContainerSummary:
    return ContainerSummary(id=f"id-{component}", name=f"supabase-{component}-abc12345",
                            image="local/x", state=state, status="", created=0, ports=ports)


def instance_with(components: dict[str, Component], *, gateway_port: int | None = None,
                  db_port: int | None = None, layout: LayoutFacts | None = None,
                  dashboard: tuple[str, str] = (support.DASH_USER, support.DASH_PASSWORD)
                  ) -> Instance:
    base = support.make_instance(
        gateway_url=f"http://127.0.0.1:{gateway_port}" if gateway_port else None,
        db_port=db_port, dashboard=dashboard)
    full = {c: components.get(c, Component(c, f"supabase-{c}-abc12345")) for c in COMPONENTS}
    return replace(base, components=full, layout=layout or LayoutFacts(),
                   endpoints=Endpoints(gateway_url=base.endpoints.gateway_url,
                                       db_port=db_port))


def test_a_stranger_on_a_stopped_instances_ports_receives_nothing_secret() -> None:
    """kong and db are gone; a listener of the test's own holds both of their ports."""
    with recording_server() as (gateway_port, requests), raw_listener() as (db_port, raw):
        instance = instance_with({
            "kong": Component("kong", "supabase-kong-abc12345", None),
            "db": Component("db", "supabase-db-abc12345", container("db", "exited"))},
            gateway_port=gateway_port, db_port=db_port)
        ctx = context(instance, PlainDocker([]), timeout=1.0)
        found = {check.name: check.run(ctx) for check in (
            ApiEndpointsCheck(), AuthServiceCheck(), DatabaseConnectionCheck())}
    assert requests == [] and raw == []
    api = found["api_endpoints"].issues
    assert [i.code for i in api] == ["GATEWAY_UNREACHABLE"]
    assert api[0].evidence["credentials_withheld"] is True
    assert "missing" in api[0].message
    db = found["database_connection"].issues
    assert [i.code for i in db] == ["DB_UNREACHABLE"]
    assert db[0].evidence["outcome"] == "credentials_withheld"
    auth = found["auth_service"].details
    assert auth["synthetic_user"]["ran"] is False
    assert "withheld" in auth["synthetic_user"]["reason"]
    assert "withheld" in auth["health"]["skipped"]


def test_the_instances_own_published_port_gets_its_credentials() -> None:
    with recording_server() as (gateway_port, requests):
        kong = container("kong", ports=(PublishedPort(8000, "tcp", "127.0.0.1", gateway_port),))
        instance = instance_with({"kong": Component("kong", kong.name, kong)},
                                 gateway_port=gateway_port)
        # The test's own server is no docker-proxy: /proc shows it, so even a port the
        # listing says is kong's is refused while another process listens on it.
        reason = withheld(instance, "kong", gateway_port)
        assert reason is not None and "held by" in reason and "pid" in reason
        assert requests == []
    # With nothing but the engine's mapping (no visible listener), the port is kong's.
    assert withheld(instance, "kong", gateway_port) is None


def test_a_statically_configured_instance_is_trusted() -> None:
    assert withheld(support.make_instance(), "kong", 8100) is None


def test_exposure_names_each_open_port_and_default_credential() -> None:
    everywhere = (PublishedPort(8000, "tcp", "0.0.0.0", 8165),
                  PublishedPort(8000, "tcp", "::", 8165),
                  PublishedPort(8443, "tcp", "0.0.0.0", 8450))
    instance = instance_with({
        "kong": Component("kong", "k", container("kong", ports=everywhere)),
        "db": Component("db", "d", container(
            "db", ports=(PublishedPort(5432, "tcp", "127.0.0.1", 5552),))),
        "supavisor": Component("supavisor", "p", container("supavisor", "created")),
    }, layout=LayoutFacts(
        ports={"supavisor": (("", 5432, 5432), ("", 0, 6543)),
               "db": (("", 5552, 5432),)},
        placeholders={"LOGFLARE_API_KEY=your_logflare_key": (".env-abc12345",
                                                              "compose:analytics")}),
        dashboard=("admin", "admin"))
    issues, details = exposure(instance)
    by = {(i.code, i.component): i for i in issues}
    assert set(by) == {("PORT_EXPOSED", "kong"), ("PORT_EXPOSED", "supavisor"),
                       ("DEFAULT_CREDENTIALS", "kong"), ("DEFAULT_CREDENTIALS", "analytics")}
    assert "8165 (to 8000)" in by["PORT_EXPOSED", "kong"].message
    assert "8450 (to 8443)" in by["PORT_EXPOSED", "kong"].message
    assert len(by["PORT_EXPOSED", "kong"].evidence["ports"]) == 2
    pooler = by["PORT_EXPOSED", "supavisor"].message
    assert "5432 (to 5432)" in pooler and "a port Docker picks (to 6543)" in pooler
    assert "admin/admin" in by["DEFAULT_CREDENTIALS", "kong"].message
    assert "LOGFLARE_API_KEY=your_logflare_key in .env-abc12345, compose:analytics" in \
        by["DEFAULT_CREDENTIALS", "analytics"].message
    assert all(i.severity == "warning" for i in issues)
    # the running db publishes on 127.0.0.1 only: the container's word beats the file's
    assert "db" not in details["exposed_ports"]
    # A published default protects nothing and is not redacted (supabase_admin stays).
    redactor = Redactor([*instance.secrets(), "admin"])
    assert redactor.text("admin/admin as supabase_admin") == "admin/admin as supabase_admin"


def test_auth_service_does_not_read_ok_when_auth_is_missing() -> None:
    instance = instance_with({}, gateway_port=8100, db_port=5433)
    findings = AuthServiceCheck().run(context(instance, PlainDocker([]), timeout=1.0))
    assert findings.issues == ()
    assert findings.skipped is not None and "auth is missing" in findings.skipped
