"""api_endpoints: the gateway's main routes with latency, Kong's own errors told from upstream's."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from exporter.checks.base import CheckContext, Family, Findings
from exporter.checks.listener import url_port, withheld_in
from exporter.checks.upstream import UpstreamView, upstream_view
from exporter.discovery.model import Instance
from exporter.gateway import CallSummary, GatewayCall, call
from exporter.issues import Issue, make_issue
from exporter.redaction import fingerprint


class ApiEndpointsDetails(TypedDict):
    """api_endpoints's details."""

    endpoints: NotRequired[dict[str, CallSummary]]  # by Route.endpoint, for those probed
    not_probed: NotRequired[dict[str, str]]  # endpoint -> why not
    credentials_withheld: NotRequired[str]  # why nothing was sent


API_ENDPOINTS: Family[ApiEndpointsDetails] = Family("api_endpoints")
NAME = API_ENDPOINTS.name
Credential = Literal["anon_key", "dashboard"]


@dataclass(frozen=True)
class Route:
    """A gateway route probed by this check and the component behind it."""

    endpoint: str  # the label of ultrabase_endpoint_latency_seconds
    path: str
    upstream: str
    credential: Credential | None  # None: sent with the anon key when known, not required


# The routes of Ultrabase's kong.yml that Studio and clients depend on.
ROUTES: tuple[Route, ...] = (
    Route("auth", "/auth/v1/health", "auth", "anon_key"),
    Route("rest", "/rest/v1/", "rest", "anon_key"),
    Route("storage", "/storage/v1/status", "storage", None),
    Route("studio", "/", "studio", "dashboard"),
)
# Which credential field of the instance a rejected route points at.
_CREDENTIAL_FIELDS: Mapping[Credential, str] = {
    "anon_key": "anon_key", "dashboard": "dashboard_password"}


class ApiEndpointsCheck:
    """Requests each main route through Kong on 127.0.0.1 and says which layer failed."""

    name = NAME

    def run(self, ctx: CheckContext) -> Findings:
        """Probe the gateway routes concurrently (a hang costs one timeout)."""
        instance = ctx.instance
        base = instance.endpoints.gateway_url
        if base is None:
            return Findings(skipped="the gateway port published on the host is unknown")
        withheld = withheld_in(ctx, "kong", url_port(base))
        if withheld:
            # Every route carries a key or the dashboard login: none goes to a stranger.
            return Findings((make_issue(
                "GATEWAY_UNREACHABLE", check=NAME, component="kong",
                message=f"no request sent to the gateway at {base}: {withheld}",
                evidence={"url": base, "credentials_withheld": True, "reason": withheld}),),
                {"not_probed": {r.endpoint: "credentials withheld" for r in ROUTES},
                 "credentials_withheld": withheld})
        routes: list[Route] = []
        not_probed: dict[str, str] = {}
        for route in ROUTES:
            reason = _missing_credential(instance, route)
            if reason:
                not_probed[route.endpoint] = reason
            else:
                routes.append(route)
        with ThreadPoolExecutor(max_workers=max(1, len(routes))) as pool:
            futures = {r: pool.submit(_probe, ctx, base, r) for r in routes}
        calls = {route: future.result() for route, future in futures.items()}

        details: ApiEndpointsDetails = {
            "endpoints": {r.endpoint: calls[r].summary() for r in routes}}
        if not_probed:
            details["not_probed"] = not_probed
        return Findings(tuple(_issues(ctx, base, calls)), details)


def _missing_credential(instance: Instance, route: Route) -> str | None:
    creds = instance.credentials
    if route.credential == "anon_key" and not creds.anon_key:
        return "the anon key is unknown"
    if route.credential == "dashboard" and not (creds.dashboard_username
                                                and creds.dashboard_password):
        return "the dashboard credentials are unknown"
    return None


def _probe(ctx: CheckContext, base: str, route: Route) -> GatewayCall:
    creds = ctx.instance.credentials
    timeout = ctx.timeout_through("kong", route.upstream)
    if route.credential == "dashboard":
        auth = (creds.dashboard_username or "", creds.dashboard_password or "")
        return call(ctx.http, "GET", base, route.path, auth=auth, timeout=timeout)
    # As supabase-js does: the anon key as apikey (for Kong, which strips it) and as Bearer
    # token (for the service; PostgREST v12 with a secret under 32 bytes refuses every one).
    # Storage's route has no key-auth in Ultrabase's kong.yml; the key is sent anyway, as
    # clients do, so a route that does require it is not mistaken for a broken key.
    headers = ({"apikey": creds.anon_key, "Authorization": f"Bearer {creds.anon_key}"}
               if creds.anon_key else {})
    return call(ctx.http, "GET", base, route.path, headers=headers, timeout=timeout)


def _issues(ctx: CheckContext, base: str, calls: Mapping[Route, GatewayCall]) -> list[Issue]:
    """One issue per failing layer: the gateway, a credential, an upstream, slowness."""
    faults = {route: c.fault for route, c in calls.items()}
    down = [r for r, f in faults.items() if f == "gateway_down"]
    hung = [r for r, f in faults.items() if f == "timeout"]
    if down or (hung and len(hung) == len(calls)):
        # Nothing behind the gateway can be judged when Kong itself does not answer.
        failed = down or hung
        return [make_issue(
            "GATEWAY_UNREACHABLE", check=NAME, component="kong",
            message=f"the gateway at {base} does not answer: "
                    + ", ".join(f"{r.path} {calls[r].failure}" for r in failed),
            evidence={"url": base,
                      "routes": {r.path: {"error": calls[r].failure,
                                          "detail": ctx.redactor.text(calls[r].error or "")}
                                 for r in failed}})]

    issues: list[Issue] = []
    rejected: dict[Credential, list[Route]] = {}
    slow = ctx.config.thresholds.endpoint_slow_seconds
    for route, c in calls.items():
        if c.fault == "kong_rejected":
            # A route probed without a key (none known) says nothing about the keys.
            if route.credential or ctx.instance.credentials.anon_key:
                rejected.setdefault(route.credential or "anon_key", []).append(route)
        elif (issue := _fault_issue(ctx, route, c)) is not None:
            issues.append(issue)
        if c.answered and c.latency_seconds > slow:
            issues.append(make_issue(
                "ENDPOINT_SLOW", check=NAME, component=route.upstream,
                message=f"{route.path} took {c.latency_seconds:.2f}s (threshold {slow:g}s)",
                evidence={**_call_evidence(ctx, route, c), "threshold_seconds": slow,
                          "kong_latency_ms": dict(c.kong_latency_ms)}))
    for credential, routes in rejected.items():
        issues.append(_rejected_issue(ctx, credential, routes, calls))
    return issues


def _fault_issue(ctx: CheckContext, route: Route, c: GatewayCall) -> Issue | None:
    """The issue of a route that Kong or its upstream failed (other than a rejected key)."""
    fault = c.fault
    if fault in ("upstream_unavailable", "timeout", "no_route"):
        return _upstream_issue(ctx, route, c)
    if fault == "upstream_rejected" and route.upstream == "rest":
        return _rest_rejected_issue(ctx, route, c)
    if fault not in ("kong_error", "upstream_error"):
        return None
    component = "kong" if fault == "kong_error" else route.upstream
    message = (f"{route.path} through the gateway answered {c.status} from "
               f"{'Kong itself' if fault == 'kong_error' else route.upstream}")
    upstream = ctx.instance.component(route.upstream)
    if fault == "kong_error" and not upstream.running:
        # Kong 2.8 answers 500 when looking up a missing name fails other than
        # with "name error" (runloop/balancer/init.lua:310-319).
        message += (f"; {route.upstream} is not running ({upstream.state}), so "
                    "Kong's lookup of its name failed")
    return make_issue("COMPONENT_UNHEALTHY", check=NAME, component=component, message=message,
                      evidence=_call_evidence(ctx, route, c))


def _upstream_issue(ctx: CheckContext, route: Route, c: GatewayCall) -> Issue:
    if c.fault == "no_route":
        # kong.yml lacks the route: Kong's config is at fault, not the upstream.
        return make_issue(
            "GATEWAY_UPSTREAM_ERROR", check=NAME, component="kong",
            message=f"Kong has no route for {route.path} (kong.yml)",
            evidence={**_call_evidence(ctx, route, c), "kind": "no_route"})
    failed = (f"no answer within {c.timeout_seconds or ctx.timeout:g}s" if c.fault == "timeout"
              else f"{c.status}: {c.verdict.message if c.verdict else ''}")
    upstream = ctx.instance.component(route.upstream)
    if not upstream.running:
        # Kong keeps connecting to the address it resolved last (its DNS cache holds it
        # for the answer's TTL), so a stopped service is a timeout or a 502 here.
        message = (f"{route.path}: {route.upstream} is not running ({upstream.state}); "
                   f"through the gateway: {failed}")
    else:
        view = upstream_view(ctx, route.upstream)
        kind = stale_kind(c, view)
        if kind is not None:
            return _stale_issue(ctx, route, c, view, kind, failed)
        message = (f"{route.path}: no answer within {ctx.timeout:g}s; "
                   f"{route.upstream} hangs behind the gateway" if c.fault == "timeout"
                   else f"{route.path}: Kong cannot get an answer from {route.upstream} "
                        f"({failed})")
    return make_issue("GATEWAY_UPSTREAM_ERROR", check=NAME, component=route.upstream,
                      message=message,
                      evidence={**_call_evidence(ctx, route, c), "kind": c.fault})


def _rest_rejected_issue(ctx: CheckContext, route: Route, c: GatewayCall) -> Issue:
    """PostgREST answered 401 to the anon key: no client with a JWT gets through."""
    used = fingerprint(ctx.instance.credentials.anon_key)
    code, message = c.body_text("code"), c.body_text("message")
    return make_issue(
        "REST_JWT_REJECTED", check=NAME, component="rest",
        message=f"PostgREST rejects the anon key ({used}) on {route.path}: {c.status} "
                f"{code or ''} {ctx.redactor.text(message or '')}".rstrip(),
        evidence={**_call_evidence(ctx, route, c), "key_fingerprint": used,
                  "postgrest_code": code, "postgrest_message": message})


def stale_kind(c: GatewayCall, view: UpstreamView) -> str | None:
    """Whether a failed call through Kong is Kong's cached DNS answer at fault, and how.

    "stale_address": Kong times out or answers 502/504 while the service answers its name
    inside kong's network at another address than the one Kong's log names;
    "stale_not_found": Kong answers "name resolution failed" for a name that resolves there.
    """
    if c.fault == "upstream_unavailable" and c.verdict is not None and \
            (c.verdict.message or "").lower() == "name resolution failed":
        return "stale_not_found" if view.answers else None
    if c.fault == "timeout" or (c.fault == "upstream_unavailable" and c.status in (502, 504)):
        return "stale_address" if view.stale(c.fault != "timeout") else None
    return None


def _stale_issue(ctx: CheckContext, route: Route, c: GatewayCall, view: UpstreamView,
                 kind: str, failed: str) -> Issue:
    name = route.upstream
    if kind == "stale_not_found":
        cause = (f"Kong still holds its earlier 'not found' answer for {name}, which now "
                 "resolves")
    elif view.kong_holds_old_address:
        cause = (f"Kong still sends it to {view.kong_address}, an old address of {name} "
                 f"(now {view.current_address})")
    else:
        cause = f"Kong still sends it to an address {name} no longer has"
    return make_issue(
        "GATEWAY_UPSTREAM_STALE", check=NAME, component="kong",
        message=f"{route.path} fails through the gateway ({failed}) while {name} answers "
                f"inside kong's network: {cause}",
        evidence={**_call_evidence(ctx, route, c), "kind": kind, **view.evidence()})


def _call_evidence(ctx: CheckContext, route: Route, c: GatewayCall) -> dict[str, Any]:
    evidence: dict[str, Any] = {"endpoint": route.endpoint, "route": route.path,
                                **c.summary()}
    if c.error:
        evidence["detail"] = ctx.redactor.text(c.error)
    return evidence


def _rejected_issue(ctx: CheckContext, credential: Credential, routes: list[Route],
                    calls: Mapping[Route, GatewayCall]) -> Issue:
    instance = ctx.instance
    creds = instance.credentials
    field = _CREDENTIAL_FIELDS[credential]
    used = fingerprint(getattr(creds, field))
    kong_file_fp, differs = kong_file_view(instance, field, used)
    verdicts = [v for v in (calls[r].verdict for r in routes) if v is not None]
    messages = sorted({v.message for v in verdicts if v.message})
    evidence: dict[str, Any] = {
        "credential": field, "fingerprint": used, "source": creds.sources.get(field),
        "routes": [r.path for r in routes], "statuses": [calls[r].status for r in routes],
        "kong_messages": messages, "kong_file_fingerprint": kong_file_fp,
        "kong_file_differs": differs,
    }
    if credential == "dashboard":
        evidence["username"] = creds.dashboard_username
    what = "the anon key" if credential == "anon_key" else "the dashboard credentials"
    drift = {True: "; kong.yml holds a different value",
             False: "; kong.yml on disk agrees, so the running Kong config differs",
             None: ""}[differs]
    return make_issue(
        "GATEWAY_KEY_REJECTED", check=NAME, component="kong",
        message=f"Kong rejects {what} ({used}) on " + ", ".join(r.path for r in routes) + drift,
        evidence=evidence)


def kong_file_view(instance: Instance, field: str, used: str | None
                   ) -> tuple[str | None, bool | None]:
    """kong.yml's fingerprint for a credential and whether it differs from the one used.

    Discovery compares every source and reports disagreements as CONFIG_DRIFT; no drift on
    the field means kong.yml agrees. (None, None) when no kong.yml is known.
    """
    for problem in instance.problems:
        if problem.code != "CONFIG_DRIFT":
            continue
        by_source = (problem.evidence.get("credentials") or {}).get(field)
        if isinstance(by_source, Mapping) and "kong_file" in by_source:
            kong_fp = by_source["kong_file"]
            return kong_fp, kong_fp != used
    if instance.files.kong_file is None:
        return None, None
    return used, False
