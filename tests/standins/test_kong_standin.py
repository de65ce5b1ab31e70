"""The Kong stand-in: config rendering and loading, routing, auth plugins, proxy failures."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest

from tests.standins.conftest import (
    STANDINS,
    Proc,
    Spawner,
    free_port,
    http_request,
    make_jwt,
    wait_until,
)

TEMPLATE = Path(__file__).with_name("kong.template.yml")
ANON_KEY = make_jwt("anon")
SERVICE_KEY = make_jwt("service_role")
DASHBOARD = ("supabase", "dashboard-pw-7d1")


class Echo(BaseHTTPRequestHandler):
    """An upstream that answers with what it received (and sleeps on /slow)."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {"method": self.command, "path": self.path,
                  "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body.decode()}
        Echo.seen.append(record)
        if self.path.startswith("/slow"):
            time.sleep(3)
        payload = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Upstream", "echo")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    """The echo upstream's port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def refused_port() -> int:
    """A port nothing listens on."""
    return free_port()


def render_reference(echo_port: int, refused: int) -> str:
    """The Ultrabase kong.yml template with its upstreams moved to local test servers."""
    text = TEMPLATE.read_text()
    local = f"http://127.0.0.1:{echo_port}"
    for upstream in ("http://auth:9999", "http://rest:3000", "http://meta:8080",
                     "http://studio:3000"):
        text = text.replace(upstream, local)
    text = text.replace("http://storage:5000", f"http://127.0.0.1:{refused}")
    text = text.replace("http://functions:9000", "http://no-such-host.invalid:9000")
    text = text.replace("http://analytics:4000/", f"{local}/slow/")
    return text


class FakeDns:
    """A DNS server on 127.0.0.1 answering A queries from a table, as Docker's would.

    Each name maps to ("A", address, ttl), ("rcode", n) or ("empty",); unknown names are
    NXDOMAIN. Queries of other types get the name's rcode, or an empty NOERROR answer.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.table: dict[str, tuple[Any, ...]] = {}
        self.queries: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def resolver(self) -> str:
        """KONG_DNS_RESOLVER for this server."""
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def count(self, name: str, qtype: int = 1) -> int:
        """How many queries of this name and type arrived."""
        with self._lock:
            return self.queries.count((name, qtype))

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            qid, = struct.unpack(">H", data[:2])
            labels, pos = [], 12
            while data[pos]:
                labels.append(data[pos + 1:pos + 1 + data[pos]].decode())
                pos += 1 + data[pos]
            question = data[12:pos + 5]
            name, qtype = ".".join(labels), struct.unpack(">H", data[pos + 1:pos + 3])[0]
            with self._lock:
                self.queries.append((name, qtype))
                entry = self.table.get(name, ("rcode", 3))
            answers = b""
            rcode = entry[1] if entry[0] == "rcode" else 0
            if entry[0] == "A" and qtype == 1:
                answers = (b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, entry[2], 4)
                           + socket.inet_aton(entry[1]))
            header = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
            self.sock.sendto(header + question + answers, peer)

    def close(self) -> None:
        """Stop answering."""
        self.sock.close()


@pytest.fixture(scope="module")
def dns() -> Iterator[FakeDns]:
    """The DNS server the module's Kong stand-ins ask (KONG_DNS_RESOLVER)."""
    server = FakeDns()
    yield server
    server.close()


def kong_env(template: Path, http_port: int, https_port: int, **extra: str) -> dict[str, str]:
    """The kong service's environment from the compose template."""
    env = {
        "KONG_DATABASE": "off",
        "KONG_DECLARATIVE_CONFIG": str(template.with_name("kong.yml")),
        "KONG_DECLARATIVE_CONFIG_TEMPLATE": str(template),
        "KONG_DNS_ORDER": "LAST,A,CNAME",
        "KONG_PLUGINS": "request-transformer,cors,key-auth,acl,basic-auth",
        "KONG_NGINX_PROXY_PROXY_BUFFER_SIZE": "160k",
        "KONG_NGINX_PROXY_PROXY_BUFFERS": "64 160k",
        "SUPABASE_ANON_KEY": ANON_KEY,
        "SUPABASE_SERVICE_KEY": SERVICE_KEY,
        "DASHBOARD_USERNAME": DASHBOARD[0],
        "DASHBOARD_PASSWORD": DASHBOARD[1],
        "KONG_LOG_LEVEL": "debug",
        "KONG_PROXY_LISTEN": f"127.0.0.1:{http_port}, 127.0.0.1:{https_port} http2 ssl",
        "KONG_UPSTREAM_TIMEOUT": "1",
        "INSTANCE_ID": "abcd1234",
    }
    env.update(extra)
    return env


def start_kong(spawn: Spawner, directory: Path, config: str, wait: bool = True,
               **extra: str) -> Proc:
    """Write config as the mounted template and start the stand-in."""
    template = directory / f"temp-{time.monotonic_ns()}.yml"
    template.write_text(config)
    http_port, https_port = free_port(), free_port()
    return spawn("kong.py", kong_env(template, http_port, https_port, **extra),
                 ports={"http": http_port, "https": https_port},
                 wait_port="http" if wait else None)


@pytest.fixture(scope="module")
def kong(module_spawn: Spawner, echo: int, dns: FakeDns,
         tmp_path_factory: pytest.TempPathFactory) -> Proc:
    """A Kong stand-in loaded with the Ultrabase kong.yml (duplicated rest-v1 included)."""
    directory = tmp_path_factory.mktemp("kong")
    return start_kong(module_spawn, directory, render_reference(echo, refused_port()),
                      KONG_DNS_RESOLVER=dns.resolver)


def call(proc: Proc, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None, scheme: str = "http") -> Any:
    """Call Kong's proxy listener."""
    port_name = "https" if scheme == "https" else "http"
    return http_request(method, proc.url(port_name, scheme) + path, headers or {}, body)


def last_seen() -> dict[str, Any]:
    """What the echo upstream received last."""
    return Echo.seen[-1]


def basic(user: str, password: str) -> str:
    """A Basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_missing_api_key(kong: Proc) -> None:
    """No apikey: 401 from Kong itself, with its realm header and Server, no upstream call."""
    before = len(Echo.seen)
    resp = call(kong, "GET", "/auth/v1/health")
    assert resp.status == 401
    assert resp.body == b'{"message":"No API key found in request"}'
    assert resp.headers["WWW-Authenticate"] == 'Key realm="kong"'
    assert resp.headers["Server"] == "kong/2.8.1"
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "X-Kong-Response-Latency" in resp.headers
    assert "Via" not in resp.headers
    assert len(Echo.seen) == before


def test_invalid_api_key(kong: Proc) -> None:
    """An unknown key (e.g. signed with another secret) is rejected by key-auth."""
    resp = call(kong, "GET", "/auth/v1/health", {"apikey": make_jwt("anon", secret="x" * 40)})
    assert resp.status == 401
    assert resp.json() == {"message": "Invalid authentication credentials"}
    assert "WWW-Authenticate" not in resp.headers


def test_anon_key_proxies_with_strip_path(kong: Proc) -> None:
    """/auth/v1/health goes to the upstream as /health with the consumer headers added."""
    resp = call(kong, "GET", "/auth/v1/health?x=1", {"apikey": ANON_KEY})
    assert resp.status == 200
    assert resp.headers["Via"] == "kong/2.8.1"
    assert "X-Kong-Upstream-Latency" in resp.headers
    assert "X-Kong-Proxy-Latency" in resp.headers
    assert resp.headers["X-Upstream"] == "echo"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    seen = resp.json()
    assert seen["path"] == "/health?x=1"
    assert seen["headers"]["x-consumer-username"] == "anon"
    assert seen["headers"]["apikey"] == ANON_KEY
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert "x-consumer-groups" not in seen["headers"]


def test_hide_credentials_strips_the_key(kong: Proc) -> None:
    """rest-v1 hides the apikey from PostgREST, in the query and in headers."""
    resp = call(kong, "GET", f"/rest/v1/todos?apikey={ANON_KEY}&select=id")
    assert resp.status == 200
    assert resp.json()["path"] == "/todos?select=id"
    resp = call(kong, "POST", "/rest/v1/todos", {"apikey": SERVICE_KEY}, b'{"a":1}')
    seen = resp.json()
    assert "apikey" not in seen["headers"]
    assert seen["method"] == "POST" and seen["body"] == '{"a":1}'
    assert seen["headers"]["x-consumer-username"] == "service_role"


def test_request_transformer_adds_profile(kong: Proc) -> None:
    """graphql-v1 adds Content-Profile and maps onto /rpc/graphql."""
    resp = call(kong, "POST", "/graphql/v1", {"apikey": ANON_KEY}, b"{}")
    seen = resp.json()
    assert seen["path"] == "/rpc/graphql"
    assert seen["headers"]["content-profile"] == "graphql_public"


def test_acl_forbids_anon_on_pg_meta(kong: Proc) -> None:
    """/pg/ only admits the admin group: anon gets 403, service_role gets through."""
    resp = call(kong, "GET", "/pg/tables", {"apikey": ANON_KEY})
    assert resp.status == 403
    assert resp.body == b'{"message":"You cannot consume this service"}'
    assert call(kong, "GET", "/pg/tables", {"apikey": SERVICE_KEY}).json()["path"] == "/tables"


def test_basic_auth_on_dashboard(kong: Proc) -> None:
    """The catch-all route needs the dashboard credentials, which are not forwarded."""
    missing = call(kong, "GET", "/")
    assert missing.status == 401
    assert missing.body == b'{"message":"Unauthorized"}'
    assert missing.headers["WWW-Authenticate"] == 'Basic realm="kong"'
    wrong = call(kong, "GET", "/", {"Authorization": basic(DASHBOARD[0], "nope")})
    assert wrong.status == 401
    assert wrong.json() == {"message": "Invalid authentication credentials"}
    good = call(kong, "GET", "/project/default", {"Authorization": basic(*DASHBOARD)})
    assert good.status == 200
    seen = good.json()
    assert seen["path"] == "/project/default"
    assert "authorization" not in seen["headers"]
    assert seen["headers"]["x-consumer-username"] == "DASHBOARD"


def test_trailing_slash_matters(kong: Proc) -> None:
    """/auth/v1 (no slash) does not match /auth/v1/ and falls to the dashboard route."""
    resp = call(kong, "GET", "/auth/v1", {"apikey": ANON_KEY})
    assert resp.status == 401
    assert resp.json() == {"message": "Unauthorized"}


def error_lines(proc: Proc, text: str) -> list[str]:
    """The stand-in's stderr lines that contain text."""
    return [line for line in proc.stderr.splitlines() if text in line]


def test_refused_upstream_is_tried_six_times_then_502(kong: Proc) -> None:
    """1 + retries (5) tries, each with nginx's [error] line and Kong's two debug lines; the
    502 page comes after Kong marked the request proxied: Via and latencies, nginx's Server."""
    before = len(error_lines(kong, "/storage/v1/status"))
    resp = call(kong, "GET", "/storage/v1/status")
    assert resp.status == 502
    assert resp.body == (b'{\n  "message":"An invalid response was received from the '
                         b'upstream server"\n}')
    assert resp.headers["Via"] == "kong/2.8.1"
    assert resp.headers["Server"] == "openresty"
    assert "X-Kong-Upstream-Latency" in resp.headers
    assert "X-Kong-Proxy-Latency" in resp.headers
    assert "X-Kong-Response-Latency" not in resp.headers
    refused = [line for line in error_lines(kong, "/storage/v1/status")[before:]
               if "[error]" in line]
    assert len(refused) == 6
    port = refused[0].split('upstream: "http://127.0.0.1:')[1].split("/")[0]
    for line in refused:
        assert re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] 1#0: \*\d+ connect\(\) "
                        r"failed \(111: Connection refused\) while connecting to upstream, "
                        r'client: 127\.0\.0\.1, server: kong, request: "GET /storage/v1/status '
                        rf'HTTP/1\.1", upstream: "http://127\.0\.0\.1:{port}/status", host: '
                        r'"127\.0\.0\.1:\d+"$', line), line
    connection = refused[0].split("*")[1].split(" ")[0]
    tries = [line.split("[lua] ")[1] for line in kong.stderr.splitlines()
             if f"[debug] 1#0: *{connection} [lua] init.lua:1006" in line]
    assert tries == [f"init.lua:1006: balancer(): setting address (try {n}): 127.0.0.1:{port}"
                     for n in range(1, 7)]
    keepalive = error_lines(kong, f"*{connection} [lua] init.lua:1035: balancer(): enabled "
                                  f"connection keepalive (pool=127.0.0.1|{port}, pool_size=60, "
                                  "idle_timeout=60, max_requests=100)")
    assert len(keepalive) == 6


def test_name_error_is_503_name_resolution_failed(kong: Proc, dns: FakeDns) -> None:
    """NXDOMAIN: Kong's own 503 before proxying (Server, response latency), with the try
    list of KONG_DNS_ORDER=LAST,A,CNAME logged by the balancer."""
    resp = call(kong, "GET", "/functions/v1/hello")
    assert resp.status == 503
    assert resp.json() == {"message": "name resolution failed"}
    assert resp.headers["Server"] == "kong/2.8.1"
    assert "X-Kong-Response-Latency" in resp.headers
    assert "Via" not in resp.headers
    line = error_lines(kong, "DNS resolution failed")[-1]
    assert ("[lua] init.lua:310: execute(): DNS resolution failed: dns server error: 3 name "
            'error. Tried: ["(short)no-such-host.invalid:(na) - cache-miss",'
            '"no-such-host.invalid:1 - cache-miss/scheduled/querying/dns server error: 3 '
            'name error","no-such-host.invalid:5 - cache-miss/scheduled/querying/dns server '
            'error: 3 name error"], client: 127.0.0.1, server: kong, request: "GET '
            '/functions/v1/hello HTTP/1.1", host: ') in line
    # The not-found answer is kept (dns_not_found_ttl 30 s): no second query.
    asked = dns.count("no-such-host.invalid")
    assert call(kong, "GET", "/functions/v1/hello").status == 503
    assert dns.count("no-such-host.invalid") == asked


DNS_ROUTE = """
_format_version: '2.1'
services:
  - name: upstream
    url: http://{host}:{port}/
    routes:
      - name: upstream-all
        paths: [/up/]
"""


def start_named(spawn: Spawner, tmp_path: Path, dns: FakeDns, host: str, port: int,
                **extra: str) -> Proc:
    """A Kong stand-in whose only service is host:port, resolved through dns."""
    return start_kong(spawn, tmp_path, DNS_ROUTE.format(host=host, port=port),
                      KONG_DNS_RESOLVER=dns.resolver, **extra)


@pytest.mark.parametrize(
    ("entry", "status", "message", "logged"),
    [
        (("rcode", 2), 500, "An unexpected error occurred", "dns server error: 2 server failure"),
        (("rcode", 5), 500, "An unexpected error occurred", "dns server error: 5 refused"),
        (("empty",), 503, "name resolution failed",
         "dns client error: 101 empty record received"),
    ],
    ids=["servfail", "refused", "empty"],
)
def test_only_not_found_is_503(spawn: Spawner, tmp_path: Path, dns: FakeDns,
                               entry: tuple[Any, ...], status: int, message: str,
                               logged: str) -> None:
    """A name error or an empty answer is 503 name resolution failed; any other DNS failure
    is Kong's 500 "An unexpected error occurred" (runloop/balancer/init.lua:310-319)."""
    host = f"svc-{entry[0]}-{entry[-1]}"
    dns.table[host] = entry
    proc = start_named(spawn, tmp_path, dns, host, 80)
    resp = call(proc, "GET", "/up/x")
    assert resp.status == status
    assert resp.json() == {"message": message}
    assert resp.headers["Server"] == "kong/2.8.1"
    assert f"DNS resolution failed: {logged}. Tried: " in proc.stderr


def test_answer_is_kept_for_its_ttl(spawn: Spawner, tmp_path: Path, dns: FakeDns,
                                    echo: int) -> None:
    """Kong proxies to the address it resolved until the answer's TTL ends: a service that
    moved meanwhile is not followed (Docker's DNS answers with TTL 600)."""
    dns.table["moving"] = ("A", "127.0.0.1", 600)
    proc = start_named(spawn, tmp_path, dns, "moving", echo)
    assert call(proc, "GET", "/up/one").status == 200
    dns.table["moving"] = ("A", "127.0.0.2", 600)
    assert call(proc, "GET", "/up/two").status == 200
    assert dns.count("moving") == 1
    assert "setting address (try 1): 127.0.0.1:" in error_lines(proc, "[debug]")[-2]


def test_expired_answer_is_refreshed(spawn: Spawner, tmp_path: Path, dns: FakeDns,
                                     echo: int) -> None:
    """After the TTL the name is asked again (the stale answer serves while it is), and the
    new address is used; here nothing listens there, so the tries are refused."""
    dns.table["short-lived"] = ("A", "127.0.0.1", 1)
    proc = start_named(spawn, tmp_path, dns, "short-lived", echo)
    assert call(proc, "GET", "/up/one").status == 200
    dns.table["short-lived"] = ("A", "127.0.0.2", 600)
    wait_until(lambda: call(proc, "GET", "/up/two").status == 502, 15,
               "Kong to use the new address")
    assert dns.count("short-lived") >= 2
    assert f'upstream: "http://127.0.0.2:{echo}/two"' in error_lines(proc, "(111:")[-1]


def test_valid_ttl_overrides_the_answers_ttl(spawn: Spawner, tmp_path: Path, dns: FakeDns,
                                             echo: int) -> None:
    """KONG_DNS_VALID_TTL (the fleet's --kong-dns-ttl) replaces the answer's TTL."""
    dns.table["overridden"] = ("A", "127.0.0.1", 600)
    proc = start_named(spawn, tmp_path, dns, "overridden", echo, KONG_DNS_VALID_TTL="1",
                       KONG_DNS_STALE_TTL="0")
    assert call(proc, "GET", "/up/one").status == 200
    wait_until(lambda: call(proc, "GET", "/up/two").status == 200
               and dns.count("overridden") >= 2, 10, "Kong to ask again after 1 s")


def test_timeouts_are_retried_then_504(spawn: Spawner, tmp_path: Path, echo: int) -> None:
    """A read timeout is tried again too (nginx's proxy_next_upstream error timeout)."""
    config = DNS_ROUTE.format(host="127.0.0.1", port=echo).replace("/up/", "/slow/").replace(
        "url: http://127.0.0.1:" + str(echo) + "/", "url: http://127.0.0.1:" + str(echo)
        + "/slow/")
    proc = start_kong(spawn, tmp_path, config, KONG_UPSTREAM_TIMEOUT="0.3")
    resp = call(proc, "GET", "/slow/x")
    assert resp.status == 504
    assert json.loads(resp.body) == {"message": "The upstream server is timing out"}
    assert len(error_lines(proc, "upstream timed out (110: Operation timed out) while "
                                 "reading response header from upstream")) == 6


def test_post_is_not_tried_again_once_sent(spawn: Spawner, tmp_path: Path, echo: int) -> None:
    """A POST that reached the upstream is not sent twice (nginx >= 1.9.13)."""
    config = DNS_ROUTE.format(host="127.0.0.1", port=echo).replace(
        "url: http://127.0.0.1:" + str(echo) + "/", "url: http://127.0.0.1:" + str(echo)
        + "/slow/")
    proc = start_kong(spawn, tmp_path, config, KONG_UPSTREAM_TIMEOUT="0.3")
    assert call(proc, "POST", "/up/x", body=b"{}").status == 504
    assert len(error_lines(proc, "upstream timed out")) == 1


def test_client_leaving_ends_the_tries(spawn: Spawner, tmp_path: Path, echo: int) -> None:
    """A client that gives up is logged as nginx does: an [info] line and a 499, no more
    tries and no [error] line (Kong keeps the doctor's timeout from piling up work)."""
    config = DNS_ROUTE.format(host="127.0.0.1", port=echo).replace(
        "url: http://127.0.0.1:" + str(echo) + "/", "url: http://127.0.0.1:" + str(echo)
        + "/slow/")
    proc = start_kong(spawn, tmp_path, config, KONG_UPSTREAM_TIMEOUT="10")
    with pytest.raises(TimeoutError):
        http_request("GET", proc.url() + "/up/x", timeout=0.5)
    wait_until(lambda: bool(error_lines(proc, "client prematurely closed")), 5,
               "the [info] line")
    line = error_lines(proc, "client prematurely closed")[0]
    assert "[info] 1#0: *" in line
    assert ("epoll_wait() reported that client prematurely closed connection, so upstream "
            "connection is closed too while reading response header from upstream, client: "
            '127.0.0.1, server: kong, request: "GET /up/x HTTP/1.1", upstream: '
            f'"http://127.0.0.1:{echo}/slow/x", host: ') in line
    wait_until(lambda: '"GET /up/x HTTP/1.1" 499 0' in proc.stdout, 5, "the 499 access line")
    assert not error_lines(proc, "[error]")


def test_a_client_closing_its_connection_is_an_info_line(kong: Proc) -> None:
    """nginx logs a keepalive connection the client closes, without request context."""
    before = len(error_lines(kong, "closed keepalive connection"))
    call(kong, "GET", "/auth/v1/health", {"apikey": ANON_KEY})
    wait_until(lambda: len(error_lines(kong, "closed keepalive connection")) > before, 5,
               "the [info] line")
    line = error_lines(kong, "closed keepalive connection")[-1]
    assert re.search(r"\[info\] 1#0: \*\d+ client 127\.0\.0\.1 closed keepalive connection$",
                     line), line


def test_log_level_notice_hides_debug_and_info(spawn: Spawner, tmp_path: Path,
                                               echo: int) -> None:
    """KONG_LOG_LEVEL is honoured: at notice (Kong's default) no balancer lines."""
    proc = start_kong(spawn, tmp_path, MINIMAL.format(echo=echo), KONG_LOG_LEVEL="notice")
    assert call(proc, "GET", "/api/x").status == 200
    wait_until(lambda: '"GET /api/x HTTP/1.1" 200' in proc.stdout, 5, "the access line")
    assert "start worker processes" in proc.stderr
    assert not error_lines(proc, "[debug]") and not error_lines(proc, "[info]")


def test_cors_preflight_needs_no_key(kong: Proc) -> None:
    """The cors plugin answers OPTIONS before key-auth runs; the upstream is not called."""
    before = len(Echo.seen)
    resp = call(kong, "OPTIONS", "/rest/v1/todos", {
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "apikey,authorization"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"].split(",")
    assert resp.headers["Access-Control-Allow-Headers"] == "apikey,authorization"
    assert len(Echo.seen) == before


def test_tls_listener(kong: Proc) -> None:
    """The ssl listener terminates TLS and proxies with X-Forwarded-Proto https."""
    resp = call(kong, "GET", "/auth/v1/health", {"apikey": ANON_KEY}, scheme="https")
    assert resp.status == 200
    assert resp.json()["headers"]["x-forwarded-proto"] == "https"


def test_access_log_is_nginx_combined(kong: Proc) -> None:
    """Each request leaves a combined-format line on stdout."""
    call(kong, "GET", "/pg/x", {"apikey": ANON_KEY, "User-Agent": "doctor-test/1"})

    def lines() -> list[str]:
        return [line for line in kong.stdout.splitlines() if '"GET /pg/x HTTP/1.1" 403' in line]

    # The line is written just after the response, so it may trail the client by a moment.
    wait_until(lambda: bool(lines()), 5, "the access log line")
    assert lines()[-1].startswith("127.0.0.1 - - [")
    assert lines()[-1].endswith('"-" "doctor-test/1"')


def test_rendered_config_written(kong: Proc) -> None:
    """The expanded kong.yml lands at KONG_DECLARATIVE_CONFIG with the keys filled in."""
    rendered = Path(kong.env["KONG_DECLARATIVE_CONFIG"]).read_text()
    assert f"key: {ANON_KEY}" in rendered
    assert f"username: {DASHBOARD[0]}" in rendered
    assert "${SUPABASE_ANON_KEY}" not in rendered
    assert "http://realtime-dev.supabase-realtime-abcd1234:4000/socket" in rendered


# --- configs other than the reference ----------------------------------------------------------


MINIMAL = """
_format_version: '2.1'
services:
  - name: api
    url: http://127.0.0.1:{echo}/base
    routes:
      - name: api-all
        strip_path: true
        paths: [/api/]
"""


def test_no_route(spawn: Spawner, echo: int, tmp_path: Path) -> None:
    """A path no route claims is Kong's 404; strip_path joins onto the service path."""
    proc = start_kong(spawn, tmp_path, MINIMAL.format(echo=echo))
    resp = call(proc, "GET", "/elsewhere")
    assert resp.status == 404
    assert resp.body == b'{"message":"no Route matched with those values"}'
    assert resp.headers["Server"] == "kong/2.8.1"
    assert call(proc, "GET", "/api/items").json()["path"] == "/base/items"
    assert call(proc, "GET", "/api/").json()["path"] == "/base"


def test_duplicate_service_last_definition_wins(spawn: Spawner, echo: int,
                                                tmp_path: Path) -> None:
    """Kong 2.8 accepts a duplicated service name; the later entry replaces the earlier."""
    config = MINIMAL.format(echo=echo) + f"""
  - name: api
    url: http://127.0.0.1:{echo}/second
    routes:
      - name: api-all
        strip_path: true
        paths: [/api/]
"""
    proc = start_kong(spawn, tmp_path, config)
    assert call(proc, "GET", "/api/x").json()["path"] == "/second/x"


def test_duplicate_service_rejected_in_strict_mode(spawn: Spawner, echo: int,
                                                   tmp_path: Path) -> None:
    """With the strict knob, the reference kong.yml fails as Kong >= 3.4 would: exit 1."""
    proc = start_kong(spawn, tmp_path, render_reference(echo, refused_port()), wait=False,
                      KONG_STANDIN_STRICT_UNIQUENESS="on")
    assert proc.wait_exit(timeout=10) == 1
    assert ("uniqueness violation: 'services' entity with name set to 'rest-v1' already "
            "declared") in proc.stderr
    assert "error parsing declarative config file" in proc.stderr
    assert not port_listening(proc.ports["http"])


def port_listening(port: int) -> bool:
    """Whether 127.0.0.1:port accepts connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("services: [\n  - name: x\n", "failed parsing declarative configuration: "),
        ("_format_version: '2.1'\nconsumers:\n  - username: anon\n    keyauth_credentials:\n"
         "      - key: ''\n", "in 'key': length must be at least 1"),
        ("_format_version: '2.1'\nservices:\n  - name: s\n    url: http://x:1/\n    plugins:\n"
         "      - name: rate-limiting\n", "plugin 'rate-limiting' not enabled"),
    ],
    ids=["yaml", "empty-key", "plugin-not-enabled"],
)
def test_invalid_config_exits(spawn: Spawner, tmp_path: Path, config: str,
                              expected: str) -> None:
    """An invalid declarative config stops Kong at start with its init_by_lua error."""
    proc = start_kong(spawn, tmp_path, config, wait=False)
    assert proc.wait_exit(timeout=10) == 1
    assert "nginx: [error] init_by_lua error:" in proc.stderr
    assert expected in proc.stderr


def test_broken_quoting_fails_the_entrypoint(spawn: Spawner, tmp_path: Path) -> None:
    """A stray double quote breaks the entrypoint's eval; the container exits with bash's 2."""
    proc = start_kong(spawn, tmp_path, "_format_version: '2.1'\nx: \"unbalanced\n", wait=False)
    assert proc.wait_exit(timeout=10) == 2
    assert "unexpected EOF while looking for matching" in proc.stderr


def test_sigterm_stops_promptly(spawn: Spawner, echo: int, tmp_path: Path) -> None:
    """SIGTERM ends the process at once with status 0 (it may run as PID 1)."""
    proc = start_kong(spawn, tmp_path, MINIMAL.format(echo=echo))
    started = time.monotonic()
    assert proc.stop(timeout=3) == 0
    assert time.monotonic() - started < 3


# --- the entrypoint's expansion, in-process ------------------------------------------------------


def import_standin(script: str) -> ModuleType:
    """A stand-in script imported from the stand-ins directory (its siblings importable)."""
    name = f"{Path(script).stem}_standin"
    sys.path.insert(0, str(STANDINS))
    try:
        spec = importlib.util.spec_from_file_location(name, STANDINS / script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # dataclasses resolve their module through sys.modules while the class is created.
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(STANDINS))


@pytest.fixture(scope="module")
def kong_module() -> ModuleType:
    """kong.py imported from the stand-ins directory."""
    return import_standin("kong.py")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key: ${KEY}\n", "key: abc\n"),
        ("key: $KEY and $KEY_2x\n", "key: abc and \n"),
        ("user: ${MISSING:-fallback} ${EMPTY:-dflt} ${EMPTY-kept}\n", "user: fallback dflt \n"),
        ("price: \\$5 and \\\\ and \\d\n", "price: $5 and \\ and \\d\n"),
        ("lone $ sign, ${KEY}$\n", "lone $ sign, abc$\n"),
        ("pw: pa$$word\n", "pw: pa<pid>word\n"),  # <pid>: the test's; ids stay stable
        ('a: "x   y"  z\n', "a: x y  z\n"),
        ("q: 'single $KEY'\n", "q: 'single abc'\n"),
    ],
)
def test_expansion_matches_the_entrypoint(kong_module: ModuleType, text: str,
                                          expected: str) -> None:
    """Plain variables, defaults and escapes expand as bash's eval-echo does."""
    environ = {"KEY": "abc", "EMPTY": ""}
    expected = expected.replace("<pid>", str(os.getpid()))
    assert kong_module.expand_like_entrypoint(text, environ) == expected


def test_expansion_errors(kong_module: ModuleType) -> None:
    """Quoting bash cannot parse is an error, as it is for the real entrypoint."""
    with pytest.raises(kong_module.ExpansionError, match="matching"):
        kong_module.expand_like_entrypoint('x: "odd\n', {})
    with pytest.raises(kong_module.ExpansionError, match="bad substitution"):
        kong_module.expand_like_entrypoint("x: ${A B}\n", {})
    with pytest.raises(kong_module.ExpansionError, match="y z: command not found") as info:
        kong_module.expand_like_entrypoint('a: "x\ny" z', {})
    assert info.value.status == 127
    assert info.value.partial == "a: x\n"


# --- Kong's DNS client, in-process with a fake clock ---------------------------------------------


@pytest.fixture(scope="module")
def kongdns() -> ModuleType:
    """kongdns.py imported from the stand-ins directory."""
    return import_standin("kongdns.py")


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Answers:
    """The query function of a DnsClient: answers from a table, counted per name and type."""

    def __init__(self, kongdns: ModuleType) -> None:
        self.kongdns = kongdns
        self.table: dict[tuple[str, int], Any] = {}
        self.asked: list[tuple[str, int]] = []

    def a(self, name: str, address: str, ttl: float = 600) -> None:
        """An A answer for name."""
        record = self.kongdns.Record(1, name, ttl, address=address)
        self.table[(name, 1)] = self.kongdns.Answer([record])

    def __call__(self, config: Any, name: str, qtype: int) -> tuple[Any, str | None]:
        self.asked.append((name, qtype))
        found = self.table.get((name, qtype))
        if found is None:
            return self.kongdns.Answer([], 3, "name error"), None
        if isinstance(found, str):
            return None, found
        # A fresh copy each time, as a new answer from the server would be.
        return self.kongdns.Answer(list(found.records), found.errcode, found.errstr), None


def make_client(kongdns: ModuleType, answers: Answers, clock: Clock,
                **config: Any) -> Any:
    settings = {"nameservers": (("127.0.0.11", 53),), "ndots": 0,
                "order": (kongdns.TYPE_LAST, kongdns.TYPE_A, kongdns.TYPE_CNAME), **config}
    return kongdns.DnsClient(kongdns.DnsConfig(**settings), answers, clock)


def test_dns_cache_keeps_an_answer_for_its_ttl_then_serves_it_stale(
        kongdns: ModuleType) -> None:
    """600 s from Docker's answer; then 4 s of stale answers while a refresh runs."""
    clock, answers = Clock(), Answers(kongdns)
    answers.a("auth", "172.18.0.5")
    client = make_client(kongdns, answers, clock)
    assert client.toip("auth", 9999)[:2] == ("172.18.0.5", 9999)
    answers.a("auth", "172.18.0.9")
    clock.now += 599
    assert client.toip("auth", 9999)[0] == "172.18.0.5"
    assert answers.asked == [("auth", 1)]
    clock.now += 2  # expired, inside dns_stale_ttl: the old address, and a refresh starts
    address, _, tries = client.toip("auth", 9999)
    assert address == "172.18.0.5"
    assert "stale" in str(tries)
    wait_until(lambda: answers.asked.count(("auth", 1)) == 2, 5, "the background refresh")
    wait_until(lambda: client.toip("auth", 9999)[0] == "172.18.0.9", 5, "the new address")


def test_dns_cache_drops_an_answer_after_ttl_plus_stale_ttl(kongdns: ModuleType) -> None:
    """Past TTL + dns_stale_ttl nothing is served from the cache: the name is asked again."""
    clock, answers = Clock(), Answers(kongdns)
    answers.a("rest", "172.18.0.6", ttl=600)
    client = make_client(kongdns, answers, clock)
    client.toip("rest", 3000)
    answers.a("rest", "172.18.0.7", ttl=600)
    clock.now += 605
    assert client.toip("rest", 3000)[0] == "172.18.0.7"


def test_valid_ttl_replaces_the_answers_ttl(kongdns: ModuleType) -> None:
    """dns_valid_ttl (KONG_DNS_VALID_TTL) overrides the TTL of every answer."""
    clock, answers = Clock(), Answers(kongdns)
    answers.a("auth", "172.18.0.5")
    client = make_client(kongdns, answers, clock, valid_ttl=20.0, stale_ttl=0.0)
    client.toip("auth", 9999)
    answers.a("auth", "172.18.0.9")
    clock.now += 21
    assert client.toip("auth", 9999)[0] == "172.18.0.9"


def test_name_error_is_kept_30_s_and_other_errors_1_s(kongdns: ModuleType) -> None:
    """dns_not_found_ttl 30 s for a name error; dns_error_ttl 1 s for a server failure."""
    clock, answers = Clock(), Answers(kongdns)
    client = make_client(kongdns, answers, clock, stale_ttl=0.0)
    address, err, _ = client.toip("gone", 80)
    assert (address, err) == (None, "dns server error: 3 name error")
    asked = len(answers.asked)
    answers.a("gone", "172.18.0.5")
    clock.now += 29
    assert client.toip("gone", 80)[0] is None
    assert len(answers.asked) == asked
    clock.now += 2
    assert client.toip("gone", 80)[0] == "172.18.0.5"
    answers.table[("flaky", 1)] = kongdns.Answer([], 2, "server failure")
    answers.table[("flaky", 5)] = kongdns.Answer([], 2, "server failure")
    assert client.toip("flaky", 80)[1] == "dns server error: 2 server failure"
    answers.a("flaky", "172.18.0.8")
    clock.now += 1.5
    assert client.toip("flaky", 80)[0] == "172.18.0.8"


def test_an_error_does_not_replace_a_held_answer(kongdns: ModuleType) -> None:
    """A failing refresh keeps the stale records (client.lua cacheinsert)."""
    clock, answers = Clock(), Answers(kongdns)
    answers.a("auth", "172.18.0.5", ttl=10)
    client = make_client(kongdns, answers, clock)
    client.toip("auth", 9999)
    answers.table[("auth", 1)] = kongdns.Answer([], 2, "server failure")
    clock.now += 11
    assert client.toip("auth", 9999)[0] == "172.18.0.5"
    wait_until(lambda: answers.asked.count(("auth", 1)) == 2, 5, "the refresh")
    assert client.toip("auth", 9999)[0] == "172.18.0.5"


def test_a_server_that_never_answers_is_tried_twice(kongdns: ModuleType) -> None:
    """No reply: the query is waited for, tried once more, then Kong's pool error."""
    clock, answers = Clock(), Answers(kongdns)
    answers.table[("auth", 1)] = "failed to receive reply from UDP server 127.0.0.11:53: timeout"
    answers.table[("auth", 5)] = answers.table[("auth", 1)]
    client = make_client(kongdns, answers, clock, attempts=1, timeout=0.05)
    address, err, tries = client.toip("auth", 9999)
    assert address is None
    assert err == ("dns lookup pool exceeded retries (1): failed to receive reply from UDP "
                   "server 127.0.0.11:53: timeout")
    assert str(tries).startswith(
        '["(short)auth:(na) - cache-miss","auth:1 - cache-miss/scheduled/querying/try 1 '
        "error: failed to receive reply from UDP server 127.0.0.11:53: timeout/scheduled/"
        "querying/try 2 error: failed to receive reply from UDP server 127.0.0.11:53: "
        'timeout/dns lookup pool exceeded retries (1): ')


def test_last_successful_type_is_tried_first(kongdns: ModuleType) -> None:
    """LAST: the type that answered a name last time comes first in the order."""
    clock, answers = Clock(), Answers(kongdns)
    cname = kongdns.Record(5, "alias", 600, target="auth")
    answers.table[("alias", 5)] = kongdns.Answer([cname])
    answers.a("auth", "172.18.0.5")
    client = make_client(kongdns, answers, clock, stale_ttl=0.0)
    assert client.toip("alias", 80)[0] == "172.18.0.5"
    assert answers.asked[:2] == [("alias", 1), ("alias", 5)]
    clock.now += 700
    answers.asked.clear()
    client.toip("alias", 80)
    assert answers.asked[0] == ("alias", 5)


def test_resolv_conf_and_environment(kongdns: ModuleType) -> None:
    """resolv.conf's nameservers and options, KONG_DNS_* settings, the hosts file."""
    files = {"/etc/resolv.conf": "nameserver 127.0.0.11\nsearch corp.example\n"
                                 "options ndots:0 timeout:3 attempts:2\n",
             "/etc/hosts": "127.0.0.1 localhost\n172.18.0.3 kong-host\n::1 ip6-localhost\n"}
    config = kongdns.config_from_env({"KONG_DNS_ORDER": "LAST,A,CNAME",
                                      "KONG_DNS_STALE_TTL": "2"}, files.__getitem__)
    assert config.nameservers == (("127.0.0.11", 53),)
    assert (config.ndots, config.timeout, config.attempts) == (0, 3.0, 2)
    assert config.search == ("corp.example",)
    assert config.order == (kongdns.TYPE_LAST, kongdns.TYPE_A, kongdns.TYPE_CNAME)
    assert config.stale_ttl == 2.0 and config.valid_ttl is None
    assert ("kong-host", "172.18.0.3") in config.hosts
    resolver = kongdns.config_from_env({"KONG_DNS_RESOLVER": "10.0.0.2:5353,10.0.0.3"},
                                       files.__getitem__)
    assert resolver.nameservers == (("10.0.0.2", 5353), ("10.0.0.3", 53))
    assert resolver.order == (kongdns.TYPE_LAST, kongdns.TYPE_SRV, kongdns.TYPE_A,
                              kongdns.TYPE_CNAME)
