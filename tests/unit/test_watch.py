"""The watch between sweeps: debouncing events, telling what changed, and when to diagnose.

Plain data throughout: a clock moved by hand, Docker answers from plain containers and
events from a list, gateway answers from httpx.MockTransport. Nothing here tests Docker.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.checks.base import DOWN_PATH_TIMEOUT_SECONDS
from exporter.checks.containers import ContainerStatusCheck
from exporter.checks.endpoints import ApiEndpointsCheck
from exporter.config import Config, parse_config
from exporter.diagnostic import Diagnostic
from exporter.discovery.model import ultrabase_container_name
from exporter.dockerhost import EventStream
from exporter.engine import DiagnosticsEngine
from exporter.errors import ConfigError, DockerUnavailableError
from exporter.results import MemoryResultStore
from exporter.scheduler import DiagnosticScheduler
from exporter.watch.debounce import Debouncer, Due
from exporter.watch.events import EventWatch, InstanceIndex, parse_event
from exporter.watch.probe import Memory, QuickProbe, decide, differences, expected
from exporter.watch.status import WatchStatus
from tests.unit.layout import instance_values
from tests.unit.metrics.samples import diagnostic
from tests.unit.plaindocker import PlainDocker, containers_for, runtime_envs

A, B = "aaaa0001", "bbbb0002"

# ---- the debouncer -----------------------------------------------------------------------


def test_a_burst_is_one_run_after_its_last_event_settles() -> None:
    bounce = Debouncer(settle=2, max_delay=10, min_gap=0)
    for at in (100.0, 100.2, 100.9):  # docker stop: kill, die, stop
        bounce.event(A, at)
    assert bounce.next_due() == 102.9
    assert bounce.take_due(102.8) == []
    assert bounce.take_due(102.9) == [Due(A, 100.9)]
    assert bounce.take_due(200) == []  # taken once


def test_a_kill_waits_for_its_die_but_no_longer_than_max_delay() -> None:
    bounce = Debouncer(settle=2, max_delay=8, min_gap=0)
    bounce.event(A, 100.0, settles=False)  # kill: the container still runs
    assert bounce.next_due() == 108.0
    bounce.event(A, 103.0)  # die, three seconds later
    assert bounce.next_due() == 105.0
    bounce.event(B, 100.0, settles=False)  # a kill that no die follows (a signal, say)
    assert [d.key for d in bounce.take_due(108.0)] == [A, B]


def test_a_start_is_remembered_for_the_burst() -> None:
    bounce = Debouncer(settle=1, max_delay=5, min_gap=0)
    bounce.event(A, 100.0, started=100.0)
    bounce.event(A, 100.5)  # restart: then "restart"; health comes later
    bounce.event(A, 100.7, started=99.0)  # a look again, for an earlier start
    bounce.event(B, 100.0)
    assert [(d.key, d.started) for d in bounce.take_due(102)] == [(A, 100.0), (B, None)]


def test_a_stream_of_events_runs_no_later_than_max_delay_after_its_first() -> None:
    bounce = Debouncer(settle=2, max_delay=5, min_gap=0)
    for step in range(10):  # a crash loop: an event every second
        bounce.event(A, 100.0 + step)
    assert bounce.next_due() == 105.0
    assert [d.key for d in bounce.take_due(105.0)] == [A]


def test_one_run_per_key_at_a_time_and_a_min_gap_between_runs() -> None:
    bounce = Debouncer(settle=1, max_delay=5, min_gap=10)
    bounce.event(A, 100)
    bounce.event(B, 100)
    assert [d.key for d in bounce.take_due(101)] == [A, B]
    bounce.event(A, 102)  # while A's run goes on: the next burst
    assert bounce.next_due() is None and bounce.take_due(150) == []
    bounce.finished(A, covered=True, last_event=100)
    assert bounce.next_due() == 111  # 10 s after the previous run began, not 103
    assert [d.key for d in bounce.take_due(111)] == [A]


def test_a_run_that_predates_its_events_runs_again_at_once() -> None:
    bounce = Debouncer(settle=1, max_delay=5, min_gap=30)
    bounce.event(A, 100)
    [due] = bounce.take_due(101)
    # The run joined one already in flight that began before the event.
    bounce.finished(A, covered=False, last_event=due.last_event)
    assert bounce.next_due() is not None and bounce.next_due() <= 102  # type: ignore[operator]
    assert [d.key for d in bounce.take_due(102)] == [A]
    bounce.finished(A, covered=True, last_event=100)
    bounce.event(A, 103)
    assert bounce.next_due() == 132  # the rerun counts for min_gap; the shared one did not


# ---- events and instances ----------------------------------------------------------------


def raw_event(action: str, name: str, project: str | None = None,
              at: float = 1_800_000_000.25) -> dict[str, Any]:
    attributes = {"name": name, "image": "local/x"}
    if project:
        attributes["com.docker.compose.project"] = project
    return {"Type": "container", "Action": action, "status": action,
            "Actor": {"ID": "c0ffee", "Attributes": attributes},
            "time": int(at), "timeNano": int(at * 1e9)}


def test_parse_event_keeps_watched_container_actions_only() -> None:
    event = parse_event(raw_event("health_status: unhealthy", "supabase-auth-x", "supabase-x"))
    assert event is not None
    assert (event.action, event.name, event.project) == ("health_status", "supabase-auth-x",
                                                         "supabase-x")
    assert event.at == pytest.approx(1_800_000_000.25)
    assert parse_event(raw_event("exec_start: sh -c true", "supabase-auth-x")) is None
    assert parse_event({**raw_event("die", "x"), "Type": "network"}) is None
    assert parse_event({"Action": "oom"}) is not None  # sparse events still count


def test_events_map_to_instances_by_project_then_container_name(world: World) -> None:
    index = InstanceIndex.of(world.engine.discover().instances.values())
    auth = ultrabase_container_name("auth", A)
    assert index.instance_of(parse_event(raw_event("die", auth, f"supabase-{A}"))) == A  # type: ignore[arg-type]
    assert index.instance_of(parse_event(raw_event("die", auth))) == A  # type: ignore[arg-type]
    other = parse_event(raw_event("die", "someone-elses-db", "their-project"))
    assert other is not None and index.instance_of(other) is None


# ---- what the probe sees against the latest diagnostic -----------------------------------


def test_expected_reads_the_facts_a_diagnostic_recorded() -> None:
    healthy, broken = expected(diagnostic(A)), expected(diagnostic(A, broken=True))
    assert healthy["container:auth"] and not broken["container:auth"]
    assert healthy["gateway:auth"] and not broken["gateway:auth"]
    assert healthy["gateway:rest"] and broken["gateway:rest"]
    assert healthy["gateway:admin"] and not broken["gateway:admin"]  # the synthetic test
    assert healthy["volume:storage"] is True
    skipped = replace(diagnostic(A), results={
        n: replace(r, status="skipped") for n, r in diagnostic(A).results.items()})
    assert expected(skipped) == {}


def test_differences_against_the_diagnostic_else_the_previous_round() -> None:
    recorded = {"container:auth": True, "gateway:auth": False}
    seen = {"container:auth": False, "gateway:auth": True, "gateway:admin": False}
    assert differences(seen, recorded, previous=None) == {
        "container:auth": "now failing", "gateway:auth": "now fine"}
    # The admin read is not in the diagnostic: its previous round decides.
    assert differences(seen, recorded, previous={"gateway:admin": True})[
        "gateway:admin"] == "now failing"
    assert differences({"x": True}, None, None) == {"diagnostic": "none stored"}


def test_decide_asks_once_per_new_sight_and_never_loops() -> None:
    fine = {"container:auth": True, "gateway:admin": True}
    down = {"container:auth": False, "gateway:admin": True}
    recorded_fine = dict(fine)
    reasons, memory = decide(fine, recorded_fine, Memory())
    assert reasons == {}
    reasons, memory = decide(down, recorded_fine, memory)
    assert reasons == {"container:auth": "now failing"}
    # A diagnostic that keeps disagreeing is asked once, not every round.
    for _ in range(3):
        reasons, memory = decide(down, recorded_fine, memory)
        assert reasons == {}
    # It agrees at last: nothing to do; a later one that disagrees is asked again.
    reasons, memory = decide(down, {"container:auth": False}, memory)
    assert reasons == {}
    assert decide(down, recorded_fine, memory)[0] == {"container:auth": "now failing"}
    reasons, memory = decide(fine, recorded_fine, memory)  # healed, and agreeing
    assert reasons == {}
    reasons, memory = decide(down, recorded_fine, memory)  # broken again: asked again
    assert reasons == {"container:auth": "now failing"}
    # No diagnostic stored yet: asked once.
    reasons, memory = decide(fine, None, Memory())
    assert reasons == {"diagnostic": "none stored"}
    assert decide(fine, None, memory)[0] == {}


# ---- the probe and the event watch over plain Docker and a plain gateway ------------------


class Gateway:
    """Answers like Kong in front of GoTrue and PostgREST; `refuse` makes Kong say 401."""

    def __init__(self) -> None:
        self.refuse: set[tuple[str, str]] = set()  # (instance id, path)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        instance = next((i for i in (A, B) if i in request.headers.get("apikey", "")), "")
        if (instance, request.url.path) in self.refuse:
            return httpx.Response(401, json={"message": "Invalid authentication credentials"},
                                  headers={"Server": "kong/2.8.1"})
        body: Any = {"users": [], "aud": "authenticated"} if "admin" in request.url.path \
            else {"version": "v2.167.0"}
        return httpx.Response(200, json=body, headers={"Via": "kong/2.8.1"})


class EventDocker(PlainDocker):
    """Plain containers, and events fed by the test through a queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feed: queue.Queue[Mapping[str, Any] | None] = queue.Queue()
        self.refusals = 0  # connection attempts to refuse first
        self.since: list[float | None] = []

    def events(self, actions: Any, since: float | None = None) -> EventStream:
        self.since.append(since)
        if self.refusals:
            self.refusals -= 1
            raise DockerUnavailableError("cannot follow events: connection refused")
        feed = self.feed

        class Stream:
            def __iter__(self) -> Iterator[Mapping[str, Any]]:
                while (item := feed.get()) is not None:
                    yield item

            def close(self) -> None:
                feed.put(None)

        return EventStream(Stream())

    def set_state(self, instance_id: str, component: str, state: str) -> None:
        name = ultrabase_container_name(component, instance_id)
        self.containers = [replace(c, state=state, status=f"{state.capitalize()} 1 second")
                           if c.name == name else c for c in self.containers]


class World:
    """An engine with the real container and gateway checks over plain data."""

    def __init__(self, tmp: Path, **watch: Any) -> None:
        self.config: Config = parse_config({
            "discovery": {"sources": ["static"], "static": [
                {"id": A, "gateway_url": "http://127.0.0.1:8100"},
                {"id": B, "gateway_url": "http://127.0.0.1:8200"}]},
            "diagnostics": {"timeout_seconds": 2},
            "watch": {"event_settle_seconds": 0.05, "event_max_delay_seconds": 0.2,
                      "event_min_gap_seconds": 0, "reconnect_max_seconds": 1,
                      "probe_requests": ["auth", "rest", "admin"], **watch},
        }, environ={})
        envs = {**runtime_envs(A, instance_values(A)), **runtime_envs(B, instance_values(B))}
        self.docker = EventDocker(containers_for(A) + containers_for(B, kong_port=8200), envs)
        self.gateway = Gateway()
        self.http = httpx.Client(transport=httpx.MockTransport(self.gateway))
        self.store = MemoryResultStore()
        self.engine = DiagnosticsEngine(
            self.config, self.docker, self.store, http=self.http,
            checks={"container_status": ContainerStatusCheck(),
                    "api_endpoints": ApiEndpointsCheck()})
        self.status = WatchStatus(None)

    def runs(self, trigger: str) -> int:
        return sum(n for (t, _), n in self.store.runs.items() if t == trigger)

    def close(self) -> None:
        self.engine.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.close()


def latest(world: World, instance_id: str) -> Diagnostic:
    found = world.store.latest(instance_id)
    assert found is not None
    return found


def test_the_probe_diagnoses_only_what_changed(world: World) -> None:
    probe = QuickProbe(world.engine, world.status, http=world.http)
    try:
        first = probe.run_once()  # nothing stored yet: each instance is judged once
        assert set(first.diagnosed) == {A, B} and world.runs("watch") == 2
        assert probe.run_once().diagnosed == {}
        assert world.status.get("probe") is not None and world.status.healthy

        world.docker.set_state(A, "auth", "exited")
        changed = probe.run_once()
        assert changed.diagnosed == {A: {"container:auth": "now failing"}}
        assert not latest(world, A).healthy and latest(world, A).trigger == "watch"
        assert probe.run_once().diagnosed == {}  # the diagnostic agrees now

        # Kong refuses B's service key: only the admin read sees it; the diagnostic here
        # cannot (no synthetic test), so it is asked once and not again.
        world.gateway.refuse.add((B, "/auth/v1/admin/users"))
        assert probe.run_once().diagnosed == {B: {"gateway:admin": "now failing"}}
        assert probe.run_once().diagnosed == {}

        world.docker.set_state(A, "auth", "running")
        assert probe.run_once().diagnosed == {A: {"container:auth": "now fine"}}
        assert latest(world, A).healthy
        assert world.runs("watch") == 5 and world.runs("scheduled") == 0
        # Each request went to the instance's own gateway on 127.0.0.1, the admin read
        # with the service key as Bearer.
        admin = [r for r in world.gateway.seen if r.url.path == "/auth/v1/admin/users"]
        assert admin and all(r.url.host == "127.0.0.1" for r in world.gateway.seen)
        assert all(r.headers["authorization"] == f"Bearer {r.headers['apikey']}"
                   and "service" in r.headers["apikey"] for r in admin)
        assert all(r.method == "GET" for r in world.gateway.seen)
    finally:
        probe.close()


def test_the_probe_leaves_the_gateway_alone_while_kong_is_paused(world: World) -> None:
    probe = QuickProbe(world.engine, world.status, http=world.http)
    try:
        world.docker.set_state(A, "kong", "paused")
        seen = probe.observe(world.engine.instance(A, fresh=True))
        assert seen.signals["container:kong"] is False and seen.notes["container:kong"]
        assert not any(k.startswith("gateway:") for k in seen.signals)
    finally:
        probe.close()


def test_the_probe_waits_briefly_on_a_route_whose_upstream_is_down(world: World) -> None:
    probe = QuickProbe(world.engine, world.status, http=world.http)
    try:
        world.docker.set_state(A, "auth", "exited")
        probe.observe(world.engine.instance(A, fresh=True))
        waits = {r.url.path: r.extensions["timeout"]["read"] for r in world.gateway.seen}
        assert waits == {"/auth/v1/health": DOWN_PATH_TIMEOUT_SECONDS,
                         "/auth/v1/admin/users": DOWN_PATH_TIMEOUT_SECONDS,
                         "/rest/v1/": world.config.diagnostics.timeout_seconds}
    finally:
        probe.close()


def test_the_probe_sends_no_key_to_a_port_kong_does_not_publish(world: World) -> None:
    probe = QuickProbe(world.engine, world.status, http=world.http)
    kong = ultrabase_container_name("kong", A)
    try:
        world.docker.containers = [replace(c, ports=()) if c.name == kong else c
                                   for c in world.docker.containers]
        seen = probe.observe(world.engine.instance(A, fresh=True))
        assert not any(k.startswith("gateway:") for k in seen.signals)
        assert "does not publish host port 8100" in seen.notes["gateway"]
        assert world.gateway.seen == []
        # B's kong publishes its port: its requests go as before.
        assert "gateway:auth" in probe.observe(world.engine.instance(B, fresh=True)).signals
    finally:
        probe.close()


def test_the_probe_sends_only_the_configured_requests(tmp_path: Path) -> None:
    lean = World(tmp_path, probe_requests=["auth"])
    probe = QuickProbe(lean.engine, lean.status, http=lean.http)
    try:
        seen = probe.observe(lean.engine.instance(A, fresh=True))
        assert [k for k in seen.signals if k.startswith("gateway:")] == ["gateway:auth"]
        assert [r.url.path for r in lean.gateway.seen] == ["/auth/v1/health"]
    finally:
        probe.close()
        lean.close()


def test_the_probe_is_down_without_docker(world: World) -> None:
    probe = QuickProbe(world.engine, world.status, http=world.http)
    try:
        world.docker.down = True
        assert probe.run_once().error and world.runs("watch") == 0
        assert not world.status.healthy
    finally:
        probe.close()


def wait_for(what: str, condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_burst_of_events_is_one_diagnostic_of_its_instance(world: World) -> None:
    watch = EventWatch(world.engine, world.config.watch, world.status)
    world.docker.refusals = 1  # the first connection fails: down, then up after a backoff
    watch.start()
    try:
        wait_for("the stream to connect", lambda: world.status.get("events") is not None
                 and world.status.healthy)
        world.docker.set_state(A, "auth", "exited")
        auth = ultrabase_container_name("auth", A)
        for action in ("kill", "die", "stop"):
            world.docker.feed.put(raw_event(action, auth, f"supabase-{A}", at=time.time()))
        world.docker.feed.put(raw_event("die", "not-an-instance", "elsewhere"))
        wait_for("the event diagnostic", lambda: world.runs("event") >= 1)
        time.sleep(0.3)  # a second run would have started by now
        assert world.runs("event") == 1
        assert latest(world, A).trigger == "event" and not latest(world, A).healthy
        assert world.store.latest(B) is None
        assert world.docker.since[0] is None and world.docker.since[1] is not None
    finally:
        watch.stop()


@contextmanager
def rest_started(tmp_path: Path, **watch: Any) -> Iterator[World]:
    """A watching world in which A's rest has just started and does not answer yet."""
    world = World(tmp_path, **watch)
    events = EventWatch(world.engine, world.config.watch, world.status)
    events.start()
    try:
        wait_for("the stream to connect", lambda: world.status.healthy
                 and world.status.get("events") is not None)
        world.docker.set_state(A, "rest", "restarting")
        rest = ultrabase_container_name("rest", A)
        world.docker.feed.put(raw_event("start", rest, f"supabase-{A}", at=time.time()))
        yield world
    finally:
        events.stop()
        world.close()


def test_a_start_that_is_not_yet_healthy_is_looked_at_until_it_answers(tmp_path: Path) -> None:
    with rest_started(tmp_path, event_min_gap_seconds=0.2, start_grace_seconds=30) as world:
        # No event comes when rest answers: the watch keeps looking, min_gap apart.
        wait_for("three looks", lambda: world.runs("event") >= 3)
        assert not latest(world, A).healthy
        world.docker.set_state(A, "rest", "running")
        wait_for("the healthy verdict", lambda: latest(world, A).healthy)
        looks = world.runs("event")
        time.sleep(0.6)  # three min gaps: another look would have run by now
        assert world.runs("event") == looks  # healthy: no more looks
        assert world.store.latest(B) is None


def test_looking_again_ends_with_the_start_grace(tmp_path: Path) -> None:
    with rest_started(tmp_path, event_min_gap_seconds=0.1, start_grace_seconds=0.5) as world:
        wait_for("a second look", lambda: world.runs("event") >= 2)
        time.sleep(1.5)  # past the grace, and a last look begun before its end
        looks = world.runs("event")
        time.sleep(0.5)  # five min gaps
        assert world.runs("event") == looks and not latest(world, A).healthy


def test_a_broken_stream_reconnects_from_the_last_event(world: World) -> None:
    watch = EventWatch(world.engine, world.config.watch, world.status)
    watch.start()
    try:
        wait_for("the stream to connect", lambda: len(world.docker.since) == 1)
        auth = ultrabase_container_name("auth", B)
        world.docker.feed.put(raw_event("start", auth, f"supabase-{B}", at=1_800_000_123.5))
        wait_for("the event diagnostic", lambda: world.runs("event") == 1)
        world.docker.refusals = 1
        world.docker.feed.put(None)  # the engine closed the stream
        wait_for("the failed reconnect", lambda: not world.status.healthy)
        wait_for("the second reconnect", lambda: world.status.healthy)
        # From just past the last event seen: the engine replays what came since.
        assert world.docker.since[1:] == [pytest.approx(1_800_000_123.5, abs=1e-3)] * 2
    finally:
        watch.stop()


# ---- status, scheduler, config ----------------------------------------------------------


class MetaStore:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []

    def set_meta(self, key: str, value: str) -> None:
        self.writes.append((key, value))


def test_status_writes_the_store_only_on_a_change() -> None:
    store = MetaStore()
    status = WatchStatus(store, clock=lambda: 1_800_000_000.0)
    status.clear()
    for _ in range(3):
        status.set("probe", True)
    status.set("events", False, "connection refused")
    status.set("events", False, "connection refused")
    assert store.writes == [("watch_events_up", ""), ("watch_probe_up", ""),
                            ("watch_probe_up", "1"), ("watch_events_up", "0")]
    shown = status.to_dict()
    assert shown["probe"] == {"state": "up", "since": "2027-01-15T08:00:00+00:00",
                              "error": None}
    assert not status.healthy


def test_scheduler_runs_the_probe_as_a_job_of_its_own(world: World) -> None:
    calls: list[int] = []
    scheduler = DiagnosticScheduler(world.engine, None, 300, sweep_enabled=False,
                                    probe=lambda: calls.append(1), probe_interval_seconds=5)
    jobs = {job.id: job for job in scheduler._scheduler.get_jobs()}
    assert set(jobs) == {"probe"}
    assert jobs["probe"].trigger.interval.total_seconds() == 5


def test_watch_config_is_validated() -> None:
    plain = {"discovery": {"sources": ["compose"]}}
    defaults = parse_config(plain, environ={}).watch
    assert defaults.events and defaults.probe
    assert 15 <= defaults.probe_interval_seconds <= 30
    assert defaults.probe_requests == ("auth",)  # the others cost the stand-ins dearly
    with pytest.raises(ConfigError) as caught:
        parse_config({**plain, "watch": {"probe_requests": ["auth", "signup"]}}, environ={})
    assert "watch.probe_requests" in " ".join(caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        parse_config({**plain, "watch": {"event_settle_seconds": 10,
                                         "probe_interval_seconds": 1, "surprise": True}},
                     environ={})
    text = str(caught.value) + " ".join(caught.value.problems)
    assert "watch.probe_interval_seconds" in text and "watch.surprise: unknown key" in text
    with pytest.raises(ConfigError) as caught:
        parse_config({**plain, "watch": {"event_settle_seconds": 10,
                                         "event_max_delay_seconds": 5}}, environ={})
    assert "event_max_delay_seconds" in " ".join(caught.value.problems)


@pytest.mark.parametrize("spec", [{"events": False}, {"probe": False}])
def test_parts_switched_off_are_not_built(world: World, spec: dict[str, bool]) -> None:
    from exporter.watch.runner import Watch

    config = world.config.watch.model_copy(update=spec)
    built = Watch.build(world.engine, config, None)
    try:
        assert (built.events is None) == (not config.events)
        assert (built.probe is None) == (not config.probe)
    finally:
        built.close()


def test_threads_end_on_stop(world: World) -> None:
    before = threading.active_count()
    watch = EventWatch(world.engine, world.config.watch, world.status)
    watch.start()
    wait_for("the stream to connect", lambda: world.status.get("events") is not None)
    watch.stop()
    wait_for("the threads to end", lambda: threading.active_count() <= before)
