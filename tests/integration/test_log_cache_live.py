"""LogCache and DockerHost.logs against the real engine: cached reads equal fresh reads.

A container from the fleet's auth image (busybox only) runs `sleep`;
the test writes log lines into its stdout and stderr through /proc/1/fd (docker exec), so
nothing else writes between a cached read and the fresh read it is compared with.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import pytest
import requests

from exporter.discovery.model import Instance
from exporter.dockerhost import DockerHost
from exporter.logs import LogAnalyzer, LogEntry, LogSummary
from exporter.logs.cache import JITTER, LogCache
from exporter.redaction import Redactor
from fleet import engine, images
from tests.unit.logs.logdocker import make_instance

pytestmark = pytest.mark.integration

PG = "2026-11-30 11:59:00.000 UTC [88] postgres@postgres"
# The engine the fleet helpers use (DOCKER_HOST or the default socket), as DockerHost takes it.
BASE_URL = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
# Long enough for the cache to re-read only the last entries (see LogCache's JITTER).
SETTLE = JITTER.total_seconds() + 0.3


class Logger:
    """A running container whose log the test writes, and a DockerHost counting requests."""

    def __init__(self, container: Any, base_url: str = BASE_URL) -> None:
        self.container = container
        self.requests: list[str] = []
        client = docker.DockerClient(base_url=base_url, timeout=30)
        client.api.hooks["response"].append(self._seen)
        self.docker = DockerHost(base_url, timeout=30, client=client)

    def _seen(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.requests.append(response.request.path_url)

    def write(self, *lines: str, stream: int = 1) -> None:
        """Lines into the container's stdout (stream 1) or stderr (2)."""
        script = "".join(f"printf '%s\\n' {shlex.quote(line)} > /proc/1/fd/{stream}; "
                         for line in lines)
        code, output = self.container.exec_run(["sh", "-c", script])
        assert code == 0, output

    def instance(self) -> Instance:
        """An instance whose db is this container."""
        base = make_instance(("db",))
        db = base.components["db"]
        assert db.container is not None
        container = replace(db.container, id=self.container.id)
        return replace(base, components={"db": replace(db, container=container)})


def _start(tty: bool = False) -> Any:
    client = engine.client()
    image = images.ensure_images(client, specs=[images.SPECS_BY_COMPONENT["auth"]])["auth"]
    return client.containers.run(
        image, ["sh", "-c", "echo started; exec sleep 100000"], detach=True, tty=tty,
        name=f"ubd-log-cache-test-{uuid.uuid4().hex[:8]}", labels={"ubd-test": "log-cache"},
        volumes=[f"/usr:{images.HOST_PREFIX}/usr:ro"])


@pytest.fixture
def logger() -> Iterator[Logger]:
    container = _start()
    try:
        yield Logger(container)
    finally:
        _remove(container)


def _remove(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


def _both(logger: Logger, cache: LogCache, window: float, max_lines: int
          ) -> tuple[list[LogEntry], LogSummary]:
    """The cached read, after checking it equals a fresh read of the same window."""
    instance, now = logger.instance(), datetime.now(UTC)
    cached = LogAnalyzer(logger.docker, Redactor(), cache=cache).get_structured_logs(
        instance, level="debug", since_seconds=window, max_lines=max_lines, now=now)
    fresh = LogAnalyzer(logger.docker, Redactor()).get_structured_logs(
        instance, level="debug", since_seconds=window, max_lines=max_lines, now=now)
    assert cached == fresh
    return cached


def test_cached_reads_equal_fresh_reads_of_a_real_log(logger: Logger) -> None:
    cache = LogCache()
    logger.write(f"{PG} LOG:  database system is ready to accept connections")
    logger.write(f"{PG} ERROR:  relation \"x\" does not exist", f"{PG} DETAIL:  first part",
                 stream=2)
    time.sleep(SETTLE)
    first = _both(logger, cache, 3600, 1000)
    assert [e.message for e in first[0]][:1] == ['relation "x" does not exist']
    inspects = sum("/json" in r for r in logger.requests)
    assert inspects <= 1  # once for the TTY flag (discovery usually has it already)

    # The rest of the folded entry and new lines, stdout and stderr written together.
    logger.write(f"{PG} HINT:  the second part", f"{PG} STATEMENT:  vacuum x",
                 stream=2)
    logger.write("", "\tindented continuation", "plain line")
    code, output = logger.container.exec_run(["sh", "-c", " & ".join(
        f"printf 'out {n}\\n' > /proc/1/fd/1 & printf 'err {n}\\n' > /proc/1/fd/2"
        for n in range(20)) + "; wait"])
    assert code == 0, output
    time.sleep(SETTLE)
    before = len(logger.requests)
    second = _both(logger, cache, 3600, 1000)
    folded = next(e for e in second[0] if e.message == 'relation "x" does not exist')
    assert folded.fields["hint"] == "the second part"
    # The indented line continues what the line before it extended.
    assert folded.fields["statement"] == "vacuum x\nindented continuation"
    # The cache's request (the first of the two reads) re-read from its last entry on:
    # a since with microseconds, a small tail, and no inspect.
    cached_request = logger.requests[before]
    assert "/logs?" in cached_request
    params = dict(p.split("=", 1) for p in cached_request.split("?", 1)[1].split("&"))
    assert int(params["tail"]) < 1000
    assert len(params["since"].split(".")[1]) == 6
    assert sum("/json" in r for r in logger.requests) == inspects

    # A small window sliding past older entries, and a cap the log goes over.
    for step in range(4):
        logger.write(f"{PG} LOG:  step {step}", f"{PG} ERROR:  failed {step}")
        logger.write(f"{PG} DETAIL:  because {step}", stream=2)
        time.sleep(SETTLE)
        _both(logger, cache, 2.0 + SETTLE, 1000)
        _both(logger, cache, 3600, 8)
    assert cache.stats().incremental_reads >= 6
    assert sum("/json" in r for r in logger.requests) == inspects


def test_a_tty_container_is_read_without_an_inspect_per_call() -> None:
    container = _start(tty=True)
    try:
        for _ in range(50):
            if b"started" in container.logs():
                break
            time.sleep(0.1)
        logger = Logger(container)
        logger.write("second line")
        for _ in range(3):
            lines = logger.docker.logs(container.id, since=1.0, tail=100)
            assert [line.split(" ", 1)[1] for line in lines] == ["started", "second line"]
        assert sum("/json" in r for r in logger.requests) == 1
        assert sum("/logs" in r for r in logger.requests) == 3
    finally:
        _remove(container)


def test_a_removed_container_reads_as_no_lines(logger: Logger) -> None:
    logger.docker.logs(logger.container.id, since=1.0, tail=10)
    logger.container.remove(force=True)
    assert logger.docker.logs(logger.container.id, since=1.0, tail=10) == []
    assert DockerHost(BASE_URL).logs("0" * 64, since=1.0, tail=10) == []
