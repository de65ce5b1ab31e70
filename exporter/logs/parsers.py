"""Turning raw container log lines into LogEntry objects, one parser per log format.

Formats, as the real images write them:
- GoTrue (auth): logrus JSON, one object per line, e.g.
  {"level":"fatal","msg":"running db migrations: ...","time":"2026-11-30T00:00:00Z"};
  it logs the 4xx answers it gives (a rejected JWT) at info level, with an "error" field.
  A configuration it cannot load is logged before its JSON logging is set up, in logrus's
  text format: `time="..." level=fatal msg="Failed to load configuration: ..."` (logfmt).
- Postgres (db): `172.18.0.5 2026-11-30 00:00:00.000 UTC [87] user@db FATAL:  message`;
  the prefix varies with log_line_prefix (and starts with a space for processes without a
  client host), so only the "SEVERITY:  " marker is relied on.
  DETAIL/HINT/CONTEXT/STATEMENT lines and tab-indented lines extend the entry before them.
- Kong (kong): nginx's error log `2026/11/30 00:00:00 [error] 1#0: *5 message, client: ...`
  and its access log in the combined format. An access line is an error for a 5xx
  status (the gateway failed the request) and a warning for a 4xx (the caller was turned
  away, e.g. a rejected key); 4xx answers never count toward an error spike, so a
  scanner's 404s cannot raise one.
- PostgREST (rest): `30/Nov/2026:00:00:00 +0000: message`, with error objects
  ({"code":"PGRST000","details":...,"message":...}) as the message; it writes no level,
  so the level comes from the words in the line.
- Anything else: JSON with a level or severity key (storage, pino's numeric levels too),
  logfmt (`level=error msg="..."`), or a level word near the start (`[error]`, `WARN`).

Docker prefixes every line with its own RFC 3339 timestamp; that one is used (it is UTC and
always there), the application's own time only when Docker's is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.logs.model import Level, LogEntry
from exporter.logs.scrub import scrub_text, scrub_value
from exporter.redaction import Redactor

# Long stack traces are folded into one entry; beyond this they are cut.
MAX_MESSAGE_CHARS = 4000
# Marker: the line extends whatever part of the previous entry the line before extended.
SAME_PART = "..."


@dataclass(frozen=True)
class Parsed:
    """What a parser read from one line (before redaction)."""

    level: Level
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    time: datetime | None = None
    # Set when the line belongs to the entry before it: the field it extends
    # ("message", "detail", ...), or SAME_PART.
    continues: str | None = None


Parser = Callable[[str], Parsed | None]

# --- levels -------------------------------------------------------------------------------

_LEVEL_WORDS: Mapping[str, Level] = {
    "trace": "debug", "debug": "debug", "debug1": "debug", "debug2": "debug",
    "debug3": "debug", "debug4": "debug", "debug5": "debug",
    "info": "info", "information": "info", "log": "info", "notice": "info",
    "warn": "warning", "warning": "warning",
    "err": "error", "erro": "error", "error": "error",
    "crit": "fatal", "critical": "fatal", "alert": "fatal", "emerg": "fatal",
    "emergency": "fatal", "fatal": "fatal", "panic": "fatal",
}
# pino (storage, studio): 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal
_PINO_LEVELS: tuple[tuple[int, Level], ...] = (
    (60, "fatal"), (50, "error"), (40, "warning"), (30, "info"), (0, "debug"))


def level_word(word: object) -> Level | None:
    """The level a word (or pino number) names, if it names one."""
    if isinstance(word, int | float) and not isinstance(word, bool):
        return next((level for floor, level in _PINO_LEVELS if word >= floor), "debug")
    if isinstance(word, str):
        return _LEVEL_WORDS.get(word.strip().lower())
    return None


# A level written near the start of a plain line: nginx/Elixir "[error]", logfmt
# "level=error", an upper-case word ("WARN", "FATAL:"), or Go's "panic:".
_PLAIN_LEVEL = re.compile(
    r"(?i:\[(?P<bracket>trace|debug|info|notice|warn|warning|error|crit|alert|emerg|fatal|"
    r"panic)\])"
    r"|\blevel=\"?(?P<logfmt>[A-Za-z]+)"
    r"|\b(?P<upper>TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERRO|FATAL|PANIC|CRIT|CRITICAL)\b"
    r"|^(?P<go>panic|fatal error):")
_PLAIN_HEAD_CHARS = 100
# A time before the level word ("17:10:03.190 [error]", "2026-11-30T11:50:27Z  WARN").
_TIME_LIKE = re.compile(r"[\d\s:.,/TZ+\-\[\]]*")


def _plain_level(text: str) -> tuple[Level, str] | None:
    """The level named near the start of text, and the message after it when that is clear."""
    match = _PLAIN_LEVEL.search(text[:_PLAIN_HEAD_CHARS])
    if match is None:
        return None
    word = next(g for g in match.groups() if g is not None)
    level = "fatal" if match.group("go") else level_word(word)
    if level is None:
        return None
    # The level word is dropped from the message only where it is clearly a prefix:
    # after a time ("17:10:03.190 [error] ...") or as a label ("FATAL:  ...").
    head, rest = text[:match.start()], text[match.end():]
    labelled = (head.strip() and _TIME_LIKE.fullmatch(head)) or rest.startswith(":")
    message = rest.lstrip(" :-\t") if labelled and match.group("go") is None else text
    return level, message or text


# --- times --------------------------------------------------------------------------------

_ISO = re.compile(r"(?P<base>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
                  r"\s?(?P<tz>Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$")


def parse_iso(text: str) -> datetime | None:
    """A UTC datetime from RFC 3339 / ISO text (nanoseconds cut); naive times count as UTC."""
    match = _ISO.match(text.strip())
    if match is None:
        return None
    frac = (match.group("frac") or "0")[:6]
    tz = match.group("tz") or "Z"
    if tz in ("Z", "UTC", "GMT"):
        tz = "+00:00"
    elif ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:] or '00'}"
    try:
        parsed = datetime.fromisoformat(f"{match.group('base').replace(' ', 'T')}.{frac}{tz}")
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def _strptime(text: str, fmt: str) -> datetime | None:
    try:
        parsed = datetime.strptime(text, fmt)
    except ValueError:
        return None
    # nginx writes the container's local time without a zone; the images run in UTC.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _epoch_or_iso(value: object) -> datetime | None:
    if isinstance(value, str):
        return parse_iso(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        # pino writes milliseconds; anything this large cannot be seconds
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


_DOCKER_PREFIX = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})) ?")


def split_docker_timestamp(line: str) -> tuple[datetime | None, str]:
    """Docker's timestamp of a line (from `docker logs --timestamps`) and the line's body."""
    match = _DOCKER_PREFIX.match(line)
    if match is None:
        return None, line
    return parse_iso(match.group(1)), line[match.end():]


# --- the parsers --------------------------------------------------------------------------

_JSON_LEVEL_KEYS = ("level", "severity", "lvl", "log.level")
_JSON_MESSAGE_KEYS = ("msg", "message", "event_message")
_JSON_TIME_KEYS = ("time", "timestamp", "ts", "@timestamp")


def _first(obj: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in obj:
            return key, obj[key]
    return None, None


def json_line(body: str) -> Parsed | None:
    """GoTrue's logrus JSON, and any JSON log object with a level or severity key."""
    text = body.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    level_key, raw_level = _first(obj, _JSON_LEVEL_KEYS)
    message_key, raw_message = _first(obj, _JSON_MESSAGE_KEYS)
    time_key, raw_time = _first(obj, _JSON_TIME_KEYS)
    message = str(raw_message) if raw_message is not None else text
    level = level_word(raw_level)
    if level is None:
        found = _plain_level(message)
        level = found[0] if found else "info"
    used = {level_key, message_key, time_key}
    fields = {k: v for k, v in obj.items() if k not in used}
    return Parsed(level, message, fields, _epoch_or_iso(raw_time))


_PG_LINE = re.compile(
    r"(?P<prefix>.{0,240}?)\b(?P<severity>DEBUG[1-5]|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|"
    r"DETAIL|HINT|CONTEXT|STATEMENT|QUERY|LOCATION):  (?P<message>.*)", re.S)
_PG_SECONDARY = frozenset({"DETAIL", "HINT", "CONTEXT", "STATEMENT", "QUERY", "LOCATION"})
_PG_PREFIX = re.compile(
    r"^(?:(?P<client>\[local\]|[0-9a-fA-F.:]+) )?"
    r"(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)? (?:UTC|GMT|[+-]\d{2}(?::?\d{2})?))?"
    r".*?(?:\[(?P<pid>\d+)(?:-\d+)?\])?:?\s*"
    r"(?:(?P<user>[\w.$-]+)@(?P<database>[\w.$-]+))?\s*$")


def postgres_line(body: str) -> Parsed | None:
    """A Postgres server log line (any log_line_prefix), or psql's output in the db container."""
    match = _PG_LINE.match(body)
    if match is None:
        return None
    severity, message = match.group("severity"), match.group("message").strip()
    if severity in _PG_SECONDARY:
        return Parsed("info", message, continues=severity.lower())
    level = level_word(severity) or "info"
    fields: dict[str, Any] = {}
    when = None
    prefix = _PG_PREFIX.match(match.group("prefix").strip())
    if prefix is not None:
        fields = {k: v for k, v in prefix.groupdict().items() if v and k != "time"}
        if "pid" in fields:
            fields["pid"] = int(fields["pid"])
        when = parse_iso(prefix.group("time") or "")
    return Parsed(level, message, fields, when)


_ACCESS_LINE = re.compile(
    r'(?P<client>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-)(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?')


def access_line(body: str) -> Parsed | None:
    """An HTTP access line in the combined format (Kong's proxy log, PostgREST's request log)."""
    match = _ACCESS_LINE.match(body)
    if match is None:
        return None
    status = int(match.group("status"))
    level: Level = "error" if status >= 500 else "warning" if status >= 400 else "info"
    fields: dict[str, Any] = {"client": match.group("client"), "status": status,
                              "request": match.group("request")}
    for key in ("user", "bytes", "referer", "agent"):
        value = match.group(key)
        if value and value != "-":
            fields[key] = int(value) if key == "bytes" else value
    return Parsed(level, f"{match.group('request')} {status}", fields,
                  _strptime(match.group("time"), "%d/%b/%Y:%H:%M:%S %z"))


_NGINX_ERROR = re.compile(
    r"(?:nginx: )?(?P<time>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>[a-z]+)\] "
    r"(?P<pid>\d+)#\d+: (?:\*(?P<connection>\d+) )?(?P<message>.*)", re.S)
# nginx appends the request's context: ", client: 1.2.3.4, server: kong, request: "GET /"..."
_NGINX_CONTEXT = re.compile(
    r', (?P<key>client|server|request|subrequest|upstream|host|referrer): '
    r'(?P<value>"[^"]*"|[^,]*)')
_NGINX_CONTEXT_TAIL = re.compile(
    r'(?:, (?:client|server|request|subrequest|upstream|host|referrer): (?:"[^"]*"|[^,]*))+$')
# Unindented lines that continue the entry before them: the path into a rejected
# kong.yml ("in 'routes':") and the head of a Lua traceback.
_KONG_CONTINUATION = re.compile(r"in '[^']*':$|stack traceback:$")


def kong_line(body: str) -> Parsed | None:
    """Kong's nginx error log line, or its access log line."""
    if _KONG_CONTINUATION.match(body):
        return Parsed("info", body.strip(), continues=SAME_PART)
    match = _NGINX_ERROR.match(body)
    if match is None:
        return access_line(body)
    message = match.group("message")
    fields: dict[str, Any] = {"pid": int(match.group("pid"))}
    if match.group("connection"):
        fields["connection"] = int(match.group("connection"))
    tail = _NGINX_CONTEXT_TAIL.search(message)
    if tail is not None:
        for item in _NGINX_CONTEXT.finditer(tail.group(0)):
            fields[item.group("key")] = item.group("value").strip('"')
        message = message[:tail.start()]
    return Parsed(level_word(match.group("level")) or "info", message.strip(), fields,
                  _strptime(match.group("time"), "%Y/%m/%d %H:%M:%S"))


_POSTGREST_LINE = re.compile(
    r"(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}): (?P<message>.*)", re.S)
# PostgREST writes no level: these words decide it, first match wins.
_POSTGREST_WORDS: tuple[tuple[re.Pattern[str], Level], ...] = (
    (re.compile(r"(?i)\b(?:error|failed|failure|could not|cannot|killed|denied)\b"), "error"),
    (re.compile(r"(?i)\b(?:retrying|reconnect|timed out)\b"), "warning"),
)


def postgrest_line(body: str) -> Parsed | None:
    """A PostgREST log line: timestamped text (or an error object), or a request line."""
    match = _POSTGREST_LINE.match(body)
    if match is None:
        return access_line(body)
    when = _strptime(match.group("time"), "%d/%b/%Y:%H:%M:%S %z")
    message = match.group("message").strip()
    payload = json_line(message)
    if payload is not None:
        # {"code":"PGRST000","details":...,"hint":...,"message":...}: always a failure
        fields = {k: v for k, v in payload.fields.items() if v is not None}
        return Parsed("error", payload.message, fields, when)
    explicit = _plain_level(message)
    if explicit is not None:
        return Parsed(explicit[0], message, {}, when)
    level: Level = next((lvl for words, lvl in _POSTGREST_WORDS if words.search(message)),
                        "info")
    return Parsed(level, message, {}, when)


_LOGFMT_PAIR = re.compile(r'(?P<key>[A-Za-z_][\w.-]*)=(?P<value>"(?:[^"\\]|\\.)*"|\S*)')


def _logfmt(body: str) -> Parsed | None:
    pairs = {m.group("key"): m.group("value") for m in _LOGFMT_PAIR.finditer(body)}
    if "level" not in pairs or "msg" not in pairs:
        return None
    values = {k: _unquote(v) for k, v in pairs.items()}
    level = level_word(values.pop("level"))
    if level is None:
        return None
    message = values.pop("msg")
    when = parse_iso(values.pop("time", ""))
    return Parsed(level, message, values, when)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        try:
            return str(json.loads(value))
        except ValueError:
            return value[1:-1]
    return value


def plain_line(body: str) -> Parsed:
    """Any text line: logfmt, or a level word near its start; info when nothing says more."""
    structured = _logfmt(body) if "level=" in body else None
    if structured is not None:
        return structured
    found = _plain_level(body)
    if found is None:
        return Parsed("info", body.strip())
    return Parsed(found[0], found[1].strip())


def generic_line(body: str) -> Parsed:
    """The fallback for every component: JSON with a level, else plain text."""
    return json_line(body) or plain_line(body)


# Compose service name -> the format its image writes. Other components use generic_line;
# a line a specific parser does not recognise falls back to it as well.
PARSERS: Mapping[str, Parser] = {
    "auth": json_line,
    "db": postgres_line,
    "kong": kong_line,
    "rest": postgrest_line,
}


def parse_body(component: str, body: str) -> Parsed:
    """Parse one line (without Docker's timestamp) as the component's format."""
    specific = PARSERS.get(component)
    parsed = specific(body) if specific is not None else None
    if parsed is not None:
        # The component's own format goes before indentation: a Postgres line starts
        # with a space when log_line_prefix begins with %h and the process has no client.
        return parsed
    if body[:1] in (" ", "\t"):
        # Indented text continues the entry before it: stack traces, Postgres's
        # "Connection matched pg_hba.conf line ...", the path into a rejected kong.yml.
        return Parsed("info", body.strip(), continues=SAME_PART)
    return generic_line(body)


@dataclass
class _Draft:
    """An entry being assembled from its first line and the lines that continue it."""

    timestamp: datetime
    level: Level
    message: str
    fields: dict[str, Any]
    part: str = "message"

    def extend(self, part: str, text: str) -> None:
        """Append a continuation line to the message or to a detail field."""
        if part == SAME_PART:
            part = self.part
        self.part = part
        if part == "message":
            self.message = _joined(self.message, text)
        else:
            current = self.fields.get(part)
            self.fields[part] = _joined(current, text) if isinstance(current, str) else text

    def freeze(self, component: str, redactor: Redactor) -> LogEntry:
        """The finished entry, with every secret taken out."""
        return LogEntry(self.timestamp, component, self.level,
                        scrub_text(self.message, redactor), scrub_value(self.fields, redactor))


def _joined(head: str, tail: str) -> str:
    if len(head) >= MAX_MESSAGE_CHARS:
        return head
    return f"{head}\n{tail}"[:MAX_MESSAGE_CHARS]


@dataclass(frozen=True, slots=True)
class Segment:
    """One entry and the Docker lines it was parsed from: what a later partial re-read needs.

    Parsing is a left fold in which only continuation lines look back, so the entries of a
    read are the entries of its segments, and a read that starts at a segment's first line
    gives that segment and the ones after it again.
    """

    entry: LogEntry | None  # None: blank lines before a read's first entry
    lines: int  # Docker lines, blank ones included (Docker's tail counts them)
    first: datetime | None  # Docker's time of the first line
    low: datetime | None  # the earliest and latest Docker time among its lines
    high: datetime | None
    timed: bool  # every line had Docker's time
    ordered: bool  # and none was earlier than the line before
    head: int  # hash of the first line as Docker gave it, to recognise it in a later read
    raw: tuple[str, ...] = ()  # the lines when more than one: a cut may fall inside


class _Open:
    """The segment being assembled: its draft (None for leading blank lines) and its lines."""

    __slots__ = ("draft", "first", "high", "low", "ordered", "previous", "raw", "timed")

    def __init__(self, draft: _Draft | None, raw: str, time: datetime | None) -> None:
        self.draft = draft
        self.raw = [raw]
        self.first = self.low = self.high = self.previous = time
        self.timed = self.ordered = time is not None

    def add(self, raw: str, time: datetime | None) -> None:
        """Count one more line into this segment."""
        self.raw.append(raw)
        if time is None:
            self.timed = self.ordered = False
            return
        if self.previous is not None and time < self.previous:
            self.ordered = False
        self.previous = time
        self.low = time if self.low is None else min(self.low, time)
        self.high = time if self.high is None else max(self.high, time)

    def close(self, component: str, redactor: Redactor) -> Segment:
        """The finished segment, its entry redacted."""
        entry = self.draft.freeze(component, redactor) if self.draft is not None else None
        raw = tuple(self.raw) if len(self.raw) > 1 else ()
        return Segment(entry, len(self.raw), self.first, self.low, self.high, self.timed,
                       self.ordered, hash(self.raw[0]), raw)


def _fold(component: str, lines: Iterable[str], default_time: datetime) -> list[_Open]:
    """The read's lines grouped into segments, each with its unredacted draft."""
    segments: list[_Open] = []
    drafts = 0
    last_time = default_time
    for raw in lines:
        docker_time, body = split_docker_timestamp(raw.rstrip("\r\n"))
        if not body.strip():
            # Blank lines produce nothing; they stay with the segment before for counting.
            if segments:
                segments[-1].add(raw, docker_time)
            else:
                segments.append(_Open(None, raw, docker_time))
            continue
        parsed = parse_body(component, body)
        if parsed.continues is not None and drafts:
            current = segments[-1]
            assert current.draft is not None  # a segment after the first draft has one
            current.draft.extend(parsed.continues, parsed.message)
            current.add(raw, docker_time)
            continue
        last_time = docker_time or parsed.time or last_time
        draft = _Draft(last_time, parsed.level, parsed.message[:MAX_MESSAGE_CHARS],
                       dict(parsed.fields))
        drafts += 1
        segments.append(_Open(draft, raw, docker_time))
    return segments


def parse_lines(component: str, lines: Iterable[str], redactor: Redactor,
                default_time: datetime) -> list[LogEntry]:
    """Entries from a component's log lines (oldest first, as Docker gives them), redacted.

    A line without any timestamp takes the time of the line before it, or default_time.
    """
    return [s.draft.freeze(component, redactor)
            for s in _fold(component, lines, default_time) if s.draft is not None]


def parse_segments(component: str, lines: Iterable[str], redactor: Redactor,
                   default_time: datetime) -> list[Segment]:
    """parse_lines' entries as segments: each with the Docker lines it was made of."""
    return [s.close(component, redactor) for s in _fold(component, lines, default_time)]
