"""Host ports: finding free ones on 127.0.0.1 and holding one with a detached process."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

from fleet.model import FleetError

# Below the kernel's ephemeral range (32768+), so outgoing connections never sit on them.
PORT_RANGE = range(20000, 32000)
HOLDER_SCRIPT = Path(__file__).resolve().with_name("holder.py")


def is_free(port: int) -> bool:
    """True when a listener could bind 127.0.0.1:port (as docker-proxy does, with
    SO_REUSEADDR: connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def share(index: int, count: int) -> range:
    """The index-th of count equal, disjoint parts of PORT_RANGE: processes that make
    fleets side by side each pick from a part of its own, so no two pick the same port."""
    if not 0 <= index < count:
        raise FleetError(f"port share {index} of {count} does not exist")
    size = len(PORT_RANGE) // count
    start = PORT_RANGE.start + index * size
    return range(start, start + size)


def free_ports(count: int, exclude: Collection[int] = (),
               within: range = PORT_RANGE) -> list[int]:
    """`count` distinct free ports from `within` (PORT_RANGE), none in `exclude`."""
    candidates = [p for p in within if p not in exclude]
    random.shuffle(candidates)
    found: list[int] = []
    for port in candidates:
        if is_free(port):
            found.append(port)
            if len(found) == count:
                return found
    raise FleetError(f"found only {len(found)} of {count} free ports in {within}")


def start_holder(port: int, log_file: Path) -> int:
    """Start a detached process listening on 127.0.0.1:port; its pid once it listens."""
    with log_file.open("ab") as log:
        process = subprocess.Popen([sys.executable, str(HOLDER_SCRIPT), str(port)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=log, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    process.stdout.close()
    if line.strip() != b"ready":
        process.wait(timeout=5)
        raise FleetError(f"could not hold port {port} (see {log_file})")
    return process.pid


def is_holder(pid: int) -> bool:
    """True when pid is alive and runs the holder script."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(HOLDER_SCRIPT).encode() in cmdline


def stop_holder(pid: int, timeout: float = 5.0) -> None:
    """Terminate a holder started by start_holder (a no-op if it is gone)."""
    if not is_holder(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            finished = 0 if is_holder(pid) else pid
        if finished == pid or not is_holder(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
