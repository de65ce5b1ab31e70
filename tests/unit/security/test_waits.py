"""M4 of the security review: `?wait=true` requests holding every worker thread.

The attack: with a safe restart running, 8 viewer requests `GET /api/operations/<id>?
wait=true&timeout=3600` took all 8 waitress threads; /healthz, Prometheus' scrape of
/metrics and Alertmanager's webhook got no answer. Now at most actions.max_waits (4)
requests wait at once, at most max_waits_per_caller (2) per caller; any other answers at
once with the operation as it stands. On a real waitress server, with every wait slot held,
the three routes that must always answer do so within 1 s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from actions.app import create_app
from actions.blueprints.common import WAIT_SLOTS_EXTENSION, WaitSlots
from exporter.access import AccessControl
from tests.unit.access_matrix import ALPHA, BETA, MATRIX_OWNERS
from tests.unit.actions.test_api import ADMIN, OPERATOR, VIEWER, World, webhook
from tests.unit.served import Served


@pytest.fixture
def served_world(tmp_path: Path) -> Iterator[tuple[Served, World]]:
    world = World(tmp_path)
    served = Served(world.app)
    yield served, world
    served.close()
    world.close()


def _poll(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.02)


def test_waits_cannot_take_every_thread(served_world: tuple[Served, World]) -> None:
    served, world = served_world
    world.plain.hold("safe_restart")
    base = served.url()
    started = httpx.post(f"{base}/api/instances/{ALPHA}/safe-restart", json={},
                         headers=OPERATOR)
    assert started.status_code == 202
    op_id = started.json()["id"]
    slots: WaitSlots = world.app.extensions[WAIT_SLOTS_EXTENSION]
    wait_url = f"{base}/api/operations/{op_id}?wait=true&timeout=3600"
    with ThreadPoolExecutor(16) as pool, httpx.Client(timeout=30) as http:
        # The review's attack, twice over: 8 viewers' and 8 operators' waits at once.
        waits: list[Future[httpx.Response]] = [
            pool.submit(http.get, wait_url, headers=headers)
            for headers in [VIEWER] * 8 + [OPERATOR] * 8]
        _poll(lambda: slots.held() == 4 and sum(f.done() for f in waits) == 12)
        answered = [f for f in waits if f.done()]
        at_once = [f.result() for f in answered]
        assert {r.status_code for r in at_once} == {200}
        assert all(r.json()["status"] == "running" for r in at_once)
        # Every slot is held now; a third caller waits no more than the others.
        assert http.get(wait_url, headers=ADMIN).json()["status"] == "running"
        assert slots.held() == 4

        for method, path, headers, body in (
                ("GET", "/healthz", {}, None),
                ("GET", "/metrics", {}, None),
                ("POST", "/api/alerts", OPERATOR,
                 webhook({"status": "firing", "labels": {
                     "alertname": "AuthDown", "auto_repair": "true", "instance_id": BETA}}))):
            began = time.monotonic()
            answer = http.request(method, f"{base}{path}", headers=headers, json=body,
                                  timeout=1.0)
            took = time.monotonic() - began
            assert answer.status_code == 200, (path, answer.text)
            assert took < 1.0, (path, took)

        world.plain.release()
        finished = [f.result() for f in waits if f not in answered]
        assert len(finished) == 4
        assert all(r.json()["status"] == "succeeded" for r in finished)
    assert slots.held() == 0


def test_slots_count_per_caller_and_in_total() -> None:
    slots = WaitSlots(total=3, per_caller=2)
    with slots.hold("a") as first, slots.hold("a") as second, slots.hold("a") as third:
        assert (first, second, third) == (True, True, False)
        with slots.hold("b") as other, slots.hold("c") as over:
            assert (other, over) == (True, False)
            assert slots.held() == 3
    assert slots.held() == 0
    with slots.hold("c") as again:
        assert again


def test_no_wait_slots_means_no_waiting(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        config = world.config.model_copy(update={"actions": world.config.actions.model_copy(
            update={"max_waits": 0})})
        services = dataclasses.replace(world.services, config=config)
        app = create_app(services, AccessControl(config.api, users_file=tmp_path / "users.json",
                                                 owners=lambda: MATRIX_OWNERS))
        world.plain.hold("safe_restart")
        began = time.monotonic()
        answer = app.test_client().post(f"/api/instances/{ALPHA}/safe-restart?wait=true"
                                        "&timeout=60", json={}, headers=OPERATOR)
        assert answer.status_code == 202 and time.monotonic() - began < 5
    finally:
        world.close()
