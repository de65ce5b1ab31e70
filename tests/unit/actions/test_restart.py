"""Restart logic on plain data: dependency order from compose labels, start scheduling by
depends_on condition, crash-loop and timeout verdicts, state comparison and the data-path
check on real directories. (The live fleet tests are in tests/integration.)"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from actions.operations.model import StepFailed
from actions.operations.restart import (
    _levels,
    _readiness,
    _start,
    dependency_graph,
    dependency_order,
    dependents,
)
from actions.operations.restart_state import (
    DbState,
    InstanceState,
    PathState,
    compare_states,
)
from actions.operations.restart_state import lost_paths as _lost_paths
from actions.operations.restart_state import path_state as _path_state
from exporter.discovery.model import (
    COMPONENTS,
    Component,
    Credentials,
    Endpoints,
    Instance,
    InstanceFiles,
)
from exporter.discovery.topology import FALLBACK_DEPENDS_ON, parse_depends_on
from exporter.dockerhost import COMPOSE_DEPENDS_ON, ContainerDetails, ContainerSummary, details_of

IID = "ab12cd34"
# The labels compose v2 put on the test fleet's containers (copied from `docker ps`).
LABELS = {
    "vector": "",
    "imgproxy": "",
    "db": "vector:service_healthy:false",
    "analytics": "db:service_healthy:false",
    "studio": "analytics:service_healthy:false",
    "kong": "analytics:service_healthy:false",
    "functions": "analytics:service_healthy:false",
    "auth": "analytics:service_healthy:false,db:service_healthy:false",
    "rest": "analytics:service_healthy:false,db:service_healthy:false",
    "realtime": "db:service_healthy:false,analytics:service_healthy:false",
    "meta": "db:service_healthy:false,analytics:service_healthy:false",
    "supavisor": "analytics:service_healthy:false,db:service_healthy:false",
    "storage": "imgproxy:service_started:false,db:service_healthy:false,"
               "rest:service_started:false",
}


def make_instance(labels: Mapping[str, str | None]) -> Instance:
    """Components with containers; a None label means the container carries none."""
    components = {}
    for n, (name, label) in enumerate(labels.items()):
        tags = {} if label is None else {COMPOSE_DEPENDS_ON: label}
        container = ContainerSummary(id=f"{n:064x}", name=f"supabase-{name}-{IID}",
                                     image="img", state="running", status="Up", created=0,
                                     labels=tags)
        components[name] = Component(name, container.name, container)
    return Instance(id=IID, name="n", owner=None, source="ultrabase",
                    compose_project=f"supabase-{IID}", components=components,
                    endpoints=Endpoints(), credentials=Credentials(), files=InstanceFiles())


def assert_respects(order: Sequence[str], graph: Mapping[str, Mapping[str, str]]) -> None:
    for name, deps in graph.items():
        for dep in deps:
            if dep in order and name in order:
                assert order.index(dep) < order.index(name), (dep, name, order)


# dependencies -------------------------------------------------------------------------------

def test_order_from_labels() -> None:
    instance = make_instance(LABELS)
    order = dependency_order(instance)
    assert sorted(order) == sorted(LABELS)
    assert order[:4] == ["vector", "imgproxy", "db", "analytics"]
    assert order[-1] == "storage"
    assert_respects(order, dependency_graph(instance))


def test_labels_win_over_the_fallback() -> None:
    # An operator's compose file where kong waits for auth (not in the reference template).
    instance = make_instance({**LABELS, "kong": "auth:service_healthy:false"})
    order = dependency_order(instance)
    assert order.index("auth") < order.index("kong")
    assert dependency_graph(instance)["kong"] == {"auth": "service_healthy"}


def test_fallback_chain_without_labels_is_the_same_graph() -> None:
    with_labels = dependency_graph(make_instance(LABELS))
    without = dependency_graph(make_instance(dict.fromkeys(LABELS)))
    assert without == with_labels
    assert set(FALLBACK_DEPENDS_ON) == set(COMPONENTS)


def test_dependents_are_transitive_and_ordered() -> None:
    instance = make_instance(LABELS)
    assert dependents(instance, "rest") == ["storage"]
    assert dependents(instance, "storage") == []
    down_from_db = dependents(instance, "db")
    assert "vector" not in down_from_db and "imgproxy" not in down_from_db
    assert set(down_from_db) == set(LABELS) - {"vector", "imgproxy", "db"}
    assert down_from_db[0] == "analytics" and down_from_db[-1] == "storage"


def test_parse_depends_on() -> None:
    assert parse_depends_on("db:service_healthy:false,rest:service_started:true") == \
        {"db": "service_healthy", "rest": "service_started"}
    assert parse_depends_on("") == {}
    assert parse_depends_on("init:service_completed_successfully:false") == \
        {"init": "service_completed_successfully"}
    assert parse_depends_on("old") == {"old": "service_started"}


def test_missing_dependencies_are_dropped_and_cycles_terminate() -> None:
    instance = make_instance({"auth": "db:service_healthy:false,ghost:service_started:false",
                              "db": "auth:service_healthy:false"})
    assert dependency_graph(instance) == {"auth": {"db": "service_healthy"},
                                          "db": {"auth": "service_healthy"}}
    assert sorted(dependency_order(instance)) == ["auth", "db"]


def test_levels_group_what_can_stop_and_start_together() -> None:
    graph = dependency_graph(make_instance(LABELS))
    levels = _levels(graph, list(LABELS))
    assert levels[0] == ["vector", "imgproxy"] and levels[1] == ["db"]
    assert levels[2] == ["analytics"] and levels[-1] == ["storage"]
    assert set(levels[3]) == {"studio", "kong", "auth", "rest", "realtime", "meta",
                              "functions", "supavisor"}
    # A subset keeps only its own edges.
    assert _levels(graph, ["storage", "auth"]) == [["auth", "storage"]]


# start scheduling (a simulated engine) ------------------------------------------------------

class SimulatedDocker:
    """Containers that become healthy a few polls after their start; records the calls."""

    def __init__(self, components: Sequence[str], *, healthy_after: int = 2,
                 crash: Sequence[str] = (), no_healthcheck: Sequence[str] = ()) -> None:
        self.clock = itertools.count()
        self.events: list[tuple[int, str, str]] = []
        self.state: dict[str, dict[str, Any]] = {
            c: {"status": "exited", "polls": 0, "restarts": 0} for c in components}
        self.healthy_after = healthy_after
        self.crash = set(crash)
        self.plain = set(no_healthcheck)

    def inspect(self, container_id: str) -> ContainerDetails | None:
        c = container_id
        s = self.state[c]
        if s["status"] == "running":
            s["polls"] += 1
            if c in self.crash:
                s["restarts"] += 1
        health: dict[str, str] = {}
        if c not in self.plain:
            healthy = s["polls"] >= self.healthy_after and c not in self.crash
            health = {"Status": "healthy" if healthy else "starting"}
            if healthy and (c, "healthy") not in {(e[2], e[1]) for e in self.events}:
                self.events.append((next(self.clock), "healthy", c))
        state: dict[str, Any] = {"Status": s["status"], "ExitCode": 1 if c in self.crash else 0}
        if health and s["status"] == "running":
            state["Health"] = health
        return details_of({"Id": c, "Name": c, "State": state, "RestartCount": s["restarts"],
                           "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}},
                           "Config": {"Healthcheck": {"Test": ["CMD", "true"]}}})

    def start(self, container_id: str) -> None:
        self.events.append((next(self.clock), "start", container_id))
        self.state[container_id]["status"] = "running"

    def probe(self, container_id: str, argv: Sequence[str]) -> bool:
        return False

    def log_tail(self, container_id: str, lines: int = 3) -> list[str]:
        return ['{"level":"fatal","msg":"password authentication failed"}']


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actions.operations.restart._POLL_SECONDS", 0.0)


def started_order(sim: SimulatedDocker) -> list[str]:
    return [c for _, kind, c in sim.events if kind == "start"]


def test_start_honours_conditions() -> None:
    graph = dependency_graph(make_instance(LABELS))
    plan = dependency_order(make_instance(LABELS))
    sim = SimulatedDocker(plan, healthy_after=4)
    report = _start(cast(Any, sim), plan, graph, {c: c for c in plan}, 60, strict=True)
    order = started_order(sim)
    assert sorted(order) == sorted(plan) and not report.failed
    assert set(report.up) == set(plan)
    assert_respects(order, graph)
    when = {(kind, c): t for t, kind, c in sim.events}
    # A healthy-condition waits for health; storage needs rest only started.
    assert when[("healthy", "vector")] < when[("start", "db")]
    assert when[("healthy", "db")] < when[("start", "auth")]
    assert when[("start", "rest")] < when[("start", "storage")] < when[("healthy", "rest")]


def test_start_reports_a_crash_loop_with_its_log() -> None:
    plan = ["db", "auth"]
    graph = {"db": {}, "auth": {"db": "service_healthy"}}
    sim = SimulatedDocker(plan, crash=["auth"])
    with pytest.raises(StepFailed) as caught:
        _start(cast(Any, sim), plan, cast(Any, graph), {c: c for c in plan}, 60, strict=True)
    assert caught.value.step == "start"
    assert caught.value.reason.startswith("auth: crash-looping: restarted 3 times")
    assert "password authentication failed" in caught.value.reason


def test_tolerant_start_goes_on_past_a_failed_dependency() -> None:
    plan = ["db", "auth"]
    graph = {"db": {}, "auth": {"db": "service_healthy"}}
    sim = SimulatedDocker(plan, crash=["db"])
    report = _start(cast(Any, sim), plan, cast(Any, graph), {c: c for c in plan}, 60,
                    strict=False)
    assert started_order(sim) == ["db", "auth"]
    assert set(report.failed) == {"db"} and set(report.up) == {"auth"}


def test_container_without_healthcheck_is_up_when_running() -> None:
    sim = SimulatedDocker(["kong"], healthy_after=99, no_healthcheck=["kong"])
    report = _start(cast(Any, sim), ["kong"], {}, {"kong": "kong"}, 60, strict=True)
    assert set(report.up) == {"kong"}


def raw_state(status: str, health: str | None = None, restarts: int = 0, exit_code: int = 0,
              policy: str = "unless-stopped") -> dict[str, Any]:
    state: dict[str, Any] = {"Status": status, "ExitCode": exit_code}
    if health:
        state["Health"] = {"Status": health}
    return {"Id": "x", "State": state, "RestartCount": restarts,
            "HostConfig": {"RestartPolicy": {"Name": policy}}}


@pytest.mark.parametrize(("raw", "since", "verdict"), [
    (raw_state("running", "healthy"), 1, "up"),
    (raw_state("running"), 1, "up"),
    (raw_state("running", "starting"), 1, "waiting"),
    (raw_state("running", "unhealthy"), 1, "waiting"),
    (raw_state("running", "starting"), 11, "not up after 10s (running, starting)"),
    (raw_state("restarting", restarts=3, exit_code=1), 1,
     "crash-looping: restarted 3 times since started (last exit code 1)"),
    (raw_state("exited", exit_code=2, policy="no"), 1, "exited with code 2"),
    (raw_state("exited", exit_code=1), 1, "waiting"),  # its restart policy brings it back
    (raw_state("paused"), 1, "paused"),
    (None, 1, "the container disappeared"),
])
def test_readiness(raw: dict[str, Any] | None, since: float, verdict: str) -> None:
    assert _readiness(details_of(raw) if raw else None, 0, since, 10) == verdict


# state comparison ---------------------------------------------------------------------------

def cstate(component: str, *, cid: str = "c1", image: str = "sha256:aa", state: str = "running",
           health: str | None = "healthy", restarts: int = 0) -> ContainerDetails:
    return ContainerDetails(cid, {}, restarts, None, False, "", "", "",
                            name=f"supabase-{component}", state=state, health=health,
                            image_id=image)


def istate(containers: Sequence[ContainerDetails], users: int | None = 5,
           tables: Mapping[str, int] | None = None, error: str | None = None) -> InstanceState:
    by_component = {c.name.removeprefix("supabase-"): c for c in containers}
    return InstanceState(datetime.now(UTC), by_component,
                         DbState(users, dict(tables or {"auth": 16, "public": 3}), error))


def test_same_state_compares_clean() -> None:
    before = istate([cstate("db"), cstate("kong", health=None)])
    assert compare_states(before, istate([cstate("db"), cstate("kong", health=None)])) == []


def test_growth_is_not_a_loss() -> None:
    before = istate([cstate("db")])
    after = istate([cstate("db", restarts=1)], users=7, tables={"auth": 16, "public": 4})
    assert compare_states(before, after) == []


@pytest.mark.parametrize(("after", "expected"), [
    (istate([cstate("db")], users=4), "auth.users has 4 rows, had 5"),
    (istate([cstate("db")], tables={"auth": 16}), "schema public has 0 tables, had 3"),
    (istate([cstate("db", image="sha256:bb")]), "db: image changed"),
    (istate([cstate("db", cid="c2")]), "db: container was replaced"),
    (istate([cstate("db", health="unhealthy")]), "db: was healthy, is running (unhealthy)"),
    (istate([cstate("db", state="exited", health=None)]), "db: was running, is exited"),
    (istate([]), "db: container supabase-db is gone"),
    (istate([cstate("db")], users=None, error="login failed"),
     "database counts unavailable after the restart: login failed"),
])
def test_losses_are_reported(after: InstanceState, expected: str) -> None:
    problems = compare_states(istate([cstate("db")]), after)
    assert any(p.startswith(expected) for p in problems), problems


def test_unknown_before_compares_nothing_of_the_db() -> None:
    before = istate([cstate("db")], users=None, tables={}, error="db was down")
    assert compare_states(before, istate([cstate("db")], users=0, tables={})) == []


# data paths ---------------------------------------------------------------------------------

def paths_state(pgdata: Path, storage: Path) -> InstanceState:
    pg_version = pgdata / "PG_VERSION"
    return InstanceState(
        datetime.now(UTC), {}, DbState(),
        paths={"volume_dir:db_data": _path_state(pgdata, None),
               "volume_dir:storage": _path_state(storage, None),
               "bind:kong": _path_state(storage.parent / "kong.yml", None)},
        pgdata=str(pgdata),
        pg_version=pg_version.read_text().strip() if pg_version.exists() else None)


def test_lost_paths_on_real_directories(tmp_path: Path) -> None:
    pgdata, storage = tmp_path / "db" / "data", tmp_path / "storage"
    for d in (pgdata / "base", pgdata / "global", storage / "stub"):
        d.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("15\n")
    (pgdata / "postmaster.pid").write_text("1\n")
    (tmp_path / "kong.yml").write_text("_format_version: '2.1'\n")
    before = paths_state(pgdata, storage)
    assert before.paths["volume_dir:db_data"].kind == "dir"
    assert {"PG_VERSION", "base", "global"} <= before.paths["volume_dir:db_data"].entries

    # A clean Postgres shutdown removes postmaster.pid: not a loss.
    (pgdata / "postmaster.pid").unlink()
    assert _lost_paths(before, paths_state(pgdata, storage)) == {}

    (storage / "stub").rmdir()
    (pgdata / "PG_VERSION").unlink()
    (tmp_path / "kong.yml").unlink()
    lost = _lost_paths(before, paths_state(pgdata, storage))
    assert lost[str(storage)] == f"{storage} lost stub"
    assert lost[str(tmp_path / "kong.yml")] == f"{tmp_path / 'kong.yml'} is gone"
    assert "no longer holds PG_VERSION 15" in lost[str(pgdata)]


def test_a_path_missing_before_is_not_blamed(tmp_path: Path) -> None:
    before = InstanceState(datetime.now(UTC), {}, DbState(),
                           paths={"x": PathState(str(tmp_path / "never"), "missing")})
    after = InstanceState(datetime.now(UTC), {}, DbState(),
                          paths={"x": _path_state(tmp_path / "never", None)})
    assert _lost_paths(before, after) == {}
