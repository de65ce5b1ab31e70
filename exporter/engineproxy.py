"""The engine proxy: the Docker API calls the exporter makes, on a unix socket, and no other.

The containerized exporter reaches the engine only through this proxy. It listens on a unix
socket (never TCP) and forwards a request only when it is one of the exact calls the
exporter makes (dockerhost.DockerHost): ping, version, the container listing, the event
stream, and for the containers of discovered instances only, inspect, logs and the
in-network probes of checks/probes.py (exec create with exactly those scripts, then start
and inspect of the exec it created). Everything else gets a 403 with the reason. So the
exporter sees what the host install sees, while a process that reaches the socket can
neither run a command of its choice, nor create or change anything, nor read the
environment of any container that is not an instance's (the doctor's own included).

Requests are parsed and rebuilt, never passed on as bytes: the path, query and JSON body
sent to the engine are the ones checked, one request per connection.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import select
import signal
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from exporter.checks.probes import probe_argv_valid
from exporter.config import Config
from exporter.discovery import discover
from exporter.dockerhost import DockerHost
from exporter.errors import DoctorError
from exporter.watch.events import WATCHED_ACTIONS

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "/var/run/docker.sock"
# A request head larger than this is not one the exporter sends.
MAX_HEAD_BYTES = 16 * 1024
# The largest body the exporter sends: an exec create with the HTTP probe script.
MAX_BODY_BYTES = 64 * 1024
# Reading one request may take this long; a client that sends nothing is dropped.
READ_TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 64
# The socket's mode: its owner (root) and group (the exporter's) may connect.
SOCKET_MODE = 0o660
# An exec the proxy created may be inspected this long after its creation.
EXEC_TTL_SECONDS = 600.0

_VERSION_PREFIX = re.compile(r"/v[0-9]{1,2}\.[0-9]{1,3}(?=/)")
_ID = "[0-9a-f]{64}"  # full ids only, as the engine's listing gives them
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class EngineProxyError(DoctorError):
    """The proxy cannot start (socket path taken, engine socket missing)."""


class BadRequest(DoctorError):
    """A request that is not well-formed HTTP/1.1 as the exporter sends it."""


@dataclass(frozen=True)
class Route:
    """One call the exporter makes: method, path pattern and the query keys it uses."""

    method: str
    pattern: re.Pattern[str]
    query: frozenset[str] = frozenset()
    # none, events, exec_create, exec_start, exec_inspect: what the query, the body and the
    # target must be.
    kind: str = "none"


def _route(method: str, path: str, query: tuple[str, ...] = (), kind: str = "none") -> Route:
    return Route(method, re.compile(path), frozenset(query), kind)


# Exactly what DockerHost asks (docker-py 7 sends these query keys; see dockerhost.py).
ROUTES: tuple[Route, ...] = (
    _route("GET", "/_ping"),
    _route("HEAD", "/_ping"),
    _route("GET", "/version"),
    _route("GET", "/containers/json",
           ("all", "limit", "size", "trunc_cmd", "since", "before", "filters")),
    _route("GET", "/events", ("since", "until", "filters"), kind="events"),
    _route("GET", f"/containers/(?P<container>{_ID})/json", ("size",)),
    _route("GET", f"/containers/(?P<container>{_ID})/logs",
           ("stdout", "stderr", "timestamps", "follow", "tail", "since", "until")),
    _route("POST", f"/containers/(?P<container>{_ID})/exec", kind="exec_create"),
    _route("POST", f"/exec/(?P<exec>{_ID})/start", kind="exec_start"),
    _route("GET", f"/exec/(?P<exec>{_ID})/json", kind="exec_inspect"),
)

# The keys of docker-py's exec_create body; compared case-sensitively, unlike the engine's
# JSON decoder, so {"Cmd": probe, "cmd": other} is refused rather than half-read.
EXEC_CREATE_KEYS = frozenset({"Container", "User", "Privileged", "Tty", "AttachStdin",
                              "AttachStdout", "AttachStderr", "Cmd", "Env", "detachKeys"})
EXEC_START_KEYS = frozenset({"Detach", "Tty"})


@dataclass(frozen=True)
class Call:
    """One request as the proxy read it."""

    method: str
    target: str  # path and query as sent
    body: bytes = b""
    upgrade: bool = False  # Connection: Upgrade, Upgrade: tcp (docker-py's exec start)


@dataclass(frozen=True)
class Decision:
    """Whether a call goes to the engine, and the request that then goes there."""

    allowed: bool
    reason: str = ""
    kind: str = "none"
    target: str = ""  # the rebuilt path and query
    body: bytes = b""
    container: str | None = None
    exec_id: str | None = None


def refuse(reason: str) -> Decision:
    """A refusal with its reason."""
    return Decision(False, reason)


class ExecLedger:
    """The execs this proxy created: each may be started once and inspected for a while."""

    def __init__(self, ttl: float = EXEC_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._created: dict[str, float] = {}
        self._started: set[str] = set()

    def issue(self, exec_id: str) -> None:
        """Note an exec the engine created for an allowed probe."""
        with self._lock:
            self._prune()
            self._created[exec_id] = self._clock()

    def may_start(self, exec_id: str) -> bool:
        """True the first time an exec of ours is started."""
        with self._lock:
            self._prune()
            if exec_id not in self._created or exec_id in self._started:
                return False
            self._started.add(exec_id)
            return True

    def may_inspect(self, exec_id: str) -> bool:
        """True for an exec of ours."""
        with self._lock:
            self._prune()
            return exec_id in self._created

    def _prune(self) -> None:
        now = self._clock()
        for exec_id, created in list(self._created.items()):
            if now - created > self._ttl:
                del self._created[exec_id]
                self._started.discard(exec_id)


@dataclass(frozen=True)
class _Matched:
    """A call that names one of ROUTES, with its rebuilt target and the ids it names."""

    kind: str
    target: str
    pairs: list[tuple[str, str]]
    container: str | None
    exec_id: str | None


def decide(call: Call, is_instance: Callable[[str], bool], execs: ExecLedger) -> Decision:
    """Allow the call only as one of ROUTES, on an instance's container or an exec of ours."""
    matched = _match(call)
    if isinstance(matched, Decision):
        return matched
    if matched.container is not None and not is_instance(matched.container):
        return refuse("the container is not one of an Ultrabase instance")
    if matched.kind == "exec_create":
        checked = _exec_create_body(call.body)
        if isinstance(checked, str):
            return refuse(checked)
        return Decision(True, kind=matched.kind, target=matched.target, body=checked,
                        container=matched.container)
    if matched.kind == "exec_start":
        return _decide_exec_start(call, matched, execs)
    return _decide_bodiless(call, matched, execs)


def _match(call: Call) -> _Matched | Decision:
    """The route the call names with its query checked, or the refusal."""
    path, _, raw_query = call.target.partition("?")
    path = _VERSION_PREFIX.sub("", path, count=1)
    found = next(((route, match) for route in ROUTES if route.method == call.method
                  and (match := route.pattern.fullmatch(path))), None)
    if found is None:
        return refuse(f"{call.method[:10]} {path[:120]} is not a call the doctor makes")
    route, match = found
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query),
                          max_num_fields=16)
    except ValueError:
        return refuse("the query string is malformed")
    unknown = sorted({k for k, _ in pairs} - route.query)
    if unknown:
        return refuse(f"query parameter {unknown[0][:40]!r} is not one the doctor sends")
    groups = match.groupdict()
    return _Matched(route.kind, path + (f"?{urlencode(pairs)}" if pairs else ""), pairs,
                    groups.get("container"), groups.get("exec"))


def _decide_exec_start(call: Call, matched: _Matched, execs: ExecLedger) -> Decision:
    checked = _exec_start_body(call.body)
    if isinstance(checked, str):
        return refuse(checked)
    if matched.exec_id is None or not execs.may_start(matched.exec_id):
        return refuse("the exec was not created by this proxy, or was started already")
    return Decision(True, kind=matched.kind, target=matched.target, body=checked,
                    exec_id=matched.exec_id)


def _decide_bodiless(call: Call, matched: _Matched, execs: ExecLedger) -> Decision:
    """The reads: the event stream as the exporter filters it, an exec of ours, no body."""
    if matched.kind == "events":
        problem = _events_filter_problem([v for k, v in matched.pairs if k == "filters"])
        if problem:
            return refuse(problem)
    if call.body:
        return refuse("this call carries no body")
    if matched.kind == "exec_inspect" and (matched.exec_id is None
                                           or not execs.may_inspect(matched.exec_id)):
        return refuse("the exec was not created by this proxy")
    return Decision(True, kind=matched.kind, target=matched.target,
                    container=matched.container, exec_id=matched.exec_id)


def _events_filter_problem(filters: list[str]) -> str | None:
    """Why an event stream is not the exporter's (container events it watches), or None.

    Exec events name the command run, which the exporter never asks for.
    """
    if len(filters) != 1:
        return "the event stream must be filtered as the doctor filters it"
    data = _json_object(filters[0].encode("utf-8"), frozenset({"type", "event"}))
    if isinstance(data, str):
        return f"events filter: {data}"
    events = data.get("event")
    if (data.get("type") != ["container"] or not isinstance(events, list) or not events
            or not all(isinstance(e, str) for e in events)
            or not set(events) <= set(WATCHED_ACTIONS)):
        return "only the container events the doctor watches may be followed"
    return None


def _json_object(body: bytes, keys: frozenset[str]) -> dict[str, Any] | str:
    """The body as a JSON object with only these keys, or why not."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "the body is not JSON"
    if not isinstance(data, dict):
        return "the body is not a JSON object"
    extra = sorted(set(data) - keys)
    if extra:
        return f"the key {extra[0][:40]!r} is not one the doctor sends"
    return data


def _exec_create_body(body: bytes) -> bytes | str:
    """The exec create body to forward (rebuilt), or why it is refused."""
    data = _json_object(body, EXEC_CREATE_KEYS)
    if isinstance(data, str):
        return data
    if data.get("Privileged", False) is not False or data.get("Tty", False) is not False:
        return "a privileged or TTY exec is not one the doctor runs"
    if data.get("AttachStdin", False) is not False:
        return "an exec with stdin is not one the doctor runs"
    if data.get("User") not in (None, ""):
        return "an exec as another user is not one the doctor runs"
    if data.get("Env") not in (None, []):
        return "an exec with its own environment is not one the doctor runs"
    out, err = data.get("AttachStdout", True), data.get("AttachStderr", True)
    if not isinstance(out, bool) or not isinstance(err, bool):
        return "AttachStdout and AttachStderr must be true or false"
    cmd = data.get("Cmd")
    if not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)
            and probe_argv_valid(cmd)):
        return "the command is not one of the doctor's probes"
    rebuilt = {"AttachStdin": False, "AttachStdout": out, "AttachStderr": err, "Tty": False,
               "Privileged": False, "User": "", "Cmd": cmd}
    return json.dumps(rebuilt).encode("utf-8")


def _exec_start_body(body: bytes) -> bytes | str:
    """The exec start body to forward (rebuilt), or why it is refused."""
    data = _json_object(body, EXEC_START_KEYS)
    if isinstance(data, str):
        return data
    if data.get("Detach", False) is not False or data.get("Tty", False) is not False:
        return "only an attached, non-TTY start is one the doctor makes"
    return json.dumps({"Detach": False, "Tty": False}).encode("utf-8")


# ---- which containers are an instance's ------------------------------------------------

class InstanceContainers:
    """Ids of the discovered instances' containers, found as the exporter finds them."""

    def __init__(self, find: Callable[[], set[str]], min_refresh_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._find = find
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: frozenset[str] = frozenset()
        self._refreshed: float | None = None

    def __call__(self, container_id: str) -> bool:
        """True for an instance's container; an unknown id rediscovers (at most 1/s)."""
        if container_id in self._ids:
            return True
        with self._lock:
            now = self._clock()
            if self._refreshed is None or now - self._refreshed >= self._min_refresh:
                self._refreshed = now
                try:
                    self._ids = frozenset(self._find())
                except DoctorError as exc:
                    log.warning("discovery failed, keeping the instances known: %s", exc)
        return container_id in self._ids


def discovered_containers(config: Config, engine: DockerHost) -> Callable[[], set[str]]:
    """A finder of the instances' container ids through discovery on the real engine."""
    def find() -> set[str]:
        found = discover(config, engine)
        return {component.container.id for instance in found.instances.values()
                for component in instance.components.values()
                if component.container is not None}
    return find


# ---- the wire ------------------------------------------------------------------------------

def read_call(conn: socket.socket) -> Call:
    """One request from the client; raises BadRequest."""
    head, rest = _read_head(conn)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") \
            or not _TOKEN.fullmatch(parts[0]) or not parts[1].startswith("/"):
        raise BadRequest("the request line is malformed")
    headers = _headers(lines[1:])
    body = _read_body(conn, rest, _content_length(headers))
    upgrade = (headers.get("connection", "").lower() == "upgrade"
               and headers.get("upgrade", "").lower() == "tcp")
    return Call(parts[0], parts[1], body, upgrade)


def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request head, and what followed it in the same reads."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadRequest("the request head is too large")
        chunk = conn.recv(4096)
        if not chunk:
            raise BadRequest("the connection ended inside the request head")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    if len(head) > MAX_HEAD_BYTES:
        raise BadRequest("the request head is too large")
    return head, rest


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise BadRequest("chunked request bodies are not accepted")
    length_text = headers.get("content-length", "0")
    if not re.fullmatch(r"[0-9]{1,7}", length_text):
        raise BadRequest("Content-Length is malformed")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise BadRequest("the request body is too large")
    return length


def _read_body(conn: socket.socket, body: bytes, length: int) -> bytes:
    while len(body) < length:
        chunk = conn.recv(min(65536, length - len(body)))
        if not chunk:
            raise BadRequest("the connection ended inside the request body")
        body += chunk
    if len(body) > length:
        raise BadRequest("data after the request body (one request per connection)")
    return body


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest("a header line is malformed")
        key = name.lower()
        if key in headers and key in ("content-length", "transfer-encoding", "host"):
            raise BadRequest(f"the header {name} appears twice")
        headers[key] = value.strip()
    return headers


def build_request(call: Call, decision: Decision) -> bytes:
    """The request sent to the engine: the checked target and body, fixed headers."""
    lines = [f"{call.method} {decision.target} HTTP/1.1", "Host: docker",
             "User-Agent: ultrabase-doctor-engine-proxy"]
    if decision.kind == "exec_start" and call.upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    else:
        lines.append("Connection: close")
    if decision.body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(decision.body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + decision.body


def error_response(status: int, message: str) -> bytes:
    """An engine-style error ({"message": ...}) that closes the connection."""
    body = json.dumps({"message": f"ultrabase-doctor engine proxy: {message}"}).encode()
    reason = http.client.responses.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


@dataclass
class EngineProxy:
    """The proxy's state: where the engine is, which containers qualify, our execs."""

    engine_path: str
    is_instance: Callable[[str], bool]
    execs: ExecLedger = field(default_factory=ExecLedger)
    slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_CONNECTIONS))

    def handle(self, client: socket.socket) -> None:
        """Serve one connection: one request, checked, then the engine's answer."""
        if not self.slots.acquire(blocking=False):
            client.sendall(error_response(503, "too many connections"))
            return
        try:
            self._handle(client)
        finally:
            self.slots.release()

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(READ_TIMEOUT_SECONDS)
        try:
            call = read_call(client)
        except BadRequest as exc:
            client.sendall(error_response(400, str(exc)))
            return
        except OSError:
            return
        decision = decide(call, self.is_instance, self.execs)
        if not decision.allowed:
            log.warning("refused %s %s: %s", call.method[:10], call.target[:200],
                        decision.reason)
            client.sendall(error_response(403, decision.reason))
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            try:
                upstream.settimeout(READ_TIMEOUT_SECONDS)
                upstream.connect(self.engine_path)
            except OSError as exc:
                client.sendall(error_response(502, f"the engine is unreachable: "
                                                   f"{exc.strerror or type(exc).__name__}"))
                return
            upstream.sendall(build_request(call, decision))
            if decision.kind != "exec_create":
                _relay(upstream, client)
                return
            try:
                self._exec_created(upstream, client)
            except http.client.HTTPException:
                client.sendall(error_response(502, "the engine's answer was not HTTP"))

    def _exec_created(self, upstream: socket.socket, client: socket.socket) -> None:
        """Pass the engine's answer on, noting the id of the exec it created."""
        response = http.client.HTTPResponse(upstream)
        response.begin()
        data = response.read(MAX_BODY_BYTES)
        if response.status == 201:
            try:
                exec_id = json.loads(data)["Id"]
            except (ValueError, KeyError, TypeError):
                exec_id = None
            if isinstance(exec_id, str) and re.fullmatch(_ID, exec_id):
                self.execs.issue(exec_id)
        reason = response.reason or http.client.responses.get(response.status, "")
        client.sendall((f"HTTP/1.1 {response.status} {reason}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                        "Connection: close\r\n\r\n").encode("latin-1") + data)


def _relay(upstream: socket.socket, client: socket.socket) -> None:
    """The engine's answer to the client until the engine ends it or the client leaves.

    Nothing the client sends now reaches the engine: a second request on the connection,
    or input to an exec, ends the relay instead.
    """
    upstream.settimeout(None)
    client.settimeout(None)
    while True:
        readable, _, _ = select.select([upstream, client], [], [])
        if client in readable:
            return
        chunk = upstream.recv(65536)
        if not chunk:
            return
        client.sendall(chunk)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        # The client or the engine going away mid-answer ends that answer, nothing more.
        with contextlib.suppress(OSError):
            self.server.proxy.handle(self.request)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's backlog of 5 overflows when a sweep's diagnostics connect at once on
    # a loaded host, and a unix socket's connect then fails at once (EAGAIN) instead of
    # waiting: the backlog holds as many as the proxy serves.
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, path: str, proxy: EngineProxy) -> None:
        self.proxy = proxy
        super().__init__(path, _Handler)


def open_server(listen: Path, proxy: EngineProxy) -> _Server:
    """Bind the unix socket (mode 0660, a stale socket replaced); never a TCP port."""
    try:
        if stat.S_ISSOCK(os.lstat(listen).st_mode):
            os.unlink(listen)
        else:
            raise EngineProxyError(f"{listen} exists and is not a socket")
    except FileNotFoundError:
        pass
    if not Path(proxy.engine_path).exists():
        raise EngineProxyError(f"no Docker engine socket at {proxy.engine_path}")
    old = os.umask(0o117)  # the socket is born 0660, never briefly wider
    try:
        server = _Server(str(listen), proxy)
    except OSError as exc:
        raise EngineProxyError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(listen, SOCKET_MODE)
    return server


def build_proxy(config: Config, engine_path: str) -> EngineProxy:
    """The proxy for this config: instances as discovery finds them on the real engine."""
    engine = DockerHost(f"unix://{engine_path}", timeout=config.docker.timeout_seconds)
    return EngineProxy(engine_path, InstanceContainers(discovered_containers(config, engine)))


def serve(config: Config, listen: Path, engine_path: str = DEFAULT_ENGINE) -> int:
    """Run the proxy until interrupted."""
    server = open_server(listen, build_proxy(config, engine_path))
    log.warning("engine proxy on %s for the engine at %s", listen, engine_path)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # docker stop: close the server and remove the socket

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(listen)
    return 0


def check(listen: Path, timeout: float = 5.0) -> bool:
    """True when the proxy on listen answers a ping (the container's healthcheck)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(listen))
            conn.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            head = conn.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))

