"""Short, bounded PostgreSQL logins for the checks: connect, classify any failure, close."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import psycopg

from exporter.discovery.model import Instance

APPLICATION_NAME = "ultrabase-doctor"
# libpq's require_auth (libpq 16+; psycopg's binary wheel bundles a newer libpq).
REQUIRE_AUTH = "scram-sha-256"
DEFAULT_DBNAME = "postgres"
# The logins the doctor tries with the instance's password, in order. supabase/postgres
# makes supabase_admin its only superuser and demotes postgres (NOSUPERUSER, but BYPASSRLS
# with pg_read_all_data and pg_monitor: migrations/db/migrations/10000000000000_demote-
# postgres.sql and later grants), so postgres can still read everything the checks,
# snapshots and dumps read, but cannot alter roles it does not own or read pg_authid.
ADMIN_USERS = ("supabase_admin", "postgres")
SUPERUSER = "supabase_admin"
# libpq rounds connect_timeout down to whole seconds and treats anything below 2 as 2.
_MIN_CONNECT_TIMEOUT = 2

# ok: logged in; auth_failed: wrong password (28P01); rejected: the server refused for
# another reason (role, database or pg_hba); unavailable: the server is up but not taking
# logins (starting, too many clients); unreachable: no server answered in time.
LoginOutcome = Literal["ok", "auth_failed", "rejected", "unavailable", "unreachable"]

# libpq reports connection failures as text only (no SQLSTATE reaches the client), so the
# server's FATAL message is mapped back to the SQLSTATE the server logged with it.
_SERVER_FAILURES: tuple[tuple[re.Pattern[str], str, LoginOutcome], ...] = (
    (re.compile(r"password authentication failed|authentication failed for user"),
     "28P01", "auth_failed"),
    (re.compile(r"no password supplied|password is required"), "28P01", "auth_failed"),
    (re.compile(r"role \".*\" does not exist|no pg_hba\.conf entry|not permitted to log in"),
     "28000", "rejected"),
    (re.compile(r"database \".*\" does not exist"), "3D000", "rejected"),
    (re.compile(r"too many clients|remaining connection slots are reserved"),
     "53300", "unavailable"),
    (re.compile(r"the database system is (starting up|shutting down|in recovery mode|"
                r"not yet accepting connections)"), "57P03", "unavailable"),
)
_SQLSTATE_OUTCOMES: Mapping[str, LoginOutcome] = {
    sqlstate: outcome for _, sqlstate, outcome in _SERVER_FAILURES}


@dataclass(frozen=True, repr=False)
class DbLogin:
    """Who logs in where: a user, its password and a database name."""

    user: str
    password: str
    dbname: str = DEFAULT_DBNAME

    def __repr__(self) -> str:
        return f"DbLogin(user={self.user!r}, dbname={self.dbname!r})"


@dataclass(frozen=True)
class LoginResult:
    """How one login attempt ended; reason is the server's or libpq's text, no password."""

    outcome: LoginOutcome
    sqlstate: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when the login succeeded."""
        return self.outcome == "ok"


class LoginFailedError(Exception):
    """A connection attempt failed; result says how."""

    def __init__(self, result: LoginResult) -> None:
        super().__init__(result.reason)
        self.result = result


def classify_error(exc: psycopg.Error) -> LoginResult:
    """The outcome a connection error stands for."""
    text = str(exc)
    reason = _first_reason(text)
    if exc.sqlstate:
        return LoginResult(_SQLSTATE_OUTCOMES.get(exc.sqlstate, "unavailable"), exc.sqlstate,
                           reason)
    for pattern, sqlstate, outcome in _SERVER_FAILURES:
        if pattern.search(text):
            return LoginResult(outcome, sqlstate, reason)
    # Refused, timed out, reset before the server spoke: nobody answered the login.
    return LoginResult("unreachable", None, reason)


def _first_reason(text: str) -> str:
    # libpq's text starts with "connection failed: connection to server at ... failed:";
    # the useful part is after the last "failed:" of the first line.
    line = text.strip().splitlines()[0] if text.strip() else "connection failed"
    marker = line.rfind("failed:")
    if marker != -1 and line[marker + len("failed:"):].strip():
        line = line[marker + len("failed:"):].strip()
    return line.removeprefix("FATAL:").strip()[:300]


def connect_timeout(timeout: float) -> int:
    """The libpq connect_timeout for a per-call timeout in seconds."""
    return max(_MIN_CONNECT_TIMEOUT, math.ceil(timeout))


def connect(host: str, port: int, login: DbLogin, timeout: float) -> psycopg.Connection[Any]:
    """An autocommit connection whose statements are bounded by timeout too."""
    try:
        return psycopg.connect(
            host=host, port=port, user=login.user, password=login.password,
            dbname=login.dbname, connect_timeout=connect_timeout(timeout),
            application_name=APPLICATION_NAME,
            # Explicit values so PG* variables of the exporter's own environment never apply.
            sslmode="prefer", gssencmode="disable",
            # Only SCRAM: the password never crosses the wire, so whatever holds the port
            # (a process that took it while the db container was down) learns nothing. A
            # server asking for a cleartext or MD5 password, or none, is refused by libpq
            # before anything is sent; that reads as "unreachable" (no database answered).
            # Supabase's postgres takes SCRAM from every address but its own loopback
            # (supabase/postgres ansible/files/postgresql_config/pg_hba.conf.j2).
            require_auth=REQUIRE_AUTH,
            options=f"-c statement_timeout={int(timeout * 1000)}",
            autocommit=True,
        )
    except psycopg.Error as exc:
        raise LoginFailedError(classify_error(exc)) from None


def try_login(host: str, port: int, login: DbLogin, timeout: float) -> LoginResult:
    """Log in, run SELECT 1, log out; never raises for a database fault."""
    try:
        with connect(host, port, login, timeout) as conn:
            conn.execute("SELECT 1")
    except LoginFailedError as exc:
        return exc.result
    except psycopg.Error as exc:
        return classify_error(exc)
    return LoginResult("ok")


def login_from_url(url: str | None) -> DbLogin | None:
    """User, password and database of a postgres:// URL; None without user or password."""
    if not url or "://" not in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.username or parts.password is None:
        return None
    dbname = unquote(parts.path.lstrip("/")) or DEFAULT_DBNAME
    return DbLogin(unquote(parts.username), unquote(parts.password), dbname)


def instance_dbname(instance: Instance) -> str:
    """The database the instance's services use (db's POSTGRES_DB, else "postgres")."""
    return _env(instance, "db").get("POSTGRES_DB") or DEFAULT_DBNAME


def service_login(instance: Instance, component: str, variable: str) -> DbLogin | None:
    """The login a service's runtime DSN variable configures, if it is known."""
    return login_from_url(_env(instance, component).get(variable))


def _env(instance: Instance, component: str) -> Mapping[str, str]:
    return instance.runtime_env.get(component) or {}
