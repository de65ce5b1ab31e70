"""Who listens on a host port, and whether an instance's credentials may be sent there.

Before any request or login that carries a key, a password or basic auth, the doctor makes
sure the host port it connects to is its own container's: the engine's listing shows the
component's container running and publishing that port, and no process other than the
engine's docker-proxy listens on it (as far as /proc shows this process). A port held by
anything else gets no credential at all: a stranger on a stopped instance's gateway port
would otherwise be handed the service_role key, the anon key and the dashboard login.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter.checks.base import CheckContext
from exporter.discovery.model import Instance

PROC = Path("/proc")
# The engine's userland proxy: it holds a published port on behalf of the container.
ENGINE_PROXY = "docker-proxy"
_SCAN_SECONDS = 2.0


@dataclass(frozen=True)
class Listener:
    """A process holding a listening TCP socket, found through /proc."""

    pid: int
    process: str
    address: str

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"pid": self.pid, "process": self.process, "address": self.address}



def listeners_on(proc: Path, port: int, deadline: float) -> list[Listener]:
    """Processes with a listening TCP socket on port (any address), via /proc."""
    sockets = _listening_sockets(proc, port)
    if not sockets:
        return []
    try:
        pids = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return []
    found: list[Listener] = []
    for pid in pids:
        if time.monotonic() > deadline:
            break
        address = _held_by(proc, pid, sockets)
        if address is not None:
            found.append(Listener(int(pid), _comm(proc, pid), address))
    return found


def _listening_sockets(proc: Path, port: int) -> dict[str, str]:
    """Each listening TCP socket on port, as its fd link reads (socket:[inode]) -> address."""
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl, local address, remote address, state (0A = LISTEN), ..., inode
            if len(fields) < 10 or fields[3] != "0A" or fields[9] == "0":
                continue
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port:
                sockets[f"socket:[{fields[9]}]"] = _address(address)
    return sockets


def _held_by(proc: Path, pid: str, sockets: dict[str, str]) -> str | None:
    """The address of the first of sockets that the process has open, if any."""
    fd_dir = proc / pid / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None  # gone, or not ours to read
    for fd in fds:
        try:
            link = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if link in sockets:
            return sockets[link]
    return None


def _comm(proc: Path, pid: str) -> str:
    try:
        return (proc / pid / "comm").read_text().strip()
    except OSError:
        return "?"


def _address(hex_address: str) -> str:
    """/proc/net/tcp's little-endian hex address as text."""
    try:
        raw = bytes.fromhex(hex_address)
    except ValueError:
        return hex_address
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    if len(raw) == 16:
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, words)
    return hex_address


def withheld(instance: Instance, component: str, port: int | None, *,
             proc: Path = PROC, timeout: float = _SCAN_SECONDS,
             listing: bool = True) -> str | None:
    """Why credentials must not go to 127.0.0.1:port, or None when it is the component's own.

    When discovery knows nothing of the component (a statically configured instance), there
    is nothing to compare with and the port is trusted. listing=False skips the listing's
    word (an operation that has just started or recreated the container holds an older
    one) and only refuses a port that /proc shows held by another process.
    """
    if port is None:
        return "its host port is unknown"
    if not listing:
        return _stranger(proc, port, timeout, f"{component}'s container")
    if not instance.runtime_known or component not in instance.components:
        return None
    found = instance.components[component]
    container = found.container
    label = found.container_name or component
    if container is None:
        return (f"{component} has no container ({label} is missing), so whatever answers on "
                f"127.0.0.1:{port} is not this instance's {component}")
    if container.state != "running":
        return (f"{container.name} is {container.state}, so whatever answers on "
                f"127.0.0.1:{port} is not it")
    if not any(p.host_port == port for p in container.ports):
        return f"{container.name} does not publish host port {port}"
    return _stranger(proc, port, timeout, container.name)


def _stranger(proc: Path, port: int, timeout: float, owner: str) -> str | None:
    """Why the port is another process's (one that is not the engine's proxy), or None."""
    try:
        listeners = listeners_on(proc, port, time.monotonic() + timeout)
    except OSError:
        listeners = []
    strangers = [x for x in listeners if x.process != ENGINE_PROXY]
    if strangers:
        who = ", ".join(f"{x.process} (pid {x.pid})" for x in strangers)
        return f"127.0.0.1:{port} is held by {who}, not by the engine for {owner}"
    return None


def withheld_in(ctx: CheckContext, component: str, port: int | None) -> str | None:
    """withheld() once per diagnostic and port: every check of the run shares the answer."""
    return ctx.shared.get(("credentials-withheld", component, port),
                          lambda: withheld(ctx.instance, component, port,
                                           timeout=ctx.timeout))


def url_port(url: str | None) -> int | None:
    """The port of a 127.0.0.1 URL, or None."""
    if not url:
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None
