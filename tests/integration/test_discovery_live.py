"""Discovery and the CLI on a live fleet: components, runtime credentials, bad records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import load_config
from exporter.discovery import COMPONENTS, discover
from exporter.dockerhost import DockerHost
from fleet.fleet import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.fleets(2)]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True,
                          text=True, timeout=180, check=False)


def test_every_component_and_runtime_credentials(fleet: Fleet) -> None:
    config = load_config(fleet.config_path)
    docker = DockerHost(config.docker.base_url)
    found = discover(config, docker)
    assert found.docker_ok
    assert sorted(found.instances) == sorted(fleet.ids)
    registry = json.loads(fleet.registry_path.read_text())
    for iid, inst in found.instances.items():
        assert set(inst.components) == set(COMPONENTS)
        assert all(c.running for c in inst.components.values()), inst.to_dict()["components"]
        assert inst.compose_project == f"supabase-{iid}"
        assert inst.components["realtime"].container_name == \
            f"realtime-dev.supabase-realtime-{iid}"
        assert inst.problems == ()
        record = registry[iid]
        assert inst.endpoints.gateway_url == f"http://127.0.0.1:{record['ports']['kong_http']}"
        assert inst.endpoints.db_port == record["ports"]["postgres_ext"]
        # The config in force comes from the containers themselves.
        assert inst.credentials.sources["jwt_secret"] == "runtime:auth"
        assert inst.credentials.sources["postgres_password"] == "runtime:db"
        assert inst.credentials.jwt_secret == record["credentials"]["jwt_secret"]
        assert inst.runtime_env["auth"]["GOTRUE_JWT_SECRET"] == inst.credentials.jwt_secret


def test_broken_registry_entry_does_not_hide_the_others(fleet: Fleet, tmp_path: Path) -> None:
    registry = json.loads(fleet.registry_path.read_text())
    registry["bad00001"] = {"id": "bad00001", "name": ["not", "text"],
                            "ports": {"kong_http": "many"}}
    registry["../evil"] = {"name": "x"}
    broken = tmp_path / "instances.json"
    broken.write_text(json.dumps(registry))
    raw = yaml.safe_load(fleet.config_path.read_text())
    raw["ultrabase"]["registry"] = str(broken)
    raw["ultrabase"]["core_dir"] = str(fleet.core_dir)
    config_path = tmp_path / "doctor.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    result = cli("instances", "--json", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    by_id = {i["id"]: i for i in listing["instances"]}
    for iid in fleet.ids:
        assert by_id[iid]["problems"] == []
        assert all(c["state"] == "running" for c in by_id[iid]["components"].values())
    bad_codes = {p["code"] for p in by_id["bad00001"]["problems"]}
    assert {"INSTANCE_RECORD_INVALID", "INSTANCE_FILES_MISSING"} <= bad_codes
    assert [p["code"] for p in listing["problems"]] == ["INSTANCE_RECORD_INVALID"]
    human = cli("instances", "--config", str(config_path))
    assert human.returncode == 0 and "bad00001" in human.stdout
    for record in registry.values():
        for secret in (record.get("credentials") or {}).values():
            if len(str(secret)) > 8:
                assert str(secret) not in result.stdout + human.stdout


def test_diagnose_cli_exit_codes(fleet: Fleet, tmp_path: Path) -> None:
    target = fleet.ids[0]
    raw = yaml.safe_load(fleet.config_path.read_text())
    raw["store"] = {"path": str(tmp_path / "store.sqlite3")}
    config = tmp_path / "doctor.yaml"
    config.write_text(yaml.safe_dump(raw))
    ok = cli("diagnose", target, "--json", "--config", str(config))
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    body = json.loads(ok.stdout)
    assert body["instance_id"] == target and body["healthy"] is True
    assert set(body["results"]) == {"container_status", "service_health",
                                    "database_connection", "api_endpoints", "auth_service",
                                    "disk_usage", "network_connectivity", "logs"}
    with fleet.broken(target, "stop:kong"):
        bad = cli("diagnose", target, "--no-cache", "--checks",
                  "container_status,api_endpoints", "--config", str(config))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.splitlines()[2].startswith("Root cause: CONTAINER_NOT_RUNNING [kong]")
    unknown = cli("diagnose", "zzzz9999", "--config", str(config))
    assert unknown.returncode == 2 and "unknown instance" in unknown.stderr
    usage = cli("diagnose", "--config", str(config))
    assert usage.returncode == 2
    bad_config = cli("diagnose", target, "--config", str(tmp_path / "missing.yaml"))
    assert bad_config.returncode == 2 and "cannot read config file" in bad_config.stderr
