"""A process that holds a TCP port on 127.0.0.1 (the port-taken fault): accepts and closes.

Run as a script: `python holder.py PORT`. It writes "ready" on stdout once listening.
"""

from __future__ import annotations

import signal
import socket
import sys


def main(port: int) -> None:
    """Listen on 127.0.0.1:port until SIGTERM; close every connection at once."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(16)
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            conn.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
