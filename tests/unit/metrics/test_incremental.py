"""The renderer's kept pieces: byte-identical to a full render, and only changes re-rendered."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from bench.samples import NOW, diagnostic
from exporter.config import Config, ScheduleConfig
from exporter.metrics import MetricsRenderer, UltrabaseCollector
from exporter.metrics.snapshot import MetricsSource
from exporter.store import InstanceInfo, Store, StoreSnapshot
from tests.unit.metrics.samples import MemorySource, fleet
from tests.unit.metrics.support import value

# Ids that sort in tricky ways ("a-1" < "a1" < "a_1"), so the instances' order is tested.
IDS = ("a", "a-1", "a1", "a_1", "b", "inst-10", "inst-9")
NAMES = ("Project", 'a "quoted"\\name\nwith newline', "ünïcode", "")
OWNERS = (None, "owner", "ana@example.org")
# Details that leave series out, so an instance's share of a family may be empty.
ODD_DETAILS: dict[str, dict[str, Any]] = {
    "container_status": {"components": {"db": {"state": "hibernating", "restarts": 2}}},
    "logs": {"log_lines": {"db": {"error": "lots"}, "auth": 3}},
    "disk_usage": {"filesystem": None},
}
CONFIG = Config(schedule=ScheduleConfig(sweep_interval_seconds=120))


def full_render(source: MetricsSource) -> bytes:
    """What one render of everything in the source gives."""
    return generate_latest(UltrabaseCollector(source, config=CONFIG))


@dataclass(frozen=True)
class Save:
    """A new diagnostic of one instance (possibly older than the one it has)."""

    instance: str
    broken: bool
    odd: bool
    seconds: int

    def apply(self, source: Any) -> None:
        """Save it."""
        made = diagnostic(self.instance, broken=self.broken,
                          at=NOW + timedelta(seconds=self.seconds),
                          results=ODD_DETAILS if self.odd else None)
        source.save(made)


@dataclass(frozen=True)
class Discover:
    """A discovery's instance list: arrivals, departures, renames."""

    instances: tuple[tuple[str, str, str | None], ...]

    def apply(self, source: Any) -> None:
        """Replace the instance list."""
        infos = [InstanceInfo(*i) for i in dict((i[0], i) for i in self.instances).values()]
        if isinstance(source, Store):
            source.set_instances(infos)
        else:
            source.infos = infos
            source.gen += 1


@dataclass(frozen=True)
class Count:
    """A run or operation counted, or a sweep fact."""

    what: str

    def apply(self, source: Any) -> None:
        """Record it."""
        if isinstance(source, Store):
            actions: dict[str, Callable[[], None]] = {
                "run": lambda: source.record_run("scheduled", "healthy"),
                "operation": lambda: source.record_operation("repair", "failure"),
                "docker down": lambda: source.set_meta("docker_ok", "0"),
                "docker up": lambda: source.set_meta("docker_ok", "1"),
                "sweep": lambda: source.set_meta("sweep_duration_seconds", "2.5")}
            actions[self.what]()
            return
        if self.what == "run":
            source.runs[("scheduled", "healthy")] = source.runs.get(("scheduled", "healthy"),
                                                                    0) + 1
        elif self.what == "operation":
            source.operations[("repair", "failure")] = 1
        elif self.what == "sweep":
            source.meta["sweep_duration_seconds"] = "2.5"
        else:
            source.meta["docker_ok"] = "0" if self.what == "docker down" else "1"
        source.gen += 1


@dataclass(frozen=True)
class Forget:
    """An instance's latest diagnostic gone (a source may drop one; the store never does)."""

    instance: str

    def apply(self, source: Any) -> None:
        """Drop it."""
        source.forget(self.instance)


@dataclass(frozen=True)
class Render:
    """The renderer catches up (so later changes land on pieces it already keeps)."""

    def apply(self, source: Any) -> None:
        """Nothing to do to the source."""


ids = st.sampled_from(IDS)
saves = st.builds(Save, ids, st.booleans(), st.booleans(), st.integers(-5, 50))
discoveries = st.builds(Discover, st.lists(
    st.tuples(ids, st.sampled_from(NAMES), st.sampled_from(OWNERS)), max_size=5).map(tuple))
counts = st.builds(Count, st.sampled_from(("run", "operation", "docker down", "docker up",
                                           "sweep")))
STORE_STEPS = st.lists(st.one_of(saves, saves, discoveries, counts, st.just(Render())),
                       max_size=14)
MEMORY_STEPS = st.lists(st.one_of(saves, saves, discoveries, counts, st.builds(Forget, ids),
                                  st.just(Render())), max_size=14)


def replay(source: Any, steps: list[Any]) -> None:
    """Apply steps, comparing the renderer with a full render at every Render and at the end."""
    renderer = MetricsRenderer(source, config=CONFIG)
    assert renderer.render() == full_render(source)
    for step in [*steps, Render()]:
        step.apply(source)
        if isinstance(step, Render):
            assert renderer.render() == full_render(source), steps


@contextmanager
def temporary_store() -> Iterator[Store]:
    """A real store in a directory of its own (hypothesis runs many examples per test)."""
    with tempfile.TemporaryDirectory(prefix="ubd-metrics-") as tmp, \
            Store(Path(tmp) / "store.sqlite3", history_limit=3) as store:
        yield store


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STORE_STEPS)
def test_a_real_store_renders_byte_identical_to_a_full_render(steps: list[Any]) -> None:
    with temporary_store() as store:
        replay(store, steps)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MEMORY_STEPS)
def test_departed_diagnostics_render_byte_identical_to_a_full_render(steps: list[Any]) -> None:
    replay(MemorySource(), steps)


class Watching:
    """Wraps a source: records what each read returned, and can hold a read midway."""

    def __init__(self, inner: MemorySource) -> None:
        self.inner = inner
        self.read: list[StoreSnapshot] = []
        self.open = threading.Event()
        self.open.set()
        self.waiting = threading.Event()

    def generation(self) -> int:
        """The inner source's."""
        return self.inner.generation()

    def snapshot(self, since: int | None = None) -> StoreSnapshot:
        """The inner source's, once the gate is open."""
        if not self.open.is_set():
            self.waiting.set()
            assert self.open.wait(10), "the test never opened the gate"
        content = self.inner.snapshot(since)
        self.read.append(content)
        return content


def test_a_new_diagnostic_reads_and_renders_only_its_instance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = Watching(fleet(5))
    renderer = MetricsRenderer(source)
    renderer.render()
    assert len(source.read[-1].latest) == 5
    rendered: list[str] = []
    families = UltrabaseCollector.families

    def spy(self: UltrabaseCollector, snapshot: Any, **kwargs: Any) -> Any:
        rendered.extend(d.instance_id for d in snapshot.diagnostics)
        rendered.extend(i.id for i in snapshot.instances)
        return families(self, snapshot, **kwargs)

    monkeypatch.setattr(UltrabaseCollector, "families", spy)
    source.inner.save(diagnostic("inst-002", broken=True, at=NOW + timedelta(minutes=5)))
    output = renderer.render()
    assert [d.instance_id for d in source.read[-1].latest] == ["inst-002"]
    assert rendered == ["inst-002"]
    assert value(output, "ultrabase_instance_healthy", instance_id="inst-002") == 0.0
    # A change of the counters alone renders no instance at all.
    rendered.clear()
    source.inner.runs[("scheduled", "healthy")] += 1
    source.inner.gen += 1
    output = renderer.render()
    assert rendered == [] and source.read[-1].latest == ()
    assert value(output, "ultrabase_diagnostic_runs", trigger="scheduled",
                 result="healthy") == 11


def test_a_scrape_during_a_render_gets_the_previous_complete_output() -> None:
    source = Watching(fleet(3))
    renderer = MetricsRenderer(source, config=CONFIG)
    renderer.start(interval_seconds=0.01)
    try:
        before = renderer.render()  # rendered by start(), before any scrape
        assert value(before, "ultrabase_instance_healthy", instance_id="inst-000") == 1.0
        reads = len(source.read)
        source.open.clear()
        source.inner.save(diagnostic("inst-000", broken=True, at=NOW + timedelta(hours=1)))
        assert source.waiting.wait(10), "the watcher never started the render"
        # The watcher is inside its render now; scrapes neither wait nor see a part of it.
        for _ in range(3):
            assert renderer.render() is before
        source.open.set()
        while value(renderer.render(), "ultrabase_instance_healthy",
                    instance_id="inst-000") != 0.0:
            assert source.waiting.wait(10)
        assert renderer.render() == full_render(source.inner)
        assert len(source.read) > reads
    finally:
        source.open.set()
        renderer.stop()


def test_with_the_watcher_a_scrape_reads_nothing() -> None:
    source = Watching(fleet(2))
    renderer = MetricsRenderer(source)
    renderer.start(interval_seconds=3600)
    try:
        reads = len(source.read)
        source.inner.save(replace(diagnostic("inst-001"), timestamp=NOW + timedelta(hours=1)))
        for _ in range(3):
            renderer.render()
        assert len(source.read) == reads
    finally:
        renderer.stop()


def test_a_store_whose_generation_went_back_is_rendered_afresh() -> None:
    source = fleet(3)
    renderer = MetricsRenderer(source, config=CONFIG)
    renderer.render()
    for _ in range(5):
        source.save(diagnostic("inst-001", at=NOW + timedelta(minutes=1)))
    renderer.render()
    # Another file in its place (restored from a backup, say): older content, a lower
    # generation, and rows stamped at generations the renderer has already passed.
    restored = fleet(3, broken=["inst-002"])
    restored.gen = 2
    restored.stamps = {"inst-002": 2}
    source.__dict__.update(restored.__dict__)
    assert renderer.render() == full_render(source)
    assert value(renderer.render(), "ultrabase_instance_healthy", instance_id="inst-002") == 0.0
