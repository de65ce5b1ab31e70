"""The Kong stand-in: config rendering and loading, routing, auth plugins, proxy failures."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import socket
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
def kong(module_spawn: Spawner, echo: int, tmp_path_factory: pytest.TempPathFactory) -> Proc:
    """A Kong stand-in loaded with the Ultrabase kong.yml (duplicated rest-v1 included)."""
    directory = tmp_path_factory.mktemp("kong")
    return start_kong(module_spawn, directory, render_reference(echo, refused_port()))


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


def test_refused_upstream_is_502(kong: Proc) -> None:
    """A refused connection is Kong's 502 error page plus an [error] line on stderr."""
    resp = call(kong, "GET", "/storage/v1/status")
    assert resp.status == 502
    assert resp.body == (b'{\n  "message":"An invalid response was received from the '
                         b'upstream server"\n}')
    assert resp.headers["Via"] == "kong/2.8.1"
    assert "connect() failed (111: Connection refused) while connecting to upstream" in (
        kong.stderr)


def test_unresolvable_upstream_is_503(kong: Proc) -> None:
    """A service host that does not resolve is 503 name resolution failed."""
    resp = call(kong, "GET", "/functions/v1/hello")
    assert resp.status == 503
    assert resp.json() == {"message": "name resolution failed"}
    assert resp.headers["Server"] == "kong/2.8.1"


def test_slow_upstream_is_504(kong: Proc) -> None:
    """An upstream slower than the read timeout is 504."""
    started = time.monotonic()
    resp = call(kong, "GET", "/analytics/v1/health")
    assert time.monotonic() - started < 3
    assert resp.status == 504
    assert json.loads(resp.body) == {"message": "The upstream server is timing out"}
    assert "upstream timed out (110: Connection timed out)" in kong.stderr


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


@pytest.fixture(scope="module")
def kong_module() -> ModuleType:
    """kong.py imported from the stand-ins directory."""
    sys.path.insert(0, str(STANDINS))
    try:
        spec = importlib.util.spec_from_file_location("kong_standin", STANDINS / "kong.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # dataclasses resolve their module through sys.modules while the class is created.
        sys.modules["kong_standin"] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(STANDINS))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key: ${KEY}\n", "key: abc\n"),
        ("key: $KEY and $KEY_2x\n", "key: abc and \n"),
        ("user: ${MISSING:-fallback} ${EMPTY:-dflt} ${EMPTY-kept}\n", "user: fallback dflt \n"),
        ("price: \\$5 and \\\\ and \\d\n", "price: $5 and \\ and \\d\n"),
        ("lone $ sign, ${KEY}$\n", "lone $ sign, abc$\n"),
        ("pw: pa$$word\n", f"pw: pa{os.getpid()}word\n"),
        ('a: "x   y"  z\n', "a: x y  z\n"),
        ("q: 'single $KEY'\n", "q: 'single abc'\n"),
    ],
)
def test_expansion_matches_the_entrypoint(kong_module: ModuleType, text: str,
                                          expected: str) -> None:
    """Plain variables, defaults and escapes expand as bash's eval-echo does."""
    environ = {"KEY": "abc", "EMPTY": ""}
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
