"""Root-cause rules on the fault matrix's issue sets, written as plain data."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.issues import CATALOGUE, Issue, make_issue
from exporter.rootcause import REACH, ROLES, explains, find_root_cause


def issue(code: str, component: str | None = None, check: str = "x",
          evidence: dict[str, Any] | None = None) -> Issue:
    return make_issue(code, check=check, message=code.lower(), component=component,
                      evidence=evidence)


SCENARIOS = {
    "auth stopped": ([
        issue("CONTAINER_NOT_RUNNING", "auth"), issue("GATEWAY_UPSTREAM_ERROR", "auth"),
        issue("AUTH_UNHEALTHY", "auth"), issue("AUTH_USER_CREATE_FAILED", "auth"),
        issue("INTERNAL_LINK_DOWN", "auth"),
    ], ("CONTAINER_NOT_RUNNING", "auth")),
    "auth hangs": ([
        issue("COMPONENT_UNREACHABLE", "auth"), issue("GATEWAY_UPSTREAM_ERROR", "auth"),
        issue("AUTH_UNHEALTHY", "auth"), issue("AUTH_USER_CREATE_FAILED", "auth"),
    ], ("COMPONENT_UNREACHABLE", "auth")),
    "role password differs": ([
        issue("CONTAINER_CRASH_LOOP", "auth"), issue("CONTAINER_NOT_RUNNING", "auth"),
        issue("AUTH_UNHEALTHY", "auth"), issue("AUTH_USER_CREATE_FAILED", "auth"),
        issue("AUTH_DB_CONNECTION_FAILED", "auth"), issue("GATEWAY_UPSTREAM_ERROR", "auth"),
        issue("DB_ROLE_PASSWORD_MISMATCH", "auth", check="logs"),
        issue("DB_ROLE_PASSWORD_MISMATCH", "auth", check="database_connection"),
    ], ("DB_ROLE_PASSWORD_MISMATCH", "auth")),
    "key signed with another secret": ([
        issue("AUTH_USER_CREATE_FAILED", "auth"), issue("JWT_SECRET_MISMATCH", "auth"),
    ], ("JWT_SECRET_MISMATCH", "auth")),
    "key expired": ([
        issue("AUTH_USER_CREATE_FAILED", "auth"), issue("JWT_KEY_EXPIRED", "auth"),
    ], ("JWT_KEY_EXPIRED", "auth")),
    "kong key differs": ([
        issue("CONFIG_DRIFT"), issue("AUTH_USER_CREATE_FAILED", "auth"),
        issue("GATEWAY_KEY_REJECTED", "kong"),
    ], ("GATEWAY_KEY_REJECTED", "kong")),
    "db stopped": ([
        issue("CONTAINER_NOT_RUNNING", "db"), issue("DB_UNREACHABLE", "db"),
        issue("PORT_NOT_LISTENING", "db"), issue("CONTAINER_CRASH_LOOP", "auth"),
        issue("GATEWAY_UPSTREAM_ERROR", "auth"), issue("AUTH_UNHEALTHY", "auth"),
        issue("AUTH_USER_CREATE_FAILED", "auth"), issue("COMPONENT_UNHEALTHY", "rest"),
        issue("AUTH_DB_CONNECTION_FAILED", "auth"),
    ], ("DB_UNREACHABLE", "db")),
    "kong stopped": ([
        issue("GATEWAY_UNREACHABLE", "kong"), issue("CONTAINER_NOT_RUNNING", "kong"),
        issue("PORT_NOT_LISTENING", "kong"), issue("AUTH_USER_CREATE_FAILED", "auth"),
        issue("AUTH_UNHEALTHY", "auth"),
    ], ("CONTAINER_NOT_RUNNING", "kong")),
    "port taken": ([
        issue("CONTAINER_NOT_RUNNING", "kong"), issue("GATEWAY_UNREACHABLE", "kong"),
        issue("PORT_CONFLICT", "kong"), issue("AUTH_USER_CREATE_FAILED", "auth"),
    ], ("PORT_CONFLICT", "kong")),
    "auth recreated, kong holds its old address": ([
        issue("GATEWAY_UPSTREAM_STALE", "kong", check="api_endpoints"),
        issue("AUTH_USER_CREATE_FAILED", "auth"), issue("ENDPOINT_SLOW", "auth"),
        issue("GATEWAY_UPSTREAM_ERROR", "kong", check="logs"),
        issue("LOG_ERROR_SPIKE", "kong", check="logs"),
    ], ("GATEWAY_UPSTREAM_STALE", "kong")),
    "auth stopped behind kong's cache": ([
        issue("CONTAINER_NOT_RUNNING", "auth"), issue("AUTH_UNHEALTHY", "auth"),
        issue("GATEWAY_UPSTREAM_ERROR", "auth"), issue("GATEWAY_UPSTREAM_ERROR", "kong",
                                                       check="logs"),
        issue("LOG_ERROR_SPIKE", "kong", check="logs"),
    ], ("CONTAINER_NOT_RUNNING", "auth")),
    "volume removed": ([issue("VOLUME_MISSING", "storage")], ("VOLUME_MISSING", "storage")),
    # GoTrue logs in, then its migration SQL fails: only its last words say so.
    "auth migration fails": ([
        issue("CONTAINER_CRASH_LOOP", "auth"), issue("AUTH_UNHEALTHY", "auth"),
        issue("GATEWAY_UPSTREAM_ERROR", "auth"), issue("AUTH_USER_CREATE_FAILED", "auth"),
        issue("LOG_ERROR_SPIKE", "auth", check="logs"),
        issue("AUTH_MIGRATION_FAILED", "auth", check="logs"),
    ], ("AUTH_MIGRATION_FAILED", "auth")),
    "auth schema missing": ([
        issue("CONTAINER_CRASH_LOOP", "auth"), issue("DB_SCHEMA_MISSING", "db"),
        issue("AUTH_MIGRATION_FAILED", "auth", check="logs"),
    ], ("DB_SCHEMA_MISSING", "db")),
    "auth setting empty": ([
        issue("CONTAINER_NOT_RUNNING", "auth"), issue("GATEWAY_UPSTREAM_ERROR", "auth"),
        issue("AUTH_UNHEALTHY", "auth"), issue("AUTH_USER_CREATE_FAILED", "auth"),
        issue("AUTH_CONFIG_INVALID", "auth", check="logs"),
    ], ("AUTH_CONFIG_INVALID", "auth")),
    "jwt secret under 32 bytes": ([
        issue("REST_JWT_REJECTED", "rest", check="api_endpoints"),
        issue("JWT_SECRET_WEAK", "auth", check="auth_service"),
    ], ("JWT_SECRET_WEAK", "auth")),
    "rest runs with another secret": ([
        issue("REST_JWT_REJECTED", "rest", check="api_endpoints"),
        issue("JWT_SECRET_MISMATCH", "auth", check="auth_service"),
    ], ("JWT_SECRET_MISMATCH", "auth")),
    "disk low": ([issue("DISK_SPACE_LOW"), issue("JWT_KEY_EXPIRING", "auth")],
                 ("DISK_SPACE_LOW", None)),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_root_cause_of_each_fault(name: str) -> None:
    issues, (code, component) = SCENARIOS[name]
    # Order must not matter.
    for ordering in (issues, list(reversed(issues))):
        root = find_root_cause(ordering)
        assert root is not None
        assert (root.issue.code, root.issue.component) == (code, component)


def test_db_down_attributes_auth_and_rest_issues_to_it() -> None:
    issues, _ = SCENARIOS["db stopped"]
    root = find_root_cause(issues)
    assert root is not None
    explained = {(i.code, i.component) for i in root.explains}
    assert ("AUTH_DB_CONNECTION_FAILED", "auth") in explained
    assert ("COMPONENT_UNHEALTHY", "rest") in explained
    assert ("CONTAINER_NOT_RUNNING", "db") in explained
    assert len(root.explains) == len(issues) - 1


def test_rules_are_directional() -> None:
    db_down = issue("DB_UNREACHABLE", "db")
    auth_crash = issue("CONTAINER_CRASH_LOOP", "auth")
    assert explains(db_down, auth_crash)
    assert not explains(auth_crash, db_down)
    # A stopped storage container does not explain a failing auth.
    assert not explains(issue("CONTAINER_NOT_RUNNING", "storage"),
                        issue("AUTH_UNHEALTHY", "auth"))


def test_no_issues_or_only_info_means_no_root() -> None:
    assert find_root_cause([]) is None
    info = make_issue("JWT_KEY_EXPIRING", check="x", message="m", severity="info")
    assert find_root_cause([info]) is None


def test_unrelated_issues_root_is_most_severe() -> None:
    root = find_root_cause([issue("DISK_SPACE_LOW"), issue("VOLUME_MISSING", "storage")])
    assert root is not None and root.issue.code == "VOLUME_MISSING"
    assert root.explains == ()


def test_log_findings_never_explain_live_ones() -> None:
    stale = issue("JWT_SECRET_MISMATCH", "auth", check="logs")
    live = [issue("AUTH_USER_CREATE_FAILED", "auth", check="auth_service"),
            issue("GATEWAY_KEY_REJECTED", "kong", check="auth_service"), stale]
    root = find_root_cause(live)
    assert root is not None and root.issue.code == "GATEWAY_KEY_REJECTED"
    assert not explains(stale, live[0])
    # Alone, a log finding can still be the root.
    alone = find_root_cause([stale])
    assert alone is not None and alone.issue is stale


def test_only_a_services_own_start_failures_explain_from_the_logs() -> None:
    crash = issue("CONTAINER_CRASH_LOOP", "auth", check="container_status")
    assert explains(issue("AUTH_CONFIG_INVALID", "auth", check="logs"), crash)
    assert explains(issue("AUTH_MIGRATION_FAILED", "auth", check="logs"), crash)
    # ... of that service only, and nothing else read from the logs.
    assert not explains(issue("AUTH_MIGRATION_FAILED", "auth", check="logs"),
                        issue("CONTAINER_CRASH_LOOP", "rest", check="container_status"))
    assert not explains(issue("AUTH_DB_CONNECTION_FAILED", "auth", check="logs"), crash)
    assert not explains(crash, issue("AUTH_MIGRATION_FAILED", "auth", check="logs"))


def test_a_start_up_failure_from_the_logs_outranks_an_unrelated_live_warning() -> None:
    # A loaded host: the db's healthcheck is slow while auth cannot load its configuration.
    slow_db = make_issue("CONTAINER_UNHEALTHY", check="container_status", message="slow",
                         component="db", severity="warning")
    config = issue("AUTH_CONFIG_INVALID", "auth", check="logs")
    root = find_root_cause([slow_db, issue("AUTH_UNHEALTHY", "auth", check="auth_service"),
                            config])
    assert root is not None and root.issue is config
    # Other log findings still come after every live one.
    stale = issue("DB_ROLE_PASSWORD_MISMATCH", "db", check="logs")
    root = find_root_cause([slow_db, stale])
    assert root is not None and root.issue is slow_db


def test_a_stale_kong_route_explains_what_fails_through_the_gateway() -> None:
    stale = issue("GATEWAY_UPSTREAM_STALE", "kong", check="api_endpoints")
    for effect in (issue("AUTH_USER_CREATE_FAILED", "auth"), issue("AUTH_UNHEALTHY", "auth"),
                   issue("GATEWAY_UPSTREAM_ERROR", "rest"), issue("LOG_ERROR_SPIKE", "kong")):
        assert explains(stale, effect)
        assert not explains(effect, stale)
    # Nothing about the service itself: a db down is not Kong's cache.
    assert not explains(stale, issue("DB_UNREACHABLE", "db"))
    assert not explains(stale, issue("CONTAINER_NOT_RUNNING", "auth"))
    root = find_root_cause([issue("CONTAINER_NOT_RUNNING", "db"), stale])
    assert root is not None and root.issue.code == "CONTAINER_NOT_RUNNING"


def test_the_chain_runs_from_the_root_to_its_effects_along_the_topology() -> None:
    issues, _ = SCENARIOS["db stopped"]
    root = find_root_cause(issues)
    assert root is not None
    steps = [step.get("component") for step in root.chain]
    # The root's element first, then the components that need it.
    assert steps[0] == "db"
    assert set(steps) == {"db", "auth", "rest"}
    db_step = root.chain[0]
    assert {i["code"] for i in db_step["issues"]} == {
        "DB_UNREACHABLE", "CONTAINER_NOT_RUNNING", "PORT_NOT_LISTENING"}
    out = root.to_dict()
    assert out["chain"][0]["code"].startswith("DB_UNREACHABLE")


def test_the_most_upstream_failing_component_is_the_root() -> None:
    # rest needs db; a stopped db explains a stopped rest, not the other way round.
    rest = issue("CONTAINER_NOT_RUNNING", "rest", check="container_status")
    db = issue("CONTAINER_NOT_RUNNING", "db", check="container_status")
    root = find_root_cause([rest, db])
    assert root is not None and root.issue is db and root.explains == (rest,)
    # A missing container is nobody else's doing.
    missing = issue("CONTAINER_MISSING", "rest", check="container_status")
    assert not explains(db, missing)


def test_every_catalogue_code_says_where_it_sits_and_what_it_does() -> None:
    assert set(ROLES) == set(CATALOGUE)
    assert {role.kind for role in ROLES.values()} <= set(REACH)


def test_a_link_failing_between_healthy_ends_is_the_root() -> None:
    link = issue("INTERNAL_LINK_DOWN", "rest", check="network_connectivity",
                 evidence={"from": "kong", "to": "rest", "ends_healthy": True})
    probe = issue("COMPONENT_UNREACHABLE", "rest", check="service_health")
    route = issue("GATEWAY_UPSTREAM_ERROR", "rest", check="api_endpoints")
    root = find_root_cause([probe, route, link])
    assert root is not None and root.issue is link
    assert [i.code for i in root.explains] == ["COMPONENT_UNREACHABLE", "GATEWAY_UPSTREAM_ERROR"]
    assert root.chain[0]["link"] == "kong->rest"
    # Nothing on its ends explains it, and it explains nothing past what it carries.
    assert not explains(probe, link)
    assert not explains(link, issue("COMPONENT_UNREACHABLE", "auth"))
    assert not explains(link, issue("CONTAINER_NOT_RUNNING", "rest"))
    # Without that evidence, the same failure is rest's: it hangs, the link follows.
    plain = issue("INTERNAL_LINK_DOWN", "rest", check="network_connectivity",
                  evidence={"from": "kong", "to": "rest"})
    root = find_root_cause([probe, route, plain])
    assert root is not None and root.issue is probe and plain in root.explains


def test_kong_keeps_serving_when_an_upstream_fails() -> None:
    auth_down = issue("CONTAINER_NOT_RUNNING", "auth")
    assert not explains(auth_down, issue("GATEWAY_UNREACHABLE", "kong"))
    assert not explains(auth_down, issue("CONTAINER_CRASH_LOOP", "kong"))
    # What its routes lead to still shows on it.
    assert explains(auth_down, issue("GATEWAY_UPSTREAM_ERROR", "kong"))


def test_a_service_login_explains_its_service_and_what_needs_it() -> None:
    rest_login = issue("DB_ROLE_PASSWORD_MISMATCH", "db",
                       evidence={"role": "authenticator", "service": "rest"})
    assert explains(rest_login, issue("COMPONENT_UNHEALTHY", "rest"))
    assert explains(rest_login, issue("COMPONENT_UNHEALTHY", "storage"))  # storage needs rest
    assert not explains(rest_login, issue("AUTH_UNHEALTHY", "auth"))
    assert not explains(rest_login, issue("DB_UNREACHABLE", "db"))
