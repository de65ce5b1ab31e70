"""Stand-in for PostgREST v12.2 (postgrest/postgrest:v12.2.0), the `rest` service.

Started as ``python postgrest.py`` with the environment PostgREST reads: PGRST_DB_URI,
PGRST_DB_SCHEMAS (or PGRST_DB_SCHEMA), PGRST_DB_ANON_ROLE, PGRST_JWT_SECRET,
PGRST_JWT_SECRET_IS_BASE64, PGRST_JWT_AUD, PGRST_JWT_ROLE_CLAIM_KEY, PGRST_SERVER_HOST
(default "!4", IPv4 only), PGRST_SERVER_PORT (default 3000), PGRST_ADMIN_SERVER_PORT (no
admin server unless it is set), PGRST_DB_POOL (default 10), PGRST_DB_MAX_ROWS,
PGRST_OPENAPI_MODE, PGRST_LOG_LEVEL (default "error": only 5xx requests are logged).

Public contract kept: the OpenAPI document at `/`, plain table reads (`select`, `limit`,
`offset`, `col=eq.value`) run as the JWT's role (or the anon role) in a transaction, the error
JSON {"code","details","hint","message"} with v12's codes and statuses, the JWT checks (PGRST301
for a bad signature, an expired token or a secret too short for the token's HMAC, with
WWW-Authenticate), the admin server's /live and /ready, and its failure behaviour: a DB that
cannot be reached is retried with capped exponential backoff while requests get 503
PGRST000/PGRST001/PGRST002 with Retry-After; a password the DB rejects makes the process exit
with status 1 after logging the error, as v12 does. Writes, embedding and RPC are not
implemented.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
import psycopg
from psycopg import sql
from standin_common import (
    BaseHandler,
    StandinServer,
    clf_time,
    env,
    install_signal_handlers,
    libpq_message,
    log_line,
    make_server,
    parse_go_bool,
    serve_until_signalled,
)

VERSION = "12.2.0"
SERVER_HEADER = f"postgrest/{VERSION}"
JSON_CT = "application/json; charset=utf-8"
CONNECT_TIMEOUT = 5
JWT_SKEW_SECONDS = 30
LOG_LEVELS = {"crit": 0, "error": 1, "warn": 2, "info": 3}
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
INT_TYPES = {"smallint": "integer", "integer": "integer", "bigint": "integer"}
NUM_TYPES = ("numeric", "real", "double precision")
# hs-jose's signOct (Crypto/JOSE/JWA/JWK.hs, v0.10:452-454, v0.11:451-453) refuses an HMAC key
# shorter than the hash's digest: KeySizeTooSmall.
HMAC_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# AppState.hs:245-248: the only connection failures that end the process.
FATAL_LOGIN_TEXTS = ("FATAL:  password authentication failed", "no password supplied")


def log(message: str) -> None:
    """Write a diagnostic line to stderr, prefixed with PostgREST's timestamp."""
    log_line(f"{clf_time()}: {message}", sys.stderr)


def error_body(code: str, message: str, details: str | None = None,
               hint: str | None = None) -> dict[str, Any]:
    """PostgREST's error JSON, keys in its order."""
    return {"code": code, "details": details, "hint": hint, "message": message}


class PgrstError(Exception):
    """An error PostgREST answers with its JSON body."""

    def __init__(self, status: int, body: dict[str, Any],
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body
        self.headers = headers or []


def connection_error(detail: str) -> PgrstError:
    """PGRST000: a connection could not be established."""
    return PgrstError(503, error_body(
        "PGRST000", "Database connection error. Retrying the connection.", detail + "\n"))


def client_error(detail: str) -> PgrstError:
    """PGRST001: an established connection failed under a query."""
    return PgrstError(503, error_body(
        "PGRST001", "Database client error. Retrying the connection.", detail + "\n"))


def no_schema_cache() -> PgrstError:
    """PGRST002: the schema cache is not loaded (the DB was not reachable)."""
    return PgrstError(503, error_body(
        "PGRST002", "Could not query the database for the schema cache. Retrying."))


def jwt_invalid(message: str) -> PgrstError:
    """PGRST301 with the WWW-Authenticate header PostgREST adds."""
    header = f'Bearer error="invalid_token", error_description="{message}"'
    return PgrstError(401, error_body("PGRST301", message), [("WWW-Authenticate", header)])


def pg_status(code: str, authed: bool) -> int:
    """Map a SQLSTATE to PostgREST v12's HTTP status."""
    fixed = {"23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404,
             "42P01": 404, "42P17": 500, "42501": 403 if authed else 401}
    if code in fixed:
        return fixed[code]
    by_class = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
                "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500,
                "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500}
    return by_class.get(code[:2], 400)


def pg_error(exc: psycopg.Error, authed: bool) -> PgrstError:
    """Turn a server-side SQL error into PostgREST's response."""
    code = exc.sqlstate or "XX000"
    diag = exc.diag
    body = error_body(code, diag.message_primary or str(exc), diag.message_detail,
                      diag.message_hint)
    return PgrstError(pg_status(code, authed), body)


@dataclass
class Config:
    """The part of PostgREST's configuration this stand-in honours."""

    db_uri: str
    schemas: list[str]
    anon_role: str | None
    jwt_secret: bytes | None
    jwt_aud: str | None
    role_path: list[str]
    server_host: str
    server_port: int
    admin_port: int | None
    pool_size: int
    max_rows: int | None
    openapi_mode: str
    log_level: int


def load_config() -> Config:
    """Read PGRST_* variables; a malformed one stops the process as PostgREST does."""
    secret = env("PGRST_JWT_SECRET")
    secret_bytes: bytes | None = secret.encode() if secret else None
    if secret and parse_go_bool_default(env("PGRST_JWT_SECRET_IS_BASE64"), False):
        secret_bytes = base64.b64decode(secret + "=" * (-len(secret) % 4))
    claim_key = env("PGRST_JWT_ROLE_CLAIM_KEY") or ".role"
    role_path = [part.strip('"') for part in claim_key.split(".") if part]
    schemas = env("PGRST_DB_SCHEMAS") or env("PGRST_DB_SCHEMA") or "public"
    admin = env("PGRST_ADMIN_SERVER_PORT")
    max_rows = env("PGRST_DB_MAX_ROWS")
    level = (env("PGRST_LOG_LEVEL") or "error").lower()
    if level not in LOG_LEVELS:
        raise SystemExit(f"Error in config: Invalid log level: {level}")
    return Config(
        db_uri=env("PGRST_DB_URI") or "postgresql://",
        schemas=[s.strip() for s in schemas.split(",") if s.strip()],
        anon_role=env("PGRST_DB_ANON_ROLE") or None,
        jwt_secret=secret_bytes,
        jwt_aud=env("PGRST_JWT_AUD") or None,
        role_path=role_path or ["role"],
        server_host=env("PGRST_SERVER_HOST") or "!4",
        server_port=int(env("PGRST_SERVER_PORT") or 3000),
        admin_port=int(admin) if admin else None,
        pool_size=max(int(env("PGRST_DB_POOL") or 10), 1),
        max_rows=int(max_rows) if max_rows else None,
        openapi_mode=env("PGRST_OPENAPI_MODE") or "follow-privileges",
        log_level=LOG_LEVELS[level],
    )


def parse_go_bool_default(value: str | None, default: bool) -> bool:
    """Parse a boolean setting, keeping the default when unset or empty."""
    if not value:
        return default
    try:
        return parse_go_bool(value)
    except ValueError:
        return value.lower() in ("on", "yes")


def fatal_exit(detail: str) -> None:
    """Log the fatal connection error and stop the whole process with status 1 (v12)."""
    payload = error_body("PGRST000", "Database connection error. Retrying the connection.",
                         detail + "\n")
    log(json.dumps(payload, separators=(",", ":")))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class Pool:
    """A small connection pool in the spirit of hasql-pool."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.idle: list[psycopg.Connection[Any]] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(cfg.pool_size)

    def acquire(self) -> psycopg.Connection[Any]:
        """Return an idle connection or a new one; login failures end the process."""
        if not self.slots.acquire(timeout=10):
            raise PgrstError(504, error_body(
                "PGRST003", "Timed out acquiring connection from connection pool."))
        with self.lock:
            conn = self.idle.pop() if self.idle else None
        if conn is not None:
            return conn
        try:
            # Autocommit, so a connection goes back to the pool outside any transaction.
            return psycopg.connect(self.cfg.db_uri, connect_timeout=CONNECT_TIMEOUT,
                                   application_name=f"PostgREST {VERSION}", autocommit=True)
        except psycopg.Error as exc:
            self.slots.release()
            detail = libpq_message(exc)
            if any(text in detail for text in FATAL_LOGIN_TEXTS):
                fatal_exit(detail)
            # Any other refusal (no pg_hba.conf entry, a missing role) is retried with 503s.
            raise connection_error(detail) from None

    def release(self, conn: psycopg.Connection[Any], broken: bool = False) -> None:
        """Return a connection; a broken one is dropped."""
        if broken or conn.broken or conn.closed:
            conn.close()
        else:
            with self.lock:
                self.idle.append(conn)
        self.slots.release()

    def flush(self) -> None:
        """Drop every idle connection, so the next use connects afresh."""
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class App:
    """Shared state: config, pool, schema cache and the reconnecting loader."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.pool = Pool(cfg)
        self.schema_cache: dict[str, list[str]] | None = None
        self.reload = threading.Event()
        # The delay last announced by the reconnect loop; 503s carry it as Retry-After.
        self.next_delay = 0

    def run_db(self, action: Any) -> Any:
        """Run action(conn) with a pooled connection, mapping failures as PostgREST does."""
        conn = self.pool.acquire()
        broken = False
        try:
            return action(conn)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                broken = True
                detail = libpq_message(exc)
                log(json.dumps(client_error(detail).body, separators=(",", ":")))
                raise client_error(detail) from None
            raise
        finally:
            self.pool.release(conn, broken)

    def load_schema_cache(self) -> None:
        """Query the version and the exposed relations once (raises on failure)."""
        self.pool.flush()

        def query(conn: psycopg.Connection[Any]) -> tuple[str, dict[str, list[str]]]:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT version()")
                row = cur.fetchone()
                version = str(row[0]) if row else "PostgreSQL"
                started = time.monotonic()
                cur.execute(
                    "SELECT n.nspname, c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r','v','m','f','p') "
                    "ORDER BY 1, 2",
                    (self.cfg.schemas,),
                )
                tables: dict[str, list[str]] = {s: [] for s in self.cfg.schemas}
                for nsp, rel in cur.fetchall():
                    tables[nsp].append(rel)
                self.queried_ms = (time.monotonic() - started) * 1000
                return version, tables

        version, tables = self.run_db(query)
        log(f"Successfully connected to {version}")
        log("Config reloaded")
        log(f"Schema cache queried in {self.queried_ms:.1f} milliseconds")
        count = sum(len(v) for v in tables.values())
        log(f"Schema cache loaded {count} Relations, 0 Relationships, 0 Functions, "
            "0 Domain Representations, 4 Media Type Handlers")
        self.schema_cache = tables
        log("Schema cache loaded in 0.1 milliseconds")

    def loader_loop(self) -> None:
        """Reload the schema cache when asked, retrying with backoff 1, 2, 4 ... 32 s."""
        while True:
            self.reload.wait()
            self.reload.clear()
            delay = 0
            while True:
                try:
                    self.load_schema_cache()
                    break
                except PgrstError as err:
                    self.schema_cache = None
                    log(json.dumps(err.body, separators=(",", ":")))
                except psycopg.Error as exc:
                    self.schema_cache = None
                    log(json.dumps(pg_error(exc, False).body, separators=(",", ":")))
                delay = 1 if delay == 0 else min(delay * 2, 32)
                self.next_delay = delay
                log(f"Attempting to reconnect to the database in {delay} seconds...")
                time.sleep(delay)
            self.reload.clear()

    def ready(self) -> bool:
        """Whether the schema cache is loaded and a query goes through."""
        if self.schema_cache is None:
            return False
        try:
            self.run_db(lambda conn: conn.execute("SELECT 1").fetchone())
        except (PgrstError, psycopg.Error):
            return False
        return True


def authenticate(cfg: Config, header: str) -> tuple[str, dict[str, Any], bool]:
    """Return (role, claims, authenticated) for the Authorization header, as v12 does."""
    match = re.fullmatch(r"[Bb]earer (\S*)", header.strip())
    token = match.group(1) if match else ""
    if not token:
        return anonymous_role(cfg), {}, False
    if cfg.jwt_secret is None:
        raise PgrstError(500, error_body("PGRST300", "Server lacks JWT secret"))
    check_signing(token, cfg.jwt_secret)
    claims = decode_claims(cfg, token, cfg.jwt_secret)
    return claimed_role(claims, cfg.role_path) or anonymous_role(cfg), claims, True


def claimed_role(claims: dict[str, Any], role_path: list[str]) -> str | None:
    """The non-empty string at role_path in the claims (jwt-role-claim-key), if any."""
    role: Any = claims
    for key in role_path:
        role = role.get(key) if isinstance(role, dict) else None
    return role if isinstance(role, str) and role else None


def anonymous_role(cfg: Config) -> str:
    """The role of a request without a role claim; 401 when anonymous access is off."""
    if cfg.anon_role is None:
        raise PgrstError(401, error_body("PGRST302", "Anonymous access is disabled"),
                         [("WWW-Authenticate", "Bearer")])
    return cfg.anon_role


def check_signing(token: str, secret: bytes) -> None:
    """Refuse a token the configured secret cannot verify, before its signature is checked."""
    parts = token.split(".")
    if len(parts) != 3:
        raise jwt_invalid("JWSError (CompactDecodeError Invalid number of parts: "
                          f"Expected 3 parts; got {len(parts)})")
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError as exc:
        raise jwt_invalid(f"JWSError ({exc})") from None
    if alg == "none":
        # Not in the accepted algorithms: no signature left to validate.
        raise jwt_invalid("JWSError JWSNoSignatures")
    if alg not in HMAC_MIN_KEY_BYTES or len(secret) < HMAC_MIN_KEY_BYTES[alg]:
        # An algorithm the oct key cannot verify, or a key too short for it: hs-jose's
        # verifyJWSWithPayload keeps only `Right True` results (JWS.hs, v0.11:650), so the
        # KeySizeTooSmall error is swallowed and the token reads as badly signed. With a
        # secret under 32 bytes every request carrying a JWT fails this way (fixed in v13 by
        # refusing to start, PostgREST#3607).
        raise jwt_invalid("JWSError JWSInvalidSignature")


# PyJWT's verdicts in PostgREST v12's words, the more specific first (any other PyJWTError
# is "JWSError (<its text>)").
JWT_ERRORS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "JWT expired"),
    (jwt.ImmatureSignatureError, "JWTNotYetValid"),
    (jwt.InvalidAudienceError, "JWTNotInAudience"),
    (jwt.InvalidSignatureError, "JWSError JWSInvalidSignature"),
)


def decode_claims(cfg: Config, token: str, secret: bytes) -> dict[str, Any]:
    """The verified claims of the token; PGRST301 naming what is wrong with it."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256", "HS384", "HS512"],
            audience=cfg.jwt_aud,
            leeway=JWT_SKEW_SECONDS,
            options={"verify_aud": cfg.jwt_aud is not None, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        message = next((text for kind, text in JWT_ERRORS if isinstance(exc, kind)),
                       f"JWSError ({exc})")
        raise jwt_invalid(message) from None
    return claims


def set_request_context(cur: psycopg.Cursor[Any], schema: str, role: str,
                        claims: dict[str, Any], method: str, path: str) -> None:
    """The per-request settings PostgREST applies at the start of its transaction."""
    cur.execute(
        "SELECT set_config('search_path', %s, true), set_config('role', %s, true), "
        "set_config('request.jwt.claims', %s, true), set_config('request.method', %s, true), "
        "set_config('request.path', %s, true)",
        (sql.Identifier(schema).as_string(cur), role, json.dumps(claims), method, path),
    )


def json_type(pg_type: str) -> tuple[str, str]:
    """Map a Postgres type to the OpenAPI (type, format) pair PostgREST emits."""
    base = pg_type.split("(")[0]
    if base in INT_TYPES:
        return INT_TYPES[base], base
    if base in NUM_TYPES:
        return "number", base
    if base == "boolean":
        return "boolean", base
    if pg_type.endswith("[]"):
        return "array", pg_type
    return "string", base


@dataclass(frozen=True)
class ReadQuery:
    """What a GET on a table asks for: columns, eq filters, limit and offset."""

    columns: tuple[str, ...] = ()
    filters: tuple[tuple[str, str], ...] = ()
    limit: int | None = None
    offset: int = 0

    def statement(self, schema: str, table: str) -> sql.Composed:
        """The rows as one JSON array and their count, as PostgREST's read query returns."""
        select = (sql.SQL("*") if not self.columns or self.columns == ("*",)
                  else sql.SQL(", ").join(sql.Identifier(c) for c in self.columns))
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(f), sql.Literal(v))
            for f, v in self.filters)
        inner = sql.SQL("SELECT {} FROM {}.{}{} LIMIT {} OFFSET {}").format(
            select, sql.Identifier(schema), sql.Identifier(table),
            sql.SQL(" WHERE ") + where if self.filters else sql.SQL(""),
            sql.Literal(self.limit) if self.limit is not None else sql.SQL("ALL"),
            sql.Literal(self.offset))
        return sql.SQL(
            "SELECT coalesce(json_agg(t), '[]')::text, count(t) FROM ({}) t").format(inner)


def parse_read_query(query: str, max_rows: int | None) -> ReadQuery:
    """Parse a read's query string; PGRST100 for what v12's parser rejects."""
    columns: list[str] = []
    filters: list[tuple[str, str]] = []
    limit = max_rows
    offset = 0
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "select":
            columns = [c.strip() for c in value.split(",") if c.strip()]
        elif key == "limit":
            number = parse_count(key, value)
            limit = number if limit is None else min(number, limit)
        elif key == "offset":
            offset = parse_count(key, value)
        elif value.startswith("eq."):
            filters.append((key, value[3:]))
        elif key not in ("order", "columns", "on_conflict"):
            raise PgrstError(400, error_body(
                "PGRST100", f'"failed to parse filter ({value})" (line 1, column 1)',
                "unexpected end of input expecting operator"))
    for name in [*columns, *(f for f, _ in filters)]:
        if name != "*" and not IDENT_RE.match(name):
            raise PgrstError(400, error_body(
                "PGRST100", f'"failed to parse select parameter ({name})"'))
    return ReadQuery(tuple(columns), tuple(filters), limit, offset)


def parse_count(key: str, value: str) -> int:
    """A limit or offset value; PGRST100 when it is not a number."""
    try:
        return int(value)
    except ValueError:
        raise PgrstError(400, error_body(
            "PGRST100", f'"failed to parse {key} ({value})" (line 1, column 1)',
            'unexpected "' + value[:1] + '" expecting digit')) from None


class Handler(BaseHandler):
    """The API server (port PGRST_SERVER_PORT)."""

    server_header = SERVER_HEADER
    app: App

    def _dispatch(self) -> None:
        """Serve one request and log it per PGRST_LOG_LEVEL."""
        parts = urlsplit(self.path)
        self.role_for_log = "anonymous"
        try:
            self.read_body()
        except ValueError:
            self.close_connection = True
        try:
            self._serve(parts.path, parts.query)
        except PgrstError as err:
            self._send_error(err)
        except (ConnectionError, TimeoutError):
            return
        self._log_request()

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_OPTIONS = _dispatch

    def _send_error(self, err: PgrstError) -> None:
        """Send a PostgREST error; a 503 also wakes the reconnecting loader."""
        body = json.dumps(err.body, separators=(",", ":")).encode()
        headers = list(err.headers)
        if err.status == 503:
            # App.hs:121-125,177-180: a 503 wakes the connection worker and says when to retry.
            headers.insert(0, ("Retry-After", str(self.app.next_delay)))
        self.send_body(err.status, body, headers, content_type=JSON_CT)
        if err.status == 503:
            self.app.reload.set()

    def _log_request(self) -> None:
        """Apache-style access line on stdout, filtered by log level like v12."""
        level = self.app.cfg.log_level
        status = self.status_sent
        if (level >= 3) or (level == 2 and status >= 400) or (level == 1 and status >= 500):
            # wai-logger's Apache format prints "-" for the size of PostgREST's responses.
            log_line(
                f'{self.client_ip()} - {self.role_for_log} [{clf_time()}] '
                f'"{self.requestline}" {status} - '
                f'"{self.headers.get("Referer", "")}" "{self.headers.get("User-Agent", "")}"'
            )

    def _schema(self) -> str:
        """The schema picked by Accept-Profile (reads), defaulting to the first exposed one."""
        schemas = self.app.cfg.schemas
        wanted = self.headers.get("Accept-Profile")
        if wanted is None:
            return schemas[0]
        if wanted not in schemas:
            raise PgrstError(406, error_body(
                "PGRST106", "The schema must be one of the following: " + ", ".join(schemas)))
        return wanted

    def _serve(self, path: str, query: str) -> None:
        """Authenticate, check the schema cache, then answer / or a table read."""
        app = self.app
        role, claims, authed = authenticate(app.cfg, self.headers.get("Authorization", ""))
        self.role_for_log = role if authed else "anonymous"
        if app.schema_cache is None:
            raise no_schema_cache()
        if self.command == "OPTIONS":
            self.send_body(200, b"", [("Allow", "OPTIONS,GET,HEAD")])
            return
        if self.command not in ("GET", "HEAD"):
            raise PgrstError(405, error_body(
                "PGRST117", f"Unsupported HTTP method: {self.command}"))
        schema = self._schema()
        if path == "/":
            self._openapi(schema, role, claims, authed)
            return
        table = unquote(path.strip("/"))
        if "/" in table:
            raise PgrstError(404, error_body("PGRST125", "Invalid path specified in request URL"))
        self._read(schema, table, query, role, claims, authed)

    def _openapi(self, schema: str, role: str, claims: dict[str, Any], authed: bool) -> None:
        """GET /: the OpenAPI (Swagger 2.0) description of the exposed schema."""
        cfg = self.app.cfg
        if cfg.openapi_mode == "disabled":
            raise PgrstError(404, error_body("PGRST126", "Root endpoint metadata is disabled"))
        privileged = cfg.openapi_mode != "ignore-privileges"

        def query(conn: psycopg.Connection[Any]) -> tuple[str | None, list[tuple[Any, ...]]]:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    set_request_context(cur, schema, role, claims, "GET", "/")
                    cur.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                                "WHERE nspname = %s", (schema,))
                    row = cur.fetchone()
                    comment = row[0] if row else None
                    cur.execute(
                        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                        "a.attnotnull FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "JOIN pg_attribute a ON a.attrelid = c.oid "
                        "WHERE n.nspname = %s AND c.relkind IN ('r','v','m','f','p') "
                        "AND a.attnum > 0 AND NOT a.attisdropped AND (NOT %s OR "
                        "has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')) "
                        "ORDER BY c.relname, a.attnum",
                        (schema, privileged),
                    )
                    return comment, cur.fetchall()
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                raise pg_error(exc, authed) from None

        comment, rows = self.app.run_db(query)
        definitions: dict[str, Any] = {}
        for rel, col, pg_type, not_null in rows:
            spec = definitions.setdefault(rel, {"properties": {}, "type": "object"})
            kind, fmt = json_type(pg_type)
            spec["properties"][col] = {"format": fmt, "type": kind}
            if not_null:
                spec.setdefault("required", []).append(col)
        paths: dict[str, Any] = {
            "/": {"get": {"produces": ["application/openapi+json", "application/json"],
                          "responses": {"200": {"description": "OK"}},
                          "summary": "OpenAPI description (this document)",
                          "tags": ["Introspection"]}},
        }
        for rel in definitions:
            paths[f"/{rel}"] = {"get": {
                "responses": {"200": {"description": "OK", "schema": {
                    "items": {"$ref": f"#/definitions/{rel}"}, "type": "array"}},
                    "206": {"description": "Partial Content"}},
                "tags": [rel],
            }}
        title, description = (comment, "") if comment else (
            "PostgREST API", "This is a dynamic API generated by PostgREST")
        media = ["application/json", "application/vnd.pgrst.object+json;nulls=stripped",
                 "application/vnd.pgrst.object+json", "text/csv"]
        doc = {
            "swagger": "2.0",
            "info": {"description": description, "title": title, "version": VERSION},
            "host": f"0.0.0.0:{cfg.server_port}",
            "basePath": "/",
            "schemes": ["http"],
            "consumes": media,
            "produces": media,
            "paths": paths,
            "definitions": definitions,
            "externalDocs": {"description": "PostgREST Documentation",
                             "url": "https://postgrest.org/en/v12/references/api.html"},
        }
        body = json.dumps(doc, separators=(",", ":")).encode()
        self.send_body(200, body, content_type="application/openapi+json; charset=utf-8")

    def _read(self, schema: str, table: str, query: str, role: str, claims: dict[str, Any],
              authed: bool) -> None:
        """GET /<table>: select, limit, offset and eq filters, run as the request's role."""
        read = parse_read_query(query, self.app.cfg.max_rows)
        statement = read.statement(schema, table)

        def query_rows(conn: psycopg.Connection[Any]) -> tuple[str, int]:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    set_request_context(cur, schema, role, claims, "GET", f"/{table}")
                    cur.execute(statement)
                    row = cur.fetchone()
                    return (str(row[0]), int(row[1])) if row else ("[]", 0)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                raise pg_error(exc, authed) from None

        body, count = self.app.run_db(query_rows)
        content_range = f"{read.offset}-{read.offset + count - 1}/*" if count else "*/*"
        self.send_body(200, body.encode(), [("Content-Range", content_range)],
                       content_type=JSON_CT)


class AdminHandler(BaseHandler):
    """The admin server (PGRST_ADMIN_SERVER_PORT): /live and /ready."""

    app: App

    def do_GET(self) -> None:
        """Answer /live and /ready with an empty body and the status that matters."""
        path = urlsplit(self.path).path
        if path == "/live":
            self.send_body(200, b"")
        elif path == "/ready":
            self.send_body(200 if self.app.ready() else 503, b"")
        else:
            self.send_body(404, b"")

    do_HEAD = do_GET


def listen_host(value: str) -> tuple[str, bool]:
    """Translate PostgREST's server-host (warp HostPreference) to (host, dual_stack)."""
    if value == "!4":
        return "0.0.0.0", False
    if value == "!6":
        return "::", False
    if value in ("*", "*4", "*6"):
        return "", True
    return value, False


def main() -> None:
    """Start the servers and the schema cache loader; serve until SIGTERM."""
    install_signal_handlers()
    # The short-key verdict above is PostgREST's; PyJWT's own warning about it is not.
    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
    cfg = load_config()
    app = App(cfg)
    Handler.app = app
    AdminHandler.app = app
    log(f"Starting PostgREST {VERSION}...")
    servers: list[StandinServer] = []
    if cfg.admin_port is not None:
        host, dual = listen_host(cfg.server_host)
        servers.append(make_server(host, cfg.admin_port, AdminHandler, wildcard_dual_stack=dual))
        log(f"Admin server listening on port {cfg.admin_port}")
    host, dual = listen_host(cfg.server_host)
    servers.append(make_server(host, cfg.server_port, Handler, wildcard_dual_stack=dual))
    log(f"Listening on port {cfg.server_port}")
    threading.Thread(target=app.loader_loop, daemon=True).start()
    app.reload.set()
    serve_until_signalled(servers, on_stop=app.pool.flush)


if __name__ == "__main__":
    main()
