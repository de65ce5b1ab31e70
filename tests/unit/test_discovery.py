"""Discovery on the real reference templates, joined with container data given as plain data."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from exporter.config import Config, parse_config
from exporter.discovery import discover
from exporter.discovery.files import (
    FileReadError,
    _ParsedFiles,
    read_compose_file,
    read_kong_file,
)
from exporter.dockerhost import COMPOSE_PROJECT, COMPOSE_SERVICE, ContainerSummary
from exporter.errors import RegistryError
from tests.unit.layout import (
    DATA,
    instance_values,
    registry_record,
    write_instance,
    write_registry,
)
from tests.unit.plaindocker import PlainDocker, containers_for, runtime_envs

Layout = tuple[Path, dict[str, dict[str, str]]]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    core = tmp_path / "supabase-core"
    values = {iid: instance_values(iid) for iid in ("aaaa0001", "bbbb0002")}
    for v in values.values():
        write_instance(core, v)
    write_registry(tmp_path / "instances.json",
                   {iid: registry_record(v) for iid, v in values.items()})
    return tmp_path, values


def config_for(root: Path, sources: tuple[str, ...] = ("ultrabase", "compose")) -> Config:
    return parse_config({"ultrabase": {"registry": str(root / "instances.json")},
                         "discovery": {"sources": list(sources)}}, environ={})


def test_reference_compose_template_is_understood(layout: Layout) -> None:
    root, values = layout
    facts = read_compose_file(root / "supabase-core" / "docker-compose-aaaa0001.yml")
    assert facts.project == "supabase-aaaa0001"
    assert facts.container_names["realtime"] == "realtime-dev.supabase-realtime-aaaa0001"
    assert facts.container_names["supavisor"] == "supabase-pooler-aaaa0001"
    assert facts.env["auth"]["GOTRUE_JWT_SECRET"] == values["aaaa0001"]["JWT_SECRET"]
    assert ("", 8100, 8000) in facts.ports["kong"]
    db_binds = dict((t, s) for s, t in facts.binds["db"])
    assert db_binds["/var/lib/postgresql/data"].name == "data"


def test_reference_kong_yml_keys_and_duplicate_route(layout: Layout) -> None:
    root, values = layout
    facts = read_kong_file(root / "supabase-core" / "volumes-aaaa0001" / "api" / "kong.yml")
    assert facts.keys["service_role"] == values["aaaa0001"]["SERVICE_ROLE_KEY"]
    assert facts.dashboard_password == values["aaaa0001"]["DASHBOARD_PASSWORD"]
    # The real template declares rest-v1 twice, a known real-world fault.
    assert facts.duplicate_services == ("rest-v1",)
    # Unrendered $VARS resolve from kong's environment, as its entrypoint does.
    raw = read_kong_file(DATA / "kong.yml", {"DASHBOARD_PASSWORD": "from-env",
                                            "SUPABASE_ANON_KEY": "anon-from-env"})
    assert raw.dashboard_password == "from-env" and raw.keys["anon"] == "anon-from-env"


def test_every_component_found_with_runtime_credentials(layout: Layout) -> None:
    root, values = layout
    containers = containers_for("aaaa0001") + containers_for("bbbb0002", kong_port=8200,
                                                             db_port=5434)
    envs = {**runtime_envs("aaaa0001", values["aaaa0001"]),
            **runtime_envs("bbbb0002", values["bbbb0002"])}
    # bbbb0002's auth runs with a JWT secret that differs from its files.
    envs["bbbb0002-auth"]["GOTRUE_JWT_SECRET"] = "runtime-secret-differs-xxxxxxxxxxxxxx"
    docker = PlainDocker(containers, envs)
    found = discover(config_for(root), docker)
    assert sorted(found.instances) == ["aaaa0001", "bbbb0002"]
    a = found.instances["aaaa0001"]
    assert all(c.running for c in a.components.values()) and len(a.components) == 13
    assert a.endpoints.gateway_url == "http://127.0.0.1:8100"
    assert a.endpoints.db_host == "127.0.0.1" and a.endpoints.db_port == 5433
    assert a.credentials.sources["jwt_secret"] == "runtime:auth"
    assert a.problems == ()
    b = found.instances["bbbb0002"]
    assert b.credentials.jwt_secret == "runtime-secret-differs-xxxxxxxxxxxxxx"
    assert [p.code for p in b.problems] == ["CONFIG_DRIFT"]
    drift = b.problems[0]
    assert "jwt_secret" in drift.evidence["credentials"]
    assert "runtime-secret-differs" not in str(drift.to_dict())
    # registry says 8100 for kong_http, Docker publishes 8200
    assert drift.evidence["ports"]["kong_http"] == {"registry": 8100, "published": 8200}
    # The compose project of an Ultrabase instance is not listed twice by the compose source.
    assert "supabase-aaaa0001" not in found.instances
    # One listing plus inspects only of the five credential-carrying containers per instance.
    assert docker.api_calls == 1 + 10
    discover(config_for(root), docker)
    assert docker.api_calls == 1 + 10 + 1  # env cached by container id


def test_missing_files_and_bad_record_stay_on_their_instance(layout: Layout) -> None:
    root, values = layout
    (root / "supabase-core" / ".env-aaaa0001").unlink()
    registry = {iid: registry_record(v) for iid, v in values.items()}
    registry["bbbb0002"]["ports"] = "not an object"
    registry["cccc0003"] = ["garbage"]
    write_registry(root / "instances.json", registry)
    found = discover(config_for(root), PlainDocker([]))
    a, b, c = (found.instances[i] for i in ("aaaa0001", "bbbb0002", "cccc0003"))
    missing = [p for p in a.problems if p.code == "INSTANCE_FILES_MISSING"]
    assert missing and "env_file" in missing[0].evidence["files"]
    assert any(p.code == "INSTANCE_RECORD_INVALID" for p in b.problems)
    assert not any(p.code == "INSTANCE_FILES_MISSING" for p in b.problems)
    assert {p.code for p in c.problems} >= {"INSTANCE_RECORD_INVALID", "INSTANCE_FILES_MISSING"}
    assert all(comp.state == "missing" for comp in a.components.values())


def test_docker_down_keeps_instances_with_unknown_runtime(layout: Layout) -> None:
    root, _ = layout
    found = discover(config_for(root), PlainDocker([], down=True))
    assert not found.docker_ok
    assert [p.code for p in found.problems] == ["DOCKER_UNREACHABLE"]
    assert all(not i.runtime_known for i in found.instances.values())
    assert found.instances["aaaa0001"].endpoints.gateway_url == "http://127.0.0.1:8100"


def test_unreadable_registry_raises(tmp_path: Path) -> None:
    with pytest.raises(RegistryError):
        discover(config_for(tmp_path), PlainDocker([]))


def test_generic_compose_project_is_an_instance(layout: Layout) -> None:
    root, _ = layout
    others = containers_for("x", project="myapp", kong_port=9000)
    unrelated = [ContainerSummary(id="web", name="web", image="nginx", state="running",
                                  status="Up", created=0,
                                  labels={COMPOSE_PROJECT: "blog", COMPOSE_SERVICE: "web"})]
    found = discover(config_for(root, ("compose",)), PlainDocker(others + unrelated))
    assert list(found.instances) == ["myapp"]
    inst = found.instances["myapp"]
    assert inst.source == "compose" and inst.components["auth"].running
    assert inst.endpoints.gateway_url == "http://127.0.0.1:9000"


def test_static_source(tmp_path: Path) -> None:
    config = parse_config({"discovery": {"sources": ["static"], "static": [
        {"id": "legacy", "name": "Legacy", "gateway_url": "http://127.0.0.1:8123",
         "db_port": 6543}]}}, environ={})
    found = discover(config, PlainDocker(containers_for("legacy", kong_port=8123)))
    inst = found.instances["legacy"]
    assert inst.name == "Legacy" and inst.components["db"].running
    assert inst.endpoints.db_port == 5433  # what Docker publishes wins over the config


def test_instance_json_and_repr_hold_no_secret(layout: Layout) -> None:
    root, values = layout
    v = values["aaaa0001"]
    found = discover(config_for(root), PlainDocker(containers_for("aaaa0001"),
                                                   runtime_envs("aaaa0001", v)))
    inst = found.instances["aaaa0001"]
    text = repr(inst) + repr(inst.credentials) + str(inst.to_dict())
    for secret in (v["POSTGRES_PASSWORD"], v["JWT_SECRET"], v["SERVICE_ROLE_KEY"],
                   v["ANON_KEY"], v["DASHBOARD_PASSWORD"]):
        assert secret not in text
        assert secret in inst.secrets()


class Clock:
    """time.time moved on by `ahead` seconds: files written now look that old."""

    def __init__(self, ahead: float = 60.0) -> None:
        self.ahead = ahead

    def __call__(self) -> float:
        return time.time() + self.ahead


def test_parsed_files_are_reused_until_the_file_changes(tmp_path: Path) -> None:
    clock = Clock()
    memo = _ParsedFiles(clock=clock)
    path = tmp_path / "doc.yml"
    path.write_text("a: 1\n")
    parsed: list[str] = []

    def parse(text: str) -> str:
        parsed.append(text)
        return text.upper()

    assert memo.get(path, "t", parse) == "A: 1\n"
    assert memo.get(path, "t", parse) == "A: 1\n"
    assert parsed == ["a: 1\n"]
    path.write_text("a: 2\n")  # same size: the inode times tell the edit apart
    assert memo.get(path, "t", parse) == "A: 2\n"
    old = time.time() - 3600
    os.utime(path, (old, old))  # an old mtime, as cp -p leaves it: the signature changed
    assert memo.get(path, "t", parse) == "A: 2\n"
    assert len(parsed) == 3
    replacement = tmp_path / "new.yml"
    replacement.write_text("b: 3\n")
    replacement.replace(path)  # an atomic replace, as editors and the action API do it
    assert memo.get(path, "t", parse) == "B: 3\n"
    path.unlink()
    with pytest.raises(FileReadError, match="missing"):
        memo.get(path, "t", parse)


def test_a_file_changed_moments_ago_is_always_parsed_again(tmp_path: Path) -> None:
    memo = _ParsedFiles(clock=Clock(ahead=0.0))
    path = tmp_path / "doc.yml"
    parsed: list[str] = []
    for text in ("a: 3\n", "a: 4\n", "a: 4\n"):
        if path.exists() and path.read_text() == text:
            old = time.time() - 3600
            os.utime(path, (old, old))  # old mtime, fresh ctime: still recent
        else:
            path.write_text(text)
        assert memo.get(path, "t", lambda t: parsed.append(t) or t) == text
    assert parsed == ["a: 3\n", "a: 4\n", "a: 4\n"]


def test_compose_edits_are_seen_on_the_next_read(layout: Layout) -> None:
    root, _ = layout
    compose = root / "supabase-core" / "docker-compose-aaaa0001.yml"
    before = read_compose_file(compose)
    assert read_compose_file(compose) == before
    compose.write_text(compose.read_text().replace(
        "container_name: supabase-auth-aaaa0001", "container_name: supabase-auth-renamed"))
    after = read_compose_file(compose)
    assert before.container_names["auth"] == "supabase-auth-aaaa0001"
    assert after.container_names["auth"] == "supabase-auth-renamed"


def test_parsed_files_are_bounded(tmp_path: Path) -> None:
    memo = _ParsedFiles(capacity=2, clock=Clock())
    parsed: list[str] = []
    paths = []
    for n in range(3):
        path = tmp_path / f"f{n}"
        path.write_text(str(n))
        paths.append(path)
        memo.get(path, "t", lambda text: parsed.append(text) or text)
    memo.get(paths[2], "t", lambda text: parsed.append(text) or text)
    memo.get(paths[0], "t", lambda text: parsed.append(text) or text)  # evicted: parsed again
    assert parsed == ["0", "1", "2", "0"]
