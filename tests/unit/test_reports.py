"""Health reports over plain-data histories: time-weighted uptime, trend, issues, recovery."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.checks.base import CheckResult
from exporter.diagnostic import Diagnostic
from exporter.issues import make_issue
from exporter.reports import health_report, load_report, render_report, uptime_percentage
from exporter.store import Store

NOW = datetime(2026, 5, 8, 12, 0, tzinfo=UTC)
DAY_START = NOW - timedelta(days=1)


def at(hours: float, *codes: str, iid: str = "aaaa0001") -> Diagnostic:
    """A diagnostic `hours` after the start of a one-day window, with these issue codes."""
    issues = tuple(make_issue(c, check="api_endpoints", message=c.lower(), component="kong")
                   for c in codes)
    result = CheckResult("api_endpoints", "failed" if issues else "ok", 0.1, issues, {})
    return Diagnostic(iid, DAY_START + timedelta(hours=hours), 0.5, {"api_endpoints": result},
                      issues, None, trigger="scheduled")


DOWN = "GATEWAY_UNREACHABLE"  # critical: unhealthy
SLOW = "ENDPOINT_SLOW"  # warning: unhealthy too


def report(history: list[Diagnostic], days: int = 1, before: Diagnostic | None = None,
           now: datetime = NOW) -> dict[str, object]:
    return health_report("aaaa0001", history, days, now, before=before).to_dict()


# uptime -----------------------------------------------------------------------------

def test_uptime_is_weighted_by_time_not_by_count() -> None:
    # One healthy run held 9 h, then nine unhealthy runs in the last hour: 10% by count.
    history = [at(14), *(at(23 + i / 9, DOWN) for i in range(9))]
    r = report(history)
    assert r["uptime_percentage"] == 90.0
    assert r["observed_seconds"] == 10 * 3600
    assert r["total_diagnostics"] == 10


def test_before_the_window_covers_the_stretch_up_to_the_first_diagnostic() -> None:
    before = at(-30, DOWN)  # unhealthy, 6 h before the window starts
    r = report([at(12)], before=before)
    assert r["uptime_percentage"] == 50.0
    assert r["observed_seconds"] == 24 * 3600
    assert r["total_diagnostics"] == 1
    # Without it, the first 12 h are unknown and left out.
    assert report([at(12)])["uptime_percentage"] == 100.0
    assert report([at(12)])["observed_seconds"] == 12 * 3600


def test_history_entries_before_the_window_serve_as_prior_state() -> None:
    r = report([at(-48), at(-30, DOWN), at(18)])
    assert r["uptime_percentage"] == 25.0
    assert r["total_diagnostics"] == 1


def test_diagnostics_after_now_are_ignored() -> None:
    r = report([at(12), at(30, DOWN)])
    assert r["uptime_percentage"] == 100.0
    assert r["total_diagnostics"] == 1
    assert r["current_state"] == "healthy"


def test_empty_history() -> None:
    h = health_report("aaaa0001", [], 7, NOW)
    r = h.to_dict()
    assert r["total_diagnostics"] == 0
    assert r["uptime_percentage"] is None
    assert r["health_trend"] == "insufficient_data"
    assert r["most_common_issues"] == []
    assert r["recoveries"] == 0
    assert r["mean_time_to_recovery_seconds"] is None
    assert r["current_state"] == "unknown"
    assert r["last_diagnostic_at"] is None
    assert "no diagnostics" in render_report(h)
    json.dumps(r)


def test_only_an_earlier_state_holds_for_the_whole_window() -> None:
    r = report([], before=at(-2, DOWN))
    assert r["uptime_percentage"] == 0.0
    assert r["observed_seconds"] == 24 * 3600
    assert r["total_diagnostics"] == 0
    assert r["current_state"] == "unhealthy"


def test_a_single_diagnostic_at_now_gives_its_state() -> None:
    assert report([at(24, DOWN)])["uptime_percentage"] == 0.0
    assert report([at(24)])["uptime_percentage"] == 100.0


def test_info_issues_do_not_count_as_down() -> None:
    info = make_issue(DOWN, check="x", message="m", severity="info")
    healthy = Diagnostic("aaaa0001", DAY_START, 0.1, {}, (info,), None)
    r = report([healthy])
    assert r["uptime_percentage"] == 100.0
    assert r["most_common_issues"] == [
        {"code": DOWN, "count": 1, "last_seen": "2026-05-07T12:00:00Z"}]


# trend ------------------------------------------------------------------------------

def test_trend_improving_when_the_second_half_is_healthier() -> None:
    history = [at(0, DOWN), at(6, DOWN), at(12), at(18)]
    assert report(history)["health_trend"] == "improving"


def test_trend_degrading_when_the_second_half_is_worse() -> None:
    history = [at(0), at(6), at(12), at(18, SLOW)]
    assert report(history)["health_trend"] == "degrading"


def test_trend_stable_within_five_points() -> None:
    # Second half: 12 h with 0.48 h down = 96% against 100%, a 4-point drop.
    history = [at(0), at(6), at(12), at(23.52, DOWN)]
    assert report(history)["health_trend"] == "stable"
    # 0.72 h down = 94%: a 6-point drop is degrading.
    history = [at(0), at(6), at(12), at(23.28, DOWN)]
    assert report(history)["health_trend"] == "degrading"


def test_trend_needs_four_diagnostics() -> None:
    assert report([at(0, DOWN), at(12), at(18)])["health_trend"] == "insufficient_data"


def test_trend_halves_split_the_observed_span_not_the_window() -> None:
    # Seven-day window but only the last 4 h observed: the halves are 2 h each.
    history = [at(20, DOWN), at(21, DOWN), at(22), at(23)]
    r = report(history, days=7)
    assert r["health_trend"] == "improving"
    assert r["observed_seconds"] == 4 * 3600


# issues and recoveries ----------------------------------------------------------------

def test_most_common_issues_count_diagnostics_and_keep_the_last_seen() -> None:
    history = [at(1, DOWN, DOWN, SLOW), at(2, DOWN), at(3, SLOW), at(4, "PORT_NOT_LISTENING"),
               at(5, SLOW)]
    issues = report(history)["most_common_issues"]
    assert issues == [
        {"code": SLOW, "count": 3, "last_seen": "2026-05-07T17:00:00Z"},
        {"code": DOWN, "count": 2, "last_seen": "2026-05-07T14:00:00Z"},
        {"code": "PORT_NOT_LISTENING", "count": 1, "last_seen": "2026-05-07T16:00:00Z"},
    ]


def test_most_common_issues_are_capped_at_ten() -> None:
    codes = ["DB_UNREACHABLE", "DB_AUTH_FAILED", "DB_CONNECTIONS_HIGH", "DB_SCHEMA_MISSING",
             "GATEWAY_UNREACHABLE", "GATEWAY_KEY_REJECTED", "GATEWAY_UPSTREAM_ERROR",
             "ENDPOINT_SLOW", "AUTH_UNHEALTHY", "PORT_NOT_LISTENING", "PORT_CONFLICT",
             "NETWORK_MISSING"]
    history = [at(1, *codes), at(2, codes[0])]
    issues = report(history)["most_common_issues"]
    assert isinstance(issues, list) and len(issues) == 10
    assert issues[0] == {"code": "DB_UNREACHABLE", "count": 2,
                         "last_seen": "2026-05-07T14:00:00Z"}


def test_mean_time_to_recovery_from_the_first_unhealthy_run() -> None:
    history = [at(0), at(1, DOWN), at(2, SLOW), at(3), at(10, DOWN), at(11)]
    r = report(history)
    assert r["recoveries"] == 2
    assert r["mean_time_to_recovery_seconds"] == (2 * 3600 + 1 * 3600) / 2


def test_a_streak_begun_before_the_window_counts_from_its_first_known_run() -> None:
    r = report([at(-3, DOWN), at(-1, DOWN), at(1)])
    assert r["recoveries"] == 1
    assert r["mean_time_to_recovery_seconds"] == 4 * 3600
    # A recovery completed before the window is not this period's.
    r = report([at(-3, DOWN), at(-1), at(1)])
    assert r["recoveries"] == 0
    assert r["mean_time_to_recovery_seconds"] is None


def test_no_recovery_while_still_down() -> None:
    r = report([at(1), at(2, DOWN), at(3, DOWN)])
    assert r["recoveries"] == 0
    assert r["mean_time_to_recovery_seconds"] is None
    assert r["current_state"] == "unhealthy"
    assert r["last_diagnostic_at"] == "2026-05-07T15:00:00Z"


# validation, shape and text -------------------------------------------------------------

@pytest.mark.parametrize("days", [0, -1, 366, True, 1.5, "7"])
def test_days_outside_one_to_365_is_a_value_error(days: object) -> None:
    with pytest.raises(ValueError, match=r"days must be .*1 to 365"):
        health_report("aaaa0001", [], days, NOW)  # type: ignore[arg-type]


def test_report_shape_and_text() -> None:
    history = [at(0), at(6, DOWN), at(8), at(12, SLOW), at(20)]
    rep = health_report("aaaa0001", history, 1, NOW)
    r = rep.to_dict()
    assert json.loads(json.dumps(r)) == r
    assert r["period_days"] == 1
    assert r["window_start"] == "2026-05-07T12:00:00Z"
    assert r["window_end"] == "2026-05-08T12:00:00Z"
    assert r["uptime_percentage"] == 58.33  # up 6 + 4 + 4 of 24 hours
    assert r["recoveries"] == 2
    text = render_report(rep)
    assert "aaaa0001: last 1 day (2026-05-07 12:00Z to 2026-05-08 12:00Z)" in text
    assert "58.33% over 1d 0h observed" in text
    assert "mean time to recovery 5h 0m" in text
    assert "GATEWAY_UNREACHABLE" in text and "ENDPOINT_SLOW" in text
    assert "current state   healthy" in text


def test_load_report_reads_the_window_and_the_state_before_it(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as store:
        for d in [at(-40), at(-30, DOWN), at(6), at(18, SLOW), at(6, iid="bbbb0002")]:
            store.save(d)
        r = load_report(store, "aaaa0001", 1, NOW).to_dict()
    assert r["total_diagnostics"] == 2
    # Down from the window's start (the state before it) until 6 h, then up 12 h, down 6 h.
    assert r["uptime_percentage"] == 50.0
    assert r["recoveries"] == 1
    assert r["mean_time_to_recovery_seconds"] == 36 * 3600
    with pytest.raises(ValueError, match="days"):
        load_report(store, "aaaa0001", 400, NOW)


def test_light_reads_give_the_reports_uptime(tmp_path: Path) -> None:
    """The fleet view's uptime (time and verdict only, from the store) is the report's."""
    history = [at(2), at(6, DOWN), at(7, SLOW), at(9), at(20, DOWN)]
    before = at(-3, DOWN)
    with Store(tmp_path / "store.db") as store:
        for d in [before, *history]:
            store.save(d)
        points = store.health_points(DAY_START, issues=True)["aaaa0001"]
        prior = store.health_before(DAY_START)["aaaa0001"]
        assert [p.issues for p in points] == [0, 1, 1, 0, 1]
        assert (prior.timestamp, prior.healthy) == (before.timestamp, False)
        assert uptime_percentage(points, 1, NOW, before=prior) == \
            load_report(store, "aaaa0001", 1, NOW).uptime_percentage
        # As the fleet view reads: the longest window once, every window from it.
        week = NOW - timedelta(days=7)
        points = store.health_points(week)["aaaa0001"]
        for days in (1, 7):
            full = load_report(store, "aaaa0001", days, NOW).uptime_percentage
            assert uptime_percentage(points, days, NOW,
                                     before=store.health_before(week).get("aaaa0001")) == full
