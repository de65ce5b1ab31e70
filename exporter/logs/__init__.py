"""Container logs of an instance as structured entries, and the known failures they show."""

from __future__ import annotations

from exporter.logs.analyzer import LogAnalyzer
from exporter.logs.model import LEVELS, Level, LogEntry, LogSummary
from exporter.logs.patterns import PATTERNS, LogPattern, PatternMatch
from exporter.logs.query import MAX_RANGE_SECONDS, parse_level, parse_range

__all__ = [
    "LEVELS", "MAX_RANGE_SECONDS", "PATTERNS", "Level", "LogAnalyzer", "LogEntry",
    "LogPattern", "LogSummary", "PatternMatch", "parse_level", "parse_range",
]
