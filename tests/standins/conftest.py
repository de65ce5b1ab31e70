"""Fixtures for the stand-in tests: a real PostgreSQL 15 and the stand-ins as subprocesses.

The stand-ins are started exactly as the fleet starts them (``python <script>`` with the
service's environment), on 127.0.0.1 and ephemeral ports.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
STANDINS = Path(__file__).resolve().parents[2] / "fleet" / "standins"
PYTHON = sys.executable
SUPER_PASSWORD = "super-secret-pw"
DB_PASSWORD = "role-pw-3f9c"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"

SETUP_SQL = """
CREATE ROLE supabase_auth_admin LOGIN NOINHERIT CREATEROLE PASSWORD '@PW@';
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '@PW@';
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
GRANT anon, authenticated, service_role TO authenticator;
CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
ALTER ROLE supabase_auth_admin SET search_path = auth;
COMMENT ON SCHEMA public IS 'standard public schema';
CREATE TABLE public.todos (id bigint PRIMARY KEY, task text NOT NULL, done boolean DEFAULT false);
INSERT INTO public.todos VALUES (1, 'write stand-ins', true), (2, 'test them', false),
    (3, 'ship', false);
CREATE TABLE public.secrets (id int PRIMARY KEY, value text);
INSERT INTO public.secrets VALUES (1, 'only for service_role');
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT SELECT ON public.todos TO anon, authenticated, service_role;
GRANT SELECT ON public.secrets TO service_role;
""".replace("@PW@", DB_PASSWORD)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_jwt(role: str | None, *, secret: str = JWT_SECRET, exp_in: int = 3600,
             **claims: Any) -> str:
    """An HS256 token like Supabase's anon/service keys."""
    now = int(time.time())
    payload: dict[str, Any] = {"iss": "supabase-demo", "iat": now - 10, "exp": now + exp_in}
    if role is not None:
        payload["role"] = role
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass
class Response:
    """A response read in full."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def http_request(method: str, url: str, headers: dict[str, str] | None = None,
                 body: bytes | None = None, timeout: float = 10) -> Response:
    """One HTTP(S) request without redirects or retries; TLS is not verified."""
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    conn: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, "/" + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.msg, resp.read())
    finally:
        conn.close()


@dataclass
class Proc:
    """A stand-in subprocess with its output captured in files."""

    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        """Everything written to stderr so far."""
        return self.err_path.read_text(errors="replace")

    def url(self, name: str = "http", scheme: str = "http") -> str:
        """Base URL of one of the process's listeners."""
        return f"{scheme}://127.0.0.1:{self.ports[name]}"

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit on its own and return the status."""
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = 5) -> int:
        """SIGTERM and wait; a stand-in must stop promptly."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
                raise
        return int(self.popen.returncode)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll check until it holds or fail the test with what."""
    deadline = time.monotonic() + timeout
    while True:
        past = time.monotonic() >= deadline
        if check():  # also once after the deadline: a starved poller may have slept past it
            return
        if past:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Spawner:
    """Starts stand-ins; close() kills whatever is still running."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[Proc] = []

    def __call__(self, script: str, env: dict[str, str], args: list[str] | None = None,
                 ports: dict[str, int] | None = None, wait_port: str | None = "http") -> Proc:
        """Start script with env; wait until the port named wait_port accepts connections."""
        index = len(self.procs)
        out_path = self.directory / f"{script}-{index}.out"
        err_path = self.directory / f"{script}-{index}.err"
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        with out_path.open("wb") as out, err_path.open("wb") as err:
            popen = subprocess.Popen(
                [PYTHON, str(STANDINS / script), *(args or [])],
                env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            )
        proc = Proc(popen, out_path, err_path, dict(ports or {}), full_env)
        self.procs.append(proc)
        if wait_port is not None:
            port = proc.ports[wait_port]
            deadline = time.monotonic() + 15
            while not port_open(port):
                if popen.poll() is not None:
                    raise AssertionError(f"{script} exited early: {proc.stderr}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{script} did not listen on {port}: {proc.stderr}")
                time.sleep(0.05)
        return proc

    def close(self) -> None:
        """Kill what is still running."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(timeout=5)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    """A spawner whose processes live for one test."""
    spawner = Spawner(tmp_path)
    yield spawner
    spawner.close()


@pytest.fixture(scope="module")
def module_spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawner]:
    """A spawner whose processes live for the whole module."""
    spawner = Spawner(tmp_path_factory.mktemp("standins"))
    yield spawner
    spawner.close()


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_user() -> dict[str, Any]:
    """subprocess keyword arguments that run a command as the postgres user when needed."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _chown(path: Path) -> None:
    """Give path to the postgres user when running as root."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


class PgCluster:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.port = free_port()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), *args],
                              check=check, capture_output=True, timeout=60, **_pg_user())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off -c synchronous_commit=off")
        self._run("-l", str(self.datadir / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast mode: sessions are terminated)."""
        self._run("-m", "fast", "-w", "stop", check=False)

    def url(self, user: str, password: str, database: str = "postgres") -> str:
        """A postgres:// URL like the ones in the compose template."""
        return f"postgres://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def superuser(self) -> psycopg.Connection[Any]:
        """A superuser connection (autocommit)."""
        return psycopg.connect(self.url("postgres", SUPER_PASSWORD), autocommit=True,
                               connect_timeout=5)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[Path]:
    """An initialised and seeded data directory, copied for each cluster."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="standins-pg-"))
    base.chmod(0o755)
    _chown(base)
    template = base / "template"
    pwfile = base / "pwfile"
    pwfile.write_text(SUPER_PASSWORD + "\n")
    _chown(pwfile)
    subprocess.run(
        [str(PG_BIN / "initdb"), "-D", str(template), "-U", "postgres", "-A", "scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "-N"],
        check=True, capture_output=True, timeout=120, **_pg_user(),
    )
    cluster = PgCluster(template)
    cluster.start()
    try:
        with cluster.superuser() as conn:
            conn.execute(SETUP_SQL)  # type: ignore[arg-type]
    finally:
        cluster.stop()
    yield template
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_pg(pg_template: Path) -> Iterator[Callable[[], PgCluster]]:
    """Start fresh clusters copied from the template; stopped at teardown."""
    clusters: list[PgCluster] = []

    def _make() -> PgCluster:
        target = pg_template.parent / f"c{os.getpid()}-{len(clusters)}-{time.monotonic_ns()}"
        subprocess.run(["cp", "-a", str(pg_template), str(target)], check=True,
                       capture_output=True, timeout=60, **_pg_user())
        cluster = PgCluster(target)
        cluster.start()
        clusters.append(cluster)
        return cluster

    yield _make
    for cluster in clusters:
        cluster.stop()
        shutil.rmtree(cluster.datadir, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_pg(pg_template: Path) -> Iterator[PgCluster]:
    """One cluster shared by the tests of a module that leave the DB running."""
    target = pg_template.parent / f"shared-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["cp", "-a", str(pg_template), str(target)], check=True,
                   capture_output=True, timeout=60, **_pg_user())
    cluster = PgCluster(target)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(target, ignore_errors=True)
