"""Builders for check tests: instances, contexts, and an in-process Kong 2.8 + GoTrue fake.

The fake answers through httpx.MockTransport the way Kong and GoTrue do on the wire: Kong's
own errors carry `Server: kong/2.8.1` and `{"message": ...}`, proxied answers carry
`Via: kong/2.8.1`; GoTrue verifies HS256 JWTs against its secret and answers errors as
`{"code", "error_code", "msg"}`.
"""

from __future__ import annotations

import base64
import json
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt

from exporter.checks.base import CheckContext
from exporter.config import DiagnosticsConfig, Thresholds
from exporter.discovery.model import Credentials, Endpoints, Instance, InstanceFiles
from exporter.dockerhost import DockerHost
from exporter.issues import Issue
from exporter.jwtkeys import generate_key
from exporter.redaction import Redactor

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "fixture-jwt-secret-0123456789abcdef-XYZ"
PG_PASSWORD = "fixture-pg-password-42"
GATEWAY = "http://127.0.0.1:8100"
KONG = "kong/2.8.1"
DASH_USER, DASH_PASSWORD = "supabase", "fixture-dashboard-pw"
DOMAIN = "ultrabase-doctor.invalid"


def key(role: str, secret: str = SECRET, *, issued: datetime = NOW - timedelta(days=10),
        lifetime: timedelta = timedelta(days=365)) -> str:
    """An API key as Ultrabase issues it (iat/exp around NOW)."""
    return generate_key(secret, role, int(issued.timestamp()), int(lifetime.total_seconds()))


ANON = key("anon")
SERVICE = key("service_role")


def make_instance(*, gateway_url: str | None = GATEWAY, db_port: int | None = None,
                  postgres_password: str | None = PG_PASSWORD,
                  jwt_secret: str | None = SECRET, anon_key: str | None = ANON,
                  service_role_key: str | None = SERVICE,
                  dashboard: tuple[str, str] | None = (DASH_USER, DASH_PASSWORD),
                  runtime_env: Mapping[str, Mapping[str, str]] | None = None,
                  problems: tuple[Issue, ...] = (),
                  kong_file: Path | None = Path("/core/volumes-abc/api/kong.yml"),
                  ) -> Instance:
    """An instance as discovery would hand it to the checks."""
    if runtime_env is None:
        runtime_env = {"auth": {
            "GOTRUE_JWT_SECRET": jwt_secret or "",
            "GOTRUE_DB_DATABASE_URL":
                f"postgres://supabase_auth_admin:{postgres_password}@db:5432/postgres"}}
    sources = {"postgres_password": "runtime:db", "jwt_secret": "runtime:auth",
               "anon_key": "runtime:kong", "service_role_key": "runtime:kong",
               "dashboard_username": "kong_file", "dashboard_password": "kong_file"}
    credentials = Credentials(
        postgres_password=postgres_password, jwt_secret=jwt_secret, anon_key=anon_key,
        service_role_key=service_role_key,
        dashboard_username=dashboard[0] if dashboard else None,
        dashboard_password=dashboard[1] if dashboard else None, sources=sources)
    return Instance(
        id="abc12345", name="Test", owner="admin", source="ultrabase",
        compose_project="supabase-abc12345", components={},
        endpoints=Endpoints(gateway_url=gateway_url, db_port=db_port),
        credentials=credentials, files=InstanceFiles(kong_file=kong_file),
        problems=problems, runtime_env=runtime_env)


def make_context(instance: Instance, handler: Callable[[httpx.Request], httpx.Response]
                 | None = None, *, thresholds: Thresholds | None = None,
                 run_synthetic_user: bool = True, timeout: float = 2.0) -> CheckContext:
    """A CheckContext whose HTTP client answers through handler (refuses when None)."""
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    config = DiagnosticsConfig(timeout_seconds=timeout, thresholds=thresholds or Thresholds())
    client = httpx.Client(transport=httpx.MockTransport(handler or refuse), timeout=timeout)
    return CheckContext(instance=instance, config=config,
                        docker=DockerHost("unix:///nonexistent"), http=client,
                        redactor=Redactor(instance.secrets()), now=NOW,
                        run_synthetic_user=run_synthetic_user)


def kong_error(status: int, message: str, **headers: str) -> httpx.Response:
    """An answer Kong generates itself."""
    return httpx.Response(status, json={"message": message},
                          headers={"Server": KONG, "X-Kong-Response-Latency": "1", **headers})


def proxied(status: int, body: Any = None, *, text: str | None = None,
            upstream_ms: int = 3) -> httpx.Response:
    """An upstream's answer as Kong passes it on."""
    headers = {"Via": KONG, "X-Kong-Upstream-Latency": str(upstream_ms),
               "X-Kong-Proxy-Latency": "0"}
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body if body is not None else {}, headers=headers)


def gotrue_error(status: int, error_code: str, msg: str) -> httpx.Response:
    """GoTrue's error body, passed on by Kong."""
    return proxied(status, {"code": status, "error_code": error_code, "msg": msg})


def golang_jwt_text(exc: jwt.PyJWTError) -> str:
    """golang-jwt v5's words for the failures PyJWT reports."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token has invalid claims: token is expired"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature is invalid: signature is invalid"
    return "token is malformed: token contains an invalid number of segments"


def weak_key(role: str, secret: str) -> str:
    """An API key signed with a secret shorter than 32 bytes (generate_key refuses one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode({"role": role, "iss": "supabase", "iat": int(NOW.timestamp())},
                          secret, algorithm="HS256")


@dataclass
class FakePostgREST:
    """PostgREST v12.2's root: anonymous or a verified Bearer JWT gets the OpenAPI document.

    A token it cannot verify is 401 PGRST301; with a secret under 32 bytes that is every
    token (hs-jose refuses the short HMAC key and reports an invalid signature).
    """

    secret: str = SECRET

    def __call__(self, request: httpx.Request, path: str) -> httpx.Response:
        authorization = request.headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") \
            else ""
        if token:
            try:
                if len(self.secret.encode()) < 32:
                    raise jwt.InvalidSignatureError("key too short")
                jwt.decode(token, self.secret, algorithms=["HS256"])
            except jwt.PyJWTError:
                message = "JWSError JWSInvalidSignature"
                return proxied(401, {"code": "PGRST301", "details": None, "hint": None,
                                     "message": message})
        return proxied(200, {"swagger": "2.0"})


Upstream = Callable[[httpx.Request, str], httpx.Response]
Override = Callable[[httpx.Request, str], httpx.Response | None]


@dataclass
class FakeGoTrue:
    """GoTrue's /health, /settings and admin users API, with faults to switch on."""

    secret: str = SECRET
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_deletes: int = 0  # the next N deletes answer 500
    # consulted first; answering None falls through to the normal behaviour (handle)
    override: Override | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def seed(self, email: str, age: timedelta) -> str:
        """A user that exists already, created age before NOW."""
        user_id = str(uuid.uuid4())
        self.users[user_id] = {"id": user_id, "email": email,
                               "created_at": (NOW - age).strftime(
                                   "%Y-%m-%dT%H:%M:%S.123456789Z")}
        return user_id

    def __call__(self, request: httpx.Request, path: str) -> httpx.Response:
        self.calls.append((request.method, path))
        if self.override is not None:
            answer = self.override(request, path)
            if answer is not None:
                return answer
        return self.handle(request, path)

    def handle(self, request: httpx.Request, path: str) -> httpx.Response:
        """GoTrue's normal answer."""
        if path == "/health":
            return proxied(200, {"version": "v2.167.0", "name": "GoTrue"})
        if path == "/settings":
            return proxied(200, {"external": {"email": True}, "disable_signup": False,
                                 "mailer_autoconfirm": False})
        if path.startswith("/admin/"):
            return self._admin(request, path)
        return proxied(404, text="404 page not found\n")  # chi's NotFound

    def _admin(self, request: httpx.Request, path: str) -> httpx.Response:
        # api/auth.go:61-91 and 44-58: no Bearer is 401; a token that does not verify is
        # 403 bad_jwt with golang-jwt v5's text; a role that is not an admin role 403.
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith(("Bearer ", "bearer ")):
            return gotrue_error(401, "no_authorization", "This endpoint requires a Bearer token")
        token = authorization.split(" ", 1)[1]
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            return gotrue_error(403, "bad_jwt", "invalid JWT: unable to parse or verify "
                                                f"signature, {golang_jwt_text(exc)}")
        if claims.get("role") != "service_role":
            return gotrue_error(403, "not_admin", "User not allowed")
        if path == "/admin/users" and request.method == "GET":
            text = request.url.params.get("filter", "")
            found = [u for u in self.users.values() if text in u["email"]]
            return proxied(200, {"users": found, "aud": "authenticated"})
        if path == "/admin/users" and request.method == "POST":
            body = json.loads(request.content)
            if not body.get("email") and not body.get("phone"):
                return gotrue_error(400, "validation_failed",
                                    "Cannot create a user without either an email or phone")
            user_id = str(uuid.uuid4())
            self.users[user_id] = {"id": user_id, "email": body["email"],
                                   "created_at": NOW.isoformat(),
                                   "user_metadata": body.get("user_metadata")}
            return proxied(200, self.users[user_id])
        if path.startswith("/admin/users/") and request.method == "DELETE":
            if self.fail_deletes > 0:
                self.fail_deletes -= 1
                return gotrue_error(500, "unexpected_failure", "Database error deleting user")
            user_id = path.rsplit("/", 1)[1]
            if self.users.pop(user_id, None) is None:
                return gotrue_error(404, "user_not_found", "User not found")
            return proxied(200, {})
        return proxied(405, text="")  # chi's 405 has no body


# kong.yml's routes: path prefix, upstream, authentication plugin
_ROUTES: tuple[tuple[str, str, str | None], ...] = (
    ("/auth/v1/", "auth", "key"), ("/rest/v1/", "rest", "key"),
    ("/storage/v1/", "storage", None), ("/", "studio", "basic"))


@dataclass
class FakeKong:
    """Kong 2.8 with Ultrabase's kong.yml: key-auth on auth/rest, basic-auth on Studio."""

    keys: tuple[str, ...] = (ANON, SERVICE)
    dashboard: tuple[str, str] = (DASH_USER, DASH_PASSWORD)
    upstreams: dict[str, Upstream | None] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        defaults: dict[str, Upstream | None] = {
            "auth": FakeGoTrue(), "rest": FakePostgREST(),
            "storage": lambda r, p: proxied(200, text=""),
            "studio": lambda r, p: proxied(307, text="")}
        self.upstreams = {**defaults, **self.upstreams}

    @property
    def gotrue(self) -> FakeGoTrue:
        """The auth upstream (when it is the GoTrue fake)."""
        upstream = self.upstreams["auth"]
        assert isinstance(upstream, FakeGoTrue)
        return upstream

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        prefix, name, guard = next(route for route in _ROUTES if path.startswith(route[0]))
        if guard == "key":
            apikey = request.headers.get("apikey")
            if not apikey:
                return kong_error(401, "No API key found in request",
                                  **{"WWW-Authenticate": 'Key realm="kong"'})
            if apikey not in self.keys:
                return kong_error(401, "Invalid authentication credentials")
        if guard == "basic":
            expected = base64.b64encode(":".join(self.dashboard).encode()).decode()
            if request.headers.get("authorization") != f"Basic {expected}":
                return kong_error(401, "Invalid authentication credentials")
        upstream = self.upstreams.get(name)
        if upstream is None:
            # The upstream container is gone: its compose DNS name does not resolve.
            return kong_error(503, "name resolution failed")
        return upstream(request, "/" + path[len(prefix):])

    def paths(self) -> list[tuple[str, str]]:
        """(method, path) of every request received."""
        return [(r.method, r.url.path) for r in self.requests]


def codes(issues: tuple[Issue, ...] | list[Issue]) -> list[str]:
    """The issue codes, sorted."""
    return sorted(i.code for i in issues)


def only(issues: tuple[Issue, ...] | list[Issue], code: str) -> Issue:
    """The single issue with code."""
    found = [i for i in issues if i.code == code]
    assert len(found) == 1, f"expected one {code}, got {codes(issues)}"
    return found[0]
