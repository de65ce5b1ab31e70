"""Calls through the instance's Kong gateway, and who produced each answer: Kong or upstream.

Kong 2.8 marks what it generates itself (plugin rejections, proxy errors) with
`Server: kong/<version>` and `X-Kong-Response-Latency`, and what it proxied with
`Via: kong/<version>` and `X-Kong-Upstream-Latency`. Its own error bodies are
`{"message": "..."}` with a small set of fixed texts. A proxy error raised after an upstream
attempt may carry `Via` as well, so for 502/503/504 the body decides.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import httpx

Origin = Literal["kong", "upstream", "unknown"]
KongError = Literal["key_rejected", "acl_denied", "no_route", "upstream_unavailable",
                    "rate_limited", "internal", "other"]
TransportFailure = Literal["refused", "connect_timeout", "read_timeout", "error"]
# Where a call through the gateway went wrong, from the caller's point of view.
Fault = Literal[
    "gateway_down",  # nothing (or nothing sane) answered on the gateway port
    "timeout",  # Kong took the connection, no answer within the timeout: upstream hangs
    "kong_rejected",  # Kong refused the credentials (key-auth, basic-auth, ACL)
    "upstream_unavailable",  # Kong answered 502/503/504: it could not reach the upstream
    "no_route",  # Kong has no route for the path
    "kong_error",  # any other error Kong produced itself
    "upstream_error",  # the upstream itself answered >= 500
    "upstream_rejected",  # the upstream itself refused the caller's token (401)
]

# Kong's own messages (lower case), from its key-auth, basic-auth and acl plugins, the
# router, the balancer and its error handler.
_KONG_MESSAGES: Mapping[str, KongError] = {
    "no api key found in request": "key_rejected",
    "invalid authentication credentials": "key_rejected",
    "unauthorized": "key_rejected",
    "you cannot consume this service": "acl_denied",
    "cannot identify the consumer, add an authentication plugin to use the acl plugin":
        "acl_denied",
    "no route matched with those values": "no_route",
    "an invalid response was received from the upstream server": "upstream_unavailable",
    "name resolution failed": "upstream_unavailable",
    "the upstream server is currently unavailable": "upstream_unavailable",
    "the upstream server is timing out": "upstream_unavailable",
    "the upstream server is timed out": "upstream_unavailable",
    "failure to get a peer from the ring-balancer": "upstream_unavailable",
    "api rate limit exceeded": "rate_limited",
    "an unexpected error occurred": "internal",
}
_KONG_ERRORS_BY_STATUS: Mapping[int, KongError] = {
    401: "key_rejected", 403: "acl_denied", 404: "no_route", 429: "rate_limited",
    500: "internal", 502: "upstream_unavailable", 503: "upstream_unavailable",
    504: "upstream_unavailable",
}
_PROXY_ERROR_STATUSES = frozenset({502, 503, 504})
_KONG_TOKEN = re.compile(r"\bkong/([0-9A-Za-z.\-]+)", re.IGNORECASE)
_BODY_KEYS = frozenset({"message", "request_id"})  # Kong 3 adds request_id
_MAX_TEXT = 300


@dataclass(frozen=True)
class GatewayVerdict:
    """Who produced an HTTP answer received from the gateway, and which Kong error it is."""

    status: int
    origin: Origin
    kong_error: KongError | None = None  # set when Kong itself answered with an error
    message: str | None = None  # Kong's own message, when Kong answered
    kong_version: str | None = None

    @property
    def kong_rejected_credentials(self) -> bool:
        """Kong refused the credentials (key-auth, basic-auth or ACL)."""
        return self.kong_error in ("key_rejected", "acl_denied")

    @property
    def upstream_unavailable(self) -> bool:
        """Kong could not get an answer from the route's upstream."""
        return self.kong_error == "upstream_unavailable"


def kong_message(body: Any, text: str = "") -> str | None:
    """The message of a body shaped like Kong's own error body, else None."""
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and set(body) <= _BODY_KEYS:
            return message
        return None
    stripped = text.strip()
    # Kong's plain-text error template is the bare message.
    return stripped if stripped.lower() in _KONG_MESSAGES else None


def classify(status: int, headers: Mapping[str, str], body: Any, text: str = "") -> GatewayVerdict:
    """Tell Kong's own answer from the upstream's, from status, headers and body."""
    lowered = {k.lower(): v for k, v in headers.items()}
    server, via = lowered.get("server", ""), lowered.get("via", "")
    server_kong = _KONG_TOKEN.search(server)
    via_kong = _KONG_TOKEN.search(via)
    version_match = server_kong or via_kong
    version = version_match.group(1) if version_match else None
    message = kong_message(body, text)
    known = message is not None and message.strip().lower() in _KONG_MESSAGES

    if server_kong or "x-kong-response-latency" in lowered:
        generated = True
    elif via_kong or "x-kong-upstream-latency" in lowered:
        # Proxied, unless Kong replaced a failed upstream attempt with its error page.
        generated = status in _PROXY_ERROR_STATUSES and known
    else:
        # Kong's headers can be switched off (KONG_HEADERS=off); its bodies stay.
        generated = known
    if generated:
        kong_error = _kong_error(status, message) if status >= 400 else None
        return GatewayVerdict(status, "kong", kong_error, message, version)
    origin: Origin = "upstream" if via_kong or "x-kong-upstream-latency" in lowered \
        else "unknown"
    return GatewayVerdict(status, origin, None, None, version)


def _kong_error(status: int, message: str | None) -> KongError:
    if message is not None:
        by_message = _KONG_MESSAGES.get(message.strip().lower())
        if by_message is not None:
            return by_message
    return _KONG_ERRORS_BY_STATUS.get(status, "other")



class CallSummary(TypedDict):
    """A call as check details show it."""

    status: int | None
    latency_seconds: float | None  # only for an answer
    origin: str | None  # who answered: kong or the upstream
    kong_error: str | None
    kong_message: str | None
    error: str | None  # why no answer came

@dataclass(frozen=True)
class GatewayCall:
    """One request through the gateway: the answer or why none came, and its latency."""

    method: str
    path: str
    latency_seconds: float
    status: int | None = None
    verdict: GatewayVerdict | None = None
    body: Any = None  # parsed JSON, when the answer was JSON
    failure: TransportFailure | None = None
    error: str | None = None  # transport error text (no secrets: only URL and reason)
    timeout_seconds: float | None = None  # the wait given, when the caller set one
    # Kong's timing headers, in milliseconds, when present
    kong_latency_ms: Mapping[str, int] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        """True when an HTTP answer arrived."""
        return self.verdict is not None

    @property
    def gateway_down(self) -> bool:
        """True when nothing accepted the connection on the gateway port."""
        return self.failure in ("refused", "connect_timeout")

    @property
    def ok(self) -> bool:
        """A 2xx or 3xx answer."""
        return self.status is not None and self.status < 400

    @property
    def fault(self) -> Fault | None:
        """Which layer failed, or None for an answer that is no fault (2xx, other 4xx)."""
        if self.failure == "read_timeout":
            return "timeout"
        if self.verdict is None:
            return "gateway_down"
        if self.verdict.origin == "kong" and self.verdict.kong_error is not None:
            if self.verdict.kong_rejected_credentials:
                return "kong_rejected"
            if self.verdict.upstream_unavailable:
                return "upstream_unavailable"
            if self.verdict.kong_error == "no_route":
                return "no_route"
            return "kong_error"
        if self.status is not None and self.status >= 500:
            return "upstream_error"
        if self.status == 401:
            return "upstream_rejected"
        return None

    def summary(self) -> CallSummary:
        """The call as shown in details: status, latency, who answered, Kong's error."""
        verdict = self.verdict
        return {
            "status": self.status,
            # Only answers have a latency worth plotting; a refusal or timeout has none.
            "latency_seconds": round(self.latency_seconds, 4) if self.answered else None,
            "origin": verdict.origin if verdict else None,
            "kong_error": verdict.kong_error if verdict else None,
            "kong_message": verdict.message if verdict and verdict.origin == "kong" else None,
            "error": self.failure,
        }

    def body_text(self, key: str) -> str | None:
        """A string field of a JSON object body, truncated."""
        if isinstance(self.body, Mapping):
            value = self.body.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)[:_MAX_TEXT]
        return None


def call(client: httpx.Client, method: str, base_url: str, path: str, *,
         headers: Mapping[str, str] | None = None, json_body: Any = None,
         params: Mapping[str, str | int] | None = None,
         auth: tuple[str, str] | None = None,
         timeout: float | None = None) -> GatewayCall:
    """Send one request through the gateway; never raises for a network or HTTP fault.

    timeout: the wait for this request (default: the client's).
    """
    url = base_url.rstrip("/") + path
    send_headers = {"Accept": "application/json", **(headers or {})}
    started = time.perf_counter()
    try:
        response = client.request(
            method, url, headers=send_headers, json=json_body, params=params, auth=auth,
            follow_redirects=False,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
    except httpx.ConnectTimeout as exc:
        return _failed(method, path, started, "connect_timeout", exc, timeout)
    except httpx.ConnectError as exc:
        return _failed(method, path, started, "refused", exc, timeout)
    except httpx.TimeoutException as exc:
        return _failed(method, path, started, "read_timeout", exc, timeout)
    except httpx.HTTPError as exc:
        return _failed(method, path, started, "error", exc, timeout)
    latency = time.perf_counter() - started
    body = _json(response)
    verdict = classify(response.status_code, response.headers, body,
                       response.text if body is None else "")
    return GatewayCall(method, path, latency, response.status_code, verdict, body,
                       kong_latency_ms=_kong_timings(response.headers), timeout_seconds=timeout)


def _failed(method: str, path: str, started: float, failure: TransportFailure,
            exc: Exception, timeout: float | None) -> GatewayCall:
    reason = str(exc).strip() or type(exc).__name__
    return GatewayCall(method, path, time.perf_counter() - started, failure=failure,
                       error=reason.splitlines()[0][:_MAX_TEXT], timeout_seconds=timeout)


def _json(response: httpx.Response) -> Any:
    content_type = response.headers.get("content-type", "")
    if "json" not in content_type and not response.content.lstrip().startswith(b"{"):
        return None
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _kong_timings(headers: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, key in (("x-kong-upstream-latency", "upstream"),
                      ("x-kong-proxy-latency", "proxy"),
                      ("x-kong-response-latency", "response")):
        value = headers.get(name)
        if value is not None and value.strip().isdigit():
            out[key] = int(value.strip())
    return out
