"""Listening TCP sockets on this host (sock_diag netlink, or /proc/net/tcp) and the processes
that hold them (their open files in /proc)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")


@dataclass(frozen=True)
class Listener:
    """A process holding a listening TCP socket, found through /proc."""

    pid: int
    process: str
    address: str

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"pid": self.pid, "process": self.process, "address": self.address}


@dataclass(frozen=True)
class _Holder:
    """A process's open fd on a listening socket."""

    pid: str
    fd: str
    process: str


def listeners_on(proc: Path, port: int, deadline: float) -> list[Listener]:
    """Processes with a listening TCP socket on port (any address), via /proc."""
    sockets = _listening_sockets(proc, port)
    return _listeners(sockets, _scan(proc, sockets, deadline)[0]) if sockets else []


def _listening_sockets(proc: Path, port: int | None) -> dict[str, str]:
    """Each listening TCP socket on port (every port: None), as its fd link reads
    (socket:[inode]) -> address.

    The host's own /proc asks the kernel over sock_diag netlink, which walks only the
    listening sockets: reading /proc/net/tcp walks every socket table whatever it holds
    (4 ms a file here against 0.05 ms). /proc/net/tcp is the fallback, and the only source
    for another proc tree.
    """
    if proc == PROC:
        with contextlib.suppress(OSError):
            return {f"socket:[{inode}]": address
                    for inode, address, at in _sock_diag_listening()
                    if port is None or at == port}
    return _proc_net_listening(proc, port)


def _proc_net_listening(proc: Path, port: int | None) -> dict[str, str]:
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
            if port is None or int(hex_port, 16) == port:
                sockets[f"socket:[{fields[9]}]"] = _address(address)
    return sockets


# sock_diag (linux/sock_diag.h, linux/inet_diag.h): a dump of one family's TCP sockets in
# the states asked for, each an inet_diag_msg after its netlink header.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI48x")  # family, protocol, ext, pad, states, socket id (0)
_MAX_MESSAGES = 100_000


def _sock_diag_listening() -> list[tuple[int, str, int]]:
    """(inode, address, port) of every listening TCP socket, IPv4 and IPv6; raises OSError."""
    found: list[tuple[int, str, int]] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        found += _sock_diag_dump(family)
    return found


def _sock_diag_dump(family: int) -> list[tuple[int, str, int]]:
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
    header = _NLMSG.pack(_NLMSG.size + len(request), _SOCK_DIAG_BY_FAMILY,
                         _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    out: list[tuple[int, str, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        nl.send(header + request)
        for _ in range(_MAX_MESSAGES):
            data = nl.recv(65536)
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind = _NLMSG.unpack_from(data, offset)[:2]
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR or length < _NLMSG.size:
                    raise OSError("sock_diag answered with an error")
                body = data[offset + _NLMSG.size:offset + length]
                # inet_diag_msg: family, state, timer, retrans, then the socket id (source
                # port big-endian at 4, source address at 8), expires, queues, uid, inode.
                if len(body) >= 72 and body[1] == _TCP_LISTEN:
                    raw = body[8:12] if body[0] == socket.AF_INET else body[8:24]
                    inode = struct.unpack_from("=I", body, 68)[0]
                    if inode:
                        out.append((inode, socket.inet_ntop(body[0], raw),
                                    struct.unpack_from(">H", body, 4)[0]))
                offset += (length + 3) & ~3
    raise OSError("sock_diag's answer did not end")


def _scan(proc: Path, sockets: Mapping[str, str],
          deadline: float) -> tuple[dict[str, list[_Holder]], bool]:
    """Every process's fds on sockets, by socket, and whether the scan saw every process
    (deadline may cut it short)."""
    try:
        pids = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return {}, True
    found: dict[str, list[_Holder]] = {}
    for pid in pids:
        if time.monotonic() > deadline:
            return found, False
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        comm: str | None = None
        for fd in fds:
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if link in sockets:
                comm = comm or _comm(proc, pid)
                found.setdefault(link, []).append(_Holder(pid, fd, comm))
    return found, True


def _listeners(sockets: Mapping[str, str],
               holders: Mapping[str, Sequence[_Holder]]) -> list[Listener]:
    """One Listener per process holding any of sockets (its first such socket's address)."""
    out: dict[str, Listener] = {}
    for link, address in sockets.items():
        for holder in holders.get(link, ()):
            out.setdefault(holder.pid, Listener(int(holder.pid), holder.process, address))
    return sorted(out.values(), key=lambda x: x.pid)


class SocketOwners:
    """Who holds each listening socket, with /proc scanned only for a socket not seen before.

    Reading every process's fds costs more the more containers the host runs (half a
    diagnostic's CPU with 10 instances), yet the sockets on an instance's ports are its
    docker-proxy's for as long as they exist. So each question reads the listening sockets
    afresh (cheap), and answers from what an earlier scan found when every socket on the
    port is known and each known holder still has it open (one readlink each); a new
    socket on the port (a stranger's, bound since) or a holder gone means a full scan,
    which learns every listening socket of the host at once. One is shared by a whole
    engine; it is thread-safe, and concurrent misses wait for one scan.
    """

    def __init__(self, proc: Path = PROC) -> None:
        self._proc = proc
        self._lock = threading.Lock()
        self._known: dict[str, tuple[_Holder, ...]] = {}

    def listeners(self, port: int, deadline: float) -> list[Listener]:
        """Processes with a listening TCP socket on port, as listeners_on() finds them."""
        sockets = _listening_sockets(self._proc, port)
        if not sockets:
            return []
        with self._lock:
            if all(self._still_held(link) for link in sockets):
                return _listeners(sockets, self._known)
            wanted = _listening_sockets(self._proc, None) | sockets
            scanned, complete = _scan(self._proc, wanted, deadline)
            if complete:
                self._known = {link: tuple(scanned.get(link, ())) for link in wanted}
            # A scan cut short answers with what it found and is not kept: it may have
            # missed a holder.
        return _listeners(sockets, scanned)

    def _still_held(self, link: str) -> bool:
        holders = self._known.get(link)
        if holders is None:
            return False
        for holder in holders:
            try:
                if os.readlink(self._proc / holder.pid / "fd" / holder.fd) != link:
                    return False
            except OSError:
                return False
        return True


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
