"""database_connection: the published db port, an admin login, capacity, service role logins."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypedDict

import psycopg

from exporter.checks.base import CheckContext, Family, Findings
from exporter.checks.listener import withheld_in
from exporter.discovery.model import Instance
from exporter.issues import Issue, make_issue
from exporter.pg import (
    ADMIN_USERS,
    DbLogin,
    LoginFailedError,
    LoginResult,
    connect,
    instance_dbname,
    service_login,
    try_login,
)
from exporter.redaction import fingerprint


class DatabaseDetails(TypedDict, total=False):
    """database_connection's details (only credentials_withheld when no login was tried)."""

    # The server's facts, as the first admin user that logged in read them (else None).
    version: str | None
    connections: int | None
    max_connections: int | None
    size_bytes: int | None
    superuser: str  # that admin user
    superuser_error: str  # why no admin user could read them, when not a password
    roles: dict[str, str]  # role -> ok, password_mismatch or error
    role_password_sources: dict[str, str]  # role -> where its tested password came from
    role_errors: dict[str, str]  # role -> why its login failed, other than the password
    credentials_withheld: str  # why no password went to the port


DATABASE_CONNECTION: Family[DatabaseDetails] = Family("database_connection")
NAME = DATABASE_CONNECTION.name
REQUIRED_SCHEMA = "auth"


@dataclass(frozen=True)
class ServiceRole:
    """A Supabase role and the service whose configured password it must accept."""

    role: str
    service: str
    variable: str | None  # the service's DSN variable; None: the instance password


# Ultrabase's template gives every role the instance password; services may drift from it.
SERVICE_ROLES: tuple[ServiceRole, ...] = (
    ServiceRole("supabase_auth_admin", "auth", "GOTRUE_DB_DATABASE_URL"),
    ServiceRole("authenticator", "rest", "PGRST_DB_URI"),
    ServiceRole("supabase_storage_admin", "storage", "DATABASE_URL"),
    ServiceRole("supabase_admin", "db", None),
)
# What a role test outcome is called in details.
_ROLE_STATE = {"ok": "ok", "auth_failed": "password_mismatch"}


@dataclass(frozen=True, repr=False)
class RoleLogin:
    """A role test: the login a service is configured with and where its password came from."""

    spec: ServiceRole
    login: DbLogin
    password_source: str


@dataclass(frozen=True)
class ServerFacts:
    """What the admin session read."""

    version: str
    connections: int
    max_connections: int
    size_bytes: int
    schema_present: bool


class DatabaseConnectionCheck:
    """Connects to the published db port as an admin user, then as each service role."""

    name = NAME

    def run(self, ctx: CheckContext) -> Findings:
        """Inspect the instance's database."""
        instance = ctx.instance
        port = instance.endpoints.db_port
        password = instance.credentials.postgres_password
        if port is None:
            return Findings(skipped="the db port published on the host is unknown")
        if not password:
            return Findings(skipped="the instance's postgres password is unknown")
        withheld = withheld_in(ctx, "db", port)
        if withheld:
            # No password goes to whatever holds the port if it is not this instance's db.
            return Findings((make_issue(
                "DB_UNREACHABLE", check=NAME, component="db",
                message=f"no login tried on 127.0.0.1:{port}: {withheld}",
                evidence={"host": instance.endpoints.db_host, "port": port,
                          "outcome": "credentials_withheld", "reason": withheld}),),
                {"credentials_withheld": withheld})
        host = instance.endpoints.db_host
        dbname = instance_dbname(instance)
        details: DatabaseDetails = {"version": None, "connections": None,
                                    "max_connections": None, "size_bytes": None, "roles": {}}
        facts, admins = _superuser_session(host, port, password, dbname, ctx.timeout)
        first = admins[ADMIN_USERS[0]]
        if first.outcome in ("unreachable", "unavailable"):
            return Findings((make_issue(
                "DB_UNREACHABLE", check=NAME, component="db",
                message=f"the database on 127.0.0.1:{port} does not accept connections: "
                        f"{ctx.redactor.text(first.reason)}",
                evidence={"host": host, "port": port, "outcome": first.outcome,
                          "sqlstate": first.sqlstate,
                          "error": ctx.redactor.text(first.reason)}),), details)

        issues: list[Issue] = []
        superuser_denied = facts is None and all(
            r.outcome == "auth_failed" for r in admins.values())
        if superuser_denied:
            issues.append(make_issue(
                "DB_AUTH_FAILED", check=NAME, component="db",
                message="the database rejects the configured password for "
                        + " and ".join(admins),
                evidence={"users": list(admins),
                          "password_fingerprint": fingerprint(password),
                          "password_source": instance.credentials.sources.get(
                              "postgres_password")}))
        elif facts is None:
            details["superuser_error"] = ctx.redactor.text(first.reason)
        else:
            details.update({"version": facts.version, "connections": facts.connections,
                            "max_connections": facts.max_connections,
                            "size_bytes": facts.size_bytes, "superuser": list(admins)[-1]})
            issues.extend(_server_issues(ctx, facts, dbname))

        role_issues, roles, sources, errors = _test_roles(
            ctx, host, port, dbname, admins.get("supabase_admin"), superuser_denied)
        issues.extend(role_issues)
        details["roles"] = roles
        details["role_password_sources"] = sources
        if errors:
            details["role_errors"] = errors
        return Findings(tuple(issues), details)


def _superuser_session(host: str, port: int, password: str, dbname: str, timeout: float
                       ) -> tuple[ServerFacts | None, dict[str, LoginResult]]:
    """The server's facts as the first admin user that logs in, and each attempt's result.

    Nothing read needs a superuser: postgres, demoted on supabase/postgres, reads it too.
    """
    results: dict[str, LoginResult] = {}
    for user in ADMIN_USERS:
        try:
            facts = _read_server(host, port, DbLogin(user, password, dbname), timeout)
        except LoginFailedError as exc:
            results[user] = exc.result
            if exc.result.outcome != "auth_failed":
                break  # another user will not fare better against a server that is down
            continue
        results[user] = LoginResult("ok")
        return facts, results
    return None, results


def _read_server(host: str, port: int, login: DbLogin, timeout: float) -> ServerFacts:
    """One admin session: version, connections, size and the auth schema."""
    try:
        with connect(host, port, login, timeout) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'),"
                " (SELECT COALESCE(sum(numbackends), 0)::int FROM pg_stat_database),"
                " current_setting('max_connections')::int,"
                " pg_database_size(current_database()),"
                " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)",
                (REQUIRED_SCHEMA,)).fetchone()
    except psycopg.Error as exc:
        # Logged in, but the queries failed (statement timeout, server going down).
        raise LoginFailedError(LoginResult("unavailable", exc.sqlstate,
                                           str(exc).splitlines()[0][:300])) from None
    if row is None:  # a single-row SELECT always returns a row
        raise LoginFailedError(LoginResult("unavailable", None, "no row returned"))
    return ServerFacts(version=str(row[0]), connections=int(row[1]),
                       max_connections=int(row[2]), size_bytes=int(row[3]),
                       schema_present=bool(row[4]))


def _server_issues(ctx: CheckContext, facts: ServerFacts, dbname: str) -> list[Issue]:
    """Too many connections in use; the auth schema missing."""
    issues: list[Issue] = []
    threshold = ctx.config.thresholds.db_connections_ratio
    ratio = facts.connections / facts.max_connections if facts.max_connections > 0 else None
    if ratio is not None and ratio > threshold:
        issues.append(make_issue(
            "DB_CONNECTIONS_HIGH", check=NAME, component="db",
            message=f"{facts.connections} of {facts.max_connections} connections in use "
                    f"({ratio:.0%}, threshold {threshold:.0%})",
            evidence={"connections": facts.connections,
                      "max_connections": facts.max_connections,
                      "ratio": round(ratio, 4), "threshold": threshold}))
    if not facts.schema_present:
        issues.append(make_issue(
            "DB_SCHEMA_MISSING", check=NAME, component="db",
            message=f"schema {REQUIRED_SCHEMA!r} is missing in database {dbname!r}",
            evidence={"schema": REQUIRED_SCHEMA, "database": dbname, "created_by": "auth"}))
    return issues


def role_logins(instance: Instance, dbname: str) -> list[RoleLogin]:
    """Each service role with the password its service is configured with."""
    fallback = instance.credentials.postgres_password or ""
    fallback_source = instance.credentials.sources.get("postgres_password", "postgres_password")
    out: list[RoleLogin] = []
    for spec in SERVICE_ROLES:
        configured = service_login(instance, spec.service, spec.variable) \
            if spec.variable else None
        if configured is not None:
            out.append(RoleLogin(spec, configured, f"runtime:{spec.service}"))
        else:
            out.append(RoleLogin(spec, DbLogin(spec.role, fallback, dbname), fallback_source))
    return out


def shared_login(ctx: CheckContext, host: str, port: int, login: DbLogin) -> LoginResult:
    """try_login, once per diagnostic for the same login (auth_service tests GoTrue's too)."""
    return ctx.shared.get(("db-login", host, port, login),
                          partial(try_login, host, port, login, ctx.timeout))


def _test_roles(ctx: CheckContext, host: str, port: int, dbname: str,
                admin_result: LoginResult | None, superuser_denied: bool
                ) -> tuple[list[Issue], dict[str, str], dict[str, str], dict[str, str]]:
    """Log each service role in concurrently; issues, states, password sources, errors."""
    tests = role_logins(ctx.instance, dbname)
    # The admin attempt already was supabase_admin's login with the instance password.
    pending = [t for t in tests if t.spec.variable is not None]
    with ThreadPoolExecutor(max_workers=len(pending)) as pool:
        futures = {t.spec.role: pool.submit(shared_login, ctx, host, port, t.login)
                   for t in pending}
    results = {role: future.result() for role, future in futures.items()}
    if admin_result is not None:
        results["supabase_admin"] = admin_result

    issues: list[Issue] = []
    roles: dict[str, str] = {}
    sources: dict[str, str] = {}
    errors: dict[str, str] = {}
    for test in tests:
        user = test.login.user
        result = results.get(test.spec.role)
        if result is None:
            continue
        roles[user] = _ROLE_STATE.get(result.outcome, "error")
        sources[user] = test.password_source
        if result.outcome == "auth_failed":
            if superuser_denied and test.spec.service == "db":
                continue  # already DB_AUTH_FAILED
            issues.append(make_issue(
                "DB_ROLE_PASSWORD_MISMATCH", check=NAME, component="db",
                message=f"role {user} rejects the password {test.spec.service} is "
                        f"configured with",
                evidence={"role": user, "service": test.spec.service,
                          "password_fingerprint": fingerprint(test.login.password),
                          "password_source": test.password_source}))
        elif not result.ok:
            errors[user] = ctx.redactor.text(result.reason)
    return issues, roles, sources, errors
