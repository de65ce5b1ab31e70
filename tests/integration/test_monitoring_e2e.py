"""End to end: real Prometheus and Alertmanager over two exporters, an action API and fleets.

Two fleets stand for two Docker hosts (label `host`), each with its own exporter; one
Prometheus scrapes both and the action API, evaluates the shipped rules (with test-length
intervals) and sends alerts to a real Alertmanager, which delivers them to a webhook
receiver in this test.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.detect import start, stop_all
from fleet.fleet import Fleet
from grafana.dashboards_src import EMPTY_UNTIL_HEALED, EMPTY_WHEN_HEALTHY, all_queries
from tests.integration.conftest import FleetFactory

pytestmark = [pytest.mark.integration, pytest.mark.fleets(2, 3)]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 90,
               every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            last = None
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Webhook(ThreadingHTTPServer):
    """Collects Alertmanager's webhook posts."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def alerts(self) -> list[dict[str, Any]]:
        return [a for post in list(self.posts) for a in post["alerts"]]


@dataclass
class Stack:
    """Everything the tests talk to."""

    fleets: dict[str, Fleet]
    exporters: dict[str, str]  # host -> exporter URL
    actions: str
    prometheus: str
    alertmanager: str
    webhook: Webhook
    token: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr},
                             timeout=30)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])


def _doctor_config(fleet: Fleet, work: Path, name: str, exporter_port: int,
                   actions_port: int) -> Path:
    raw = yaml.safe_load(fleet.config_path.read_text())
    raw["store"] = {"path": str(work / f"{name}.sqlite3")}
    raw["exporter"] = {"host": "127.0.0.1", "port": exporter_port}
    raw["actions"] = {"host": "127.0.0.1", "port": actions_port,
                      "backups_dir": str(work / f"{name}-backups")}
    raw["schedule"] = {"sweep_interval_seconds": 10}
    raw["diagnostics"] = {"timeout_seconds": 3, "rate_limit_seconds": 0,
                          "log_window_seconds": 20}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _test_rules(work: Path) -> list[str]:
    """The shipped rule files with test-length intervals: every group every 2 s, for: 2s."""
    out = []
    for source in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        data = yaml.safe_load(source.read_text())
        for group in data["groups"]:
            group["interval"] = "2s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "2s"
        target = work / source.name
        target.write_text(yaml.safe_dump(data))
        out.append(str(target))
    return out


@pytest.fixture(scope="module")
def stack(fleet_factory: FleetFactory,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (PROMETHEUS and ALERTMANAGER):
        pytest.fail("prometheus and prometheus-alertmanager are needed (Debian packages)")
    work = tmp_path_factory.mktemp("e2e")
    fleets = {"host-a": fleet_factory(3), "host-b": fleet_factory(2)}
    token = fleets["host-a"].up_result.admin_token  # type: ignore[union-attr]
    processes: list[subprocess.Popen[bytes]] = []
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    exporters: dict[str, str] = {}
    actions_port = free_port()
    configs = {}
    for host, fleet in fleets.items():
        port = free_port()
        configs[host] = _doctor_config(fleet, work, host, port, actions_port)
        exporters[host] = f"http://127.0.0.1:{port}"
        start([sys.executable, "-m", "exporter.cli", "exporter", "--config",
                str(configs[host])], work / f"{host}-exporter.log", processes)
    start([sys.executable, "-m", "actions.cli", "actions", "--config",
            str(configs["host-a"])], work / "actions.log", processes)
    am_port, prom_port = free_port(), free_port()
    am_config = {
        "route": {"receiver": "test", "group_by": ["alertname", "host", "instance_id"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [
            {"url": f"http://127.0.0.1:{webhook.server_address[1]}/", "send_resolved": True}]}],
    }
    (work / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    start([ALERTMANAGER, f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address="], work / "alertmanager.log", processes)
    # The shipped prometheus.yml, its jobs pointed at this test's processes.
    prom_config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    prom_config["global"].update(scrape_interval="1s", scrape_timeout="1s",
                                 evaluation_interval="2s")
    prom_config["global"]["external_labels"]["runbook_base"] = \
        "https://example.invalid/README.md"
    prom_config["rule_files"] = _test_rules(work)
    prom_config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
    targets = {
        "ultrabase-doctor-exporter": [
            {"targets": [url.removeprefix("http://")], "labels": {"host": host}}
            for host, url in exporters.items()],
        "ultrabase-doctor-actions": [
            {"targets": [f"127.0.0.1:{actions_port}"], "labels": {"host": "host-a"}}],
    }
    prom_config["scrape_configs"] = [dict(job, static_configs=targets[job["job_name"]])
                                     for job in prom_config["scrape_configs"]
                                     if job["job_name"] in targets]
    (work / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
    start([PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}"], work / "prometheus.log", processes)
    built = Stack(fleets, exporters, f"http://127.0.0.1:{actions_port}",
                  f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", webhook,
                  token, processes)
    try:
        wait_until("prometheus", lambda: httpx.get(f"{built.prometheus}/-/ready",
                                                   timeout=2).status_code == 200)
        wait_until("every instance in prometheus",
                   lambda: len(built.query("ultrabase_instance_healthy")) == 5, timeout=120)
        yield built
    finally:
        stop_all(processes)
        webhook.shutdown()


def test_one_prometheus_sees_both_hosts_and_the_action_api(stack: Stack) -> None:
    hosts = {r["metric"]["host"]: int(r["value"][1])
             for r in stack.query("count by (host) (ultrabase_instance_info)")}
    assert hosts == {"host-a": 3, "host-b": 2}
    up = {r["metric"]["job"]: r["value"][1] for r in stack.query("up")}
    assert up == {"ultrabase-doctor-exporter": "1", "ultrabase-doctor-actions": "1"}


def assert_every_query_returns_data(stack: Stack) -> None:
    """Every dashboard panel's query and every recording rule has data (one instance broken,
    so the panels about problems have some too)."""
    empty = [f"{uid} / {title}: {expr}" for uid, title, expr in all_queries()
             if (uid, title) not in EMPTY_UNTIL_HEALED and not stack.query(expr)]
    records = [rule["record"]
               for source in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
               for group in yaml.safe_load(source.read_text())["groups"]
               for rule in group["rules"] if "record" in rule]
    assert records
    for record in records:
        wait_until(f"recording rule {record}", lambda r=record: stack.query(r), timeout=30)
    assert empty == []


def test_healthy_fleet_panels_have_data(stack: Stack) -> None:
    empty = [f"{uid} / {title}" for uid, title, expr in all_queries()
             if (uid, title) not in EMPTY_WHEN_HEALTHY and not stack.query(expr)]
    assert empty == []


def test_breaking_an_instance_fires_and_healing_resolves(stack: Stack) -> None:
    fleet = stack.fleets["host-a"]
    target = fleet.ids[0]
    url = f"{stack.exporters['host-a']}/api/instances/{target}/run-diagnostics"
    auth = {"Authorization": f"Bearer {stack.token}"}
    with fleet.broken(target, "stop:auth"):
        assert httpx.post(url, headers=auth, timeout=60).json()["healthy"] is False
        firing = wait_until("ComponentDown firing in Prometheus", lambda: [
            a for a in httpx.get(f"{stack.prometheus}/api/v1/alerts", timeout=10)
            .json()["data"]["alerts"]
            if a["labels"]["alertname"] == "UltrabaseComponentDown"
            and a["labels"].get("instance_id") == target and a["state"] == "firing"])
        assert firing[0]["labels"]["component"] == "auth"
        delivered = wait_until("the alert delivered to the webhook", lambda: [
            a for a in stack.webhook.alerts()
            if a["labels"]["alertname"] == "UltrabaseComponentDown"
            and a["labels"]["instance_id"] == target and a["status"] == "firing"])
        labels = delivered[0]["labels"]
        assert labels["severity"] == "critical" and labels["component"] == "auth"
        assert labels["host"] == "host-a"
        annotations = delivered[0]["annotations"]
        assert annotations["runbook_url"].startswith("https://example.invalid/README.md#")
        assert target in annotations["diagnostics_url"]
        assert_every_query_returns_data(stack)
    # Healed: the next diagnostics find it healthy once auth is up and its log window has
    # moved past the outage.
    wait_until("a healthy diagnostic after healing",
               lambda: httpx.post(url, headers=auth, timeout=60).json()["healthy"],
               timeout=90, every=5)
    wait_until("the resolution delivered to the webhook", lambda: [
        a for a in stack.webhook.alerts()
        if a["labels"]["alertname"] == "UltrabaseComponentDown"
        and a["labels"]["instance_id"] == target and a["status"] == "resolved"], timeout=120)
