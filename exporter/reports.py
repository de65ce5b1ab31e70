"""Health reports: uptime, trend, common issues and recovery time from stored history.

Pure functions over a list of diagnostics; ``load_report`` only adds the store reads.
How the numbers are computed (README-ready):

- **Window.** The report covers the ``days`` (1 to 365) before ``now``. ``total_diagnostics``
  counts the diagnostics inside it.
- **Uptime** is time-weighted, not a share of runs: each diagnostic's state (healthy or
  not) holds from its timestamp until the next diagnostic, and the last one's until
  ``now``. The stretch from the window's start to the first diagnostic in it counts with
  the state of the last diagnostic before the window when one is known, and is left out
  otherwise. ``observed_seconds`` says how much of the window that covers (history is
  trimmed to ``store.history_limit`` runs per instance, so it may be less than the
  window). With no diagnostic at all, uptime is null.
- **Trend** compares the time-weighted uptime of the first and the second half of the
  observed span (from the start of what uptime covers until ``now``): more than 5
  percentage points better is ``improving``, more than 5 worse is ``degrading``, anything
  in between ``stable``. With fewer than 4 diagnostics in the window it is
  ``insufficient_data``.
- **Most common issues**: the 10 issue codes found in the most diagnostics of the window
  (a code counts once per diagnostic), with when each was last seen.
- **Recoveries**: a recovery is a healthy diagnostic right after an unhealthy one, inside
  the window. Its time to recovery runs from the first unhealthy diagnostic of that
  unhealthy streak (which may lie before the window) to the healthy one.
  ``mean_time_to_recovery_seconds`` is their mean, null when there was none.
- **Current state** is the last known diagnostic's: ``healthy``, ``unhealthy``, or
  ``unknown`` when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from exporter.diagnostic import Diagnostic

Trend = Literal["improving", "stable", "degrading", "insufficient_data"]
State = Literal["healthy", "unhealthy", "unknown"]

MIN_DAYS, MAX_DAYS = 1, 365
TREND_THRESHOLD_POINTS = 5.0
TREND_MIN_DIAGNOSTICS = 4
TOP_ISSUES = 10


@dataclass(frozen=True)
class IssueCount:
    """How many diagnostics of the window found an issue code, and when it was last seen."""

    code: str
    count: int
    last_seen: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"code": self.code, "count": self.count, "last_seen": _iso(self.last_seen)}


@dataclass(frozen=True)
class HealthReport:
    """One instance's health over a period."""

    instance_id: str
    period_days: int
    window_start: datetime
    window_end: datetime
    total_diagnostics: int
    uptime_percentage: float | None
    observed_seconds: float
    health_trend: Trend
    most_common_issues: tuple[IssueCount, ...]
    recoveries: int
    mean_time_to_recovery_seconds: float | None
    current_state: State
    last_diagnostic_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape."""
        mttr = self.mean_time_to_recovery_seconds
        return {
            "instance_id": self.instance_id,
            "period_days": self.period_days,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "total_diagnostics": self.total_diagnostics,
            "uptime_percentage": self.uptime_percentage,
            "observed_seconds": round(self.observed_seconds, 3),
            "health_trend": self.health_trend,
            "most_common_issues": [i.to_dict() for i in self.most_common_issues],
            "recoveries": self.recoveries,
            "mean_time_to_recovery_seconds": None if mttr is None else round(mttr, 3),
            "current_state": self.current_state,
            "last_diagnostic_at": _iso(self.last_diagnostic_at)
            if self.last_diagnostic_at else None,
        }


class HealthSample(Protocol):
    """What uptime is computed from: when a diagnostic ran and whether it found health."""

    @property
    def timestamp(self) -> datetime:
        """When the diagnostic ran."""
        ...

    @property
    def healthy(self) -> bool:
        """Its verdict."""
        ...


class HealthPoint(NamedTuple):
    """One stored diagnostic's time, verdict and issue count, read without its payload."""

    # A named tuple, not a dataclass: the fleet view reads thousands of these per page.
    timestamp: datetime
    healthy: bool
    issues: int = 0


class HistorySource(Protocol):
    """The store reads a report needs."""

    def history_since(self, instance_id: str, since: datetime,
                      limit: int | None = None) -> list[Diagnostic]:
        """Diagnostics at or after `since`, oldest first (the newest `limit` of them)."""
        ...

    def last_before(self, instance_id: str, before: datetime) -> Diagnostic | None:
        """The newest diagnostic strictly before `before`."""
        ...


def validate_days(days: object) -> int:
    """`days` as an int from 1 to 365; ValueError with a clear message otherwise."""
    if isinstance(days, bool) or not isinstance(days, int):
        raise ValueError(f"days must be a whole number from {MIN_DAYS} to {MAX_DAYS}")
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(f"days must be from {MIN_DAYS} to {MAX_DAYS}, got {days}")
    return days


@dataclass(frozen=True)
class Window:
    """The stored history a report is computed from."""

    start: datetime
    end: datetime
    history: list[Diagnostic]  # inside the window, oldest first
    before: Diagnostic | None  # the last one before it


def load_window(store: HistorySource, instance_id: str, days: int,
                now: datetime | None = None, *, limit: int | None = None) -> Window:
    """The window's history plus the state just before it, from the store.

    With `limit`, only the newest `limit` diagnostics of the window are read; when the
    window holds more, the report covers the stretch they span (observed_seconds says so)
    and no state before it is known.
    """
    days = validate_days(days)
    now = _utc(now or datetime.now(UTC))
    start = now - timedelta(days=days)
    history = store.history_since(instance_id, start, None if limit is None else limit + 1)
    if limit is not None and len(history) > limit:
        return Window(start, now, history[1:], None)
    return Window(start, now, history, store.last_before(instance_id, start))


def load_report(store: HistorySource, instance_id: str, days: int,
                now: datetime | None = None, *, limit: int | None = None) -> HealthReport:
    """The report from the store: the window's history plus the state just before it."""
    window = load_window(store, instance_id, days, now, limit=limit)
    return health_report(instance_id, window.history, days, window.end, before=window.before)


def health_report(instance_id: str, history: Sequence[Diagnostic], days: int, now: datetime,
                  *, before: Diagnostic | None = None) -> HealthReport:
    """The report over the `days` before `now`; see the module docstring for the rules.

    `history` is oldest first; entries before the window serve only as prior state (like
    `before`), entries after `now` are ignored.
    """
    days = validate_days(days)
    now = _utc(now)
    start = now - timedelta(days=days)
    prior, window = _split(history, start, now, before)
    segments = _segments(prior[-1].healthy if prior else None, window, start, now)
    observed = sum((b - a).total_seconds() for a, b, _ in segments)
    uptime = _window_uptime(segments, window)

    durations = _recoveries([*prior, *window], start)
    last = window[-1] if window else (prior[-1] if prior else None)
    return HealthReport(
        instance_id=instance_id,
        period_days=days,
        window_start=start,
        window_end=now,
        total_diagnostics=len(window),
        uptime_percentage=None if uptime is None else round(uptime, 2),
        observed_seconds=observed,
        health_trend=_trend(segments, window, now),
        most_common_issues=_common_issues(window),
        recoveries=len(durations),
        mean_time_to_recovery_seconds=sum(durations) / len(durations) if durations else None,
        current_state="unknown" if last is None else ("healthy" if last.healthy
                                                       else "unhealthy"),
        last_diagnostic_at=_ts(last) if last is not None else None,
    )


def uptime_percentage(history: Sequence[HealthSample], days: int, now: datetime, *,
                      before: HealthSample | None = None) -> float | None:
    """The report's uptime over the `days` before `now`, from light history reads."""
    now = _utc(now)
    start = now - timedelta(days=validate_days(days))
    prior, window = _split(history, start, now, before)
    segments = _segments(prior[-1].healthy if prior else None, window, start, now)
    uptime = _window_uptime(segments, window)
    return None if uptime is None else round(uptime, 2)


def render_report(report: HealthReport) -> str:
    """A compact text for the terminal."""
    r = report
    lines = [f"Health report for {r.instance_id}: last {r.period_days} day"
             f"{'s' if r.period_days != 1 else ''} ({_short(r.window_start)} to "
             f"{_short(r.window_end)})"]
    if r.last_diagnostic_at is None:
        lines.append("  no diagnostics recorded for this instance in this period")
        return "\n".join(lines) + "\n"
    lines.append(f"  current state   {r.current_state} (last diagnostic "
                 f"{_short(r.last_diagnostic_at)})")
    lines.append(f"  diagnostics     {r.total_diagnostics}")
    if r.uptime_percentage is not None:
        lines.append(f"  uptime          {r.uptime_percentage:.2f}% over "
                     f"{_duration(r.observed_seconds)} observed")
    lines.append(f"  trend           {r.health_trend.replace('_', ' ')}")
    recoveries = f"  recoveries      {r.recoveries}"
    if r.mean_time_to_recovery_seconds is not None:
        recoveries += f", mean time to recovery {_duration(r.mean_time_to_recovery_seconds)}"
    lines.append(recoveries)
    if r.most_common_issues:
        lines.append("  most common issues:")
        width = max(len(i.code) for i in r.most_common_issues)
        lines += [f"    {i.count:>5}x  {i.code:<{width}}  last {_short(i.last_seen)}"
                  for i in r.most_common_issues]
    return "\n".join(lines) + "\n"


# internals ----------------------------------------------------------------------------

Segment = tuple[datetime, datetime, bool]
S = TypeVar("S", bound=HealthSample)


def _split(history: Sequence[S], start: datetime, now: datetime,
           before: S | None) -> tuple[list[S], list[S]]:
    """The diagnostics before the window (prior state) and inside it, each oldest first."""
    # Sorted defensively (stable, so equal timestamps keep the caller's order).
    ordered = sorted((d for d in history if _ts(d) <= now), key=_ts)
    prior = [d for d in ordered if _ts(d) < start]
    window = [d for d in ordered if _ts(d) >= start]
    if before is not None and _ts(before) < start:
        prior = sorted([before, *prior], key=_ts)
    return prior, window


def _window_uptime(segments: Sequence[Segment],
                   window: Sequence[HealthSample]) -> float | None:
    uptime = _uptime(segments)
    if uptime is None and window:
        # Only zero-length spans (a single diagnostic at `now`): its state is all we know.
        uptime = 100.0 if window[-1].healthy else 0.0
    return uptime


def _segments(prior_state: bool | None, window: Sequence[HealthSample], start: datetime,
              now: datetime) -> list[Segment]:
    """Spans of known state: each diagnostic's state until the next one (the last's to now)."""
    segments: list[Segment] = []
    if prior_state is not None:
        segments.append((start, _ts(window[0]) if window else now, prior_state))
    for i, diagnostic in enumerate(window):
        end = _ts(window[i + 1]) if i + 1 < len(window) else now
        segments.append((_ts(diagnostic), end, diagnostic.healthy))
    return segments


def _uptime(segments: Sequence[Segment], lo: datetime | None = None,
            hi: datetime | None = None) -> float | None:
    """Healthy share of the segments' time (clipped to [lo, hi]) in percent; None if no time."""
    total = healthy = 0.0
    for a, b, ok in segments:
        a = a if lo is None else max(a, lo)
        b = b if hi is None else min(b, hi)
        seconds = (b - a).total_seconds()
        if seconds > 0:
            total += seconds
            healthy += seconds if ok else 0.0
    return 100.0 * healthy / total if total > 0 else None


def _trend(segments: Sequence[Segment], window: Sequence[HealthSample],
           now: datetime) -> Trend:
    if len(window) < TREND_MIN_DIAGNOSTICS or not segments:
        return "insufficient_data"
    begin = segments[0][0]
    middle = begin + (now - begin) / 2
    first, second = _uptime(segments, begin, middle), _uptime(segments, middle, now)
    if first is None or second is None:
        return "insufficient_data"
    change = second - first
    if change > TREND_THRESHOLD_POINTS:
        return "improving"
    if change < -TREND_THRESHOLD_POINTS:
        return "degrading"
    return "stable"


def _common_issues(window: Sequence[Diagnostic]) -> tuple[IssueCount, ...]:
    counts: dict[str, int] = {}
    seen: dict[str, datetime] = {}
    for diagnostic in window:
        for code in {i.code for i in diagnostic.issues}:
            counts[code] = counts.get(code, 0) + 1
            seen[code] = max(seen.get(code, _ts(diagnostic)), _ts(diagnostic))
    ranked = sorted(counts, key=lambda c: (-counts[c], -seen[c].timestamp(), c))
    return tuple(IssueCount(c, counts[c], seen[c]) for c in ranked[:TOP_ISSUES])


def _recoveries(sequence: Sequence[Diagnostic], start: datetime) -> list[float]:
    """Seconds from each unhealthy streak's first diagnostic to the healthy one ending it."""
    durations: list[float] = []
    streak: datetime | None = None
    for diagnostic in sequence:
        if not diagnostic.healthy:
            streak = streak or _ts(diagnostic)
            continue
        if streak is not None and _ts(diagnostic) >= start:
            durations.append((_ts(diagnostic) - streak).total_seconds())
        streak = None
    return durations


def _ts(diagnostic: HealthSample) -> datetime:
    return _utc(diagnostic.timestamp)


def _utc(moment: datetime) -> datetime:
    """The moment in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is UTC:
        return moment  # the usual case, on every comparison: no conversion
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


def _short(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:%MZ")


def _duration(seconds: float) -> str:
    """1d 4h, 3h 20m, 5m 10s or 42s."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
