"""Keeping secrets out of log text: the instance's known secrets and secret-shaped values.

The Redactor knows the secrets in force; logs also hold secrets it cannot know (an old
password in a DSN, a user's access token in a request line), so those are recognised by
their shape as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from exporter.redaction import Redactor

REDACTED = "<redacted>"

# The name of a secret in key=value, key: value and "key": "value" forms, as a word of its
# own or at the end of a longer name (db_password, PGPASSWORD, GOTRUE_SMTP_PASS, smtp_pass,
# client_secret, jwt_secret, service_role_key, x-api-key, otp).
# Short words (pass, pwd, key, otp) only as a whole name or after a separator, so that
# compass: or monkey= stay.
_KEY = (r"(?<![A-Za-z0-9_.-])(?i:[A-Za-z0-9_.-]*?(?:password|passwd|secret|token|"
        r"api[_-]?key|apikey)|(?:[A-Za-z0-9_.-]*[_.-])?(?:pass|pwd|key|otp))")
_SEP = r"[\"']?\s*[=:]\s*"

# (name, shape, replacement), applied after the Redactor so known secrets keep their
# fingerprint. The first group of a shape is what stays in front of the secret.
_SHAPES: tuple[tuple[str, str, str], ...] = (
    # scheme://user:password@host -> the user stays, it helps to tell which role failed
    ("dsn", r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", rf"\1{REDACTED}@"),
    # Authorization: Basic <base64 of user:password>
    ("basic", r"((?i:\bBasic)\s+)(?!<redacted)[A-Za-z0-9+/]{6,}={0,2}", rf"\1{REDACTED}"),
    # password="p a s s", 'secret': 'x y': the whole quoted value, quotes kept
    ("quoted", rf"({_KEY}{_SEP})(?P<quote>[\"'])(?!<redacted)[^\"'\n]*(?P=quote)",
     rf"\1\g<quote>{REDACTED}\g<quote>"),
    # password=..., db_password=..., x-api-key: ..., token=... in query strings, logfmt,
    # headers and libpq key/values
    ("pair", rf"({_KEY}{_SEP})(?![\s'\"]|<redacted)[^\s&'\",;)]+", rf"\1{REDACTED}"),
    # One-time codes in auth URLs: /callback?code=..., ?token_hash=..., &otp=...
    ("query", r"((?i:[?&](?:code|otp|token_hash|access_token|refresh_token))=)"
              r"(?!<redacted)[^\s&#\"']+", rf"\1{REDACTED}"),
    # SQL as Postgres logs it: ALTER ROLE x WITH PASSWORD 'secret'
    ("sql", r"((?i:\bpassword)\s+)'(?!<redacted)[^']*'", rf"\1'{REDACTED}'"),
    ("bearer", r"((?i:\bBearer)\s+)(?!<redacted)[A-Za-z0-9._~+/=-]{8,}", rf"\1{REDACTED}"),
    # Any JWT (header.payload.signature, both JSON parts starting with '{"')
    ("jwt", r"()\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+",
     "<redacted jwt>"),
)
# Every shape contains one of these (case-sensitive, then lower-cased words); a line holding
# none is left alone without running the regex, which is most lines.
_TRIGGERS = ("://", "eyJ")
_TRIGGER_WORDS = ("pass", "pwd", "secret", "token", "key", "bearer", "basic", "code=",
                  "otp")
# One pass over the text finds any shape.
_ANY_SHAPE = re.compile("|".join(f"(?P<{name}>{shape})" for name, shape, _ in _SHAPES))
_SHAPE_BY_NAME = {name: (re.compile(shape), replacement) for name, shape, replacement in _SHAPES}


def _replace(match: re.Match[str]) -> str:
    shape, replacement = _SHAPE_BY_NAME[str(match.lastgroup)]
    return shape.sub(replacement, match.group(0))


# A structured field with such a name holds a secret whatever its value looks like:
# password, smtpPass, SMTP_PASS, db_pwd, jwt_secret, access_token, apikey, service_role_key,
# x-api-key, authorization, credentials, otp.
_SECRET_KEY = re.compile(r"(?i:passw|secret|token|api[_-]?key|apikey|authorization|"
                         r"credential|(?:^|[_.-])(?:pass|pwd|key|otp)$)|"
                         r"[a-z0-9](?:Pass|Pwd|Key|Otp)$")


def scrub_text(text: str, redactor: Redactor) -> str:
    """The text with known secrets fingerprinted and secret-shaped values replaced."""
    text = redactor.text(text)
    if any(t in text for t in _TRIGGERS):
        return _ANY_SHAPE.sub(_replace, text)
    lower = text.lower()
    if any(w in lower for w in _TRIGGER_WORDS):
        return _ANY_SHAPE.sub(_replace, text)
    return text


def scrub_value(value: Any, redactor: Redactor) -> Any:
    """A copy of JSON-like data with every string scrubbed (keys included)."""
    if isinstance(value, str):
        return scrub_text(value, redactor)
    if isinstance(value, Mapping):
        return {scrub_text(str(k), redactor):
                REDACTED if isinstance(v, str) and v and _SECRET_KEY.search(str(k))
                else scrub_value(v, redactor)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v, redactor) for v in value]
    return value
