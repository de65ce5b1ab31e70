"""The history chart: an instance's health over time as plain SVG shapes, no chart library.

Each stored diagnostic is a bar (its issue count, coloured by its verdict) at its time, and a
band below shows the verdict that held between diagnostics. The template draws the shapes;
every coordinate is computed here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from exporter.reports import HealthPoint

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP = 36, 8, 10
BAND = 14  # the verdict band's height
AXIS = 22  # room for the time labels
PLOT_BOTTOM = HEIGHT - AXIS - BAND - 6
BAR_WIDTH = 4.0
MIN_BAR = 2.0


@dataclass(frozen=True)
class Bar:
    """One diagnostic: a bar of its issue count."""

    x: float
    y: float
    width: float
    height: float
    healthy: bool
    title: str


@dataclass(frozen=True)
class Span:
    """A stretch of the verdict band."""

    x: float
    width: float
    healthy: bool


@dataclass(frozen=True)
class Tick:
    """A label on an axis."""

    x: float
    y: float
    text: str
    anchor: str = "middle"  # SVG text-anchor


@dataclass(frozen=True)
class Chart:
    """Everything the template draws."""

    width: int
    height: int
    bars: tuple[Bar, ...]
    spans: tuple[Span, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    band_y: int
    band_height: int
    empty: bool


def health_chart(points: Sequence[HealthPoint], start: datetime, end: datetime,
                 before: HealthPoint | None = None) -> Chart:
    """The chart of the points between start and end (`before`: the state at the start)."""
    inside = sorted((p for p in points if start <= p.timestamp <= end),
                    key=lambda p: p.timestamp)
    span = max((end - start).total_seconds(), 1.0)
    plot_width = WIDTH - LEFT - RIGHT
    top_count = max([p.issues for p in inside] + [1])

    def x_of(moment: datetime) -> float:
        return round(LEFT + plot_width * (moment - start).total_seconds() / span, 1)

    def y_of(count: int) -> float:
        return round(PLOT_BOTTOM - (PLOT_BOTTOM - TOP) * count / top_count, 1)

    bars = tuple(_bar(x_of(p.timestamp), y_of(max(p.issues, 0)), p) for p in inside)
    band_y = PLOT_BOTTOM + 4
    spans: list[Span] = []
    states: list[tuple[datetime, bool]] = []
    if before is not None and before.timestamp < start:
        states.append((start, before.healthy))
    states += [(p.timestamp, p.healthy) for p in inside]
    for n, (moment, healthy) in enumerate(states):
        until = states[n + 1][0] if n + 1 < len(states) else end
        width = x_of(until) - x_of(moment)
        if width > 0:
            spans.append(Span(x=x_of(moment), width=round(width, 1), healthy=healthy))
    return Chart(width=WIDTH, height=HEIGHT, bars=bars, spans=tuple(spans),
                 x_ticks=_time_ticks(start, end, x_of), y_ticks=_count_ticks(top_count, y_of),
                 plot_left=LEFT, plot_right=WIDTH - RIGHT, plot_top=TOP,
                 plot_bottom=PLOT_BOTTOM, band_y=band_y, band_height=BAND, empty=not inside)


def _bar(x: float, y: float, point: HealthPoint) -> Bar:
    # A diagnostic without issues still shows, as a sliver on the axis.
    height = max(round(PLOT_BOTTOM - y, 1), MIN_BAR)
    return Bar(x=round(x - BAR_WIDTH / 2, 1), y=round(PLOT_BOTTOM - height, 1),
               width=BAR_WIDTH, height=height, healthy=point.healthy,
               title=f"{point.timestamp:%Y-%m-%d %H:%M}Z: {point.issues}")


def _time_ticks(start: datetime, end: datetime,
                x_of: Callable[[datetime], float]) -> tuple[Tick, ...]:
    total = end - start
    fmt = "%H:%M" if total <= timedelta(days=1) else "%m-%d"
    anchors = ("start", "middle", "middle", "middle", "end")
    return tuple(Tick(x=x_of(start + total * n / 4), y=HEIGHT - 4,
                      text=f"{start + total * n / 4:{fmt}}", anchor=anchors[n])
                 for n in range(5))


def _count_ticks(top: int, y_of: Callable[[int], float]) -> tuple[Tick, ...]:
    values = sorted({0, top // 2, top}) if top > 1 else [0, 1]
    return tuple(Tick(x=LEFT - 4, y=y_of(v) + 4, text=str(v), anchor="end") for v in values)
