"""auth_service: GoTrue's health, the JWT keys, GoTrue's own DB login, a synthetic admin user.

The synthetic test follows Studio's "create user" path (gateway -> key-auth -> GoTrue admin
API -> auth's database) with GoTrue's admin API only, never /signup, under the reserved
`.invalid` domain, and deletes what it created on every path.

Role claims: a key carrying the wrong role is shown in details (role_valid). For the service
key it also makes GoTrue refuse every admin call, so it is evidence on
AUTH_USER_CREATE_FAILED: on the synthetic test's failure when it ran, or as a predicted
failure (step "precheck") when it did not. JWT_SECRET_MISMATCH is kept for signatures.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Required, TypedDict, cast

from exporter.checks.base import CheckContext, Family, Findings
from exporter.checks.database import shared_login
from exporter.checks.endpoints import kong_file_view, stale_kind
from exporter.checks.listener import url_port, withheld_in
from exporter.checks.upstream import upstream_view
from exporter.gateway import CallSummary, GatewayCall, call
from exporter.issues import Issue, make_issue
from exporter.jwtkeys import (
    MIN_SECRET_LENGTH,
    KeyAnalysis,
    KeyClaims,
    analyse_key,
    secret_bytes,
    secret_weak,
    secrets_that_sign,
)
from exporter.pg import instance_dbname, service_login
from exporter.redaction import Redactor, fingerprint


class Skipped(TypedDict):
    """A part of the check that did not run, and why."""

    skipped: str


class JwtSecretState(TypedDict):
    """The JWT secret auth uses, never its value."""

    known: bool
    fingerprint: str | None
    source: str | None
    weak: bool | None


class KeyState(KeyClaims, total=False):
    """One API key: absent, or its fingerprint and claims."""

    present: Required[bool]  # the rest only for a present key
    fingerprint: str | None


class GoTrueHealth(CallSummary, total=False):
    """GoTrue's /health through the gateway."""

    version: str | None  # from an ok answer
    kong_route_stale: bool  # GoTrue answers inside Kong's network, Kong's route does not


class GoTrueSettings(CallSummary, total=False):
    """GoTrue's /settings through the gateway, with its sign-up settings from an ok answer."""

    disable_signup: object
    mailer_autoconfirm: object
    email_enabled: object


class DbLoginState(TypedDict):
    """GoTrue's own database login, as its runtime DSN configures it."""

    user: str
    database: str
    outcome: str
    sqlstate: str | None
    password_fingerprint: str | None


class SyntheticUser(TypedDict, total=False):
    """The synthetic admin user test."""

    ran: bool
    created: bool
    deleted: bool
    status: int | None  # of the create call
    latency_seconds: float | None
    reason: str | None  # why it did not run
    leftovers_removed: int  # earlier runs' users swept first
    leftovers_failed: list[str]


class AuthServiceDetails(TypedDict, total=False):
    """auth_service's details, filled by the parts of the check."""

    jwt_secret: JwtSecretState
    keys: dict[str, KeyState]  # by key name: anon, service_role
    health: GoTrueHealth | Skipped
    settings: GoTrueSettings
    db_login: DbLoginState | Skipped
    synthetic_user: SyntheticUser


AUTH_SERVICE: Family[AuthServiceDetails] = Family("auth_service")
NAME = AUTH_SERVICE.name
DOCTOR_DOMAIN = "ultrabase-doctor.invalid"
ADMIN_USERS = "/auth/v1/admin/users"
# Leftovers younger than this may belong to a run in progress in the other process.
LEFTOVER_MIN_AGE = timedelta(minutes=5)
MAX_LEFTOVERS_PER_RUN = 10
_MAX_TEXT = 300
_FRACTION = re.compile(r"\.\d+")


@dataclass
class _Report:
    """Issues and details collected by the parts of the check."""

    issues: list[Issue] = field(default_factory=list)
    details: AuthServiceDetails = field(default_factory=AuthServiceDetails)


class AuthServiceCheck:
    """Checks GoTrue through the gateway, its keys and secret, its DB login, and user creation."""

    name = NAME

    def run(self, ctx: CheckContext) -> Findings:
        """Run the parts; the network ones concurrently, the synthetic user test last."""
        report = _Report()
        analyses = _check_keys(ctx, report)
        service = analyses.get("service_role")
        session = _admin_session(ctx, service)
        with ThreadPoolExecutor(max_workers=3) as pool:
            probes = pool.submit(_probe_gotrue, ctx, report)
            db_login = pool.submit(_check_db_login, ctx, report)
            # Earlier runs' leftovers are swept while GoTrue is probed: one round trip
            # less before the create, and a hanging GoTrue still costs a single timeout.
            sweep = pool.submit(session.remove_leftovers) if session is not None else None
            auth_hangs = probes.result()
            db_login.result()
            swept = sweep.result() if sweep is not None else None
        _synthetic_user(ctx, report, service, auth_hangs, session, swept)
        auth = ctx.instance.components.get("auth")
        # Keys checked offline are no evidence that auth works: with GoTrue down and no
        # issue found, the check is skipped, not ok.
        skipped = (f"auth is {auth.state}: only its keys were checked"
                   if ctx.instance.runtime_known and auth is not None and not auth.running
                   else None)
        return Findings(tuple(report.issues), report.details, skipped=skipped)


# -- (b) JWT keys and secret ---------------------------------------------------------------

def _check_keys(ctx: CheckContext, report: _Report) -> dict[str, KeyAnalysis]:
    """Secret strength, then each key's signature, role and expiry."""
    creds = ctx.instance.credentials
    secret = creds.jwt_secret
    secret_source = creds.sources.get("jwt_secret")
    secret_fp = fingerprint(secret)
    report.details["jwt_secret"] = {"known": bool(secret), "fingerprint": secret_fp,
                                    "source": secret_source,
                                    "weak": secret_weak(secret) if secret else None}
    if secret and secret_weak(secret):
        length = secret_bytes(secret)
        report.issues.append(make_issue(
            "JWT_SECRET_WEAK", check=NAME, component="auth",
            message=f"the JWT secret auth uses has {length} bytes (at least "
                    f"{MIN_SECRET_LENGTH} needed): PostgREST v12 rejects every request "
                    "carrying a key signed with it",
            evidence={"secret_fingerprint": secret_fp, "length": length,
                      "minimum": MIN_SECRET_LENGTH, "source": secret_source}))
    keys: dict[str, KeyState] = {}
    analyses: dict[str, KeyAnalysis] = {}
    warning_days = ctx.config.thresholds.jwt_expiry_warning_days
    for name, token in (("anon", creds.anon_key), ("service_role", creds.service_role_key)):
        if not token:
            keys[name] = {"present": False}
            continue
        analysis = analyse_key(name, token, secret)
        analyses[name] = analysis
        key_fp = fingerprint(token)
        keys[name] = {"present": True, "fingerprint": key_fp, **analysis.to_dict()}
        base = {"key": name, "key_fingerprint": key_fp}
        if not analysis.decodable or analysis.signature_valid is False:
            report.issues.append(make_issue(
                "JWT_SECRET_MISMATCH", check=NAME, component="auth",
                message=f"the {name} key is not signed with the JWT secret auth uses "
                        f"({secret_source or 'source unknown'})"
                        if analysis.decodable else f"the {name} key is not a JWT",
                evidence={**base, "secret_fingerprint": secret_fp,
                          "secret_source": secret_source, "algorithm": analysis.algorithm,
                          "error": analysis.error,
                          "signed_with": secrets_that_sign(token, _other_secrets(ctx))}))
        state = analysis.expiry(ctx.now, warning_days)
        if state in ("expired", "expiring") and analysis.expires_at is not None:
            expires = datetime.fromtimestamp(analysis.expires_at, ctx.now.tzinfo)
            days_left = (analysis.expires_at - ctx.now.timestamp()) / 86400
            code = "JWT_KEY_EXPIRED" if state == "expired" else "JWT_KEY_EXPIRING"
            message = (f"the {name} key expired on {expires:%Y-%m-%d %H:%M} UTC"
                       if state == "expired"
                       else f"the {name} key expires in {days_left:.0f} days "
                            f"({expires:%Y-%m-%d})")
            report.issues.append(make_issue(
                code, check=NAME, component="auth", message=message,
                evidence={**base, "exp": analysis.expires_at,
                          "expires_at": expires.isoformat(),
                          "days_left": round(days_left, 1), "warning_days": warning_days}))
    report.details["keys"] = keys
    return analyses


def _other_secrets(ctx: CheckContext) -> dict[str, str | None]:
    """JWT secrets other services run with, to tell which one a mismatched key fits."""
    env = ctx.instance.runtime_env
    return {"runtime:rest": (env.get("rest") or {}).get("PGRST_JWT_SECRET"),
            "runtime:db": (env.get("db") or {}).get("JWT_SECRET")}


# -- (a) GoTrue health and settings ----------------------------------------------------------

def _probe_gotrue(ctx: CheckContext, report: _Report) -> bool:
    """Probe /health and /settings; True when GoTrue hangs (the synthetic test is skipped)."""
    base = ctx.instance.endpoints.gateway_url
    anon = ctx.instance.credentials.anon_key
    if base is None or not anon:
        report.details["health"] = {"skipped": "the gateway URL is unknown" if base is None
                                    else "the anon key is unknown"}
        return False
    withheld = withheld_in(ctx, "kong", url_port(base))
    if withheld:
        report.details["health"] = {"skipped": f"the anon key is withheld: {withheld}"}
        return False
    probe = partial(call, ctx.http, "GET", base, headers={"apikey": anon},
                    timeout=ctx.timeout_through("kong", "auth"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        health_f = pool.submit(probe, "/auth/v1/health")
        settings_f = pool.submit(probe, "/auth/v1/settings")
    health, settings = health_f.result(), settings_f.result()
    # A fresh CallSummary: these shapes only add optional keys to it.
    health_details = cast(GoTrueHealth, health.summary())
    if health.ok:
        health_details["version"] = health.body_text("version")
    settings_details = cast(GoTrueSettings, settings.summary())
    if settings.ok and isinstance(settings.body, Mapping):
        external = settings.body.get("external")
        settings_details.update({
            "disable_signup": settings.body.get("disable_signup"),
            "mailer_autoconfirm": settings.body.get("mailer_autoconfirm"),
            "email_enabled": external.get("email") if isinstance(external, Mapping) else None})
    report.details["health"] = health_details
    report.details["settings"] = settings_details

    # GoTrue is at fault when it hangs, answers >= 500 itself, or Kong cannot reach it.
    # Kong down or rejecting the key is the gateway's fault (api_endpoints reports it).
    failing = [c for c in (health, settings)
               if c.fault in ("timeout", "upstream_error", "upstream_unavailable")]
    hangs = any(c.fault == "timeout" for c in (health, settings))
    auth = ctx.instance.component("auth")
    if failing and auth.running and all(stale_kind(c, upstream_view(ctx, "auth"))
                                        for c in failing):
        # GoTrue answers inside kong's network: Kong's route is at fault, not GoTrue
        # (api_endpoints reports it as GATEWAY_UPSTREAM_STALE on kong).
        health_details["kong_route_stale"] = True
        return hangs
    if failing:
        # A stopped GoTrue behind Kong's DNS cache is a timeout or a 502, not a 503.
        prefix = ("GoTrue " if auth.running else
                  f"GoTrue is not running ({auth.state}); through the gateway it ")
        report.issues.append(make_issue(
            "AUTH_UNHEALTHY", check=NAME, component="auth",
            message=prefix + "; ".join(_describe_fault(ctx, c) for c in failing),
            evidence={"probes": {c.path: {**c.summary(), "msg": _error_text(ctx.redactor, c)}
                                 for c in failing}}))
    return hangs


def _describe_fault(ctx: CheckContext, c: GatewayCall) -> str:
    if c.fault == "timeout":
        return f"did not answer {c.path} within {c.timeout_seconds or ctx.timeout:g}s"
    if c.fault == "upstream_unavailable":
        return f"cannot be reached by Kong on {c.path} ({c.status})"
    return f"answered {c.path} with {c.status}"


# -- (c) GoTrue's own database login ---------------------------------------------------------

def _check_db_login(ctx: CheckContext, report: _Report) -> None:
    """Log in with the user and password of auth's runtime GOTRUE_DB_DATABASE_URL."""
    instance = ctx.instance
    login = service_login(instance, "auth", "GOTRUE_DB_DATABASE_URL")
    port = instance.endpoints.db_port
    if login is None or port is None:
        report.details["db_login"] = {
            "skipped": "the db port published on the host is unknown" if login
            else "auth's runtime GOTRUE_DB_DATABASE_URL is unknown or has no credentials"}
        return
    withheld = withheld_in(ctx, "db", port)
    if withheld:
        report.details["db_login"] = {"skipped": f"the password is withheld: {withheld}"}
        return
    # The DSN names the compose host (db:5432); the host reaches it on the published port.
    result = shared_login(ctx, instance.endpoints.db_host, port, login)
    reason = ctx.redactor.text(result.reason)
    report.details["db_login"] = {"user": login.user, "database": login.dbname,
                                  "outcome": result.outcome, "sqlstate": result.sqlstate,
                                  "password_fingerprint": fingerprint(login.password)}
    # An unreachable database is database_connection's DB_UNREACHABLE, not a DSN fault.
    if result.outcome in ("auth_failed", "rejected"):
        report.issues.append(make_issue(
            "AUTH_DB_CONNECTION_FAILED", check=NAME, component="auth",
            message=f"GoTrue's database login as {login.user} fails: {reason}",
            evidence={"user": login.user, "database": login.dbname,
                      "expected_database": instance_dbname(instance),
                      "outcome": result.outcome, "sqlstate": result.sqlstate,
                      "error": reason, "password_fingerprint": fingerprint(login.password),
                      "password_source": "runtime:auth"}))


# -- (d) synthetic admin user ----------------------------------------------------------------

def _admin_session(ctx: CheckContext, service: KeyAnalysis | None) -> _AdminSession | None:
    """The synthetic test's session, unless it cannot run whatever GoTrue's health is."""
    base = ctx.instance.endpoints.gateway_url
    key = ctx.instance.credentials.service_role_key
    if _not_run_reason(ctx, auth_hangs=False) is not None or base is None or not key:
        return None
    return _AdminSession(ctx, base, key, service)


def _synthetic_user(ctx: CheckContext, report: _Report, service: KeyAnalysis | None,
                    auth_hangs: bool, session: _AdminSession | None,
                    swept: _Sweep | None) -> None:
    details: SyntheticUser = {"ran": False, "created": False, "deleted": False,
                              "status": None, "latency_seconds": None}
    report.details["synthetic_user"] = details
    reason = _not_run_reason(ctx, auth_hangs)
    if reason is None and session is not None and swept is not None:
        _run_synthetic(report, details, session, swept)
        return
    health = report.details.get("health")
    if auth_hangs and health is not None and "kong_route_stale" in health:
        reason = "Kong's route to GoTrue times out: Kong holds an outdated address for auth"
    details["reason"] = reason
    if service is not None and service.decodable and not service.role_valid:
        report.issues.append(_failure_issue(
            ctx, "precheck", None, service,
            message=f"the service key's role claim is {service.role!r}, not "
                    f"'service_role': GoTrue will refuse admin calls such as creating a user",
            layer="auth", error_code="wrong_role"))


def _not_run_reason(ctx: CheckContext, auth_hangs: bool) -> str | None:
    """Why the synthetic test does not run, or None when it does."""
    if not ctx.run_synthetic_user:
        return "not requested for this run"
    if ctx.instance.endpoints.gateway_url is None:
        return "the gateway URL is unknown"
    if not ctx.instance.credentials.service_role_key:
        return "the service key is unknown"
    withheld = withheld_in(ctx, "kong", url_port(ctx.instance.endpoints.gateway_url))
    if withheld:
        return f"the service key is withheld: {withheld}"
    if auth_hangs:
        return (f"GoTrue did not answer its health probe within "
                f"{ctx.timeout_through('kong', 'auth'):g}s")
    return None


def _run_synthetic(report: _Report, details: SyntheticUser, session: _AdminSession,
                   sweep: _Sweep) -> None:
    """After the sweep of leftovers, create and delete this run's user."""
    details["ran"] = True
    details["leftovers_removed"] = sweep.removed
    if sweep.failed:
        details["leftovers_failed"] = sweep.failed
    if sweep.listing.fault == "timeout":
        # The admin API hangs: a create would only cost another timeout.
        report.issues.append(session.failure("create", sweep.listing,
                                              note="listing users timed out; create not "
                                                   "attempted"))
        return
    session.create_and_delete(report, details)


@dataclass(frozen=True)
class _Sweep:
    """The outcome of removing leftovers of earlier runs."""

    listing: GatewayCall
    removed: int = 0
    failed: list[str] = field(default_factory=list)


class _AdminSession:
    """GoTrue admin calls through the gateway with the service key."""

    def __init__(self, ctx: CheckContext, base: str, key: str,
                 service: KeyAnalysis | None) -> None:
        self.ctx, self.base, self.service = ctx, base, service
        self.headers = {"apikey": key, "Authorization": f"Bearer {key}"}
        self.email = f"doctor-{secrets.token_hex(8)}@{DOCTOR_DOMAIN}"
        self.password = secrets.token_urlsafe(24)
        # GoTrue never echoes passwords, but nothing this test sends may leak back out.
        self.redactor = ctx.redactor.extend([self.password])

    def _call(self, method: str, path: str, **kwargs: Any) -> GatewayCall:
        return call(self.ctx.http, method, self.base, path, headers=self.headers,
                    timeout=self.ctx.timeout_through("kong", "auth"), **kwargs)

    def _list(self, filter_text: str) -> tuple[GatewayCall, list[Mapping[str, Any]]]:
        listing = self._call("GET", ADMIN_USERS,
                             params={"filter": filter_text, "page": 1, "per_page": 50})
        users = listing.body.get("users") if listing.ok and isinstance(listing.body,
                                                                      Mapping) else None
        return listing, [u for u in users or [] if isinstance(u, Mapping)]

    def remove_leftovers(self) -> _Sweep:
        """Delete users earlier runs left behind (bounded; only our domain, only old ones)."""
        listing, users = self._list(DOCTOR_DOMAIN)
        stale = [u for u in users
                 if str(u.get("email", "")).lower().endswith("@" + DOCTOR_DOMAIN)
                 and _older_than(u.get("created_at"), self.ctx.now - LEFTOVER_MIN_AGE)]
        removed, failed = 0, []
        for user in stale[:MAX_LEFTOVERS_PER_RUN]:
            user_id = _user_id(user)
            if user_id is None:
                continue
            deleted, attempt = self.delete(user_id, attempts=1)
            if deleted:
                removed += 1
            else:
                failed.append(user_id)
                if attempt is not None and attempt.fault == "timeout":
                    break  # GoTrue hangs: do not spend a timeout per leftover
        return _Sweep(listing, removed, failed)

    def create_and_delete(self, report: _Report, details: SyntheticUser) -> None:
        """Create the synthetic user, then delete it whatever happened in between."""
        user_id: str | None = None
        try:
            created = self._call("POST", ADMIN_USERS, json_body={
                "email": self.email, "password": self.password, "email_confirm": True,
                "user_metadata": {"created_by": "ultrabase-doctor"}})
            details["status"] = created.status
            details["latency_seconds"] = created.summary()["latency_seconds"]
            user_id = _user_id(created.body) if created.ok else None
            if user_id is not None:
                details["created"] = True
                return
            report.issues.append(self.failure("create", created))
            rejected = _service_key_rejected(self.ctx, created)
            if rejected is not None:
                report.issues.append(rejected)
            if created.ok or created.fault == "timeout":
                # The user may exist although no id came back: find it by its address.
                user_id = self.find_by_email()
        finally:
            if user_id is not None:
                deleted, attempt = self.delete(user_id, attempts=2)
                details["deleted"] = deleted
                if not deleted and attempt is not None:
                    report.issues.append(self.failure("delete", attempt, leftover_id=user_id))

    def find_by_email(self) -> str | None:
        """The id of the user with this run's address, if GoTrue has it."""
        _, users = self._list(self.email)
        for user in users:
            if str(user.get("email", "")).lower() == self.email:
                return _user_id(user)
        return None

    def delete(self, user_id: str, attempts: int) -> tuple[bool, GatewayCall | None]:
        """Delete a user, trying up to attempts times; gone already counts as deleted."""
        last: GatewayCall | None = None
        for _ in range(attempts):
            last = self._call("DELETE", f"{ADMIN_USERS}/{user_id}")
            if last.ok:
                return True, last
            # GoTrue's own 404 (user_not_found), not Kong's "no route".
            if last.status == 404 and last.verdict is not None \
                    and last.verdict.origin != "kong":
                return True, last
        return False, last

    def failure(self, step: str, c: GatewayCall, *, leftover_id: str | None = None,
                note: str | None = None) -> Issue:
        """AUTH_USER_CREATE_FAILED for a failed call, saying which layer refused."""
        layer, error_code = _layer(c)
        if c.ok and step == "create":
            error_code = "no_user_id"
        msg = _error_text(self.redactor, c)
        where = "at the gateway" if layer == "gateway" else "in GoTrue"
        status = c.status if c.status is not None else c.failure
        if step == "delete":
            message = (f"the synthetic user {leftover_id} could not be deleted "
                       f"({status} {where}); it is left over")
        else:
            message = f"creating a user fails {where}: {status} {error_code or ''}".rstrip()
        if note:
            msg = f"{note}: {msg}" if msg else note
        return _failure_issue(self.ctx, step, c, self.service, message=message, layer=layer,
                              error_code=error_code, msg=msg,
                              extra={"leftover_user_id": leftover_id} if leftover_id else None)


def _failure_issue(ctx: CheckContext, step: str, c: GatewayCall | None,
                   service: KeyAnalysis | None, *, message: str, layer: str,
                   error_code: str | None, msg: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> Issue:
    evidence: dict[str, Any] = {
        "step": step, "status": c.status if c else None, "layer": layer,
        "error_code": error_code, "msg": msg, **(extra or {}),
    }
    if c is not None and c.verdict is not None and c.verdict.origin == "kong":
        evidence["kong_error"] = c.verdict.kong_error
    if service is not None:
        evidence["service_key"] = {
            "fingerprint": fingerprint(ctx.instance.credentials.service_role_key),
            "signature_valid": service.signature_valid, "role": service.role,
            "role_valid": service.role_valid,
            "expired": service.expiry(ctx.now, 0) == "expired"}
    return make_issue("AUTH_USER_CREATE_FAILED", check=NAME, component="auth",
                      message=message, evidence=evidence)


def _service_key_rejected(ctx: CheckContext, c: GatewayCall) -> Issue | None:
    """GATEWAY_KEY_REJECTED when Kong itself refused the service key on the admin route."""
    if c.verdict is None or c.verdict.origin != "kong" or c.verdict.kong_error != "key_rejected":
        return None
    used = fingerprint(ctx.instance.credentials.service_role_key)
    kong_file_fp, differs = kong_file_view(ctx.instance, "service_role_key", used)
    drift = {True: "; kong.yml holds a different value",
             False: "; kong.yml on disk agrees, so the running Kong config differs",
             None: ""}[differs]
    return make_issue(
        "GATEWAY_KEY_REJECTED", check=NAME, component="kong",
        message=f"Kong rejects the service key ({used}) on {ADMIN_USERS}{drift}",
        evidence={"credential": "service_role_key", "fingerprint": used,
                  "source": ctx.instance.credentials.sources.get("service_role_key"),
                  "routes": [ADMIN_USERS], "statuses": [c.status],
                  "kong_messages": [c.verdict.message] if c.verdict.message else [],
                  "kong_file_fingerprint": kong_file_fp, "kong_file_differs": differs})


def _layer(c: GatewayCall) -> tuple[str, str | None]:
    """Which layer refused ("gateway" or "auth") and its error code."""
    if c.fault == "gateway_down":
        return "gateway", c.failure
    if c.fault == "timeout":
        return "auth", "timeout"  # Kong took the request; the upstream did not answer
    if c.verdict is not None and c.verdict.origin == "kong":
        return "gateway", c.verdict.kong_error
    # GoTrue's error body: {"code", "error_code", "msg"}; with API version 2024-01-01
    # {"code": "<error code>", "message"}.
    code = c.body_text("error_code")
    if code is None and isinstance(c.body, Mapping) and isinstance(c.body.get("code"), str):
        code = c.body_text("code")
    return "auth", code


def _error_text(redactor: Redactor, c: GatewayCall) -> str | None:
    """Kong's message, GoTrue's msg, or the transport error, redacted."""
    if c.verdict is None:
        return redactor.text(c.error) if c.error else None
    if c.verdict.origin == "kong":
        return c.verdict.message
    for key in ("msg", "message", "error_description", "error"):
        text = c.body_text(key)
        if text:
            return redactor.text(text)[:_MAX_TEXT]
    return None


def _user_id(user: Any) -> str | None:
    """A user's id, only when it is a UUID (it goes into a URL path)."""
    if not isinstance(user, Mapping):
        return None
    try:
        return str(uuid.UUID(str(user.get("id"))))
    except ValueError:
        return None


def _older_than(created_at: Any, limit: datetime) -> bool:
    """True when created_at is before limit; an unreadable date counts as old."""
    if not isinstance(created_at, str):
        return True
    # Go writes up to nanoseconds; Python reads up to microseconds.
    text = _FRACTION.sub(lambda m: m.group(0)[:7], created_at.replace("Z", "+00:00"))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return True
    if when.tzinfo is None:
        when = when.replace(tzinfo=limit.tzinfo)
    return when < limit
