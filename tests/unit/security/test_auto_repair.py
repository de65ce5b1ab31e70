"""M6, L6, L7 and L11 of the security review: the Alertmanager webhook and its budget.

The attacks: (M6) an operator token scoped to `beta` posted 1000 webhooks naming `alpha`;
each refusal was audited under `alpha` and pushed the repairs that counted out of the
budget's 1000-row scan, so alpha's budget was reset. (L6) webhooks and dry-run repairs
each ran a full diagnostic, outside the per-instance rate limit. (L7) one webhook of 1000
bogus instance ids wrote 1000 audit rows. (L11) the webhook's token was a fleet-wide
operator that could also restart, edit config and restore backups.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from actions.store import ActionStore
from exporter.store import AUTO_REPAIR_WINDOW_SECONDS
from tests.unit.access_matrix import ALPHA, BETA
from tests.unit.actions.test_api import (
    ADMIN,
    BACKUP_ID,
    OPERATOR,
    OPERATOR_BETA,
    World,
    alert,
    repair_action,
    webhook,
)

WEBHOOK = {"Authorization": "Bearer tok-webhook-2c4e"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path, budget=3)
    made.plain.plan = [repair_action("start_container")]
    yield made
    made.close()


def _post(client: FlaskClient, headers: dict[str, str], *alerts: dict[str, Any]) -> Any:
    answer = client.post("/api/alerts", json=webhook(*alerts), headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.json["results"]


def _start_and_finish(world: World, client: FlaskClient, headers: dict[str, str]) -> str:
    [result] = _post(client, headers, alert(ALPHA))
    if result["outcome"] == "started":
        assert world.runner.wait(result["operation_id"], 10).finished
    return str(result["outcome"] if result["outcome"] == "started" else result["reason"])


def _runs(world: World) -> int:
    return sum(n for (trigger, _), n in world.store.run_counts().items()
               if trigger == "operation")


def test_out_of_scope_floods_cannot_reset_the_budget(world: World) -> None:
    client = world.app.test_client()
    assert [_start_and_finish(world, client, OPERATOR) for _ in range(4)] == \
        ["started", "started", "started", "over_budget"]
    # The review's flood: a token scoped to beta names alpha, again and again.
    for i in range(1001):
        [refused] = _post(client, OPERATOR_BETA, alert(ALPHA, name=f"F{i}"))
        assert refused["reason"] == "unknown_instance"
    assert world.store.auto_repairs_used()[ALPHA].used == 3
    assert _start_and_finish(world, client, OPERATOR) == "over_budget"
    # alpha's audit trail holds only what could act on it.
    mine = world.store.audit(5000, instance_id=ALPHA, action="auto_repair")
    assert {e.who for e in mine} == {"operator"}
    assert [c[0] for c in world.plain.calls] == ["repair"] * 3


def test_refusals_spend_nothing(world: World) -> None:
    client = world.app.test_client()
    world.plain.plan = []
    for _ in range(5):
        assert _post(client, WEBHOOK, alert(ALPHA))[0]["reason"] == "nothing_to_repair"
    world.plain.plan = [repair_action("start_container")]
    world.plain.hold("safe_restart")
    running = client.post(f"/api/instances/{ALPHA}/safe-restart", json={}, headers=ADMIN)
    for _ in range(5):
        assert _post(client, WEBHOOK, alert(ALPHA))[0]["reason"] == "operation_running"
    world.plain.release()
    assert world.runner.wait(running.json["id"], 10).finished
    assert world.store.auto_repairs_used() == {}
    assert [_start_and_finish(world, client, WEBHOOK) for _ in range(4)] == \
        ["started", "started", "started", "over_budget"]


def _reserve(path: str, tries: int, start: Any, out: Any) -> None:
    store = ActionStore(Path(path))
    start.wait()
    won = sum(store.reserve_auto_repair(ALPHA, 3) is not None for _ in range(tries))
    store.close()
    out.put(won)


def test_the_budget_holds_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    ActionStore(path).close()
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    workers = [context.Process(target=_reserve, args=(str(path), 5, start, out))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    start.set()
    won = [out.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert sum(won) == 3
    with ActionStore(path) as store:
        assert store.auto_repairs_used()[ALPHA].used == 3


def _budget_series(client: FlaskClient) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {s.labels["instance_id"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "ultrabase_auto_repair_budget_exhausted"}


def test_an_exhausted_budget_shows_on_metrics_until_it_frees(world: World) -> None:
    client = world.app.test_client()
    assert _budget_series(client) == {}
    assert _start_and_finish(world, client, WEBHOOK) == "started"
    assert _budget_series(client) == {ALPHA: 0.0}
    for _ in range(2):
        assert _start_and_finish(world, client, WEBHOOK) == "started"
    assert _budget_series(client) == {ALPHA: 1.0}
    # Move alpha's repairs to the edge of the hour: the metric must clear by itself, with
    # no write to the store, when the oldest leaves the window.
    edge = time.time() - AUTO_REPAIR_WINDOW_SECONDS + 0.5
    with sqlite3.connect(world.store.path) as conn:
        conn.execute("UPDATE auto_repairs SET at = ? WHERE instance_id = ?", (edge, ALPHA))
        conn.execute("UPDATE generation SET value = value + 1")
    assert _budget_series(client)[ALPHA] == 1.0
    deadline = time.monotonic() + 5
    while _budget_series(client).get(ALPHA) == 1.0:
        assert time.monotonic() < deadline, "the exhausted budget never cleared"
        time.sleep(0.1)
    assert _start_and_finish(world, client, WEBHOOK) == "started"


def test_webhooks_and_dry_runs_share_the_rate_limit(world: World) -> None:
    client = world.app.test_client()
    world.plain.plan = []
    before = _runs(world)
    for _ in range(20):
        assert _post(client, WEBHOOK, alert(ALPHA))[0]["reason"] == "nothing_to_repair"
    for _ in range(20):
        dry = client.post(f"/api/instances/{ALPHA}/repair", json={"dry_run": True},
                          headers=OPERATOR)
        assert dry.status_code == 200 and dry.json["dry_run"] is True
    # One full diagnostic for the 40 requests; the rest reused it.
    assert _runs(world) - before == 1
    assert dry.json["rate_limited"] is True
    # run-diagnostics shares the window too: the exporter's rate limit is one per instance.
    outcome = world.engine.run(ALPHA, use_cache=False)
    assert outcome.rate_limited


def test_concurrent_dry_runs_share_one_diagnostic(world: World) -> None:
    world.check.delay = 0.5
    before = _runs(world)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: world.app.test_client().post(
            f"/api/instances/{BETA}/repair", json={"dry_run": True}, headers=OPERATOR),
            range(6)))
    assert {a.status_code for a in answers} == {200}
    assert _runs(world) - before == 1


def test_one_webhook_writes_a_bounded_audit(world: World) -> None:
    client = world.app.test_client()
    bogus = [alert(f"bogus-{i:04d}") for i in range(1000)]
    results = _post(client, WEBHOOK, *bogus)
    assert len(results) == 1000
    assert {r["reason"] for r in results} == {"unknown_instance", "too_many_instances"}
    assert len(world.store.audit(5000)) <= 101
    names = [alert(ALPHA, name=f"N{i:03d}" + "x" * 90) for i in range(1000)]
    world.plain.plan = []
    [one] = _post(client, WEBHOOK, *names)
    assert len(one["alerts"]) == 11 and one["alerts"][-1] == "and 990 more"
    [entry] = world.store.audit(1, instance_id=ALPHA, action="auto_repair")
    assert len(str(entry.inputs)) < 2000


def test_the_webhook_role_can_do_nothing_else(world: World) -> None:
    client = world.app.test_client()
    for method, path, body in (
            ("POST", f"/api/instances/{ALPHA}/safe-restart", {}),
            ("POST", f"/api/instances/{ALPHA}/restart-service", {"component": "auth"}),
            ("POST", f"/api/instances/{ALPHA}/repair", {"confirm": True}),
            ("PUT", f"/api/instances/{ALPHA}/config", {"changes": {"name": "Mine now"}}),
            ("GET", f"/api/instances/{ALPHA}/config", None),
            ("POST", f"/api/instances/{ALPHA}/backups/{BACKUP_ID}/restore", {}),
            ("GET", f"/api/instances/{ALPHA}/backups", None),
            ("GET", "/api/audit", None)):
        answer = client.open(path, method=method, json=body, headers=WEBHOOK)
        assert answer.status_code == 403, (method, path)
    assert world.plain.calls == [] and world.operations() == 0
    # What it is for still works.
    assert _post(client, WEBHOOK, alert(ALPHA))[0]["outcome"] == "started"
