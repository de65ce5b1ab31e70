"""The fleet's images against the real ones: what runs in each component, and what does not.

In every component of a live instance: each healthcheck command Docker runs there works; the
doctor's in-instance probes (the HTTP probe in kong and auth, the TCP test from auth to db)
work with the tools the real image has; commands the real image lacks are missing here too
and fail as they would in production. The db is supabase/postgres's: postgres is no
superuser, the log prefix and pg_hba are the image's. Runs on the shared fleet.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from exporter.checks.probes import HttpTarget, probe_http, probe_tcp
from exporter.dockerhost import DockerHost
from fleet import engine, images
from fleet.fleet import Fleet
from fleet.model import COMPONENTS, Instance

pytestmark = [pytest.mark.integration, pytest.mark.fleets(2)]

BASE_URL = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
# Commands the real image does not have (fleet/README.md names the upstream file of each).
ABSENT: dict[str, tuple[str, ...]] = {
    "studio": ("curl", "wget", "pg_isready"),
    "kong": ("curl", "pg_isready", "python3", "node"),
    "auth": ("curl", "pg_isready", "bash", "python3"),
    "rest": ("sh", "wget", "curl", "nc", "python3"),
    "realtime": ("wget", "pg_isready", "node"),
    "storage": ("curl", "bash", "pg_isready"),
    "imgproxy": ("curl", "wget", "python3"),
    "meta": ("curl", "wget", "python3"),
    "functions": ("curl", "wget", "node", "python3"),
    "analytics": ("bash", "pg_isready", "node"),
    "db": ("curl", "wget", "node", "python3"),
    "vector": ("curl", "bash", "python3"),
    "supavisor": ("wget", "node", "python3"),
}
# The busybox tools the doctor's probe scripts use, in the images they run in.
PROBE_TOOLS = {"kong": ("sh", "wget", "timeout"), "auth": ("sh", "wget", "nc", "timeout")}


@pytest.fixture(scope="module")
def docker_host() -> DockerHost:
    return DockerHost(BASE_URL, 30.0)


def container_id(instance: Instance, component: str) -> str:
    return str(engine.container(instance, component).id)


def run(instance: Instance, component: str, argv: list[str]) -> tuple[int, str]:
    container = engine.container(instance, component)
    code, output = container.exec_run(argv)
    if not output:
        # The engine at times loses a short exec's output (moby#27289); every command
        # here is a read, so running it again is harmless.
        code, output = container.exec_run(argv)
    return int(code), output.decode("utf-8", "replace")


def test_every_component_runs_its_own_image(fleet: Fleet) -> None:
    instance = fleet.instances[0]
    for component in COMPONENTS:
        item = engine.container(instance, component)
        assert item.attrs["Config"]["Image"] == fleet.image_tags[component]
        labels = item.image.labels
        assert labels[f"{images.FLEET_LABEL}.component"] == component
        env = {k: v for k, _, v in (e.partition("=") for e in item.attrs["Config"]["Env"])}
        assert env["PATH"] == images.SPECS_BY_COMPONENT[component].path
        # The stand-ins' runtime is started by absolute path, never found through PATH.
        assert images.HOST_PREFIX not in env["PATH"] and "/fleet" not in env["PATH"]


@pytest.mark.parametrize("component", [c for c in COMPONENTS])
def test_the_healthcheck_docker_runs_works_there(fleet: Fleet, component: str) -> None:
    instance = fleet.instances[0]
    check = engine.container(instance, component).attrs["Config"].get("Healthcheck")
    if not check or not check.get("Test"):
        assert images.SPECS_BY_COMPONENT[component].healthcheck is None
        pytest.skip(f"{component} has no healthcheck, as in the reference")
    kind, *command = check["Test"]
    argv = ["sh", "-c", command[0]] if kind == "CMD-SHELL" else command
    code, output = run(instance, component, argv)
    assert code == 0, output
    if component == "kong":
        # The image's own HEALTHCHECK: Kong 2.8.1's `kong health` and its words.
        assert check["Test"] == ["CMD-SHELL", "kong health"]
        assert output == "nginx.......running\n\nKong is healthy at /usr/local/kong\n"


@pytest.mark.parametrize("component", [c for c in COMPONENTS])
def test_commands_the_real_image_lacks_fail_as_in_production(fleet: Fleet,
                                                             component: str) -> None:
    instance = fleet.instances[0]
    for command in ABSENT[component]:
        code, output = run(instance, component, [command, "--version"])
        # runc's "executable file not found in $PATH" is exit code 126 or 127.
        assert code in (126, 127), f"{command} runs in {component}: {output}"
        assert "not found" in output, output


def test_the_doctor_probe_tools_are_busybox_applets(fleet: Fleet) -> None:
    instance = fleet.instances[0]
    for component, tools in PROBE_TOOLS.items():
        code, output = run(instance, component,
                           ["sh", "-c", 'for t in "$@"; do readlink "$(command -v "$t")"; done',
                            "sh", *tools])
        assert code == 0, output
        assert output.split() == ["/bin/busybox"] * len(tools), (component, output)


def test_the_doctor_probes_work_with_the_real_images_tools(fleet: Fleet,
                                                           docker_host: DockerHost) -> None:
    instance = fleet.instances[0]
    targets = [HttpTarget("auth", "http://auth:9999/health"),
               HttpTarget("rest", "http://rest:3000/"),
               HttpTarget("meta", "http://meta:8080/health"),
               HttpTarget("closed", "http://db:9/"),
               HttpTarget("nowhere", "http://no-such-service:80/")]
    for runner in PROBE_TOOLS:
        run_ = probe_http(docker_host, container_id(instance, runner), runner, targets, 5.0)
        assert run_.usable, run_.error
        outcomes = run_.outcomes
        assert outcomes["auth"].http_status == 200, outcomes
        assert outcomes["rest"].http_status == 200, outcomes
        assert outcomes["meta"].http_status == 200, outcomes
        assert outcomes["closed"].error == "refused", outcomes
        assert outcomes["nowhere"].error == "dns", outcomes
    up = probe_tcp(docker_host, container_id(instance, "auth"), "db", 5432, 5.0)
    assert (up.tool, up.reachable) == ("nc", True), up
    down = probe_tcp(docker_host, container_id(instance, "auth"), "db", 9, 5.0)
    assert (down.tool, down.reachable) == ("nc", False), down
    assert "refused" in down.detail


def test_kong_health_reports_as_kong_does(fleet: Fleet) -> None:
    instance = fleet.instances[0]
    code, output = run(instance, "kong", ["kong", "health", "-p", "/nonexistent"])
    assert code == 1
    assert output == ("Error: no such prefix: /nonexistent\n\n"
                      "  Run with --v (verbose) or --vv (debug) for more details\n")
    code, output = run(instance, "kong", ["kong", "health", "--prefix", "/tmp"])
    assert code == 1 and output.startswith("Error: Kong is not running at /tmp\n")
    assert run(instance, "kong", ["kong", "version"]) == (0, "2.8.1\n")


def test_the_db_is_supabase_postgres(fleet: Fleet) -> None:
    instance = fleet.instances[0]
    with engine.db_connect(instance) as conn:
        roles = dict(conn.execute(
            "SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN "
            "('postgres', 'supabase_admin')").fetchall())
        assert roles == {"postgres": False, "supabase_admin": True}
        (owner,) = conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace "
                                "WHERE nspname = 'auth'").fetchone() or (None,)
        assert owner == "supabase_admin"
        (table_owner,) = conn.execute("SELECT tableowner FROM pg_tables WHERE "
                                      "schemaname = 'auth' AND tablename = 'users'"
                                      ).fetchone() or (None,)
        assert table_owner == "supabase_auth_admin"
        assert conn.execute("SHOW log_line_prefix").fetchone() == ("%h %m [%p] %q%u@%d ",)
        assert conn.execute("SHOW hba_file").fetchone() == ("/etc/postgresql/pg_hba.conf",)
    # postgres logs in with the instance password and reads, as on the real image.
    with engine.db_connect(instance, user="postgres") as conn:
        assert conn.execute("SELECT count(*) FROM auth.users").fetchone() is not None
    # pg_hba: trust on 127.0.0.1 inside the container, scram everywhere else.
    code, output = run(instance, "db", ["psql", "-h", "127.0.0.1", "-U", "postgres", "-At",
                                        "-c", "SELECT current_user"])
    assert (code, output.strip()) == (0, "postgres")
    # From the host (through the bridge) a password is asked for. Leaving without one logs
    # nothing on the server (no FATAL line for the other tests' log checks to find).
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(host="127.0.0.1", port=instance.ports.postgres_ext, user="postgres",
                        dbname="postgres", connect_timeout=5, passfile="/nonexistent")
