"""Fixtures for integration tests: test fleets that are always torn down.

`fleet` is the session's shared 2-instance fleet. `fleet_factory(n)` gives the shared fleet
of n instances (created on first use) or, with shared=False, a private one; every fleet
made here is removed at the end of the session, whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fleet.fleet import Fleet
from fleet.model import FleetError

FleetFactory = Callable[..., Fleet]


@pytest.fixture(scope="session")
def fleet_factory(docker_available: None,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetFactory]:
    """Make fleets on demand; tear every one of them down at session end."""
    shared: dict[int, Fleet] = {}
    made: list[Fleet] = []

    def make(count: int = 2, *, shared_fleet: bool = True) -> Fleet:
        if shared_fleet and count in shared:
            return shared[count]
        root = tmp_path_factory.mktemp(f"fleet{count}-") / "root"
        fleet = Fleet.up(root, count)
        made.append(fleet)
        if shared_fleet:
            shared[count] = fleet
        return fleet

    yield make
    errors = []
    for fleet in made:
        try:
            fleet.down()
        except (FleetError, OSError) as exc:
            errors.append(f"{fleet.root}: {exc}")
    assert not errors, "fleet teardown failed:\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def fleet(fleet_factory: FleetFactory) -> Fleet:
    """The session's shared fleet of two healthy instances."""
    return fleet_factory(2)
