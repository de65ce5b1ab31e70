"""api_endpoints against a Kong 2.8 fake answering through httpx.MockTransport."""

from __future__ import annotations

import json
import time

import httpx

from exporter.checks.base import Findings, status_of
from exporter.checks.endpoints import ApiEndpointsCheck
from exporter.config import Thresholds
from exporter.discovery.model import Instance
from exporter.issues import make_issue
from exporter.redaction import fingerprint
from tests.unit.checks.support import (
    ANON,
    DASH_PASSWORD,
    SERVICE,
    FakeKong,
    FakePostgREST,
    codes,
    key,
    make_context,
    make_instance,
    only,
    proxied,
    weak_key,
)


def run(kong: FakeKong | None, *, instance: Instance | None = None,
        thresholds: Thresholds | None = None) -> Findings:
    ctx = make_context(instance or make_instance(), kong, thresholds=thresholds)
    return ApiEndpointsCheck().run(ctx)


def assert_no_secrets(findings: Findings) -> None:
    text = json.dumps([i.to_dict() for i in findings.issues]) + json.dumps(findings.details)
    for secret in (ANON, SERVICE, DASH_PASSWORD):
        assert secret not in text


def test_a_healthy_gateway_gives_latency_per_endpoint_and_no_issue() -> None:
    kong = FakeKong()
    findings = run(kong)
    assert findings.issues == ()
    endpoints = findings.details["endpoints"]
    assert set(endpoints) == {"auth", "rest", "storage", "studio"}
    for name, status in (("auth", 200), ("rest", 200), ("storage", 200), ("studio", 307)):
        assert endpoints[name]["status"] == status
        assert endpoints[name]["kong_error"] is None
        assert endpoints[name]["origin"] == "upstream"
        assert endpoints[name]["latency_seconds"] >= 0
    assert sorted(kong.paths()) == [("GET", "/"), ("GET", "/auth/v1/health"),
                                    ("GET", "/rest/v1/"), ("GET", "/storage/v1/status")]
    studio = next(r for r in kong.requests if r.url.path == "/")
    assert studio.headers["authorization"].startswith("Basic ")
    auth = next(r for r in kong.requests if r.url.path == "/auth/v1/health")
    assert auth.headers["apikey"] == ANON
    # As supabase-js: the anon key is the Bearer token too, which PostgREST verifies.
    rest = next(r for r in kong.requests if r.url.path == "/rest/v1/")
    assert (rest.headers["apikey"], rest.headers["authorization"]) == (ANON, f"Bearer {ANON}")


def test_postgrest_refusing_the_anon_key_is_an_outage_for_every_client() -> None:
    short = "jwt_secret_key_123"
    anon, service = weak_key("anon", short), weak_key("service_role", short)
    kong = FakeKong(keys=(anon, service), upstreams={"rest": FakePostgREST(short)})
    findings = run(kong, instance=make_instance(jwt_secret=short, anon_key=anon,
                                                service_role_key=service))
    issue = only(findings.issues, "REST_JWT_REJECTED")
    assert issue.component == "rest" and issue.severity == "critical"
    assert issue.repair is None
    assert issue.evidence["status"] == 401 and issue.evidence["origin"] == "upstream"
    assert issue.evidence["postgrest_code"] == "PGRST301"
    assert issue.evidence["postgrest_message"] == "JWSError JWSInvalidSignature"
    assert issue.message == (f"PostgREST rejects the anon key ({fingerprint(anon)}) on "
                             "/rest/v1/: 401 PGRST301 JWSError JWSInvalidSignature")
    assert codes(findings.issues) == ["REST_JWT_REJECTED"]
    assert anon not in json.dumps(issue.to_dict())


def test_a_refused_gateway_is_one_unreachable_issue_on_kong() -> None:
    findings = run(None)
    assert codes(findings.issues) == ["GATEWAY_UNREACHABLE"]
    issue = findings.issues[0]
    assert issue.component == "kong" and issue.severity == "critical"
    assert set(issue.evidence["routes"]) == {"/auth/v1/health", "/rest/v1/",
                                             "/storage/v1/status", "/"}
    assert findings.details["endpoints"]["auth"]["error"] == "refused"
    assert status_of(findings) == "failed"


def test_kong_rejecting_the_anon_key_names_the_key_routes_and_kong_yml_drift() -> None:
    stale = key("anon", "an-older-secret-that-kong-yml-still-has-0123")
    drift = make_issue("CONFIG_DRIFT", check="discovery", message="drift", evidence={
        "credentials": {"anon_key": {"kong_file": fingerprint(stale),
                                     "runtime:kong": fingerprint(ANON)}}, "ports": {}})
    kong = FakeKong(keys=(stale, SERVICE))
    findings = run(kong, instance=make_instance(problems=(drift,)))
    issue = only(findings.issues, "GATEWAY_KEY_REJECTED")
    assert issue.component == "kong"
    assert issue.evidence["credential"] == "anon_key"
    assert issue.evidence["fingerprint"] == fingerprint(ANON)
    assert issue.evidence["source"] == "runtime:kong"
    assert issue.evidence["routes"] == ["/auth/v1/health", "/rest/v1/"]
    assert issue.evidence["kong_messages"] == ["Invalid authentication credentials"]
    assert issue.evidence["kong_file_fingerprint"] == fingerprint(stale)
    assert issue.evidence["kong_file_differs"] is True
    assert "kong.yml holds a different value" in issue.message
    assert findings.details["endpoints"]["auth"]["kong_error"] == "key_rejected"
    assert codes(findings.issues) == ["GATEWAY_KEY_REJECTED"]  # storage/studio still fine
    assert_no_secrets(findings)


def test_without_drift_a_rejected_key_points_at_kongs_running_config() -> None:
    findings = run(FakeKong(keys=(SERVICE,)))
    issue = only(findings.issues, "GATEWAY_KEY_REJECTED")
    assert issue.evidence["kong_file_differs"] is False
    assert "running Kong config differs" in issue.message


def test_wrong_dashboard_credentials_are_a_rejected_key_on_studio() -> None:
    findings = run(FakeKong(dashboard=("supabase", "another-password")))
    issue = only(findings.issues, "GATEWAY_KEY_REJECTED")
    assert issue.evidence["credential"] == "dashboard_password"
    assert issue.evidence["routes"] == ["/"]
    assert issue.evidence["username"] == "supabase"
    assert_no_secrets(findings)


def test_kong_unable_to_resolve_an_upstream_blames_that_upstream() -> None:
    findings = run(FakeKong(upstreams={"rest": None}))
    issue = only(findings.issues, "GATEWAY_UPSTREAM_ERROR")
    assert issue.component == "rest"
    assert issue.evidence["status"] == 503
    assert issue.evidence["kong_message"] == "name resolution failed"
    assert issue.evidence["kind"] == "upstream_unavailable"
    assert codes(findings.issues) == ["GATEWAY_UPSTREAM_ERROR"]


def test_kong_502_from_auth_blames_auth() -> None:
    def broken(request: httpx.Request, path: str) -> httpx.Response:
        return httpx.Response(502, headers={"Server": "kong/2.8.1", "Via": "kong/2.8.1"},
                              json={"message": "An invalid response was received from the "
                                               "upstream server"})
    issue = only(run(FakeKong(upstreams={"auth": broken})).issues, "GATEWAY_UPSTREAM_ERROR")
    assert issue.component == "auth"


def test_an_upstream_answering_500_itself_is_that_components_fault_not_kongs() -> None:
    def postgrest(request: httpx.Request, path: str) -> httpx.Response:
        return proxied(503, {"code": "PGRST002", "details": None, "hint": None,
                             "message": "Could not query the database for the schema cache."})
    findings = run(FakeKong(upstreams={"rest": postgrest}))
    issue = only(findings.issues, "COMPONENT_UNHEALTHY")
    assert issue.component == "rest"
    assert issue.evidence["origin"] == "upstream"
    assert "GATEWAY_UPSTREAM_ERROR" not in codes(findings.issues)


def test_one_hanging_upstream_is_an_upstream_error_all_hanging_means_kong_hangs() -> None:
    def hang(request: httpx.Request, path: str) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    findings = run(FakeKong(upstreams={"storage": hang}))
    issue = only(findings.issues, "GATEWAY_UPSTREAM_ERROR")
    assert issue.component == "storage" and issue.evidence["kind"] == "timeout"

    def everything_hangs(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    findings = ApiEndpointsCheck().run(make_context(make_instance(), everything_hangs))
    assert codes(findings.issues) == ["GATEWAY_UNREACHABLE"]


def test_a_slow_endpoint_is_reported_with_kongs_timing_headers() -> None:
    def slow_studio(request: httpx.Request, path: str) -> httpx.Response:
        time.sleep(0.06)
        return proxied(307, text="", upstream_ms=60)

    findings = run(FakeKong(upstreams={"studio": slow_studio}),
                   thresholds=Thresholds(endpoint_slow_seconds=0.05))
    issue = only(findings.issues, "ENDPOINT_SLOW")
    assert issue.component == "studio" and issue.severity == "warning"
    assert issue.evidence["latency_seconds"] >= 0.05
    assert issue.evidence["kong_latency_ms"]["upstream"] == 60
    assert status_of(findings) == "degraded"


def test_kong_without_a_route_blames_kongs_config() -> None:
    def no_route(request: httpx.Request, path: str) -> httpx.Response:
        return httpx.Response(404, json={"message": "no Route matched with those values"},
                              headers={"Server": "kong/2.8.1"})
    issue = only(run(FakeKong(upstreams={"storage": no_route})).issues,
                 "GATEWAY_UPSTREAM_ERROR")
    assert issue.component == "kong" and issue.evidence["kind"] == "no_route"


def test_unknown_credentials_skip_their_routes_instead_of_blaming_the_gateway() -> None:
    kong = FakeKong()
    findings = run(kong, instance=make_instance(anon_key=None, dashboard=None))
    assert findings.issues == ()
    assert set(findings.details["endpoints"]) == {"storage"}
    assert set(findings.details["not_probed"]) == {"auth", "rest", "studio"}
    assert kong.paths() == [("GET", "/storage/v1/status")]


def test_no_gateway_url_skips_the_check() -> None:
    findings = run(FakeKong(), instance=make_instance(gateway_url=None))
    assert findings.skipped and status_of(findings) == "skipped"
