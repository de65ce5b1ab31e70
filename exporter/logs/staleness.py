"""Findings describe the present: what live evidence shows over becomes a recent event.

A log line tells of the past; a log finding stays an issue only while live evidence does
not show its element working. The element is what the finding is about: the roles whose
password the db rejected, else its component. A component is shown working when, in the
same run, container_status finds it running (healthy, where it has a healthcheck), no live
check reports a warning or worse on it (a slow answer is an answer), and the same holds
for every component it needs (the instance topology's links): a service cannot be shown
working while what it stands on fails. A role is shown working when database_connection logs it in.

The same holds for live findings that tell of the past: a crash loop or an out-of-memory
kill of a container that now runs healthy.

What is over becomes a RecentEvent: never an issue, never a root cause, never a repair.
Log matches that a later start already showed over (exporter.logs.patterns) are recent
events too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.checks.base import CheckResult, Findings, status_of
from exporter.checks.containers import CONTAINER_STATUS
from exporter.checks.database import DATABASE_CONNECTION
from exporter.checks.logs import LOGS as LOGS_FAMILY
from exporter.diagnostic import RecentEvent
from exporter.discovery.topology import Topology
from exporter.issues import Issue
from exporter.logs.patterns import MAX_CAPTURED_VALUES, MatchDetails

LOGS = LOGS_FAMILY.name
CONTAINERS = CONTAINER_STATUS.name
DATABASE = DATABASE_CONNECTION.name
_SERIOUS = frozenset({"warning", "critical"})
# Role findings: settled by the logins of those roles, not by the db's state.
_ROLE_CODES = frozenset({"DB_ROLE_PASSWORD_MISMATCH", "DB_AUTH_FAILED"})
_SUPERUSERS = frozenset({"postgres", "supabase_admin"})
# Live findings about a container's past, over once it runs healthy.
_PAST_CONTAINER_CODES = frozenset({"CONTAINER_CRASH_LOOP", "CONTAINER_OOM_KILLED"})
# Live warnings that show the component answering (slowly): they show it working. On a
# loaded host a slow answer otherwise brought a healed outage's log lines back as issues.
_ANSWERED_CODES = frozenset({"ENDPOINT_SLOW"})
MAX_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class Evidence:
    """What the run's live checks show working."""

    working: frozenset[str]  # components shown working, with all they need
    roles: frozenset[str]  # db roles that logged in

    def shows_over(self, issue: Issue) -> str | None:
        """What shows `issue` over, or None while it may still hold."""
        roles = _roles(issue)
        if issue.code in _ROLE_CODES and roles:
            if set(roles) <= self.roles:
                return f"database_connection logs in as {', '.join(roles)}"
            return None
        if issue.component is not None and issue.component in self.working:
            return f"{issue.component} runs and answers, as does all it needs"
        return None


def live_evidence(results: Mapping[str, CheckResult], topology: Topology | None,
                  past: Sequence[Issue] = ()) -> Evidence:
    """Components and roles the live checks of one run show working (`past` set aside)."""
    roles = _working_roles(results.get(DATABASE))
    containers = results.get(CONTAINERS)
    if containers is None or containers.status == "skipped":
        return Evidence(frozenset(), roles)  # without it no component is shown working
    states = CONTAINER_STATUS.details(containers).get("components") or {}
    failing = {i.component for r in results.values() if r.name != LOGS for i in r.issues
               if i.severity in _SERIOUS and i.component is not None
               and i.code not in _ANSWERED_CODES and not any(i is p for p in past)}
    up = {name for name, state in states.items()
          if state.get("state") == "running" and state.get("health") in (None, "healthy")
          and name not in failing}
    working = {name for name in up
               if topology is None or topology.upstream(name, runtime=True) & set(states) <= up}
    return Evidence(frozenset(working), roles)


def _working_roles(database: CheckResult | None) -> frozenset[str]:
    if database is None:
        return frozenset()
    found = DATABASE_CONNECTION.details(database)
    roles = {role for role, state in (found.get("roles") or {}).items() if state == "ok"}
    if found.get("superuser") and not any(i.code == "DB_AUTH_FAILED"
                                                     for i in database.issues):
        roles |= _SUPERUSERS
    return frozenset(roles)


def _roles(issue: Issue) -> list[str]:
    roles = list((issue.evidence.get("captures") or {}).get("role") or [])
    # With the capture list full, a role beyond it may still be failing: no verdict.
    return roles if len(roles) < MAX_CAPTURED_VALUES else []


def _past_container_issues(results: Mapping[str, CheckResult]) -> list[Issue]:
    """Crash loops and OOM kills of containers that now run healthy."""
    containers = results.get(CONTAINERS)
    if containers is None:
        return []
    states = CONTAINER_STATUS.details(containers).get("components") or {}
    healthy = {name for name, state in states.items()
               if state.get("state") == "running" and state.get("health") == "healthy"}
    return [i for i in containers.issues
            if i.code in _PAST_CONTAINER_CODES and i.component in healthy]


def settle(results: Mapping[str, CheckResult], topology: Topology | None
           ) -> tuple[dict[str, CheckResult], tuple[RecentEvent, ...]]:
    """The run's results with what live evidence shows over taken out, and those events."""
    past = _past_container_issues(results)
    evidence = live_evidence(results, topology, past)
    settled = dict(results)
    events: list[RecentEvent] = []
    for name in (CONTAINERS, LOGS):
        result = results.get(name)
        if result is None:
            continue
        over: list[tuple[Issue, str]] = []
        for issue in result.issues:
            if name == CONTAINERS:
                ended = evidence.shows_over(issue) if any(issue is p for p in past) else None
            else:
                ended = evidence.shows_over(issue)
            if ended is not None:
                over.append((issue, ended))
        if over:
            settled[name] = _without(result, [i for i, _ in over])
            events.extend(_event(issue, ended) for issue, ended in over)
    logs = results.get(LOGS)
    if logs is not None:
        events.extend(_resolved_matches(LOGS_FAMILY.details(logs).get("patterns") or []))
    return settled, tuple(sorted(events, key=lambda e: e.last_seen or "", reverse=True))


def _without(result: CheckResult, gone: Sequence[Issue]) -> CheckResult:
    kept = tuple(i for i in result.issues if not any(i is g for g in gone))
    details = {**result.details, "over_by_live_checks": [i.code for i in gone]}
    findings = Findings(kept, details)
    return CheckResult(result.name, status_of(findings), result.duration_seconds, kept,
                       details)


def _event(issue: Issue, ended: str) -> RecentEvent:
    evidence = issue.evidence
    if issue.check == LOGS:
        count = evidence.get("count", evidence.get("error_count"))
        excerpt = evidence.get("sample", evidence.get("latest"))
        first, last = evidence.get("first_seen"), evidence.get("last_seen")
    else:
        count = evidence.get("restart_count")
        excerpt = evidence.get("error") or issue.message
        first = last = evidence.get("started_at") or evidence.get("finished_at")
    return RecentEvent(
        code=issue.code, component=issue.component, check=issue.check,
        first_seen=_text(first), last_seen=_text(last),
        count=int(count) if isinstance(count, int) else None,
        excerpt=_excerpt(excerpt), ended=ended)


def _resolved_matches(patterns: Sequence[MatchDetails]) -> list[RecentEvent]:
    return [RecentEvent(
        code=str(p.get("code")), component=p.get("component"), check=LOGS,
        first_seen=_text(p.get("first_seen")), last_seen=_text(p.get("last_seen")),
        count=p.get("count") if isinstance(p.get("count"), int) else None,
        excerpt=_excerpt(p.get("sample")),
        ended=f"{p.get('component')} started again at {p.get('resolved_at')}")
        for p in patterns if isinstance(p, Mapping) and p.get("resolved_at")]


def _text(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if value else None


def _excerpt(value: Any) -> str | None:
    if not value:
        return None
    text = str(value)
    return text if len(text) <= MAX_EXCERPT_CHARS else text[:MAX_EXCERPT_CHARS - 1] + "…"
