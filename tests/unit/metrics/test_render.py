"""MetricsRenderer: caching by store generation, serving through store failures, no probing."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bench.samples import NOW, diagnostic
from exporter.metrics import MetricsRenderer, UltrabaseCollector
from exporter.store import InstanceInfo, Store
from tests.unit.metrics.samples import MemorySource, fleet
from tests.unit.metrics.support import parse, series, value

PROMTOOL = Path("/usr/bin/promtool")
# Everything the renderer may touch on its source: the store's read API.
READS = {"generation", "snapshot"}


class RecordingSource:
    """Delegates to a source and records every attribute the caller touches or calls."""

    def __init__(self, inner: object) -> None:
        self.__dict__.update(inner=inner, touched=[], called=[])

    def __getattr__(self, name: str) -> Any:
        self.__dict__["touched"].append(name)
        found = getattr(self.__dict__["inner"], name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            self.__dict__["called"].append(name)
            return found(*args, **kwargs)

        return call


def test_unchanged_generation_serves_the_same_bytes_without_reading_again() -> None:
    source = fleet(3)
    renderer = MetricsRenderer(source)
    first = renderer.render()
    assert source.reads == 1
    for _ in range(5):
        assert renderer.render() is first
    assert source.reads == 1
    assert renderer.refresh() is False


def test_a_new_generation_is_rendered() -> None:
    source = fleet(3)
    renderer = MetricsRenderer(source)
    before = renderer.render()
    source.save(diagnostic("inst-000", broken=True, at=NOW.replace(hour=13)))
    after = renderer.render()
    assert source.reads == 2
    assert value(before, "ultrabase_instance_healthy", instance_id="inst-000") == 1.0
    assert value(after, "ultrabase_instance_healthy", instance_id="inst-000") == 0.0


def test_a_failing_store_serves_the_last_good_output() -> None:
    source = fleet(2)
    source.meta["docker_ok"] = "0"
    renderer = MetricsRenderer(source)
    good = renderer.render()
    source.gen += 1
    source.error = sqlite3.OperationalError("database is locked")
    assert renderer.render() == good
    assert value(renderer.render(), "ultrabase_up") == 0.0  # the last known state
    source.error = None
    source.meta["docker_ok"] = "1"
    assert value(renderer.render(), "ultrabase_up") == 1.0


def test_a_store_failing_mid_read_serves_the_last_good_output() -> None:
    source = fleet(2)
    renderer = MetricsRenderer(source)
    good = renderer.render()

    def locked(since: int | None = None) -> Any:
        raise sqlite3.OperationalError("database is locked")

    source.gen += 1
    source.snapshot = locked  # type: ignore[method-assign]
    assert renderer.render() == good


def test_a_store_never_readable_still_gives_every_family() -> None:
    source = fleet(2)
    source.error = sqlite3.OperationalError("unable to open database file")
    output = MetricsRenderer(source).render()
    families = parse(output)
    assert "ultrabase_instance_healthy" in families and "ultrabase_log_lines" in families
    assert value(output, "ultrabase_up") == 1.0
    assert series(output, "ultrabase_instance_healthy") == {}


def test_the_renderer_touches_nothing_but_the_store_read_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("/metrics opened a connection")

    # Docker (unix socket), HTTP and the instances' databases would all need one of these.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    pytest.importorskip("psycopg")
    import psycopg

    monkeypatch.setattr(psycopg, "connect", refuse)
    source = RecordingSource(fleet(3))
    renderer = MetricsRenderer(source)
    renderer.render()
    source.inner.save(diagnostic("inst-002", broken=True))
    renderer.render()
    assert set(source.touched) <= READS
    assert {"generation", "snapshot"} <= set(source.called)


def test_registering_the_collector_reads_nothing() -> None:
    source = RecordingSource(fleet(1))
    UltrabaseCollector(source, CollectorRegistry(auto_describe=True))
    assert source.touched == []


def test_a_real_store_renders_from_one_consistent_read(tmp_path: Path) -> None:
    with Store(tmp_path / "store.sqlite3") as store:
        store.set_instances([InstanceInfo("inst-000", "Project", None)])
        store.save(diagnostic("inst-000"))
        store.record_run("scheduled", "healthy")
        store.set_meta("docker_ok", "1")
        source = RecordingSource(store)
        renderer = MetricsRenderer(source)
        first = renderer.render()
        assert renderer.render() is first
        assert set(source.called) <= READS and "snapshot" in source.called
        assert value(first, "ultrabase_instance_info", instance_id="inst-000",
                     instance_name="Project", owner="") == 1.0
        assert value(first, "ultrabase_diagnostic_runs", trigger="scheduled",
                     result="healthy") == 1.0
        store.save(diagnostic("inst-000", broken=True, at=NOW.replace(hour=13)))
        assert value(renderer.render(), "ultrabase_instance_healthy",
                     instance_id="inst-000") == 0.0


def test_the_watcher_renders_changes_off_the_scrape_path() -> None:
    source = fleet(2)
    renderer = MetricsRenderer(source)
    renderer.start(interval_seconds=0.01)
    try:
        renderer.render()
        source.save(diagnostic("inst-000", broken=True, at=NOW.replace(hour=13)))
        deadline = time.monotonic() + 10
        while value(renderer.render(), "ultrabase_instance_healthy",
                    instance_id="inst-000") != 0.0:
            assert time.monotonic() < deadline, "the watcher never re-rendered"
            time.sleep(0.01)
    finally:
        renderer.stop()
    assert renderer.refresh() is False


@pytest.mark.skipif(not PROMTOOL.exists(), reason="promtool is not installed "
                    "(Debian package prometheus; CI installs it)")
def test_promtool_finds_nothing_to_complain_about() -> None:
    source = fleet(4, broken=["inst-001", "inst-003"])
    # Label values that need escaping.
    source.infos.append(InstanceInfo("odd", 'a "quoted"\\name\nwith newline', "o"))
    renderer = MetricsRenderer(source)
    outputs = [renderer.render(), MetricsRenderer(MemorySource()).render()]
    # Pieces kept from before and rendered since, joined: still one block per family.
    source.save(diagnostic("inst-000", broken=True, at=NOW.replace(hour=13)))
    source.save(diagnostic("inst-004", at=NOW.replace(hour=13)))
    source.forget("inst-002")
    outputs.append(renderer.render())
    for output in outputs:
        checked = subprocess.run([str(PROMTOOL), "check", "metrics"], input=output,
                                 capture_output=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.strip() == b"" and checked.stderr.strip() == b""

