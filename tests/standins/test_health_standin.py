"""The generic health stand-in, the `imgproxy health` command, and SIGTERM handling."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.standins.conftest import (
    DB_PASSWORD,
    JWT_SECRET,
    PYTHON,
    STANDINS,
    PgCluster,
    Proc,
    Spawner,
    free_port,
    http_request,
)


def start_health(spawn: Spawner, name: str = "studio") -> Proc:
    """Start health.py on a free port."""
    port = free_port()
    return spawn("health.py", {}, args=["--port", str(port), "--name", name],
                 ports={"http": port})


@pytest.mark.parametrize(
    "path",
    ["/api/profile", "/api/tenants/realtime/health", "/status", "/health", "/api/health"],
)
def test_every_get_path_is_healthy(spawn: Spawner, path: str) -> None:
    """Whatever health path a component's check uses answers 200 with the name."""
    proc = start_health(spawn, "realtime")
    resp = http_request("GET", proc.url() + path)
    assert resp.status == 200
    assert resp.json() == {"status": "ok", "name": "realtime"}
    head = http_request("HEAD", proc.url() + path)
    assert head.status == 200 and head.body == b""


def test_other_methods_are_refused(spawn: Spawner) -> None:
    """Only GET and HEAD are served."""
    proc = start_health(spawn)
    assert http_request("POST", proc.url() + "/health", body=b"{}").status == 405


def test_health_listens_on_ipv6_loopback_too(spawn: Spawner) -> None:
    """`localhost` may resolve to ::1 inside a container; the wildcard listener answers both."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    proc = start_health(spawn)
    try:
        with socket.create_connection(("::1", proc.ports["http"]), timeout=2):
            pass
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")


def run_imgproxy(port: int) -> subprocess.CompletedProcess[str]:
    """Run the `imgproxy health` stand-in against IMGPROXY_BIND=:port."""
    return subprocess.run([str(STANDINS / "imgproxy"), "health"], capture_output=True, text=True,
                          timeout=15, env={"PATH": str(Path(PYTHON).parent) + ":/usr/bin:/bin",
                                           "IMGPROXY_BIND": f":{port}"})


def test_imgproxy_health_command(spawn: Spawner) -> None:
    """`imgproxy health` exits 0 when the local endpoint answers 200, 1 when nothing listens."""
    proc = start_health(spawn, "imgproxy")
    assert run_imgproxy(proc.ports["http"]).returncode == 0
    failed = run_imgproxy(free_port())
    assert failed.returncode == 1
    assert "imgproxy health check failed" in failed.stderr


def _gotrue_env(pg: PgCluster, port: int) -> dict[str, str]:
    return {"GOTRUE_API_HOST": "127.0.0.1", "GOTRUE_API_PORT": str(port),
            "API_EXTERNAL_URL": "http://localhost:8000", "GOTRUE_DB_DRIVER": "postgres",
            "GOTRUE_DB_DATABASE_URL": pg.url("supabase_auth_admin", DB_PASSWORD),
            "GOTRUE_SITE_URL": "http://localhost:3000", "GOTRUE_JWT_SECRET": JWT_SECRET}


def _rest_env(pg: PgCluster, port: int) -> dict[str, str]:
    return {"PGRST_DB_URI": pg.url("authenticator", DB_PASSWORD), "PGRST_DB_ANON_ROLE": "anon",
            "PGRST_JWT_SECRET": JWT_SECRET, "PGRST_SERVER_PORT": str(port)}


@pytest.mark.parametrize("script", ["health.py", "gotrue.py", "postgrest.py"])
def test_sigterm_stops_promptly(spawn: Spawner, shared_pg: PgCluster, script: str) -> None:
    """Each stand-in leaves with status 0 right after SIGTERM (it may be PID 1)."""
    port = free_port()
    env: dict[str, str] = {}
    args: list[str] = []
    if script == "health.py":
        args = ["--port", str(port)]
    elif script == "gotrue.py":
        env = _gotrue_env(shared_pg, port)
    else:
        env = _rest_env(shared_pg, port)
    proc = spawn(script, env, args=args, ports={"http": port})
    started = time.monotonic()
    assert proc.stop(timeout=3) == 0
    assert time.monotonic() - started < 3
