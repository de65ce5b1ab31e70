"""Entry point of the fleet's db container: initialise PGDATA once, then run PostgreSQL 15.

Runs as root inside the container (stdlib only). On the first start it runs initdb as the
postgres user, writes pg_hba.conf (trust on the local socket, scram-sha-256 from any
address: clients reaching the published port arrive from the bridge gateway), applies
init.sql and the SQL files mounted under /docker-entrypoint-initdb.d (init-scripts, then
migrations) on a socket-only server, and stops it. Then it runs the real server, which
logs to stderr, and turns SIGTERM into PostgreSQL's fast shutdown (SIGINT), as the official
images do with STOPSIGNAL SIGINT.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGDATA = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))
SOCKET_DIR = Path("/run/postgresql")
INITDB_D = Path("/docker-entrypoint-initdb.d")
BASE_SQL = Path(__file__).with_name("init.sql")
SUPERUSER = "supabase_admin"
# Outside the bind mount (initdb wants an empty dir); survives restarts of the container.
INCOMPLETE = PGDATA.parent / ".fleet-init-incomplete"
PG_HBA = """\
# TYPE  DATABASE  USER  ADDRESS    METHOD
local   all       all              trust
host    all       all   0.0.0.0/0  scram-sha-256
host    all       all   ::/0       scram-sha-256
"""


def log(message: str) -> None:
    """One line on stderr, where `docker logs` finds it."""
    print(f"fleet-db: {message}", file=sys.stderr, flush=True)


def postgres_user() -> tuple[int, int]:
    """uid and gid of the postgres account (from the mounted /etc/passwd)."""
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def as_postgres(args: list[str], env: dict[str, str] | None = None) -> None:
    """Run a command as the postgres user; raise if it fails."""
    uid, gid = postgres_user()
    subprocess.run(args, user=uid, group=gid, extra_groups=[], check=True, env=env,
                   stdin=subprocess.DEVNULL)


def prepare_dirs() -> None:
    """The socket dir and PGDATA, owned by postgres with the modes PostgreSQL demands."""
    uid, gid = postgres_user()
    SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    os.chown(SOCKET_DIR, uid, gid)
    SOCKET_DIR.chmod(0o2775)
    PGDATA.mkdir(parents=True, exist_ok=True)
    os.chown(PGDATA, uid, gid)
    PGDATA.chmod(0o700)


def wipe_pgdata() -> None:
    """Remove what a failed initialisation left, keeping the mount point."""
    for child in PGDATA.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def sql_files() -> list[Path]:
    """init.sql, then the mounted init-scripts, then the mounted migrations, each sorted."""
    files = [BASE_SQL]
    for sub in ("init-scripts", "migrations"):
        files += sorted((INITDB_D / sub).glob("*.sql"))
    return files


def wait_ready(server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until the socket-only server accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.returncode} during init")
        probe = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", str(SOCKET_DIR),
                                "-U", SUPERUSER],
                               check=False, stdin=subprocess.DEVNULL)
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("postgres did not accept connections during init")


def initialise() -> None:
    """initdb, pg_hba.conf and the init SQL, on a server that listens on the socket only."""
    log("initialising the database cluster")
    INCOMPLETE.touch()
    uid, gid = postgres_user()
    as_postgres([str(PG_BIN / "initdb"), "-D", str(PGDATA), "-U", SUPERUSER, "-E", "UTF8",
                 "--locale=C", "--auth=trust", "--no-sync", "--no-instructions"])
    (PGDATA / "pg_hba.conf").write_text(PG_HBA)
    os.chown(PGDATA / "pg_hba.conf", uid, gid)
    server = subprocess.Popen(
        [str(PG_BIN / "postgres"), "-D", str(PGDATA), "-c", "listen_addresses=",
         "-c", f"unix_socket_directories={SOCKET_DIR}"],
        user=uid, group=gid, extra_groups=[], stdin=subprocess.DEVNULL)
    try:
        wait_ready(server)
        env = {**os.environ, "POSTGRES_USER": os.environ.get("POSTGRES_USER", SUPERUSER)}
        for path in sql_files():
            log(f"running {path.name}")
            as_postgres([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                         "-h", str(SOCKET_DIR), "-U", SUPERUSER, "-d", "postgres",
                         "-f", str(path)], env=env)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait()
    INCOMPLETE.unlink()
    log("initialisation done")


def server_args(argv: list[str]) -> list[str]:
    """The server command: the template's `postgres -c ...` with the binary and PGDATA."""
    args = argv or ["postgres"]
    if args[0] == "postgres":
        args = [str(PG_BIN / "postgres"), "-D", str(PGDATA), "-c", "listen_addresses=*",
                *args[1:]]
    return args


def run_server(args: list[str]) -> int:
    """Run the server as postgres, forwarding stop signals; its exit code."""
    uid, gid = postgres_user()
    server = subprocess.Popen(args, user=uid, group=gid, extra_groups=[],
                              stdin=subprocess.DEVNULL)
    forward = {signal.SIGTERM: signal.SIGINT, signal.SIGINT: signal.SIGINT,
               signal.SIGQUIT: signal.SIGQUIT, signal.SIGHUP: signal.SIGHUP}

    def handler(signum: int, _frame: FrameType | None) -> None:
        server.send_signal(forward[signal.Signals(signum)])

    for signum in forward:
        signal.signal(signum, handler)
    return server.wait()


def main(argv: list[str]) -> int:
    """Initialise when needed, then serve."""
    prepare_dirs()
    if INCOMPLETE.exists():
        log("a previous initialisation did not finish; starting over")
        wipe_pgdata()
    if not (PGDATA / "PG_VERSION").exists():
        try:
            initialise()
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            log(f"initialisation failed: {exc}")
            wipe_pgdata()
            return 1
    return run_server(server_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
