"""The real exporter process over a live fleet of 3 with one broken instance."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fleet.fleet import Fleet
from tests.integration.conftest import FleetFactory

pytestmark = [pytest.mark.integration, pytest.mark.fleets(3)]

BROKEN_FAULT = "stop:auth"
HISTORY_LIMIT = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Exporter:
    """A running `ultrabase-doctor exporter` and how to talk to it."""

    config: Path
    url: str
    token: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.config.with_suffix(".log"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "exporter", "--config", str(self.config)],
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("exporter did not start:\n" + self.log())

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text(errors="replace")

    def get(self, path: str, **kw: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.auth, timeout=30, **kw)  # type: ignore[arg-type]

    def request(self, method: str, path: str, **kw: object) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers=self.auth, timeout=30,
                             **kw)  # type: ignore[arg-type]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


@pytest.fixture(scope="module")
def live(fleet_factory: FleetFactory) -> Iterator[Fleet]:
    fleet = fleet_factory(3)
    with fleet.broken(fleet.ids[0], BROKEN_FAULT):
        yield fleet


@pytest.fixture(scope="module")
def exporter(live: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    base = yaml.safe_load(live.config_path.read_text())
    port = free_port()
    store = tmp_path_factory.mktemp("exporter") / "store.sqlite3"
    base["store"] = {"path": str(store), "history_limit": HISTORY_LIMIT}
    base["exporter"] = {"host": "127.0.0.1", "port": port}
    # The shared fleet was broken and healed by earlier modules; their log lines are recent
    # history, not this module's faults, so the logs check looks back only briefly.
    # The first sweep is judged once, on a shared 2-core host that may be saturated: the
    # latency verdicts (timeouts, ENDPOINT_SLOW) are tested elsewhere, not here.
    base["diagnostics"] = {"timeout_seconds": 10, "log_window_seconds": 20,
                           "thresholds": {"endpoint_slow_seconds": 10}}
    config = store.parent / "doctor.yaml"
    config.write_text(yaml.safe_dump(base))
    token = live.up_result.admin_token if live.up_result else ""
    assert token, "the fleet's admin token is needed"
    running = Exporter(config, f"http://127.0.0.1:{port}", token)
    running.start()
    try:
        yield running
    finally:
        if running.process and running.process.poll() is None:
            running.stop()


def wait_for_sweep(exporter: Exporter, count: int) -> str:
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        text = exporter.metrics()
        if len(samples(text, "ultrabase_instance_healthy")) >= count:
            return text
        time.sleep(1)
    raise AssertionError("no sweep landed in /metrics:\n" + text[-2000:] + exporter.log())


def test_metrics_after_first_sweep(live: Fleet, exporter: Exporter, tmp_path: Path) -> None:
    text = wait_for_sweep(exporter, 3)
    broken = live.ids[0]
    healthy = {labels["instance_id"]: value
               for labels, value in samples(text, "ultrabase_instance_healthy")}
    assert healthy[broken] == 0
    active = samples(text, "ultrabase_issue_active")
    assert all(healthy[i] == 1 for i in live.ids[1:]), active
    codes = {(labels["instance_id"], labels["code"]) for labels, _ in active}
    assert (broken, "CONTAINER_NOT_RUNNING") in codes
    assert not [c for c in codes if c[0] != broken]
    assert "instance=" not in text.replace("instance_id=", "")
    assert samples(text, "ultrabase_up")[0][1] == 1
    out = tmp_path / "metrics.txt"
    out.write_text(text)
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                              capture_output=True, check=False)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def test_concurrent_requests_cause_one_run_then_rate_limit(live: Fleet,
                                                           exporter: Exporter) -> None:
    wait_for_sweep(exporter, 3)
    target = live.ids[1]

    def on_demand_runs() -> float:
        return sum(v for labels, v in samples(exporter.metrics(),
                                              "ultrabase_diagnostic_runs_total")
                   if labels["trigger"] == "on_demand")

    before = on_demand_runs()
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(
            lambda _: exporter.request("POST", f"/api/instances/{target}/run-diagnostics"),
            range(20)))
    assert all(r.status_code == 200 for r in responses)
    stamps = {r.json()["timestamp"] for r in responses}
    assert len(stamps) == 1  # one run, shared or served as its result
    # The renderer picks up the store's change within its watch interval.
    deadline = time.monotonic() + 10
    while on_demand_runs() == before and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.5)  # one more interval: a second run would show by now
    assert on_demand_runs() - before == 1
    again = exporter.request("POST", f"/api/instances/{target}/run-diagnostics")
    assert again.status_code == 200
    assert again.json()["rate_limited"] is True
    assert 0 < int(again.headers["Retry-After"]) <= 120
    last = exporter.get(f"/api/instances/{target}/last-diagnostic").json()
    assert last["timestamp"] in stamps


def test_history_is_trimmed_at_its_limit(live: Fleet, exporter: Exporter) -> None:
    target = live.ids[2]
    for _ in range(HISTORY_LIMIT + 1):
        # The CLI is another process writing to the same store.
        subprocess.run([sys.executable, "-m", "exporter.cli", "diagnose", target, "--no-cache",
                        "--config", str(exporter.config), "--checks", "container_status"],
                       check=False, capture_output=True, timeout=120)
    history = exporter.get(f"/api/instances/{target}/diagnostic-history?limit=50").json()
    assert history["count"] == HISTORY_LIMIT
    stamps = [h["timestamp"] for h in history["history"]]
    assert stamps == sorted(stamps, reverse=True)
    report = exporter.get(f"/api/instances/{target}/health-report?days=1").json()
    assert report["total_diagnostics"] == HISTORY_LIMIT


def test_schedule_survives_restart_and_sigterm_is_clean(live: Fleet,
                                                        exporter: Exporter) -> None:
    target = live.ids[1]
    put = exporter.request("PUT", f"/api/instances/{target}/schedule",
                           json={"schedule": "6h"})
    assert put.status_code == 200, put.text
    assert exporter.stop() == 0
    assert "exporter stopped" in exporter.log()
    exporter.start()
    got = exporter.get(f"/api/instances/{target}/schedule").json()
    assert got["schedule"] == "6h" and got["cron"] == "0 */6 * * *"
    assert got["next_run"] is not None
    cron = exporter.get(f"/api/instances/{target}/schedule/cron").json()
    assert cron["line"].startswith("0 */6 * * * curl")
    assert "127.0.0.1" in cron["line"] and exporter.token not in cron["line"]


def test_access_and_errors(live: Fleet, exporter: Exporter) -> None:
    target = live.ids[1]
    assert httpx.get(f"{exporter.url}/api/instances", timeout=10).status_code == 401
    bad = httpx.get(f"{exporter.url}/api/instances",
                    headers={"Authorization": "Bearer nope"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
    assert exporter.get("/api/instances/zzzz0000/last-diagnostic").status_code == 404
    assert exporter.get("/api/instances/..%2Fetc/last-diagnostic").status_code == 404
    logs = exporter.get(f"/api/instances/{target}/diagnostic-logs?services=auth,rest"
                        "&level=info&range=1h")
    assert logs.status_code == 200, logs.text
    assert set(logs.json()["summary"]) >= {"total_entries", "error_count", "warning_count"}
    assert exporter.get(f"/api/instances/{target}/diagnostic-logs?range=99y").status_code == 400
    listing = exporter.get("/api/instances").json()
    assert {i["id"] for i in listing["instances"]} == set(live.ids)
    check_all = exporter.get("/api/instances/check-all-health").json()
    assert check_all["total_instances"] == 3 and check_all["unhealthy"] >= 1
    body = json.dumps(check_all) + json.dumps(listing)
    for record in json.loads(live.registry_path.read_text()).values():
        assert record["credentials"]["postgres_password"] not in body
