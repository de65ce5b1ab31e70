"""container_status on plain container data: which code for which state, and what is inspected."""

from __future__ import annotations

from datetime import timedelta

from exporter.checks.base import status_of
from exporter.checks.containers import ContainerStatusCheck
from tests.unit.checks.plainhost import (
    NOW,
    PG_PASSWORD,
    ScriptedDocker,
    codes,
    container,
    context,
    details,
    healthy,
    make_instance,
    only,
    with_container,
)


def stamp(ago: timedelta) -> str:
    """Docker's RFC 3339 time with nanoseconds, ago before NOW."""
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


def test_healthy_instance_needs_no_inspect() -> None:
    docker = ScriptedDocker()
    findings = ContainerStatusCheck().run(context(make_instance(), docker))
    assert findings.issues == ()
    assert docker.inspected == []
    auth = findings.details["components"]["auth"]
    assert auth == {"state": "running", "health": "healthy", "restarts": None,
                    "exit_code": None}
    assert len(findings.details["components"]) == 13


def test_missing_container() -> None:
    instance = with_container(make_instance(), "storage", None)
    findings = ContainerStatusCheck().run(context(instance, ScriptedDocker()))
    issue = only(findings.issues, "CONTAINER_MISSING")
    assert issue.component == "storage"
    assert issue.evidence["container_name"] == "supabase-storage-abcd1234"
    assert findings.details["components"]["storage"]["state"] == "missing"
    assert status_of(findings) == "failed"


def test_exited_container_is_inspected_for_exit_code() -> None:
    auth = container("auth", state="exited", status="Exited (1) 2 minutes ago")
    docker = ScriptedDocker(inspects={auth.id: details(
        auth, exit_code=1, restart_count=0, error="", finished_at=stamp(timedelta(minutes=2)),
        started_at=stamp(timedelta(minutes=3)))})
    findings = ContainerStatusCheck().run(
        context(with_container(make_instance(), "auth", auth), docker))
    issue = only(findings.issues, "CONTAINER_NOT_RUNNING")
    assert issue.component == "auth" and issue.evidence["exit_code"] == 1
    assert "exited with code 1" in issue.message
    assert docker.inspected == [auth.id]
    assert findings.details["components"]["auth"] == {
        "state": "exited", "health": None, "restarts": 0, "exit_code": 1}


def test_paused_container_says_paused() -> None:
    kong = container("kong", state="paused", status="Up 5 minutes (Paused)")
    findings = ContainerStatusCheck().run(
        context(with_container(make_instance(), "kong", kong), ScriptedDocker()))
    issue = only(findings.issues, "CONTAINER_NOT_RUNNING")
    assert "paused" in issue.message and issue.evidence["state"] == "paused"


def test_unhealthy_shows_last_healthcheck_output_redacted() -> None:
    db = container("db", status="Up 10 minutes (unhealthy)")
    leak = f"connection failed: password={PG_PASSWORD} rejected"
    docker = ScriptedDocker(inspects={db.id: details(db, health_log=("ok", leak))})
    findings = ContainerStatusCheck().run(
        context(with_container(make_instance(), "db", db), docker))
    issue = only(findings.issues, "CONTAINER_UNHEALTHY")
    assert issue.component == "db"
    shown = issue.evidence["last_output"]
    assert "connection failed" in shown and "rejected" in shown
    assert PG_PASSWORD not in shown and "<redacted sha256:" in shown
    assert codes(findings.issues) == ["CONTAINER_UNHEALTHY"]


def test_restarting_is_a_crash_loop_not_a_stopped_container() -> None:
    auth = container("auth", state="restarting", status="Restarting (1) 4 seconds ago")
    docker = ScriptedDocker(inspects={auth.id: details(
        auth, restart_count=7, exit_code=1,
        error="", started_at=stamp(timedelta(seconds=20)))})
    findings = ContainerStatusCheck().run(
        context(with_container(make_instance(), "auth", auth), docker))
    assert codes(findings.issues) == ["CONTAINER_CRASH_LOOP"]
    issue = findings.issues[0]
    assert issue.evidence["restart_count"] == 7 and issue.evidence["exit_code"] == 1
    assert findings.details["components"]["auth"]["restarts"] == 7


def test_many_restarts_with_a_recent_start_is_a_crash_loop() -> None:
    auth = container("auth", status="Up 20 seconds (health: starting)")
    recent = ScriptedDocker(inspects={auth.id: details(
        auth, restart_count=4, started_at=stamp(timedelta(seconds=30)))})
    instance = with_container(make_instance(), "auth", auth)
    assert codes(ContainerStatusCheck().run(context(instance, recent)).issues) == [
        "CONTAINER_CRASH_LOOP"]
    settled = ScriptedDocker(inspects={auth.id: details(
        auth, restart_count=4, started_at=stamp(timedelta(minutes=10)))})
    assert ContainerStatusCheck().run(context(instance, settled)).issues == ()


def test_restart_count_growing_between_runs_is_a_crash_loop() -> None:
    check = ContainerStatusCheck()
    auth = container("auth", status="Up 50 seconds (health: starting)")
    instance = with_container(make_instance(), "auth", auth)
    first = ScriptedDocker(inspects={auth.id: details(
        auth, restart_count=1, started_at=stamp(timedelta(minutes=5)))})
    assert check.run(context(instance, first)).issues == ()
    later = NOW + timedelta(minutes=5)
    second = ScriptedDocker(inspects={auth.id: details(
        auth, restart_count=3, started_at=(later - timedelta(minutes=3)).isoformat())})
    issue = only(check.run(context(instance, second, now=later)).issues,
                 "CONTAINER_CRASH_LOOP")
    assert "2 times since the previous check" in issue.message
    # A fresh check has no memory: the same counts alone are no loop.
    assert ContainerStatusCheck().run(context(instance, second, now=later)).issues == ()


def test_oom_killed_is_reported_with_the_stop() -> None:
    db = container("db", state="exited", status="Exited (137) 1 minute ago")
    docker = ScriptedDocker(inspects={db.id: details(db, exit_code=137, oom_killed=True)})
    findings = ContainerStatusCheck().run(
        context(with_container(make_instance(), "db", db), docker))
    assert codes(findings.issues) == ["CONTAINER_NOT_RUNNING", "CONTAINER_OOM_KILLED"]
    assert only(findings.issues, "CONTAINER_OOM_KILLED").evidence["exit_code"] == 137


def test_error_text_is_redacted_in_evidence() -> None:
    db = container("db", state="created", status="Created")
    docker = ScriptedDocker(inspects={db.id: details(
        db, exit_code=128, error=f"failed to start: secret {PG_PASSWORD}")})
    findings = ContainerStatusCheck().run(
        context(with_container(make_instance(), "db", db), docker))
    issue = only(findings.issues, "CONTAINER_NOT_RUNNING")
    assert "never started" in issue.message
    assert PG_PASSWORD not in str(issue.evidence)


def test_fresh_start_without_healthcheck_is_inspected_long_runs_are_not() -> None:
    containers = healthy()
    containers["meta"] = container("meta", status="Up 5 seconds")
    containers["rest"] = container("rest", status="Up 3 hours")
    docker = ScriptedDocker()
    ContainerStatusCheck().run(context(make_instance(containers), docker))
    assert docker.inspected == [containers["meta"].id]  # type: ignore[union-attr]


def test_docker_failing_mid_run_does_not_raise_and_stops_inspecting() -> None:
    containers = healthy()
    for name in ("auth", "rest", "storage"):
        containers[name] = container(name, state="exited")
    docker = ScriptedDocker(down=True)
    findings = ContainerStatusCheck().run(context(make_instance(containers), docker))
    assert codes(findings.issues) == ["CONTAINER_NOT_RUNNING"] * 3
    assert len(docker.inspected) == 1
    assert "timed out" in findings.details["inspect_error"]


def test_docker_unreachable_is_skipped_without_calls() -> None:
    docker = ScriptedDocker(down=True)
    findings = ContainerStatusCheck().run(
        context(make_instance(runtime_known=False), docker))
    assert findings.skipped == "docker unreachable" and findings.issues == ()
    assert docker.inspected == []
