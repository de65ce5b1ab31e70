"""The instance's life as the registry and the disk tell it, taken as evidence.

The manager records each instance's status: "creating" while generate.bash runs (compose up
pulls images for minutes), "stopped" after its Stop (compose down: the containers are
removed, the data kept), "running" or "error" after a create or start. An instance none of
whose containers exists and whose db/data directory was never made has never started:
Docker creates that directory at the first `up`, so it is not a lost volume.

In those three states the components being down is expected: the findings that only say so
are kept but lowered to info, without a repair, under one root cause that names the state
(INSTANCE_CREATING, INSTANCE_STOPPED, INSTANCE_NOT_STARTED). Everything else (a volume lost
while stopped, a port another process holds, the instance's exposure) stays as found.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from exporter.diagnostic import RootCause
from exporter.discovery.lifecycle import UP_STATES, State, lifecycle
from exporter.discovery.model import Instance
from exporter.issues import Issue, make_issue
from exporter.rootcause import order_issues

STATE_CODES: dict[str, str] = {"creating": "INSTANCE_CREATING", "stopped": "INSTANCE_STOPPED",
                               "not_started": "INSTANCE_NOT_STARTED"}
# What an instance that is not meant to run shows: the findings that only say it is down.
DOWN_CODES = frozenset({
    "CONTAINER_MISSING", "CONTAINER_NOT_RUNNING", "CONTAINER_UNHEALTHY",
    "CONTAINER_CRASH_LOOP", "COMPONENT_UNHEALTHY", "COMPONENT_UNREACHABLE", "DB_UNREACHABLE",
    "GATEWAY_UNREACHABLE", "GATEWAY_UPSTREAM_ERROR", "PORT_NOT_LISTENING",
    "INTERNAL_LINK_DOWN", "AUTH_UNHEALTHY", "AUTH_USER_CREATE_FAILED", "NETWORK_MISSING",
    "LOG_ERROR_SPIKE", "ENDPOINT_SLOW",
})


@dataclass(frozen=True)
class Settled:
    """The issues of an instance not meant to run, and the state that explains them."""

    state: State
    issues: tuple[Issue, ...]
    root_cause: RootCause


def settle(instance: Instance, issues: list[Issue], now: datetime) -> Settled | None:
    """The issues as the instance's state explains them; None when it is meant to run."""
    state = lifecycle(instance, now)
    if state == "running":
        return None
    cause = _state_issue(instance, state)
    lowered = [replace(i, severity="info", repair=None) if i.code in DOWN_CODES else i
               for i in issues]
    explained = tuple(i for i in lowered if i.code in DOWN_CODES)
    return Settled(state, tuple(order_issues([cause, *lowered])),
                   RootCause(cause, explained))


def _state_issue(instance: Instance, state: State) -> Issue:
    registry = instance.registry
    components = instance.components.values()
    up = sum(1 for c in components if c.container and c.container.state in UP_STATES)
    evidence = {"registry_status": registry.status, "registry_updated_at": registry.updated_at,
                "containers_up": up, "containers_expected": len(instance.components),
                "data_dir_exists": registry.data_dir_exists}
    if state == "creating":
        message = (f"the manager is creating {instance.id} (registry status \"creating\", "
                   f"saved {registry.updated_at or 'at an unknown time'}); {up} of "
                   f"{len(instance.components)} containers are up so far")
    elif state == "stopped":
        message = (f"{instance.id} was stopped by its owner: the registry says \"stopped\" "
                   "and none of its containers runs")
    else:
        data = instance.files.volume_dirs.get("db_data")
        message = (f"{instance.id} has never been started: none of its containers exists and "
                   f"{data or 'its db data directory'} was never created (Docker creates it "
                   "at the first start)")
    return make_issue(STATE_CODES[state], check="discovery", message=message,
                      evidence=evidence)
