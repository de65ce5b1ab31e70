"""Who listens on a host port, and whether an instance's credentials may be sent there.

Before any request or login that carries a key, a password or basic auth, the doctor makes
sure the host port it connects to is its own container's: the engine's listing shows the
component's container running and publishing that port, and no process other than the
engine's docker-proxy listens on it (as far as /proc shows this process). A port held by
anything else gets no credential at all: a stranger on a stopped instance's gateway port
would otherwise be handed the service_role key, the anon key and the dashboard login.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from exporter.checks.base import CheckContext
from exporter.checks.sockets import SocketOwners
from exporter.discovery.model import Instance

# The engine's userland proxy: it holds a published port on behalf of the container.
ENGINE_PROXY = "docker-proxy"
_SCAN_SECONDS = 2.0


def withheld(instance: Instance, component: str, port: int | None, *,
             owners: SocketOwners | None = None, timeout: float = _SCAN_SECONDS,
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
        return _stranger(owners or SocketOwners(), port, timeout, f"{component}'s container")
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
    return _stranger(owners or SocketOwners(), port, timeout, container.name)


def _stranger(owners: SocketOwners, port: int, timeout: float, owner: str) -> str | None:
    """Why the port is another process's (one that is not the engine's proxy), or None."""
    try:
        listeners = owners.listeners(port, time.monotonic() + timeout)
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
                                           owners=ctx.sockets, timeout=ctx.timeout))


def url_port(url: str | None) -> int | None:
    """The port of a 127.0.0.1 URL, or None."""
    if not url:
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None
