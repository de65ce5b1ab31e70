"""container_status: each expected component's container state, health, restarts and exits.

The Docker listing (already in the instance) gives state and health; only containers that
are not plainly fine are inspected, for restart count, exit code, error and OOM kill.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from typing import NotRequired, TypedDict

from exporter.checks.base import CheckContext, Family, Findings
from exporter.discovery.model import Component
from exporter.dockerhost import ContainerDetails, ContainerSummary
from exporter.errors import DockerUnavailableError
from exporter.issues import Issue, make_issue

# A container that restarted this often and started this recently is crash-looping.
CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW_SECONDS = 120.0
# Between two looks at most this far apart, this many restarts mean a loop too.
GROWTH_RESTARTS = 2
GROWTH_WINDOW_SECONDS = 900.0
# Restart counts not refreshed for this long are forgotten (containers come and go).
FORGET_AFTER_SECONDS = 3600.0

# "Up 5 seconds", "Up Less than a second", "Up About a minute": started in the crash window.
_RECENTLY_UP = re.compile(r"^Up (Less than a second|\d+ seconds?|About a minute)\b")


class ContainerState(TypedDict):
    """One component's container as details show it (restarts only when it was inspected)."""

    state: str  # Docker's state, or "missing"
    health: str | None
    restarts: int | None
    exit_code: int | None  # of a container that is not running


class ContainerStatusDetails(TypedDict):
    """container_status's details."""

    components: dict[str, ContainerState]
    inspect_error: NotRequired[str]  # why inspecting stopped (the engine failed)
    over_by_live_checks: NotRequired[list[str]]  # codes exporter.logs.staleness took out


CONTAINER_STATUS: Family[ContainerStatusDetails] = Family("container_status")


class ContainerStatusCheck:
    """Every expected container exists, runs, is healthy and is not crash-looping."""

    name = CONTAINER_STATUS.name

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # container id -> (restart count, epoch seconds when seen); shared by all instances.
        self._restarts: dict[str, tuple[int, float]] = {}

    def run(self, ctx: CheckContext) -> Findings:
        """Judge each expected component from the listing, inspecting only the doubtful."""
        if not ctx.instance.runtime_known:
            return Findings(skipped="docker unreachable")
        self._forget_old(ctx.now)
        issues: list[Issue] = []
        components: dict[str, ContainerState] = {}
        inspect_error: str | None = None
        for name, component in ctx.instance.components.items():
            container = component.container
            if container is None:
                components[name] = {"state": "missing", "health": None, "restarts": None,
                                    "exit_code": None}
                issues.append(make_issue(
                    "CONTAINER_MISSING", check=self.name, component=name,
                    message=f"no container for {name} "
                            f"(expected {component.container_name or 'a ' + name + ' service'})",
                    evidence={"container_name": component.container_name,
                              "compose_project": ctx.instance.compose_project}))
                continue
            details: ContainerDetails | None = None
            # After one failed inspect the engine is in trouble: don't pay a timeout each.
            if needs_inspect(container) and inspect_error is None:
                try:
                    details = ctx.docker.inspect(container.id)
                except DockerUnavailableError as exc:
                    inspect_error = ctx.redactor.text(str(exc))
            running = container.state == "running"
            components[name] = {
                "state": container.state,
                "health": container.health,
                "restarts": details.restart_count if details else None,
                "exit_code": details.exit_code if details and not running else None,
            }
            issues.extend(self._judge(ctx, component, container, details))
        out: ContainerStatusDetails = {"components": components}
        if inspect_error:
            out["inspect_error"] = inspect_error
        return Findings(tuple(issues), out)

    def _judge(self, ctx: CheckContext, component: Component, container: ContainerSummary,
               details: ContainerDetails | None) -> list[Issue]:
        name, state = component.name, container.state
        issues: list[Issue] = []
        error = ctx.redactor.text(details.error) if details and details.error else None
        loop = self._crash_loop(ctx, container, details)
        if loop is not None:
            issues.append(make_issue(
                "CONTAINER_CRASH_LOOP", check=self.name, component=name,
                message=f"{container.name} keeps restarting ({loop})",
                evidence={"state": state, "status": container.status,
                          "restart_count": details.restart_count if details else None,
                          "exit_code": details.exit_code if details else None,
                          "error": error,
                          "started_at": details.started_at if details else None}))
        if state == "running":
            if container.health == "unhealthy":
                last = details.health_log[-1] if details and details.health_log else None
                issues.append(make_issue(
                    "CONTAINER_UNHEALTHY", check=self.name, component=name,
                    message=f"{container.name} fails its healthcheck",
                    evidence={"status": container.status,
                              "last_output": ctx.redactor.text(last) if last else None}))
        elif loop is None:
            # A crash loop already says it is down, and "start it" would be the wrong advice.
            message = _not_running_message(container, details)
            if error:
                message += f": {error[:200]}"
            issues.append(make_issue(
                "CONTAINER_NOT_RUNNING", check=self.name, component=name,
                message=message,
                evidence={"state": state, "status": container.status,
                          "exit_code": details.exit_code if details else None,
                          "error": error,
                          "finished_at": details.finished_at if details else None}))
        if details is not None and details.oom_killed:
            issues.append(make_issue(
                "CONTAINER_OOM_KILLED", check=self.name, component=name,
                message=f"{container.name} was killed for running out of memory",
                evidence={"state": state, "exit_code": details.exit_code,
                          "finished_at": details.finished_at,
                          "restart_count": details.restart_count}))
        return issues

    def _crash_loop(self, ctx: CheckContext, container: ContainerSummary,
                    details: ContainerDetails | None) -> str | None:
        """Why the container counts as crash-looping, or None."""
        previous = self._remember(container.id, details, ctx.now) if details else None
        if container.state == "restarting":
            return "Docker is restarting it"
        if details is None:
            return None
        count = details.restart_count
        started = _parse_time(details.started_at)
        now = ctx.now if ctx.now.tzinfo else ctx.now.replace(tzinfo=UTC)
        if (count >= CRASH_LOOP_RESTARTS and started is not None
                and (now - started).total_seconds() < CRASH_LOOP_WINDOW_SECONDS):
            return f"{count} restarts, the last one under {CRASH_LOOP_WINDOW_SECONDS:g}s ago"
        if previous is not None and count - previous >= GROWTH_RESTARTS:
            return f"restarted {count - previous} times since the previous check"
        return None

    def _remember(self, container_id: str, details: ContainerDetails, now: datetime
                  ) -> int | None:
        """Store this restart count; the previous one if seen recently enough."""
        stamp = now.timestamp()
        with self._lock:
            before = self._restarts.get(container_id)
            self._restarts[container_id] = (details.restart_count, stamp)
        if before is None or stamp - before[1] > GROWTH_WINDOW_SECONDS:
            return None
        return before[0]

    def _forget_old(self, now: datetime) -> None:
        """Drop restart counts of containers not inspected for a long time."""
        stamp = now.timestamp()
        with self._lock:
            for cid, (_, seen) in list(self._restarts.items()):
                if stamp - seen > FORGET_AFTER_SECONDS:
                    del self._restarts[cid]


def needs_inspect(container: ContainerSummary) -> bool:
    """True unless the listing shows it running and healthy (or running long, unchecked)."""
    if container.state != "running":
        return True
    if container.health in ("unhealthy", "starting"):
        return True
    # Without a healthcheck, a fresh start is the only hint of a loop the listing gives.
    return container.health is None and _RECENTLY_UP.match(container.status) is not None


def _not_running_message(container: ContainerSummary, details: ContainerDetails | None) -> str:
    state = container.state
    if state == "paused":
        return f"{container.name} is paused: its processes are frozen and answer nothing"
    if state == "created":
        return f"{container.name} was created but never started"
    if state == "exited":
        code = details.exit_code if details else None
        return f"{container.name} has exited" + (f" with code {code}" if code is not None
                                                 else "")
    return f"{container.name} is {state or 'in an unknown state'}"


def _parse_time(value: str) -> datetime | None:
    """Docker's RFC 3339 time (nanoseconds allowed); None for empty or the zero time."""
    if not value or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
