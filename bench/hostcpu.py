"""Host CPU accounting for the benches: the whole host from /proc/stat, and its parts.

host_busy() and background_rate() measure everything the host does (the tool, the
instances' containers, dockerd, containerd and runc, and whatever else runs), to be taken
net of an idle window. The parts are measured on their own, which other work on a shared
host does not disturb: a process tree from /proc/<pid>/stat, containers from their cgroup,
and the engine's daemons (dockerd, containerd and the shims of given containers, with the
runc and exec'd processes they reaped) from /proc.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_CGROUP = Path("/sys/fs/cgroup")


def host_busy() -> float:
    """CPU-seconds the whole host has been busy since boot, steal included (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


def background_rate(seconds: float = 10.0) -> float:
    """Cores the host keeps busy while the thing measured is idle (healthchecks, other work).

    Ten seconds span one round of the fleet's healthchecks at the benches' interval.
    """
    busy = host_busy()
    time.sleep(seconds)
    return (host_busy() - busy) / seconds


def own_cpu() -> float:
    """CPU-seconds this process has used, all its threads (os.times)."""
    times = os.times()
    return times.user + times.system


def process_cpu(pid: int) -> float:
    """CPU-seconds of a process and its reaped children; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2:].split()
    return sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime


def container_cpu(container_ids: Iterable[str]) -> float:
    """CPU-seconds the containers' cgroups used (exec'd processes included)."""
    total = 0.0
    for cid in container_ids:
        for path, scale in ((_CGROUP / "cpuacct" / "docker" / cid / "cpuacct.usage", 1e-9),
                            (_CGROUP / "system.slice" / f"docker-{cid}.scope" / "cpu.stat",
                             1e-6)):
            try:
                text = path.read_text(encoding="ascii")
            except OSError:
                continue
            if path.name == "cpu.stat":  # cgroup v2: "usage_usec N" on the first line
                text = text.split()[1]
            total += int(text) * scale
            break
    return total


def engine_cpu(container_ids: Iterable[str]) -> float:
    """CPU-seconds of dockerd, containerd and the shims of these containers.

    A shim reaps the runc runs and the exec'd processes of its container, so this overlaps
    container_cpu() by the exec'd processes' own CPU.
    """
    wanted = set(container_ids)
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        name = os.path.basename(argv[0].decode(errors="replace")) if argv else ""
        if name in ("dockerd", "containerd") or (
                name.startswith("containerd-shim") and _shim_of(argv) in wanted):
            total += process_cpu(int(entry.name))
    return total


def _shim_of(argv: list[bytes]) -> str | None:
    for flag, value in pairwise(argv):
        if flag == b"-id":
            return value.decode(errors="replace")
    return None
