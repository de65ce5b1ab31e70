"""The GoTrue stand-in against a real PostgreSQL: start-up, admin API, JWT errors, DB loss."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
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

SERVICE_KEY = make_jwt("service_role", exp_in=365 * 86400)
ANON_KEY = make_jwt("anon", exp_in=365 * 86400)


def gotrue_env(pg: PgCluster, port: int, password: str = DB_PASSWORD,
               **overrides: str) -> dict[str, str]:
    """The auth service's environment from the compose template, pointed at pg."""
    env = {
        "GOTRUE_API_HOST": "127.0.0.1",
        "GOTRUE_API_PORT": str(port),
        "API_EXTERNAL_URL": "http://localhost:8000",
        "GOTRUE_DB_DRIVER": "postgres",
        "GOTRUE_DB_DATABASE_URL": pg.url("supabase_auth_admin", password),
        "GOTRUE_SITE_URL": "http://localhost:3000",
        "GOTRUE_URI_ALLOW_LIST": "",
        "GOTRUE_DISABLE_SIGNUP": "false",
        "GOTRUE_JWT_ADMIN_ROLES": "service_role",
        "GOTRUE_JWT_AUD": "authenticated",
        "GOTRUE_JWT_DEFAULT_GROUP_NAME": "authenticated",
        "GOTRUE_JWT_EXP": "3600",
        "GOTRUE_JWT_SECRET": JWT_SECRET,
        "GOTRUE_EXTERNAL_EMAIL_ENABLED": "true",
        "GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED": "false",
        "GOTRUE_MAILER_AUTOCONFIRM": "false",
        "GOTRUE_EXTERNAL_PHONE_ENABLED": "true",
        "GOTRUE_SMS_AUTOCONFIRM": "true",
    }
    env.update(overrides)
    return env


def start_gotrue(spawn: Spawner, pg: PgCluster, **overrides: str) -> Proc:
    """Start the stand-in and wait for its port."""
    port = free_port()
    return spawn("gotrue.py", gotrue_env(pg, port, **overrides), ports={"http": port})


def call(proc: Proc, method: str, path: str, token: str | None = None,
         body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """Call the stand-in with an optional Bearer token and JSON body."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    return http_request(method, proc.url() + path, all_headers, data)


def log_lines(proc: Proc) -> list[dict[str, Any]]:
    """The JSON log lines on stderr."""
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def gotrue(module_spawn: Spawner, shared_pg: PgCluster) -> Proc:
    """One GoTrue stand-in for the tests that leave the DB alone."""
    return start_gotrue(module_spawn, shared_pg)


def test_wrong_db_password_is_fatal_at_start(spawn: Spawner, make_pg: Any) -> None:
    """A rejected DB login ends the process with GoTrue's fatal JSON line and status 1."""
    pg = make_pg()
    port = free_port()
    proc = spawn("gotrue.py", gotrue_env(pg, port, password="not-the-password"),
                 ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=15) == 1
    fatal = log_lines(proc)[-1]
    assert fatal["level"] == "fatal"
    assert fatal["msg"].startswith("running db migrations: ")
    assert ("failed to connect to `host=127.0.0.1 user=supabase_auth_admin database=postgres`: "
            'failed SASL auth (FATAL: password authentication failed for user '
            '"supabase_auth_admin" (SQLSTATE 28P01))') in fatal["msg"]
    assert "T" in fatal["time"] and fatal["time"].endswith("Z")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"GOTRUE_DISABLE_SIGNUP": "yes please"},
         "Failed to load configuration: envconfig.Process: assigning GOTRUE_DISABLE_SIGNUP to "
         "DisableSignup: converting 'yes please' to type bool. details: strconv.ParseBool: "
         'parsing "yes please": invalid syntax'),
        ({"GOTRUE_EXTERNAL_EMAIL_ENABLED": "{{EMAIL}}"},
         "Failed to load configuration: envconfig.Process: assigning "
         "GOTRUE_EXTERNAL_EMAIL_ENABLED to Enabled: converting '{{EMAIL}}' to type bool. "
         'details: strconv.ParseBool: parsing "{{EMAIL}}": invalid syntax'),
        ({"API_EXTERNAL_URL": None},
         "Failed to load configuration: required key GOTRUE_API_EXTERNAL_URL missing value"),
    ],
    ids=["bad-bool", "bad-provider-bool", "missing-external-url"],
)
def test_bad_configuration_is_fatal(spawn: Spawner, shared_pg: PgCluster,
                                    change: dict[str, str | None], expected: str) -> None:
    """A setting envconfig cannot load stops GoTrue before it touches the DB."""
    port = free_port()
    env = gotrue_env(shared_pg, port)
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    proc = spawn("gotrue.py", env, ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=10) == 1
    fatal = log_lines(proc)[-1]
    assert fatal["level"] == "fatal"
    assert fatal["msg"] == expected


def test_waits_briefly_for_a_db_that_is_starting(spawn: Spawner, make_pg: Any) -> None:
    """A refused connection at start is retried for a few seconds before it is fatal."""
    pg = make_pg()
    pg.stop()
    port = free_port()
    proc = spawn("gotrue.py", gotrue_env(pg, port), ports={"http": port}, wait_port=None)
    time.sleep(0.5)
    pg.start()
    wait_until(lambda: call_ok(proc), 10, "GoTrue to come up once the DB is there")
    assert proc.popen.poll() is None


def call_ok(proc: Proc) -> bool:
    """Whether /health answers 200 yet."""
    try:
        return bool(call(proc, "GET", "/health").status == 200)
    except OSError:
        return False


def test_migrations_complete_an_older_auth_schema(spawn: Spawner, make_pg: Any) -> None:
    """An auth.users from the Postgres image's early schema gets the columns GoTrue needs."""
    pg = make_pg()
    with pg.superuser() as conn:
        conn.execute(
            "CREATE TABLE auth.users (instance_id uuid, id uuid PRIMARY KEY, aud varchar(255), "
            "role varchar(255), email varchar(255), encrypted_password varchar(255), "
            "raw_app_meta_data jsonb, raw_user_meta_data jsonb, created_at timestamptz, "
            "updated_at timestamptz); ALTER TABLE auth.users OWNER TO supabase_auth_admin")
    proc = start_gotrue(spawn, pg)
    created = call(proc, "POST", "/admin/users", SERVICE_KEY,
                   {"email": "old-schema@example.invalid", "email_confirm": True})
    assert created.status == 200, created.body
    with pg.superuser() as conn:
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'auth' "
            "AND table_name = 'users'")}
    assert {"email_confirmed_at", "is_sso_user", "deleted_at"} <= columns


def test_health_settings_and_request_log(gotrue: Proc) -> None:
    """/health needs no DB and no token; /settings reflects the environment."""
    resp = call(gotrue, "GET", "/health")
    assert resp.status == 200
    assert resp.json() == {
        "version": "v2.167.0",
        "name": "GoTrue",
        "description": "GoTrue is a user registration and authentication API",
    }
    assert call(gotrue, "HEAD", "/health").status == 200
    settings = call(gotrue, "GET", "/settings").json()
    assert settings["disable_signup"] is False
    assert settings["mailer_autoconfirm"] is False
    assert settings["phone_autoconfirm"] is True
    assert settings["external"]["email"] is True
    assert settings["external"]["phone"] is True
    assert settings["external"]["anonymous_users"] is False
    assert settings["saml_enabled"] is False
    wait_until(lambda: any(line.get("msg") == "request completed" and line["path"] == "/health"
                           for line in log_lines(gotrue)), 5, "request log line")
    line = next(line for line in log_lines(gotrue) if line.get("msg") == "request completed")
    assert line["component"] == "api"
    assert line["status"] == 200
    assert line["method"] == "GET"
    assert line["remote_addr"] == "127.0.0.1"


def test_admin_create_list_get_delete(gotrue: Proc, shared_pg: PgCluster) -> None:
    """The admin users API with a service_role key, backed by auth.users and the audit log."""
    email = f"Doctor-{uuid.uuid4().hex[:8]}@Example.invalid"
    created = call(gotrue, "POST", "/admin/users", SERVICE_KEY, {
        "email": email, "password": "long-enough-pw", "email_confirm": True,
        "user_metadata": {"purpose": "synthetic"},
    })
    assert created.status == 200, created.body
    user = created.json()
    assert user["email"] == email.lower()
    assert user["aud"] == "authenticated"
    assert user["role"] == "authenticated"
    assert user["email_confirmed_at"]
    assert user["app_metadata"] == {"provider": "email", "providers": ["email"]}
    assert user["user_metadata"] == {"purpose": "synthetic"}
    assert user["identities"][0]["provider"] == "email"
    user_id = user["id"]
    with shared_pg.superuser() as conn:
        row = conn.execute("SELECT email, email_confirmed_at IS NOT NULL, encrypted_password "
                           "FROM auth.users WHERE id = %s", (user_id,)).fetchone()
        assert row is not None
        assert row[0] == email.lower() and row[1] is True and "long-enough-pw" not in row[2]

    listed = call(gotrue, "GET", "/admin/users?per_page=500", SERVICE_KEY)
    assert listed.status == 200
    assert listed.json()["aud"] == "authenticated"
    assert user_id in [u["id"] for u in listed.json()["users"]]
    assert int(listed.headers["X-Total-Count"]) >= 1

    fetched = call(gotrue, "GET", f"/admin/users/{user_id}", SERVICE_KEY)
    assert fetched.status == 200 and fetched.json()["email"] == email.lower()

    duplicate = call(gotrue, "POST", "/admin/users", SERVICE_KEY, {"email": email})
    assert duplicate.status == 422
    assert duplicate.json() == {"code": 422, "error_code": "email_exists",
                                "msg": "A user with this email address has already been "
                                       "registered"}

    deleted = call(gotrue, "DELETE", f"/admin/users/{user_id}", SERVICE_KEY)
    assert deleted.status == 200 and deleted.json() == {}
    gone = call(gotrue, "GET", f"/admin/users/{user_id}", SERVICE_KEY)
    assert gone.status == 404
    assert gone.json() == {"code": 404, "error_code": "user_not_found", "msg": "User not found"}
    with shared_pg.superuser() as conn:
        assert conn.execute("SELECT count(*) FROM auth.users WHERE id = %s",
                            (user_id,)).fetchone() == (0,)
        actions = [r[0] for r in conn.execute(
            "SELECT payload->>'action' FROM auth.audit_log_entries "
            "WHERE payload->'traits'->>'user_id' = %s ORDER BY created_at", (user_id,))]
        assert actions == ["user_signedup", "user_deleted"]


@pytest.mark.parametrize(
    ("token", "status", "expected"),
    [
        (None, 401, {"code": 401, "error_code": "no_authorization",
                     "msg": "This endpoint requires a Bearer token"}),
        (make_jwt("service_role", secret="some-other-secret-that-is-long-enough!!"), 403,
         {"code": 403, "error_code": "bad_jwt",
          "msg": "invalid JWT: unable to parse or verify signature, token signature is invalid: "
                 "signature is invalid"}),
        (make_jwt("service_role", exp_in=-60), 403,
         {"code": 403, "error_code": "bad_jwt",
          "msg": "invalid JWT: unable to parse or verify signature, token has invalid claims: "
                 "token is expired"}),
        ("not-a-jwt", 403,
         {"code": 403, "error_code": "bad_jwt",
          "msg": "invalid JWT: unable to parse or verify signature, token is malformed: token "
                 "contains an invalid number of segments"}),
        (ANON_KEY, 403, {"code": 403, "error_code": "not_admin", "msg": "User not allowed"}),
    ],
    ids=["missing", "bad-signature", "expired", "malformed", "anon-key"],
)
def test_admin_rejects_bad_credentials(gotrue: Proc, token: str | None, status: int,
                                       expected: dict[str, Any]) -> None:
    """Each credential failure answers with GoTrue's status, error_code and message."""
    resp = call(gotrue, "POST", "/admin/users", token, {"email": "x@example.invalid"})
    assert resp.status == status
    assert resp.json() == expected
    assert resp.headers["X-Sb-Error-Code"] == expected["error_code"]


def test_api_version_header_switches_error_shape(gotrue: Proc) -> None:
    """Clients sending X-Supabase-Api-Version: 2024-01-01 get {"code","message"} errors."""
    resp = call(gotrue, "GET", "/admin/users", ANON_KEY,
                headers={"X-Supabase-Api-Version": "2024-01-01"})
    assert resp.status == 403
    assert resp.json() == {"code": "not_admin", "message": "User not allowed"}
    assert resp.headers["X-Supabase-Api-Version"] == "2024-01-01"


def test_admin_user_id_must_be_a_uuid(gotrue: Proc) -> None:
    """A malformed id is GoTrue's 404 validation_failed, not a DB error."""
    resp = call(gotrue, "GET", "/admin/users/not-a-uuid", SERVICE_KEY)
    assert resp.status == 404
    assert resp.json() == {"code": 404, "error_code": "validation_failed",
                           "msg": "user_id must be an UUID"}


def test_weak_password_and_bad_email(gotrue: Proc) -> None:
    """Input validation happens before the DB is touched."""
    weak = call(gotrue, "POST", "/admin/users", SERVICE_KEY,
                {"email": "weak@example.invalid", "password": "123"})
    assert weak.status == 422 and weak.json()["error_code"] == "weak_password"
    bad = call(gotrue, "POST", "/admin/users", SERVICE_KEY, {"email": "not an address"})
    assert bad.status == 400
    assert bad.json()["msg"] == "Unable to validate email address: invalid format"


def test_signup_honours_disable_signup(spawn: Spawner, shared_pg: PgCluster) -> None:
    """/signup exists; GOTRUE_DISABLE_SIGNUP=true makes it 422 signup_disabled."""
    proc = start_gotrue(spawn, shared_pg, GOTRUE_DISABLE_SIGNUP="true")
    resp = call(proc, "POST", "/signup", None, {"email": "s@example.invalid",
                                                 "password": "long-enough-pw"})
    assert resp.status == 422
    assert resp.json() == {"code": 422, "error_code": "signup_disabled",
                           "msg": "Signups not allowed for this instance"}


def test_signup_with_autoconfirm_returns_a_session(spawn: Spawner, shared_pg: PgCluster) -> None:
    """With autoconfirm on, /signup answers a session whose token is signed with the secret."""
    proc = start_gotrue(spawn, shared_pg, GOTRUE_MAILER_AUTOCONFIRM="true")
    email = f"signup-{uuid.uuid4().hex[:8]}@example.invalid"
    resp = call(proc, "POST", "/signup", None, {"email": email, "password": "long-enough-pw"})
    assert resp.status == 200, resp.body
    session = resp.json()
    claims = jwt.decode(session["access_token"], JWT_SECRET, algorithms=["HS256"],
                        audience="authenticated")
    assert claims["email"] == email and claims["role"] == "authenticated"
    assert session["user"]["email_confirmed_at"]
    again = call(proc, "POST", "/signup", None, {"email": email, "password": "long-enough-pw"})
    assert again.status == 422 and again.json()["error_code"] == "user_already_exists"


def test_db_loss_gives_500_and_recovers(spawn: Spawner, make_pg: Any) -> None:
    """With the DB gone, admin calls are 500 unexpected_failure (and logged); /health stays up."""
    pg = make_pg()
    proc = start_gotrue(spawn, pg)
    assert call(proc, "GET", "/admin/users", SERVICE_KEY).status == 200
    pg.stop()
    started = time.monotonic()
    resp = call(proc, "POST", "/admin/users", SERVICE_KEY, {"email": "down@example.invalid"})
    assert time.monotonic() - started < 8
    assert resp.status == 500
    body = resp.json()
    assert body["code"] == 500
    assert body["error_code"] == "unexpected_failure"
    assert body["msg"] == "Database error checking email"
    assert body["error_id"]
    listed = call(proc, "GET", "/admin/users", SERVICE_KEY)
    assert listed.status == 500 and listed.json()["msg"] == "Database error finding users"
    assert call(proc, "GET", "/health").status == 200
    errors = [line for line in log_lines(proc) if line["level"] == "error"]
    assert errors, proc.stderr
    assert errors[0]["msg"] == "500: Database error checking email"
    assert "connection refused" in errors[0]["error"]
    assert errors[0]["request_id"] == body["error_id"]
    pg.start()
    wait_until(lambda: call(proc, "GET", "/admin/users", SERVICE_KEY).status == 200, 10,
               "GoTrue to reach the restarted DB")


def test_unknown_path_is_chi_404(gotrue: Proc) -> None:
    """Paths GoTrue does not route get Go's plain-text 404."""
    resp = call(gotrue, "GET", "/nope")
    assert resp.status == 404
    assert resp.body == b"404 page not found\n"
