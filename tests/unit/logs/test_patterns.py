"""The failure pattern catalogue: which line means which issue code, and how matches add up."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from exporter.issues import CATALOGUE
from exporter.logs.model import LEVELS, Level, LogEntry
from exporter.logs.parsers import parse_lines
from exporter.logs.patterns import (
    PATTERNS,
    READY_MARKERS,
    LogPattern,
    _candidates,
    first_match,
    match_patterns,
)
from exporter.redaction import Redactor
from tests.unit.logs import samples
from tests.unit.logs.logdocker import NOW, stamp


def parsed(component: str, bodies: Sequence[str], start: int = 100) -> list[LogEntry]:
    """Entries one second apart, the first start seconds before NOW."""
    lines = [stamp(start - n, body) for n, body in enumerate(bodies)]
    return parse_lines(component, lines, Redactor(), NOW)


def code_of(component: str, bodies: Sequence[str] | str) -> str | None:
    entries = parsed(component, [bodies] if isinstance(bodies, str) else bodies)
    assert len(entries) == 1
    found = first_match(entries[0])
    return found[0].code if found else None


# --- the catalogue as data ----------------------------------------------------------------

def test_every_pattern_names_a_catalogue_code_and_a_unique_name() -> None:
    assert {p.code for p in PATTERNS} <= set(CATALOGUE)
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_every_template_renders_from_its_own_groups(pattern: LogPattern) -> None:
    wanted = {f for _, f, _, _ in string.Formatter().parse(pattern.template) if f}
    assert wanted <= {"count", "component", *pattern.regex.groupindex}
    values = dict.fromkeys(pattern.regex.groupindex, "x")
    assert pattern.template.format(count=1, component="auth", **values)


def test_ready_markers_are_for_components_with_startup_patterns() -> None:
    assert set(READY_MARKERS) == {"db", "auth", "rest", "kong"}


# --- line -> code -------------------------------------------------------------------------

@pytest.mark.parametrize(("component", "body", "code"), [
    ("db", samples.DB_PASSWORD_FATAL, "DB_ROLE_PASSWORD_MISMATCH"),
    ("auth", samples.AUTH_PASSWORD_FATAL, "DB_ROLE_PASSWORD_MISMATCH"),
    ("rest", samples.REST_PASSWORD_FAILED[0], "DB_ROLE_PASSWORD_MISMATCH"),
    ("rest", samples.REST_PASSWORD_FAILED[1], "DB_ROLE_PASSWORD_MISMATCH"),
    ("analytics", samples.ANALYTICS_PASSWORD, "DB_ROLE_PASSWORD_MISMATCH"),
    ("db", samples.DB_SUPERUSER_FATAL, "DB_AUTH_FAILED"),
    ("db", samples.DB_HBA_FATAL, "DB_AUTH_FAILED"),
    ("db", samples.DB_STARTING_UP, "DB_UNREACHABLE"),
    ("auth", samples.AUTH_DB_REFUSED, "DB_UNREACHABLE"),
    ("auth", samples.AUTH_LOGFMT, "DB_UNREACHABLE"),
    ("rest", samples.REST_DB_REFUSED[0], "DB_UNREACHABLE"),
    ("storage", samples.STORAGE_PINO, "DB_UNREACHABLE"),
    ("auth", samples.AUTH_ROLE_MISSING, "AUTH_DB_CONNECTION_FAILED"),
    ("auth", samples.AUTH_MIGRATION_FAILED, "AUTH_MIGRATION_FAILED"),
    ("auth", samples.AUTH_MIGRATION_NO_SCHEMA, "AUTH_MIGRATION_FAILED"),
    ("auth", samples.AUTH_CONFIG_EMPTY, "AUTH_CONFIG_INVALID"),
    ("auth", samples.AUTH_CONFIG_EMPTY_SECRET, "AUTH_CONFIG_INVALID"),
    ("kong", samples.KONG_UPSTREAM_REFUSED, "GATEWAY_UPSTREAM_ERROR"),
    ("kong", samples.KONG_UPSTREAM_TIMEOUT, "GATEWAY_UPSTREAM_ERROR"),
    ("kong", samples.KONG_DNS_FAILED, "GATEWAY_UPSTREAM_ERROR"),
    ("kong", samples.KONG_DUPLICATE_SERVICE, "GATEWAY_UNREACHABLE"),
    ("auth", samples.AUTH_JWT_BAD_SIGNATURE, "JWT_SECRET_MISMATCH"),
    ("rest", samples.REST_JWT, "JWT_SECRET_MISMATCH"),
    ("auth", samples.AUTH_JWT_EXPIRED, "JWT_KEY_EXPIRED"),
    ("rest", samples.REST_JWT_EXPIRED, "JWT_KEY_EXPIRED"),
    ("db", samples.DB_OUT_OF_MEMORY, "CONTAINER_OOM_KILLED"),
    ("functions", samples.FUNCTIONS_OOM, "CONTAINER_OOM_KILLED"),
    ("db", samples.DB_DISK_FULL, "DISK_SPACE_CRITICAL"),
    ("db", samples.DB_PORT_IN_USE, "PORT_CONFLICT"),
    ("kong", samples.KONG_PORT_IN_USE, "PORT_CONFLICT"),
])
def test_known_lines_map_to_their_code(component: str, body: str | list[str],
                                       code: str) -> None:
    assert code_of(component, body) == code


@pytest.mark.parametrize(("component", "bodies"), [
    ("auth", samples.AUTH_HEALTHY),
    ("db", samples.DB_HEALTHY),
    ("kong", samples.KONG_HEALTHY),
    ("rest", samples.REST_HEALTHY),
    ("vector", [samples.VECTOR_WARN]),
    ("imgproxy", [samples.IMGPROXY_INFO]),
])
def test_healthy_logs_match_nothing(component: str, bodies: list[str]) -> None:
    assert match_patterns(parsed(component, bodies)) == []


@pytest.mark.parametrize(("component", "body"), [
    # a malformed token is the caller's problem, not a secret mismatch
    ("auth", samples.AUTH_JWT_MALFORMED),
    # "connection refused" from a component that does not talk to the db on its own
    ("studio", "Error: connect ECONNREFUSED 172.18.0.7:8080"),
    # the same words at debug level are chatter
    ("kong", "2026/11/30 11:50:02 [debug] 1100#0: *1 upstream timed out (110: x)"),
    # a room is not an OOM
    ("functions", "Joined room 42 for broadcast"),
    # Kong's 5xx access line is counted, but names no cause
    ("kong", samples.KONG_ACCESS_502),
])
def test_lookalikes_match_nothing(component: str, body: str) -> None:
    assert code_of(component, body) is None


def test_the_more_specific_explanation_wins() -> None:
    # GoTrue's migration failure caused by a rejected password is the password's fault
    assert code_of("auth", samples.AUTH_PASSWORD_FATAL) == "DB_ROLE_PASSWORD_MISMATCH"
    # an expired token's message also says "invalid JWT"
    assert code_of("auth", samples.AUTH_JWT_EXPIRED) == "JWT_KEY_EXPIRED"
    # the superuser is not a service role
    assert code_of("db", samples.DB_SUPERUSER_FATAL) == "DB_AUTH_FAILED"


# --- tallies ------------------------------------------------------------------------------

def test_matches_count_per_component_with_first_and_last_seen() -> None:
    entries = [*parsed("auth", [samples.AUTH_PASSWORD_FATAL] * 3, start=300),
               *parsed("db", samples.DB_PASSWORD_FATAL * 2, start=200)]
    matches = match_patterns(entries)
    assert [(m.component, m.count) for m in matches] == [("auth", 3), ("db", 2)]
    auth = matches[0]
    assert auth.code == "DB_ROLE_PASSWORD_MISMATCH"
    assert auth.subject == "db"
    assert auth.severity == "critical"
    assert auth.captures == {"role": ("supabase_auth_admin",)}
    assert (NOW - auth.first_seen).total_seconds() == pytest.approx(300, abs=1)
    assert (NOW - auth.last_seen).total_seconds() == pytest.approx(298, abs=1)
    assert "supabase_auth_admin" in auth.message and "3 time(s)" in auth.message
    assert "password authentication failed" in auth.sample
    assert not auth.resolved


def test_captured_values_are_deduplicated_and_bounded() -> None:
    bodies = [f'172.18.0.5 2026-11-30 11:50:00.186 UTC [42] r@postgres FATAL:  password '
              f'authentication failed for user "role{n % 7}"' for n in range(20)]
    (match,) = match_patterns(parsed("db", bodies))
    assert match.count == 20
    assert match.captures["role"] == ("role0", "role1", "role2", "role3", "role4")


def test_a_later_successful_start_resolves_startup_failures() -> None:
    entries = parsed("auth", [samples.AUTH_PASSWORD_FATAL, samples.AUTH_PASSWORD_FATAL,
                              samples.AUTH_STARTED])
    (match,) = match_patterns(entries)
    assert match.resolved
    assert match.resolved_at == entries[-1].timestamp
    assert match.to_dict()["resolved_at"] == entries[-1].timestamp.isoformat()


def test_failures_after_the_last_start_stay_active() -> None:
    entries = parsed("auth", [samples.AUTH_STARTED, samples.AUTH_PASSWORD_FATAL])
    (match,) = match_patterns(entries)
    assert not match.resolved


def test_postgrest_reconnecting_resolves_its_db_failure() -> None:
    (match,) = match_patterns(parsed("rest", [*samples.REST_DB_REFUSED,
                                              samples.REST_CONNECTED]))
    assert match.code == "DB_UNREACHABLE" and match.resolved


def test_request_failures_are_not_resolved_by_a_restart() -> None:
    entries = parsed("auth", [samples.AUTH_JWT_BAD_SIGNATURE, samples.AUTH_STARTED])
    (match,) = match_patterns(entries)
    assert match.code == "JWT_SECRET_MISMATCH" and not match.resolved


def test_another_components_start_resolves_nothing() -> None:
    # rest does not log in as supabase_auth_admin
    entries = [*parsed("db", samples.DB_PASSWORD_FATAL, start=100),
               *parsed("rest", [samples.REST_CONNECTED], start=50)]
    (match,) = match_patterns(entries)
    assert not match.resolved


def test_order_of_entries_does_not_matter() -> None:
    entries = parsed("auth", [samples.AUTH_PASSWORD_FATAL] * 3 + [samples.AUTH_STARTED])
    assert match_patterns(entries) == match_patterns(list(reversed(entries)))


def test_a_login_failure_keeps_the_password_repair_a_migration_failure_has_none() -> None:
    (login,) = match_patterns(parsed("auth", [samples.AUTH_ROLE_MISSING]))
    assert login.code == "AUTH_DB_CONNECTION_FAILED"
    assert login.repair is False  # the catalogue's: sync_db_role_passwords
    assert "failed to connect to `host=db user=supabase_auth_admin" in login.message
    (sql,) = match_patterns(parsed("auth", [samples.AUTH_MIGRATION_FAILED]))
    assert (sql.code, sql.subject, sql.repair) == ("AUTH_MIGRATION_FAILED", "auth", None)
    assert sql.captures == {
        "file": ("migrations/20240612123726_enable_rls_update_grants.up.sql",),
        "error": ("ERROR: must be owner of table users",), "sqlstate": ("42501",)}
    assert "must be owner of table users (SQLSTATE 42501)" in sql.message
    (schema,) = match_patterns(parsed("auth", [samples.AUTH_MIGRATION_NO_SCHEMA]))
    assert schema.captures["sqlstate"] == ("3F000",)
    assert "no schema has been selected to create in" in schema.message


@pytest.mark.parametrize(("body", "message"), [
    (samples.AUTH_CONFIG_EMPTY,
     "GoTrue cannot start: GOTRUE_EXTERNAL_EMAIL_ENABLED is set but empty, where it needs a "
     "value of type bool (1 failed start(s))"),
    (samples.AUTH_CONFIG_EMPTY_SECRET,
     "GoTrue cannot start: GOTRUE_JWT_SECRET is set but empty (1 failed start(s))"),
    ('time="2026-11-30T11:50:00Z" level=fatal msg="Failed to load configuration: '
     "envconfig.Process: assigning GOTRUE_SMTP_PORT to Port: converting 'x25' to type int. "
     'details: strconv.ParseInt: parsing \\"x25\\": invalid syntax"',
     "GoTrue cannot start: GOTRUE_SMTP_PORT='x25' is not a valid int (1 failed start(s))"),
    ('time="2026-11-30T11:50:00Z" level=fatal msg="Failed to load configuration: required key '
     'API_EXTERNAL_URL missing value"',
     "GoTrue cannot start: API_EXTERNAL_URL is not set (1 failed start(s))"),
    ('time="2026-11-30T11:50:00Z" level=fatal msg="Failed to load configuration: parse '
     '\\"\\": empty url"',
     'GoTrue cannot load its configuration: parse "": empty url (1 failed start(s))'),
])
def test_a_configuration_failure_names_the_setting_and_offers_no_restart(body: str,
                                                                         message: str) -> None:
    (match,) = match_patterns(parsed("auth", [body]))
    assert (match.code, match.subject, match.severity) == ("AUTH_CONFIG_INVALID", "auth",
                                                           "critical")
    assert match.message == message
    assert match.repair is None
    assert not match.resolved
    (over,) = match_patterns(parsed("auth", [body, samples.AUTH_STARTED]))
    assert over.resolved


def test_kong_duplicate_names_the_entity_and_needs_no_restart_repair() -> None:
    (match,) = match_patterns(parsed("kong", samples.KONG_DUPLICATE_SERVICE))
    assert match.code == "GATEWAY_UNREACHABLE"
    assert match.captures["value"] == ("rest-v1",)
    assert "services declared twice (name 'rest-v1')" in match.message
    assert match.repair is None


def test_the_dbs_rejections_end_when_the_roles_service_starts() -> None:
    db = parsed("db", samples.DB_PASSWORD_FATAL * 2, start=300)
    (still,) = match_patterns(db)
    assert not still.resolved
    # after the repair, GoTrue (which logs in as supabase_auth_admin) starts again
    (over,) = match_patterns([*db, *parsed("auth", [samples.AUTH_STARTED], start=100)])
    assert over.resolved
    # a role no known service starts with stays open
    other = parsed("db", [samples.DB_PASSWORD_FATAL[0].replace("supabase_auth_admin",
                                                                "supabase_storage_admin")])
    (open_match,) = match_patterns([*other, *parsed("auth", [samples.AUTH_STARTED], start=10)])
    assert not open_match.resolved



def test_a_db_starting_up_is_over_once_a_client_has_started_since() -> None:
    # The template's db logs only FATAL and worse: it never says it is ready.
    db = parsed("db", [samples.DB_STARTING_UP], start=20)
    (open_match,) = match_patterns(db, now=NOW)
    assert open_match.code == "DB_UNREACHABLE" and not open_match.resolved
    for client, line in (("auth", samples.AUTH_STARTED), ("rest", samples.REST_CONNECTED)):
        started = parsed(client, [line], start=10)
        (over,) = match_patterns([*db, *started], now=NOW)
        assert over.resolved_at == started[0].timestamp, client
        # a start before the refusal proves nothing
        (still,) = match_patterns([*parsed(client, [line], start=30), *db], now=NOW)
        assert not still.resolved, client


def test_a_db_starting_up_settles_after_30_quiet_seconds() -> None:
    db = parsed("db", [samples.DB_STARTING_UP] * 3, start=40)  # 40, 39 and 38 s ago
    (match,) = match_patterns(db, now=NOW - timedelta(seconds=9))
    assert not match.resolved
    (match,) = match_patterns(db, now=NOW)
    assert match.resolved_at == db[-1].timestamp + timedelta(seconds=30)
    # without a clock, nothing settles
    (match,) = match_patterns(db)
    assert not match.resolved


def test_faults_do_not_settle_with_time() -> None:
    db = parsed("db", samples.DB_PASSWORD_FATAL, start=3600)
    (match,) = match_patterns(db, now=NOW)
    assert match.code == "DB_ROLE_PASSWORD_MISMATCH" and not match.resolved

# --- the screen: one search per entry, the same answers -----------------------------------

def _sample_bodies() -> list[str]:
    bodies: list[str] = []
    for value in vars(samples).values():
        if isinstance(value, str):
            bodies.append(value)
        elif isinstance(value, list | tuple):
            bodies.extend(v for v in value if isinstance(v, str))
    return bodies


COMPONENTS = ("db", "auth", "rest", "kong", "storage", "analytics", "functions", "studio",
              "realtime", "vector", "imgproxy", "meta", "supavisor")


def _summary(found: tuple[LogPattern, re.Match[str]] | None) -> object:
    return None if found is None else (found[0].name, found[1].span(), found[1].groupdict())


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_screen_answers_as_every_pattern_would(component: str) -> None:
    corpus = _sample_bodies()
    assert len(corpus) > 30
    matched = 0
    for body in corpus:
        for entry in parsed(component, [body]):
            for level in LEVELS:
                probe = replace(entry, level=level)
                screened = _candidates(PATTERNS, component, level)
                expected = _summary(first_match(probe))
                assert _summary(screened.first(probe)) == expected, (body, level)
                matched += expected is not None
    assert matched > 0 or component in ("studio", "vector", "imgproxy", "meta")


@pytest.mark.parametrize("level", LEVELS)
def test_every_component_and_level_gets_a_screen(level: Level) -> None:
    for component in COMPONENTS:
        candidates = _candidates(PATTERNS, component, level)
        assert (candidates.screen is None) == (not candidates.patterns)
