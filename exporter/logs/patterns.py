"""Known failure patterns in Supabase logs, as data, and matching them against entries.

Each entry matches at most one pattern: the first in PATTERNS that applies, so the more
specific explanation is listed first (a GoTrue "running db migrations: ... password
authentication failed" line is a password mismatch, one that failed to connect at all is a
login failure, and only what remains is a migration that logged in and failed in its SQL).

Severity is the pattern's own. A line that proves a standing fault (a rejected password,
a full disk, an unparsable kong.yml) is critical; a symptom that any client or a passing
restart can cause (a rejected token, a refused upstream) is a warning, because the live
checks (api_endpoints, auth_service, database_connection) judge the present state.

Startup patterns describe a component failing to start or connect. A later sign of a
successful start of the same component (READY_MARKERS), or for a role the db rejected, of
the service that logs in as that role (ROLE_SERVICES), means the fault no longer holds: the
match is reported as resolved and raises no issue, so a repaired instance does not keep
reporting the fault for the length of the log window.

The db runs with log_min_messages=fatal in the Ultrabase template, so it never logs that it
is ready. A refusal while it was starting up is therefore shown over by a later start of a
service that logs in to it (`ended_by_starts`), or by its passing: once `settles_seconds`
go by without one. The db's healthcheck logs another refusal every few seconds for as long
as the state lasts, and the live database_connection check judges the present anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from exporter.issues import CATALOGUE, Severity
from exporter.logs.model import Level, LogEntry, at_least

# Captured values kept per match (role names, hosts): enough to name them, never a list dump.
MAX_CAPTURED_VALUES = 5
MAX_SAMPLE_CHARS = 500
_DB_CLIENTS = ("auth", "rest", "storage", "realtime", "meta", "analytics", "supavisor")


@dataclass(frozen=True)
class LogPattern:
    """A known failure: where it is logged, how it reads, and the issue it means."""

    name: str
    components: tuple[str, ...] | None  # the components whose logs show it; None = any
    regex: re.Pattern[str]
    code: str
    severity: Severity
    # str.format template: {count}, {component} and the regex's named groups
    template: str
    # The component the issue is about, when it is not the one whose log showed it.
    subject: str | None = None
    startup: bool = False
    # Other components whose later start shows a startup failure over (they needed it).
    ended_by_starts: tuple[str, ...] = ()
    # A passing state, not a fault: over once it has not been logged for this long.
    settles_seconds: float | None = None
    min_level: Level = "info"  # debug chatter never counts
    # The catalogue's repair, unless the log line shows it would not help (False = keep it).
    repair: str | Literal[False] | None = False

    def applies_to(self, entry: LogEntry) -> bool:
        """True when this pattern is looked for in the entry's component and level."""
        return ((self.components is None or entry.component in self.components)
                and at_least(entry.level, self.min_level))


def _p(name: str, components: tuple[str, ...] | None, regex: str, code: str,
       severity: Severity, template: str, **options: Any) -> LogPattern:
    return LogPattern(name, components, re.compile(regex), code, severity, template, **options)


PATTERNS: tuple[LogPattern, ...] = (
    # --- the database rejects a login ------------------------------------------------------
    _p("db_superuser_password", None,
       r'password authentication failed for user \\?"(?P<role>postgres)\\?"',
       "DB_AUTH_FAILED", "critical",
       "The database rejected the password of postgres, an admin login of the instance, "
       "{count} time(s) (seen in {component}'s logs)", subject="db", startup=True),
    _p("db_role_password", None,
       r'password authentication failed for user \\?"(?P<role>[^"\\]+)\\?"',
       "DB_ROLE_PASSWORD_MISMATCH", "critical",
       "The database rejected the password of role(s) {role} {count} time(s) "
       "(seen in {component}'s logs)", subject="db", startup=True),
    _p("db_hba_rejected", None,
       r'(?:no pg_hba\.conf entry|pg_hba\.conf rejects connection) for host '
       r'\\?"(?P<host>[^"\\]*)\\?", user \\?"(?P<role>[^"\\]*)\\?"',
       "DB_AUTH_FAILED", "critical",
       "pg_hba.conf has no entry admitting role(s) {role} from {host} ({count} refused "
       "connection(s), seen in {component}'s logs)", subject="db", startup=True),
    # --- the database cannot be reached ----------------------------------------------------
    _p("db_not_ready", None,
       r"the database system is (?P<state>starting up|shutting down|in recovery mode|"
       r"not yet accepting connections)",
       "DB_UNREACHABLE", "warning",
       "Connections were refused {count} time(s) because the database was {state} (seen in "
       "{component}'s logs); normal around a restart, a fault if it persists",
       subject="db", startup=True, ended_by_starts=("auth", "rest"), settles_seconds=30),
    _p("db_connection_refused", _DB_CLIENTS,
       r"(?P<reason>could not connect to server|could not translate host name|"
       r"connection to server [^\n]*? failed: (?:Connection refused|timeout expired)|"
       r"failed to connect to `host=[^`]*`: (?:dial error|hostname resolving error)|"
       r"ECONNREFUSED [^\s]*:5432|:5432:? connect: connection refused)",
       "DB_UNREACHABLE", "warning",
       "{component} could not reach the database {count} time(s) ({reason})",
       subject="db", startup=True),
    # --- GoTrue cannot log in to its database (after the specific causes above) ---------------
    # pgx words every failed login as `failed to connect to `host=...`: <reason>`; pop wraps
    # it in `running db migrations: ...` at start (cmd/migrate_cmd.go:104).
    _p("auth_db_connection", ("auth",),
       r"(?P<reason>failed to connect to `host=[^`]*`|failed SASL auth|"
       r"password authentication failed|error opening database)",
       "AUTH_DB_CONNECTION_FAILED", "critical",
       "GoTrue could not log in to its database {count} time(s) ({reason})",
       subject="auth", startup=True, min_level="error"),
    # --- GoTrue logs in, but its migration SQL fails ------------------------------------------
    # pop's `error executing migrations/<file>, sql: <sql>: ERROR: ... (SQLSTATE x)` or a
    # failed CREATE of schema_migrations (3F000 with no usable schema, 42501 without rights).
    _p("auth_migration", ("auth",),
       r"running db migrations: (?:(?s:.*?)error executing (?P<file>migrations/[^,\s]+),)?"
       r"(?:(?s:.*?)(?P<error>(?:ERROR|FATAL): [^\n]*?) \(SQLSTATE (?P<sqlstate>\w{5})\))?",
       "AUTH_MIGRATION_FAILED", "critical",
       "GoTrue's database migrations failed {count} time(s): {error} (SQLSTATE {sqlstate}); "
       "it stops at every start until the auth schema or its rights are fixed",
       subject="auth", startup=True, min_level="error", repair=None),
    # --- GoTrue cannot load its configuration (cmd/root_cmd.go:40) ----------------------------
    _p("auth_config_empty", ("auth",),
       r"Failed to load configuration: envconfig\.Process: assigning (?P<variable>\w+) to "
       r"\w+: converting '' to type (?P<type>[\w.\[\]]+?)\. details",
       "AUTH_CONFIG_INVALID", "critical",
       "GoTrue cannot start: {variable} is set but empty, where it needs a value of type "
       "{type} ({count} failed start(s))", startup=True, min_level="error", repair=None),
    _p("auth_config_value", ("auth",),
       r"Failed to load configuration: envconfig\.Process: assigning (?P<variable>\w+) to "
       r"\w+: converting '(?P<value>[^'\n]*)' to type (?P<type>[\w.\[\]]+?)\. details",
       "AUTH_CONFIG_INVALID", "critical",
       "GoTrue cannot start: {variable}='{value}' is not a valid {type} ({count} failed "
       "start(s))", startup=True, min_level="error", repair=None),
    _p("auth_config_missing", ("auth",),
       r"Failed to load configuration: required key (?P<variable>\w+) missing value",
       "AUTH_CONFIG_INVALID", "critical",
       "GoTrue cannot start: {variable} is not set ({count} failed start(s))",
       startup=True, min_level="error", repair=None),
    _p("auth_config_jwt_secret", ("auth",),
       r"Failed to load configuration: failed to initialize \*jwk\.symmetricKey from "
       r"\[\]uint8: non-empty \[\]byte key required",
       "AUTH_CONFIG_INVALID", "critical",
       "GoTrue cannot start: GOTRUE_JWT_SECRET is set but empty ({count} failed start(s))",
       startup=True, min_level="error", repair=None),
    _p("auth_config_other", ("auth",),
       r"Failed to load configuration: (?P<reason>[^\n]{1,200})",
       "AUTH_CONFIG_INVALID", "critical",
       "GoTrue cannot load its configuration: {reason} ({count} failed start(s))",
       startup=True, min_level="error", repair=None),
    # --- Kong -------------------------------------------------------------------------------
    _p("kong_duplicate_entity", ("kong",),
       r"uniqueness violation: '(?P<entity>[^']+)' entity with (?P<field>[\w ]+?) set to "
       r"'(?P<value>[^']*)'",
       "GATEWAY_UNREACHABLE", "critical",
       "Kong cannot load kong.yml: {entity} declared twice ({field} '{value}'); it will not "
       "start until the duplicate is removed", startup=True, repair=None),
    _p("kong_config_invalid", ("kong",),
       r"error parsing declarative config file|declarative config is invalid",
       "GATEWAY_UNREACHABLE", "critical",
       "Kong cannot load kong.yml ({count} failed start(s)); it will not start until "
       "kong.yml is fixed", startup=True, repair=None),
    _p("kong_upstream", ("kong",),
       r"(?P<reason>connect\(\) failed \(\d+: [^)]*\)(?= while connecting to upstream)|"
       r"upstream timed out|no resolver defined|could not be resolved|"
       r"name resolution failed|dns server error)",
       "GATEWAY_UPSTREAM_ERROR", "warning",
       "Kong failed to reach a service behind its routes {count} time(s) ({reason})",
       repair=None),
    # --- JWTs (expired first: GoTrue's expiry message also says "invalid JWT") --------------
    _p("jwt_expired", None,
       r"(?P<what>token is expired|JWT expired|JWTExpired|token has expired)",
       "JWT_KEY_EXPIRED", "warning",
       "{component} rejected {count} request(s) whose JWT had expired; if it was the anon "
       "or service key, every client using it fails"),
    _p("jwt_bad_signature", None,
       r"(?P<what>signature is invalid|invalid signature|JWSInvalidSignature|JWSError|"
       r"invalid JWT(?![^\n]*token is malformed))",
       "JWT_SECRET_MISMATCH", "warning",
       "{component} rejected {count} request(s) whose JWT it could not verify ({what}); "
       "keys signed with another secret fail this way"),
    # --- the host -------------------------------------------------------------------------
    _p("disk_full", None, r"(?i)(?P<what>no space left on device)",
       "DISK_SPACE_CRITICAL", "critical",
       "{component} could not write: no space left on device ({count} time(s))"),
    _p("out_of_memory", None,
       r"(?P<what>(?i:\bout of memory\b)|\bOOM(?:[ -]?kill(?:ed|er)?)?\b)",
       "CONTAINER_OOM_KILLED", "warning",
       "{component} ran out of memory ({what}, {count} time(s))"),
    _p("address_in_use", None, r"(?i)(?P<what>address already in use)",
       "PORT_CONFLICT", "critical",
       "{component} could not listen: address already in use ({count} time(s)); another "
       "process or instance holds its port", startup=True),
)

# Lines that show a component started and connected: startup failures before them are over.
READY_MARKERS: Mapping[str, re.Pattern[str]] = {
    "db": re.compile(r"database system is ready to accept connections"),
    "auth": re.compile(r"GoTrue API started on|GoTrue migrations applied successfully"),
    "rest": re.compile(r"Connection successful|Successfully connected to PostgreSQL|"
                       r"Schema cache loaded"),
    "kong": re.compile(r"start worker process"),
}
# The service that logs in as a role. The db logs a rejected password for as long as the
# service keeps trying; once that service has started (it logged in), the db's earlier
# rejections of its role are over too.
ROLE_SERVICES: Mapping[str, str] = {
    "supabase_auth_admin": "auth",
    "authenticator": "rest",
}


class MatchDetails(TypedDict):
    """A PatternMatch as the logs check's details show it."""

    pattern: str
    code: str
    severity: Severity
    component: str  # the component the issue is about
    seen_in: str  # whose logs showed it
    message: str
    count: int
    first_seen: str  # ISO 8601
    last_seen: str
    sample: str
    captures: dict[str, list[str]]
    resolved_at: str | None  # when it was shown over


@dataclass(frozen=True)
class PatternMatch:
    """A pattern seen in one component's logs: how often, when, and one redacted sample."""

    pattern: str
    code: str
    severity: Severity
    component: str  # whose logs showed it
    subject: str  # the component the issue is about
    message: str
    count: int
    first_seen: datetime
    last_seen: datetime
    sample: str
    captures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    resolved_at: datetime | None = None  # when it was shown over (a later start, ...)
    repair: str | Literal[False] | None = False

    @property
    def resolved(self) -> bool:
        """True when the fault was shown over after its last occurrence."""
        return self.resolved_at is not None

    def to_dict(self) -> MatchDetails:
        """The match in JSON shape (for check details and the API)."""
        return {
            "pattern": self.pattern,
            "code": self.code,
            "severity": self.severity,
            "component": self.subject,
            "seen_in": self.component,
            "message": self.message,
            "count": self.count,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "sample": self.sample,
            "captures": {k: list(v) for k, v in self.captures.items()},
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }


@dataclass
class _Tally:
    pattern: LogPattern
    component: str
    count: int
    first_seen: datetime
    last_seen: datetime
    sample: str
    captures: dict[str, list[str]]

    def add(self, entry: LogEntry, groups: Mapping[str, str | None]) -> None:
        self.count += 1
        self.first_seen = min(self.first_seen, entry.timestamp)
        if entry.timestamp >= self.last_seen:
            self.last_seen, self.sample = entry.timestamp, _sample(entry)
        _capture(self.captures, groups)


def _sample(entry: LogEntry) -> str:
    return entry.text[:MAX_SAMPLE_CHARS]


def _capture(into: dict[str, list[str]], groups: Mapping[str, str | None]) -> None:
    for name, value in groups.items():
        values = into.setdefault(name, [])
        if value and value not in values and len(values) < MAX_CAPTURED_VALUES:
            values.append(value)


def first_match(entry: LogEntry, patterns: Iterable[LogPattern] = PATTERNS
                ) -> tuple[LogPattern, re.Match[str]] | None:
    """The first pattern that applies to the entry and matches its text."""
    text: str | None = None
    for pattern in patterns:
        if not pattern.applies_to(entry):
            continue
        text = entry.text if text is None else text
        found = pattern.regex.search(text)
        if found is not None:
            return pattern, found
    return None


@dataclass(frozen=True)
class _Candidates:
    """The patterns that apply to one component at one level, and a screen for them."""

    patterns: tuple[LogPattern, ...]
    # One regex that matches whenever any of the patterns would; None: try each one.
    screen: re.Pattern[str] | None

    def first(self, entry: LogEntry) -> tuple[LogPattern, re.Match[str]] | None:
        """first_match over these patterns; most entries end at the screen, in one search."""
        if not self.patterns:
            return None
        text = entry.text
        if self.screen is not None and self.screen.search(text) is None:
            return None
        for pattern in self.patterns:
            found = pattern.regex.search(text)
            if found is not None:
                return pattern, found
        return None


_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")
_UNSCREENABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")  # references to a group by number or name


def _candidates(patterns: Iterable[LogPattern], component: str, level: Level) -> _Candidates:
    chosen = tuple(p for p in patterns
                   if (p.components is None or component in p.components)
                   and at_least(level, p.min_level))
    return _Candidates(chosen, _screen(chosen))


def _screen(patterns: tuple[LogPattern, ...]) -> re.Pattern[str] | None:
    """The patterns as one alternation, group names dropped (they repeat across patterns)."""
    parts = []
    for pattern in patterns:
        source = pattern.regex.pattern
        flags = pattern.regex.flags & ~re.UNICODE
        if source.startswith("(?i)"):
            # A leading global flag, scoped to its own pattern in the alternation.
            source, flags = f"(?i:{source[4:]})", flags & ~re.IGNORECASE
        if flags or _UNSCREENABLE.search(source):
            return None
        parts.append(f"(?:{_NAMED_GROUP.sub('(?:', source)})")
    try:
        return re.compile("|".join(parts)) if parts else None
    except re.error:
        return None


def match_patterns(entries: Iterable[LogEntry], patterns: tuple[LogPattern, ...] = PATTERNS,
                   now: datetime | None = None) -> list[PatternMatch]:
    """Every pattern seen, per component, most frequent first; now settles passing states."""
    tallies: dict[tuple[str, str], _Tally] = {}
    ready: dict[str, datetime] = {}
    # Each entry is searched only for the patterns of its component and level.
    relevant: dict[tuple[str, Level], _Candidates] = {}
    for entry in entries:
        marker = READY_MARKERS.get(entry.component)
        if marker is not None and marker.search(entry.message):
            ready[entry.component] = max(ready.get(entry.component, entry.timestamp),
                                         entry.timestamp)
            continue
        where = (entry.component, entry.level)
        candidates = relevant.get(where)
        if candidates is None:
            candidates = relevant[where] = _candidates(patterns, *where)
        found = candidates.first(entry)
        if found is None:
            continue
        pattern, match = found
        key = (pattern.name, entry.component)
        tally = tallies.get(key)
        if tally is None:
            tallies[key] = tally = _Tally(pattern, entry.component, 0, entry.timestamp,
                                          entry.timestamp, _sample(entry), {})
        tally.add(entry, match.groupdict())
    matches = [_finish(t, _resolved_at(t, ready, now)) for t in tallies.values()]
    return sorted(matches, key=lambda m: (m.resolved, -m.count, m.pattern, m.component))


def _resolved_at(tally: _Tally, ready: Mapping[str, datetime],
                 now: datetime | None) -> datetime | None:
    """When a startup failure was shown to be over, if it was."""
    pattern = tally.pattern
    if not pattern.startup:
        return None
    candidates = [ready.get(c) for c in (tally.component, *pattern.ended_by_starts)]
    if pattern.settles_seconds is not None and now is not None:
        settled = tally.last_seen + timedelta(seconds=pattern.settles_seconds)
        if settled <= now:
            candidates.append(settled)
    roles = tally.captures.get("role") or []
    # With the capture list full, a role beyond it may still be failing: no verdict.
    if roles and len(roles) < MAX_CAPTURED_VALUES:
        starts = [ready.get(ROLE_SERVICES.get(role, "")) for role in roles]
        if all(start is not None and start > tally.last_seen for start in starts):
            candidates.append(max(s for s in starts if s is not None))
    after = [c for c in candidates if c is not None and c > tally.last_seen]
    return min(after) if after else None


def _finish(tally: _Tally, resolved_at: datetime | None) -> PatternMatch:
    pattern = tally.pattern
    captures = {k: tuple(v) for k, v in tally.captures.items()}
    values = {k: ", ".join(v) if v else "unknown" for k, v in captures.items()}
    message = pattern.template.format(count=tally.count, component=tally.component, **values)
    return PatternMatch(
        pattern=pattern.name, code=pattern.code, severity=pattern.severity,
        component=tally.component, subject=pattern.subject or tally.component,
        message=message, count=tally.count, first_seen=tally.first_seen,
        last_seen=tally.last_seen, sample=tally.sample,
        captures={k: v for k, v in captures.items() if v}, resolved_at=resolved_at,
        repair=pattern.repair,
    )


def _check_catalogue() -> None:
    # Import-time guard: a pattern must name an existing issue code.
    unknown = sorted({p.code for p in PATTERNS} - set(CATALOGUE))
    if unknown:
        raise RuntimeError(f"log patterns name unknown issue codes: {', '.join(unknown)}")


_check_catalogue()
