"""Fixtures for integration tests: test fleets that live only as long as a test needs them.

`fleet` is the shared 2-instance fleet. `fleet_factory(n)` gives the shared fleet of n
instances (made on first use); `fleet_factory.private(n)` a fleet of one fixture's own,
removed when that fixture ends. A module that uses shared fleets says which sizes with
`pytest.mark.fleets(2, 3)`: modules are run grouped by those sizes, and a shared fleet is
removed as soon as no test still to run in its lane (tests/integration/lanes.py) needs it.
Every container healthcheck costs the host a `docker exec` every interval, so a fleet kept
up after its last user slows every later test. Whatever happens, every fleet made here is
removed at the end of the session. Under pytest-xdist each worker picks its fleets' host
ports from a share of the port range of its own, so two lanes never pick the same port.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fleet import ports
from fleet.fleet import Fleet
from fleet.model import FleetError
from tests.integration.lanes import lane_of

# Modules run grouped by the shared fleets they use, in this order, so that at most two
# shared fleets of a lane (the monitoring test's two hosts) are up at once. Modules with no
# shared fleet run first, before any shared fleet exists.
FLEET_ORDER: tuple[tuple[int, ...], ...] = ((), (2,), (2, 3), (3,))
POOL = pytest.StashKey["FleetPool"]()
LAST_USE = pytest.StashKey[dict[tuple[str, int], str]]()


class FleetPool:
    """Fleets made on demand: shared ones by size, private ones for one fixture."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory,
                 port_range: range = ports.PORT_RANGE) -> None:
        self._tmp = tmp_path_factory
        self._ports = port_range
        self._shared: dict[int, Fleet] = {}
        self._live: list[Fleet] = []

    def _up(self, count: int, manager_exact: bool = False) -> Fleet:
        root = self._tmp.mktemp(f"fleet{count}-") / "root"
        fleet = Fleet.up(root, count, manager_exact=manager_exact, port_range=self._ports)
        self._live.append(fleet)
        return fleet

    def __call__(self, count: int = 2, *, shared_fleet: bool = True) -> Fleet:
        """The shared fleet of `count` instances, or a new one the caller must take down."""
        if not shared_fleet:
            return self._up(count)
        if count not in self._shared:
            self._shared[count] = self._up(count)
        return self._shared[count]

    @contextmanager
    def private(self, count: int = 1, *, manager_exact: bool = False) -> Iterator[Fleet]:
        """A fleet of the caller's own, removed when the block ends (manager_exact: its files
        written as the real manager writes them, `up --manager-exact`)."""
        fleet = self._up(count, manager_exact)
        try:
            yield fleet
        finally:
            self._down(fleet)

    def release(self, count: int) -> None:
        """Remove the shared fleet of `count` instances, if one is up."""
        fleet = self._shared.pop(count, None)
        if fleet is not None:
            self._down(fleet)

    def _down(self, fleet: Fleet) -> None:
        fleet.down()
        if fleet in self._live:
            self._live.remove(fleet)

    def close(self) -> list[str]:
        """Remove every fleet still up; the errors, one line per fleet."""
        errors = []
        self._shared.clear()
        for fleet in list(self._live):
            try:
                self._down(fleet)
            except (FleetError, OSError) as exc:
                errors.append(f"{fleet.root}: {exc}")
        return errors


FleetFactory = FleetPool


def _sizes(item: pytest.Item) -> tuple[int, ...]:
    marker = item.get_closest_marker("fleets")
    return tuple(sorted(marker.args)) if marker else ()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group modules by the shared fleets they use (a stable sort: in-module order kept)."""
    rank = {sizes: i for i, sizes in enumerate(FLEET_ORDER)}
    items.sort(key=lambda item: rank.get(_sizes(item), len(FLEET_ORDER)))


def _lane(item: pytest.Item) -> str:
    """The item's lane under pytest-xdist (each runs on a worker of its own); else one."""
    return (lane_of(item.nodeid) or "") if hasattr(item.config, "workerinput") else ""


def _port_range(config: pytest.Config) -> range:
    """This worker's share of the fleet port range (all of it without pytest-xdist)."""
    worker = getattr(config, "workerinput", None)
    if worker is None:
        return ports.PORT_RANGE
    return ports.share(int(worker["workerid"].removeprefix("gw")), int(worker["workercount"]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note, for each lane and shared fleet size, the last test that uses it."""
    last: dict[tuple[str, int], str] = {}
    for item in session.items:
        for size in _sizes(item):
            last[_lane(item), size] = item.nodeid
    session.config.stash[LAST_USE] = last


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a shared fleet's last user and its fixtures are done, remove that fleet."""
    yield
    pool = item.config.stash.get(POOL, None)
    if pool is None:
        return
    for (_lane_name, size), nodeid in item.config.stash.get(LAST_USE, {}).items():
        if nodeid == item.nodeid:
            pool.release(size)


@pytest.fixture(scope="session")
def fleet_factory(docker_available: None, request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetPool]:
    """Make fleets on demand; tear every one of them down at session end."""
    pool = FleetPool(tmp_path_factory, _port_range(request.config))
    request.config.stash[POOL] = pool
    yield pool
    del request.config.stash[POOL]
    errors = pool.close()
    assert not errors, "fleet teardown failed:\n" + "\n".join(errors)


@pytest.fixture(scope="module")
def fleet(fleet_factory: FleetPool) -> Fleet:
    """The shared fleet of two healthy instances (modules using it: mark fleets(2))."""
    return fleet_factory(2)


@pytest.fixture(scope="module")
def private_fleet(fleet_factory: FleetPool) -> Iterator[Fleet]:
    """A 1-instance fleet of the module's own (for tests that stop or break all of it)."""
    with fleet_factory.private(1) as fleet:
        yield fleet
