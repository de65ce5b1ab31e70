"""The action API served for real (`serve_all`: exporter and actions in one process) over a
private live fleet, with a real Alertmanager (Debian's prometheus-alertmanager).

- a safe restart silences the instance in Alertmanager while it runs, and the silence is
  expired afterwards;
- Alertmanager's own webhook for an `auto_repair="true"` alert on a stopped auth starts
  exactly one repair, which brings auth back; the identical webhook once the budget is
  spent is refused and audited;
- path traversal, injection and oversized bodies get 4xx and change none of the instance's
  four files;
- no secret in any response, audit entry or log line.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from fleet.fleet import Fleet

pytestmark = pytest.mark.integration

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
FINISHED = {"succeeded", "failed", "rolled_back"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


@dataclass
class Process:
    """A child process with its log file."""

    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(timeout=10)
        return self.process.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Live:
    """The fleet, Alertmanager and the doctor process, and every answer seen."""

    fleet: Fleet
    iid: str
    actions_url: str
    exporter_url: str
    alertmanager_url: str
    admin_token: str
    alertmanager_token: str
    doctor: Process
    alertmanager: Process
    seen: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, *, token: str | None = None,
             **kwargs: Any) -> httpx.Response:
        """A request to the action API as admin (or `token`); the answer is remembered."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        response = httpx.request(method, f"{self.actions_url}{path}", headers=headers,
                                 timeout=120, **kwargs)
        self.seen.append(response.text)
        return response

    def wait_operation(self, op_id: str, timeout: float = 150) -> dict[str, Any]:
        response = self.call("GET", f"/api/operations/{op_id}?wait=true&timeout={timeout}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        assert found["status"] in FINISHED, found
        return found

    def files(self) -> dict[str, str]:
        """sha256 of the instance's four files: registry, env, compose, kong.yml."""
        inst = self.fleet.instance(self.iid)
        paths = {"registry": self.fleet.registry_path, "env": inst.env_file,
                 "compose": inst.compose_file, "kong": inst.kong_file}
        return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}

    def silences(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.alertmanager_url}/api/v2/silences", timeout=10)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found


def alertmanager_config(path: Path, actions_port: int, token_file: Path) -> None:
    """One route, one receiver: the action API's webhook with a bearer token from a file."""
    path.write_text(yaml.safe_dump({
        "route": {"receiver": "doctor", "group_by": ["instance_id"], "group_wait": "1s",
                  "group_interval": "30s", "repeat_interval": "1h"},
        "receivers": [{"name": "doctor", "webhook_configs": [{
            "url": f"http://127.0.0.1:{actions_port}/api/alerts",
            "send_resolved": False,
            "http_config": {"authorization": {"type": "Bearer",
                                              "credentials_file": str(token_file)}},
        }]}],
    }))


@pytest.fixture(scope="module")
def live(private_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    if not os.access(ALERTMANAGER, os.X_OK):
        pytest.skip(f"{ALERTMANAGER} is not installed (apt-get install prometheus-alertmanager)")
    fleet = private_fleet
    iid = fleet.ids[0]
    work = tmp_path_factory.mktemp("actions-live")
    admin_token = fleet.up_result.admin_token if fleet.up_result else ""
    assert admin_token
    am_token = "am-" + secrets.token_hex(16)
    token_file = work / "alertmanager.token"
    token_file.write_text(am_token)
    token_file.chmod(0o600)
    am_port, actions_port, exporter_port = free_port(), free_port(), free_port()

    alertmanager_config(work / "alertmanager.yml", actions_port, token_file)
    am_log = work / "alertmanager.log"
    with am_log.open("ab") as out:
        am = Process(subprocess.Popen(
            [ALERTMANAGER, f"--config.file={work / 'alertmanager.yml'}",
             f"--storage.path={work / 'alertmanager-data'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            stdout=out, stderr=out), am_log)
    am_url = f"http://127.0.0.1:{am_port}"

    base = yaml.safe_load(fleet.config_path.read_text())
    base["api"]["tokens"].append({"name": "alertmanager", "role": "webhook",
                                  "instances": ["*"],
                                  "token_sha256": hashlib.sha256(am_token.encode()).hexdigest()})
    base["store"] = {"path": str(work / "store.sqlite3")}
    base["exporter"] = {"host": "127.0.0.1", "port": exporter_port}
    base["schedule"] = {"enabled": False}
    base["diagnostics"] = {"timeout_seconds": 3}
    base["actions"] = {"host": "127.0.0.1", "port": actions_port,
                       "backups_dir": str(work / "backups"), "auto_repair_budget_per_hour": 1,
                       "stop_timeout_seconds": 5, "health_timeout_seconds": 60,
                       "rate_limit": "1000/minute"}
    base["alertmanager"] = {"url": am_url}
    config = work / "doctor.yaml"
    config.write_text(yaml.safe_dump(base))
    config.chmod(0o600)
    doctor_log = work / "doctor.log"
    code = ("import logging, sys\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "from exporter.config import load_config\n"
            "from actions.service import serve_all\n"
            "sys.exit(serve_all(load_config(sys.argv[1])))\n")
    with doctor_log.open("ab") as out:
        doctor = Process(subprocess.Popen(
            [sys.executable, "-c", code, str(config)], stdout=out, stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}), doctor_log)
    made = Live(fleet, iid, f"http://127.0.0.1:{actions_port}",
                f"http://127.0.0.1:{exporter_port}", am_url, admin_token, am_token,
                doctor, am)
    try:
        wait_for(f"{am_url}/-/ready")
        wait_for(f"{made.actions_url}/healthz")
        yield made
    finally:
        code_doctor = doctor.stop()
        am.stop()
        shutil.rmtree(work / "alertmanager-data", ignore_errors=True)
        assert code_doctor == 0, doctor.text()[-3000:]


def test_one_process_serves_both_apps(live: Live) -> None:
    exporter = httpx.get(f"{live.exporter_url}/api/instances",
                         headers={"Authorization": f"Bearer {live.admin_token}"}, timeout=30)
    assert exporter.status_code == 200
    assert [i["id"] for i in exporter.json()["instances"]] == [live.iid]
    document = httpx.get(f"{live.actions_url}/openapi.json", timeout=10).json()
    assert "/api/instances/{instance_id}/safe-restart" in document["paths"]
    assert "/api/instances/{instance_id}/safe-restart" not in httpx.get(
        f"{live.exporter_url}/openapi.json", timeout=10).text
    config = live.call("GET", f"/api/instances/{live.iid}/config")
    assert config.status_code == 200, config.text


def test_safe_restart_silences_the_instance_while_it_runs(live: Live) -> None:
    # The whole instance: the silence must cover every component's stop and start.
    started = live.call("POST", f"/api/instances/{live.iid}/safe-restart", json={})
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]
    assert started.headers["Location"] == f"/api/operations/{op_id}"
    seen_active: list[dict[str, Any]] = []
    deadline = time.monotonic() + 150
    operation: dict[str, Any] = started.json()
    while operation["status"] not in FINISHED and time.monotonic() < deadline:
        for silence in live.silences():
            matchers = {(m["name"], m["value"], m["isRegex"]) for m in silence["matchers"]}
            if (silence["status"]["state"] == "active"
                    and ("instance_id", live.iid, False) in matchers):
                seen_active.append(silence)
        operation = live.call("GET", f"/api/operations/{op_id}").json()
        time.sleep(0.1)
    assert operation["status"] == "succeeded", (operation["error"], operation["failed_step"],
                                                 operation["steps"])
    assert seen_active, "no active silence for the instance while the restart ran"
    silence = seen_active[0]
    assert silence["createdBy"] == "ultrabase-doctor" and op_id in silence["comment"]
    after = {s["id"]: s for s in live.silences()}
    assert after[silence["id"]]["status"]["state"] == "expired"
    assert [s for s in after.values() if s["status"]["state"] == "active"] == []
    steps = [s["name"] for s in operation["steps"]]
    assert "silence" in steps and "expire_silence" in steps


def auto_repair_alert(iid: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"labels": {"alertname": "UltrabaseComponentDown", "instance_id": iid,
                       "component": "auth", "severity": "critical", "auto_repair": "true"},
            "annotations": {"summary": f"auth of {iid} is down"},
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}


def auto_repairs(live: Live) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = live.call(
        "GET", f"/api/audit?action=auto_repair&instance_id={live.iid}").json()["entries"]
    return entries


def test_alertmanager_webhook_repairs_once_within_budget(live: Live) -> None:
    client = docker.from_env()
    auth = live.fleet.instance(live.iid).container_name("auth")
    with live.fleet.broken(live.iid, "stop:auth"):
        assert client.containers.get(auth).status != "running"
        # Alertmanager gets the alert and calls the action API's webhook by itself.
        pushed = httpx.post(f"{live.alertmanager_url}/api/v2/alerts",
                            json=[auto_repair_alert(live.iid)], timeout=10)
        assert pushed.status_code == 200, pushed.text
        deadline = time.monotonic() + 60
        entries: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            entries = auto_repairs(live)
            if entries:
                break
            time.sleep(0.5)
        assert [e["result"] for e in entries] == ["started"], entries
        assert entries[0]["who"] == "alertmanager" and entries[0]["role"] == "webhook"
        repaired = live.wait_operation(entries[0]["operation_id"])
        assert repaired["kind"] == "repair" and repaired["status"] == "succeeded", repaired
        assert repaired["inputs"]["source"] == "alertmanager"
        assert "start_container:auth" in repaired["inputs"]["actions"], repaired
        assert client.containers.get(auth).status == "running"

        # The identical webhook again, within the hour: the budget (1) is spent.
        payload = {"version": "4", "groupKey": f'{{}}:{{instance_id="{live.iid}"}}',
                   "truncatedAlerts": 0, "status": "firing", "receiver": "doctor",
                   "groupLabels": {"instance_id": live.iid}, "commonLabels": {},
                   "commonAnnotations": {}, "externalURL": live.alertmanager_url,
                   "alerts": [{"status": "firing", **auto_repair_alert(live.iid),
                               "generatorURL": "", "fingerprint": "0123456789abcdef"}]}
        again = live.call("POST", "/api/alerts", json=payload, token=live.alertmanager_token)
        assert again.status_code == 200, again.text
        assert again.json()["results"] == [{
            "instance_id": live.iid, "alerts": ["UltrabaseComponentDown"],
            "outcome": "refused", "reason": "over_budget", "operation_id": None}]
        entries = auto_repairs(live)
        assert [e["result"] for e in entries] == ["refused", "started"]
        assert entries[0]["error"].startswith("over_budget")
        repairs = live.call("GET", f"/api/audit?action=repair&instance_id={live.iid}").json()
        assert repairs["count"] == 1


HOSTILE_CHANGES: list[dict[str, Any]] = [
    {"site_url": "http://x\nAPI_EXTERNAL_URL=http://evil"},
    {"name": "nul\x00byte"},
    {"dashboard_password": "pw$(reboot)\n"},
    {"smtp_host": "\"quoted\"\r\nSMTP_PASS=x"},
    {"dashboard_username": "u'; echo 1\n"},
    {"smtp_sender_name": "x" * 300},
    {"name": "fine", "GOTRUE_JWT_SECRET": "$x"},
    {"jwt_expiry": "3600\n"},
    # What the manager's dashboard would render as markup (M5 of the security review).
    {"name": "<img src=x onerror=alert(1)>"},
    {"name": "a', 'b"},
    {"dashboard_password": "p<script>x</script>"},
]


def test_traversal_injection_and_oversized_change_no_file(live: Live) -> None:
    before = live.files()
    operations_before = live.call("GET", "/api/audit?limit=1000").json()["count"]
    for backup_id in ("..%2F..%2F..%2Fetc%2Fpasswd", "..", "%2e%2e%2f%2e%2e",
                      "20250101T000000Z-abcdef", "20250101T000000Z-abcdef%2F..%2F.."):
        response = live.call("POST", f"/api/instances/{live.iid}/backups/{backup_id}/restore",
                             json={})
        assert response.status_code == 404, (backup_id, response.text)
    for path in ("/api/instances/..%2F..%2Fetc/config",
                 "/api/instances/%2e%2e/safe-restart"):
        assert live.call("PUT" if path.endswith("config") else "POST", path,
                         json={"changes": {"name": "x"}}).status_code == 404
    for changes in HOSTILE_CHANGES:
        response = live.call("PUT", f"/api/instances/{live.iid}/config",
                             json={"changes": changes})
        assert response.status_code == 400, (changes, response.text)
        assert "reboot" not in response.text and "evil" not in response.text
    huge = b'{"changes": {"name": "' + b"x" * (1024 * 1024) + b'"}}'
    response = live.call("PUT", f"/api/instances/{live.iid}/config", content=huge)
    assert response.status_code == 413, response.text
    not_json = live.call("POST", f"/api/instances/{live.iid}/safe-restart",
                         content=b"components=db&$(reboot)")
    assert not_json.status_code == 400
    assert live.files() == before
    audit = live.call("GET", "/api/audit?limit=1000").json()
    new = audit["entries"][:audit["count"] - operations_before]
    # Every refusal is on record, and not one operation started.
    assert len(new) >= len(HOSTILE_CHANGES) + 2, new
    assert all(e["result"] == "refused" and e["operation_id"] is None for e in new), new


def test_no_secret_in_responses_audit_or_logs(live: Live) -> None:
    creds = live.fleet.instance(live.iid).credentials
    secrets_ = [creds.postgres_password, creds.jwt_secret, creds.anon_key,
                creds.service_role_key, creds.dashboard_password, creds.logflare_api_key,
                live.admin_token, live.alertmanager_token]
    backups = live.call("GET", f"/api/instances/{live.iid}/backups")
    config = live.call("GET", f"/api/instances/{live.iid}/config")
    assert backups.status_code == 200 and config.status_code == 200
    audit = live.call("GET", "/api/audit?limit=1000")
    operations = [live.call("GET", f"/api/operations/{e['operation_id']}").text
                  for e in audit.json()["entries"] if e["operation_id"]]
    assert operations, "no operation to look into"
    texts = {"responses": "\n".join(live.seen), "audit": audit.text,
             "operations": "\n".join(operations), "doctor log": live.doctor.text()}
    # The texts are the real ones: the log has the auto-repair, the audit the restart.
    assert f"auto-repair of {live.iid} started" in texts["doctor log"]
    assert "safe_restart" in texts["audit"]
    leaks = [(where, s[:6]) for where, text in texts.items() for s in secrets_
             if s and s in text]
    assert leaks == []
    assert json.loads(config.text)["config"]
