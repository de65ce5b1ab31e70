"""The PostgREST stand-in against a real PostgreSQL: OpenAPI, reads, JWT errors, DB loss."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.standins.conftest import (
    DB_PASSWORD,
    JWT_SECRET,
    PgCluster,
    Proc,
    Spawner,
    free_port,
    http_request,
    make_jwt,
    wait_until,
)

SERVICE_KEY = make_jwt("service_role")
PGRST_CODES_DB_DOWN = {"PGRST000", "PGRST001", "PGRST002"}


def rest_env(pg: PgCluster, port: int, admin_port: int, password: str = DB_PASSWORD,
             **overrides: str) -> dict[str, str]:
    """The rest service's environment from the compose template, pointed at pg."""
    env = {
        "PGRST_DB_URI": pg.url("authenticator", password),
        "PGRST_DB_SCHEMAS": "public,storage,graphql_public",
        "PGRST_DB_ANON_ROLE": "anon",
        "PGRST_JWT_SECRET": JWT_SECRET,
        "PGRST_DB_USE_LEGACY_GUCS": "false",
        "PGRST_APP_SETTINGS_JWT_SECRET": JWT_SECRET,
        "PGRST_APP_SETTINGS_JWT_EXP": "3600",
        "PGRST_SERVER_PORT": str(port),
        "PGRST_ADMIN_SERVER_PORT": str(admin_port),
    }
    env.update(overrides)
    return env


def start_rest(spawn: Spawner, pg: PgCluster, **overrides: str) -> Proc:
    """Start the stand-in and wait for its API port."""
    port, admin = free_port(), free_port()
    return spawn("postgrest.py", rest_env(pg, port, admin, **overrides),
                 ports={"http": port, "admin": admin})


def get(proc: Proc, path: str, token: str | None = None, port: str = "http",
        headers: dict[str, str] | None = None) -> Any:
    """GET with an optional Bearer token."""
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    return http_request("GET", proc.url(port) + path, all_headers)


@pytest.fixture(scope="module")
def rest(module_spawn: Spawner, shared_pg: PgCluster) -> Proc:
    """One PostgREST stand-in for the tests that leave the DB alone."""
    proc = start_rest(module_spawn, shared_pg)
    wait_until(lambda: get(proc, "/ready", port="admin").status == 200, 10, "schema cache")
    return proc


def test_openapi_follows_privileges(rest: Proc) -> None:
    """GET / lists the tables the request's role may use, in Swagger 2.0 form."""
    resp = get(rest, "/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/openapi+json; charset=utf-8"
    assert resp.headers["Server"] == "postgrest/12.2.0"
    doc = resp.json()
    assert doc["swagger"] == "2.0"
    assert doc["info"]["title"] == "standard public schema"
    assert "/todos" in doc["paths"] and "/secrets" not in doc["paths"]
    assert doc["definitions"]["todos"]["properties"]["id"] == {"format": "bigint",
                                                               "type": "integer"}
    assert "/secrets" in get(rest, "/", SERVICE_KEY).json()["paths"]


def test_table_reads_run_as_the_role(rest: Proc) -> None:
    """Reads go through the DB as anon or the JWT's role, with select/limit/eq."""
    resp = get(rest, "/todos")
    assert resp.status == 200
    assert [row["id"] for row in resp.json()] == [1, 2, 3]
    assert resp.headers["Content-Range"] == "0-2/*"
    some = get(rest, "/todos?select=id,task&limit=2")
    assert some.json() == [{"id": 1, "task": "write stand-ins"}, {"id": 2, "task": "test them"}]
    assert some.headers["Content-Range"] == "0-1/*"
    assert get(rest, "/todos?id=eq.3").json() == [{"id": 3, "task": "ship", "done": False}]
    denied = get(rest, "/secrets")
    assert denied.status == 401
    assert denied.json() == {"code": "42501", "details": None, "hint": None,
                             "message": "permission denied for table secrets"}
    allowed = get(rest, "/secrets", SERVICE_KEY)
    assert allowed.status == 200 and allowed.json() == [{"id": 1,
                                                         "value": "only for service_role"}]
    missing = get(rest, "/nope")
    assert missing.status == 404 and missing.json()["code"] == "42P01"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (make_jwt("service_role", secret="another-secret-that-is-32-chars-long!!"),
         "JWSError JWSInvalidSignature"),
        (make_jwt("service_role", exp_in=-120), "JWT expired"),
        ("garbage", "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; "
                    "got 1)"),
    ],
    ids=["bad-signature", "expired", "malformed"],
)
def test_jwt_errors(rest: Proc, token: str, message: str) -> None:
    """Token failures are 401 PGRST301 with PostgREST's message and WWW-Authenticate."""
    resp = get(rest, "/todos", token)
    assert resp.status == 401
    assert resp.json() == {"code": "PGRST301", "details": None, "hint": None, "message": message}
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer error="invalid_token", error_description="{message}"')


def test_admin_live_and_ready(rest: Proc) -> None:
    """The admin server answers /live and /ready with empty 200s when all is well."""
    live = get(rest, "/live", port="admin")
    ready = get(rest, "/ready", port="admin")
    assert (live.status, live.body) == (200, b"")
    assert (ready.status, ready.body) == (200, b"")
    assert get(rest, "/other", port="admin").status == 404


def test_startup_logs(rest: Proc) -> None:
    """stderr carries PostgREST's timestamped start-up lines."""
    lines = rest.stderr.splitlines()
    assert lines[0].endswith(": Starting PostgREST 12.2.0...")
    assert any(": Successfully connected to PostgreSQL 15" in line for line in lines)
    assert any(line.endswith(f": Listening on port {rest.ports['http']}") for line in lines)


def test_db_loss_gives_503_then_recovers(spawn: Spawner, make_pg: Any) -> None:
    """Losing the DB means 503 PGRST00x and /ready 503; it reconnects when the DB returns."""
    pg = make_pg()
    proc = start_rest(spawn, pg)
    wait_until(lambda: get(proc, "/ready", port="admin").status == 200, 10, "first load")
    assert get(proc, "/todos").status == 200
    pg.stop()
    first = get(proc, "/")
    assert first.status == 503
    body = first.json()
    assert body["code"] in {"PGRST000", "PGRST001"}
    assert body["message"] in ("Database connection error. Retrying the connection.",
                               "Database client error. Retrying the connection.")
    assert body["details"] and body["hint"] is None
    wait_until(lambda: get(proc, "/").json().get("code") == "PGRST002", 10, "PGRST002")
    assert get(proc, "/").json() == {
        "code": "PGRST002", "details": None, "hint": None,
        "message": "Could not query the database for the schema cache. Retrying."}
    assert get(proc, "/ready", port="admin").status == 503
    assert get(proc, "/live", port="admin").status == 200
    assert "Attempting to reconnect to the database in 1 seconds..." in proc.stderr
    # App.hs:177-180: every 503 says when to come back (the delay the retry loop announced).
    assert get(proc, "/").headers["Retry-After"].isdigit()
    wait_until(lambda: '"GET / HTTP/1.1" 503 - ' in proc.stdout, 5, "5xx access log line")
    pg.start()
    wait_until(lambda: get(proc, "/").status == 200, 15, "recovery")
    assert get(proc, "/ready", port="admin").status == 200


def test_start_with_db_down_answers_pgrst002(spawn: Spawner, make_pg: Any) -> None:
    """Started before its DB, PostgREST serves 503 PGRST002 and keeps retrying."""
    pg = make_pg()
    pg.stop()
    proc = start_rest(spawn, pg)
    resp = get(proc, "/todos")
    assert resp.status == 503 and resp.json()["code"] in PGRST_CODES_DB_DOWN
    wait_until(lambda: "Attempting to reconnect" in proc.stderr, 5, "retry log line")
    assert proc.popen.poll() is None
    pg.start()
    wait_until(lambda: get(proc, "/todos").status == 200, 15, "recovery")


def test_wrong_password_exits(spawn: Spawner, make_pg: Any) -> None:
    """A password the DB rejects ends PostgREST v12 with status 1 after logging why."""
    pg = make_pg()
    port, admin = free_port(), free_port()
    proc = spawn("postgrest.py", rest_env(pg, port, admin, password="wrong"),
                 ports={"http": port, "admin": admin}, wait_port=None)
    assert proc.wait_exit(timeout=15) == 1
    last = proc.stderr.strip().splitlines()[-1]
    payload = json.loads(last.split(": ", 1)[1])
    assert payload["code"] == "PGRST000"
    assert 'password authentication failed for user "authenticator"' in payload["details"]


def test_accept_profile_picks_the_schema(rest: Proc) -> None:
    """Accept-Profile selects one of PGRST_DB_SCHEMAS; any other is 406 PGRST106."""
    storage = get(rest, "/", headers={"Accept-Profile": "storage"})
    assert storage.status == 200
    assert storage.json()["paths"].keys() == {"/"}
    other = get(rest, "/todos", headers={"Accept-Profile": "auth"})
    assert other.status == 406
    assert other.json() == {
        "code": "PGRST106", "details": None, "hint": None,
        "message": "The schema must be one of the following: public, storage, graphql_public"}


SHORT_SECRET = "jwt_secret_key_123"  # the reference registry's sample: 18 characters


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
def test_secret_under_32_bytes_rejects_every_jwt(spawn: Spawner, shared_pg: PgCluster) -> None:
    """v12.2 (hs-jose) cannot verify HS256 with a key under 32 bytes: every JWT is a 401."""
    proc = start_rest(spawn, shared_pg, PGRST_JWT_SECRET=SHORT_SECRET)
    wait_until(lambda: get(proc, "/ready", port="admin").status == 200, 10, "schema cache")
    # The server starts and serves anonymous requests (v13 would refuse to start).
    assert get(proc, "/todos").status == 200
    message = "JWSError JWSInvalidSignature"
    for role in ("anon", "service_role"):
        # Correctly signed with the configured secret, and still refused.
        resp = get(proc, "/todos", make_jwt(role, secret=SHORT_SECRET))
        assert resp.status == 401
        assert resp.json() == {"code": "PGRST301", "details": None, "hint": None,
                               "message": message}
        assert resp.headers["WWW-Authenticate"] == (
            f'Bearer error="invalid_token", error_description="{message}"')
    expired = get(proc, "/todos", make_jwt("anon", secret=SHORT_SECRET, exp_in=-120))
    assert expired.json()["message"] == message  # the signature is checked before exp
    assert "InsecureKeyLength" not in proc.stderr


def test_secret_of_32_bytes_is_enough(spawn: Spawner, shared_pg: PgCluster) -> None:
    """HS256 needs exactly the digest size, 32 bytes."""
    secret = "s" * 32
    proc = start_rest(spawn, shared_pg, PGRST_JWT_SECRET=secret)
    wait_until(lambda: get(proc, "/ready", port="admin").status == 200, 10, "schema cache")
    assert get(proc, "/todos", make_jwt("anon", secret=secret)).status == 200


def test_refusal_other_than_password_keeps_retrying(spawn: Spawner, make_pg: Any) -> None:
    """Only a rejected password ends v12 (AppState.hs:245-248); a missing db is retried."""
    pg = make_pg()
    port = free_port()
    env = rest_env(pg, port, free_port())
    env["PGRST_DB_URI"] = pg.url("authenticator", DB_PASSWORD, database="no_such_db")
    proc = spawn("postgrest.py", env, ports={"http": port})
    wait_until(lambda: "Attempting to reconnect" in proc.stderr, 5, "retry log line")
    resp = get(proc, "/todos")
    assert resp.status == 503 and resp.json()["code"] in PGRST_CODES_DB_DOWN
    assert "Retry-After" in resp.headers
    assert proc.popen.poll() is None


def test_no_admin_server_without_its_port(spawn: Spawner, shared_pg: PgCluster) -> None:
    """The Ultrabase template sets no PGRST_ADMIN_SERVER_PORT: only the API port listens."""
    port = free_port()
    env = rest_env(shared_pg, port, 0)
    env.pop("PGRST_ADMIN_SERVER_PORT")
    proc = spawn("postgrest.py", env, ports={"http": port})
    wait_until(lambda: get(proc, "/todos").status == 200, 10, "schema cache")
    assert "Admin server" not in proc.stderr
