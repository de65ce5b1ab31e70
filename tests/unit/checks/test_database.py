"""database_connection against a real PostgreSQL 15 with the Supabase roles."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from exporter.checks.auth import AuthServiceCheck
from exporter.checks.base import Findings, status_of
from exporter.checks.database import DatabaseConnectionCheck
from exporter.config import Thresholds
from exporter.pg import DbLogin, login_from_url, try_login
from exporter.redaction import fingerprint
from tests.unit.checks.conftest import PgServer, free_port
from tests.unit.checks.support import PG_PASSWORD, codes, make_context, make_instance, only

ALL_ROLES = {"supabase_auth_admin", "authenticator", "supabase_storage_admin", "supabase_admin"}


def runtime_env(auth: str = PG_PASSWORD, rest: str = PG_PASSWORD
                ) -> dict[str, dict[str, str]]:
    return {"auth": {"GOTRUE_DB_DATABASE_URL":
                     f"postgres://supabase_auth_admin:{auth}@db:5432/postgres"},
            "rest": {"PGRST_DB_URI": f"postgres://authenticator:{rest}@db:5432/postgres"},
            "db": {"POSTGRES_PASSWORD": PG_PASSWORD, "POSTGRES_DB": "postgres"}}


def run(port: int | None, *, password: str | None = PG_PASSWORD,
        env: Mapping[str, Mapping[str, str]] | None = None,
        thresholds: Thresholds | None = None) -> Findings:
    instance = make_instance(db_port=port, postgres_password=password,
                             runtime_env=runtime_env() if env is None else env)
    return DatabaseConnectionCheck().run(make_context(instance, thresholds=thresholds))


def assert_no_secrets(findings: Findings, *extra: str) -> None:
    text = json.dumps([i.to_dict() for i in findings.issues]) + json.dumps(findings.details)
    for secret in (PG_PASSWORD, *extra):
        assert secret not in text


def test_a_healthy_database_reports_its_facts_and_every_role_logs_in(pg: PgServer) -> None:
    findings = run(pg.port)
    assert findings.issues == ()
    details = findings.details
    assert details["version"].startswith("15")
    assert details["max_connections"] == pg.max_connections
    assert 1 <= details["connections"] < pg.max_connections
    assert details["size_bytes"] > 1_000_000
    assert details["superuser"] == "supabase_admin"
    assert details["roles"] == dict.fromkeys(ALL_ROLES, "ok")
    assert details["role_password_sources"] == {
        "supabase_auth_admin": "runtime:auth", "authenticator": "runtime:rest",
        "supabase_storage_admin": "runtime:db", "supabase_admin": "runtime:db"}
    assert status_of(findings) == "ok"


def test_a_closed_port_is_unreachable_and_nothing_else_is_claimed() -> None:
    port = free_port()
    started = time.monotonic()
    findings = run(port)
    assert time.monotonic() - started < 2
    assert codes(findings.issues) == ["DB_UNREACHABLE"]
    issue = findings.issues[0]
    assert issue.component == "db" and issue.severity == "critical"
    assert issue.evidence["port"] == port and issue.evidence["outcome"] == "unreachable"
    assert "refused" in issue.evidence["error"].lower()
    assert findings.details["roles"] == {}


def test_a_role_whose_password_changed_is_a_mismatch_naming_role_and_service(
        pg: PgServer) -> None:
    pg.set_password("authenticator", "a-password-from-an-older-data-dir")
    findings = run(pg.port)
    issue = only(findings.issues, "DB_ROLE_PASSWORD_MISMATCH")
    assert issue.component == "db"
    assert issue.evidence == {"role": "authenticator", "service": "rest",
                              "password_fingerprint": fingerprint(PG_PASSWORD),
                              "password_source": "runtime:rest"}
    assert findings.details["roles"]["authenticator"] == "password_mismatch"
    assert findings.details["roles"]["supabase_auth_admin"] == "ok"
    assert codes(findings.issues) == ["DB_ROLE_PASSWORD_MISMATCH"]
    assert_no_secrets(findings)


def test_a_service_configured_with_another_password_is_tested_with_that_one(
        pg: PgServer) -> None:
    drifted = "auth-was-given-a-different-password"
    findings = run(pg.port, env=runtime_env(auth=drifted))
    issue = only(findings.issues, "DB_ROLE_PASSWORD_MISMATCH")
    assert issue.evidence["role"] == "supabase_auth_admin"
    assert issue.evidence["service"] == "auth"
    assert issue.evidence["password_fingerprint"] == fingerprint(drifted)
    assert_no_secrets(findings, drifted)


def test_without_the_superuser_password_the_database_rejects_us(pg: PgServer) -> None:
    wrong = "not-the-instance-password"
    env = runtime_env()
    findings = run(pg.port, password=wrong, env=env)
    issue = only(findings.issues, "DB_AUTH_FAILED")
    assert issue.component == "db"
    assert issue.evidence["users"] == ["supabase_admin", "postgres"]
    assert issue.evidence["password_fingerprint"] == fingerprint(wrong)
    # storage has no DSN of its own here: it falls back to the (wrong) instance password;
    # supabase_admin's failure is the DB_AUTH_FAILED itself, not reported twice.
    mismatch = only(findings.issues, "DB_ROLE_PASSWORD_MISMATCH")
    assert mismatch.evidence["role"] == "supabase_storage_admin"
    assert findings.details["roles"]["supabase_auth_admin"] == "ok"
    assert findings.details["version"] is None
    assert_no_secrets(findings, wrong)


def test_supabase_admin_drift_falls_back_to_postgres_and_reports_the_role(
        pg: PgServer) -> None:
    pg.set_password("supabase_admin", "someone-changed-it")
    findings = run(pg.port)
    assert findings.details["superuser"] == "postgres"
    issue = only(findings.issues, "DB_ROLE_PASSWORD_MISMATCH")
    assert issue.evidence["role"] == "supabase_admin"
    assert "DB_AUTH_FAILED" not in codes(findings.issues)
    assert findings.details["version"] is not None


def test_a_missing_auth_schema(pg: PgServer) -> None:
    pg.execute("DROP SCHEMA auth CASCADE")
    findings = run(pg.port)
    issue = only(findings.issues, "DB_SCHEMA_MISSING")
    assert issue.evidence["schema"] == "auth" and issue.evidence["database"] == "postgres"
    assert status_of(findings) == "failed"


def test_connections_over_the_ratio_threshold(pg: PgServer) -> None:
    assert "DB_CONNECTIONS_HIGH" not in codes(run(pg.port).issues)
    findings = run(pg.port, thresholds=Thresholds(db_connections_ratio=0.01))
    issue = only(findings.issues, "DB_CONNECTIONS_HIGH")
    assert issue.severity == "warning"
    assert issue.evidence["max_connections"] == pg.max_connections
    assert issue.evidence["ratio"] > 0.01
    assert status_of(findings) == "degraded"


def test_missing_port_or_password_skips_with_a_reason() -> None:
    assert "port" in (run(None).skipped or "")
    assert "password" in (run(5432, password=None).skipped or "")


def test_login_outcomes_name_the_sqlstate(pg: PgServer) -> None:
    ok = try_login(pg.host, pg.port, DbLogin("authenticator", PG_PASSWORD), 2)
    assert ok.ok
    wrong = try_login(pg.host, pg.port, DbLogin("authenticator", "nope"), 2)
    assert (wrong.outcome, wrong.sqlstate) == ("auth_failed", "28P01")
    assert "password authentication failed" in wrong.reason
    no_db = try_login(pg.host, pg.port, DbLogin("authenticator", PG_PASSWORD, "nodb"), 2)
    assert (no_db.outcome, no_db.sqlstate) == ("rejected", "3D000")
    assert try_login(pg.host, free_port(), DbLogin("x", "y"), 2).outcome == "unreachable"


def test_dsn_parsing() -> None:
    login = login_from_url("postgres://supabase_auth_admin:p%40ss@db:5432/app?sslmode=disable")
    assert login is not None
    assert (login.user, login.password, login.dbname) == ("supabase_auth_admin", "p@ss", "app")
    assert "p@ss" not in repr(login)
    assert login_from_url("postgres://db:5432/x") is None
    assert login_from_url("host=db user=x") is None
    default = login_from_url("postgresql://u:p@db")
    assert default is not None and default.dbname == "postgres"


def test_auth_service_reuses_the_login_of_the_same_diagnostic(pg: PgServer) -> None:
    instance = make_instance(db_port=pg.port, runtime_env=runtime_env())
    ctx = make_context(instance, run_synthetic_user=False)
    assert DatabaseConnectionCheck().run(ctx).details["roles"]["supabase_auth_admin"] == "ok"
    pg.set_password("supabase_auth_admin", "changed-after-the-database-check")
    # Same diagnostic: the login database_connection made is the answer, not a new one.
    shared = AuthServiceCheck().run(ctx)
    assert shared.details["db_login"]["outcome"] == "ok"
    # A new diagnostic logs in again and sees the change.
    fresh = AuthServiceCheck().run(make_context(instance, run_synthetic_user=False))
    assert fresh.details["db_login"]["outcome"] == "auth_failed"
    assert "AUTH_DB_CONNECTION_FAILED" in codes(fresh.issues)
