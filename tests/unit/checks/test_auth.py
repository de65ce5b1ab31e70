"""auth_service: keys and secret, GoTrue through a Kong fake, GoTrue's DSN on a real Postgres."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from exporter.checks.auth import AuthServiceCheck
from exporter.checks.base import Findings, status_of
from exporter.discovery.model import Instance
from exporter.redaction import fingerprint
from tests.unit.checks.conftest import PgServer, free_port
from tests.unit.checks.support import (
    ANON,
    DOMAIN,
    NOW,
    PG_PASSWORD,
    SECRET,
    SERVICE,
    FakeKong,
    codes,
    gotrue_error,
    key,
    make_context,
    make_instance,
    only,
    proxied,
)

OTHER_SECRET = "the-secret-rest-runs-with-0123456789abcdef"


def run(kong: FakeKong | None, *, instance: Instance | None = None,
        run_synthetic_user: bool = True) -> Findings:
    ctx = make_context(instance or make_instance(), kong,
                       run_synthetic_user=run_synthetic_user)
    return AuthServiceCheck().run(ctx)


def admin_calls(kong: FakeKong) -> list[tuple[str, str]]:
    return [(m, p) for m, p in kong.paths() if "/admin/" in p]


def sent_password(kong: FakeKong) -> str:
    create = next(r for r in kong.requests if r.method == "POST")
    return str(json.loads(create.content)["password"])


def assert_no_secrets(findings: Findings, *extra: str) -> None:
    text = json.dumps([i.to_dict() for i in findings.issues]) + json.dumps(findings.details)
    for secret in (ANON, SERVICE, SECRET, PG_PASSWORD, *extra):
        assert secret not in text


def assert_never_signup(kong: FakeKong) -> None:
    assert not any("signup" in path for _, path in kong.paths())


# -- the healthy path ------------------------------------------------------------------------

def test_a_healthy_instance_creates_and_deletes_one_synthetic_user() -> None:
    kong = FakeKong()
    findings = run(kong)
    assert findings.issues == ()
    synthetic = findings.details["synthetic_user"]
    assert synthetic["ran"] and synthetic["created"] and synthetic["deleted"]
    assert synthetic["status"] == 200 and synthetic["latency_seconds"] >= 0
    assert synthetic["leftovers_removed"] == 0

    create = next(r for r in kong.requests if r.method == "POST")
    body = json.loads(create.content)
    assert create.url.path == "/auth/v1/admin/users"
    assert create.headers["apikey"] == SERVICE
    assert create.headers["authorization"] == f"Bearer {SERVICE}"
    assert body["email"].startswith("doctor-") and body["email"].endswith("@" + DOMAIN)
    assert body["email_confirm"] is True
    assert body["user_metadata"] == {"created_by": "ultrabase-doctor"}
    assert len(body["password"]) >= 24

    deletes = [p for m, p in kong.paths() if m == "DELETE"]
    assert len(deletes) == 1 and deletes[0].startswith("/auth/v1/admin/users/")
    assert kong.gotrue.users == {}
    assert_never_signup(kong)
    assert_no_secrets(findings, body["password"])


def test_details_carry_health_settings_and_key_facts_for_the_metrics() -> None:
    findings = run(FakeKong())
    details = findings.details
    assert details["health"]["status"] == 200 and details["health"]["version"] == "v2.167.0"
    assert details["settings"]["email_enabled"] is True
    assert details["settings"]["disable_signup"] is False
    anon, service = details["keys"]["anon"], details["keys"]["service_role"]
    assert anon["role"] == "anon" and service["role"] == "service_role"
    assert anon["signature_valid"] is True and service["signature_valid"] is True
    assert anon["exp"] == int((NOW - timedelta(days=10) + timedelta(days=365)).timestamp())
    assert anon["fingerprint"] == fingerprint(ANON)
    assert details["jwt_secret"] == {"known": True, "fingerprint": fingerprint(SECRET),
                                     "source": "runtime:auth", "weak": False}


# -- the synthetic user's failure paths ------------------------------------------------------

def test_gotrue_rejecting_the_service_jwt_is_an_auth_layer_failure() -> None:
    foreign = key("service_role", OTHER_SECRET)
    kong = FakeKong(keys=(ANON, foreign))
    instance = make_instance(service_role_key=foreign, runtime_env={
        "auth": {"GOTRUE_JWT_SECRET": SECRET}, "rest": {"PGRST_JWT_SECRET": OTHER_SECRET}})
    findings = run(kong, instance=instance)
    failure = only(findings.issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["step"] == "create"
    assert failure.evidence["status"] == 403  # GoTrue v2.167's status for a bad JWT
    assert failure.evidence["layer"] == "auth"
    assert failure.evidence["error_code"] == "bad_jwt"
    assert failure.evidence["msg"] == ("invalid JWT: unable to parse or verify signature, "
                                       "token signature is invalid: signature is invalid")
    assert failure.evidence["service_key"]["signature_valid"] is False
    mismatch = only(findings.issues, "JWT_SECRET_MISMATCH")
    assert mismatch.component == "auth"
    assert mismatch.evidence["key"] == "service_role"
    assert mismatch.evidence["secret_fingerprint"] == fingerprint(SECRET)
    assert mismatch.evidence["secret_source"] == "runtime:auth"
    assert mismatch.evidence["signed_with"] == ["runtime:rest"]
    assert findings.details["synthetic_user"]["created"] is False
    assert not any(m == "DELETE" for m, _ in kong.paths())  # nothing was created
    assert_never_signup(kong)
    assert_no_secrets(findings, foreign, OTHER_SECRET)


def test_kong_rejecting_the_service_key_is_a_gateway_layer_failure() -> None:
    kong = FakeKong(keys=(ANON,))
    failure = only(run(kong).issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["layer"] == "gateway"
    assert failure.evidence["status"] == 401
    assert failure.evidence["error_code"] == "key_rejected"
    assert failure.evidence["msg"] == "Invalid authentication credentials"
    assert "at the gateway" in failure.message
    assert not any(p.startswith("/admin") for _, p in kong.gotrue.calls)


def test_kong_unable_to_reach_auth_fails_creation_at_the_gateway_and_auth_is_unhealthy() -> None:
    kong = FakeKong(upstreams={"auth": None})
    findings = run(kong)
    failure = only(findings.issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["layer"] == "gateway"
    assert failure.evidence["status"] == 503
    assert failure.evidence["error_code"] == "upstream_unavailable"
    unhealthy = only(findings.issues, "AUTH_UNHEALTHY")
    assert unhealthy.component == "auth"
    assert unhealthy.evidence["probes"]["/auth/v1/health"]["kong_error"] == \
        "upstream_unavailable"


def test_kong_502_on_create_is_a_gateway_layer_failure() -> None:
    kong = FakeKong()
    kong.gotrue.override = lambda request, path: httpx.Response(
        502, headers={"Server": "kong/2.8.1", "Via": "kong/2.8.1"},
        json={"message": "An invalid response was received from the upstream server"},
    ) if request.method == "POST" else None
    failure = only(run(kong).issues, "AUTH_USER_CREATE_FAILED")
    assert (failure.evidence["layer"], failure.evidence["status"]) == ("gateway", 502)
    assert failure.evidence["kong_error"] == "upstream_unavailable"


def test_a_delete_failing_once_is_retried_and_succeeds() -> None:
    kong = FakeKong()
    kong.gotrue.fail_deletes = 1
    findings = run(kong)
    assert findings.issues == ()
    assert findings.details["synthetic_user"]["deleted"] is True
    assert len([m for m, _ in kong.paths() if m == "DELETE"]) == 2
    assert kong.gotrue.users == {}


def test_a_delete_failing_twice_reports_the_leftover_id() -> None:
    kong = FakeKong()
    kong.gotrue.fail_deletes = 2
    findings = run(kong)
    failure = only(findings.issues, "AUTH_USER_CREATE_FAILED")
    (leftover,) = kong.gotrue.users
    assert failure.evidence["step"] == "delete"
    assert failure.evidence["status"] == 500
    assert failure.evidence["layer"] == "auth"
    assert failure.evidence["error_code"] == "unexpected_failure"
    assert failure.evidence["msg"] == "Database error deleting user"
    assert failure.evidence["leftover_user_id"] == leftover
    assert leftover in failure.message
    assert findings.details["synthetic_user"] == {
        **findings.details["synthetic_user"], "created": True, "deleted": False}
    assert len([m for m, _ in kong.paths() if m == "DELETE"]) == 2
    assert_never_signup(kong)


def test_a_create_that_timed_out_after_creating_is_found_and_deleted() -> None:
    kong = FakeKong()
    gotrue = kong.gotrue

    def slow_create(request: httpx.Request, path: str) -> httpx.Response | None:
        if request.method != "POST":
            return None
        gotrue.handle(request, path)  # the user is created, the answer is lost
        raise httpx.ReadTimeout("timed out", request=request)
    gotrue.override = slow_create
    findings = run(kong)
    failure = only(findings.issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["error_code"] == "timeout" and failure.evidence["layer"] == "auth"
    assert gotrue.users == {}
    assert findings.details["synthetic_user"]["deleted"] is True


def test_a_created_answer_without_an_id_still_gets_the_user_deleted() -> None:
    kong = FakeKong()
    gotrue = kong.gotrue

    def create_without_id(request: httpx.Request, path: str) -> httpx.Response | None:
        if request.method != "POST":
            return None
        gotrue.handle(request, path)
        return proxied(200, {"email": json.loads(request.content)["email"]})
    gotrue.override = create_without_id
    findings = run(kong)
    assert only(findings.issues, "AUTH_USER_CREATE_FAILED").evidence["error_code"] == \
        "no_user_id"
    assert gotrue.users == {}
    assert findings.details["synthetic_user"]["deleted"] is True


def test_leftovers_of_earlier_runs_are_removed_first_and_only_those() -> None:
    kong = FakeKong()
    old = [kong.gotrue.seed(f"doctor-old{i}@{DOMAIN}", timedelta(hours=2)) for i in range(2)]
    young = kong.gotrue.seed(f"doctor-young@{DOMAIN}", timedelta(seconds=30))
    real = kong.gotrue.seed("alice@example.com", timedelta(days=3))
    findings = run(kong)
    assert findings.issues == ()
    assert findings.details["synthetic_user"]["leftovers_removed"] == 2
    assert set(kong.gotrue.users) == {young, real}
    deletes = [p for m, p in kong.paths() if m == "DELETE"]
    assert {d.rsplit("/", 1)[1] for d in deletes[:2]} == set(old)
    listing = next(r for r in kong.requests if r.method == "GET" and "admin" in r.url.path)
    assert listing.url.params["filter"] == DOMAIN
    # leftovers go before this run's create
    methods = [m for m, p in admin_calls(kong)]
    assert methods == ["GET", "DELETE", "DELETE", "POST", "DELETE"]


def test_a_hanging_admin_api_costs_one_timeout_and_creates_nothing() -> None:
    kong = FakeKong()

    def hang_admin(request: httpx.Request, path: str) -> httpx.Response | None:
        if path.startswith("/admin/"):
            raise httpx.ReadTimeout("timed out", request=request)
        return None
    kong.gotrue.override = hang_admin
    findings = run(kong)
    failure = only(findings.issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["error_code"] == "timeout"
    assert "create not attempted" in failure.evidence["msg"]
    assert [m for m, _ in admin_calls(kong)] == ["GET"]


def test_without_the_synthetic_run_no_admin_call_is_made() -> None:
    kong = FakeKong()
    findings = run(kong, run_synthetic_user=False)
    assert admin_calls(kong) == []
    assert findings.details["synthetic_user"]["ran"] is False
    assert findings.details["synthetic_user"]["reason"] == "not requested for this run"
    assert findings.issues == ()


# -- role claims -----------------------------------------------------------------------------

def test_a_service_key_with_the_anon_role_fails_creation_with_that_evidence() -> None:
    wrong = key("anon")
    kong = FakeKong(keys=(ANON, wrong))
    findings = run(kong, instance=make_instance(service_role_key=wrong))
    failure = only(findings.issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["error_code"] == "not_admin" and failure.evidence["status"] == 403
    assert failure.evidence["service_key"]["role"] == "anon"
    assert failure.evidence["service_key"]["role_valid"] is False
    assert "JWT_SECRET_MISMATCH" not in codes(findings.issues)
    assert findings.details["keys"]["service_role"]["role_valid"] is False


def test_a_wrong_service_role_is_predicted_when_the_synthetic_test_does_not_run() -> None:
    wrong = key("anon")
    findings = run(FakeKong(keys=(ANON, wrong)),
                   instance=make_instance(service_role_key=wrong), run_synthetic_user=False)
    failure = only(findings.issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["step"] == "precheck"
    assert failure.evidence["error_code"] == "wrong_role"
    assert failure.evidence["status"] is None


# -- JWT expiry and secret -------------------------------------------------------------------

def test_an_expired_anon_key_and_an_expiring_service_key() -> None:
    expired = key("anon", issued=NOW - timedelta(days=400))
    expiring = key("service_role", issued=NOW - timedelta(days=350))
    kong = FakeKong(keys=(expired, expiring))
    findings = run(kong, instance=make_instance(anon_key=expired, service_role_key=expiring))
    gone = only(findings.issues, "JWT_KEY_EXPIRED")
    assert gone.evidence["key"] == "anon" and gone.component == "auth"
    assert gone.evidence["days_left"] < 0
    soon = only(findings.issues, "JWT_KEY_EXPIRING")
    assert soon.evidence["key"] == "service_role"
    assert 0 < soon.evidence["days_left"] <= 30
    assert soon.severity == "warning"
    assert findings.details["keys"]["anon"]["exp"] == gone.evidence["exp"]


def test_a_weak_secret_is_reported_without_showing_it() -> None:
    weak = "only-20-chars-secret"
    instance = make_instance(jwt_secret=weak, anon_key=key("anon", weak + "x" * 12),
                             service_role_key=key("service_role", weak + "x" * 12))
    findings = run(None, instance=instance, run_synthetic_user=False)
    issue = only(findings.issues, "JWT_SECRET_WEAK")
    assert issue.severity == "critical"  # PostgREST v12 refuses every JWT with it
    assert "PostgREST v12 rejects every request" in issue.message
    assert issue.evidence["length"] == 20 and issue.evidence["minimum"] == 32
    assert issue.evidence["secret_fingerprint"] == fingerprint(weak)
    assert weak not in json.dumps(issue.to_dict())


def test_a_secret_is_measured_in_bytes_as_hmac_sees_it() -> None:
    secret = "é" * 20  # 20 characters, 40 bytes
    instance = make_instance(jwt_secret=secret, anon_key=key("anon", secret),
                             service_role_key=key("service_role", secret))
    findings = run(None, instance=instance, run_synthetic_user=False)
    assert "JWT_SECRET_WEAK" not in codes(findings.issues)


def test_an_unknown_secret_leaves_signatures_unverified_not_mismatched() -> None:
    findings = run(FakeKong(), instance=make_instance(jwt_secret=None, runtime_env={}),
                   run_synthetic_user=False)
    assert "JWT_SECRET_MISMATCH" not in codes(findings.issues)
    assert findings.details["keys"]["anon"]["signature_valid"] is None
    assert findings.details["jwt_secret"]["known"] is False


# -- GoTrue health ---------------------------------------------------------------------------

def test_gotrue_answering_500_itself_is_unhealthy() -> None:
    kong = FakeKong()
    kong.gotrue.override = lambda request, path: gotrue_error(
        500, "unexpected_failure", "Database error") if path == "/health" else None
    findings = run(kong, run_synthetic_user=False)
    issue = only(findings.issues, "AUTH_UNHEALTHY")
    probe = issue.evidence["probes"]["/auth/v1/health"]
    assert probe["status"] == 500 and probe["origin"] == "upstream"
    assert probe["msg"] == "Database error"


def test_gateway_faults_are_not_blamed_on_gotrue() -> None:
    assert "AUTH_UNHEALTHY" not in codes(run(None, run_synthetic_user=False).issues)
    rejected = run(FakeKong(keys=(SERVICE,)), run_synthetic_user=False)
    assert "AUTH_UNHEALTHY" not in codes(rejected.issues)
    assert rejected.details["health"]["kong_error"] == "key_rejected"


def test_a_refused_gateway_fails_creation_at_the_gateway_layer() -> None:
    failure = only(run(None).issues, "AUTH_USER_CREATE_FAILED")
    assert failure.evidence["layer"] == "gateway"
    assert failure.evidence["error_code"] == "refused"
    assert failure.evidence["status"] is None


def test_a_hanging_gotrue_is_unhealthy_and_the_synthetic_test_is_skipped() -> None:
    kong = FakeKong()

    def hang(request: httpx.Request, path: str) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)
    kong.upstreams["auth"] = hang
    findings = run(kong)
    assert codes(findings.issues) == ["AUTH_UNHEALTHY"]
    assert findings.details["synthetic_user"]["ran"] is False
    assert "did not answer" in findings.details["synthetic_user"]["reason"]
    # Only the sweep's listing, which ran beside the probes: nothing was created.
    assert [m for m, _ in admin_calls(kong)] == ["GET"]


# -- GoTrue's own DSN on a real database -----------------------------------------------------

def dsn(password: str, user: str = "supabase_auth_admin") -> dict[str, dict[str, str]]:
    return {"auth": {"GOTRUE_JWT_SECRET": SECRET,
                     "GOTRUE_DB_DATABASE_URL": f"postgres://{user}:{password}@db:5432/postgres"}}


def test_gotrues_dsn_logs_in(pg: PgServer) -> None:
    findings = run(None, instance=make_instance(db_port=pg.port, runtime_env=dsn(PG_PASSWORD)),
                   run_synthetic_user=False)
    assert "AUTH_DB_CONNECTION_FAILED" not in codes(findings.issues)
    assert findings.details["db_login"]["outcome"] == "ok"
    assert findings.details["db_login"]["user"] == "supabase_auth_admin"


def test_gotrues_dsn_with_a_stale_password_fails(pg: PgServer) -> None:
    pg.set_password("supabase_auth_admin", "the-password-the-data-dir-was-made-with")
    findings = run(None, instance=make_instance(db_port=pg.port, runtime_env=dsn(PG_PASSWORD)),
                   run_synthetic_user=False)
    issue = only(findings.issues, "AUTH_DB_CONNECTION_FAILED")
    assert issue.component == "auth"
    assert issue.evidence["user"] == "supabase_auth_admin"
    assert issue.evidence["sqlstate"] == "28P01"
    assert issue.evidence["outcome"] == "auth_failed"
    assert issue.evidence["password_fingerprint"] == fingerprint(PG_PASSWORD)
    assert status_of(findings) == "failed"
    assert_no_secrets(findings)


def test_an_unreachable_database_is_not_a_dsn_fault(pg: PgServer) -> None:
    findings = run(None, instance=make_instance(db_port=free_port(),
                                                runtime_env=dsn(PG_PASSWORD)),
                   run_synthetic_user=False)
    assert "AUTH_DB_CONNECTION_FAILED" not in codes(findings.issues)
    assert findings.details["db_login"]["outcome"] == "unreachable"


@pytest.mark.parametrize("env", [{}, {"auth": {"GOTRUE_DB_DATABASE_URL": "not a url"}}])
def test_an_unknown_dsn_is_skipped_with_a_reason(env: dict[str, dict[str, str]]) -> None:
    findings = run(None, instance=make_instance(db_port=5999, runtime_env=env),
                   run_synthetic_user=False)
    assert "GOTRUE_DB_DATABASE_URL" in findings.details["db_login"]["skipped"]
