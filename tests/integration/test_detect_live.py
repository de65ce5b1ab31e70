"""Detection between sweeps on the real exporter process over the shared fleet of 3.

A container fault reaches /metrics through Docker's event stream, a fault that changes no
container through the quick probe: neither waits for a sweep or an on-demand run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from fleet.fleet import Fleet
from tests.integration.conftest import FleetFactory
from tests.integration.test_exporter_live import Exporter, free_port, samples

pytestmark = pytest.mark.integration

PROBE_INTERVAL = 5.0  # the smallest the config allows, to keep the test short


@pytest.fixture(scope="module")
def watched(fleet_factory: FleetFactory,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Exporter]]:
    fleet = fleet_factory(3)
    work: Path = tmp_path_factory.mktemp("detect")
    base = yaml.safe_load(fleet.config_path.read_text())
    base["store"] = {"path": str(work / "store.sqlite3")}
    port = free_port()
    base["exporter"] = {"host": "127.0.0.1", "port": port}
    # One sweep at the start and none after it during the test; the watch as shipped,
    # with the quick probe at its shortest interval. Earlier modules broke and healed this
    # fleet: the logs check looks back only briefly so their lines are no finding here.
    base["schedule"] = {"sweep_interval_seconds": 3600}
    base["watch"] = {"probe_interval_seconds": PROBE_INTERVAL}
    base["diagnostics"] = {"log_window_seconds": 20, "rate_limit_seconds": 0}
    config = work / "doctor.yaml"
    config.write_text(yaml.safe_dump(base))
    assert fleet.up_result is not None
    running = Exporter(config, f"http://127.0.0.1:{port}", fleet.up_result.admin_token)
    running.start()
    try:
        yield fleet, running
    finally:
        if running.process and running.process.poll() is None:
            running.stop()


def healthy_on_metrics(exporter: Exporter) -> dict[str, float]:
    return {labels["instance_id"]: value for labels, value in
            samples(exporter.metrics(), "ultrabase_instance_healthy")}


def runs(exporter: Exporter) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples(exporter.metrics(), "ultrabase_diagnostic_runs_total"):
        out[labels["trigger"]] = out.get(labels["trigger"], 0.0) + value
    return out


def settle_healthy(exporter: Exporter, instance_id: str, timeout: float = 90) -> None:
    """Wait until a fresh on-demand diagnostic finds the instance healthy, and /metrics too.

    Between the tests only: log lines of an outage that is over keep a diagnostic
    unhealthy for the log window (20 s here), and no event or probe asks again after it.
    """
    deadline = time.monotonic() + timeout
    path = f"/api/instances/{instance_id}/run-diagnostics"
    while not exporter.request("POST", path).json().get("healthy"):
        if time.monotonic() > deadline:
            last = exporter.get(f"/api/instances/{instance_id}/last-diagnostic").json()
            raise AssertionError(f"{instance_id} not healthy: "
                                 f"{[i['code'] for i in last.get('issues', [])]}\n"
                                 + exporter.log()[-3000:])
        time.sleep(3)
    while healthy_on_metrics(exporter).get(instance_id) != 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"{instance_id} not healthy on /metrics")
        time.sleep(0.5)


def seconds_until_unhealthy(exporter: Exporter, instance_id: str, since: float,
                            timeout: float) -> float:
    while time.monotonic() - since < timeout:
        if healthy_on_metrics(exporter).get(instance_id) == 0:
            return time.monotonic() - since
        time.sleep(0.25)
    raise AssertionError(f"{instance_id} still healthy on /metrics after {timeout:g}s:\n"
                         + exporter.log()[-3000:])


def test_watch_is_up_on_healthz_and_metrics(watched: tuple[Fleet, Exporter]) -> None:
    fleet, exporter = watched
    deadline = time.monotonic() + 120
    while len(healthy_on_metrics(exporter)) < len(fleet.ids):  # the first sweep
        assert time.monotonic() < deadline, exporter.log()[-3000:]
        time.sleep(0.5)
    body = httpx.get(f"{exporter.url}/healthz", timeout=5).json()
    assert body["status"] == "ok"
    assert body["watch"]["events"]["state"] == "up"
    up = {labels["watch"]: value
          for labels, value in samples(exporter.metrics(), "ultrabase_watch_up")}
    assert up["events"] == 1


def test_a_stopped_component_shows_within_15_seconds(watched: tuple[Fleet, Exporter]) -> None:
    fleet, exporter = watched
    target = fleet.ids[1]
    settle_healthy(exporter, target)
    before = runs(exporter)
    started = time.monotonic()
    with fleet.broken(target, "stop:rest"):
        took = seconds_until_unhealthy(exporter, target, started, 15)
        after = runs(exporter)
        last = exporter.get(f"/api/instances/{target}/last-diagnostic").json()
        assert last["trigger"] == "event"
        assert ("CONTAINER_NOT_RUNNING", "rest") in {(i["code"], i["component"])
                                                     for i in last["issues"]}
    # Neither a sweep nor an on-demand run did it.
    assert after.get("event", 0) > before.get("event", 0)
    for trigger in ("scheduled", "on_demand"):
        assert after.get(trigger, 0) == before.get(trigger, 0), (trigger, took)
    settle_healthy(exporter, target)


def test_a_fault_without_container_events_is_seen_by_the_quick_probe(
        watched: tuple[Fleet, Exporter]) -> None:
    fleet, exporter = watched
    target = fleet.ids[2]
    settle_healthy(exporter, target)
    before = runs(exporter)
    started = time.monotonic()
    # The storage volume dir moves away: no container changes, so no event comes.
    with fleet.broken(target, "volume-missing"):
        seconds_until_unhealthy(exporter, target, started, PROBE_INTERVAL + 25)
        last = exporter.get(f"/api/instances/{target}/last-diagnostic").json()
        assert last["trigger"] == "watch"
        assert "VOLUME_MISSING" in {i["code"] for i in last["issues"]}
        after = runs(exporter)
    assert after.get("watch", 0) > before.get("watch", 0)
    for trigger in ("scheduled", "on_demand"):
        assert after.get(trigger, 0) == before.get(trigger, 0), trigger
    # Moved back: the probe sees the dir again and asks for the diagnostic that clears it.
    deadline = time.monotonic() + PROBE_INTERVAL + 25
    while healthy_on_metrics(exporter).get(target) != 1:
        assert time.monotonic() < deadline, exporter.log()[-3000:]
        time.sleep(0.5)
