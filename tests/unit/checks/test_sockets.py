"""Who holds a listening socket: a /proc scan learnt once, and redone for what is new."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.checks.sockets import (
    PROC,
    SocketOwners,
    _listening_sockets,
    _proc_net_listening,
    listeners_on,
)

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
          "timeout inode\n")


class FakeProc:
    """A /proc tree with net/tcp and processes whose fds link to sockets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "net").mkdir(parents=True)
        self.lines: list[str] = []
        self._write()

    def _write(self) -> None:
        (self.root / "net" / "tcp").write_text(HEADER + "".join(self.lines))
        (self.root / "net" / "tcp6").write_text(HEADER)

    def listen(self, port: int, inode: int) -> None:
        """A listening socket on 127.0.0.1:port."""
        self.lines.append(f"   0: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 "
                          f"00:00000000 00000000     0        0 {inode} 1 0 100 0 0 10 0\n")
        self._write()

    def process(self, pid: int, comm: str, *inodes: int) -> None:
        """A process holding these sockets (fds 3, 4, ...)."""
        fd_dir = self.root / str(pid) / "fd"
        fd_dir.mkdir(parents=True)
        (self.root / str(pid) / "comm").write_text(comm + "\n")
        for n, inode in enumerate(inodes, start=3):
            (fd_dir / str(n)).symlink_to(f"socket:[{inode}]")

    def close(self, pid: int, fd: int) -> None:
        (self.root / str(pid) / "fd" / str(fd)).unlink()


def holders(owners: SocketOwners, port: int) -> list[tuple[int, str]]:
    return [(x.pid, x.process) for x in owners.listeners(port, time.monotonic() + 5)]


@pytest.fixture
def learnt(tmp_path: Path) -> tuple[FakeProc, SocketOwners]:
    """Port 8000's socket held by docker-proxy (pid 10), learnt by a first question."""
    proc = FakeProc(tmp_path)
    proc.listen(8000, 111)
    proc.process(10, "docker-proxy", 111)
    owners = SocketOwners(tmp_path)
    assert holders(owners, 8000) == [(10, "docker-proxy")]
    return proc, owners


def test_a_known_socket_is_answered_without_a_scan(learnt: tuple[FakeProc, SocketOwners],
                                                   tmp_path: Path) -> None:
    proc, owners = learnt
    # A process that appears later with the same socket open is not looked for: the
    # answer comes from what the first scan learnt (a full scan would list it).
    proc.process(20, "other", 111)
    assert holders(owners, 8000) == [(10, "docker-proxy")]
    assert [x.pid for x in listeners_on(tmp_path, 8000, time.monotonic() + 5)] == [10, 20]


def test_a_new_socket_on_the_port_means_a_scan(learnt: tuple[FakeProc, SocketOwners]) -> None:
    proc, owners = learnt
    # A stranger binds the port beside it (SO_REUSEPORT, or IPv6): a socket not seen before.
    proc.listen(8000, 222)
    proc.process(30, "nc", 222)
    assert holders(owners, 8000) == [(10, "docker-proxy"), (30, "nc")]


def test_a_holder_that_let_go_means_a_scan(learnt: tuple[FakeProc, SocketOwners]) -> None:
    proc, owners = learnt
    proc.close(10, 3)
    proc.process(40, "kong", 111)  # the same socket, now another process's
    assert holders(owners, 8000) == [(40, "kong")]


def test_one_scan_learns_every_listening_socket(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    proc.listen(8000, 111)
    proc.listen(5432, 333)
    proc.process(10, "docker-proxy", 111, 333)
    owners = SocketOwners(tmp_path)
    assert holders(owners, 8000) == [(10, "docker-proxy")]
    # Learnt by the first scan: a holder that appears since is not looked for.
    proc.process(50, "other", 333)
    assert holders(owners, 5432) == [(10, "docker-proxy")]
    assert holders(owners, 9999) == []


def test_a_scan_cut_short_is_not_kept(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    proc.listen(8000, 111)
    proc.process(10, "docker-proxy", 111)
    owners = SocketOwners(tmp_path)
    assert owners.listeners(8000, deadline=0.0) == []  # no time to look at any process
    assert holders(owners, 8000) == [(10, "docker-proxy")]


def test_a_stranger_on_a_real_port_is_found_after_the_port_was_learnt() -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp here")
    owners = SocketOwners()
    with socket.socket() as first:
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        first.listen(4)
        port = first.getsockname()[1]
        assert holders(owners, port) == [(os.getpid(), _comm(os.getpid()))]
        # Another process binds the same port (SO_REUSEPORT) after the answer was learnt.
        script = ("import socket,sys,time\ns=socket.socket()\n"
                  "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)\n"
                  f"s.bind(('127.0.0.1',{port}));s.listen(1);print('up',flush=True)\n"
                  "sys.stdin.read()\n")
        stranger = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert stranger.stdout is not None and stranger.stdout.readline() == "up\n"
            assert stranger.pid in [pid for pid, _ in holders(owners, port)]
        finally:
            stranger.kill()
            stranger.wait()


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_the_kernel_and_proc_net_tcp_agree_on_listening_sockets() -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp here")
    with socket.socket() as v4:
        v4.bind(("127.0.0.1", 0))
        v4.listen(1)
        port = v4.getsockname()[1]
        from_kernel = _listening_sockets(PROC, port)
        assert list(from_kernel.values()) == ["127.0.0.1"]
        assert from_kernel == _proc_net_listening(PROC, port)
        # Every port at once, IPv6 included, as a full scan asks.
        assert _listening_sockets(PROC, None) == _proc_net_listening(PROC, None)
    assert _listening_sockets(PROC, port) == {}
