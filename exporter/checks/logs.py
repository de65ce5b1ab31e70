"""The logs check: recent container logs parsed, known failures and error spikes as issues."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NotRequired, TypedDict

from exporter.checks.base import CheckContext, Family, Findings
from exporter.issues import SEVERITY_RANK, Issue, make_issue
from exporter.logs.analyzer import LogAnalyzer
from exporter.logs.cache import LogCache
from exporter.logs.model import LogEntry, LogSummary, at_least
from exporter.logs.patterns import MAX_CAPTURED_VALUES, MatchDetails, PatternMatch


class LogsDetails(TypedDict):
    """The logs check's details."""

    window_seconds: float
    max_lines_per_component: int
    log_lines: dict[str, dict[str, int]]  # component -> level -> lines in the window
    patterns: list[MatchDetails]  # each known failure seen
    truncated: list[str]  # components with more lines than max_lines_per_component
    unreadable: dict[str, str]  # component -> why its logs could not be read
    over_by_live_checks: NotRequired[list[str]]  # codes exporter.logs.staleness took out


LOGS: Family[LogsDetails] = Family("logs")
NAME = LOGS.name
# Docker serves logs from disk; a few parallel reads are enough to hide the latency.
_WORKERS = 4


class LogsCheck:
    """Reads each component's recent logs once and reports the failures they show.

    With a cache (one per engine, shared by the instances it diagnoses at once), a sweep
    reads and parses only the lines logged since the sweep before.
    """

    name = NAME

    def __init__(self, cache: LogCache | None = None) -> None:
        self._cache = cache

    def run(self, ctx: CheckContext) -> Findings:
        """Parse the last log_window_seconds of every component that has a container."""
        config = ctx.config
        components = [n for n, c in ctx.instance.components.items() if c.container is not None]
        if not components:
            return Findings(skipped="no component has a container to read logs from")
        # Stopped containers are read too: a service that exits at start logs why.
        analyzer = LogAnalyzer(ctx.docker, ctx.redactor, timeout=ctx.timeout, workers=_WORKERS,
                               cache=self._cache)
        entries, summary = analyzer.get_structured_logs(
            ctx.instance, components, level="debug", since_seconds=config.log_window_seconds,
            max_lines=config.log_max_lines, now=ctx.now)
        matches = analyzer.analyze(entries, now=ctx.now)
        details: LogsDetails = {
            "window_seconds": config.log_window_seconds,
            "max_lines_per_component": config.log_max_lines,
            "log_lines": {c: dict(levels) for c, levels in summary.by_component.items()},
            "patterns": [m.to_dict() for m in matches],
            "truncated": list(summary.truncated),
            "unreadable": dict(summary.unreadable),
        }
        if not summary.by_component:
            return Findings(details=details, skipped="no component's logs could be read")
        issues = [*_pattern_issues(matches),
                  *_spike_issues(summary, entries, config.thresholds.log_error_spike,
                                 config.log_window_seconds)]
        return Findings(tuple(issues), details)


def _pattern_issues(matches: Sequence[PatternMatch]) -> list[Issue]:
    # One issue per (code, component): the same fault seen in several components' logs
    # (a rejected password in db's, auth's and rest's) is one finding with all its evidence.
    groups: dict[tuple[str, str], list[PatternMatch]] = {}
    for match in matches:
        if not match.resolved:
            groups.setdefault((match.code, match.subject), []).append(match)
    return [_issue(group) for group in groups.values()]


def _issue(group: list[PatternMatch]) -> Issue:
    group = sorted(group, key=lambda m: (-SEVERITY_RANK[m.severity], -m.count))
    lead = group[0]
    message = lead.message
    if len(group) > 1:
        others = ", ".join(f"{m.component}'s logs ({m.count})" for m in group[1:])
        message = f"{message}; also seen in {others}"
    latest = max(group, key=lambda m: m.last_seen)
    captures: dict[str, list[str]] = {}
    for match in group:
        for key, values in match.captures.items():
            kept = captures.setdefault(key, [])
            kept.extend(v for v in values if v not in kept)
            del kept[MAX_CAPTURED_VALUES:]
    evidence = {
        "pattern": ", ".join(dict.fromkeys(m.pattern for m in group)),
        "count": sum(m.count for m in group),
        "first_seen": min(m.first_seen for m in group).isoformat(),
        "last_seen": latest.last_seen.isoformat(),
        "sample": latest.sample,
        "seen_in": list(dict.fromkeys(m.component for m in group)),
        "captures": captures,
    }
    return make_issue(lead.code, check=NAME, component=lead.subject, message=message,
                      evidence=evidence, severity=lead.severity, repair=lead.repair)


def _spike_issues(summary: LogSummary, entries: Sequence[LogEntry], threshold: int,
                  window_seconds: float) -> list[Issue]:
    issues = []
    for component, levels in summary.by_component.items():
        errors = _errors(levels)
        if errors < threshold:
            continue
        # entries are newest first: the first error of the component is the latest one
        latest = next((e for e in entries
                       if e.component == component and at_least(e.level, "error")), None)
        issues.append(make_issue(
            "LOG_ERROR_SPIKE", check=NAME, component=component,
            message=f"{component} logged {errors} errors in the last "
                    f"{_span(window_seconds)} (threshold {threshold})",
            evidence={"error_count": errors, "threshold": threshold,
                      "window_seconds": window_seconds,
                      "latest": latest.message[:500] if latest else None,
                      "truncated": component in summary.truncated}))
    return issues


def _errors(levels: Mapping[str, int]) -> int:
    return levels.get("error", 0) + levels.get("fatal", 0)


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
