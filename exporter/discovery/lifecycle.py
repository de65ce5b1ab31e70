"""What the registry and the disk say an instance is meant to be doing (no checks needed).

See exporter.lifecycle for how a diagnostic takes it as evidence.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from exporter.discovery.model import Instance

State = Literal["running", "creating", "stopped", "not_started"]
# A "creating" older than this is not believed: the manager gives up a creation after 10
# minutes (server.js POST /api/instances) and generate.bash after 3 tries of 15.
CREATING_AT_MOST = timedelta(hours=1)
# Container states in which something of the instance is up.
UP_STATES = frozenset({"running", "restarting", "paused"})


def lifecycle(instance: Instance, now: datetime) -> State:
    """What the registry and the disk say the instance is meant to be doing."""
    if not instance.runtime_known:
        return "running"  # without Docker's word, nothing is known to be down
    registry = instance.registry
    containers = [c.container for c in instance.components.values() if c.container]
    if registry.status == "creating" and not _older(registry.updated_at, now):
        return "creating"
    if registry.status == "stopped" and not any(c.state in UP_STATES for c in containers):
        return "stopped"
    if not containers and registry.data_dir_exists is False:
        return "not_started"
    return "running"


def never_started(instance: Instance, now: datetime) -> bool:
    """True while Docker has not yet made the instance's volume directories."""
    return lifecycle(instance, now) in ("creating", "not_started")


def _older(stamp: str | None, now: datetime) -> bool:
    """True when the registry's time is known and older than CREATING_AT_MOST."""
    if not stamp:
        return False
    try:
        saved = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return False
    if saved.tzinfo is None or now.tzinfo is None:
        return False
    return now - saved > CREATING_AT_MOST
