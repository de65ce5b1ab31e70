"""Shared pytest setup: the `integration` marker and the Docker guard for it.

Tests marked `integration` need a Docker engine and Compose v2. Without them they are
skipped on a workstation, but fail under CI (CI=true), where a missing engine is a broken
build, not a reason to pass.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (also declared in pyproject.toml, for runs from elsewhere)."""
    config.addinivalue_line("markers",
                            "integration: needs a Docker engine and builds the test fleet")
    config.addinivalue_line("markers",
                            "fleets(*sizes): the shared test fleets a module uses")


def in_ci() -> bool:
    """True when running under CI (CI=true)."""
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def docker_available() -> None:
    """Docker and Compose v2 are usable; else skip (or fail under CI)."""
    from fleet import engine
    from fleet.model import FleetError

    try:
        engine.client()
        engine.compose_command()
    except FleetError as exc:
        if in_ci():
            pytest.fail(f"CI=true but Docker is not usable: {exc}")
        pytest.skip(f"Docker is not usable: {exc}")


@pytest.fixture(autouse=True)
def _integration_needs_docker(request: pytest.FixtureRequest) -> None:
    """Apply the Docker guard to every test marked `integration`."""
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("docker_available")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist, run each lane of live tests as one unit, in order, on one worker.

    Every other test is a unit of its own, spread over the other workers. The lanes
    (tests/integration/lanes.py) make their own fleets; within a lane, fleets come and go
    in order (tests/integration/conftest.py), and the unit tests run while the live ones
    wait on Docker. (xdist's own `--dist loadgroup` cannot do this on pytest 9.2, whose node
    ids it can no longer suffix with a group.) Run with as many workers as lanes plus one.
    """
    from xdist.scheduler import LoadScopeScheduling

    from tests.integration.lanes import lane_of

    class LiveLanes(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid) or nodeid

    return LiveLanes(config, log)
