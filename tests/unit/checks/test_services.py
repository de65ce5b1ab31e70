"""service_health: exec answers from plain data, the gateway on a real 127.0.0.1 socket, and
the real probe script run as a local process against real local HTTP servers."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.checks.probes import HTTP_PROBE_SCRIPT, HttpTarget, probe_http
from exporter.checks.services import HTTP_PROBES, ServiceHealthCheck
from exporter.dockerhost import ExecResult
from tests.unit.checks.plainhost import (
    Answers,
    LocalExec,
    Ports,
    ScriptedDocker,
    busybox_path,
    codes,
    container,
    context,
    http_server,
    make_instance,
    only,
    probe_reply,
    with_container,
)


@pytest.fixture
def gateway() -> Iterator[int]:
    """A real HTTP server standing in for kong's published port (answers 404 like Kong)."""
    with http_server(Answers(default=404)) as port:
        yield port


def scripted(replies: dict[str, tuple[int | None, str]] | None = None,
             by_container: dict[str, dict[str, tuple[int | None, str]]] | None = None
             ) -> ScriptedDocker:
    """A docker whose exec answers like the probe script would."""
    def handler(container_id: str, argv: list[str]) -> ExecResult:
        table = (by_container or {}).get(container_id, replies or {})
        return ExecResult(0, probe_reply(table)(argv))
    return ScriptedDocker(exec_handler=handler)


def test_all_up_in_one_exec_in_kong(gateway: int) -> None:
    instance = make_instance(ports=Ports(gateway=gateway))
    docker = scripted()
    findings = ServiceHealthCheck().run(context(instance, docker))
    assert findings.issues == () and findings.skipped is None
    assert len(docker.execs) == 1
    container_id, argv = docker.execs[0]
    assert container_id == instance.components["kong"].container.id  # type: ignore[union-attr]
    assert argv[:3] == ["sh", "-c", HTTP_PROBE_SCRIPT]
    # The script is a constant; every value is a separate argument, none option-like.
    assert not any(a.startswith("-") for a in argv[3:])
    urls = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert set(urls) == set(HTTP_PROBES)
    assert urls["auth"] == "http://auth:9999/health"
    assert urls["realtime"] == ("http://realtime-dev.supabase-realtime-abcd1234:4000"
                                "/api/tenants/realtime/health")
    comps = findings.details["components"]
    assert comps["kong"]["up"] is True and comps["kong"]["http_status"] == 404
    assert comps["auth"] == {"up": True, "http_status": 200, "latency_seconds": 0.02,
                             "state": "running", "docker_health": "healthy", "probed": True}
    # db and vector have no HTTP probe: Docker's healthcheck decides.
    assert comps["db"]["up"] is True and comps["db"]["probed"] is False


def test_server_error_unhealthy_and_refused_unreachable(gateway: int) -> None:
    instance = make_instance(ports=Ports(gateway=gateway))
    docker = scripted({"storage": (503, "-"), "meta": (None, "refused")})
    findings = ServiceHealthCheck().run(context(instance, docker))
    assert codes(findings.issues) == ["COMPONENT_UNHEALTHY", "COMPONENT_UNREACHABLE"]
    unhealthy = only(findings.issues, "COMPONENT_UNHEALTHY")
    assert unhealthy.component == "storage" and unhealthy.evidence["http_status"] == 503
    unreachable = only(findings.issues, "COMPONENT_UNREACHABLE")
    assert unreachable.component == "meta" and unreachable.evidence["error"] == "refused"
    assert unreachable.evidence["probed_from"] == "inside the kong container"
    assert findings.details["components"]["storage"]["up"] is False


def test_not_running_components_are_neither_probed_nor_reported(gateway: int) -> None:
    instance = with_container(make_instance(ports=Ports(gateway=gateway)), "storage",
                              container("storage", state="exited"))
    instance = with_container(instance, "rest", container("rest", state="paused"))
    docker = scripted()
    findings = ServiceHealthCheck().run(context(instance, docker))
    assert findings.issues == ()
    probed = docker.execs[0][1][5::2]
    assert "storage" not in probed and "rest" not in probed
    assert findings.details["components"]["storage"]["up"] is False


def test_db_unhealthy_in_docker_is_down_but_left_to_container_status(gateway: int) -> None:
    instance = with_container(make_instance(ports=Ports(gateway=gateway)), "db",
                              container("db", status="Up 1 hour (unhealthy)"))
    findings = ServiceHealthCheck().run(context(instance, scripted()))
    assert findings.issues == ()
    assert findings.details["components"]["db"]["up"] is False


def test_probe_runs_in_auth_when_kong_is_down() -> None:
    instance = with_container(make_instance(), "kong", container("kong", state="exited"))
    docker = scripted()
    findings = ServiceHealthCheck().run(context(instance, docker))
    assert findings.issues == ()
    assert docker.execs[0][0] == instance.components["auth"].container.id  # type: ignore[union-attr]
    assert findings.details["probe"]["ran_in"] == "auth"


def test_nothing_answering_from_kong_is_retried_from_auth(gateway: int) -> None:
    instance = make_instance(ports=Ports(gateway=gateway))
    kong_id = instance.components["kong"].container.id  # type: ignore[union-attr]
    auth_id = instance.components["auth"].container.id  # type: ignore[union-attr]
    all_dns: dict[str, tuple[int | None, str]] = {name: (None, "dns") for name in HTTP_PROBES}
    docker = scripted(by_container={kong_id: all_dns, auth_id: {"imgproxy": (None, "timeout")}})
    findings = ServiceHealthCheck().run(context(instance, docker))
    # kong's own network was the problem: only what auth cannot reach either is reported.
    assert [c for c, _ in docker.execs] == [kong_id, auth_id]
    issue = only(findings.issues, "COMPONENT_UNREACHABLE")
    assert issue.component == "imgproxy" and len(findings.issues) == 1


def test_no_runner_skips_the_in_network_part(gateway: int) -> None:
    instance = make_instance(ports=Ports(gateway=gateway))
    for name in ("kong", "auth"):
        instance = with_container(instance, name, container(name, state="exited"))
    docker = scripted()
    findings = ServiceHealthCheck().run(context(instance, docker))
    assert docker.execs == [] and findings.issues == ()
    assert findings.skipped == "neither kong nor auth runs to probe from"


def test_exec_failure_becomes_a_skip_reason(gateway: int) -> None:
    docker = ScriptedDocker(down=True)
    findings = ServiceHealthCheck().run(context(make_instance(ports=Ports(gateway=gateway)),
                                                docker))
    assert findings.issues == ()
    assert findings.skipped is not None and "exec failed" in findings.skipped
    assert findings.details["components"]["kong"]["up"] is True


def test_gateway_errors_on_the_published_port() -> None:
    with http_server(Answers(default=502)) as port:
        findings = ServiceHealthCheck().run(
            context(make_instance(ports=Ports(gateway=port)), scripted()))
    issue = only(findings.issues, "COMPONENT_UNHEALTHY")
    assert issue.component == "kong" and issue.evidence["http_status"] == 502
    assert "published gateway" in issue.evidence["probed_from"]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    findings = ServiceHealthCheck().run(
        context(make_instance(ports=Ports(gateway=closed)), scripted()))
    issue = only(findings.issues, "COMPONENT_UNREACHABLE")
    assert issue.component == "kong" and issue.evidence["error"] == "refused"


def test_docker_unreachable_is_skipped() -> None:
    docker = scripted()
    findings = ServiceHealthCheck().run(context(make_instance(runtime_known=False), docker))
    assert findings.skipped == "docker unreachable" and docker.execs == []


# ---- the real probe script, run locally --------------------------------------------------

def _tool_paths(tmp_path: Path) -> list[tuple[str, dict[str, str]]]:
    """Environments to run the script in: the system's tools, and busybox's when present."""
    out = []
    if shutil.which("wget") or shutil.which("curl"):
        out.append(("system", dict(os.environ)))
    busybox = busybox_path(tmp_path / "bb", ("sh", "wget", "timeout"))
    if busybox:
        out.append(("busybox", {"PATH": busybox}))
    return out


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a paused process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_probe_script_against_real_servers(tmp_path: Path, hanging_port: int) -> None:
    envs = _tool_paths(tmp_path)
    if not envs:
        pytest.skip("neither wget, curl nor busybox on this host")
    # Bound and never listening: connections are refused, and no other process on the
    # host can take the port while the test runs (a closed one could be).
    with socket.socket() as sock, \
            http_server(Answers(statuses={"/down": 503}, default=200)) as port:
        sock.bind(("127.0.0.1", 0))
        refused = sock.getsockname()[1]
        targets = [
            HttpTarget("okay", f"http://127.0.0.1:{port}/health"),
            HttpTarget("broken", f"http://127.0.0.1:{port}/down"),
            HttpTarget("closed", f"http://127.0.0.1:{refused}/"),
            HttpTarget("hung", f"http://127.0.0.1:{hanging_port}/"),
            HttpTarget("hung2", f"http://127.0.0.1:{hanging_port}/x"),
        ]
        for label, env in envs:
            shell = None if label == "system" else str(Path(env["PATH"]) / "sh")
            docker = LocalExec(path_env=env, shell=shell)
            started = time.monotonic()
            run = probe_http(docker, "local", "kong", targets, timeout=2.0)
            took = time.monotonic() - started
            assert run.usable, (label, run.error)
            got = {name: (o.http_status, o.error) for name, o in run.outcomes.items()}
            assert got["okay"] == (200, None), label
            assert got["broken"] == (503, None), label
            assert got["closed"] == (None, "refused"), label
            assert got["hung"] == (None, "timeout") and got["hung2"] == (None, "timeout"), label
            # Two hanging targets cost one wait (1 s, bounded at 2 s), not two.
            assert took < 3.5, (label, took)
            assert run.outcomes["okay"].latency_seconds is not None


def test_probe_script_without_any_tool_is_unusable_not_down(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    docker = LocalExec(path_env={"PATH": str(empty)}, shell=sh)
    run = probe_http(docker, "local", "kong", [HttpTarget("auth", "http://auth:9999/health")],
                     timeout=2.0)
    assert not run.usable and "neither wget nor curl" in (run.error or "")


def test_a_quick_name_lookup_failure_is_tried_once_more(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    flaky = tmp_path / "flaky-seen"
    # A wget whose resolver misses "flaky" once, never knows "gone", and is refused by
    # "closed": what busybox's wget prints in each case.
    (tools / "wget").write_text(f"""#!{sh}
for arg; do url=$arg; done
echo "$url" >> {calls}
case $url in
  *flaky*) if [ ! -e {flaky} ]; then : > {flaky}; echo "wget: bad address 'flaky:80'"; exit 1; fi;;
  *gone*) echo "wget: bad address 'gone:80'"; exit 1;;
  *closed*) echo "wget: can't connect to remote host: Connection refused"; exit 1;;
esac
echo "  HTTP/1.1 200 OK"
""")
    (tools / "wget").chmod(0o755)
    targets = [HttpTarget("flaky", "http://flaky:80/"), HttpTarget("gone", "http://gone:80/"),
               HttpTarget("closed", "http://closed:80/"), HttpTarget("fine", "http://fine:80/")]
    run = probe_http(LocalExec(path_env={"PATH": str(tools)}, shell=sh), "local", "kong",
                     targets, timeout=2.0)
    got = {name: (o.http_status, o.error) for name, o in run.outcomes.items()}
    assert got == {"flaky": (200, None), "gone": (None, "dns"), "closed": (None, "refused"),
                   "fine": (200, None)}
    asked = calls.read_text().split()
    assert sorted(asked) == sorted(["--version", *(t.url for t in targets),
                                    "http://flaky:80/", "http://gone:80/"])
