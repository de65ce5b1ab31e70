"""The logs check on logs served from plain data: issues, merging, spikes, details, secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence

import httpx
import pytest

from exporter.checks.base import CheckContext, CheckResult, Findings, status_of
from exporter.checks.logs import LogsCheck
from exporter.config import DiagnosticsConfig, Thresholds
from exporter.discovery.model import Instance
from exporter.logs.staleness import settle
from exporter.redaction import Redactor
from tests.unit.logs import samples
from tests.unit.logs.logdocker import (
    NOW,
    PG_PASSWORD,
    LogDocker,
    container_id,
    make_instance,
    stamp,
)

COMPONENTS = ("db", "auth", "rest", "kong")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def healthy() -> dict[str, list[str]]:
    """Every critical component started cleanly ten minutes ago."""
    bodies = {"db": samples.DB_HEALTHY, "auth": samples.AUTH_HEALTHY,
              "rest": samples.REST_HEALTHY, "kong": samples.KONG_HEALTHY}
    return {container_id(c): [stamp(600 - n, b) for n, b in enumerate(lines)]
            for c, lines in bodies.items()}


def run(http: httpx.Client, logs: Mapping[str, Sequence[str]], *, spike: int = 20,
        window: float = 900.0, max_lines: int = 1000, instance: Instance | None = None,
        docker: LogDocker | None = None) -> Findings:
    instance = instance or make_instance(COMPONENTS)
    config = DiagnosticsConfig(log_window_seconds=window, log_max_lines=max_lines,
                               thresholds=Thresholds(log_error_spike=spike))
    ctx = CheckContext(instance=instance, config=config, docker=docker or LogDocker(logs),
                       http=http, redactor=Redactor(instance.secrets()), now=NOW)
    return LogsCheck().run(ctx)


def codes(findings: Findings) -> list[tuple[str, str | None]]:
    return sorted((i.code, i.component) for i in findings.issues)


def test_healthy_logs_raise_nothing_and_count_every_level(http: httpx.Client) -> None:
    findings = run(http, healthy())
    assert findings.issues == ()
    assert status_of(findings) == "ok"
    lines = findings.details["log_lines"]
    assert set(lines) == set(COMPONENTS)
    assert lines["kong"] == {"debug": 1, "info": 4, "warning": 1, "error": 0, "fatal": 0}
    assert lines["db"] == {"debug": 0, "info": 5, "warning": 1, "error": 0, "fatal": 0}
    assert findings.details["patterns"] == []
    assert findings.details["window_seconds"] == 900.0


def test_a_rejected_password_seen_in_three_logs_is_one_issue_on_db(http: httpx.Client) -> None:
    logs = healthy()
    logs[container_id("auth")] += [stamp(120 - 10 * n, samples.AUTH_PASSWORD_FATAL)
                                   for n in range(3)]
    logs[container_id("db")] += [stamp(120 - 10 * n, line) for n in range(3)
                                 for line in samples.DB_PASSWORD_FATAL]
    logs[container_id("rest")] += [stamp(100, line) for line in samples.REST_PASSWORD_FAILED]
    findings = run(http, logs)
    assert codes(findings) == [("DB_ROLE_PASSWORD_MISMATCH", "db")]
    (issue,) = findings.issues
    assert issue.check == "logs"
    assert issue.severity == "critical"
    assert issue.repair == "sync_db_role_passwords"
    evidence = issue.evidence
    assert evidence["count"] == 3 + 3 + 2
    assert evidence["pattern"] == "db_role_password"
    assert set(evidence["seen_in"]) == {"auth", "db", "rest"}
    assert set(evidence["captures"]["role"]) == {"supabase_auth_admin", "authenticator"}
    assert evidence["first_seen"] < evidence["last_seen"]
    assert "password authentication failed" in evidence["sample"]
    assert "also seen in" in issue.message
    assert status_of(findings) == "failed"


def test_a_fault_that_a_restart_cleared_is_listed_but_raises_nothing(http: httpx.Client) -> None:
    logs = healthy()
    logs[container_id("auth")] += [stamp(300, samples.AUTH_PASSWORD_FATAL),
                                   stamp(200, samples.AUTH_STARTED)]
    logs[container_id("db")] += [stamp(300, line) for line in samples.DB_PASSWORD_FATAL]
    findings = run(http, logs)
    assert findings.issues == ()
    patterns = findings.details["patterns"]
    assert {(p["code"], p["seen_in"]) for p in patterns} == {
        ("DB_ROLE_PASSWORD_MISMATCH", "auth"), ("DB_ROLE_PASSWORD_MISMATCH", "db")}
    assert all(p["resolved_at"] is not None for p in patterns)


def test_kong_failures(http: httpx.Client) -> None:
    logs = healthy()
    logs[container_id("kong")] += [
        stamp(50, samples.KONG_UPSTREAM_REFUSED), stamp(50, samples.KONG_ACCESS_502),
        stamp(40, samples.KONG_UPSTREAM_TIMEOUT), stamp(30, samples.KONG_DNS_FAILED)]
    findings = run(http, logs)
    (issue,) = findings.issues
    assert (issue.code, issue.component, issue.severity) == (
        "GATEWAY_UPSTREAM_ERROR", "kong", "warning")
    assert issue.evidence["count"] == 3
    # restarting kong would not help: the upstream is what fails
    assert issue.repair is None


def test_kong_rejecting_its_config(http: httpx.Client) -> None:
    logs = healthy()
    logs[container_id("kong")] = [stamp(100, line) for line in samples.KONG_DUPLICATE_SERVICE]
    findings = run(http, logs)
    (issue,) = findings.issues
    assert (issue.code, issue.component, issue.severity) == (
        "GATEWAY_UNREACHABLE", "kong", "critical")
    assert "rest-v1" in issue.message
    assert issue.repair is None


def test_error_spike_at_the_threshold(http: httpx.Client) -> None:
    logs = healthy()
    logs[container_id("kong")] += [stamp(50 - n, samples.KONG_ACCESS_502) for n in range(3)]
    below = run(http, logs, spike=4)
    assert below.issues == ()
    at = run(http, logs, spike=3)
    assert codes(at) == [("LOG_ERROR_SPIKE", "kong")]
    (issue,) = at.issues
    assert issue.severity == "warning"
    assert issue.evidence["error_count"] == 3 and issue.evidence["threshold"] == 3
    assert "3 errors in the last 15 min" in issue.message
    assert issue.evidence["latest"] == "POST /auth/v1/admin/users HTTP/1.1 502"


def test_fatal_counts_toward_the_spike_but_warnings_do_not(http: httpx.Client) -> None:
    logs = healthy()
    logs[container_id("auth")] += [stamp(50, samples.AUTH_PASSWORD_FATAL)]
    logs[container_id("auth")] += [stamp(40, '{"level":"error","msg":"boom"}')]
    logs[container_id("kong")] += [stamp(30 - n, samples.KONG_ACCESS_401) for n in range(5)]
    findings = run(http, logs, spike=2)
    assert ("LOG_ERROR_SPIKE", "auth") in codes(findings)
    assert ("LOG_ERROR_SPIKE", "kong") not in codes(findings)


def test_the_window_and_line_cap_come_from_the_config(http: httpx.Client) -> None:
    docker = LogDocker(healthy())
    run(http, {}, window=600.0, max_lines=50, docker=docker)
    assert len(docker.calls) == len(COMPONENTS)
    assert {tail for _, _, tail in docker.calls} == {50}
    assert {since for _, since, _ in docker.calls} == {NOW.timestamp() - 600}


def test_stopped_containers_are_read_too(http: httpx.Client) -> None:
    instance = make_instance(("auth",), state="exited")
    logs = {container_id("auth"): [stamp(30, samples.AUTH_PASSWORD_FATAL)]}
    assert codes(run(http, logs, instance=instance)) == [("DB_ROLE_PASSWORD_MISMATCH", "db")]


def test_skipped_without_containers(http: httpx.Client) -> None:
    findings = run(http, {}, instance=make_instance((), without_container=COMPONENTS))
    assert findings.skipped is not None
    assert status_of(findings) == "skipped"


def test_skipped_when_no_log_can_be_read(http: httpx.Client) -> None:
    docker = LogDocker({}, failing=[container_id(c) for c in COMPONENTS])
    findings = run(http, {}, docker=docker)
    assert findings.skipped == "no component's logs could be read"
    assert set(findings.details["unreadable"]) == set(COMPONENTS)


def test_truncated_components_are_reported(http: httpx.Client) -> None:
    logs = healthy()
    logs[container_id("kong")] += [stamp(60 - n, samples.KONG_HEALTHY[-1]) for n in range(10)]
    findings = run(http, logs, max_lines=10)
    assert findings.details["truncated"] == ["kong"]
    assert findings.details["log_lines"]["kong"]["info"] == 10


def test_no_secret_survives_into_findings(http: httpx.Client) -> None:
    logs = healthy()
    dsn_line = ('{"level":"fatal","msg":"running db migrations: failed to connect to '
                f'postgres://supabase_auth_admin:{PG_PASSWORD}@db:5432/postgres: dial error"}}')
    old_dsn = ('{"level":"error","msg":"error opening database: postgres://supabase_auth_admin:'
               'Former-Passw0rd@db:5432/postgres"}')
    logs[container_id("auth")] += [stamp(20, dsn_line), stamp(10, old_dsn)]
    findings = run(http, logs, spike=1)
    text = json.dumps({"issues": [i.to_dict() for i in findings.issues],
                       "details": findings.details})
    assert "AUTH_DB_CONNECTION_FAILED" in text
    assert PG_PASSWORD not in text
    assert "Former-Passw0rd" not in text


def _as_result(name: str, findings: Findings) -> CheckResult:
    return CheckResult(name, status_of(findings), 0.1, findings.issues, findings.details)


@pytest.mark.parametrize(("state", "kept"), [("ok", False), ("password_mismatch", True)])
def test_a_role_the_db_check_logs_in_now_shows_an_old_rejection_over(
        http: httpx.Client, state: str, kept: bool) -> None:
    # The password was fixed, then auth was recreated (its log with its later start is gone)
    # and does not start for another reason: only the live login says the password works.
    logs = healthy()
    logs[container_id("db")] += [stamp(300, b) for b in samples.DB_PASSWORD_FATAL]
    logs[container_id("auth")] = [stamp(20, samples.AUTH_CONFIG_EMPTY)]
    found = run(http, logs)
    assert ("DB_ROLE_PASSWORD_MISMATCH", "db") in codes(found)
    database = Findings(details={"roles": {"supabase_auth_admin": state, "authenticator": "ok"}})
    settled, events = settle({"logs": _as_result("logs", found),
                              "database_connection": _as_result("database_connection",
                                                                database)}, None)
    after = settled["logs"]
    assert any(i.code == "DB_ROLE_PASSWORD_MISMATCH" for i in after.issues) is kept
    assert any(i.code == "AUTH_CONFIG_INVALID" for i in after.issues)
    assert after.status == "failed"
    if not kept:
        assert after.details["over_by_live_checks"] == ["DB_ROLE_PASSWORD_MISMATCH"]
        event = next(e for e in events if e.code == "DB_ROLE_PASSWORD_MISMATCH")
        assert event.component == "db" and event.count and event.excerpt
        assert "supabase_auth_admin" in event.ended
    # Without the live check nothing is decided.
    alone, _ = settle({"logs": _as_result("logs", found)}, None)
    assert alone["logs"].issues == found.issues
