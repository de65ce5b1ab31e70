"""The WSGI servers: waitress, with the body limit and an authentication gate in front.

waitress reads a request's whole body (spilling it to a temporary file past 512 KiB)
before the app, and so before authentication and Flask's MAX_CONTENT_LENGTH, sees the
request. Here the request parser itself decides, as soon as the headers are complete:

- a request that announces a body and does not carry a bearer credential that
  authenticates is answered 401 at once, not one byte of its body read, unless the body is
  small and of announced length (UNVERIFIED_BODY_BYTES): the console's forms are
  authenticated by their session cookie in the app, and its sign-in form carries the
  credential itself. Such a body is held in memory, never spooled to a file;
- an authenticated body is read up to `api.max_body_bytes` and refused with 413 beyond it,
  as Flask refuses it too (both limits come from the same config key).

Both answers are the APIs' JSON errors and close the connection, so the unread body is
never parsed as another request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from flask import Flask
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.utilities import Error, RequestEntityTooLarge

from exporter.access import AccessControl, AccessError, Unauthorized
from exporter.web.access import ACCESS_EXTENSION

# Worker threads per app: ?wait=true holds at most actions.max_waits of them.
WSGI_THREADS = 8
# A request line and headers larger than this are refused (431); a real one is a few KiB
# (the longest credential taken is 8 KiB).
MAX_HEADER_BYTES = 32 * 1024
# The largest body read before the app has seen who sent it (the console's forms, a few
# KiB each); waitress keeps bodies below its 512 KiB inbuf_overflow in memory.
UNVERIFIED_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Listener:
    """One app on one address."""

    app: Flask
    host: str
    port: int


class _JsonError(Error):
    """A waitress error answered with the APIs' JSON error body."""

    error_code = "error"
    extra_headers: tuple[tuple[str, str], ...] = ()

    # types-waitress says the body is str; waitress 3 returns (and task.py writes) bytes.
    def to_response(  # type: ignore[override]
            self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        """Status, headers and the JSON body `{"error": {"code", "message"}}`."""
        body = json.dumps({"error": {"code": self.error_code, "message": self.body}}).encode()
        headers = [("Content-Type", "application/json"), *self.extra_headers]
        return f"{self.code} {self.reason}", headers, body


class _Unauthenticated(_JsonError):
    code = 401
    reason = "Unauthorized"
    error_code = Unauthorized.code
    extra_headers = (("WWW-Authenticate", "Bearer"),)


class _TooLarge(_JsonError):
    code = 413
    reason = "Request Entity Too Large"
    error_code = "request_entity_too_large"


def _parser_class(authenticated: Callable[[str | None], bool],
                  max_body: int) -> type[HTTPRequestParser]:
    """A request parser that reads no body of an unauthenticated request."""

    class GatedParser(HTTPRequestParser):
        """waitress's parser, with the authentication gate after the headers."""

        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            chunked = bool(self.chunked)
            length = int(self.content_length)
            small = not chunked and length <= UNVERIFIED_BODY_BYTES
            if not small and not authenticated(self.headers.get("AUTHORIZATION")):
                # No receiver: the parser completes with the headers and the error.
                self.body_rcv = None
                self.chunked = False
                self.content_length = 0
                self.expect_continue = False
                self.connection_close = True
                self.error = _Unauthenticated(Unauthorized.MESSAGE)

        def received(self, data: bytes) -> int:
            consumed: int = super().received(data)
            if isinstance(self.error, RequestEntityTooLarge):
                self.error = _TooLarge(f"the request body is larger than {max_body} bytes")
            return consumed

    return GatedParser


def _authenticator(app: Flask) -> Callable[[str | None], bool]:
    access = app.extensions.get(ACCESS_EXTENSION)
    if not isinstance(access, AccessControl):
        raise RuntimeError("the app has no access control (init_access was not called)")

    def authenticated(authorization: str | None) -> bool:
        try:
            access.authenticate(authorization)
        except AccessError:
            return False
        return True

    return authenticated


def create_servers(listeners: Iterable[Listener], sockets: MutableMapping[int, Any], *,
                   max_body: int) -> list[BaseWSGIServer | MultiSocketServer]:
    """One waitress server per listener, all in `sockets` (one I/O loop drives them)."""
    servers: list[BaseWSGIServer | MultiSocketServer] = []
    try:
        for listener in listeners:
            before = set(sockets)
            server = create_server(
                listener.app, map=sockets, host=listener.host, port=listener.port,
                threads=WSGI_THREADS, ident="ultrabase-doctor",
                # waitress refuses a Content-Length >= this; Flask one > max_body.
                max_request_body_size=max_body + 1,
                max_request_header_size=MAX_HEADER_BYTES)
            servers.append(server)
            channel = type("GatedChannel", (HTTPChannel,), {
                "parser_class": _parser_class(_authenticator(listener.app), max_body)})
            # The listening sockets this call added: each makes the channels of its clients.
            for fd in set(sockets) - before:
                if isinstance(sockets[fd], BaseWSGIServer):
                    sockets[fd].channel_class = channel
    except BaseException:
        for made in servers:
            made.close()
        raise
    return servers
