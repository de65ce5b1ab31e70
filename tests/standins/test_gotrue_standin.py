"""The GoTrue stand-in against a real PostgreSQL: start-up, admin API, JWT errors, DB loss."""

from __future__ import annotations

import json
import re
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


def fatal_line(proc: Proc) -> dict[str, Any]:
    """The last JSON log line, which must be logrus's fatal one."""
    last = log_lines(proc)[-1]
    assert last["level"] == "fatal", proc.stderr
    return last


def assert_timer_then_fatal(proc: Proc) -> str:
    """pop's deferred timer line comes right before the fatal line; the fatal msg."""
    lines = log_lines(proc)
    timer, last = lines[-2], lines[-1]
    assert timer["component"] == "pop" and timer["msg"] == "%.4f seconds", proc.stderr
    assert timer["level"] == "info" and isinstance(timer["args"][0], float)
    assert last["level"] == "fatal"
    assert "T" in last["time"] and last["time"].endswith("Z")
    return str(last["msg"])


def test_wrong_db_password_is_fatal_at_start(spawn: Spawner, make_pg: Any) -> None:
    """A rejected DB login ends the process with GoTrue's fatal JSON line and status 1."""
    pg = make_pg()
    port = free_port()
    proc = spawn("gotrue.py", gotrue_env(pg, port, password="not-the-password"),
                 ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=15) == 1
    msg = assert_timer_then_fatal(proc)
    assert msg == (
        "running db migrations: Migrator: problem creating schema migrations: couldn't start a "
        "new transaction: could not create new transaction: failed to connect to "
        "`host=127.0.0.1 user=supabase_auth_admin database=postgres`: failed SASL auth "
        '(FATAL: password authentication failed for user "supabase_auth_admin" '
        "(SQLSTATE 28P01))")


def test_refused_db_at_start_is_fatal_at_once(spawn: Spawner, make_pg: Any) -> None:
    """pop does not retry: a db that is not up yet is fatal on the first try (Docker restarts)."""
    pg = make_pg()
    pg.stop()
    port = free_port()
    started = time.monotonic()
    proc = spawn("gotrue.py", gotrue_env(pg, port), ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=10) == 1
    assert time.monotonic() - started < 5
    msg = assert_timer_then_fatal(proc)
    assert msg == (
        "running db migrations: Migrator: problem creating schema migrations: couldn't start a "
        "new transaction: could not create new transaction: failed to connect to "
        f"`host=127.0.0.1 user=supabase_auth_admin database=postgres`: dial error (dial tcp "
        f"127.0.0.1:{pg.port}: connect: connection refused)")


SCHEMA_MIGRATIONS_SQL = (
    'CREATE TABLE "schema_migrations" (\n"version" VARCHAR (14) NOT NULL,\n'
    'PRIMARY KEY("version")\n);\n'
    'CREATE UNIQUE INDEX "schema_migrations_version_idx" ON "schema_migrations" (version);')


def test_schema_without_usage_fails_the_migrations(spawn: Spawner, make_pg: Any) -> None:
    """No USAGE on auth: pop cannot see schema_migrations nor create it (SQLSTATE 3F000)."""
    pg = make_pg()
    with pg.superuser() as conn:
        conn.execute("REVOKE ALL ON SCHEMA auth FROM supabase_auth_admin")
    port = free_port()
    proc = spawn("gotrue.py", gotrue_env(pg, port), ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=15) == 1
    assert assert_timer_then_fatal(proc) == (
        "running db migrations: Migrator: problem creating schema migrations: could not execute "
        f"{SCHEMA_MIGRATIONS_SQL}: ERROR: no schema has been selected to create in "
        "(SQLSTATE 3F000)")


def test_migration_on_a_table_auth_does_not_own_fails(spawn: Spawner, make_pg: Any) -> None:
    """A pending migration that ALTERs a table another role owns: pop's `error executing`."""
    pg = make_pg()
    with pg.superuser() as conn:
        # As after a dump restored by postgres: the table exists but is not auth's.
        conn.execute("CREATE TABLE auth.users (id uuid PRIMARY KEY, aud varchar(255), "
                     "role varchar(255), email varchar(255) UNIQUE, encrypted_password "
                     "varchar(255), raw_app_meta_data jsonb, raw_user_meta_data jsonb, "
                     "created_at timestamptz, updated_at timestamptz)")
        conn.execute("GRANT ALL ON auth.users TO supabase_auth_admin")
    port = free_port()
    proc = spawn("gotrue.py", gotrue_env(pg, port), ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=15) == 1
    pop = [line for line in log_lines(proc) if line.get("component") == "pop"]
    assert pop[0]["msg"] == "> %s" and pop[0]["args"] == ["init_auth_schema"]
    msg = assert_timer_then_fatal(proc)
    assert msg.startswith("running db migrations: error executing "
                          "migrations/20210710035447_alter_users.up.sql, sql: "
                          "-- alter user schema\n\nALTER TABLE auth.users\n")
    assert msg.endswith(": ERROR: must be owner of table users (SQLSTATE 42501)")
    # The failed migration is not recorded: the next start tries it again.
    with pg.superuser() as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM auth.schema_migrations")]
    assert versions == ["00"]


def config_failure(proc: Proc) -> str:
    """The only line logged: logrus's text format, since logging is not configured yet."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    match = re.fullmatch(r'time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)" level=fatal '
                         r'msg=(".*")', lines[0])
    assert match, lines[0]
    return str(json.loads(match.group(2)))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"GOTRUE_DISABLE_SIGNUP": "yes please"},
         "envconfig.Process: assigning GOTRUE_DISABLE_SIGNUP to DisableSignup: converting "
         "'yes please' to type bool. details: strconv.ParseBool: parsing \"yes please\": "
         "invalid syntax"),
        ({"GOTRUE_EXTERNAL_EMAIL_ENABLED": ""},
         "envconfig.Process: assigning GOTRUE_EXTERNAL_EMAIL_ENABLED to Enabled: converting '' "
         'to type bool. details: strconv.ParseBool: parsing "": invalid syntax'),
        ({"GOTRUE_SMTP_PORT": ""},
         "envconfig.Process: assigning GOTRUE_SMTP_PORT to Port: converting '' to type int. "
         'details: strconv.ParseInt: parsing "": invalid syntax'),
        ({"GOTRUE_JWT_EXP": "1h"},
         "envconfig.Process: assigning GOTRUE_JWT_EXP to Exp: converting '1h' to type int. "
         'details: strconv.ParseInt: parsing "1h": invalid syntax'),
        ({"GOTRUE_API_MAX_REQUEST_DURATION": "10"},
         "envconfig.Process: assigning GOTRUE_API_MAX_REQUEST_DURATION to MaxRequestDuration: "
         "converting '10' to type time.Duration. details: time: missing unit in duration "
         '"10"'),
        ({"GOTRUE_JWT_SECRET": ""},
         "failed to initialize *jwk.symmetricKey from []uint8: non-empty []byte key required"),
        ({"GOTRUE_JWT_SECRET": None}, "required key GOTRUE_JWT_SECRET missing value"),
        ({"API_EXTERNAL_URL": None}, "required key API_EXTERNAL_URL missing value"),
        ({"API_EXTERNAL_URL": ""}, 'parse "": empty url'),
    ],
    ids=["bad-bool", "empty-bool", "empty-int", "bad-int", "duration-without-unit",
         "empty-jwt-secret", "missing-jwt-secret", "missing-external-url", "empty-external-url"],
)
def test_bad_configuration_is_fatal(spawn: Spawner, shared_pg: PgCluster,
                                    change: dict[str, str | None], expected: str) -> None:
    """A setting GoTrue cannot load (set but empty included) stops it before the DB is used."""
    port = free_port()
    env = gotrue_env(shared_pg, port)
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    proc = spawn("gotrue.py", env, ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=10) == 1
    assert config_failure(proc) == f"Failed to load configuration: {expected}"


def test_prefixed_names_without_envconfig_alias_are_not_read(spawn: Spawner,
                                                             shared_pg: PgCluster) -> None:
    """GoTrue reads API_EXTERNAL_URL, not GOTRUE_API_EXTERNAL_URL (its key is ..._API_API_...)."""
    port = free_port()
    env = gotrue_env(shared_pg, port)
    env["GOTRUE_API_EXTERNAL_URL"] = env.pop("API_EXTERNAL_URL")
    proc = spawn("gotrue.py", env, ports={"http": port}, wait_port=None)
    assert proc.wait_exit(timeout=10) == 1
    assert config_failure(proc) == ("Failed to load configuration: required key "
                                    "API_EXTERNAL_URL missing value")


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
        versions = {r[0] for r in conn.execute("SELECT version FROM auth.schema_migrations")}
    assert {"email_confirmed_at", "is_sso_user", "deleted_at"} <= columns
    assert {"00", "20210710035447", "20230116124412"} <= versions
    pop = [line["msg"] for line in log_lines(proc) if line.get("component") == "pop"]
    assert pop[-2:] == ["Successfully applied %d migrations.", "%.4f seconds"]
    assert proc.stop() == 0
    again = start_gotrue(spawn, pg)
    wait_until(lambda: "GoTrue API started on" in again.stderr, 5, "the second start")
    pop = [line["msg"] for line in log_lines(again) if line.get("component") == "pop"]
    assert pop == ["Migrations already up to date, nothing to apply", "%.4f seconds"]


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
    assert settings["sms_provider"] == ""
    wait_until(lambda: any(line.get("msg") == "request completed"
                           and line["path"] == "/settings" for line in log_lines(gotrue)), 5,
               "request log line")
    completed = [line for line in log_lines(gotrue) if line.get("msg") == "request completed"]
    # GoTrue serves /health without its request logger.
    assert not [line for line in completed if line["path"] == "/health"]
    line = next(line for line in completed if line["path"] == "/settings")
    assert line["component"] == "api"
    assert line["status"] == 200
    assert line["method"] == "GET"
    assert line["remote_addr"] == "127.0.0.1"
    started = next(line for line in log_lines(gotrue)
                   if line["msg"].startswith("GoTrue API started on"))
    assert "component" not in started


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


def test_admin_create_validation(gotrue: Proc) -> None:
    """No email nor phone is 400; a bad address is 400; the admin path checks no strength."""
    none = call(gotrue, "POST", "/admin/users", SERVICE_KEY, {"password": "whatever-pw"})
    assert none.status == 400
    assert none.json() == {"code": 400, "error_code": "validation_failed",
                           "msg": "Cannot create a user without either an email or phone"}
    bad = call(gotrue, "POST", "/admin/users", SERVICE_KEY, {"email": "not an address"})
    assert bad.status == 400
    assert bad.json()["msg"] == "Unable to validate email address: invalid format"
    email = f"weak-{uuid.uuid4().hex[:8]}@example.invalid"
    weak = call(gotrue, "POST", "/admin/users", SERVICE_KEY,
                {"email": email, "password": "123"})
    assert weak.status == 200, weak.body
    assert call(gotrue, "DELETE", f"/admin/users/{weak.json()['id']}", SERVICE_KEY).status == 200
    signup = call(gotrue, "POST", "/signup", None, {"email": email, "password": "123"})
    assert signup.status == 422 and signup.json()["error_code"] == "weak_password"


def test_error_log_lines_carry_the_internal_error(gotrue: Proc) -> None:
    """4xx log lines carry e.Error() as "error"; not_admin logs its internal message."""
    call(gotrue, "GET", "/admin/users", ANON_KEY)
    call(gotrue, "GET", "/admin/users")

    def logged(msg: str) -> dict[str, Any] | None:
        return next((line for line in log_lines(gotrue) if line["msg"] == msg), None)

    wait_until(lambda: logged("401: This endpoint requires a Bearer token") is not None, 5,
               "the 401 line")
    not_admin = logged("this token needs to have one of the following roles: service_role")
    assert not_admin is not None and not_admin["level"] == "info"
    assert not_admin["error"] == not_admin["msg"]
    missing = logged("401: This endpoint requires a Bearer token")
    assert missing is not None and missing["error"] == missing["msg"]
    completed = [line for line in log_lines(gotrue) if line["msg"] == "request completed"
                 and line.get("status") == 403]
    assert completed and completed[-1]["error_code"] == "not_admin"


def test_request_timeout_is_504(spawn: Spawner, shared_pg: PgCluster) -> None:
    """A request still running at API_MAX_REQUEST_DURATION gets GoTrue's 504 request_timeout."""
    proc = start_gotrue(spawn, shared_pg, GOTRUE_API_MAX_REQUEST_DURATION="1s")
    with shared_pg.superuser() as conn, conn.transaction():
        conn.execute("LOCK TABLE auth.users IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        resp = call(proc, "GET", "/admin/users", SERVICE_KEY)
        elapsed = time.monotonic() - started
    assert 1 <= elapsed < 4
    assert resp.status == 504
    body = resp.json()
    assert body == {"code": 504, "error_code": "request_timeout",
                    "msg": "Processing this request timed out, please retry after a moment.",
                    "error_id": body["error_id"]}
    assert resp.headers["X-Sb-Error-Code"] == "request_timeout"
    line = next(line for line in log_lines(proc) if line["msg"].startswith("504: "))
    assert line["level"] == "error" and line["error"] == "context deadline exceeded"
    assert line["request_id"] == body["error_id"]
    wait_until(lambda: call(proc, "GET", "/admin/users", SERVICE_KEY).status == 200, 5,
               "GoTrue to answer once the lock is gone")


@pytest.fixture
def raising_trigger(shared_pg: PgCluster) -> Any:
    """A BEFORE INSERT trigger on auth.users that raises for addresses starting raise-<code>."""
    with shared_pg.superuser() as conn:
        conn.execute("""
            CREATE FUNCTION public.refuse_user() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.email LIKE 'raise-p0001%' THEN
                RAISE EXCEPTION 'no new users today' USING HINT = 'ask the admin';
              ELSIF NEW.email LIKE 'raise-pt403%' THEN
                RAISE EXCEPTION 'forbidden by policy' USING ERRCODE = 'PT403';
              ELSIF NEW.email LIKE 'raise-42p01%' THEN
                INSERT INTO public.no_such_table VALUES (1);
              END IF;
              RETURN NEW;
            END $$""")
        conn.execute("CREATE TRIGGER refuse_user BEFORE INSERT ON auth.users "
                     "FOR EACH ROW EXECUTE FUNCTION public.refuse_user()")
    yield
    with shared_pg.superuser() as conn:
        conn.execute("DROP TRIGGER refuse_user ON auth.users")
        conn.execute("DROP FUNCTION public.refuse_user()")


@pytest.mark.parametrize(
    ("prefix", "status", "expected"),
    [
        ("raise-p0001", 500, {"code": "P0001", "message": "no new users today",
                              "hint": "ask the admin"}),
        ("raise-pt403", 403, {"code": "PT403", "message": "forbidden by policy"}),
        ("raise-42p01", 500, {"code": 500, "error_code": "unexpected_failure",
                              "msg": "Database error creating new user"}),
    ],
    ids=["raise", "raise-with-http-status", "broken-trigger"],
)
def test_failing_trigger_on_users(gotrue: Proc, raising_trigger: Any, prefix: str,
                                  status: int, expected: dict[str, Any]) -> None:
    """A RAISE is shown in Postgres' terms; other trigger errors are GoTrue's plain 500."""
    resp = call(gotrue, "POST", "/admin/users", SERVICE_KEY,
                {"email": f"{prefix}-{uuid.uuid4().hex[:6]}@example.invalid"})
    assert resp.status == status
    body = resp.json()
    body.pop("error_id", None)
    assert body == expected
    assert resp.headers["X-Sb-Error-Code"] == "unexpected_failure"
    line = [line for line in log_lines(gotrue)
            if line["msg"] == "500: Database error creating new user"][-1]
    assert line["level"] == "error" and "(SQLSTATE" in line["error"]


def test_request_id_header_configured_but_absent(spawn: Spawner, shared_pg: PgCluster) -> None:
    """With GOTRUE_API_REQUEST_ID_HEADER set, a request without it has no id at all."""
    proc = start_gotrue(spawn, shared_pg, GOTRUE_API_REQUEST_ID_HEADER="X-Request-Id")
    tagged = call(proc, "GET", "/admin/users", SERVICE_KEY, headers={"X-Request-Id": "abc-1"})
    assert tagged.status == 200
    call(proc, "GET", "/settings")
    wait_until(lambda: sum(line["msg"] == "request completed" for line in log_lines(proc)) >= 2,
               5, "two request lines")
    first, second = [line for line in log_lines(proc) if line["msg"] == "request completed"]
    assert first["request_id"] == "abc-1"
    assert "request_id" not in second


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
