"""The instance topology: built from the fleet's own compose file and kong.yml, plain data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter.discovery.model import InstanceFiles
from exporter.discovery.topology import (
    build,
    hosts_named,
    levels,
    order,
    template,
    topology_of,
)
from tests.unit.checks.plainhost import make_instance

TEMPLATES = Path(__file__).resolve().parents[2] / "fleet" / "templates"


@pytest.fixture
def deployed(tmp_path: Path) -> InstanceFiles:
    """The fleet's template as a manager renders it: compose file and volumes/api/kong.yml."""
    compose = tmp_path / "docker-compose.yml"
    shutil.copy(TEMPLATES / "docker-compose.yml", compose)
    kong = tmp_path / "volumes" / "api" / "kong.yml"
    kong.parent.mkdir(parents=True)
    shutil.copy(TEMPLATES / "kong.yml", kong)
    return InstanceFiles(compose_file=compose, kong_file=kong, root=tmp_path)


def test_links_come_from_depends_on_environment_and_kong_routes(
        deployed: InstanceFiles) -> None:
    topology = topology_of(make_instance(files=deployed))
    # kong.yml's upstreams: the gateway needs every service it routes to.
    assert {"auth", "rest", "storage", "meta", "functions", "analytics", "studio"} <= \
        set(topology.needs("kong", runtime=True))
    route = topology.link("kong", "auth")
    assert route is not None and "route" in route.kinds
    # DSNs and URLs in the environment.
    for user in ("auth", "rest", "storage", "realtime", "meta", "analytics", "supavisor"):
        assert "db" in topology.needs(user, runtime=True), user
    assert {"rest", "imgproxy"} <= set(topology.needs("storage", runtime=True))
    assert {"meta", "kong", "analytics"} <= set(topology.needs("studio", runtime=True))
    # depends_on with its condition, as compose declares it.
    storage_rest = topology.link("storage", "rest")
    assert storage_rest is not None and storage_rest.condition == "service_started"
    assert topology.start_graph()["auth"]["db"] == "service_healthy"
    # The runtime view leaves start order alone: analytics is only waited for.
    assert "analytics" not in topology.needs("auth", runtime=True)
    assert "analytics" in topology.needs("auth")
    assert topology.upstream("kong", runtime=True) >= {"auth", "db"}
    assert "kong" in topology.downstream("db", runtime=True)


def test_without_files_the_template_holds(deployed: InstanceFiles) -> None:
    from_files = topology_of(make_instance(files=deployed))
    bare = topology_of(make_instance())
    assert bare.start_graph() == template().start_graph()
    for user in ("auth", "rest", "storage"):
        assert set(bare.needs(user, runtime=True)) <= set(from_files.needs(user, runtime=True))
    assert set(bare.needs("kong", runtime=True)) >= {"auth", "rest", "storage"}


def test_hosts_named_in_values() -> None:
    assert hosts_named("postgres://supabase_auth_admin:pw@db:5432/postgres") == {"db"}
    assert hosts_named("http://rest:3000/") == {"rest"}
    assert hosts_named("host=db port=5432 user=x") == {"db"}
    assert hosts_named("http://realtime-dev.supabase-realtime-ab12:4000/socket") == {
        "realtime-dev.supabase-realtime-ab12"}
    assert hosts_named("plain text") == set()


def test_container_names_and_unknown_hosts() -> None:
    topology = build(["kong", "realtime", "db"], depends_on={},
                     env={"realtime": {"DB_HOST": "db", "SMTP_HOST": "mail.example.com"}},
                     routes=[("rt", "http://realtime-dev.supabase-realtime-ab12:4000/api")],
                     aliases={"realtime-dev.supabase-realtime-ab12": "realtime"})
    assert topology.needs("kong") == ("realtime",)
    assert topology.needs("realtime") == ("db",)
    # Listed in start order, ties as the template (kong before realtime).
    assert [link.name for link in topology.links] == ["kong->realtime", "realtime->db"]


def test_order_and_levels_break_a_cycle_in_the_template_order() -> None:
    graph = {"a": {"b": "service_started"}, "b": {"a": "service_started"},
             "db": {}, "auth": {"db": "service_healthy"}}
    # The cycle's own links are dropped; the rest keeps its order, ties as the template.
    assert order(graph, ["auth", "db", "a", "b"]) == ["db", "a", "b", "auth"]
    assert levels(graph, ["auth", "db"]) == [["db"], ["auth"]]


def test_runtime_cycles_are_no_dependency_cycle(deployed: InstanceFiles,
                                                caplog: pytest.LogCaptureFixture) -> None:
    # functions calls the gateway, the gateway routes to functions: fine at run time.
    with caplog.at_level("WARNING"):
        topology = topology_of(make_instance(files=deployed))
    assert "kong" in topology.needs("functions", runtime=True)
    assert "functions" in topology.needs("kong", runtime=True)
    assert not [r for r in caplog.records if "cycle" in r.getMessage()]
