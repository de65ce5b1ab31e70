"""M1 of the security review: the engine proxy's allow-list, as plain data.

The attack: a Docker socket proxy on 127.0.0.1:2375 let any local process read every
container's environment (the doctor's own manager JWT secret included) and, had exec been
allowed, run anything anywhere. The engine proxy forwards only the calls the exporter
makes; these tests hand it the hostile requests and check the refusal and that the request
the engine would get is the checked one. tests/integration/test_engine_proxy_live.py does
the same against the real engine.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from exporter.checks.probes import (
    HTTP_PROBE_SCRIPT,
    TCP_PROBE_SCRIPT,
    probe_argv_valid,
)
from exporter.config import parse_config
from exporter.engineproxy import (
    Call,
    Decision,
    EngineProxy,
    EngineProxyError,
    ExecLedger,
    InstanceContainers,
    build_request,
    decide,
    error_response,
    open_server,
)
from exporter.errors import ConfigError, DockerUnavailableError
from exporter.watch.events import WATCHED_ACTIONS

INSTANCE = "a" * 64
OTHER = "b" * 64  # the doctor's own container, or any container not an instance's
EXEC = "c" * 64

HTTP_ARGV = ["sh", "-c", HTTP_PROBE_SCRIPT, "probe", "3", "auth", "http://auth:9999/health",
             "rest", "http://rest:3000/"]
TCP_ARGV = ["sh", "-c", TCP_PROBE_SCRIPT, "probe", "db", "5432", "3"]


def exec_body(argv: list[str], **more: object) -> bytes:
    """The body docker-py 7 sends for exec_create (None values dropped)."""
    body = {"Container": INSTANCE, "User": "", "Privileged": False, "Tty": False,
            "AttachStdin": False, "AttachStdout": True, "AttachStderr": True, "Cmd": argv}
    body.update(more)
    return json.dumps(body).encode()


def judge(method: str, target: str, body: bytes = b"",
          ledger: ExecLedger | None = None, upgrade: bool = False) -> Decision:
    return decide(Call(method, target, body, upgrade), lambda cid: cid == INSTANCE,
                  ledger or ExecLedger())


@pytest.mark.parametrize(("method", "target"), [
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/version"),
    ("GET", "/v1.41/containers/json?all=1&limit=-1&size=0&trunc_cmd=0"),
    ("GET", "/v1.47/events?filters=" + quote(json.dumps(
        {"type": ["container"], "event": list(WATCHED_ACTIONS)}))),
    ("GET", "/events?since=1700000000.000000&filters=" + quote(json.dumps(
        {"type": ["container"], "event": ["die", "stop"]}))),
    ("GET", f"/v1.41/containers/{INSTANCE}/json"),
    ("GET", f"/v1.41/containers/{INSTANCE}/logs?stdout=1&stderr=1&timestamps=1&follow=0"
            "&tail=1000&since=1700000000.000000"),
])
def test_the_exporters_reads_pass(method: str, target: str) -> None:
    decision = judge(method, target)
    assert decision.allowed, decision.reason
    assert not decision.target.startswith("/v1.")  # the engine serves its own version


@pytest.mark.parametrize(("method", "target", "why"), [
    ("POST", "/v1.41/containers/create", "not a call the doctor makes"),
    ("POST", f"/containers/{INSTANCE}/start", "not a call the doctor makes"),
    ("POST", f"/containers/{INSTANCE}/stop", "not a call the doctor makes"),
    ("DELETE", f"/containers/{INSTANCE}", "not a call the doctor makes"),
    ("GET", f"/containers/{INSTANCE}/archive?path=/etc", "not a call the doctor makes"),
    ("GET", f"/containers/{INSTANCE}/export", "not a call the doctor makes"),
    ("POST", f"/containers/{INSTANCE}/json", "not a call the doctor makes"),
    ("GET", "/info", "not a call the doctor makes"),
    ("GET", "/images/json", "not a call the doctor makes"),
    ("GET", "/secrets", "not a call the doctor makes"),
    ("POST", "/build", "not a call the doctor makes"),
    ("POST", "/volumes/create", "not a call the doctor makes"),
    ("GET", f"/containers/{OTHER}/json", "not one of an Ultrabase instance"),
    ("GET", f"/containers/{OTHER}/logs?stdout=1", "not one of an Ultrabase instance"),
    ("GET", "/containers/exporter/json", "not a call the doctor makes"),  # names: no
    ("GET", f"/containers/{INSTANCE[:12]}/json", "not a call the doctor makes"),
    ("GET", f"/containers/{INSTANCE}/../{OTHER}/json", "not a call the doctor makes"),
    ("GET", f"/containers/{INSTANCE}%2F..%2F{OTHER}/json", "not a call the doctor makes"),
    ("GET", f"//containers/{INSTANCE}/json", "not a call the doctor makes"),
    ("GET", f"/v1.41/v1.41/containers/{INSTANCE}/json", "not a call the doctor makes"),
    ("GET", "/containers/json?all=1&evil=1", "query parameter 'evil'"),
    ("GET", f"/containers/{INSTANCE}/json?size=1&x", "query"),
    ("GET", "/_ping?x=1", "query parameter 'x'"),
    ("GET", "/events", "filtered as the doctor filters it"),
    ("GET", "/events?filters=" + quote(json.dumps({"type": ["container"]})), "only the"),
    ("GET", "/events?filters=" + quote(json.dumps(
        {"type": ["container"], "event": ["exec_create", "exec_start"]})), "only the"),
    ("GET", "/events?filters=" + quote(json.dumps(
        {"type": ["container", "image"], "event": ["die"]})), "only the"),
    ("GET", "/events?filters=" + quote(json.dumps(
        {"type": ["container"], "event": ["die"], "container": ["x"]})), "'container'"),
    ("GET", "/events?filters=%7B", "events filter: the body is not JSON"),
])
def test_everything_else_is_refused(method: str, target: str, why: str) -> None:
    decision = judge(method, target)
    assert not decision.allowed and why in decision.reason, decision


def test_a_smuggled_separator_reaches_the_engine_as_data() -> None:
    decision = judge("GET", "/containers/json?all=1;size=1&filters=%7B%7D%26x%3D1")
    assert decision.allowed
    assert decision.target == "/containers/json?all=1%3Bsize%3D1&filters=%7B%7D%26x%3D1"


def test_a_read_with_a_body_is_refused() -> None:
    assert not judge("GET", "/containers/json", b"{}").allowed


def test_the_probe_exec_passes_and_is_rebuilt() -> None:
    for argv in (HTTP_ARGV, TCP_ARGV):
        decision = judge("POST", f"/v1.41/containers/{INSTANCE}/exec", exec_body(argv))
        assert decision.allowed, decision.reason
        sent = json.loads(decision.body)
        assert sent == {"AttachStdin": False, "AttachStdout": True, "AttachStderr": True,
                        "Tty": False, "Privileged": False, "User": "", "Cmd": argv}


@pytest.mark.parametrize(("body", "why"), [
    (exec_body(["sh", "-c", "cat /proc/1/environ"]), "not one of the doctor's probes"),
    (exec_body(["sh", "-c", HTTP_PROBE_SCRIPT + "; id", "probe", "3", "a", "http://a:1/"]),
     "not one of the doctor's probes"),
    (exec_body(["sh", "-c", HTTP_PROBE_SCRIPT, "probe", "3"]), "not one of the doctor's"),
    (exec_body(["sh", "-c", HTTP_PROBE_SCRIPT, "probe", "3", "a", "http://a:1/$(id)"]),
     "not one of the doctor's probes"),
    (exec_body(["sh", "-c", HTTP_PROBE_SCRIPT, "probe", "3", "a", "-O/etc/passwd"]),
     "not one of the doctor's probes"),
    (exec_body(["sh", "-c", HTTP_PROBE_SCRIPT, "probe", "3", "a\n", "http://a:1/"]),
     "not one of the doctor's probes"),
    (exec_body(["sh", "-c", TCP_PROBE_SCRIPT, "probe", "db", "5432", "3", "extra"]),
     "not one of the doctor's probes"),
    (exec_body(["sh", "-c", TCP_PROBE_SCRIPT, "probe", "-h", "5432", "3"]),
     "not one of the doctor's probes"),
    (exec_body(["sh", "-c", TCP_PROBE_SCRIPT, "probe", "db", "70000", "3"]),
     "not one of the doctor's probes"),
    (exec_body(["sh", "-c", TCP_PROBE_SCRIPT, "probe", "db", "٥٤٣٢", "3"]),
     "not one of the doctor's probes"),
    (exec_body(["bash", "-c", TCP_PROBE_SCRIPT, "probe", "db", "5432", "3"]),
     "not one of the doctor's probes"),
    (exec_body(TCP_ARGV, Privileged=True), "privileged"),
    (exec_body(TCP_ARGV, Tty=True), "TTY"),
    (exec_body(TCP_ARGV, User="0"), "another user"),
    (exec_body(TCP_ARGV, AttachStdin=True), "stdin"),
    (exec_body(TCP_ARGV, Env=["PGPASSWORD=x"]), "environment"),
    (exec_body(TCP_ARGV, WorkingDir="/"), "'WorkingDir' is not one"),
    # The engine's JSON decoder matches keys case-insensitively and keeps the last one.
    (exec_body(TCP_ARGV, cmd=["sh", "-c", "id"]), "'cmd'"),
    (exec_body(TCP_ARGV, privileged=True), "'privileged'"),
    (b'{"Cmd": ', "not JSON"),
    (b"[]", "not a JSON object"),
    (b"", "not JSON"),
    (b"[" * 100_000, "not JSON"),
])
def test_any_other_exec_is_refused(body: bytes, why: str) -> None:
    decision = judge("POST", f"/containers/{INSTANCE}/exec", body)
    assert not decision.allowed and why in decision.reason, decision


def test_a_probe_in_a_container_not_an_instances_is_refused() -> None:
    decision = judge("POST", f"/containers/{OTHER}/exec", exec_body(TCP_ARGV))
    assert not decision.allowed and "not one of an Ultrabase instance" in decision.reason


def test_only_our_execs_start_once_and_are_inspected() -> None:
    now = [0.0]
    ledger = ExecLedger(ttl=60, clock=lambda: now[0])
    start = json.dumps({"Tty": False, "Detach": False}).encode()
    assert not judge("POST", f"/exec/{EXEC}/start", start, ledger).allowed
    assert not judge("GET", f"/exec/{EXEC}/json", b"", ledger).allowed
    ledger.issue(EXEC)
    assert judge("GET", f"/exec/{EXEC}/json", b"", ledger).allowed
    first = judge("POST", f"/v1.41/exec/{EXEC}/start", start, ledger, upgrade=True)
    assert first.allowed and json.loads(first.body) == {"Detach": False, "Tty": False}
    assert b"Upgrade: tcp" in build_request(Call("POST", "/", start, True), first)
    again = judge("POST", f"/exec/{EXEC}/start", start, ledger)
    assert not again.allowed and "started already" in again.reason
    now[0] = 61.0
    assert not judge("GET", f"/exec/{EXEC}/json", b"", ledger).allowed


@pytest.mark.parametrize("body", [b'{"Detach": true}', b'{"Tty": true}',
                                  b'{"Detach": false, "detach": true}', b"nope"])
def test_a_detached_or_odd_start_is_refused(body: bytes) -> None:
    ledger = ExecLedger()
    ledger.issue(EXEC)
    assert not judge("POST", f"/exec/{EXEC}/start", body, ledger).allowed
    assert ledger.may_start(EXEC), "a refused start does not use up the exec"


def test_probe_argv_matches_what_the_probes_build() -> None:
    assert probe_argv_valid(HTTP_ARGV) and probe_argv_valid(TCP_ARGV)
    assert not probe_argv_valid(["sh", "-c", TCP_PROBE_SCRIPT, "x", "db", "5432", "3"])
    assert not probe_argv_valid(HTTP_ARGV[:-1])


def test_the_rebuilt_request_carries_only_checked_parts() -> None:
    decision = judge("GET", "/v1.41/containers/json?all=1&size=0")
    sent = build_request(Call("GET", "/ignored?evil=1"), decision)
    head = sent.decode().split("\r\n")
    assert head[0] == "GET /containers/json?all=1&size=0 HTTP/1.1"
    assert "Connection: close" in head and not any(h.startswith("Upgrade") for h in head)


def test_the_refusal_is_an_engine_style_error() -> None:
    raw = error_response(403, "GET /info is not a call the doctor makes")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden") and b"Connection: close" in head
    assert json.loads(body)["message"].endswith("GET /info is not a call the doctor makes")


def test_unknown_containers_rediscover_at_most_once_a_second() -> None:
    now = [100.0]
    calls: list[float] = []
    known = {INSTANCE}

    def find() -> set[str]:
        calls.append(now[0])
        if len(calls) == 3:
            raise DockerUnavailableError("engine gone")
        return set(known)

    members = InstanceContainers(find, min_refresh_seconds=1.0, clock=lambda: now[0])
    assert members(INSTANCE) and not members(OTHER) and len(calls) == 1
    known.add(OTHER)
    now[0] += 1.5
    assert members(OTHER) and len(calls) == 2
    now[0] += 1.5
    assert not members("d" * 64) and len(calls) == 3
    assert members(INSTANCE) and members(OTHER), "a failed discovery keeps what was known"


@pytest.fixture
def engine_socket(tmp_path: Path) -> Iterator[Path]:
    """A bound unix socket standing where the engine's would be."""
    engine = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as fake_engine:
        fake_engine.bind(str(engine))
        yield engine


def test_the_socket_is_0660_and_only_replaces_a_socket(tmp_path: Path,
                                                       engine_socket: Path) -> None:
    engine = str(engine_socket)
    listen = tmp_path / "proxy.sock"
    server = open_server(listen, EngineProxy(engine, lambda cid: False))
    try:
        assert oct(listen.stat().st_mode & 0o777) == oct(0o660)
        assert server.socket.family == socket.AF_UNIX
    finally:
        server.server_close()
    taken = tmp_path / "file"
    taken.write_text("keep me")
    with pytest.raises(EngineProxyError, match="not a socket"):
        open_server(taken, EngineProxy(engine, lambda cid: False))
    assert taken.read_text() == "keep me"
    with pytest.raises(EngineProxyError, match="no Docker engine socket"):
        open_server(tmp_path / "p2.sock", EngineProxy(str(tmp_path / "none"), lambda c: False))


def test_the_backlog_holds_a_sweeps_worth_of_connections(tmp_path: Path,
                                                         engine_socket: Path) -> None:
    listen = tmp_path / "proxy.sock"
    server = open_server(listen, EngineProxy(str(engine_socket), lambda cid: False))
    clients: list[socket.socket] = []
    try:
        # Nothing accepts yet, as when every handler thread is busy on a loaded host: a
        # unix socket's connect beyond the backlog fails at once (EAGAIN).
        for _ in range(32):
            client = socket.socket(socket.AF_UNIX)
            clients.append(client)
            client.setblocking(False)
            client.connect(str(listen))
    finally:
        for client in clients:
            client.close()
        server.server_close()
    assert len(clients) == 32


def test_secrets_come_from_files_and_never_show_in_errors(tmp_path: Path) -> None:
    secret = "f" * 40 + "-from-a-file"
    jwt_file, password_file = tmp_path / "manager_jwt_secret", tmp_path / "am_password"
    jwt_file.write_text(secret + "\n")
    password_file.write_text("am-password\r\n")
    raw = {"discovery": {"sources": ["compose"]},
           "api": {"manager_jwt": {"users_file": str(tmp_path / "users.json")}}}
    config = parse_config(raw, environ={
        "ULTRABASE_DOCTOR_MANAGER_JWT_SECRET_FILE": str(jwt_file),
        "ULTRABASE_DOCTOR_ALERTMANAGER_PASSWORD_FILE": str(password_file)})
    assert config.api.manager_jwt is not None and config.api.manager_jwt.secret is not None
    assert config.api.manager_jwt.secret.get_secret_value() == secret
    assert config.alertmanager.password is not None
    assert config.alertmanager.password.get_secret_value() == "am-password"
    # The variable itself still wins, as before.
    both = parse_config(raw, environ={"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET": "e" * 40,
                                      "ULTRABASE_DOCTOR_MANAGER_JWT_SECRET_FILE": "/none"})
    assert both.api.manager_jwt is not None and both.api.manager_jwt.secret is not None
    assert both.api.manager_jwt.secret.get_secret_value() == "e" * 40
    short = tmp_path / "short"
    short.write_text("tiny-secret")
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET_FILE": str(short)})
    assert "shorter than 32 bytes" in str(caught.value) and "tiny-secret" not in str(caught.value)
    binary, big = tmp_path / "binary", tmp_path / "big"
    binary.write_bytes(b"\xff\xfe-secret")
    big.write_bytes(b"x" * (64 * 1024 + 1))
    for path, why in ((tmp_path / "absent", "cannot read"), (tmp_path, "cannot read"),
                      (binary, "not UTF-8"), (big, "larger than")):
        with pytest.raises(ConfigError, match="ULTRABASE_DOCTOR_MANAGER_JWT_SECRET_FILE") as err:
            parse_config(raw, environ={"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET_FILE": str(path)})
        assert why in str(err.value) and "-secret" not in str(err.value)
