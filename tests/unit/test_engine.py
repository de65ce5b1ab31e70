"""The engine's cache, rate limit, single flight, concurrency and bounds, with plain checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.checks.base import CheckContext, Findings
from exporter.config import Config, parse_config
from exporter.diagnostic import UserTest
from exporter.engine import DiagnosticsEngine
from exporter.errors import DoctorError, InstanceNotFoundError
from exporter.issues import Issue, make_issue
from tests.unit.layout import instance_values, registry_record, write_instance, write_registry
from tests.unit.plaindocker import PlainDocker, containers_for, runtime_envs

IDS = ("aaaa0001", "bbbb0002", "cccc0003")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class PlainCheck:
    """A check that waits on a gate and reports given issues, counting concurrency."""

    def __init__(self, name: str, issues: tuple[Issue, ...] = (), delay: float = 0.0) -> None:
        self.name = name
        self.issues = issues
        self.delay = delay
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.contexts: list[CheckContext] = []
        self._lock = threading.Lock()

    def run(self, ctx: CheckContext) -> Findings:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.contexts.append(ctx)
        time.sleep(self.delay)
        with self._lock:
            self.active -= 1
        return Findings(issues=self.issues, details={"seen": ctx.instance.id})


@pytest.fixture
def world(tmp_path: Path) -> tuple[Config, PlainDocker]:
    core = tmp_path / "supabase-core"
    values = {iid: instance_values(iid) for iid in IDS}
    for v in values.values():
        write_instance(core, v)
    write_registry(tmp_path / "instances.json",
                   {iid: registry_record(v) for iid, v in values.items()})
    containers = [c for iid in IDS for c in containers_for(iid)]
    envs = {k: v for iid in IDS for k, v in runtime_envs(iid, values[iid]).items()}
    config = parse_config({
        "ultrabase": {"registry": str(tmp_path / "instances.json")},
        "discovery": {"sources": ["ultrabase"]},
        "diagnostics": {"timeout_seconds": 0.2, "concurrency": 4,
                        "synthetic_user_interval_seconds": 600},
    }, environ={})
    return config, PlainDocker(containers, envs)


def make_engine(world: tuple[Config, PlainDocker], *checks: PlainCheck,
                clock: Clock | None = None) -> DiagnosticsEngine:
    config, docker = world
    return DiagnosticsEngine(config, docker, checks={c.name: c for c in checks},
                             clock=clock or Clock())


@pytest.fixture
def engines() -> Iterator[list[DiagnosticsEngine]]:
    made: list[DiagnosticsEngine] = []
    yield made
    for engine in made:
        engine.close()


def test_checks_of_one_instance_run_concurrently(world, engines) -> None:
    gate = PlainCheck("container_status", delay=0.2)
    others = [PlainCheck(n, delay=0.2) for n in ("service_health", "logs", "disk_usage")]
    shared = threading.Lock()
    active = {"now": 0, "max": 0}

    def wrap(check: PlainCheck) -> PlainCheck:
        original = check.run

        def run(ctx: CheckContext) -> Findings:
            with shared:
                active["now"] += 1
                active["max"] = max(active["max"], active["now"])
            try:
                return original(ctx)
            finally:
                with shared:
                    active["now"] -= 1
        check.run = run  # type: ignore[method-assign]
        return check

    engine = make_engine(world, *(wrap(c) for c in [gate, *others]))
    engines.append(engine)
    outcome = engine.run("aaaa0001")
    assert set(outcome.diagnostic.results) == {"container_status", "service_health", "logs",
                                               "disk_usage"}
    assert active["max"] == 4


def test_cache_then_rate_limit_then_new_run(world, engines) -> None:
    check = PlainCheck("container_status")
    clock = Clock()
    engine = make_engine(world, check, clock=clock)
    engines.append(engine)
    first = engine.run("aaaa0001")
    assert not first.cached and check.calls == 1
    cached = engine.run("aaaa0001")
    assert cached.cached and not cached.rate_limited and check.calls == 1
    clock.now += 30
    limited = engine.run("aaaa0001", use_cache=False)
    assert limited.rate_limited and limited.cached and check.calls == 1
    assert 89 <= limited.retry_after_seconds <= 90
    assert limited.to_dict()["rate_limited"] is True
    clock.now += 91
    fresh = engine.run("aaaa0001", use_cache=False)
    assert not fresh.rate_limited and check.calls == 2
    clock.now += 301  # cache expired and outside the window: runs
    assert not engine.run("aaaa0001").cached and check.calls == 3


def test_concurrent_requests_share_one_run(world, engines) -> None:
    check = PlainCheck("container_status", delay=0.3)
    engine = make_engine(world, check)
    engines.append(engine)
    barrier = threading.Barrier(20)
    outcomes = []

    def call() -> None:
        barrier.wait()
        outcomes.append(engine.run("bbbb0002", use_cache=False))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert check.calls == 1
    assert len({id(o.diagnostic) for o in outcomes}) == 1


def test_sweep_runs_instances_concurrently_and_schedules_synthetic_user(world, engines) -> None:
    check = PlainCheck("auth_service", delay=0.2)
    clock = Clock()
    engine = make_engine(world, check, clock=clock)
    engines.append(engine)
    diagnostics = engine.sweep()
    assert sorted(d.instance_id for d in diagnostics) == list(IDS)
    assert check.max_active == 3
    assert all(c.run_synthetic_user for c in check.contexts)
    check.contexts.clear()
    clock.now += 60
    engine.sweep()
    assert not any(c.run_synthetic_user for c in check.contexts)  # within the interval
    check.contexts.clear()
    engine.run("aaaa0001", use_cache=False)
    assert check.contexts[0].run_synthetic_user  # on demand always runs it
    clock.now += 600
    check.contexts.clear()
    engine.sweep()
    assert all(c.run_synthetic_user for c in check.contexts)


class SyntheticCheck(PlainCheck):
    """auth_service whose synthetic user test, when asked for, passes or fails at will."""

    def __init__(self) -> None:
        super().__init__("auth_service")
        self.passes = True

    def run(self, ctx: CheckContext) -> Findings:
        super().run(ctx)
        ran = ctx.run_synthetic_user
        return Findings(details={"synthetic_user": {
            "ran": ran, "created": ran and self.passes, "deleted": ran and self.passes}})


@pytest.fixture
def synthetic(world, engines) -> tuple[SyntheticCheck, Clock, DiagnosticsEngine]:
    """An engine whose only check is auth_service with a synthetic test, and its clock."""
    check, clock = SyntheticCheck(), Clock()
    engine = make_engine(world, check, clock=clock)
    engines.append(engine)
    return check, clock, engine


def test_a_failed_synthetic_test_is_repeated_by_paced_runs_until_it_passes(synthetic) -> None:
    check, clock, engine = synthetic
    check.passes = False
    engine.run("aaaa0001", use_cache=False, trigger="watch")  # fails during an outage
    for trigger in ("event", "scheduled", "event"):
        clock.now += 5
        check.contexts.clear()
        engine.run("aaaa0001", use_cache=False, trigger=trigger)
        assert check.contexts[0].run_synthetic_user, trigger  # the failure is re-judged
    check.passes = True  # the outage is over: the next paced run publishes the pass
    clock.now += 5
    engine.run("aaaa0001", use_cache=False, trigger="event")
    clock.now += 5
    check.contexts.clear()
    engine.run("aaaa0001", use_cache=False, trigger="event")
    assert not check.contexts[0].run_synthetic_user  # paced again once it passed


def test_the_latest_synthetic_test_is_carried_until_the_next(synthetic) -> None:
    """Its result stays published between tests: a pass seen between two scrapes must not
    leave the failure before it as the last value Prometheus has."""
    check, clock, engine = synthetic
    first = engine.run("aaaa0001", use_cache=False, trigger="watch").diagnostic
    assert first.user_test == UserTest(first.timestamp, True)
    clock.now += 60
    later = engine.run("aaaa0001", use_cache=False, trigger="event").diagnostic
    assert not check.contexts[-1].run_synthetic_user
    assert later.user_test == first.user_test  # carried, with the time it ran
    check.passes = False
    clock.now += 60
    failed = engine.run("aaaa0001", use_cache=False, trigger="on_demand").diagnostic
    assert failed.user_test == UserTest(failed.timestamp, False)
    assert engine.store.latest("aaaa0001") == failed


def test_a_synthetic_test_that_could_not_run_leaves_a_failure_standing(synthetic) -> None:
    check, clock, engine = synthetic
    check.passes = False
    engine.run("aaaa0001", use_cache=False, trigger="watch")
    engine.checks["auth_service"] = PlainCheck("auth_service")  # no synthetic_user details
    engine.run("aaaa0001", use_cache=False, trigger="event")
    engine.checks["auth_service"] = check
    check.contexts.clear()
    clock.now += 5
    engine.run("aaaa0001", use_cache=False, trigger="event")
    assert check.contexts[0].run_synthetic_user


def test_hung_check_costs_one_bounded_wait(world, engines) -> None:
    hung = PlainCheck("service_health", delay=3.0)
    quick = PlainCheck("container_status")
    engine = make_engine(world, hung, quick)
    engines.append(engine)
    started = time.monotonic()
    diagnostic = engine.run("aaaa0001").diagnostic
    elapsed = time.monotonic() - started
    assert diagnostic.results["service_health"].status == "failed"
    assert "did not finish" in diagnostic.results["service_health"].details["error"]
    assert diagnostic.results["container_status"].status == "ok"
    assert elapsed < 2.5  # bounded by the outer deadline, not the 3 s hang


def test_root_cause_secret_redaction_and_health(world, engines) -> None:
    secret = instance_values("aaaa0001")["POSTGRES_PASSWORD"]
    issues = (
        make_issue("AUTH_USER_CREATE_FAILED", check="auth_service", component="auth",
                   message=f"login with {secret} failed", evidence={"dsn": f"x:{secret}@db"}),
        make_issue("DB_ROLE_PASSWORD_MISMATCH", check="database_connection", component="auth",
                   message="supabase_auth_admin cannot log in"),
    )
    engine = make_engine(world, PlainCheck("auth_service", issues[:1]),
                         PlainCheck("database_connection", issues[1:]))
    engines.append(engine)
    outcome = engine.run("aaaa0001")
    body = outcome.to_dict()
    assert body["healthy"] is False
    assert body["root_cause"]["code"] == "DB_ROLE_PASSWORD_MISMATCH"
    assert secret not in str(body)
    assert body["results"]["auth_service"]["status"] == "failed"


def test_quick_health_only_looks_at_the_critical_path(world, engines) -> None:
    storage_down = make_issue("CONTAINER_NOT_RUNNING", check="container_status",
                              component="storage", message="storage stopped")
    engine = make_engine(world, PlainCheck("container_status", (storage_down,)),
                         PlainCheck("database_connection"), PlainCheck("api_endpoints"))
    engines.append(engine)
    assert engine.quick_health("aaaa0001").healthy
    kong_down = make_issue("CONTAINER_NOT_RUNNING", check="container_status",
                           component="kong", message="kong stopped")
    engine.checks["container_status"] = PlainCheck("container_status", (kong_down,))
    health = engine.quick_health("aaaa0001")
    assert not health.healthy and health.issues[0].component == "kong"


def test_unknown_instance_and_check_are_errors(world, engines) -> None:
    engine = make_engine(world, PlainCheck("container_status"))
    engines.append(engine)
    for bad in ("zzzz9999", "../etc", "", "A" * 70):
        with pytest.raises(InstanceNotFoundError):
            engine.run(bad)
    with pytest.raises(DoctorError, match="unknown check"):
        engine.run("aaaa0001", checks=["nope"])


class DetailCheck(PlainCheck):
    """A check that reports given issues and details."""

    def __init__(self, name: str, issues: tuple[Issue, ...] = (),
                 details: dict[str, object] | None = None) -> None:
        super().__init__(name, issues)
        self.details = details or {}

    def run(self, ctx: CheckContext) -> Findings:
        return Findings(issues=self.issues, details=self.details)


def test_a_log_finding_live_checks_show_over_is_a_recent_event(world, engines) -> None:
    running = {"state": "running", "health": "healthy", "restarts": 0, "exit_code": None}
    containers = DetailCheck("container_status", details={"components": {
        name: running for name in ("db", "auth", "rest", "kong", "analytics", "vector")}})
    old = make_issue("LOG_ERROR_SPIKE", check="logs", component="auth", message="errors",
                     evidence={"error_count": 40, "latest": "could not reach the db"})
    engine = make_engine(world, containers, DetailCheck("logs", (old,)))
    engines.append(engine)
    diagnostic = engine.run(IDS[0], use_cache=False).diagnostic
    assert diagnostic.healthy and diagnostic.issues == () and diagnostic.root_cause is None
    [event] = diagnostic.recent_events
    assert (event.code, event.component, event.count) == ("LOG_ERROR_SPIKE", "auth", 40)
    assert event.excerpt == "could not reach the db"
    stored = engine.store.latest(IDS[0])
    assert stored is not None and stored.recent_events == diagnostic.recent_events
    # While auth fails a live check, the same lines are an issue.
    failing = make_issue("AUTH_UNHEALTHY", check="auth_service", component="auth",
                         message="down")
    engine = make_engine(world, containers, DetailCheck("logs", (old,)),
                         DetailCheck("auth_service", (failing,)))
    engines.append(engine)
    diagnostic = engine.run(IDS[0], use_cache=False).diagnostic
    assert {i.code for i in diagnostic.issues} == {"AUTH_UNHEALTHY", "LOG_ERROR_SPIKE"}
    assert diagnostic.recent_events == ()
