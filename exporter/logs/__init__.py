"""Container logs of an instance as structured entries, and the known failures they show."""

from __future__ import annotations

from exporter.logs.analyzer import LogAnalyzer
from exporter.logs.model import LEVELS, Level, LogEntry, LogSummary
from exporter.logs.patterns import PATTERNS, LogPattern, PatternMatch
from exporter.logs.query import (
    DEFAULT_LEVEL,
    DEFAULT_RANGE,
    MAX_RANGE_SECONDS,
    default_services,
    parse_level,
    parse_range,
)

__all__ = [
    "DEFAULT_LEVEL", "DEFAULT_RANGE", "LEVELS", "MAX_RANGE_SECONDS", "PATTERNS", "Level",
    "LogAnalyzer", "LogEntry", "LogPattern", "LogSummary", "PatternMatch", "default_services",
    "parse_level", "parse_range",
]
