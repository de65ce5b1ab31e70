"""The live tests' two lanes: which module runs in which.

Under pytest-xdist each lane is one work unit, run in order on one worker, so the two lanes
run side by side on two workers while a third takes the unit tests. Each worker makes its
own fleets, from its own share of the host ports. The second lane holds the modules with a
fleet of their own and the fleet's own tests (on a shared fleet of 2 of that lane's); the
first, every other live module. The split keeps the lanes' run times close (each about
half of the live work, 10 minutes on a quiet 2-core host).
"""

from __future__ import annotations

LIVE_ROOT = "tests/integration/"
FIRST, SECOND = "live-1", "live-2"
_SECOND_LANE = frozenset({
    "test_actions_api_live.py",
    "test_config_live.py",
    "test_fleet.py",
    "test_fleet_images.py",
    "test_log_cache_live.py",
    "test_repair_live.py",
    "test_restart_live.py",
})


def lane_of(nodeid: str) -> str | None:
    """The lane of a test, by its node id; None for a test that is not live."""
    if not nodeid.startswith(LIVE_ROOT):
        return None
    module = nodeid[len(LIVE_ROOT):].split("::", 1)[0]
    return SECOND if module in _SECOND_LANE else FIRST
