"""Kong's cached upstream address: api_endpoints and auth_service tell it from a broken service.

Plain data: an instance whose containers carry their addresses, a DockerHost answering the
in-network probe and Kong's log from Python data, and Kong 2.8 faked through
httpx.MockTransport (tests.unit.checks.support.FakeKong).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import httpx
import pytest

from exporter.checks.auth import AuthServiceCheck
from exporter.checks.base import DOWN_PATH_TIMEOUT_SECONDS, CheckContext
from exporter.checks.endpoints import ApiEndpointsCheck
from exporter.checks.upstream import last_proxied_address, upstream_view
from exporter.discovery.model import Instance
from exporter.dockerhost import ContainerSummary, ExecResult
from exporter.issues import make_issue
from exporter.rootcause import find_root_cause
from tests.unit.checks import support
from tests.unit.checks.plainhost import (
    NETWORK,
    ScriptedDocker,
    container,
    context,
    healthy,
    make_instance,
    probe_reply,
)

OLD, NEW = "172.18.0.5", "172.18.0.9"


def kong_line(path: str, address: str, text: str = "connect() failed (113: Host is "
              "unreachable) while connecting to upstream") -> str:
    """A Kong [error] line as `docker logs --timestamps` returns it."""
    return (f"2026-03-01T11:59:00.000000000Z 2026/03/01 11:59:00 [error] 1#0: *7 {text}, "
            f'client: 172.18.0.1, server: kong, request: "GET {path} HTTP/1.1", '
            f'upstream: "http://{address}/health", host: "127.0.0.1:8100"')


class KongHost(ScriptedDocker):
    """The probe's answers per component and Kong's log lines, from plain data."""

    def __init__(self, inside: Mapping[str, tuple[int | None, str]],
                 kong_log: list[str] | None = None) -> None:
        render = probe_reply(inside)
        super().__init__(exec_handler=lambda cid, argv: ExecResult(0, render(argv)))
        self.kong_log = kong_log or []
        self.log_reads = 0

    def logs(self, container_id: str, since: float, tail: int) -> list[str]:
        self.log_reads += 1
        return self.kong_log[-tail:]


def at(c: ContainerSummary | None, address: str) -> ContainerSummary | None:
    """The container with its address on the instance network."""
    return None if c is None else replace(c, addresses={NETWORK: address})


def instance(auth_state: str = "running", auth_address: str = NEW) -> Instance:
    """Every component running (auth as given), the fixture's keys and gateway."""
    containers = {name: at(c, f"172.18.0.{n + 2}")
                  for n, (name, c) in enumerate(healthy().items())}
    containers["auth"] = at(container("auth", state=auth_state), auth_address)
    keys = support.make_instance().credentials
    return replace(make_instance(containers), credentials=keys)


def gateway(auth: support.Upstream) -> httpx.Client:
    """Kong faked with the given auth upstream; the others answer."""
    return httpx.Client(transport=httpx.MockTransport(support.FakeKong(upstreams={"auth": auth})),
                        timeout=2.0)


def hangs(request: httpx.Request, path: str) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def refused_502(request: httpx.Request, path: str) -> httpx.Response:
    return httpx.Response(502, json={"message": "An invalid response was received from the "
                                                "upstream server"},
                          headers={"Server": "openresty", "Via": support.KONG,
                                   "X-Kong-Upstream-Latency": "1",
                                   "X-Kong-Proxy-Latency": "15000"})


def not_found(request: httpx.Request, path: str) -> httpx.Response:
    return support.kong_error(503, "name resolution failed")


def ctx_for(inst: Instance, docker: KongHost, auth: support.Upstream) -> CheckContext:
    return context(inst, docker, http=gateway(auth))


def test_kong_proxying_to_an_old_address_is_a_stale_route_on_kong() -> None:
    docker = KongHost({"auth": (200, "-")}, [kong_line("/auth/v1/health", f"{OLD}:9999")])
    findings = ApiEndpointsCheck().run(ctx_for(instance(), docker, hangs))
    assert [i.code for i in findings.issues] == ["GATEWAY_UPSTREAM_STALE"]
    stale = findings.issues[0]
    assert stale.component == "kong" and stale.repair == "restart_component"
    assert stale.evidence["kind"] == "stale_address"
    assert stale.evidence["kong_address"] == f"{OLD}:9999"
    assert stale.evidence["upstream_address"] == NEW
    assert stale.evidence["in_network_probe"]["http_status"] == 200
    assert stale.evidence["in_network_probe"]["from"] == "kong"
    assert f"{OLD}:9999, an old address of auth (now {NEW})" in stale.message


def test_a_502_without_kong_log_lines_is_stale_on_the_probe_alone() -> None:
    docker = KongHost({"auth": (200, "-")})
    findings = ApiEndpointsCheck().run(ctx_for(instance(), docker, refused_502))
    stale = next(i for i in findings.issues if i.code == "GATEWAY_UPSTREAM_STALE")
    assert stale.evidence["kong_address"] is None
    assert "an address auth no longer has" in stale.message
    assert docker.log_reads == 1


def test_a_timeout_without_kongs_address_is_not_called_stale() -> None:
    """A slow service on a loaded host also times out through Kong while answering the
    probe: without Kong's logged address, the service is blamed as before."""
    docker = KongHost({"auth": (200, "-")})
    findings = ApiEndpointsCheck().run(ctx_for(instance(), docker, hangs))
    assert [(i.code, i.component) for i in findings.issues] == [
        ("GATEWAY_UPSTREAM_ERROR", "auth")]
    assert docker.log_reads == 1


def test_a_not_found_answer_kong_still_holds_is_stale() -> None:
    docker = KongHost({"auth": (200, "-")})
    findings = ApiEndpointsCheck().run(ctx_for(instance(), docker, not_found))
    stale = next(i for i in findings.issues if i.code == "GATEWAY_UPSTREAM_STALE")
    assert stale.evidence["kind"] == "stale_not_found"
    assert "'not found' answer" in stale.message


def test_kong_using_the_current_address_blames_the_service() -> None:
    docker = KongHost({"auth": (200, "-")}, [kong_line("/auth/v1/health", f"{NEW}:9999")])
    findings = ApiEndpointsCheck().run(ctx_for(instance(), docker, hangs))
    issue = next(i for i in findings.issues if i.code == "GATEWAY_UPSTREAM_ERROR")
    assert issue.component == "auth"
    assert "hangs behind the gateway" in issue.message


def test_a_service_that_hangs_inside_too_is_not_kongs_cache() -> None:
    docker = KongHost({"auth": (None, "timeout")})
    findings = ApiEndpointsCheck().run(ctx_for(instance(), docker, hangs))
    assert [(i.code, i.component) for i in findings.issues] == [
        ("GATEWAY_UPSTREAM_ERROR", "auth")]
    assert docker.log_reads == 0  # no answer inside: Kong's log is not needed


def test_a_probe_that_cannot_run_proves_nothing() -> None:
    docker = KongHost({})
    docker.exec_handler = lambda cid, argv: ExecResult(127, "sh: not found")
    findings = ApiEndpointsCheck().run(ctx_for(instance(), docker, hangs))
    assert [(i.code, i.component) for i in findings.issues] == [
        ("GATEWAY_UPSTREAM_ERROR", "auth")]


def test_a_stopped_service_behind_kongs_cache_is_worded_as_stopped() -> None:
    """Kong keeps the stopped container's address: a timeout, not a 503 (D1a).

    The request is still sent, but waited for briefly: the listing already says auth is down.
    """
    waits: list[object] = []  # of the requests to auth's routes

    def hangs_noting_the_wait(request: httpx.Request, path: str) -> httpx.Response:
        if request.url.path.startswith("/auth/"):
            waits.append(request.extensions["timeout"]["read"])
        return hangs(request, path)

    docker = KongHost({})
    inst = instance(auth_state="exited")
    findings = ApiEndpointsCheck().run(ctx_for(inst, docker, hangs_noting_the_wait))
    issue = next(i for i in findings.issues if i.code == "GATEWAY_UPSTREAM_ERROR")
    assert issue.component == "auth"
    assert issue.message == ("/auth/v1/health: auth is not running (exited); through the "
                             "gateway: no answer within 1s")
    assert docker.execs == []
    auth = AuthServiceCheck().run(ctx_for(inst, docker, hangs_noting_the_wait))
    unhealthy = next(i for i in auth.issues if i.code == "AUTH_UNHEALTHY")
    assert unhealthy.message.startswith("GoTrue is not running (exited); through the gateway "
                                        "it did not answer /auth/v1/health within 1s")
    assert waits and set(waits) == {DOWN_PATH_TIMEOUT_SECONDS}
    waits.clear()
    AuthServiceCheck().run(ctx_for(instance(), docker, hangs_noting_the_wait))
    assert waits and set(waits) == {2.0}  # a running auth gets the full timeout
    stopped = make_issue("CONTAINER_NOT_RUNNING", check="container_status", component="auth",
                         message="supabase-auth-abcd1234 has exited with code 0")
    root = find_root_cause([*findings.issues, *auth.issues, stopped])
    assert root is not None and root.issue.code == "CONTAINER_NOT_RUNNING"


def test_auth_service_does_not_call_a_healthy_gotrue_unhealthy_behind_a_stale_kong() -> None:
    docker = KongHost({"auth": (200, "-")}, [kong_line("/auth/v1/health", f"{OLD}:9999")])
    ctx = ctx_for(instance(), docker, hangs)
    auth = AuthServiceCheck().run(ctx)
    assert "AUTH_UNHEALTHY" not in [i.code for i in auth.issues]
    assert auth.details["health"]["kong_route_stale"] is True
    assert auth.details["synthetic_user"]["ran"] is False
    assert "outdated address" in auth.details["synthetic_user"]["reason"]
    endpoints = ApiEndpointsCheck().run(ctx)
    root = find_root_cause([*auth.issues, *endpoints.issues])
    assert root is not None
    assert (root.issue.code, root.issue.component) == ("GATEWAY_UPSTREAM_STALE", "kong")
    # One probe and one log read serve both checks.
    assert len(docker.execs) == 1 and docker.log_reads == 1


def test_the_view_is_computed_once_per_diagnostic() -> None:
    docker = KongHost({"auth": (200, "-")})
    ctx = ctx_for(instance(), docker, hangs)
    assert upstream_view(ctx, "auth") is upstream_view(ctx, "auth")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("/auth/v1/", "172.18.0.5:9999"), ("/rest/v1/", "172.18.0.8:3000"),
     ("/storage/v1/", None)],
)
def test_the_last_address_kong_logged_for_a_route(prefix: str, expected: str | None) -> None:
    lines = [kong_line("/auth/v1/health", "172.18.0.4:9999"),
             kong_line("/rest/v1/", "172.18.0.8:3000"),
             "2026-03-01T11:59:01Z 2026/03/01 11:59:01 [debug] 1#0: *9 [lua] init.lua:1006: "
             "balancer(): setting address (try 1): 172.18.0.6:9999",
             kong_line("/auth/v1/settings", "172.18.0.5:9999",
                       "epoll_wait() reported that client prematurely closed connection, so "
                       "upstream connection is closed too while connecting to upstream"),
             kong_line("/", "172.18.0.7:3000")]
    assert last_proxied_address(lines, prefix) == expected
