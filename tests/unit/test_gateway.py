"""Telling Kong's own answers from upstream answers, and calls through the gateway."""

from __future__ import annotations

import httpx
import pytest

from exporter.gateway import call, classify, kong_message

KONG_HEADERS = {"Server": "kong/2.8.1", "X-Kong-Response-Latency": "1",
                "Content-Type": "application/json; charset=utf-8"}
PROXIED = {"Via": "kong/2.8.1", "X-Kong-Upstream-Latency": "4", "X-Kong-Proxy-Latency": "0",
           "Content-Type": "application/json"}


@pytest.mark.parametrize(("status", "message", "kind"), [
    (401, "No API key found in request", "key_rejected"),
    (401, "Invalid authentication credentials", "key_rejected"),
    (403, "You cannot consume this service", "acl_denied"),
    (404, "no Route matched with those values", "no_route"),
    (502, "An invalid response was received from the upstream server",
     "upstream_unavailable"),
    (503, "name resolution failed", "upstream_unavailable"),
    (503, "failure to get a peer from the ring-balancer", "upstream_unavailable"),
    (504, "The upstream server is timing out", "upstream_unavailable"),
    (429, "API rate limit exceeded", "rate_limited"),
    (500, "An unexpected error occurred", "internal"),
])
def test_kongs_own_errors_are_named(status: int, message: str, kind: str) -> None:
    verdict = classify(status, KONG_HEADERS, {"message": message})
    assert verdict.origin == "kong"
    assert verdict.kong_error == kind
    assert verdict.message == message
    assert verdict.kong_version == "2.8.1"


def test_gotrues_own_rejection_through_kong_is_an_upstream_answer() -> None:
    body = {"code": 403, "error_code": "bad_jwt",
            "msg": "invalid JWT: unable to parse or verify signature, token signature is "
                   "invalid: signature is invalid"}
    verdict = classify(403, PROXIED, body)
    assert verdict.origin == "upstream"
    assert verdict.kong_error is None and verdict.message is None
    assert not verdict.kong_rejected_credentials


def test_postgrests_error_with_a_message_key_is_still_upstream() -> None:
    body = {"code": "PGRST002", "details": None, "hint": None,
            "message": "Could not query the database for the schema cache. Retrying."}
    verdict = classify(503, PROXIED, body)
    assert verdict.origin == "upstream"
    assert not verdict.upstream_unavailable


def test_a_proxy_error_after_an_upstream_attempt_carries_via_but_is_kongs() -> None:
    headers = {"Server": "openresty", "Via": "kong/2.8.1", "X-Kong-Upstream-Latency": "574"}
    body = {"message": "An invalid response was received from the upstream server"}
    verdict = classify(502, headers, body)
    assert verdict.origin == "kong"
    assert verdict.upstream_unavailable


def test_an_upstream_502_with_its_own_body_is_not_kongs() -> None:
    verdict = classify(502, PROXIED, {"message": "upstream said bad gateway"})
    assert verdict.origin == "upstream"
    assert verdict.kong_error is None


def test_a_proxied_upstream_using_a_kong_like_text_stays_upstream() -> None:
    # Only 502/503/504 after a proxy attempt are Kong's own pages; a 401 that was proxied is
    # the upstream's, even when its text is one Kong also uses.
    verdict = classify(401, PROXIED, {"message": "Unauthorized"})
    assert verdict.origin == "upstream" and not verdict.kong_rejected_credentials


def test_known_kong_bodies_are_recognised_with_kong_headers_switched_off() -> None:
    verdict = classify(401, {}, {"message": "No API key found in request"})
    assert (verdict.origin, verdict.kong_error) == ("kong", "key_rejected")
    assert verdict.kong_version is None


def test_kong_3_bodies_with_a_request_id_are_kongs() -> None:
    verdict = classify(401, {"Server": "kong/3.4.0"},
                       {"message": "Unauthorized", "request_id": "abc"})
    assert (verdict.origin, verdict.kong_error, verdict.kong_version) == (
        "kong", "key_rejected", "3.4.0")


def test_an_answer_without_any_kong_marker_is_of_unknown_origin() -> None:
    verdict = classify(200, {"Server": "nginx"}, None, "<html></html>")
    assert verdict.origin == "unknown"
    assert verdict.kong_error is None


def test_plain_text_kong_error_pages_are_recognised() -> None:
    assert kong_message(None, "The upstream server is timing out\n") == \
        "The upstream server is timing out"
    assert kong_message(None, "hello") is None
    assert kong_message({"message": "x", "code": 1}) is None


def test_kong_generated_success_is_not_an_error() -> None:
    verdict = classify(200, KONG_HEADERS, None)
    assert verdict.origin == "kong" and verdict.kong_error is None


def _client(handler: httpx.MockTransport) -> httpx.Client:
    return httpx.Client(transport=handler, timeout=1.0)


def test_call_sends_json_accept_measures_latency_and_reads_kong_timings() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"version": "v2.167.0"}, headers=PROXIED)

    result = call(_client(httpx.MockTransport(handler)), "GET", "http://127.0.0.1:8100/",
                  "/auth/v1/health", headers={"apikey": "k"})
    assert str(seen[0].url) == "http://127.0.0.1:8100/auth/v1/health"
    assert seen[0].headers["accept"] == "application/json"
    assert seen[0].headers["apikey"] == "k"
    assert result.ok and result.fault is None
    assert result.body_text("version") == "v2.167.0"
    assert result.kong_latency_ms == {"upstream": 4, "proxy": 0}
    assert result.latency_seconds >= 0
    summary = result.summary()
    assert summary["status"] == 200 and summary["origin"] == "upstream"
    assert summary["kong_error"] is None and summary["error"] is None


@pytest.mark.parametrize(("exc", "failure", "fault"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), "refused", "gateway_down"),
    (httpx.ConnectTimeout("timed out"), "connect_timeout", "gateway_down"),
    (httpx.ReadTimeout("timed out"), "read_timeout", "timeout"),
    (httpx.RemoteProtocolError("Server disconnected"), "error", "gateway_down"),
])
def test_transport_failures_become_calls_without_answer(exc: Exception, failure: str,
                                                        fault: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    result = call(_client(httpx.MockTransport(handler)), "GET", "http://127.0.0.1:1", "/x")
    assert not result.answered
    assert result.failure == failure
    assert result.fault == fault
    assert result.status is None and result.error
    assert result.summary()["latency_seconds"] is None
    assert result.summary()["error"] == failure


@pytest.mark.parametrize(("response", "fault"), [
    (httpx.Response(401, json={"message": "Invalid authentication credentials"},
                    headers=KONG_HEADERS), "kong_rejected"),
    (httpx.Response(403, json={"message": "You cannot consume this service"},
                    headers=KONG_HEADERS), "kong_rejected"),
    (httpx.Response(503, json={"message": "name resolution failed"}, headers=KONG_HEADERS),
     "upstream_unavailable"),
    (httpx.Response(404, json={"message": "no Route matched with those values"},
                    headers=KONG_HEADERS), "no_route"),
    (httpx.Response(500, json={"message": "An unexpected error occurred"},
                    headers=KONG_HEADERS), "kong_error"),
    (httpx.Response(500, json={"code": 500, "msg": "Database error"}, headers=PROXIED),
     "upstream_error"),
    (httpx.Response(404, json={"code": 404, "msg": "User not found"}, headers=PROXIED), None),
    # PostgREST refusing the caller's JWT: the service turned the token away itself
    (httpx.Response(401, json={"code": "PGRST301", "details": None, "hint": None,
                               "message": "JWSError JWSInvalidSignature"}, headers=PROXIED),
     "upstream_rejected"),
    (httpx.Response(307, headers={"Via": "kong/2.8.1", "Location": "/project/default"}),
     None),
])
def test_faults_name_the_failing_layer(response: httpx.Response, fault: str | None) -> None:
    result = call(_client(httpx.MockTransport(lambda request: response)), "GET",
                  "http://127.0.0.1:8100", "/x")
    assert result.fault == fault


def test_redirects_are_not_followed() -> None:
    hits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(request.url.path)
        return httpx.Response(307, headers={"Location": "/project/default", **PROXIED})

    result = call(_client(httpx.MockTransport(handler)), "GET", "http://127.0.0.1:8100", "/")
    assert hits == ["/"] and result.status == 307 and result.ok
