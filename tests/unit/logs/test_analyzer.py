"""LogAnalyzer over a DockerHost answering from plain data: filters, caps, redaction, failures."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from exporter.logs import LogAnalyzer, parse_level, parse_range
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

HOUR = 3600.0


def fleet_logs() -> dict[str, list[str]]:
    """An instance whose auth cannot log in; healthy otherwise; one old line per component."""
    return {
        container_id("db"): [
            stamp(2 * HOUR, samples.DB_HEALTHY[0]),
            *(stamp(600 - n, line) for n, line in enumerate(samples.DB_HEALTHY)),
            *(stamp(120, line) for line in samples.DB_PASSWORD_FATAL),
        ],
        container_id("auth"): [
            stamp(2 * HOUR, samples.AUTH_HEALTHY[0]),
            stamp(125, samples.AUTH_HEALTHY[0]),
            stamp(120, samples.AUTH_PASSWORD_FATAL),
            stamp(60, samples.AUTH_PASSWORD_FATAL),
        ],
        container_id("rest"): [stamp(500 - n, line) for n, line in enumerate(
            [*samples.REST_HEALTHY, *samples.REST_DB_REFUSED])],
        container_id("kong"): [
            *(stamp(550 - n, line) for n, line in enumerate(samples.KONG_HEALTHY)),
            stamp(30, samples.KONG_UPSTREAM_REFUSED), stamp(30, samples.KONG_ACCESS_502),
            stamp(20, samples.KONG_ACCESS_401),
        ],
    }


@pytest.fixture
def docker() -> Iterator[LogDocker]:
    host = LogDocker(fleet_logs())
    yield host
    host.release.set()


def analyzer(docker: LogDocker, timeout: float = 5.0) -> LogAnalyzer:
    return LogAnalyzer(docker, Redactor(), timeout=timeout)


# --- levels and order ---------------------------------------------------------------------

def test_error_level_means_error_and_fatal_newest_first(docker: LogDocker) -> None:
    entries, summary = analyzer(docker).get_structured_logs(
        make_instance(), level="error", since_seconds=HOUR, now=NOW)
    assert {e.level for e in entries} == {"error", "fatal"}
    assert [e.timestamp for e in entries] == sorted((e.timestamp for e in entries),
                                                    reverse=True)
    assert entries[0].component == "kong"  # the 502, 30 s ago
    assert summary.total_entries == len(entries) == 6
    assert summary.error_count == 6 and summary.warning_count == 0
    assert summary.by_component["auth"] == {"error": 0, "fatal": 2}
    assert summary.by_component["kong"] == {"error": 2, "fatal": 0}
    assert summary.by_component["db"] == {"error": 0, "fatal": 1}


def test_warning_level_adds_warnings(docker: LogDocker) -> None:
    _entries, summary = analyzer(docker).get_structured_logs(
        make_instance(), level="warning", since_seconds=HOUR, now=NOW)
    assert summary.warning_count == 4  # db WARNING, rest reconnect, kong [warn] and 401
    assert summary.error_count == 6
    assert set(summary.by_component["kong"]) == {"warning", "error", "fatal"}


def test_all_levels(docker: LogDocker) -> None:
    _entries, summary = analyzer(docker).get_structured_logs(
        make_instance(), level="all", since_seconds=HOUR, now=NOW)
    assert summary.by_component["kong"] == {"debug": 1, "info": 4, "warning": 2, "error": 2,
                                            "fatal": 0}
    assert summary.total_entries == sum(sum(v.values()) for v in summary.by_component.values())


def test_bad_arguments_raise_value_error(docker: LogDocker) -> None:
    logs = analyzer(docker)
    with pytest.raises(ValueError, match="invalid level"):
        logs.get_structured_logs(make_instance(), level="loud")
    with pytest.raises(ValueError, match="unknown service"):
        logs.get_structured_logs(make_instance(), services=["auth", "nope"])
    with pytest.raises(ValueError, match="since_seconds"):
        logs.get_structured_logs(make_instance(), since_seconds=0)
    with pytest.raises(ValueError, match="max_lines"):
        logs.get_structured_logs(make_instance(), max_lines=0)
    assert docker.calls == []


# --- window, services and caps ------------------------------------------------------------

def test_only_the_window_is_read_and_kept(docker: LogDocker) -> None:
    entries, summary = analyzer(docker).get_structured_logs(
        make_instance(), level="all", since_seconds=HOUR, now=NOW)
    assert all((NOW - e.timestamp).total_seconds() <= HOUR for e in entries)
    assert {since for _, since, _ in docker.calls} == {NOW.timestamp() - HOUR}
    assert summary.since.timestamp() == NOW.timestamp() - HOUR and summary.until == NOW


def test_one_docker_call_per_selected_service(docker: LogDocker) -> None:
    entries, summary = analyzer(docker).get_structured_logs(
        make_instance(), services=["auth", "rest", "auth"], level="all",
        since_seconds=HOUR, now=NOW)
    assert sorted(cid for cid, _, _ in docker.calls) == [container_id("auth"),
                                                         container_id("rest")]
    assert {e.component for e in entries} == {"auth", "rest"}
    assert set(summary.by_component) == {"auth", "rest"}


def test_max_lines_is_the_tail_per_component_and_flags_truncation(docker: LogDocker) -> None:
    _entries, summary = analyzer(docker).get_structured_logs(
        make_instance(), level="all", since_seconds=HOUR, max_lines=3, now=NOW)
    assert {tail for _, _, tail in docker.calls} == {3}
    assert set(summary.truncated) == {"db", "auth", "rest", "kong"}
    # db's last three lines are one FATAL with its DETAIL and continuation
    assert summary.by_component["db"]["fatal"] == 1
    assert sum(summary.by_component["db"].values()) == 1


def test_a_component_without_container_is_reported_not_read() -> None:
    docker = LogDocker(fleet_logs())
    instance = make_instance(("db", "auth"), without_container=("rest",))
    entries, summary = analyzer(docker).get_structured_logs(
        instance, services=["db", "rest"], level="all", since_seconds=HOUR, now=NOW)
    assert summary.unreadable == {"rest": "no container"}
    assert [cid for cid, _, _ in docker.calls] == [container_id("db")]
    assert {e.component for e in entries} == {"db"}


def test_default_services_are_every_component_with_a_container() -> None:
    docker = LogDocker(fleet_logs())
    instance = make_instance(("db", "auth", "rest", "kong"), without_container=("storage",))
    analyzer(docker).get_structured_logs(instance, since_seconds=HOUR, now=NOW)
    assert len(docker.calls) == 4
    assert container_id("storage") not in {cid for cid, _, _ in docker.calls}


def test_a_docker_failure_costs_only_that_component() -> None:
    docker = LogDocker(fleet_logs(), failing=[container_id("auth")])
    entries, summary = analyzer(docker).get_structured_logs(
        make_instance(), level="all", since_seconds=HOUR, now=NOW)
    assert "connection refused" in summary.unreadable["auth"]
    assert set(summary.by_component) == {"db", "rest", "kong"}
    assert entries


def test_a_hanging_component_costs_one_timeout() -> None:
    docker = LogDocker(fleet_logs(), hanging=[container_id("db"), container_id("kong")])
    started = time.monotonic()
    try:
        _entries, summary = analyzer(docker, timeout=0.3).get_structured_logs(
            make_instance(), level="all", since_seconds=HOUR, now=NOW)
    finally:
        docker.release.set()
    assert time.monotonic() - started < 2.0
    assert set(summary.unreadable) == {"db", "kong"}
    assert "within 0.3s" in summary.unreadable["db"]
    assert set(summary.by_component) == {"auth", "rest"}


# --- redaction ----------------------------------------------------------------------------

def test_every_returned_message_is_redacted() -> None:
    docker = LogDocker({
        container_id("auth"): [stamp(10, '{"level":"error","msg":"cannot use postgres://'
                                         f'supabase_auth_admin:{PG_PASSWORD}@db:5432/postgres"}}'),
                               stamp(5, '{"level":"error","msg":"dsn postgres://supabase_auth'
                                        '_admin:an-older-password@db:5432/postgres"}')],
    })
    # no redactor given: the instance's own secrets are still known
    logs = LogAnalyzer(docker)
    entries, summary = logs.get_structured_logs(make_instance(("auth",)), since_seconds=HOUR,
                                                now=NOW)
    text = repr([e.to_dict() for e in entries]) + repr(summary.to_dict())
    assert PG_PASSWORD not in text
    assert "an-older-password" not in text
    assert "supabase_auth_admin" in text
    assert "<redacted sha256:" in text  # the known one keeps its fingerprint


def test_a_redactor_factory_is_asked_per_instance() -> None:
    asked = []

    def factory(instance: object) -> Redactor:
        asked.append(instance)
        return Redactor(["kong-only-secret"])

    docker = LogDocker({container_id("kong"): [
        stamp(5, "2026/11/30 11:59:55 [error] 1#0: oops kong-only-secret")]})
    instance = make_instance(("kong",))
    entries, _ = LogAnalyzer(docker, factory).get_structured_logs(
        instance, since_seconds=HOUR, now=NOW)
    assert asked == [instance]
    assert "kong-only-secret" not in entries[0].message


# --- analysis -----------------------------------------------------------------------------

def test_analyze_finds_the_patterns_in_what_was_read(docker: LogDocker) -> None:
    logs = analyzer(docker)
    entries, _ = logs.get_structured_logs(make_instance(), level="all", since_seconds=HOUR,
                                          now=NOW)
    found = {(m.code, m.component): m for m in logs.analyze(entries)}
    assert set(found) == {("DB_ROLE_PASSWORD_MISMATCH", "auth"),
                          ("DB_ROLE_PASSWORD_MISMATCH", "db"),
                          ("DB_UNREACHABLE", "rest"), ("GATEWAY_UPSTREAM_ERROR", "kong")}
    assert found["DB_ROLE_PASSWORD_MISMATCH", "auth"].count == 2
    assert not any(m.resolved for m in found.values())


# --- query vocabulary ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("15m", 900), ("1h", 3600), ("6h", 21600), ("24h", 86400), ("7d", 604800),
    ("30s", 30), (" 2H ", 7200), ("30d", 604800), ("9999h", 604800),
])
def test_parse_range(text: str, seconds: float) -> None:
    assert parse_range(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1w", "-1h", "0m", "1.5h", "1h30m",
                                  "99999999d"])
def test_parse_range_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="range"):
        parse_range(text)


@pytest.mark.parametrize(("text", "level"), [
    ("error", "error"), ("ERROR", "error"), ("warning", "warning"), ("warn", "warning"),
    ("info", "info"), ("debug", "debug"), ("all", "debug"), ("fatal", "fatal"),
])
def test_parse_level(text: str, level: str) -> None:
    assert parse_level(text) == level
