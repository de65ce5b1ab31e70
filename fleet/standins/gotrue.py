"""Stand-in for GoTrue (supabase/auth v2.167.0), the `auth` service of a Supabase instance.

Started as ``python gotrue.py`` with the environment GoTrue reads (see the compose template):
GOTRUE_API_HOST, GOTRUE_API_PORT (or PORT; default 8081), API_EXTERNAL_URL, GOTRUE_DB_DRIVER,
GOTRUE_DB_DATABASE_URL (or DATABASE_URL), GOTRUE_SITE_URL, GOTRUE_JWT_SECRET, GOTRUE_JWT_AUD,
GOTRUE_JWT_ADMIN_ROLES, GOTRUE_JWT_DEFAULT_GROUP_NAME, GOTRUE_JWT_EXP, GOTRUE_DISABLE_SIGNUP,
GOTRUE_EXTERNAL_EMAIL_ENABLED, GOTRUE_EXTERNAL_PHONE_ENABLED,
GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED, GOTRUE_MAILER_AUTOCONFIRM, GOTRUE_SMS_AUTOCONFIRM,
GOTRUE_SMS_PROVIDER, GOTRUE_SAML_ENABLED, GOTRUE_PASSWORD_MIN_LENGTH,
GOTRUE_API_REQUEST_ID_HEADER.

Public contract kept: /health, /settings, /signup and the admin users API with GoTrue's error
JSON ({"code","error_code","msg"}, or {"code","message"} when the client sends
X-Supabase-Api-Version: 2024-01-01), its JWT checks (HS256, admin roles), its JSON log lines on
stderr, its migrations into the `auth` schema, and its failure behaviour: a failed DB login at
start is one fatal JSON line and exit status 1; a DB error during a request is a 500.
Passwords are stored as PBKDF2 hashes instead of bcrypt; identities are synthesised from the
user row rather than stored in auth.identities.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import jwt
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from standin_common import (
    BaseHandler,
    env,
    fatal_sqlstate,
    install_signal_handlers,
    is_auth_failure,
    libpq_message,
    log_line,
    make_server,
    parse_go_bool,
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
MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS auth.schema_migrations (version varchar(14) PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS auth.users (
        id uuid PRIMARY KEY,
        aud varchar(255),
        role varchar(255),
        email varchar(255) UNIQUE,
        encrypted_password varchar(255),
        email_confirmed_at timestamptz,
        raw_app_meta_data jsonb,
        raw_user_meta_data jsonb,
        is_sso_user boolean NOT NULL DEFAULT false,
        created_at timestamptz,
        updated_at timestamptz,
        deleted_at timestamptz)""",
    """CREATE TABLE IF NOT EXISTS auth.audit_log_entries (
        instance_id uuid,
        id uuid PRIMARY KEY,
        payload json,
        created_at timestamptz,
        ip_address varchar(64) NOT NULL DEFAULT '')""",
)
# Columns this stand-in uses that an auth.users or auth.audit_log_entries made by the Supabase
# Postgres image (the early GoTrue schema) may lack; only missing ones are added, since ALTER
# TABLE needs ownership even when there is nothing to do.
LATER_COLUMNS = (
    ("users", "email_confirmed_at", "timestamptz"),
    ("users", "confirmation_sent_at", "timestamptz"),
    ("users", "last_sign_in_at", "timestamptz"),
    ("users", "is_sso_user", "boolean NOT NULL DEFAULT false"),
    ("users", "deleted_at", "timestamptz"),
    ("audit_log_entries", "ip_address", "varchar(64) NOT NULL DEFAULT ''"),
)
CONNECT_RETRY_SECONDS = 5.0
DB_CONNECT_TIMEOUT = 5


def log_json(level: str, msg: str, **fields: Any) -> None:
    """Write a logrus-style JSON line (keys sorted, as logrus does) to stderr."""
    entry: dict[str, Any] = {**fields, "level": level, "msg": msg, "time": rfc3339()}
    log_line(json.dumps(dict(sorted(entry.items())), separators=(",", ":")), sys.stderr)


def fatal(msg: str) -> NoReturn:
    """Log a fatal line and exit 1, as logrus.Fatal does."""
    log_json("fatal", msg)
    sys.stdout.flush()
    os._exit(1)


class ConfigError(Exception):
    """The environment cannot be loaded the way GoTrue's envconfig loads it."""


@dataclass
class Config:
    """The part of GoTrue's configuration this stand-in honours."""

    host: str
    port: int
    db_url: str
    jwt_secret: str
    jwt_aud: str
    jwt_exp: int
    admin_roles: list[str]
    default_group: str
    disable_signup: bool
    email_enabled: bool
    phone_enabled: bool
    anonymous_enabled: bool
    mailer_autoconfirm: bool
    sms_autoconfirm: bool
    sms_provider: str
    saml_enabled: bool
    password_min_length: int
    request_id_header: str
    external: dict[str, bool] = field(default_factory=dict)


def _raw(key: str, *alts: str) -> str | None:
    """Look a key up as envconfig does: with the GOTRUE_ prefix, then the alternative names."""
    return env(key, None, *alts)


def _go_field(key: str) -> str:
    """The Go struct field envconfig names in its errors, e.g. DisableSignup or Enabled."""
    rest = key.removeprefix("GOTRUE_")
    match = re.fullmatch(r"(?:EXTERNAL_[A-Z0-9_]+?|MAILER|SMS|SAML|JWT|API|PASSWORD|DB)_(.+)",
                         rest)
    if match:
        rest = match.group(1)
    return "".join(part.capitalize() for part in rest.split("_"))


def _bool(key: str, default: bool) -> bool:
    """Read a boolean; a value Go's ParseBool rejects is a configuration error."""
    value = _raw(key)
    if value is None or value == "":
        return default
    try:
        return parse_go_bool(value)
    except ValueError:
        raise ConfigError(
            f"envconfig.Process: assigning {key} to {_go_field(key)}: converting '{value}' to "
            "type bool. "
            f'details: strconv.ParseBool: parsing "{value}": invalid syntax'
        ) from None


def _int(key: str, default: int, *alts: str) -> int:
    """Read an integer; a malformed value is a configuration error."""
    value = _raw(key, *alts)
    if value is None or value == "":
        return default
    try:
        return int(value, 0)
    except ValueError:
        raise ConfigError(
            f"envconfig.Process: assigning {key} to {_go_field(key)}: converting '{value}' to "
            "type int. "
            f'details: strconv.ParseInt: parsing "{value}": invalid syntax'
        ) from None


def _required(key: str, *alts: str) -> str:
    """Read a required key; envconfig only checks that it is present."""
    value = _raw(key, *alts)
    if value is None:
        raise ConfigError(f"required key {key} missing value")
    return value


def load_config() -> Config:
    """Load the configuration from the environment, failing as GoTrue does."""
    _required("GOTRUE_API_EXTERNAL_URL", "API_EXTERNAL_URL")
    _required("GOTRUE_SITE_URL", "SITE_URL")
    driver = _required("GOTRUE_DB_DRIVER", "DB_DRIVER")
    db_url = _required("GOTRUE_DB_DATABASE_URL", "DATABASE_URL")
    secret = _required("GOTRUE_JWT_SECRET", "JWT_SECRET")
    if driver != "postgres":
        raise ConfigError(f"unsupported database driver {driver!r}")
    roles = _raw("GOTRUE_JWT_ADMIN_ROLES") or ""
    admin_roles = [r.strip() for r in roles.split(",") if r.strip()] or [
        "service_role",
        "supabase_admin",
    ]
    return Config(
        host=_raw("GOTRUE_API_HOST") or "",
        port=_int("GOTRUE_API_PORT", 8081, "PORT"),
        db_url=db_url,
        jwt_secret=secret,
        jwt_aud=_raw("GOTRUE_JWT_AUD") or "authenticated",
        jwt_exp=_int("GOTRUE_JWT_EXP", 3600),
        admin_roles=admin_roles,
        default_group=_raw("GOTRUE_JWT_DEFAULT_GROUP_NAME") or "authenticated",
        disable_signup=_bool("GOTRUE_DISABLE_SIGNUP", False),
        email_enabled=_bool("GOTRUE_EXTERNAL_EMAIL_ENABLED", True),
        phone_enabled=_bool("GOTRUE_EXTERNAL_PHONE_ENABLED", False),
        anonymous_enabled=_bool("GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED", False),
        mailer_autoconfirm=_bool("GOTRUE_MAILER_AUTOCONFIRM", False),
        sms_autoconfirm=_bool("GOTRUE_SMS_AUTOCONFIRM", False),
        sms_provider=_raw("GOTRUE_SMS_PROVIDER") or "twilio",
        saml_enabled=_bool("GOTRUE_SAML_ENABLED", False),
        password_min_length=_int("GOTRUE_PASSWORD_MIN_LENGTH", 6),
        request_id_header=_raw("GOTRUE_API_REQUEST_ID_HEADER") or "",
        external={
            name: _bool(f"GOTRUE_EXTERNAL_{name.upper()}_ENABLED", False)
            for name in (
                "apple", "azure", "bitbucket", "discord", "facebook", "figma", "fly",
                "github", "gitlab", "google", "keycloak", "kakao", "linkedin",
                "linkedin_oidc", "notion", "spotify", "slack", "slack_oidc", "workos",
                "twitch", "twitter", "zoom",
            )
        },
    )


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
        fatal_text = " ".join(text.split("FATAL:", 1)[1].split())
        code = fatal_sqlstate(text)
        kind = "failed SASL auth" if code == "28P01" else "server error"
        return f"{target}: {kind} (FATAL: {fatal_text} (SQLSTATE {code}))"
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        primary = exc.diag.message_primary or text
        return f"ERROR: {primary} (SQLSTATE {exc.sqlstate})"
    return f"{target}: {' '.join(text.split())}"


def transient_connect_error(exc: BaseException) -> bool:
    """Errors worth retrying while the database container is still coming up."""
    text = libpq_message(exc)
    if is_auth_failure(text):
        return False
    return (
        "Connection refused" in text
        or text.startswith("could not translate host name")
        or "starting up" in text
        or "timeout expired" in text
        or "Connection reset" in text
        or "closed the connection unexpectedly" in text
    )


def connect(cfg: Config) -> psycopg.Connection[Any]:
    """Open a DB connection with a bounded connect time."""
    return psycopg.connect(cfg.db_url, connect_timeout=DB_CONNECT_TIMEOUT)


def migrate(cfg: Config) -> None:
    """Create GoTrue's tables; a DB login failure is fatal at once, as in GoTrue."""
    prefix = (
        "running db migrations: Migrator: problem creating schema migrations: couldn't start a "
        "new transaction: could not create new transaction: "
    )
    deadline = time.monotonic() + CONNECT_RETRY_SECONDS
    started = time.monotonic()
    while True:
        try:
            conn = connect(cfg)
            break
        except psycopg.Error as exc:
            if transient_connect_error(exc) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            fatal(prefix + pgx_error(exc, cfg.db_url))
    try:
        with conn, conn.cursor() as cur:
            for statement in MIGRATIONS:
                cur.execute(statement)
            cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = 'auth'")
            present = set(cur.fetchall())
            for table, column, definition in LATER_COLUMNS:
                if (table, column) not in present:
                    cur.execute(sql.SQL("ALTER TABLE auth.{} ADD COLUMN {} {}").format(
                        sql.Identifier(table), sql.Identifier(column), sql.SQL(definition)))
    except psycopg.Error as exc:
        fatal(
            "running db migrations: Migrator: problem creating schema migrations: "
            + pgx_error(exc, cfg.db_url)
        )
    finally:
        conn.close()
    log_json("info", "%.4f seconds", component="pop", args=[round(time.monotonic() - started, 6)])
    log_json("info", "GoTrue migrations applied successfully")


# --- API errors and JSON shapes --------------------------------------------------------------


class ApiError(Exception):
    """An HTTPError as GoTrue returns it."""

    def __init__(self, status: int, code: str, msg: str, internal: str | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.internal = internal


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
        """Route one request and log it as GoTrue's request logger does."""
        self.request_id = (
            self.headers.get(self.cfg.request_id_header) if self.cfg.request_id_header else None
        ) or str(uuid.uuid4())
        parts = urlsplit(self.path)
        self.req_path = parts.path
        self.query = parse_qs(parts.query)
        self.claims: dict[str, Any] = {}
        try:
            # Read the body up front: an unread body would corrupt the next keep-alive request.
            self.body = self.read_body()
        except ValueError:
            self.send_body(413, b"")
            self.close_connection = True
            return
        origin = self.headers.get("Origin")
        if origin and self.command == "OPTIONS" and self.headers.get(
                "Access-Control-Request-Method"):
            self._preflight(origin)
            self._log_request()
            return
        try:
            self._route(self.command, parts.path)
        except ApiError as err:
            self._send_error(err)
        except psycopg.Error as exc:
            self._send_unexpected(pgx_error(exc, self.cfg.db_url))
        except (ConnectionError, TimeoutError):
            return
        self._log_request()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

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
        self.send_body(204, b"", headers)

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

    def _send_json(self, status: int, obj: Any, extra: list[tuple[str, str]] | None = None) -> None:
        """Send a JSON body as GoTrue's sendJSON does."""
        headers = list(extra or [])
        origin = self.headers.get("Origin")
        if origin:
            headers += [("Vary", "Origin"), ("Access-Control-Allow-Origin", origin),
                        ("Access-Control-Allow-Credentials", "true")]
        if self._api_version():
            headers.append(("X-Supabase-Api-Version", API_VERSION_2024))
        body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.send_body(status, body, headers, content_type="application/json")

    def _send_error(self, err: ApiError) -> None:
        """Send and log an HTTPError in the shape the client's API version expects."""
        fields = self._log_fields()
        if err.internal:
            fields["error"] = err.internal
        level = "error" if err.status >= 500 else "warning" if err.status == 429 else "info"
        log_json(level, f"{err.status}: {err.msg}", **fields)
        if self._api_version():
            body: dict[str, Any] = {"code": err.code, "message": err.msg}
        else:
            body = {"code": err.status, "error_code": err.code, "msg": err.msg}
            if err.status >= 500:
                body["error_id"] = self.request_id
        self._send_json(err.status, body, [("X-Sb-Error-Code", err.code)])

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
        return {
            "component": "api",
            "method": self.command,
            "path": self.req_path,
            "referer": self.headers.get("Referer", ""),
            "remote_addr": self.client_ip(),
            "request_id": self.request_id,
        }

    def _log_request(self) -> None:
        """Log the completed request."""
        log_json(
            "info",
            "request completed",
            duration=self.elapsed_ms() * 1_000_000,
            status=self.status_sent,
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
            raise ApiError(403, "not_admin", "User not allowed")
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
            raise ApiError(
                422, "validation_failed", "Cannot create a user without either an email or phone"
            )
        if not email_in:
            # Phone-only users need the SMS machinery, which this stand-in does not have.
            raise ApiError(422, "validation_failed", "Phone-only users are not supported here")
        email = self._validate_email(email_in)
        password = params.get("password")
        if password:
            self._check_password(password)
        else:
            password = secrets.token_urlsafe(48)
        try:
            conn = connect(self.cfg)
        except psycopg.Error as exc:
            raise ApiError(500, "unexpected_failure", "Database error checking email",
                           pgx_error(exc, self.cfg.db_url)) from None
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
                raise ApiError(500, "unexpected_failure", "Database error checking email",
                               pgx_error(exc, self.cfg.db_url)) from None
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
            except psycopg.errors.UniqueViolation:
                raise ApiError(422, "email_exists",
                               "A user with this email address has already been registered"
                               ) from None
            except psycopg.Error as exc:
                raise ApiError(500, "unexpected_failure", "Database error creating new user",
                               pgx_error(exc, self.cfg.db_url)) from None
        self._send_json(200, user_json(user))

    def _list_users(self) -> None:
        """GET /admin/users with GoTrue's pagination."""
        try:
            page = int((self.query.get("page") or ["1"])[0])
            per_page = int((self.query.get("per_page") or ["50"])[0])
        except ValueError as exc:
            raise ApiError(400, "validation_failed", f"Bad Pagination Parameters: {exc}") from None
        page = max(page, 1)
        per_page = min(max(per_page, 1), 1000)
        aud = self._aud()
        search = (self.query.get("filter") or [""])[0]
        where = "aud = %s"
        args: list[Any] = [aud]
        if search:
            where += " AND (email ILIKE %s OR raw_user_meta_data->>'full_name' ILIKE %s)"
            args += [f"%{search}%", f"%{search}%"]
        try:
            with connect(self.cfg) as conn:
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
            raise ApiError(500, "unexpected_failure", "Database error finding users",
                           pgx_error(exc, self.cfg.db_url)) from None
        last = max((total + per_page - 1) // per_page, 1)
        links = []
        if page < last:
            links.append(f'</admin/users?page={page + 1}&per_page={per_page}>; rel="next"')
        links.append(f'</admin/users?page={last}&per_page={per_page}>; rel="last"')
        self._send_json(
            200,
            {"users": [user_json(r) for r in rows], "aud": aud},
            [("X-Total-Count", str(total)), ("Link", ", ".join(links))],
        )

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
            raise ApiError(500, "unexpected_failure", "Database error loading user",
                           pgx_error(exc, self.cfg.db_url)) from None
        if row is None:
            raise ApiError(404, "user_not_found", "User not found")
        return dict(row)

    def _open_for_user(self) -> psycopg.Connection[Any]:
        """Connect for a user lookup; failing here is 'Database error loading user'."""
        try:
            return connect(self.cfg)
        except psycopg.Error as exc:
            raise ApiError(500, "unexpected_failure", "Database error loading user",
                           pgx_error(exc, self.cfg.db_url)) from None

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
                        raise ApiError(500, "unexpected_failure",
                                       "Error recording audit log entry",
                                       pgx_error(exc, self.cfg.db_url)) from None
                    cur.execute("DELETE FROM auth.users WHERE id = %s", (user["id"],))
            except psycopg.Error as exc:
                raise ApiError(500, "unexpected_failure", "Database error deleting user",
                               pgx_error(exc, self.cfg.db_url)) from None
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
            conn = connect(cfg)
        except psycopg.Error as exc:
            raise ApiError(500, "unexpected_failure", "Database error finding user",
                           pgx_error(exc, cfg.db_url)) from None
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
                raise ApiError(500, "unexpected_failure", "Database error saving new user",
                               pgx_error(exc, cfg.db_url)) from None
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
    """Load the config, run the migrations, then serve until SIGTERM."""
    install_signal_handlers()
    log_json("info", "Go runtime metrics collection started")
    try:
        cfg = load_config()
    except ConfigError as exc:
        fatal(f"Failed to load configuration: {exc}")
    migrate(cfg)
    Handler.cfg = cfg
    try:
        server = make_server(cfg.host, cfg.port, Handler)
    except OSError as exc:
        fatal(f"http server listen failed: listen tcp {cfg.host}:{cfg.port}: {exc.strerror}")
    log_json("info", f"GoTrue API started on: {cfg.host}:{cfg.port}", component="api")
    serve_until_signalled([server])


if __name__ == "__main__":
    main()
