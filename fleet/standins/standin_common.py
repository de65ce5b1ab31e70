"""Plumbing shared by the fleet's stand-ins for GoTrue, Kong, PostgREST and the health endpoints.

Each stand-in is a standalone script started as ``python /fleet/standins/<name>.py``; Python puts
the script's own directory first on ``sys.path``, which is how they import this module. Only the
standard library is used here.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TextIO

WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")
MAX_BODY = 16 * 1024 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_LOG_LOCK = threading.Lock()
_STOP = threading.Event()
_SERVING = threading.Event()


def _on_signal(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT: stop serving, or leave at once if still starting up."""
    if _SERVING.is_set():
        _STOP.set()
    else:
        raise SystemExit(0)


def install_signal_handlers() -> None:
    """Handle SIGTERM/SIGINT; each stand-in calls this first thing in main().

    As PID 1 an unhandled SIGTERM would be ignored, and a stop during start-up must not wait
    for the DB or the config to load.
    """
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def log_line(line: str, stream: TextIO | None = None) -> None:
    """Write one log line and flush, so `docker logs` sees it at once."""
    out = stream if stream is not None else sys.stdout
    with _LOG_LOCK:
        try:
            out.write(line + "\n")
            out.flush()
        except (OSError, ValueError):
            # A closed stdout must not take the service down with it.
            pass


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime | None = None) -> str:
    """Format a time the way Go's logrus JSON formatter does (second precision, Z suffix)."""
    return (moment or utc_now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(moment: datetime | None = None) -> str:
    """Format a time the way Go's encoding/json marshals time.Time (microseconds, Z suffix)."""
    return (moment or utc_now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clf_time(moment: datetime | None = None) -> str:
    """Format a time as in Common Log Format: 30/Nov/2026:00:00:00 +0000."""
    return (moment or utc_now()).strftime("%d/%b/%Y:%H:%M:%S +0000")


def nginx_error_time(moment: datetime | None = None) -> str:
    """Format a time as nginx's error log does: 2026/11/30 00:00:00."""
    return (moment or utc_now()).strftime("%Y/%m/%d %H:%M:%S")


def parse_go_bool(value: str) -> bool:
    """Parse a boolean as Go's strconv.ParseBool does; raise ValueError otherwise."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(value)


class StandinServer(ThreadingHTTPServer):
    """A threading HTTP server that can listen dual-stack and terminate TLS per connection."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        port: int,
        handler: type[BaseHTTPRequestHandler],
        *,
        dual_stack: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.dual_stack = dual_stack and socket.has_ipv6
        self.ssl_context = ssl_context
        if self.dual_stack:
            self.address_family = socket.AF_INET6
            host = "::"
        elif ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), handler)

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup HTTPServer does, which can stall in containers."""
        if self.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[Any, Any]:
        """Accept a connection; the TLS handshake is left to the handler thread."""
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a connection-level failure in one line instead of a traceback."""
        exc = sys.exc_info()[1]
        log_line(f"connection error from {client_address}: {exc!r}", sys.stderr)


def make_server(
    host: str,
    port: int,
    handler: type[BaseHTTPRequestHandler],
    *,
    wildcard_dual_stack: bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> StandinServer:
    """Create a server; a wildcard host listens on IPv4 and IPv6 when asked to (as Go does)."""
    dual = wildcard_dual_stack and host in WILDCARD_HOSTS
    bind_host = "0.0.0.0" if host in ("", "*") else host
    try:
        return StandinServer(bind_host, port, handler, dual_stack=dual, ssl_context=ssl_context)
    except OSError:
        if not dual:
            raise
        # No usable IPv6 in this network namespace: IPv4 alone is what is left.
        return StandinServer("0.0.0.0", port, handler, dual_stack=False, ssl_context=ssl_context)


def serve_until_signalled(
    servers: Iterable[StandinServer], on_stop: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, then stop promptly (the process may be PID 1)."""
    running = list(servers)
    for server in running:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    _SERVING.set()
    while not _STOP.wait(0.5):
        pass
    if on_stop is not None:
        on_stop()
    for server in running:
        server.shutdown()
        server.server_close()


class BaseHandler(BaseHTTPRequestHandler):
    """Request handler with explicit Server header control, body helpers and status tracking."""

    protocol_version = "HTTP/1.1"
    timeout = 75
    server_header: ClassVar[str | None] = None

    def setup(self) -> None:
        """Finish the TLS handshake (if any) in this thread, bounded by the socket timeout."""
        super().setup()
        self.status_sent = 0
        self.bytes_sent = 0
        self.started = time.monotonic()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()

    def parse_request(self) -> bool:
        """Reset the per-request bookkeeping; one connection may carry many requests."""
        self.status_sent = 0
        self.bytes_sent = 0
        self.started = time.monotonic()
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own stderr lines; each stand-in logs in its service's format."""

    def version_string(self) -> str:
        """Return the Server header value of the emulated service."""
        return self.server_header or ""

    def send_response(self, code: int, message: str | None = None) -> None:
        """Send the status line, Date and (only if the real service sends one) Server."""
        self.status_sent = code
        self.send_response_only(code, message)
        if self.server_header:
            self.send_header("Server", self.server_header)
        self.send_header("Date", self.date_time_string())

    def client_ip(self) -> str:
        """Return the peer address without an IPv4-mapped IPv6 prefix."""
        ip = str(self.client_address[0])
        return ip[7:] if ip.startswith("::ffff:") else ip

    def read_body(self, limit: int = MAX_BODY) -> bytes:
        """Read the request body (Content-Length or chunked), bounded by limit."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def send_body(
        self,
        status: int,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str | None = None,
    ) -> None:
        """Send a complete response with a correct Content-Length (body omitted for HEAD)."""
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.bytes_sent = len(body)

    def elapsed_ms(self) -> int:
        """Milliseconds since the request was accepted."""
        return int((time.monotonic() - self.started) * 1000)


def env(name: str, default: str | None = None, *alts: str) -> str | None:
    """Read an env var, falling back to alternative names and then a default."""
    for key in (name, *alts):
        if key in os.environ:
            return os.environ[key]
    return default


def libpq_message(exc: BaseException) -> str:
    """Return libpq's own wording for a psycopg connection error.

    psycopg prefixes "connection failed: " and resolves host names itself, which changes the
    wording of DNS failures; the real services (libpq/hasql, pgx) print libpq-like text.
    """
    text = str(exc).strip()
    if text.startswith("connection failed: "):
        text = text[len("connection failed: "):]
    if text.startswith("failed to resolve host '"):
        host = text[len("failed to resolve host '"):].split("'", 1)[0]
        reason = text.rsplit("]", 1)[-1].strip() if "]" in text else "Name or service not known"
        text = f'could not translate host name "{host}" to address: {reason}'
    return text


_FATAL_SQLSTATES = (
    ("password authentication failed", "28P01"),
    ("no pg_hba.conf entry", "28000"),
    ("role \"", "28000"),
    ("database \"", "3D000"),
    ("the database system is starting up", "57P03"),
    ("the database system is shutting down", "57P03"),
    ("the database system is in recovery mode", "57P03"),
    ("too many clients", "53300"),
    ("remaining connection slots are reserved", "53300"),
)


def fatal_sqlstate(message: str) -> str | None:
    """Guess the SQLSTATE of a server FATAL seen at connection time (libpq does not expose it)."""
    if "FATAL:" not in message:
        return None
    for needle, code in _FATAL_SQLSTATES:
        if needle in message:
            return code
    return "XX000"

