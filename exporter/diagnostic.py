"""A diagnostic: every check's result for one instance, its issues and their root cause."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.checks.base import CheckResult
from exporter.issues import Issue

UNHEALTHY_SEVERITIES = frozenset({"critical", "warning"})


@dataclass(frozen=True)
class RecentEvent:
    """A fault that live evidence shows over: when, where, how often, and a redacted line."""

    code: str
    component: str | None
    check: str
    first_seen: str | None  # ISO 8601, as the evidence gave it
    last_seen: str | None
    count: int | None
    excerpt: str | None  # already redacted by the check that read it
    ended: str  # what showed it over

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"code": self.code, "component": self.component, "check": self.check,
                "first_seen": self.first_seen, "last_seen": self.last_seen,
                "count": self.count, "excerpt": self.excerpt, "ended": self.ended}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecentEvent:
        """Rebuild from to_dict()'s output."""
        count = data.get("count")
        return cls(code=str(data["code"]), component=data.get("component"),
                   check=str(data.get("check", "")), first_seen=data.get("first_seen"),
                   last_seen=data.get("last_seen"),
                   count=int(count) if count is not None else None,
                   excerpt=data.get("excerpt"), ended=str(data.get("ended", "")))


@dataclass(frozen=True)
class UserTest:
    """The instance's latest synthetic user test: when it ran and whether it passed."""

    at: datetime
    passed: bool

    @classmethod
    def of(cls, synthetic_user: Any, at: datetime) -> UserTest | None:
        """The test auth_service's `synthetic_user` details describe, if it ran: passed when
        its user was both created and deleted."""
        if not isinstance(synthetic_user, Mapping) or synthetic_user.get("ran") is not True:
            return None
        return cls(at, synthetic_user.get("created") is True
                   and synthetic_user.get("deleted") is True)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"at": _iso(self.at), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: Any) -> UserTest | None:
        """Rebuild from to_dict()'s output; None for anything else."""
        if not isinstance(data, Mapping) or not isinstance(data.get("passed"), bool):
            return None
        try:
            at = datetime.fromisoformat(str(data.get("at")).replace("Z", "+00:00"))
        except ValueError:
            return None
        return cls(at, data["passed"])


@dataclass(frozen=True)
class RootCause:
    """The issue that explains the others, and which ones it explains."""

    issue: Issue
    explains: tuple[Issue, ...] = ()
    # From the root's element to its effects: {"element", "component"/"link", "code",
    # "issues"} per step (exporter.rootcause.chain).
    chain: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The issue's JSON plus what it explains and the chain from it to its effects."""
        out = self.issue.to_dict()
        out["explains"] = [{"code": i.code, "component": i.component, "check": i.check}
                           for i in self.explains]
        out["chain"] = [dict(step) for step in self.chain]
        return out


@dataclass(frozen=True)
class Diagnostic:
    """The outcome of one diagnostic run of one instance."""

    instance_id: str
    timestamp: datetime
    duration_seconds: float
    results: Mapping[str, CheckResult]
    issues: tuple[Issue, ...]
    root_cause: RootCause | None
    trigger: str = "on_demand"
    # Faults live evidence shows over: shown, never an issue (exporter.logs.staleness).
    recent_events: tuple[RecentEvent, ...] = ()
    # The latest synthetic user test: this run's, or carried from an earlier diagnostic
    # until the next test (most runs do not include it), so its result stays published.
    user_test: UserTest | None = None

    @property
    def healthy(self) -> bool:
        """True when no issue of severity warning or above was found."""
        return not any(i.severity in UNHEALTHY_SEVERITIES for i in self.issues)

    def age_seconds(self, now: datetime | None = None) -> float:
        """Seconds since the run finished."""
        now = now or datetime.now(UTC)
        return max(0.0, (now - self.timestamp).total_seconds())

    def to_dict(self, *, cached: bool = False, rate_limited: bool = False,
                now: datetime | None = None) -> dict[str, Any]:
        """The public JSON shape (DESIGN §5)."""
        return {
            "instance_id": self.instance_id,
            "timestamp": _iso(self.timestamp),
            "duration_seconds": round(self.duration_seconds, 4),
            "healthy": self.healthy,
            "trigger": self.trigger,
            "results": {name: r.to_dict() for name, r in self.results.items()},
            "issues": [i.to_dict() for i in self.issues],
            "root_cause": self.root_cause.to_dict() if self.root_cause else None,
            "recent_events": [e.to_dict() for e in self.recent_events],
            "user_test": self.user_test.to_dict() if self.user_test else None,
            "cached": cached,
            "age_seconds": round(self.age_seconds(now), 3),
            "rate_limited": rate_limited,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostic:
        """Rebuild from to_dict()'s output (as kept in the store)."""
        results = {
            name: CheckResult(name=name, status=r["status"],
                              duration_seconds=float(r["duration_seconds"]),
                              issues=tuple(_issue(i) for i in r.get("issues", [])),
                              details=r.get("details", {}))
            for name, r in data.get("results", {}).items()
        }
        issues = tuple(_issue(i) for i in data.get("issues", []))
        root = data.get("root_cause")
        root_cause = None
        if root:
            explained = {(e["code"], e["component"], e["check"]) for e in root.get("explains", [])}
            root_cause = RootCause(_issue(root), tuple(
                i for i in issues if (i.code, i.component, i.check) in explained),
                tuple(s for s in root.get("chain") or [] if isinstance(s, Mapping)))
        stamp = datetime.fromisoformat(str(data["timestamp"]).replace("Z", "+00:00"))
        return cls(instance_id=data["instance_id"], timestamp=stamp,
                   duration_seconds=float(data["duration_seconds"]), results=results,
                   issues=issues, root_cause=root_cause,
                   trigger=data.get("trigger", "on_demand"),
                   recent_events=tuple(RecentEvent.from_dict(e)
                                       for e in data.get("recent_events") or []),
                   user_test=UserTest.from_dict(data.get("user_test")))


def _iso(stamp: datetime) -> str:
    return stamp.isoformat().replace("+00:00", "Z")


def _issue(data: Mapping[str, Any]) -> Issue:
    return Issue(code=data["code"], severity=data["severity"], component=data.get("component"),
                 check=data.get("check", ""), message=data.get("message", ""),
                 evidence=data.get("evidence") or {}, hint=data.get("hint", ""),
                 repair=data.get("repair"))
