"""Findings describe the present: recorded evidence of faults and of their heals, plain data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from exporter.checks.base import CheckResult, Findings, status_of
from exporter.diagnostic import Diagnostic
from exporter.discovery.model import COMPONENTS
from exporter.discovery.topology import template
from exporter.issues import Issue, make_issue
from exporter.logs.staleness import settle
from exporter.render import render_diagnostic
from exporter.rootcause import find_root_cause, order_issues

TOPOLOGY = template()
HEALTHY = {name: ("running", "healthy" if name not in ("rest", "kong") else None)
           for name in COMPONENTS}


def result(name: str, issues: Sequence[Issue] = (), **details: Any) -> CheckResult:
    findings = Findings(tuple(issues), details)
    return CheckResult(name, status_of(findings), 0.1, tuple(issues), details)


def containers(states: Mapping[str, tuple[str, str | None]] | None = None,
               issues: Sequence[Issue] = ()) -> CheckResult:
    shown = {**HEALTHY, **(states or {})}
    return result("container_status", issues, components={
        name: {"state": state, "health": health, "restarts": 0, "exit_code": None}
        for name, (state, health) in shown.items()})


def from_logs(code: str, component: str, *, seen_in: str | None = None, count: int = 9,
              roles: Sequence[str] = (), severity: str | None = None) -> Issue:
    evidence: dict[str, Any] = {
        "pattern": code.lower(), "count": count,
        "first_seen": "2026-12-06T08:50:00+00:00", "last_seen": "2026-12-06T08:55:00+00:00",
        "sample": f"{seen_in or component}: the outage's last line",
        "seen_in": [seen_in or component], "captures": {"role": list(roles)} if roles else {}}
    return make_issue(code, check="logs", component=component, message=code.lower(),
                      evidence=evidence, severity=severity)  # type: ignore[arg-type]


def live(code: str, component: str | None, check: str, **evidence: Any) -> Issue:
    return make_issue(code, check=check, component=component, message=code.lower(),
                      evidence=evidence)


def diagnose(results: Mapping[str, CheckResult]) -> Diagnostic:
    """What the engine does with a run's results (settle, order, root cause)."""
    settled, events = settle(results, TOPOLOGY)
    issues = order_issues([i for r in settled.values() for i in r.issues])
    return Diagnostic("healed01", datetime(2026, 12, 6, 9, tzinfo=UTC), 1.0, settled,
                      tuple(issues), find_root_cause(issues, topology=TOPOLOGY),
                      recent_events=events)


# The logs of the db outage, as the first sweep after `docker start db` reads them.
DB_OUTAGE_LOGS = [
    from_logs("DB_UNREACHABLE", "db", seen_in="auth"),
    from_logs("LOG_ERROR_SPIKE", "auth"),
    from_logs("GATEWAY_UPSTREAM_ERROR", "kong"),
    from_logs("DB_CONNECTIONS_HIGH", "db", severity="warning"),
]


def test_after_the_heal_the_first_run_whose_live_checks_pass_is_healthy() -> None:
    diagnostic = diagnose({"container_status": containers(),
                           "database_connection": result("database_connection",
                                                         roles={"authenticator": "ok"},
                                                         superuser="supabase_admin"),
                           "logs": result("logs", DB_OUTAGE_LOGS)})
    assert diagnostic.healthy and diagnostic.issues == () and diagnostic.root_cause is None
    events = {(e.code, e.component): e for e in diagnostic.recent_events}
    assert set(events) == {(i.code, i.component) for i in DB_OUTAGE_LOGS}
    db = events[("DB_UNREACHABLE", "db")]
    assert db.count == 9 and db.last_seen == "2026-12-06T08:55:00+00:00"
    assert db.excerpt == "auth: the outage's last line" and "db runs" in db.ended
    # Never an issue, never a repair: the logs check reads ok, its findings say why.
    logs = diagnostic.results["logs"]
    assert logs.status == "ok" and logs.issues == ()
    assert sorted(logs.details["over_by_live_checks"]) == sorted(i.code for i in DB_OUTAGE_LOGS)
    out = diagnostic.to_dict()
    assert out["issues"] == [] and len(out["recent_events"]) == 4
    assert all("repair" not in e for e in out["recent_events"])
    assert Diagnostic.from_dict(out).recent_events == diagnostic.recent_events


def test_while_the_db_is_down_its_log_findings_and_its_users_stay() -> None:
    down = live("CONTAINER_NOT_RUNNING", "db", "container_status", state="exited")
    diagnostic = diagnose({
        "container_status": containers({"db": ("exited", None)}, [down]),
        "logs": result("logs", [*DB_OUTAGE_LOGS, from_logs("LOG_ERROR_SPIKE", "imgproxy")])})
    codes = {(i.code, i.component) for i in diagnostic.issues}
    # The db is down: what it shows, and what its users (auth needs db, kong needs auth) show.
    assert {("DB_UNREACHABLE", "db"), ("LOG_ERROR_SPIKE", "auth"),
            ("GATEWAY_UPSTREAM_ERROR", "kong")} <= codes
    # imgproxy needs nothing that fails and runs healthy: its old errors are over.
    assert [(e.code, e.component) for e in diagnostic.recent_events] == [
        ("LOG_ERROR_SPIKE", "imgproxy")]
    assert diagnostic.root_cause is not None
    assert diagnostic.root_cause.issue.code == "CONTAINER_NOT_RUNNING"


def test_a_slow_answer_does_not_bring_a_healed_outage_back() -> None:
    # Measured by bench.accuracy on a loaded host: rest answered in 2.98 s, and the kong
    # log lines of an outage healed minutes before became issues of a healthy instance.
    slow = live("ENDPOINT_SLOW", "rest", "api_endpoints", seconds=2.98)
    outage = [from_logs("GATEWAY_UPSTREAM_ERROR", "kong"), from_logs("LOG_ERROR_SPIKE", "kong"),
              from_logs("JWT_SECRET_MISMATCH", "auth")]
    diagnostic = diagnose({"container_status": containers(),
                           "api_endpoints": result("api_endpoints", [slow]),
                           "logs": result("logs", outage)})
    assert [(i.code, i.component) for i in diagnostic.issues] == [("ENDPOINT_SLOW", "rest")]
    assert sorted(e.code for e in diagnostic.recent_events) == sorted(i.code for i in outage)
    # A live failure on what kong needs still keeps kong's lines.
    down = live("COMPONENT_UNREACHABLE", "rest", "api_endpoints")
    kept = diagnose({"container_status": containers(),
                     "api_endpoints": result("api_endpoints", [down]),
                     "logs": result("logs", outage)})
    assert {"GATEWAY_UPSTREAM_ERROR", "LOG_ERROR_SPIKE"} <= {i.code for i in kept.issues}


def test_a_rejected_role_is_over_only_once_that_role_logs_in() -> None:
    rejected = from_logs("DB_ROLE_PASSWORD_MISMATCH", "db", roles=["supabase_auth_admin"])
    for state, over in (("password_mismatch", False), ("ok", True)):
        diagnostic = diagnose({
            "container_status": containers(),
            "database_connection": result("database_connection",
                                          roles={"supabase_auth_admin": state}),
            "logs": result("logs", [rejected])})
        assert (not diagnostic.issues) is over, state
        assert bool(diagnostic.recent_events) is over, state


def test_a_crash_loop_of_a_container_that_now_runs_healthy_is_a_recent_event() -> None:
    loop = live("CONTAINER_CRASH_LOOP", "auth", "container_status", state="running",
                restart_count=5, started_at="2026-12-06T08:59:30Z")
    healed = diagnose({"container_status": containers(issues=[loop])})
    assert healed.healthy
    assert [(e.code, e.count, e.last_seen) for e in healed.recent_events] == [
        ("CONTAINER_CRASH_LOOP", 5, "2026-12-06T08:59:30Z")]
    # Still starting: no verdict yet, the loop stays an issue.
    starting = diagnose({"container_status": containers({"auth": ("running", "starting")},
                                                        [loop])})
    assert [i.code for i in starting.issues] == ["CONTAINER_CRASH_LOOP"]
    assert starting.recent_events == ()


def test_a_live_issue_on_the_component_keeps_its_log_findings() -> None:
    # Kong runs healthy but proxies to an old address: its logged upstream errors hold.
    stale = live("GATEWAY_UPSTREAM_STALE", "kong", "api_endpoints", upstream="auth")
    diagnostic = diagnose({"container_status": containers(),
                           "api_endpoints": result("api_endpoints", [stale]),
                           "logs": result("logs", [from_logs("GATEWAY_UPSTREAM_ERROR",
                                                             "kong")])})
    assert {i.code for i in diagnostic.issues} == {"GATEWAY_UPSTREAM_STALE",
                                                   "GATEWAY_UPSTREAM_ERROR"}
    assert diagnostic.recent_events == ()
    root = diagnostic.root_cause
    assert root is not None and root.issue.code == "GATEWAY_UPSTREAM_STALE"
    assert root.chain[0]["link"] == "kong->auth"


def test_without_container_status_nothing_is_shown_over() -> None:
    findings = [from_logs("LOG_ERROR_SPIKE", "auth")]
    settled, events = settle({"logs": result("logs", findings)}, TOPOLOGY)
    assert settled["logs"].issues == tuple(findings) and events == ()


def test_matches_a_later_start_showed_over_are_recent_events_too() -> None:
    pattern = {"code": "AUTH_DB_CONNECTION_FAILED", "component": "auth", "count": 3,
               "first_seen": "2026-12-06T08:50:00+00:00",
               "last_seen": "2026-12-06T08:51:00+00:00", "sample": "failed to connect",
               "resolved_at": "2026-12-06T08:52:00+00:00"}
    _, events = settle({"logs": result("logs", patterns=[pattern])}, TOPOLOGY)
    assert [(e.code, e.component, e.count) for e in events] == [
        ("AUTH_DB_CONNECTION_FAILED", "auth", 3)]
    assert "08:52" in events[0].ended


def test_a_start_order_dependency_does_not_hold_a_service_s_findings() -> None:
    # auth waits for analytics at start (depends_on) but does not use it while it runs.
    down = live("CONTAINER_UNHEALTHY", "analytics", "container_status")
    diagnostic = diagnose({
        "container_status": containers({"analytics": ("running", "unhealthy")}, [down]),
        "logs": result("logs", [from_logs("LOG_ERROR_SPIKE", "auth")])})
    assert [(e.code, e.component) for e in diagnostic.recent_events] == [
        ("LOG_ERROR_SPIKE", "auth")]


def test_the_terminal_shows_recent_events_apart_from_issues() -> None:
    healed = diagnose({"container_status": containers(),
                       "logs": result("logs", [from_logs("LOG_ERROR_SPIKE", "auth")])})
    text = render_diagnostic(healed)
    assert text.startswith("Instance healed01: healthy")
    assert "Issues:" not in text
    events = text[text.index("Recent events"):]
    assert "LOG_ERROR_SPIKE [auth] x9: auth: the outage's last line" in events
    down = live("CONTAINER_NOT_RUNNING", "db", "container_status", state="exited")
    broken = diagnose({"container_status": containers({"db": ("exited", None)}, [down]),
                       "logs": result("logs", DB_OUTAGE_LOGS)})
    text = render_diagnostic(broken)
    assert "Root cause: CONTAINER_NOT_RUNNING [db]" in text
    assert "  Chain: db (" in text and "-> auth (" in text
