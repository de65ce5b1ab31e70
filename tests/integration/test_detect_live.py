"""Detection between sweeps on the real exporter process over the shared fleet of 3.

A container fault reaches /metrics through Docker's event stream, a fault that changes no
container through the quick probe: neither waits for a sweep or an on-demand run. Each
mechanism runs alone in its own exporter, so the test shows what that one does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import yaml

from fleet.fleet import Fleet
from tests.integration.conftest import FleetFactory
from tests.integration.test_exporter_live import Exporter, free_port, samples

pytestmark = [pytest.mark.integration, pytest.mark.fleets(3)]

PROBE_INTERVAL = 5.0  # the smallest the config allows, to keep the test short
Watched = Callable[..., tuple[Fleet, Exporter]]


@pytest.fixture(scope="module")
def watched(fleet_factory: FleetFactory,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """An exporter over the shared fleet of 3 with the given watch settings; one runs at a
    time, and tests that ask for the same settings share it."""
    fleet = fleet_factory(3)
    current: dict[str, Exporter] = {}

    def stop() -> None:
        for running in current.values():
            if running.process and running.process.poll() is None:
                running.stop()
        current.clear()

    def start(**watch: Any) -> tuple[Fleet, Exporter]:
        key = repr(sorted(watch.items()))
        if key in current:
            return fleet, current[key]
        stop()
        work = tmp_path_factory.mktemp("detect")
        base = yaml.safe_load(fleet.config_path.read_text())
        base["store"] = {"path": str(work / "store.sqlite3")}
        port = free_port()
        base["exporter"] = {"host": "127.0.0.1", "port": port}
        # One sweep at the start and none after it during the test. Earlier modules broke
        # and healed this fleet: the logs check looks back only briefly so their lines are
        # no finding here. Latency verdicts (ENDPOINT_SLOW) are tested elsewhere, not on
        # this loaded host. The call timeout stays as shipped: a request that Kong sends to
        # a stopped upstream waits it out, and it is part of the 15 s.
        base["schedule"] = {"sweep_interval_seconds": 3600}
        base["watch"] = watch
        base["diagnostics"] = {"log_window_seconds": 20, "rate_limit_seconds": 0,
                               "thresholds": {"endpoint_slow_seconds": 10}}
        config = work / "doctor.yaml"
        config.write_text(yaml.safe_dump(base))
        assert fleet.up_result is not None
        running = Exporter(config, f"http://127.0.0.1:{port}", fleet.up_result.admin_token)
        running.start()
        current[key] = running
        deadline = time.monotonic() + 120
        while len(healthy_on_metrics(running)) < len(fleet.ids):  # the first sweep
            assert time.monotonic() < deadline, running.log()[-3000:]
            time.sleep(0.5)
        return fleet, running

    try:
        yield start
    finally:
        stop()


def metric(exporter: Exporter, name: str, label: str) -> dict[str, float]:
    """Samples of a family by the value of one label."""
    return {labels[label]: value for labels, value in samples(exporter.metrics(), name)}


def healthy_on_metrics(exporter: Exporter) -> dict[str, float]:
    return metric(exporter, "ultrabase_instance_healthy", "instance_id")


def runs(exporter: Exporter) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples(exporter.metrics(), "ultrabase_diagnostic_runs_total"):
        out[labels["trigger"]] = out.get(labels["trigger"], 0.0) + value
    return out


def seconds_until(exporter: Exporter, instance_id: str, healthy: float, since: float,
                  timeout: float) -> float:
    """Seconds from since until /metrics shows ultrabase_instance_healthy at that value."""
    while healthy_on_metrics(exporter).get(instance_id) != healthy:
        if time.monotonic() - since > timeout:
            raise AssertionError(f"{instance_id} not at healthy={healthy:g} on /metrics "
                                 f"after {timeout:g}s:\n" + exporter.log()[-3000:])
        time.sleep(0.25)
    return time.monotonic() - since


def settle_healthy(exporter: Exporter, instance_id: str, timeout: float = 90) -> None:
    """Wait until a fresh on-demand diagnostic finds the instance healthy and /metrics shows
    that diagnostic (and so its run in the counters).

    Before a fault: log lines of an earlier outage keep a diagnostic unhealthy for the log
    window (20 s here), and no event or probe asks again after it.
    """
    started = time.monotonic()
    path = f"/api/instances/{instance_id}/run-diagnostics"
    while not (result := exporter.request("POST", path).json()).get("healthy"):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{instance_id} not healthy: "
                                 f"{[i['code'] for i in result.get('issues', [])]}")
        time.sleep(3)
    stamp = datetime.fromisoformat(result["timestamp"]).timestamp()
    while abs(metric(exporter, "ultrabase_diagnostic_timestamp_seconds", "instance_id")
              .get(instance_id, 0) - stamp) > 0.01:
        assert time.monotonic() - started < timeout, "the diagnostic never reached /metrics"
        time.sleep(0.25)


def test_healthz_and_metrics_say_which_watch_runs(watched: Watched) -> None:
    _, exporter = watched(probe=False)
    body = httpx.get(f"{exporter.url}/healthz", timeout=5).json()
    assert body["status"] == "ok"
    assert body["watch"]["events"]["state"] == "up"
    assert body["watch"]["probe"] == {"state": "off"}
    assert metric(exporter, "ultrabase_watch_up", "watch") == {"events": 1}


# (fault, instance index, the watch settings, seconds to /metrics, the trigger that finds
# it, the issue it shows, seconds from the heal until /metrics is healthy again or None)
CASES = [
    # A container fault, with Docker's events alone: stop -> kill, die, stop. Its heal is
    # not asserted: kong's log lines about rest being down stay in the log window after it.
    ("stop:rest", 1, {"probe": False}, 15.0, "event", ("CONTAINER_NOT_RUNNING", "rest"),
     None),
    # The storage volume dir moves away, with the quick probe alone: no container changes
    # (no event would come); it sees the dir gone, and back after the heal.
    ("volume-missing", 2, {"events": False, "probe_interval_seconds": PROBE_INTERVAL},
     PROBE_INTERVAL + 25, "watch", ("VOLUME_MISSING", "storage"), PROBE_INTERVAL + 25),
]


@pytest.mark.parametrize(("fault", "index", "watch", "bound", "trigger", "issue",
                          "healed_within"), CASES, ids=[c[0] for c in CASES])
def test_a_fault_shows_on_metrics_without_a_sweep_or_on_demand_run(
        watched: Watched, fault: str, index: int, watch: dict[str, Any], bound: float,
        trigger: str, issue: tuple[str, str], healed_within: float | None) -> None:
    fleet, exporter = watched(**watch)
    target = fleet.ids[index]
    settle_healthy(exporter, target)
    before = runs(exporter)
    started = time.monotonic()
    with fleet.broken(target, fault):
        took = seconds_until(exporter, target, 0, started, bound)
        after = runs(exporter)
        last = exporter.get(f"/api/instances/{target}/last-diagnostic").json()
        assert last["trigger"] == trigger, took
        assert issue in {(i["code"], i["component"]) for i in last["issues"]}
    assert after.get(trigger, 0) > before.get(trigger, 0)
    for other in ("scheduled", "on_demand"):
        assert after.get(other, 0) == before.get(other, 0), (other, took)
    if healed_within is not None:
        seconds_until(exporter, target, 1, time.monotonic(), healed_within)
