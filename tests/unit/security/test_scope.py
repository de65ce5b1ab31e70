"""M2 and L5 of the security review: a token narrowed to some instances, on fleet-wide routes.

The attack: an admin token scoped to `beta` read the audit entries about `alpha`, ran and
read check-all-health for every instance, and any scoped viewer read every instance's
series on a protected /metrics. Now out-of-scope results are left out (never refused, so
the answer does not tell they exist) and nothing is run on them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.access_matrix import ALPHA, BETA, CALLERS, Caller
from tests.unit.actions.test_api import ADMIN, OPERATOR_BETA
from tests.unit.actions.test_api import World as ActionWorld
from tests.unit.actions.test_console import form_token, signed_in, wait_finished
from tests.unit.test_exporter_app import World as ExporterWorld

ADMIN_BETA = {"Authorization": "Bearer tok-admin-beta-51aa"}


@pytest.fixture
def actions(tmp_path: Path) -> Iterator[ActionWorld]:
    made = ActionWorld(tmp_path, protect=True)
    yield made
    made.close()


def _instances_named(text: str) -> set[str]:
    return {sample.labels["instance_id"] for family in text_string_to_metric_families(text)
            for sample in family.samples if "instance_id" in sample.labels}


def test_a_scoped_admin_reads_only_its_instances_audit(actions: ActionWorld) -> None:
    client = actions.app.test_client()
    for instance in (ALPHA, BETA):
        started = client.post(f"/api/instances/{instance}/backups", headers=ADMIN, json={})
        assert started.status_code == 202
    assert actions.runner.join(10)
    everything = client.get("/api/audit", headers=ADMIN).json
    assert {e["instance_id"] for e in everything["entries"]} == {ALPHA, BETA}

    mine = client.get("/api/audit", headers=ADMIN_BETA)
    assert mine.status_code == 200
    assert {e["instance_id"] for e in mine.json["entries"]} == {BETA}
    # Asking for alpha by name is answered like an instance without entries, not refused.
    asked = client.get(f"/api/audit?instance_id={ALPHA}", headers=ADMIN_BETA)
    assert asked.status_code == 200 and asked.json == {"count": 0, "entries": []}
    assert ALPHA not in mine.get_data(as_text=True)
    # Paging cannot reach past the scope either.
    for offset in range(0, 5):
        page = client.get(f"/api/audit?limit=1&offset={offset}", headers=ADMIN_BETA).json
        assert all(e["instance_id"] == BETA for e in page["entries"])


def test_a_scoped_admin_sees_its_own_entries_about_no_instance(actions: ActionWorld) -> None:
    client = actions.app.test_client()
    empty = {"version": "4", "status": "firing", "receiver": "r", "alerts": []}
    assert client.post("/api/alerts", headers=ADMIN, json=empty).status_code == 200
    assert client.post("/api/alerts", headers=ADMIN_BETA, json=empty).status_code == 200
    whos = {e["who"] for e in client.get("/api/audit", headers=ADMIN_BETA).json["entries"]}
    assert whos == {"admin-beta"}


def test_check_all_health_runs_and_shows_only_the_scope(tmp_path: Path) -> None:
    # A tiny cache lifetime, so check-all-health would run every instance it covers.
    world = ExporterWorld(tmp_path, sections={"diagnostics": {"cache_ttl_seconds": 0.001}})
    try:
        # The request can follow the set-up's sweep within that millisecond: wait it out.
        while any(d is None or d.age_seconds() <= 0.001
                  for d in (world.store.latest(ALPHA), world.store.latest(BETA))):
            time.sleep(0.001)
        seen_before = [c.instance.id for c in world.check.contexts]
        answer = world.app.test_client().get("/api/instances/check-all-health",
                                             headers=ADMIN_BETA)
        assert answer.status_code == 200
        assert [r["instance_id"] for r in answer.json["results"]] == [BETA]
        assert answer.json["total_instances"] == 1
        assert ALPHA not in answer.get_data(as_text=True)
        ran = [c.instance.id for c in world.check.contexts][len(seen_before):]
        assert ran == [BETA], answer.json
        # The unscoped admin still gets the whole fleet.
        full = world.app.test_client().get("/api/instances/check-all-health",
                                           headers={"Authorization": "Bearer tok-admin-3f8e62aa"})
        assert sorted(r["instance_id"] for r in full.json["results"]) == [ALPHA, BETA]
    finally:
        world.close()


@pytest.mark.parametrize("app", ["exporter", "actions"])
def test_protected_metrics_show_a_scoped_caller_only_its_series(app: str, tmp_path: Path,
                                                                actions: ActionWorld) -> None:
    (tmp_path / "exporter").mkdir()
    exporter = ExporterWorld(tmp_path / "exporter", protect_metrics=True) \
        if app == "exporter" else None
    try:
        client = (exporter.app if exporter else actions.app).test_client()
        full = client.get("/metrics", headers=ADMIN).get_data(as_text=True)
        assert _instances_named(full) == {ALPHA, BETA}
        for headers in (ADMIN_BETA, OPERATOR_BETA):
            narrowed = client.get("/metrics", headers=headers)
            assert narrowed.status_code == 200
            text = narrowed.get_data(as_text=True)
            assert _instances_named(text) == {BETA}
            assert f'"{ALPHA}"' not in text and '"Alpha"' not in text
            # The families themselves stay, so dashboards and rules see no gap in schema.
            assert "# TYPE ultrabase_instance_info gauge" in text
            assert "ultrabase_up " in text
    finally:
        if exporter:
            exporter.close()


def test_open_metrics_stay_the_fleet_view(tmp_path: Path) -> None:
    # api.protect_metrics false: anonymous, documented as the whole fleet.
    world = ExporterWorld(tmp_path)
    try:
        text = world.app.test_client().get("/metrics").get_data(as_text=True)
        assert _instances_named(text) == {ALPHA, BETA}
    finally:
        world.close()


# Signed in to the console with a narrowed credential: each scoped token and the manager
# user who owns only alpha.
SCOPED = [c for c in CALLERS if c.role is not None and c.instances is not None]


@pytest.mark.parametrize("caller", SCOPED, ids=[c.name for c in SCOPED])
def test_the_consoles_fleet_views_leave_other_instances_out(caller: Caller,
                                                            actions: ActionWorld) -> None:
    admin = signed_in(actions, ADMIN)
    ops = {}
    for instance in (ALPHA, BETA):
        started = admin.post(f"/instances/{instance}/backups",
                             data={"csrf_token": form_token(admin, "/")})
        assert started.status_code == 303
        ops[instance] = started.headers["Location"]
        assert wait_finished(admin, ops[instance]) == "succeeded"
    everything = admin.get("/").get_data(as_text=True)
    assert f'data-instance="{ALPHA}"' in everything and f'data-instance="{BETA}"' in everything

    assert caller.instances is not None and caller.authorization is not None
    mine, = caller.instances
    foreign = BETA if mine == ALPHA else ALPHA
    client = signed_in(actions, {"Authorization": caller.authorization})
    named = re.compile(rf"\b{foreign}\b", re.IGNORECASE)
    # The fleet, its auto-refreshed cards and every filter: counts, owners and cards hold
    # only the caller's instance; the other is not even counted.
    for path in ("/", "/?partial=cards", "/?status=healthy", "/?status=unhealthy",
                 "/?status=unknown", "/?owner=dora", "/?owner=admin"):
        page = client.get(path)
        assert page.status_code == 200, path
        text = page.get_data(as_text=True)
        assert not named.search(text), (path, text[:500])
        if "partial" not in path:
            assert "1 instances" in text, path
    assert f'data-instance="{mine}"' in client.get("/").get_data(as_text=True)
    # The other instance's pages and operations read as those of an unknown id.
    assert client.get(ops[foreign]).status_code == 404
    assert client.get(ops[mine]).status_code == 200
    for page_path in ("", "/history", "/backups", "/audit"):
        hidden = client.get(f"/instances/{foreign}{page_path}")
        unknown = client.get(f"/instances/ghost{page_path}")
        assert hidden.status_code == unknown.status_code != 200, page_path
        # Word for word the same page, but for the id the request itself named.
        assert hidden.get_data(as_text=True).replace(foreign, "ID") == \
            unknown.get_data(as_text=True).replace("ghost", "ID"), page_path
