"""Host ports for fleets made side by side, and the live tests' lanes, from plain data."""

from __future__ import annotations

import socket

import pytest

from fleet import ports
from fleet.model import FleetError
from tests.integration.lanes import FIRST, SECOND, lane_of


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shares_are_disjoint_and_inside_the_range(count: int) -> None:
    shares = [ports.share(i, count) for i in range(count)]
    seen: set[int] = set()
    for part in shares:
        assert len(part) == len(ports.PORT_RANGE) // count
        assert part.start >= ports.PORT_RANGE.start and part.stop <= ports.PORT_RANGE.stop
        assert seen.isdisjoint(part)
        seen.update(part)


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_share_that_does_not_exist_is_refused(index: int, count: int) -> None:
    with pytest.raises(FleetError, match="does not exist"):
        ports.share(index, count)


def test_free_ports_come_from_the_given_range_and_skip_a_bound_one() -> None:
    start = next(p for p in ports.share(3, 4) if ports.is_free(p) and ports.is_free(p + 1))
    pair = range(start, start + 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", start))
        assert ports.free_ports(1, within=pair) == [start + 1]
        with pytest.raises(FleetError, match="found only 1 of 2 free ports"):
            ports.free_ports(2, within=pair)


def test_lanes_split_the_live_modules_and_leave_the_rest() -> None:
    assert lane_of("tests/integration/test_repair_live.py::test_x") == SECOND
    assert lane_of("tests/integration/test_fleet.py::test_stop[kong]") == SECOND
    assert lane_of("tests/integration/test_diagnostics_live.py::test_y[stop:auth]") == FIRST
    assert lane_of("tests/integration/test_manager_exact.py::test_z") == FIRST
    assert lane_of("tests/unit/test_fleet_ports.py::test_lanes") is None
