"""Flask apps served by the real waitress servers of exporter.web.wsgi, on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from flask import Flask

from exporter.web.wsgi import Listener, create_servers


class Served:
    """The apps on ephemeral 127.0.0.1 ports, one I/O loop, as `serve_until_stopped` runs them."""

    def __init__(self, *apps: Flask, max_body: int = 1024 * 1024) -> None:
        self.sockets: dict[int, Any] = {}
        self.servers = create_servers([Listener(app, "127.0.0.1", 0) for app in apps],
                                      self.sockets, max_body=max_body)
        self.ports = [int(server.effective_port) for server in self.servers]
        self._closing = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="served-loop")
        self._thread.start()

    def _loop(self) -> None:
        try:
            self.servers[-1].run()
        except OSError:
            # close() shuts the sockets under the loop's select (EBADF): that is its end.
            if not self._closing:
                raise

    def url(self, index: int = 0) -> str:
        """The base URL of the index-th app."""
        return f"http://127.0.0.1:{self.ports[index]}"

    def connect(self, index: int = 0) -> socket.socket:
        """A raw TCP connection to the index-th app."""
        return socket.create_connection(("127.0.0.1", self.ports[index]), timeout=5)

    def close(self) -> None:
        """Close every socket of the loop (so it ends) and stop the worker threads."""
        logging.getLogger("waitress").setLevel(logging.CRITICAL)
        self._closing = True
        while self.sockets:
            for dispatcher in list(self.sockets.values()):
                dispatcher.handle_close()
        for server in self.servers:
            server.task_dispatcher.shutdown()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the waitress loop did not stop"


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and body of one HTTP/1.1 response, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body
