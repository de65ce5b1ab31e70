"""The logs check with the engine's cache: the same findings as without, from fewer lines read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest

from exporter.checks import checks_by_name
from exporter.checks.base import CheckContext, Findings
from exporter.checks.logs import LogsCheck
from exporter.config import DiagnosticsConfig, Thresholds
from exporter.redaction import Redactor
from tests.unit.logs import samples
from tests.unit.logs.logdocker import NOW, container_id, make_instance
from tests.unit.logs.taildocker import TailDocker

COMPONENTS = ("db", "auth", "rest", "kong")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def run(check: LogsCheck, docker: TailDocker, http: httpx.Client, now: datetime) -> Findings:
    instance = make_instance(COMPONENTS)
    config = DiagnosticsConfig(log_window_seconds=600, log_max_lines=50,
                               thresholds=Thresholds(log_error_spike=5))
    ctx = CheckContext(instance=instance, config=config, docker=docker, http=http,
                       redactor=Redactor(instance.secrets()), now=now)
    return check.run(ctx)


def write(docker: TailDocker, component: str, when: datetime, lines: list[str]) -> None:
    for n, line in enumerate(lines):
        docker.write(container_id(component), when + timedelta(milliseconds=n), line)


def test_sweeps_with_the_engines_cache_find_what_fresh_reads_find(http: httpx.Client) -> None:
    docker = TailDocker()
    cached = checks_by_name()["logs"]
    assert isinstance(cached, LogsCheck)
    write(docker, "db", NOW - timedelta(seconds=30), samples.DB_HEALTHY)
    write(docker, "auth", NOW - timedelta(seconds=30), samples.AUTH_HEALTHY)
    write(docker, "rest", NOW - timedelta(seconds=30), samples.REST_HEALTHY)
    write(docker, "kong", NOW - timedelta(seconds=30), samples.KONG_HEALTHY)
    seen: list[set[str]] = []
    for sweep in range(14):
        now = NOW + timedelta(seconds=120 * sweep)
        before = now - timedelta(seconds=60)
        if sweep in (2, 3):  # auth cannot log in; db says why, with its DETAIL line
            write(docker, "auth", before, [samples.AUTH_PASSWORD_FATAL])
            write(docker, "db", before, samples.DB_PASSWORD_FATAL)
        if sweep == 4:  # and starts after the password was fixed
            write(docker, "auth", before, [samples.AUTH_STARTED])
        if sweep in (6, 7, 8):  # a burst of gateway errors, over the cap
            write(docker, "kong", before, [samples.KONG_ACCESS_502] * 40)
        write(docker, "rest", before, [samples.REST_HEALTHY[-1]])
        calls = len(docker.calls)
        findings = run(cached, docker, http, now)
        mine = docker.calls[calls:]
        assert findings == run(LogsCheck(), docker, http, now)
        if sweep > 0:  # one call per component, asking for less than the cap...
            quiet = [c for c in mine if c.container_id != container_id("kong")]
            assert len(quiet) == len(COMPONENTS) - 1
            assert all(c.tail < 50 for c in quiet)
            kong = [c.tail for c in mine if c.container_id == container_id("kong")]
            # ...but around the burst: its first try was too small, and the tail sized
            # from what the last read brought stays at the cap until a quiet read
            burst = {6: [32, 50], 7: [50], 8: [50], 9: [50]}
            assert kong == burst.get(sweep, [kong[0]])
            assert sweep in burst or kong[0] < 50
        seen.append({i.code for i in findings.issues})
    # The sweeps saw the faults come and go, so the comparison covered them.
    assert "DB_ROLE_PASSWORD_MISMATCH" in seen[2]
    assert "LOG_ERROR_SPIKE" in seen[7]
    assert seen[-1] == set()


def test_the_engines_checks_keep_one_cache_each() -> None:
    first, second = checks_by_name()["logs"], checks_by_name()["logs"]
    assert isinstance(first, LogsCheck)
    assert isinstance(second, LogsCheck)
    assert first._cache is not None
    assert first._cache is not second._cache
