"""Entry point of the fleet's db container: initialise PGDATA once, then run PostgreSQL 15.

Runs as root inside the container (stdlib only), in the order supabase/postgres 15.1.1.78
does it (docker-library's docker-entrypoint.sh, then the image's migrate.sh): initdb with
postgres as the bootstrap superuser; a socket-only server with the template's arguments
(config_file=/etc/postgresql/postgresql.conf, so the image's pg_hba.conf and
pg_ident.conf apply); init.sql and the mounted init-scripts as postgres (peer map);
migrations.sql, which demotes postgres, and the mounted migrations as supabase_admin
(scram over the socket). Then it runs the real server, which logs to stderr, and turns
SIGTERM into PostgreSQL's fast shutdown (SIGINT), as the image does with STOPSIGNAL SIGINT.
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
SOCKET_DIR = Path("/var/run/postgresql")
INITDB_D = Path("/docker-entrypoint-initdb.d")
INIT_SQL = Path(__file__).with_name("init.sql")
MIGRATIONS_SQL = Path(__file__).with_name("migrations.sql")
BOOTSTRAP = "postgres"  # docker-entrypoint.sh's POSTGRES_USER default
SUPERUSER = "supabase_admin"  # the image's superuser once postgres is demoted
# Outside the bind mount (initdb wants an empty dir); survives restarts of the container.
INCOMPLETE = PGDATA.parent / ".fleet-init-incomplete"


def log(message: str) -> None:
    """One line on stderr, where `docker logs` finds it."""
    print(f"fleet-db: {message}", file=sys.stderr, flush=True)


def postgres_user() -> tuple[int, int]:
    """uid and gid of the postgres account (from the image's /etc/passwd)."""
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


def sql_files() -> list[tuple[str, Path]]:
    """(user, file): init.sql and the init-scripts as postgres, then the migrations."""
    files = [(BOOTSTRAP, INIT_SQL)]
    files += [(BOOTSTRAP, p) for p in sorted((INITDB_D / "init-scripts").glob("*.sql"))]
    files.append((SUPERUSER, MIGRATIONS_SQL))
    files += [(SUPERUSER, p) for p in sorted((INITDB_D / "migrations").glob("*.sql"))]
    return files


def wait_ready(server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until the socket-only server accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.returncode} during init")
        probe = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", str(SOCKET_DIR),
                                "-U", BOOTSTRAP],
                               check=False, stdin=subprocess.DEVNULL)
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("postgres did not accept connections during init")


def initialise(argv: list[str]) -> None:
    """initdb, then the init SQL on a server with the real arguments, listening on the socket."""
    log("initialising the database cluster")
    INCOMPLETE.touch()
    uid, gid = postgres_user()
    password = os.environ.get("POSTGRES_PASSWORD", "")
    pwfile = PGDATA.parent / ".fleet-initdb-pw"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, uid, gid)
    pwfile.chmod(0o600)
    try:
        as_postgres([str(PG_BIN / "initdb"), "-D", str(PGDATA), "-U", BOOTSTRAP,
                     f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync",
                     "--no-instructions"])
    finally:
        pwfile.unlink(missing_ok=True)
    server = subprocess.Popen(
        [*server_args(argv), "-c", "listen_addresses=", "-c",
         f"unix_socket_directories={SOCKET_DIR}"],
        user=uid, group=gid, extra_groups=[], stdin=subprocess.DEVNULL)
    try:
        wait_ready(server)
        # docker-entrypoint.sh exports POSTGRES_USER (default postgres) for the init files;
        # the image's migrate.sh passes POSTGRES_PASSWORD as PGPASSWORD.
        env = {**os.environ, "POSTGRES_USER": os.environ.get("POSTGRES_USER", BOOTSTRAP),
               "PGPASSWORD": password}
        for user, path in sql_files():
            log(f"running {path.name} as {user}")
            as_postgres([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                         "-h", str(SOCKET_DIR), "-U", user, "-d", "postgres",
                         "-f", str(path)], env=env)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait()
    INCOMPLETE.unlink()
    log("initialisation done")


def server_args(argv: list[str]) -> list[str]:
    """The server command: the template's `postgres -c ...` with the binary's path.

    Without a config_file argument the server gets PGDATA and listens everywhere itself.
    """
    args = argv or ["postgres"]
    if args[0] == "postgres":
        rest = args[1:]
        if not any(a.startswith("config_file=") for a in rest):
            rest = ["-D", str(PGDATA), "-c", "listen_addresses=*", *rest]
        args = [str(PG_BIN / "postgres"), *rest]
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
            initialise(argv)
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            log(f"initialisation failed: {exc}")
            wipe_pgdata()
            return 1
    return run_server(server_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
