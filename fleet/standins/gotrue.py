"""Stand-in for GoTrue (supabase/auth v2.167.0), the `auth` service of a Supabase instance.

Started as ``python gotrue.py`` with the environment GoTrue reads (see the compose template and
gotrue_config.SETTINGS): GOTRUE_API_HOST, GOTRUE_API_PORT (or PORT; default 8081),
API_EXTERNAL_URL, GOTRUE_API_MAX_REQUEST_DURATION (default 10s), GOTRUE_DB_DRIVER,
GOTRUE_DB_DATABASE_URL (or DATABASE_URL), GOTRUE_SITE_URL, GOTRUE_JWT_SECRET, GOTRUE_JWT_AUD,
GOTRUE_JWT_ADMIN_ROLES, GOTRUE_JWT_DEFAULT_GROUP_NAME, GOTRUE_JWT_EXP, GOTRUE_DISABLE_SIGNUP,
GOTRUE_EXTERNAL_*_ENABLED, GOTRUE_MAILER_AUTOCONFIRM, GOTRUE_SMS_AUTOCONFIRM,
GOTRUE_SMS_PROVIDER, GOTRUE_SMTP_PORT, GOTRUE_SAML_ENABLED, GOTRUE_PASSWORD_MIN_LENGTH,
GOTRUE_API_REQUEST_ID_HEADER.

Public contract kept: /health, /settings, /signup and the admin users API with GoTrue's error
JSON ({"code","error_code","msg"}, {"code","message"} when the client sends
X-Supabase-Api-Version: 2024-01-01, and the public Postgres error shape for a RAISE or a
constraint violation), its JWT checks (HS256, admin roles), its 10 s request timeout, its log
lines on stderr, its migrations into the `auth` schema, and its failure behaviour: a bad
setting (set but empty included), a DB error at start (refused, rejected login, failed
migration SQL) is one fatal line and exit status 1, no retry; a DB error during a request is
a 500. Passwords are stored as PBKDF2 hashes instead of bcrypt; identities are synthesised
from the user row rather than stored in auth.identities.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import secrets
import socket
import sys
import threading
import time
import uuid
import warnings
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlencode, urlsplit

import gotrue_migrate
import jwt
import psycopg
from gotrue_config import Config, ConfigError, fatal_text, go_quote, load_config
from psycopg.types.json import Jsonb
from standin_common import (
    BaseHandler,
    fatal_sqlstate,
    install_signal_handlers,
    libpq_message,
    log_line,
    make_server,
    rfc3339,
    rfc3339_nano,
    serve_until_signalled,
    utc_now,
)

VERSION = "v2.167.0"
API_VERSION_2024 = "2024-01-01"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
IDENTITY_NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
EMAIL_RE = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
USER_COLUMNS = (
    "id, aud, role, email, email_confirmed_at, raw_app_meta_data, raw_user_meta_data, "
    "created_at, updated_at, confirmation_sent_at, last_sign_in_at"
)
# utilities/postgres.go:55-76: Postgres errors whose code, message, detail and hint GoTrue
# shows the client (status 500, or NNN for a PTNNN code raised by a trigger or function).
PUBLIC_SQLSTATES = frozenset({"P0001", "23000", "23001", "23502", "23503", "23505", "23514",
                              "23P01"})
TIMEOUT_MESSAGE = "Processing this request timed out, please retry after a moment."
# Go's encoding/json escapes these in strings (logrus's JSONFormatter keeps that default).
_GO_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def log_json(level: str, msg: str, **fields: Any) -> None:
    """Write a logrus JSON line (keys sorted, HTML characters escaped) to stderr."""
    entry: dict[str, Any] = {**fields, "level": level, "msg": msg, "time": rfc3339()}
    text = json.dumps(dict(sorted(entry.items())), separators=(",", ":"), ensure_ascii=False)
    log_line(text.translate(_GO_JSON_ESCAPES), sys.stderr)


def fatal(msg: str, **fields: Any) -> NoReturn:
    """Log a fatal line and exit 1, as logrus.Fatal does."""
    log_json("fatal", msg, **fields)
    sys.stdout.flush()
    os._exit(1)


# --- database -------------------------------------------------------------------------------


def pgx_target(db_url: str) -> str:
    """Describe a DSN the way pgx does in its errors: host=db user=x database=y."""
    parts = urlsplit(db_url)
    database = parts.path.lstrip("/") or (parts.username or "")
    return f"host={parts.hostname or 'localhost'} user={parts.username or ''} database={database}"


def pgx_error(exc: BaseException, db_url: str) -> str:
    """Render a psycopg failure as pgx would word it inside GoTrue."""
    text = libpq_message(exc)
    target = f"failed to connect to `{pgx_target(db_url)}`"
    parts = urlsplit(db_url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    if text.startswith("could not translate host name"):
        return f"{target}: hostname resolving error (lookup {host}: no such host)"
    if "Connection refused" in text:
        try:
            addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
        except OSError:
            addr = host
        return f"{target}: dial error (dial tcp {addr}:{port}: connect: connection refused)"
    if "timeout expired" in text:
        return f"{target}: dial error (timeout: context deadline exceeded)"
    if "FATAL:" in text:
        reason = " ".join(text.split("FATAL:", 1)[1].split())
        code = fatal_sqlstate(text)
        kind = "failed SASL auth" if code == "28P01" else "server error"
        return f"{target}: {kind} (FATAL: {reason} (SQLSTATE {code}))"
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        primary = exc.diag.message_primary or text
        severity = exc.diag.severity_nonlocalized or "ERROR"
        return f"{severity}: {primary} (SQLSTATE {exc.sqlstate})"
    return f"{target}: {' '.join(text.split())}"


def connect(cfg: Config, timeout: float, **options: Any) -> psycopg.Connection[Any]:
    """Open a DB connection that gives up within `timeout` seconds (libpq counts whole ones)."""
    return psycopg.connect(cfg.db_url, connect_timeout=max(2, math.ceil(timeout)), **options)


def migrate(cfg: Config) -> None:
    """Run the migrations as `gotrue` does before serving; any failure is fatal at once."""
    try:
        gotrue_migrate.run(
            lambda: connect(cfg, 30, autocommit=True, application_name="gotrue_migrations"),
            cfg.db_namespace, lambda exc: pgx_error(exc, cfg.db_url), log_json)
    except gotrue_migrate.MigrationError as exc:
        fatal(f"running db migrations: {exc}")
    log_json("info", "GoTrue migrations applied successfully")


# --- API errors and JSON shapes --------------------------------------------------------------


class ApiError(Exception):
    """An HTTPError as GoTrue returns it (api/errors.go:100-147)."""

    def __init__(self, status: int, code: str, msg: str, internal: str | None = None, *,
                 internal_message: str | None = None,
                 pg: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.internal = internal  # InternalError's text, the log line's "error" field
        self.internal_message = internal_message  # replaces "<status>: <msg>" in the log
        self.pg = pg  # the public Postgres error, when InternalError is one

    @property
    def log_text(self) -> str:
        """HTTPError.Error(): the internal message, else `<status>: <msg>`."""
        return self.internal_message or f"{self.status}: {self.msg}"


def public_pg_error(exc: BaseException) -> dict[str, Any] | None:
    """utilities.NewPostgresError: the body and status GoTrue shows for a user-visible error."""
    if not isinstance(exc, psycopg.Error) or not exc.sqlstate:
        return None
    code = exc.sqlstate
    status = 500 if code in PUBLIC_SQLSTATES else 0
    if code.startswith("PT") and re.fullmatch(r"[+-]?\d+", code[2:]):
        status = int(code[2:])
    if not status:
        return None
    body: dict[str, Any] = {"code": code, "message": exc.diag.message_primary or ""}
    if exc.diag.message_hint:
        body["hint"] = exc.diag.message_hint
    if exc.diag.message_detail:
        body["detail"] = exc.diag.message_detail
    return {"status": status, "body": body}


def db_error(msg: str, exc: BaseException, db_url: str) -> ApiError:
    """internalServerError(msg).WithInternalError(err) for a DB failure."""
    return ApiError(500, "unexpected_failure", msg, pgx_error(exc, db_url),
                    pg=public_pg_error(exc))


def hash_password(password: str) -> str:
    """Hash a password (PBKDF2 here; GoTrue uses bcrypt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10_000)
    encoded = base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()
    return "$pbkdf2-sha256$10000$" + encoded


def ts(value: datetime | None) -> str | None:
    """Format a timestamp as Go marshals time.Time."""
    return rfc3339_nano(value) if value is not None else None


def user_json(row: dict[str, Any]) -> dict[str, Any]:
    """Shape a user row like GoTrue's models.User JSON."""
    user_id = str(row["id"])
    email = row["email"] or ""
    created = ts(row["created_at"])
    identities = []
    if email:
        identities.append(
            {
                "identity_id": str(uuid.uuid5(IDENTITY_NAMESPACE, user_id + ":email")),
                "id": user_id,
                "user_id": user_id,
                "identity_data": {
                    "email": email,
                    "email_verified": False,
                    "phone_verified": False,
                    "sub": user_id,
                },
                "provider": "email",
                "last_sign_in_at": created,
                "created_at": created,
                "updated_at": created,
                "email": email,
            }
        )
    out: dict[str, Any] = {
        "id": user_id,
        "aud": row["aud"] or "",
        "role": row["role"] or "",
        "email": email,
    }
    if row.get("email_confirmed_at"):
        out["email_confirmed_at"] = ts(row["email_confirmed_at"])
    out["phone"] = ""
    if row.get("confirmation_sent_at"):
        out["confirmation_sent_at"] = ts(row["confirmation_sent_at"])
    if row.get("email_confirmed_at"):
        out["confirmed_at"] = ts(row["email_confirmed_at"])
    if row.get("last_sign_in_at"):
        out["last_sign_in_at"] = ts(row["last_sign_in_at"])
    out["app_metadata"] = row["raw_app_meta_data"] or {}
    out["user_metadata"] = row["raw_user_meta_data"] or {}
    out["identities"] = identities
    out["created_at"] = created
    out["updated_at"] = ts(row["updated_at"])
    out["is_anonymous"] = False
    return out


def jwt_error_text(exc: jwt.PyJWTError, token: str) -> str:
    """Word a token failure as golang-jwt v5 does."""
    if token.count(".") != 2:
        return "token is malformed: token contains an invalid number of segments"
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token has invalid claims: token is expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token has invalid claims: token is not valid yet"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature is invalid: signature is invalid"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            alg = "unknown"
        return f"token signature is invalid: signing method {alg} is invalid"
    return f"token is malformed: {exc}"


# --- HTTP ------------------------------------------------------------------------------------


class Handler(BaseHandler):
    """GoTrue's HTTP API (net/http sends no Server header)."""

    cfg: Config

    def _dispatch(self) -> None:
        """Answer one request within the deadline and log it as GoTrue's request logger does."""
        header = self.cfg.request_id_header
        # observability/request-logger.go:15-27: the configured header's value, even empty.
        self.request_id = self.headers.get(header, "") if header else str(uuid.uuid4())
        parts = urlsplit(self.path)
        self.req_path = parts.path
        self.query = parse_qs(parts.query)
        self.claims: dict[str, Any] = {}
        self.error_code: str | None = None
        try:
            # Read the body up front: an unread body would corrupt the next keep-alive request.
            self.body = self.read_body()
        except ValueError:
            BaseHandler.send_body(self, 413, b"")
            self.close_connection = True
            return
        origin = self.headers.get("Origin")
        if origin and self.command == "OPTIONS" and self.headers.get(
                "Access-Control-Request-Method"):
            # The CORS handler answers preflights outside the router: no request log line.
            self._preflight(origin)
            return
        try:
            self._within_deadline(parts.path)
        except (ConnectionError, TimeoutError):
            return
        if parts.path != "/health":
            # request-logger.go:33: /health is served without the request logger.
            self._log_request()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _within_deadline(self, path: str) -> None:
        """timeoutMiddleware (api/middleware.go:348-400): route in a worker, 504 at the deadline.

        The endpoint's answer is buffered, as GoTrue's timeoutResponseWriter does; when the
        deadline passes first it is dropped and the 504 request_timeout error is sent instead.
        """
        self._answer: tuple[int, bytes, tuple[tuple[str, str], ...], str | None] | None = None
        self._sealed = False
        self._answer_lock = threading.Lock()
        self.deadline = time.monotonic() + (self.cfg.max_request_seconds or math.inf)
        done = threading.Event()

        def work() -> None:
            try:
                self._route(self.command, path)
            except ApiError as err:
                self._send_error(err)
            except psycopg.Error as exc:
                self._send_unexpected(pgx_error(exc, self.cfg.db_url))
            finally:
                done.set()

        threading.Thread(target=work, daemon=True).start()
        limit = self.cfg.max_request_seconds
        if not done.wait(limit if limit > 0 else None):
            with self._answer_lock:
                self._sealed = True
                self._answer = None
            # The worker may still touch this handler: the connection is not reused.
            self.close_connection = True
            self._send_error(ApiError(504, "request_timeout", TIMEOUT_MESSAGE,
                                      "context deadline exceeded"), force=True)
        answer = self._answer
        if answer is not None:
            BaseHandler.send_body(self, answer[0], answer[1], answer[2], answer[3])

    def send_body(self, status: int, body: bytes, headers: Any = (),
                  content_type: str | None = None, *, force: bool = False) -> None:
        """Buffer the answer until the request is done (dropped once the deadline passed)."""
        with self._answer_lock:
            if self._sealed and not force:
                return
            self._answer = (status, body, tuple(headers), content_type)

    def remaining(self) -> float:
        """Seconds left before the request's deadline."""
        return max(self.deadline - time.monotonic(), 0.0)

    def _connect(self) -> psycopg.Connection[Any]:
        """A DB connection bounded by what is left of the request's time."""
        return connect(self.cfg, min(self.remaining() + 1, 30))


    def _route(self, method: str, path: str) -> None:
        """Dispatch to the endpoint, answering chi's 404/405 for the rest."""
        getlike = method in ("GET", "HEAD")
        if path == "/health":
            return self._need(getlike, self._health)
        if path == "/settings":
            return self._need(getlike, self._settings)
        if path == "/signup":
            return self._need(method == "POST", self._signup)
        if path in ("/admin/users", "/admin/users/"):
            if getlike:
                return self._admin(self._list_users)
            return self._need(method == "POST", lambda: self._admin(self._create_user))
        match = re.fullmatch(r"/admin/users/([^/]+)", path)
        if match:
            user_id = match.group(1)
            if getlike:
                return self._admin(lambda: self._get_user(user_id))
            delete = lambda: self._admin(lambda: self._delete(user_id))  # noqa: E731
            return self._need(method == "DELETE", delete)
        self.send_body(404, b"404 page not found\n", content_type="text/plain; charset=utf-8",
                       headers=[("X-Content-Type-Options", "nosniff")])
        return None

    def _preflight(self, origin: str) -> None:
        """A CORS preflight, answered by GoTrue's CORS middleware before routing."""
        headers = [
            ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", self.headers["Access-Control-Request-Method"]),
            ("Access-Control-Allow-Credentials", "true"),
        ]
        requested = self.headers.get("Access-Control-Request-Headers")
        if requested:
            headers.append(("Access-Control-Allow-Headers", requested))
        BaseHandler.send_body(self, 204, b"", headers)

    def _need(self, allowed: bool, action: Any) -> None:
        """Run action if the method fits, else answer 405 as chi does."""
        if not allowed:
            self.send_body(405, b"")
            return
        action()

    # -- responses --

    def _api_version(self) -> str | None:
        """The API version the client asked for, if it is one GoTrue knows."""
        value = self.headers.get("X-Supabase-Api-Version")
        return value if value == API_VERSION_2024 else None

    def _send_json(self, status: int, obj: Any, extra: list[tuple[str, str]] | None = None,
                   *, force: bool = False) -> None:
        """Send a JSON body as GoTrue's sendJSON does."""
        headers = list(extra or [])
        origin = self.headers.get("Origin")
        if origin:
            headers += [("Vary", "Origin"), ("Access-Control-Allow-Origin", origin),
                        ("Access-Control-Allow-Credentials", "true")]
        if self._api_version():
            headers.append(("X-Supabase-Api-Version", API_VERSION_2024))
        body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.send_body(status, body, headers, content_type="application/json", force=force)

    def _send_error(self, err: ApiError, *, force: bool = False) -> None:
        """HandleResponseError (api/errors.go:186-289): log, then the client's error shape."""
        fields = self._log_fields()
        fields["error"] = err.internal or err.log_text  # WithError(e.Cause())
        level = "error" if err.status >= 500 else "warning" if err.status == 429 else "info"
        log_json(level, err.log_text, **fields)
        headers = [("X-Sb-Error-Code", err.code)]
        self.error_code = err.code
        if self._api_version():
            body: dict[str, Any] = {"code": err.code, "message": err.msg}
        elif err.pg is not None:
            self._send_json(err.pg["status"], err.pg["body"], headers, force=force)
            return
        else:
            body = {"code": err.status, "error_code": err.code, "msg": err.msg}
            if err.status >= 500 and self.request_id:
                body["error_id"] = self.request_id
        self._send_json(err.status, body, headers, force=force)

    def _send_unexpected(self, internal: str) -> None:
        """Answer an error GoTrue did not wrap: a 500 that points at the server log."""
        fields = self._log_fields()
        fields["error"] = internal
        log_json("error", f"Unhandled server error: {internal}", **fields)
        message = "Unexpected failure, please check server logs for more information"
        if self._api_version():
            body: dict[str, Any] = {"code": "unexpected_failure", "message": message}
        else:
            body = {"code": 500, "error_code": "unexpected_failure", "msg": message}
        self._send_json(500, body)

    def _log_fields(self) -> dict[str, Any]:
        """The request fields GoTrue attaches to every API log line."""
        fields = {
            "component": "api",
            "method": self.command,
            "path": self.req_path,
            "referer": self.headers.get("Referer", ""),
            "remote_addr": self.client_ip(),
        }
        if self.request_id:
            fields["request_id"] = self.request_id
        return fields

    def _log_request(self) -> None:
        """The request logger's line (request-logger.go:71-85)."""
        extra: dict[str, Any] = {"error_code": self.error_code} if self.error_code else {}
        log_json(
            "info",
            "request completed",
            duration=self.elapsed_ms() * 1_000_000,
            status=self.status_sent,
            **extra,
            **self._log_fields(),
        )

    # -- endpoints --

    def _health(self) -> None:
        """GET /health: no DB access, as in GoTrue."""
        self._send_json(200, {
            "version": VERSION,
            "name": "GoTrue",
            "description": "GoTrue is a user registration and authentication API",
        })

    def _settings(self) -> None:
        """GET /settings: the public view of the configuration."""
        cfg = self.cfg
        external: dict[str, bool] = {"anonymous_users": cfg.anonymous_enabled}
        external.update(cfg.external)
        external["email"] = cfg.email_enabled
        external["phone"] = cfg.phone_enabled
        self._send_json(200, {
            "external": dict(sorted(external.items())),
            "disable_signup": cfg.disable_signup,
            "mailer_autoconfirm": cfg.mailer_autoconfirm,
            "phone_autoconfirm": cfg.sms_autoconfirm,
            "sms_provider": cfg.sms_provider,
            "saml_enabled": cfg.saml_enabled,
        })

    def _admin(self, action: Any) -> None:
        """requireAdminCredentials: a Bearer JWT signed with the secret, with an admin role."""
        match = re.fullmatch(r"[Bb]earer (\S+)", self.headers.get("Authorization", "").strip())
        if not match:
            raise ApiError(401, "no_authorization", "This endpoint requires a Bearer token")
        token = match.group(1)
        try:
            self.claims = jwt.decode(
                token,
                self.cfg.jwt_secret,
                algorithms=["HS256"],
                options={"verify_aud": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            text = jwt_error_text(exc, token)
            raise ApiError(
                403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {text}", text
            ) from None
        if self.claims.get("role") not in self.cfg.admin_roles:
            roles = ", ".join(self.cfg.admin_roles)
            raise ApiError(403, "not_admin", "User not allowed", internal_message=(
                f"this token needs to have one of the following roles: {roles}"))
        action()

    def _json_body(self) -> dict[str, Any]:
        """Parse the JSON request body as GoTrue does."""
        raw = self.body
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ApiError(
                400, "bad_json", f"Could not parse request body as JSON: {exc}"
            ) from None
        if not isinstance(body, dict):
            raise ApiError(
                400,
                "bad_json",
                "Could not parse request body as JSON: json: cannot unmarshal "
                f"{type(body).__name__} into Go value of type api.AdminUserParams",
            )
        return body

    def _aud(self) -> str:
        """requestAud: the X-JWT-AUD header, else the configured audience."""
        return self.headers.get("X-JWT-AUD") or self.cfg.jwt_aud

    def _validate_email(self, email: Any) -> str:
        """validateEmail: required, at most 255 chars, a plausible address; lowercased."""
        if not isinstance(email, str) or email == "":
            raise ApiError(400, "validation_failed", "An email address is required")
        if len(email) > 255:
            raise ApiError(400, "validation_failed", "An email address is too long")
        if not EMAIL_RE.match(email):
            raise ApiError(
                400, "validation_failed", "Unable to validate email address: invalid format"
            )
        return email.lower()

    def _check_password(self, password: Any) -> None:
        """checkPasswordStrength: the minimum length rule."""
        if not isinstance(password, str) or len(password) < self.cfg.password_min_length:
            err = ApiError(
                422,
                "weak_password",
                f"Password should be at least {self.cfg.password_min_length} characters.",
            )
            raise err

    def _audit(self, cur: psycopg.Cursor[Any], action: str, actor: dict[str, Any],
               user: dict[str, Any]) -> None:
        """Insert an audit_log_entries row for the action."""
        payload = {
            "actor_id": actor.get("sub", ""),
            "actor_name": "",
            "actor_username": actor.get("email") or actor.get("role", ""),
            "actor_via_sso": False,
            "action": action,
            "log_type": "team" if actor else "account",
            "traits": {
                "user_id": str(user["id"]),
                "user_email": user["email"],
                "user_phone": "",
            },
        }
        cur.execute(
            "INSERT INTO auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)"
            " VALUES (%s, %s, %s, %s, %s)",
            (NIL_UUID, uuid.uuid4(), json.dumps(payload), utc_now(), self.client_ip()[:64]),
        )

    def _insert_user(self, cur: psycopg.Cursor[Any], email: str, password: str, aud: str,
                     role: str, user_meta: Any, app_meta: Any, confirmed: bool,
                     confirmation_sent: bool) -> dict[str, Any]:
        """Insert a user row and return it."""
        now = utc_now()
        cur.execute(
            f"INSERT INTO auth.users (id, aud, role, email, encrypted_password, "  # noqa: S608
            "email_confirmed_at, confirmation_sent_at, raw_app_meta_data, raw_user_meta_data, "
            f"created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {USER_COLUMNS}",
            (
                uuid.uuid4(), aud, role, email, hash_password(password),
                now if confirmed else None, None if confirmed or not confirmation_sent else now,
                Jsonb(app_meta), Jsonb(user_meta if isinstance(user_meta, dict) else {}),
                now, now,
            ),
        )
        row = cur.fetchone()
        assert row is not None
        return dict(row)

    def _create_user(self) -> None:
        """POST /admin/users."""
        params = self._json_body()
        aud = params.get("aud") or self._aud()
        email_in = params.get("email") or ""
        if not email_in and not params.get("phone"):
            # admin.go:340-341
            raise ApiError(
                400, "validation_failed", "Cannot create a user without either an email or phone"
            )
        if not email_in:
            # Phone-only users need the SMS machinery, which this stand-in does not have.
            raise ApiError(422, "validation_failed", "Phone-only users are not supported here")
        email = self._validate_email(email_in)
        # The admin path checks no password strength (admin.go:371-395).
        password = params.get("password") or secrets.token_urlsafe(48)
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            raise db_error("Database error checking email", exc, self.cfg.db_url) from None
        with conn:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            try:
                cur.execute(
                    "SELECT id FROM auth.users WHERE email = %s AND aud = %s "
                    "AND is_sso_user = false",
                    (email, aud),
                )
                exists = cur.fetchone() is not None
            except psycopg.Error as exc:
                raise db_error("Database error checking email", exc, self.cfg.db_url) from None
            if exists:
                raise ApiError(422, "email_exists",
                               "A user with this email address has already been registered")
            app_meta = {"provider": "email", "providers": ["email"]}
            if isinstance(params.get("app_metadata"), dict):
                app_meta.update(params["app_metadata"])
            try:
                with conn.transaction():
                    user = self._insert_user(
                        cur, email, password, aud, params.get("role") or self.cfg.default_group,
                        params.get("user_metadata"), app_meta, bool(params.get("email_confirm")),
                        confirmation_sent=False,
                    )
                    self._audit(cur, "user_signedup", self.claims, user)
            except psycopg.Error as exc:
                # A unique violation here (a race after the duplicate check) or a trigger's
                # RAISE is shown to the client in Postgres' own terms (errors.go:278-284).
                raise db_error("Database error creating new user", exc, self.cfg.db_url
                               ) from None
        self._send_json(200, user_json(user))

    def _list_users(self) -> None:
        """GET /admin/users with GoTrue's pagination (api/pagination.go, models/user.go:680)."""
        numbers = {}
        for name, default in (("page", 1), ("per_page", 50)):
            raw = (self.query.get(name) or [""])[0]
            if raw and not raw.isdigit():
                raise ApiError(400, "validation_failed", "Bad Pagination Parameters: "
                               f"strconv.ParseUint: parsing {go_quote(raw)}: invalid syntax")
            numbers[name] = int(raw) if raw else default
        # pop's paginator reads page 0 as 1; per_page 0 would divide by zero in GoTrue.
        page, per_page = max(numbers["page"], 1), max(numbers["per_page"], 1)
        aud = self._aud()
        search = (self.query.get("filter") or [""])[0]
        where = "aud = %s"
        args: list[Any] = [aud]
        if search:
            # LIKE on email (case-sensitive), ILIKE on the full name, as GoTrue queries.
            where += " AND (email LIKE %s OR raw_user_meta_data->>'full_name' ILIKE %s)"
            args += [f"%{search}%", f"%{search}%"]
        try:
            with self._connect() as conn:
                cur = conn.cursor(row_factory=psycopg.rows.dict_row)
                cur.execute(f"SELECT count(*) AS n FROM auth.users WHERE {where}",  # noqa: S608
                            args)
                total_row = cur.fetchone()
                total = int(total_row["n"]) if total_row else 0
                cur.execute(
                    f"SELECT {USER_COLUMNS} FROM auth.users WHERE {where} "  # noqa: S608
                    "ORDER BY created_at DESC LIMIT %s OFFSET %s",
                    [*args, per_page, (page - 1) * per_page],
                )
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise db_error("Database error finding users", exc, self.cfg.db_url) from None
        self._send_json(
            200,
            {"users": [user_json(r) for r in rows], "aud": aud},
            [("Link", self._links(page, -(-total // per_page))), ("X-Total-Count", str(total))],
        )

    def _links(self, page: int, pages: int) -> str:
        """addPaginationHeaders: the request's URL with its query re-encoded (keys sorted)."""
        query = {k: list(v) for k, v in self.query.items()}

        def url(to: int) -> str:
            query["page"] = [str(to)]
            encoded = urlencode(sorted((k, x) for k, vs in query.items() for x in vs))
            return f"<{self.req_path}?{encoded}>"

        links = f'{url(page + 1)}; rel="next", ' if pages > page else ""
        return links + f'{url(pages)}; rel="last"'

    def _load_user(self, conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
        """loadUser: a UUID that names an existing user."""
        try:
            uid = uuid.UUID(user_id)
        except ValueError:
            raise ApiError(404, "validation_failed", "user_id must be an UUID") from None
        try:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            cur.execute(f"SELECT {USER_COLUMNS} FROM auth.users WHERE id = %s",  # noqa: S608
                        (uid,))
            row = cur.fetchone()
        except psycopg.Error as exc:
            raise db_error("Database error loading user", exc, self.cfg.db_url) from None
        if row is None:
            raise ApiError(404, "user_not_found", "User not found")
        return dict(row)

    def _open_for_user(self) -> psycopg.Connection[Any]:
        """Connect for a user lookup; failing here is 'Database error loading user'."""
        try:
            return self._connect()
        except psycopg.Error as exc:
            raise db_error("Database error loading user", exc, self.cfg.db_url) from None

    def _get_user(self, user_id: str) -> None:
        """GET /admin/users/{id}."""
        with self._open_for_user() as conn:
            user = self._load_user(conn, user_id)
        self._send_json(200, user_json(user))

    def _delete(self, user_id: str) -> None:
        """DELETE /admin/users/{id}: audit entry, then the hard delete."""
        with self._open_for_user() as conn:
            user = self._load_user(conn, user_id)
            try:
                with conn.transaction(), conn.cursor() as cur:
                    try:
                        self._audit(cur, "user_deleted", self.claims, user)
                    except psycopg.Error as exc:
                        raise db_error("Error recording audit log entry", exc,
                                       self.cfg.db_url) from None
                    cur.execute("DELETE FROM auth.users WHERE id = %s", (user["id"],))
            except psycopg.Error as exc:
                raise db_error("Database error deleting user", exc, self.cfg.db_url) from None
        self._send_json(200, {})

    def _signup(self) -> None:
        """POST /signup (rate limits and mail delivery are not emulated)."""
        cfg = self.cfg
        if cfg.disable_signup:
            raise ApiError(422, "signup_disabled", "Signups not allowed for this instance")
        params = self._json_body()
        if not cfg.email_enabled:
            raise ApiError(422, "email_provider_disabled", "Email signups are disabled")
        password = params.get("password")
        if not password:
            raise ApiError(422, "validation_failed", "Signup requires a valid password")
        self._check_password(password)
        email = self._validate_email(params.get("email"))
        aud = self._aud()
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            raise db_error("Database error finding user", exc, cfg.db_url) from None
        with conn:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            cur.execute("SELECT id FROM auth.users WHERE email = %s AND aud = %s", (email, aud))
            if cur.fetchone() is not None:
                raise ApiError(422, "user_already_exists", "User already registered")
            try:
                with conn.transaction():
                    user = self._insert_user(
                        cur, email, password, aud, cfg.default_group, params.get("data"),
                        {"provider": "email", "providers": ["email"]},
                        cfg.mailer_autoconfirm, confirmation_sent=True,
                    )
                    self._audit(cur, "user_signedup", {}, user)
            except psycopg.Error as exc:
                raise db_error("Database error saving new user", exc, cfg.db_url) from None
        out = user_json(user)
        if not cfg.mailer_autoconfirm:
            self._send_json(200, out)
            return
        now = int(time.time())
        claims = {
            "aud": aud, "exp": now + cfg.jwt_exp, "iat": now, "sub": out["id"],
            "email": email, "phone": "", "app_metadata": out["app_metadata"],
            "user_metadata": out["user_metadata"], "role": cfg.default_group, "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}], "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
        }
        self._send_json(200, {
            "access_token": jwt.encode(claims, cfg.jwt_secret, algorithm="HS256"),
            "token_type": "bearer",
            "expires_in": cfg.jwt_exp,
            "expires_at": now + cfg.jwt_exp,
            "refresh_token": secrets.token_urlsafe(9),
            "user": out,
        })


def main() -> None:
    """Load the config, run the migrations, then serve until SIGTERM (cmd/root_cmd.go:19-22)."""
    install_signal_handlers()
    # GoTrue accepts any non-empty secret; PyJWT's warning about short ones is not its voice.
    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
    try:
        cfg = load_config()
    except ConfigError as exc:
        fatal_text(f"Failed to load configuration: {exc}")
    log_json("info", "Go runtime metrics collection started")
    migrate(cfg)
    Handler.cfg = cfg
    address = f"{cfg.host}:{cfg.port}"
    # serve_cmd.go:49 logs this before ListenAndServe, so it shows even when the bind fails.
    log_json("info", f"GoTrue API started on: {address}")
    try:
        if not cfg.port.isdigit():
            raise OSError(0, f"lookup tcp/{cfg.port}: unknown port")
        server = make_server(cfg.host, int(cfg.port), Handler)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower() if exc.errno else exc.strerror
        fatal("http server listen failed", component="api",
              error=f"listen tcp {address}: bind: {reason}" if exc.errno
              else f"listen tcp: {reason}")
    serve_until_signalled([server])


if __name__ == "__main__":
    main()
