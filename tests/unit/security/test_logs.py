"""L8 and L9 of the security review: forged log lines, and secrets the log scrubber missed.

L8: an alert named "AuthDown\\n2026-12-06 03:00:00,000 WARNING actions.blueprints.alerts:
auto-repair of beta refused (over_budget): spoofed" wrote a second, forged line into the
action API's log. Every logged message now has its control characters escaped.

L9: with no known secret to match, `scrub_text` let through secrets under prefixed or odd
key names, quoted values, Basic credentials and one-time codes in auth URLs; a test per
form the review listed.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.logs.scrub import REDACTED, scrub_text, scrub_value
from exporter.logsafe import FORMAT, EscapingFormatter, escape_controls
from exporter.redaction import Redactor
from tests.unit.access_matrix import BETA
from tests.unit.actions.test_api import World, alert, repair_action, webhook

FORGED = ("AuthDown\n2026-12-06 03:00:00,000 WARNING actions.blueprints.alerts: "
          "auto-repair of beta refused (over_budget): spoofed")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_an_alert_name_cannot_forge_a_log_line(tmp_path: Path, log_lines: io.StringIO) -> None:
    world = World(tmp_path)
    world.plain.plan = [repair_action("start_container")]
    try:
        answer = world.app.test_client().post(
            "/api/alerts", json=webhook(alert(BETA, name=FORGED)),
            headers={"Authorization": "Bearer tok-webhook-2c4e"})
        assert answer.status_code == 200
    finally:
        world.close()
    lines = log_lines.getvalue().splitlines()
    ours = [line for line in lines if "auto-repair of beta started" in line]
    assert len(ours) == 1, lines
    assert "AuthDown\\n2026-12-06" in ours[0]
    assert not any(line.startswith("2026-12-06 03:00:00,000") for line in lines)


def test_every_control_character_is_escaped_and_tracebacks_keep_their_lines(
        log_lines: io.StringIO) -> None:
    log = logging.getLogger("tests.security.logs")
    log.warning("value %s and %r", "a\rb\x1b[2Jc\u2028d\x00e\x85f", "g\nh")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed on %s", "x\ny")
    text = log_lines.getvalue()
    first, *rest = text.splitlines()
    assert "a\\rb\\x1b[2Jc\\u2028d\\x00e\\x85f" in first and "'g\\nh'" in first
    assert "failed on x\\ny" in rest[0]
    assert rest[1] == "Traceback (most recent call last):"
    assert escape_controls("plain text") == "plain text"


def test_the_cli_logs_through_the_escaping_formatter() -> None:
    code = ("import logging, sys; from exporter.cli import configure_logging; "
            "configure_logging('INFO', sys.stderr); "
            "logging.getLogger('x').warning('one %s', 'line\\nforged WARNING x: y')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert len(done.stderr.splitlines()) == 1
    assert "line\\nforged" in done.stderr


# L9: one case per form of the review (no known secret: only shapes can catch them).
FORMS = [
    ("db_password=hunter2", "db_password="),
    ("PGPASSWORD=hunter2", "PGPASSWORD="),
    ("GOTRUE_SMTP_PASS=hunter2", "GOTRUE_SMTP_PASS="),
    ("smtp_pass: hunter2", "smtp_pass: "),
    ("client_secret=hunter2", "client_secret="),
    ("jwt_secret=hunter2", "jwt_secret="),
    ("service_role_key=hunter2", "service_role_key="),
    ("x-api-key: hunter2", "x-api-key: "),
    ("Authorization: Basic aHVudGVyMjpodW50ZXIy", "Authorization: Basic "),
    ('password="hunter2 with spaces"', 'password="'),
    ("password='hunter2 with spaces'", "password='"),
    ('{"password": "hunter2 x"}', '{"password": "'),
    ("GET /auth/v1/callback?code=hunter2&state=x HTTP/1.1", "GET /auth/v1/callback?code="),
    ("GET /auth/v1/verify?token_hash=hunter2&type=signup", "GET /auth/v1/verify?token_hash="),
    ("otp=hunter2", "otp="),
    ("password=hunter2", "password="),
]


@pytest.mark.parametrize(("line", "kept"), FORMS, ids=[f[0][:30] for f in FORMS])
def test_the_scrubber_catches_each_form(line: str, kept: str) -> None:
    scrubbed = scrub_text(line, Redactor())
    assert "hunter2" not in scrubbed and "aHVudGVyMjpodW50ZXIy" not in scrubbed
    assert scrubbed.startswith(kept) and REDACTED in scrubbed, scrubbed


@pytest.mark.parametrize("key", ["smtpPass", "SMTP_PASS", "db_pwd", "apiKey", "x-api-key",
                                 "client_secret", "password", "otp", "refresh_token"])
def test_structured_fields_under_secret_names_are_redacted(key: str) -> None:
    assert scrub_value({key: "hunter2"}, Redactor()) == {key: REDACTED}


@pytest.mark.parametrize("line", ["compass: north", "monkey=banana", "tokens=5 left",
                                  "error_code=bad_jwt", "passing=true", "code 200 ok"])
def test_ordinary_words_are_left_alone(line: str) -> None:
    assert scrub_text(line, Redactor()) == line
    assert scrub_value({"compass": "n", "code": "200", "error_code": "x"}, Redactor()) == \
        {"compass": "n", "code": "200", "error_code": "x"}
