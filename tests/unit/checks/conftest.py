"""A real PostgreSQL 15 with the Supabase roles and the auth schema, for the check tests.

Started once per session on a free 127.0.0.1 port (initdb into a temporary directory,
pg_ctl start), reset before each test that uses it, removed at the end. Postgres refuses to
run as root, so under root the server runs as the `postgres` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.unit.checks.support import PG_PASSWORD

PG_BIN = Path(os.environ.get("ULTRABASE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
# Every Supabase service role; Ultrabase gives each the instance's POSTGRES_PASSWORD.
SERVICE_ROLES = ("supabase_auth_admin", "authenticator", "supabase_storage_admin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PgServer:
    """The running test server: where it listens and how to administer it."""

    host: str
    port: int
    password: str
    max_connections: int

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection as the initdb superuser."""
        return psycopg.connect(host=self.host, port=self.port, user="postgres",
                               password=self.password, dbname="postgres", autocommit=True,
                               connect_timeout=5)

    def execute(self, statement: sql.Composed | str) -> None:
        """Run administrative SQL."""
        with self.admin() as conn:
            conn.execute(sql.SQL(statement) if isinstance(statement, str) else statement)

    def set_password(self, role: str, password: str) -> None:
        """ALTER ROLE role PASSWORD password."""
        self.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))

    def reset(self) -> None:
        """Roles, passwords and schema as Ultrabase's template leaves them."""
        with self.admin() as conn:
            for role in ("supabase_admin", *SERVICE_ROLES):
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(self.password)))
            conn.execute("CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_auth_admin")


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
    return "postgres"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL 15 server for the whole session (skipped when the binaries are absent)."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not initdb.exists() or not pg_ctl.exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (set ULTRABASE_TEST_PG_BIN)")
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="ubd-pg-"))
    data, pwfile, log = base / "data", base / "pw", base / "log"
    pwfile.write_text(PG_PASSWORD)
    if user is not None:
        for path in (base, pwfile):
            shutil.chown(path, user=user)
    port = free_port()
    max_connections = 20
    options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
               f"-c unix_socket_directories={base} -c fsync=off "
               f"-c max_connections={max_connections} -c shared_buffers=16MB")
    try:
        subprocess.run([str(initdb), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
                        "-E", "UTF8", "--locale=C"],
                       user=user, cwd=base, check=True, capture_output=True, timeout=120)
        subprocess.run([str(pg_ctl), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                        "-o", options, "start"],
                       user=user, cwd=base, check=True, capture_output=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc}")
    server = PgServer("127.0.0.1", port, PG_PASSWORD, max_connections)
    try:
        server.execute("CREATE ROLE supabase_admin LOGIN SUPERUSER")
        for role in SERVICE_ROLES:
            server.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(
                sql.Identifier(role)))
        server.reset()
        yield server
    finally:
        subprocess.run([str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"],
                       user=user, cwd=base, capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[PgServer]:
    """The session's server, reset before and after the test."""
    pg_server.reset()
    yield pg_server
    pg_server.reset()
