"""The exposition's families, types and labels (DESIGN §6) and their values."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from bench.samples import COMPONENTS, KEY_EXPIRY, NOW, VOLUMES, diagnostic
from exporter import __version__
from exporter.config import Config, DiagnosticsConfig, ScheduleConfig
from exporter.issues import make_issue
from exporter.metrics import MetricsRenderer, UltrabaseCollector
from exporter.metrics.snapshot import MetricsSnapshot
from tests.unit.metrics.samples import MemorySource, fleet
from tests.unit.metrics.support import of_instance, parse, series, value

ID = "instance_id"
# name -> (type, labels); DESIGN §6, the public contract.
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "ultrabase_up": ("gauge", set()),
    "ultrabase_watch_up": ("gauge", {"watch"}),
    "ultrabase_build_info": ("gauge", {"version"}),
    "ultrabase_instance_info": ("gauge", {ID, "instance_name", "owner"}),
    "ultrabase_instance_healthy": ("gauge", {ID}),
    "ultrabase_check_success": ("gauge", {ID, "check"}),
    "ultrabase_check_duration_seconds": ("gauge", {ID, "check"}),
    "ultrabase_diagnostic_timestamp_seconds": ("gauge", {ID}),
    "ultrabase_component_up": ("gauge", {ID, "component"}),
    "ultrabase_container_state": ("gauge", {ID, "component", "state"}),
    "ultrabase_container_restarts": ("gauge", {ID, "component"}),
    "ultrabase_issue_active": ("gauge", {ID, "code", "severity", "component"}),
    "ultrabase_port_exposed": ("gauge", {ID, "component", "port", "container_port"}),
    "ultrabase_recent_event_timestamp_seconds": ("gauge", {ID, "code", "component"}),
    "ultrabase_endpoint_latency_seconds": ("gauge", {ID, "endpoint"}),
    "ultrabase_auth_user_create_success": ("gauge", {ID}),
    "ultrabase_jwt_expiry_timestamp_seconds": ("gauge", {ID, "role"}),
    "ultrabase_db_connections": ("gauge", {ID}),
    "ultrabase_db_max_connections": ("gauge", {ID}),
    "ultrabase_db_size_bytes": ("gauge", {ID}),
    "ultrabase_volume_size_bytes": ("gauge", {ID, "volume"}),
    "ultrabase_filesystem_avail_bytes": ("gauge", {ID}),
    "ultrabase_filesystem_size_bytes": ("gauge", {ID}),
    "ultrabase_log_lines": ("gauge", {ID, "component", "level"}),
    "ultrabase_diagnostic_runs": ("counter", {"trigger", "result"}),
    "ultrabase_operations": ("counter", {"operation", "result"}),
    "ultrabase_sweep_duration_seconds": ("gauge", set()),
    # Added with the security review (M6): not in DESIGN §6, an addition to the contract.
    "ultrabase_auto_repair_budget_exhausted": ("gauge", {ID}),
}


def render(source: MemorySource, config: Config | None = None) -> bytes:
    return MetricsRenderer(source, config=config).render()


def test_every_family_has_exactly_the_contract_type_and_labels() -> None:
    families = parse(render(fleet()))
    assert set(families) == set(CONTRACT)
    for name, (kind, labels) in CONTRACT.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no series"
        for sample in family.samples:
            assert set(sample.labels) == labels, name
            assert sample.name == (f"{name}_total" if kind == "counter" else name)


def test_no_label_is_named_instance_service_or_job() -> None:
    for family in parse(render(fleet())).values():
        for sample in family.samples:
            assert not {"instance", "service", "job"} & set(sample.labels), family.name


def test_every_family_is_present_with_an_empty_store() -> None:
    output = render(MemorySource())
    assert set(parse(output)) == set(CONTRACT)
    assert series(output, "ultrabase_watch_up") == {}  # no watch has said anything yet
    assert value(output, "ultrabase_up") == 1.0  # before the first sweep: unknown, so up
    assert value(output, "ultrabase_build_info", version=__version__) == 1.0
    assert series(output, "ultrabase_instance_healthy") == {}


def test_a_broken_instance_shows_unhealthy_with_its_issues() -> None:
    output = render(fleet(3, broken=["inst-001"]))
    assert value(output, "ultrabase_instance_healthy", instance_id="inst-001") == 0.0
    assert value(output, "ultrabase_instance_healthy", instance_id="inst-000") == 1.0
    issues = of_instance(series(output, "ultrabase_issue_active"), "inst-001")
    found = {(dict(k)["code"], dict(k)["component"], dict(k)["severity"]) for k in issues}
    assert found == {("CONTAINER_NOT_RUNNING", "auth", "critical"),
                     ("AUTH_USER_CREATE_FAILED", "auth", "critical"),
                     ("DB_ROLE_PASSWORD_MISMATCH", "auth", "critical"),  # two checks, one series
                     ("DISK_SPACE_LOW", "", "warning")}
    assert set(issues.values()) == {1.0}
    assert of_instance(series(output, "ultrabase_issue_active"), "inst-000") == {}
    assert value(output, "ultrabase_check_success", instance_id="inst-001",
                 check="container_status") == 0.0
    assert value(output, "ultrabase_check_success", instance_id="inst-001",
                 check="api_endpoints") == 1.0
    assert value(output, "ultrabase_component_up", instance_id="inst-001",
                 component="auth") == 0.0
    assert value(output, "ultrabase_component_up", instance_id="inst-001", component="db") == 1.0
    assert value(output, "ultrabase_auth_user_create_success", instance_id="inst-001") == 0.0
    assert value(output, "ultrabase_auth_user_create_success", instance_id="inst-000") == 1.0


def test_container_state_is_a_state_set() -> None:
    output = render(fleet(2, broken=["inst-001"]))
    states = of_instance(series(output, "ultrabase_container_state"), "inst-001")
    assert len(states) == len(COMPONENTS) * 8
    auth = {dict(k)["state"]: v for k, v in states.items() if ("component", "auth") in k}
    assert auth == {"created": 0, "running": 0, "paused": 0, "restarting": 0, "removing": 0,
                    "exited": 1, "dead": 0, "missing": 0}
    assert value(output, "ultrabase_container_state", instance_id="inst-001",
                 component="db", state="running") == 1.0


def test_an_unknown_container_state_is_shown_not_lost() -> None:
    odd = {"container_status": {"components": {"db": {"state": "hibernating",
                                                       "restarts": None}}}}
    output = render(MemorySource([diagnostic("a", results=odd)]))
    states = series(output, "ultrabase_container_state")
    assert len(states) == 9
    assert value(output, "ultrabase_container_state", instance_id="a", component="db",
                 state="hibernating") == 1.0


def test_values_come_from_the_details() -> None:
    output = render(fleet(2))
    one = {"instance_id": "inst-000"}
    assert value(output, "ultrabase_db_connections", **one) == 17
    assert value(output, "ultrabase_db_max_connections", **one) == 100
    assert value(output, "ultrabase_db_size_bytes", **one) == 48_123_456
    assert value(output, "ultrabase_filesystem_avail_bytes", **one) == 80_000_000_000
    assert value(output, "ultrabase_filesystem_size_bytes", **one) == 200_000_000_000
    assert {dict(k)["volume"] for k in of_instance(
        series(output, "ultrabase_volume_size_bytes"), "inst-000")} == set(VOLUMES)
    assert value(output, "ultrabase_jwt_expiry_timestamp_seconds", role="anon",
                 **one) == int(KEY_EXPIRY.timestamp())
    assert value(output, "ultrabase_jwt_expiry_timestamp_seconds", role="service_role",
                 **one) == int(KEY_EXPIRY.timestamp())
    assert value(output, "ultrabase_endpoint_latency_seconds", endpoint="auth", **one) == 0.012
    assert value(output, "ultrabase_log_lines", component="db", level="info", **one) == 40
    assert value(output, "ultrabase_check_duration_seconds", check="container_status",
                 **one) == pytest.approx(0.1)
    assert value(output, "ultrabase_diagnostic_timestamp_seconds", **one) == NOW.timestamp()
    # Restarts are known only for inspected containers (odd components in the sample).
    restarts = of_instance(series(output, "ultrabase_container_restarts"), "inst-000")
    assert {dict(k)["component"] for k in restarts} == set(COMPONENTS[1::2])


def test_store_wide_values() -> None:
    output = render(fleet(2))
    assert value(output, "ultrabase_instance_info", instance_id="inst-000",
                 instance_name="Project inst-000", owner="owner0") == 1.0
    assert value(output, "ultrabase_instance_info", instance_id="inst-001",
                 instance_name="Project inst-001", owner="") == 1.0
    assert value(output, "ultrabase_diagnostic_runs", trigger="scheduled",
                 result="healthy") == 10
    assert value(output, "ultrabase_operations", operation="safe_restart",
                 result="success") == 1
    assert value(output, "ultrabase_sweep_duration_seconds") == 3.25
    assert value(output, "ultrabase_up") == 1.0


def test_up_is_0_when_the_last_sweep_could_not_reach_docker() -> None:
    source = fleet(1)
    source.meta = {"docker_ok": "0"}
    output = render(source)
    assert value(output, "ultrabase_up") == 0.0
    assert series(output, "ultrabase_sweep_duration_seconds") == {}


def test_watch_up_per_part_and_absent_when_off() -> None:
    source = fleet(1)
    assert value(render(source), "ultrabase_watch_up", watch="events") == 1.0
    assert value(render(source), "ultrabase_watch_up", watch="probe") == 1.0
    # events down; the probe switched off (the service clears its key to "")
    source.meta = {"docker_ok": "1", "watch_events_up": "0", "watch_probe_up": ""}
    output = render(source)
    assert series(output, "ultrabase_watch_up") == {(("watch", "events"),): 0.0}
    source.meta = {"watch_events_up": "garbage"}
    assert series(render(source), "ultrabase_watch_up") == {}


def test_missing_details_omit_series_without_error() -> None:
    bare = replace(diagnostic("bare"), results={}, recent_events=(), user_test=None)
    skipped = replace(diagnostic("skipped", results={name: {} for name in (
        "container_status", "service_health", "database_connection", "api_endpoints",
        "auth_service", "disk_usage", "logs")}), recent_events=())
    output = render(MemorySource([bare, skipped, diagnostic("full")]))
    assert set(parse(output)) == set(CONTRACT)
    for name in CONTRACT:
        if name in ("ultrabase_instance_healthy", "ultrabase_diagnostic_timestamp_seconds",
                    "ultrabase_check_success", "ultrabase_check_duration_seconds"):
            continue
        found = series(output, name)
        assert of_instance(found, "bare") == {}, name
        assert of_instance(found, "skipped") == {}, name
    assert value(output, "ultrabase_instance_healthy", instance_id="bare") == 1.0
    assert of_instance(series(output, "ultrabase_check_success"), "bare") == {}
    assert value(output, "ultrabase_db_connections", instance_id="full") == 17


def test_recent_events_are_a_timestamp_never_an_active_issue() -> None:
    healed = diagnostic("healed")
    assert healed.healthy and healed.recent_events
    output = render(MemorySource([healed]))
    event = healed.recent_events[0]
    stamp = value(output, "ultrabase_recent_event_timestamp_seconds", instance_id="healed",
                  code=event.code, component="db")
    assert stamp == datetime.fromisoformat(event.last_seen or "").timestamp()
    assert of_instance(series(output, "ultrabase_issue_active"), "healed") == {}
    assert value(output, "ultrabase_instance_healthy", instance_id="healed") == 1.0


MALFORMED: dict[str, dict[str, Any]] = {
    "container_status": {"components": {"db": "running", "auth": {"state": None,
                                                                  "restarts": "many"}}},
    "service_health": {"components": ["db"]},
    "database_connection": {"connections": None, "max_connections": "100",
                            "size_bytes": True},
    "api_endpoints": {"endpoints": {"auth": {"latency_seconds": None},
                                    "rest": {"latency_seconds": float("nan")}}},
    "auth_service": {"keys": {"anon": {"present": False}, "service_role": {"exp": "soon"}},
                     "synthetic_user": {"ran": False, "created": False}},
    "disk_usage": {"filesystem": None, "volumes": {"db": {"exists": False,
                                                          "size_bytes": None}}},
    "logs": {"log_lines": {"db": {"error": "lots"}, "auth": 3}},
}


def test_malformed_or_null_details_omit_series_without_error() -> None:
    output = render(MemorySource([diagnostic("odd", results=MALFORMED)]))
    assert set(parse(output)) == set(CONTRACT)
    for name in ("ultrabase_component_up", "ultrabase_container_state",
                 "ultrabase_container_restarts", "ultrabase_endpoint_latency_seconds",
                 "ultrabase_auth_user_create_success", "ultrabase_jwt_expiry_timestamp_seconds",
                 "ultrabase_db_connections", "ultrabase_db_max_connections",
                 "ultrabase_db_size_bytes", "ultrabase_volume_size_bytes",
                 "ultrabase_filesystem_avail_bytes", "ultrabase_filesystem_size_bytes",
                 "ultrabase_log_lines"):
        assert series(output, name) == {}, name
    assert value(output, "ultrabase_instance_healthy", instance_id="odd") == 1.0


def test_two_diagnostics_of_one_instance_give_one_series_set_the_newer() -> None:
    older = diagnostic("a", broken=True, at=NOW.replace(hour=1))
    output = render(MemorySource([diagnostic("a"), older]))
    assert series(output, "ultrabase_instance_healthy") == {(("instance_id", "a"),): 1.0}


def test_help_says_where_values_come_from_and_how_often_they_refresh() -> None:
    config = Config(schedule=ScheduleConfig(sweep_interval_seconds=120),
                    diagnostics=DiagnosticsConfig(cache_ttl_seconds=60))
    families = parse(render(fleet(1), config))
    text = families["ultrabase_instance_healthy"].documentation
    assert "latest cached diagnostic" in text
    assert "every 120 s" in text and "fresh for 60 s" in text
    assert "ultrabase_diagnostic_timestamp_seconds" in text
    off = parse(render(fleet(1), Config(schedule=ScheduleConfig(enabled=False))))
    assert "on demand only" in off["ultrabase_component_up"].documentation


def test_a_failing_group_leaves_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.metrics import collector

    def broken(snapshot: MetricsSnapshot, refresh: object) -> list[Any]:
        raise RuntimeError("bug")

    monkeypatch.setattr(collector, "GROUPS", (collector.Group(broken, per_instance=False),
                                              *collector.GROUPS[1:]))
    families = {m.name for m in UltrabaseCollector(fleet(1)).collect()}
    assert "ultrabase_up" not in families
    assert "ultrabase_instance_healthy" in families
    rendered = parse(render(fleet(1)))
    assert "ultrabase_up" not in rendered
    assert value(render(fleet(1)), "ultrabase_instance_healthy", instance_id="inst-000") == 1.0


def test_a_group_failing_on_one_instance_leaves_that_instance_out_of_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.metrics import collector, disk

    def fragile(snapshot: MetricsSnapshot, refresh: Any) -> list[Any]:
        if any(d.instance_id == "inst-001" for d in snapshot.diagnostics):
            raise RuntimeError("bug")
        return disk.families(snapshot, refresh)

    monkeypatch.setattr(collector, "GROUPS", tuple(
        collector.Group(fragile, per_instance=True) if g.build is disk.families else g
        for g in collector.GROUPS))
    output = MetricsRenderer(fleet(3)).render()
    volumes = series(output, "ultrabase_volume_size_bytes")
    assert of_instance(volumes, "inst-001") == {}
    assert of_instance(volumes, "inst-000") and of_instance(volumes, "inst-002")
    assert value(output, "ultrabase_instance_healthy", instance_id="inst-001") == 0.0


def test_each_exposed_port_is_a_series() -> None:
    exposed = make_issue("PORT_EXPOSED", check="network_connectivity", component="kong",
                         message="kong is published on every interface",
                         evidence={"ports": [{"host_port": 8165, "container_port": 8000},
                                             {"host_port": 8450, "container_port": 8443}]})
    base = diagnostic("exposed")
    output = render(MemorySource([replace(base, issues=(*base.issues, exposed))]))
    found = of_instance(series(output, "ultrabase_port_exposed"), "exposed")
    assert {(dict(k)["component"], dict(k)["port"], dict(k)["container_port"])
            for k in found} == {("kong", "8165", "8000"), ("kong", "8450", "8443")}
