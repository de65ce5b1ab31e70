"""RunOnce: what the checks of one diagnostic share is computed once, even when asked at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from exporter.checks.base import RunOnce


def test_concurrent_callers_share_one_computation() -> None:
    shared = RunOnce()
    calls: list[int] = []
    started = threading.Event()
    release = threading.Event()

    def compute() -> str:
        calls.append(1)
        started.set()
        assert release.wait(5)
        return "result"

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(shared.get, "key", compute)
        assert started.wait(5)
        waiters = [pool.submit(shared.get, "key", compute) for _ in range(3)]
        release.set()
        assert [f.result(5) for f in (first, *waiters)] == ["result"] * 4
    assert calls == [1]
    assert shared.get("other", lambda: "another") == "another"


def test_a_failure_reaches_every_caller_and_is_not_retried() -> None:
    shared = RunOnce()
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        raise RuntimeError("exec failed")

    for _ in range(2):
        with pytest.raises(RuntimeError, match="exec failed"):
            shared.get("key", compute)
    assert calls == [1]
