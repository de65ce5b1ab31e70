"""Shared helpers of the monitoring tests: the real binaries, free ports, servers to wait for.

The tests run Debian's promtool, prometheus, amtool and prometheus-alertmanager (or the
upstream `alertmanager` name). A missing binary skips the test with the package to install,
except under CI (CI=true), where it is a broken build and fails.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "prometheus"
ALERTMANAGER_DIR = REPO / "alertmanager"

# binary names (first found wins) -> the Debian package that ships them
_PACKAGES = {
    ("promtool",): "prometheus",
    ("prometheus",): "prometheus",
    ("amtool",): "prometheus-alertmanager",
    ("prometheus-alertmanager", "alertmanager"): "prometheus-alertmanager",
}

T = TypeVar("T")


def binary(*names: str) -> str:
    """Path of the first of names on PATH; skip (fail under CI) when none is installed."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    package = _PACKAGES.get(tuple(names), names[0])
    message = (f"{' or '.join(names)} not found on PATH: install the Debian package "
               f"{package!r} (scripts/setup.sh does)")
    if in_ci():
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


def run(args: Sequence[str], *, cwd: Path | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing stdout and stderr as text; never raises on exit status."""
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, payload: Any = None, *, timeout: float = 5) -> Any:
    """GET url (or POST payload as JSON) and decode the JSON answer ({} when empty)."""
    assert url.startswith("http://127.0.0.1:"), url
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(  # noqa: S310 (loopback HTTP only, asserted above)
        url, data=data, method="GET" if data is None else "POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        body = response.read()
    return json.loads(body) if body else {}


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 0.1) -> T:
    """Call check until it returns something other than None (or raises no URLError)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = exc
            result = None
        if result is not None:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


@contextmanager
def server(args: Sequence[str], *, ready_url: str, log: Path,
           timeout: float = 15) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until ready_url answers 200, stop it afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool | None:
            if process.poll() is not None:
                raise AssertionError(f"{args[0]} exited with {process.returncode}:\n"
                                     + log.read_text(errors="replace")[-3000:])
            with urllib.request.urlopen(ready_url, timeout=1) as response:  # noqa: S310
                return True if response.status == 200 else None

        wait_for(ready, timeout=timeout, what=f"{ready_url} ({log.name})")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
