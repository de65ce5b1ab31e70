"""Pricing watching in bursts: the arithmetic over plain readings."""

from __future__ import annotations

import pytest

from bench.pricing import (
    Burst,
    Price,
    Prices,
    Window,
    at_rest,
    bursts,
    priced_total,
    window_rows,
)


def test_a_burst_is_net_of_the_idle_windows_around_it() -> None:
    idle = iter([1.0, 1.2, 0.8])  # cores in the windows before, between and after
    host = iter([100.0, 130.0, 200.0, 226.0])  # CPU-seconds busy at each burst's ends
    clock = iter([0.0, 10.0, 50.0, 60.0])
    calls = iter([0, 40, 40, 80])
    done: list[int] = []

    def work() -> int:
        done.append(1)
        return 20

    seen = bursts(work, lambda: next(calls), 2, 5.0, rate=lambda s: next(idle),
                  busy=lambda: next(host), clock=lambda: next(clock))
    assert done == [1, 1]
    assert [(b.seconds, b.calls, b.units) for b in seen] == [(10.0, 40, 20), (10.0, 40, 20)]
    # 30 CPU-s over 10 s with a background of (1.0 + 1.2) / 2 cores: 19 net; then 26 - 10.
    assert [b.host for b in seen] == pytest.approx([19.0, 16.0])


def test_a_price_is_the_median_per_unit_with_half_the_range() -> None:
    samples = [Burst(10.0, host, tool, 100, 20) for host, tool in
               ((8.0, 2.0), (10.0, 2.2), (16.0, 2.4))]
    price = Price.of("diagnostic", samples)
    assert price.host == pytest.approx(0.5) and price.tool == pytest.approx(0.11)
    assert price.spread == pytest.approx(0.2)  # (0.8 - 0.4) / 2
    assert (price.calls, price.seconds) == (5.0, 0.5)
    assert price.caused == pytest.approx(0.39)
    # A burst cheaper than the noise never prices negative work.
    assert Price("x", 0.1, 0.3, 0.0, 1.0, 1.0).caused == 0.0


def prices() -> Prices:
    return Prices(diagnostic=Price("diagnostic", 0.5, 0.1, 0.0, 30.0, 1.0),
                  round=Price("probe round", 0.2, 0.05, 0.0, 1.0, 0.5),
                  synthetic=Price("synthetic", 0.8, 0.2, 0.0, 35.0, 1.5))


def window(instances: int = 10, paced: float = 20.0, rounds: float = 20.0) -> Window:
    return Window(instances=instances, minutes=10.0, exporter_cpu=8.0, paced=paced,
                  full=2.0, rounds=rounds, synthetic=1.0)


def test_the_window_is_priced_from_its_counts() -> None:
    rows = window_rows(window(), prices())
    by_part = {row[0].split(":")[0]: row for row in rows}
    own = by_part["exporter's own CPU, measured in the window"]
    assert own[1] is None and own[3] == pytest.approx(0.08)
    # 20 paced diagnostics of 100 instance-minutes, each causing 0.4 outside the exporter.
    assert by_part["diagnostics, paced (scheduled, event)"][1:] == pytest.approx(
        (0.2, 0.4, 0.08))
    assert by_part["diagnostics, full (watch, on demand)"][3] == pytest.approx(2 * 0.6 / 100)
    assert by_part["quick-probe rounds (whole fleet each)"][3] == pytest.approx(20 * 0.15 / 100)
    # The synthetic user test counts in full: what it adds to a diagnostic, 0.3.
    assert by_part["synthetic user tests of the paced runs, hourly"][3] == pytest.approx(0.003)
    assert priced_total(window(), prices()) == pytest.approx(
        0.08 + 0.08 + 0.012 + 0.03 + 0.003)


def test_more_work_in_the_window_costs_more() -> None:
    def total(instances: int = 10, paced: float = 20.0, rounds: float = 20.0) -> float:
        return priced_total(window(instances, paced, rounds), prices())

    base = total()
    assert total(paced=40.0) > base and total(rounds=40.0) > base
    assert total(instances=20) == pytest.approx(base / 2)



def test_the_exporter_at_rest_is_what_its_priced_work_leaves() -> None:
    # 8 CPU-s in the window; 20 paced diagnostics at 0.1, 2 full at 0.2, 20 rounds at 0.05.
    assert at_rest(window(), prices()) == pytest.approx(8.0 - 2.0 - 0.4 - 1.0)
