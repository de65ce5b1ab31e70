"""M1 of the security review, live: the engine proxy in front of the real engine.

The containerized exporter reaches Docker only through `ultrabase-doctor engine-proxy` on a
unix socket. Here the proxy runs as its own process against the host's dockerd with the
shared fleet's config. The exporter's diagnostics through it see what the host install sees
(the in-instance probes run, nothing the exporter asks is refused), and the review's attack
and its neighbours fail through it: a container create, a command of the caller's choice,
a probe in a container that is not an instance's, an exec created elsewhere, the doctor's
own container's environment, a file from a container, and anything over TCP. After each,
the engine shows nothing changed.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from exporter.checks.probes import HTTP_PROBE_SCRIPT, TCP_PROBE_SCRIPT
from exporter.config import load_config
from exporter.discovery import discover
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from fleet import engine, render
from fleet.fleet import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.fleets(2)]

TIMEOUT = 5.0
ENGINE_SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def proxy(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The proxy process on a temp unix socket, for the shared fleet's instances."""
    where = tmp_path_factory.mktemp("engine-proxy")
    sock, log_path = where / "engine.sock", where / "proxy.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "actions.cli", "--log-level", "INFO", "engine-proxy",
             "--config", str(fleet.config_path), "--listen", str(sock),
             "--engine", ENGINE_SOCKET], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the proxy did not create its socket"
            time.sleep(0.1)
        yield {"socket": sock, "url": f"unix://{sock}", "pid": process.pid, "log": log_path}
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not sock.exists(), "the proxy removes its socket when stopped"


@pytest.fixture(scope="module")
def real() -> docker.DockerClient:
    return engine.client()


@pytest.fixture(scope="module")
def decoy(fleet: Fleet, real: docker.DockerClient) -> Iterator[dict[str, Any]]:
    """A running container like the doctor's own exporter, with its secret in the env."""
    secret = secrets.token_hex(24)
    container = real.containers.run(
        fleet.image_tags["kong"], ["sleep", "600"], detach=True, network_mode="none",
        name=f"ubd-engine-proxy-decoy-{uuid.uuid4().hex[:8]}",
        volumes=list(render.host_mounts()),
        environment={"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET": secret},
        labels={"com.docker.compose.project": "ultrabase-doctor",
                "com.docker.compose.service": "exporter", "ultrabase-fleet": "1"})
    try:
        yield {"id": container.id, "secret": secret}
    finally:
        container.remove(force=True)


def raw(sock: Path, request: bytes) -> tuple[int, bytes]:
    """Send one raw request to the proxy; the status and the body."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(sock))
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post(sock: Path, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    body = json.dumps(payload).encode()
    return raw(sock, (f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/"
                      f"json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)


def get(sock: Path, path: str) -> tuple[int, bytes]:
    return raw(sock, f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())


def refused(sock: Path, answer: tuple[int, bytes], *secret_values: str) -> str:
    status, body = answer
    assert status == 403, (status, body[:300])
    for value in secret_values:
        assert value not in body.decode("latin-1")
    message = json.loads(body)["message"]
    assert message.startswith("ultrabase-doctor engine proxy: ")
    return str(message)


def instance_container(fleet: Fleet, real: docker.DockerClient, component: str) -> Any:
    project = fleet.instances[0].project
    (found,) = real.containers.list(filters={"label": [
        f"com.docker.compose.project={project}", f"com.docker.compose.service={component}"]})
    return found


def test_diagnostics_through_the_proxy_run_the_in_instance_probes(
        fleet: Fleet, proxy: dict[str, Any]) -> None:
    config = load_config(fleet.config_path)
    config = config.model_copy(update={"docker": config.docker.model_copy(
        update={"base_url": proxy["url"]})})
    diagnostics = config.diagnostics.model_copy(update={"timeout_seconds": TIMEOUT})
    config = config.model_copy(update={"diagnostics": diagnostics})
    runner = DiagnosticsEngine(config, DockerHost(proxy["url"], TIMEOUT))
    deadline = time.monotonic() + 60
    try:
        while True:
            results = runner.run(fleet.ids[0], trigger="on_demand", use_cache=False,
                                 limited=False).diagnostic.results
            health, links = results["service_health"], \
                results["network_connectivity"].details["links"]
            # Through the proxy every probe runs: none is skipped, whatever the host's load.
            assert health.status != "skipped", health
            assert links and all(link["ok"] is not None for link in links.values()), links
            if health.status == "ok" and all(link["ok"] for link in links.values()):
                break
            # A probe that timed out on a saturated host ran all the same: ask again.
            assert time.monotonic() < deadline, (health, links)
            time.sleep(1.0)
    finally:
        runner.close()
    assert results["container_status"].status == "ok", results["container_status"]
    # Discovery through the proxy reads the instances' runtime env (credentials, drift).
    found = discover(config, DockerHost(proxy["url"], TIMEOUT)).instances[fleet.ids[0]]
    assert found.runtime_known and found.runtime_env, found.problems
    assert all(env for env in found.runtime_env.values())
    assert "refused" not in proxy["log"].read_text(), proxy["log"].read_text()


def test_the_event_stream_passes(proxy: dict[str, Any]) -> None:
    stream = DockerHost(proxy["url"], TIMEOUT).events(["die", "stop"])
    stream.close()


def test_creating_a_container_is_refused_and_creates_nothing(
        fleet: Fleet, proxy: dict[str, Any], real: docker.DockerClient) -> None:
    name = f"ubd-engine-proxy-created-{uuid.uuid4().hex[:8]}"
    message = refused(proxy["socket"], post(proxy["socket"], f"/v1.41/containers/create"
                                            f"?name={name}", {
        "Image": fleet.image_tags["kong"], "Cmd": ["sh", "-c", "id"],
        "HostConfig": {"Binds": ["/:/host"], "Privileged": True}}))
    assert "is not a call the doctor makes" in message
    assert real.api.containers(all=True, filters={"name": name}) == []


def test_a_command_of_the_callers_choice_is_refused_and_does_not_run(
        fleet: Fleet, proxy: dict[str, Any], real: docker.DockerClient) -> None:
    kong = instance_container(fleet, real, "kong")
    marker = f"/tmp/ubd-engine-proxy-{uuid.uuid4().hex[:8]}"
    via_proxy = docker.APIClient(base_url=proxy["url"], timeout=30)
    for argv in (["sh", "-c", f"touch {marker}"],
                 ["sh", "-c", HTTP_PROBE_SCRIPT + f"; touch {marker}", "probe", "3", "a",
                  "http://a:1/"],
                 ["sh", "-c", TCP_PROBE_SCRIPT, "probe", "db", "5432", "3", f">{marker}"]):
        with pytest.raises(docker.errors.APIError) as caught:
            via_proxy.exec_create(kong.id, argv)
        assert caught.value.status_code == 403
        assert "not one of the doctor's probes" in str(caught.value)
    # The engine's JSON decoder matches keys case-insensitively, the last one winning.
    probe = ["sh", "-c", TCP_PROBE_SCRIPT, "probe", "db", "5432", "3"]
    message = refused(proxy["socket"], post(proxy["socket"], f"/containers/{kong.id}/exec", {
        "AttachStdout": True, "Cmd": probe, "cmd": ["sh", "-c", f"touch {marker}"]}))
    assert "'cmd'" in message
    for extra in ({"Privileged": True}, {"User": "0"}, {"Env": ["X=1"]}):
        refused(proxy["socket"], post(proxy["socket"], f"/containers/{kong.id}/exec",
                                      {"AttachStdout": True, "Cmd": probe, **extra}))
    check = real.containers.get(kong.id).exec_run(["sh", "-c", f"test -e {marker}"])
    assert check.exit_code == 1, "the refused command ran"


def test_a_probe_in_a_container_not_an_instances_is_refused(
        proxy: dict[str, Any], decoy: dict[str, Any], real: docker.DockerClient) -> None:
    via_proxy = docker.APIClient(base_url=proxy["url"], timeout=30)
    probe = ["sh", "-c", TCP_PROBE_SCRIPT, "probe", "db", "5432", "3"]
    with pytest.raises(docker.errors.APIError) as caught:
        via_proxy.exec_create(decoy["id"], probe)
    assert caught.value.status_code == 403
    assert "not one of an Ultrabase instance" in str(caught.value)
    assert not real.api.inspect_container(decoy["id"]).get("ExecIDs")


def test_an_exec_created_elsewhere_cannot_be_started(
        proxy: dict[str, Any], decoy: dict[str, Any], real: docker.DockerClient) -> None:
    marker = f"/tmp/ubd-engine-proxy-{uuid.uuid4().hex[:8]}"
    planted = real.api.exec_create(decoy["id"], ["sh", "-c", f"touch {marker}"])["Id"]
    message = refused(proxy["socket"], post(proxy["socket"], f"/v1.41/exec/{planted}/start",
                                            {"Detach": False, "Tty": False}))
    assert "not created by this proxy" in message
    refused(proxy["socket"], get(proxy["socket"], f"/exec/{planted}/json"))
    state = real.api.exec_inspect(planted)
    assert state["Running"] is False and state["ExitCode"] is None, state  # never started


def test_the_doctors_own_environment_is_not_readable(
        proxy: dict[str, Any], decoy: dict[str, Any]) -> None:
    secret, cid = decoy["secret"], decoy["id"]
    for path in (f"/containers/{cid}/json", f"/v1.41/containers/{cid}/json",
                 f"/containers/{cid[:12]}/json", "/containers/ubd-engine-proxy-decoy/json",
                 f"/containers/{cid}/logs?stdout=1", f"/containers/{cid}/archive?path=/proc",
                 f"/containers/{cid}/export", f"/containers/{cid}/top", "/info",
                 f"/containers/json?all=1&evil={cid}"):
        refused(proxy["socket"], get(proxy["socket"], path), secret)
    listing = DockerHost(proxy["url"], TIMEOUT).list_containers()
    assert cid in {c.id for c in listing}  # the listing carries no environment
    assert secret not in json.dumps(docker.APIClient(base_url=proxy["url"]).containers(
        all=True))


def test_nothing_is_reachable_over_tcp(proxy: dict[str, Any]) -> None:
    pid = proxy["pid"]
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    assert inodes, "the proxy holds its listening socket"
    tcp = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            tcp.add(line.split()[9])
    unix = {line.split()[6] for line in Path(f"/proc/{pid}/net/unix").read_text()
            .splitlines()[1:] if len(line.split()) > 7 and line.split()[7]
            == str(proxy["socket"])}
    assert not inodes & tcp, "the proxy has an IP socket"
    assert unix & inodes, "the proxy listens on its unix socket"
    assert oct(proxy["socket"].stat().st_mode & 0o777) == oct(0o660)
