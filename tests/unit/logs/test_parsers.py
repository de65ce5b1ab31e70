"""Parsing each component's real log format into structured, redacted entries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from exporter.logs.model import LogEntry
from exporter.logs.parsers import parse_body, parse_lines, split_docker_timestamp
from exporter.redaction import Redactor
from tests.unit.logs import samples
from tests.unit.logs.logdocker import NOW, stamp


def entries(component: str, bodies: Sequence[str], redactor: Redactor | None = None
            ) -> list[LogEntry]:
    lines = [stamp(len(bodies) - n, body) for n, body in enumerate(bodies)]
    return parse_lines(component, lines, redactor or Redactor(), NOW)


def one(component: str, body: str) -> LogEntry:
    found = entries(component, [body])
    assert len(found) == 1, found
    return found[0]


# --- Docker's timestamp -------------------------------------------------------------------

def test_docker_timestamp_is_split_off_with_nanoseconds_cut() -> None:
    when, body = split_docker_timestamp("2026-11-30T11:50:00.123456789Z hello world")
    assert when == datetime(2026, 11, 30, 11, 50, 0, 123456, tzinfo=UTC)
    assert body == "hello world"


def test_a_line_without_docker_timestamp_keeps_its_body() -> None:
    assert split_docker_timestamp("hello") == (None, "hello")


def test_docker_time_wins_and_app_time_is_the_fallback() -> None:
    with_docker = one("auth", samples.AUTH_STARTED)
    assert with_docker.timestamp == datetime(2026, 11, 30, 11, 59, 59, tzinfo=UTC)
    without = parse_lines("auth", [samples.AUTH_STARTED], Redactor(), NOW)[0]
    assert without.timestamp == datetime(2026, 11, 30, 11, 58, 0, tzinfo=UTC)
    plain = parse_lines("studio", ["no time anywhere"], Redactor(), NOW)[0]
    assert plain.timestamp == NOW


def test_blank_lines_are_skipped() -> None:
    assert entries("analytics", ["", "   ", samples.ANALYTICS_PASSWORD]) == [
        one("analytics", samples.ANALYTICS_PASSWORD)]


# --- GoTrue -------------------------------------------------------------------------------

def test_gotrue_fatal_json_line() -> None:
    entry = one("auth", samples.AUTH_PASSWORD_FATAL)
    assert entry.level == "fatal"
    assert entry.message.startswith("running db migrations: Migrator")
    assert 'password authentication failed for user "supabase_auth_admin"' in entry.message
    assert entry.fields == {}


def test_gotrue_request_error_keeps_its_fields_and_error_text() -> None:
    entry = one("auth", samples.AUTH_JWT_BAD_SIGNATURE)
    # GoTrue logs 4xx answers at info level
    assert entry.level == "info"
    assert entry.fields["path"] == "/admin/users"
    assert entry.fields["component"] == "api"
    assert "signature is invalid" in entry.fields["error"]
    assert entry.text.count("signature is invalid") == 4  # message and error field


def test_gotrue_healthy_start_is_info() -> None:
    levels = {e.level for e in entries("auth", samples.AUTH_HEALTHY)}
    assert levels == {"info"}


def test_gotrue_logfmt_of_old_versions() -> None:
    entry = one("auth", samples.AUTH_LOGFMT)
    assert entry.level == "fatal"
    assert entry.message.startswith("failed to connect to `host=db")


@pytest.mark.parametrize(("word", "level"), [
    ("debug", "debug"), ("info", "info"), ("warning", "warning"), ("warn", "warning"),
    ("error", "error"), ("fatal", "fatal"), ("panic", "fatal"), ("trace", "debug"),
])
def test_gotrue_levels(word: str, level: str) -> None:
    assert one("auth", f'{{"level":"{word}","msg":"m"}}').level == level


# --- Postgres -----------------------------------------------------------------------------

def test_postgres_fatal_with_detail_and_continuation_is_one_entry() -> None:
    found = entries("db", samples.DB_PASSWORD_FATAL)
    assert len(found) == 1
    entry = found[0]
    assert entry.level == "fatal"
    assert entry.message == 'password authentication failed for user "supabase_auth_admin"'
    assert entry.fields["user"] == "supabase_auth_admin"
    assert entry.fields["database"] == "postgres"
    assert entry.fields["pid"] == 42
    assert entry.fields["client"] == "172.18.0.5"
    assert entry.fields["detail"].startswith('Password does not match for user')
    assert "Connection matched pg_hba.conf line 89" in entry.fields["detail"]


def test_postgres_lines_without_client_host_start_with_a_space() -> None:
    found = entries("db", samples.DB_HEALTHY)
    assert len(found) == len(samples.DB_HEALTHY)
    assert [e.level for e in found] == ["info"] * 5 + ["warning"]
    assert found[3].message == "database system is ready to accept connections"
    assert found[3].fields == {"pid": 1}


@pytest.mark.parametrize(("severity", "level"), [
    ("DEBUG1", "debug"), ("LOG", "info"), ("NOTICE", "info"), ("INFO", "info"),
    ("WARNING", "warning"), ("ERROR", "error"), ("FATAL", "fatal"), ("PANIC", "fatal"),
])
def test_postgres_severities(severity: str, level: str) -> None:
    body = f"172.18.0.6 2026-11-30 11:51:00.000 UTC [77] supabase_admin@postgres {severity}:  x"
    assert one("db", body).level == level


def test_psql_errors_in_the_db_container() -> None:
    entry = one("db", "psql:/docker-entrypoint-initdb.d/init-scripts/99-roles.sql:5: ERROR:  "
                      'role "supabase_functions_admin" does not exist')
    assert entry.level == "error"
    assert entry.message == 'role "supabase_functions_admin" does not exist'


def test_non_postgres_text_in_the_db_container_falls_back() -> None:
    entry = one("db", "PostgreSQL Database directory appears to contain a database; "
                      "Skipping initialization")
    assert entry.level == "info"


def test_postgres_time_is_read_when_docker_gives_none() -> None:
    entry = parse_lines("db", [samples.DB_SUPERUSER_FATAL], Redactor(), NOW)[0]
    assert entry.timestamp == datetime(2026, 11, 30, 11, 50, 0, 200000, tzinfo=UTC)


# --- Kong ---------------------------------------------------------------------------------

def test_kong_error_line_with_request_context() -> None:
    entry = one("kong", samples.KONG_UPSTREAM_REFUSED)
    assert entry.level == "error"
    assert entry.message == ("connect() failed (111: Connection refused) while connecting to "
                             "upstream")
    assert entry.fields["request"] == "POST /auth/v1/admin/users HTTP/1.1"
    assert entry.fields["upstream"] == "http://172.18.0.5:9999/admin/users"
    assert entry.fields["client"] == "172.18.0.1"
    assert entry.fields["connection"] == 53


@pytest.mark.parametrize(("word", "level"), [
    ("debug", "debug"), ("info", "info"), ("notice", "info"), ("warn", "warning"),
    ("error", "error"), ("crit", "fatal"), ("alert", "fatal"), ("emerg", "fatal"),
])
def test_kong_error_log_levels(word: str, level: str) -> None:
    assert one("kong", f"2026/11/30 11:50:01 [{word}] 1#0: something").level == level


@pytest.mark.parametrize(("body", "level", "status"), [
    (samples.KONG_ACCESS_502, "error", 502),
    (samples.KONG_ACCESS_401, "warning", 401),
    (samples.KONG_HEALTHY[-1], "info", 200),
])
def test_kong_access_lines_level_by_status(body: str, level: str, status: int) -> None:
    entry = one("kong", body)
    assert (entry.level, entry.fields["status"]) == (level, status)
    assert entry.message.endswith(str(status))


def test_kong_rejected_config_is_one_entry_with_its_path_and_traceback() -> None:
    found = entries("kong", samples.KONG_DUPLICATE_SERVICE)
    assert len(found) == 1
    entry = found[0]
    assert entry.level == "error"
    assert "in 'services':" in entry.message
    assert "uniqueness violation: 'services' entity with name set to 'rest-v1'" in entry.message
    assert "init_by_lua:3: in main chunk" in entry.message


def test_kong_healthy_start() -> None:
    levels = [e.level for e in entries("kong", samples.KONG_HEALTHY)]
    assert levels == ["warning", "info", "info", "info", "debug", "info"]


# --- PostgREST ----------------------------------------------------------------------------

def test_postgrest_error_object_is_an_error_with_details() -> None:
    entry = entries("rest", samples.REST_PASSWORD_FAILED)[0]
    assert entry.level == "error"
    assert entry.message == "Database connection error. Retrying the connection."
    assert entry.fields["code"] == "PGRST000"
    assert 'password authentication failed for user "authenticator"' in entry.fields["details"]
    assert "hint" not in entry.fields  # null values are dropped


def test_postgrest_lines_take_their_level_from_their_words() -> None:
    found = entries("rest", [*samples.REST_PASSWORD_FAILED, *samples.REST_DB_REFUSED,
                             samples.REST_CONNECTED])
    assert [e.level for e in found] == ["error", "fatal", "info", "error", "warning", "info"]
    assert found[1].message.startswith("FATAL:  password authentication failed")


def test_postgrest_healthy_start_is_info() -> None:
    assert {e.level for e in entries("rest", samples.REST_HEALTHY)} == {"info"}


def test_postgrest_request_lines() -> None:
    entry = one("rest", '172.18.0.8 - web_anon [30/Nov/2026:11:55:00 +0000] "GET /todos '
                        'HTTP/1.1" 500 - "" "curl/8.0"')
    assert entry.level == "error"
    assert entry.fields["user"] == "web_anon"


# --- everything else ----------------------------------------------------------------------

@pytest.mark.parametrize(("component", "body", "level", "message"), [
    ("analytics", samples.ANALYTICS_PASSWORD, "error", "Postgrex.Protocol (#PID<0.4729.0>)"),
    ("vector", samples.VECTOR_WARN, "warning", "sink{component_kind"),
    ("imgproxy", samples.IMGPROXY_INFO, "info", "INFO    [2026-11-30T11:50:22Z] Started"),
    ("storage", samples.STORAGE_PINO, "error", "connect ECONNREFUSED"),
    ("functions", samples.FUNCTIONS_OOM, "fatal", "FATAL ERROR: Reached heap limit"),
    ("studio", "Listening on port 3000", "info", "Listening on port 3000"),
    ("meta", '{"severity":"WARNING","message":"slow query"}', "warning", "slow query"),
    ("realtime", "panic: runtime error: index out of range", "fatal", "panic: runtime"),
    ("storage", '{"level":-1,"msg":"odd level"}', "debug", "odd level"),
])
def test_generic_formats(component: str, body: str, level: str, message: str) -> None:
    entry = one(component, body)
    assert entry.level == level
    assert entry.message.startswith(message)


def test_indented_lines_continue_the_entry_before_them() -> None:
    found = entries("analytics", [samples.ANALYTICS_PASSWORD,
                                  "    (ecto_sql 3.10.1) lib/ecto/migrator.ex:738: x/3",
                                  "    nofile:1: (file)"])
    assert len(found) == 1
    assert found[0].message.endswith("migrator.ex:738: x/3\nnofile:1: (file)")


def test_parse_body_marks_continuations() -> None:
    assert parse_body("db", "\tConnection matched pg_hba.conf line 1").continues == "..."
    assert parse_body("db", " 2026-11-30 11:50:00.101 UTC [1] LOG:  x").continues is None


def test_very_long_traces_are_cut() -> None:
    found = entries("functions", ["Error: boom", *(["    at frame " + "x" * 100] * 100)])
    assert len(found) == 1
    assert len(found[0].message) <= 4000


# --- redaction ----------------------------------------------------------------------------

def test_known_secrets_become_fingerprints() -> None:
    redactor = Redactor(["super-secret-password"])
    entry = entries("db", [' 2026-11-30 11:50:00.101 UTC [9] LOG:  statement: ALTER ROLE '
                           "authenticator WITH PASSWORD 'super-secret-password'"], redactor)[0]
    assert "super-secret-password" not in entry.message
    assert "<redacted sha256:" in entry.message


@pytest.mark.parametrize(("component", "body", "secret"), [
    ("auth", '{"level":"debug","msg":"connecting to postgres://supabase_auth_admin:'
             'Old-Pa55word@db:5432/postgres?sslmode=disable"}', "Old-Pa55word"),
    ("meta", "Error: connect ECONNREFUSED postgresql://supabase_admin:hunter2hunter2@db:5432/x",
     "hunter2hunter2"),
    ("kong", '172.18.0.1 - - [30/Nov/2026:11:55:00 +0000] "GET /rest/v1/?apikey=eyJhbGciOiJIUzI1'
             'NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXZhbHVl HTTP/1.1" 200 10 "-" "x"',
     "c2lnbmF0dXJlLXZhbHVl"),
    ("db", " 2026-11-30 11:50:00.101 UTC [9] LOG:  statement: ALTER ROLE x WITH PASSWORD "
           "'unknown-old-pw'", "unknown-old-pw"),
    ("rest", "30/Nov/2026:11:50:02 +0000: db-uri = host=db user=authenticator "
             "password=plain-pw-123 dbname=postgres", "plain-pw-123"),
    ("storage", '{"level":30,"msg":"request","headers":{"authorization":"Bearer abcdefgh12345678"'
                ',"password":"p4ss-in-field"}}', "p4ss-in-field"),
    ("storage", '{"level":30,"msg":"request","headers":{"authorization":"Bearer abcdefgh12345678"'
                '}}', "abcdefgh12345678"),
])
def test_secret_shaped_values_are_redacted(component: str, body: str, secret: str) -> None:
    entry = one(component, body)
    assert secret not in repr(entry)
    assert secret not in str(entry.to_dict())
    assert "<redacted" in str(entry.to_dict())


def test_redaction_keeps_what_diagnosis_needs() -> None:
    entry = one("meta", "Error: connect postgresql://supabase_admin:hunter2hunter2@db:5432/x")
    assert "postgresql://supabase_admin:<redacted>@db:5432/x" in entry.message
    untouched = one("kong", samples.KONG_UPSTREAM_REFUSED)
    assert untouched.fields["upstream"] == "http://172.18.0.5:9999/admin/users"
    assert "password authentication failed" in one("auth", samples.AUTH_PASSWORD_FATAL).message
