"""Structured log entries and the summary of a log query."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Level = Literal["debug", "info", "warning", "error", "fatal"]
# Lowest first: a minimum level selects itself and everything after it.
LEVELS: tuple[Level, ...] = ("debug", "info", "warning", "error", "fatal")
_RANK: Mapping[str, int] = {name: n for n, name in enumerate(LEVELS)}

# Fields whose text belongs to the event as much as the message does (GoTrue's "error",
# PostgREST's "details", Postgres's DETAIL and HINT lines): patterns search them too.
TEXT_FIELDS: tuple[str, ...] = ("error", "details", "detail", "hint", "context")


def level_rank(level: str) -> int:
    """The position of a level in LEVELS (debug = 0)."""
    return _RANK[level]


def at_least(level: str, minimum: str) -> bool:
    """True when level is minimum or more severe."""
    return _RANK[level] >= _RANK[minimum]


@dataclass(frozen=True)
class LogEntry:
    """One log event of one component, already free of secrets."""

    timestamp: datetime  # UTC
    component: str
    level: Level
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The message plus the detail fields: what failure patterns are searched in."""
        extra = [str(self.fields[k]) for k in TEXT_FIELDS if self.fields.get(k)]
        return "\n".join([self.message, *extra]) if extra else self.message

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape of an entry."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "component": self.component,
            "level": self.level,
            "message": self.message,
            "fields": dict(self.fields),
        }


@dataclass(frozen=True)
class LogSummary:
    """Counts over the entries a query returned, and what could not be read in full."""

    total_entries: int
    error_count: int  # error and fatal
    warning_count: int
    by_component: Mapping[str, Mapping[str, int]]  # component -> level -> count
    since: datetime
    until: datetime
    # Components whose read hit the line cap: older lines in the window were not read.
    truncated: tuple[str, ...] = ()
    # Components whose logs could not be read, with the reason.
    unreadable: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape of a summary."""
        return {
            "total_entries": self.total_entries,
            "error_count": self.error_count,
            "warning_count": self.warning_count,
            "by_component": {c: dict(levels) for c, levels in self.by_component.items()},
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "truncated": list(self.truncated),
            "unreadable": dict(self.unreadable),
        }
