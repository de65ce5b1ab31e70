"""The exporter's HTTP app over plain checks: access table on the real routes, 400s, /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.access import AccessControl
from exporter.config import parse_config
from exporter.engine import DiagnosticsEngine
from exporter.logs import LogAnalyzer
from exporter.metrics.render import MetricsRenderer
from exporter.store import InstanceInfo, Store
from exporter.web.app import create_app
from exporter.web.context import Services
from tests.unit.access_matrix import (
    ALPHA,
    BETA,
    MATRIX_OWNERS,
    Route,
    matrix_api,
    run_matrix,
    write_matrix_users,
)
from tests.unit.plaindocker import PlainDocker, containers_for
from tests.unit.test_engine import PlainCheck

ADMIN = "Bearer tok-admin-3f8e62aa"

ROUTES = [
    Route("GET", "/metrics", None),
    Route("GET", "/healthz", None),
    Route("GET", "/api/instances", "viewer"),
    Route("GET", "/api/instances/check-all-health", "admin"),
    Route("GET", "/api/instances/{instance_id}/run-diagnostics", "operator"),
    Route("POST", "/api/instances/{instance_id}/run-diagnostics", "operator"),
    Route("GET", "/api/instances/{instance_id}/last-diagnostic", "viewer"),
    Route("GET", "/api/instances/{instance_id}/diagnostic-logs", "viewer"),
    Route("GET", "/api/instances/{instance_id}/diagnostic-history", "viewer"),
    Route("GET", "/api/instances/{instance_id}/health-report", "viewer"),
    Route("GET", "/api/instances/{instance_id}/schedule", "viewer"),
    Route("PUT", "/api/instances/{instance_id}/schedule", "operator", body={"schedule": "6h"}),
    Route("GET", "/api/instances/{instance_id}/schedule/cron", "viewer"),
]


class World:
    """An app, its store and the plain Docker and checks behind it."""

    def __init__(self, tmp: Path, protect_metrics: bool = False,
                 sections: dict[str, Any] | None = None) -> None:
        users = tmp / "users.json"
        write_matrix_users(users)
        api = matrix_api(users, protect_metrics=protect_metrics)
        self.config = parse_config({
            "discovery": {"sources": ["static"], "static": [{"id": ALPHA}, {"id": BETA}]},
            "store": {"path": str(tmp / "store.sqlite3")}, **(sections or {}),
        }, environ={}).model_copy(update={"api": api})
        self.docker = PlainDocker(containers_for(ALPHA) + containers_for(BETA))
        self.store = Store(self.config.store.path)
        self.check = PlainCheck("container_status")
        self.engine = DiagnosticsEngine(self.config, self.docker, self.store,
                                        checks={"container_status": self.check})
        self.renderer = MetricsRenderer(self.store, config=self.config)
        svc = Services(config=self.config, engine=self.engine, store=self.store,
                       renderer=self.renderer, analyzer=LogAnalyzer(self.docker, timeout=1))
        access = AccessControl(api, users_file=users, owners=lambda: MATRIX_OWNERS)
        self.app = create_app(svc, access)
        self.store.set_instances([InstanceInfo(ALPHA, "Alpha", "dora"),
                                  InstanceInfo(BETA, "Beta", "admin")])
        self.engine.sweep("scheduled")

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.close()


@pytest.fixture
def client(world: World) -> FlaskClient:
    return world.app.test_client()


def test_every_role_route_and_scope(client: FlaskClient) -> None:
    assert run_matrix(client, ROUTES) == []


def test_metrics_protected_by_config(tmp_path: Path) -> None:
    world = World(tmp_path, protect_metrics=True)
    try:
        routes = [r for r in ROUTES if r.needed is None]
        assert run_matrix(world.app.test_client(), routes, protect_open=True) == []
    finally:
        world.close()


def test_rate_limit_answer_and_retry_after(client: FlaskClient, world: World) -> None:
    first = client.post(f"/api/instances/{ALPHA}/run-diagnostics",
                        headers={"Authorization": ADMIN})
    assert first.status_code == 200 and first.json["rate_limited"] is False
    calls = world.check.calls
    second = client.post(f"/api/instances/{ALPHA}/run-diagnostics",
                         headers={"Authorization": ADMIN})
    assert second.json["rate_limited"] is True
    assert 100 <= int(second.headers["Retry-After"]) <= 120
    assert world.check.calls == calls
    cached = client.get(f"/api/instances/{ALPHA}/run-diagnostics",
                        headers={"Authorization": ADMIN})
    assert cached.json["cached"] is True


@pytest.mark.parametrize("path", [
    f"/api/instances/{ALPHA}/diagnostic-history?limit=abc",
    f"/api/instances/{ALPHA}/diagnostic-history?limit=0",
    f"/api/instances/{ALPHA}/health-report?days=0",
    f"/api/instances/{ALPHA}/health-report?days=366",
    f"/api/instances/{ALPHA}/run-diagnostics?checks=nope",
    f"/api/instances/{ALPHA}/diagnostic-logs?range=99y",
    f"/api/instances/{ALPHA}/diagnostic-logs?level=loud",
    f"/api/instances/{ALPHA}/diagnostic-logs?services=auth,../../etc",
])
def test_bad_parameters_are_400(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers={"Authorization": ADMIN})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "bad_request"


@pytest.mark.parametrize("body", [
    {"schedule": "every tuesday"}, {"schedule": "0 * * *"}, {"schedule": "99 * * * *"},
    {"schedule": "6h", "extra": 1}, {"schedule": 6}, {"schedule": "6h", "enabled": "yes"},
    {"schedule": "6h\n* * * * * rm -rf /"},
])
def test_bad_schedule_is_400_and_changes_nothing(client: FlaskClient, world: World,
                                                 body: dict[str, object]) -> None:
    response = client.put(f"/api/instances/{ALPHA}/schedule", json=body,
                          headers={"Authorization": ADMIN})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert world.store.get_schedule(ALPHA) is None


def test_schedule_round_trip_and_cron_line(client: FlaskClient, world: World) -> None:
    put = client.put(f"/api/instances/{ALPHA}/schedule", json={"schedule": "15 3 * * *"},
                     headers={"Authorization": ADMIN})
    assert put.status_code == 200 and put.json["cron"] == "15 3 * * *"
    assert world.store.get_schedule(ALPHA).spec == "15 3 * * *"  # type: ignore[union-attr]
    line = client.get(f"/api/instances/{ALPHA}/schedule/cron",
                      headers={"Authorization": ADMIN}).json["line"]
    assert line.startswith("15 3 * * * curl ") and "http://127.0.0.1:9646/" in line
    assert "YOUR_TOKEN" in line
    cleared = client.put(f"/api/instances/{ALPHA}/schedule", json={"schedule": None},
                         headers={"Authorization": ADMIN})
    assert cleared.status_code == 200 and world.store.get_schedule(ALPHA) is None


def test_metrics_make_no_docker_http_or_db_call(client: FlaskClient, world: World,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_db(*args: object, **kwargs: object) -> None:
        raise AssertionError("/metrics touched the database")

    monkeypatch.setattr(psycopg, "connect", no_db)
    docker_calls, check_calls = world.docker.api_calls, world.check.calls
    response = client.get("/metrics")
    assert response.status_code == 200
    assert world.docker.api_calls == docker_calls and world.check.calls == check_calls
    names = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {"ultrabase_instance_healthy", "ultrabase_up"} <= names


def test_docker_down_reports_up_zero_and_last_values(client: FlaskClient,
                                                     world: World) -> None:
    world.store.set_meta("docker_ok", "0")
    text = client.get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["ultrabase_up"].samples[0].value == 0
    healthy = {s.labels["instance_id"] for s in families["ultrabase_instance_healthy"].samples}
    assert healthy == {ALPHA, BETA}


def test_errors_are_json(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and set(response.json) == {"error"}
    response = client.delete("/api/instances", headers={"Authorization": ADMIN})
    assert response.status_code == 405 and response.json["error"]["code"]


def test_405_keeps_its_allow_header(client: FlaskClient) -> None:
    response = client.delete("/metrics")
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
