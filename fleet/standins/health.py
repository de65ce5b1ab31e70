"""Generic stand-in for Supabase components that only need to look alive.

Started as ``python health.py --port P [--name NAME] [--host HOST]``. Every GET or HEAD on any
path answers 200 with ``{"status":"ok","name":NAME}``, which covers the health endpoints the
compose template probes: studio /api/profile, realtime /api/tenants/realtime/health, storage
/status, imgproxy /health, meta /health, analytics /health, vector /health, pooler /api/health.
A wildcard host listens on IPv4 and IPv6, so `localhost` works whichever address it resolves to.
"""

from __future__ import annotations

import argparse
import json

from standin_common import (
    BaseHandler,
    clf_time,
    install_signal_handlers,
    log_line,
    make_server,
    serve_until_signalled,
)


class Handler(BaseHandler):
    """Answer 200 on every GET/HEAD path; other methods get 405."""

    name = "standin"
    # Real components (Next.js, Phoenix, ...) close idle keep-alive connections within a few
    # seconds; a client that never reads the body (studio's node healthcheck) relies on it.
    timeout = 5

    def _ok(self) -> None:
        """Send the health document and log the request."""
        body = json.dumps({"status": "ok", "name": self.name}, separators=(",", ":")).encode()
        self.send_body(200, body, content_type="application/json")
        self._log()

    do_GET = do_HEAD = _ok

    def _not_allowed(self) -> None:
        """Reject methods a health endpoint does not take."""
        self.read_body()
        self.send_body(405, b"", [("Allow", "GET, HEAD")])
        self._log()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def _log(self) -> None:
        """One access line per request."""
        log_line(f'{self.client_ip()} - - [{clf_time()}] "{self.requestline}" '
                 f"{self.status_sent} {self.bytes_sent}")


def main() -> None:
    """Parse the arguments and serve until SIGTERM."""
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="standin")
    parser.add_argument("--host", default="")
    args = parser.parse_args()
    Handler.name = args.name
    server = make_server(args.host, args.port, Handler)
    log_line(f"{args.name} stand-in listening on port {args.port}")
    serve_until_signalled([server])


if __name__ == "__main__":
    main()
