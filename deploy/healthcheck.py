#!/usr/bin/env python3
"""Container healthcheck: does the exporter's (or the action API's) /healthz answer?

    ultrabase-doctor-healthcheck [exporter|actions|URL]

With a service name (default: exporter) the URL is built from that service's `host` and
`port` in the config file ($ULTRABASE_DOCTOR_CONFIG), so a config that moves a service to
another address or port needs no healthcheck change. A wildcard host (0.0.0.0, ::) is
probed on loopback. Exit 0 when /healthz answers 200, or 401/403 (api.protect_metrics
puts /healthz behind a token: the process still answers); 1 otherwise.

Standard library and PyYAML only (both are in the image); no project import, so a broken
install cannot make the healthcheck hang.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_CONFIG = "/etc/ultrabase-doctor/config.yaml"
DEFAULT_PORTS = {"exporter": 9646, "actions": 9647}
ALIVE_STATUSES = frozenset({200, 401, 403})
TIMEOUT_SECONDS = 4.0


def service_url(service: str, config: Mapping[str, Any]) -> str:
    """The /healthz URL of service as its config section places it."""
    section = config.get(service) or {}
    if not isinstance(section, Mapping):
        section = {}
    host = str(section.get("host") or "127.0.0.1")
    port = int(section.get("port") or DEFAULT_PORTS[service])
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard bind is probed on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def read_config(path: str) -> Mapping[str, Any]:
    """The config mapping; empty when the file is missing (defaults apply)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, Mapping) else {}


def probe(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """(alive, what happened) for one GET of url."""
    # main() lets only http(s) URLs through.
    request = urllib.request.Request(  # noqa: S310
        url, headers={"User-Agent": "ultrabase-doctor-healthcheck"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"
    return status in ALIVE_STATUSES, f"{url}: HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status for Docker's HEALTHCHECK."""
    args = list(sys.argv[1:] if argv is None else argv)
    target = args[0] if args else "exporter"
    if target in DEFAULT_PORTS:
        try:
            config = read_config(os.environ.get("ULTRABASE_DOCTOR_CONFIG") or DEFAULT_CONFIG)
            url = service_url(target, config)
        except Exception as exc:  # any unreadable config is simply "unhealthy"
            print(f"cannot read the config: {exc}", file=sys.stderr)
            return 1
    elif target.startswith(("http://", "https://")):
        url = target
    else:
        print(f"usage: {os.path.basename(sys.argv[0])} [exporter|actions|URL]", file=sys.stderr)
        return 1  # Docker reserves exit code 2
    alive, what = probe(url)
    print(what)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
