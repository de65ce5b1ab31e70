"""L1 of the security review: the superuser password sent in clear to whatever holds a port.

The attack: while an instance's db container is down (during the doctor's own safe
restart, say), any local user can bind its published port on 127.0.0.1. A listener that
answers the startup with AuthenticationCleartextPassword received the instance's superuser
password from every doctor login (sweep, repair, restart capture, pg_dump). Now every
login requires SCRAM: libpq refuses to answer a cleartext or MD5 request, and pg_dump runs
only after a SCRAM-only login to the same port succeeded.

The listener here speaks the real wire protocol (SSLRequest, StartupMessage,
AuthenticationRequest, PasswordMessage) as libpq expects it.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from actions.backups import BackupFailed, BackupStore
from exporter.discovery.model import Credentials, Endpoints
from exporter.pg import DbLogin, try_login
from tests.unit.actions.test_files import make_instance, write_manager_registry

PASSWORD = "instance-superuser-pw"
SSL_REQUEST = 80877103
AUTH = {"cleartext": struct.pack("!cii", b"R", 8, 3),
        "md5": struct.pack("!cii", b"R", 12, 5) + b"salt",
        "none": struct.pack("!cii", b"R", 8, 0)}


class Squatter:
    """A process holding a db port: it asks for the password the way `mode` says."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received: list[bytes] = []
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                self.connections += 1
                self._talk(conn)

    def _read(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        try:
            length, code = struct.unpack("!ii", self._read(conn, 8))
            if code == SSL_REQUEST:
                conn.sendall(b"N")
                length, code = struct.unpack("!ii", self._read(conn, 8))
            self._read(conn, length - 8)  # the startup parameters
            conn.sendall(AUTH[self.mode])
            kind = self._read(conn, 1)
            size = struct.unpack("!i", self._read(conn, 4))[0]
            self.received.append(kind + self._read(conn, size - 4))
        except (OSError, ConnectionError, struct.error):
            return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def heard_password(self) -> bool:
        return any(PASSWORD.encode() in message for message in self.received)


@pytest.fixture(params=["cleartext", "md5", "none"])
def squatter(request: pytest.FixtureRequest) -> Iterator[Squatter]:
    listener = Squatter(request.param)
    yield listener
    listener.close()


def test_the_listener_is_faithful_without_require_auth() -> None:
    # Control: the review's observation, with libpq's default behaviour.
    listener = Squatter("cleartext")
    try:
        with pytest.raises(psycopg.Error):
            psycopg.connect(host="127.0.0.1", port=listener.port, user="supabase_admin",
                            password=PASSWORD, dbname="postgres", connect_timeout=3,
                            sslmode="prefer", gssencmode="disable")
        assert listener.heard_password()
    finally:
        listener.close()


def test_a_doctor_login_sends_it_nothing(squatter: Squatter) -> None:
    result = try_login("127.0.0.1", squatter.port, DbLogin("supabase_admin", PASSWORD), 3)
    assert result.outcome == "unreachable"
    assert squatter.connections >= 1
    assert not squatter.heard_password() and squatter.received == []
    assert PASSWORD not in result.reason


def test_pg_dump_is_never_started_against_it(squatter: Squatter, tmp_path: Path) -> None:
    write_manager_registry(tmp_path, "4a3c9fac")
    instance = dataclasses.replace(make_instance(tmp_path),
                                   endpoints=Endpoints(db_port=squatter.port),
                                   credentials=Credentials(postgres_password=PASSWORD))
    ran = tmp_path / "pg_dump-ran"
    stub = tmp_path / "pg_dump"
    stub.write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")
    stub.chmod(0o755)
    store = BackupStore(tmp_path / "backups", pg_dump=str(stub))
    with pytest.raises(BackupFailed) as caught:
        store.create(instance, "with db", db_dump=True)
    assert PASSWORD not in str(caught.value)
    assert not ran.exists()
    assert not squatter.heard_password()
    assert list((tmp_path / "backups" / instance.id).iterdir()) == []
