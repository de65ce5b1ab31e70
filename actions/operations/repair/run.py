"""Running a repair: per action a backup, the act, verification; the first failure rolled back.

`RepairSession` is what the acts share: the operation context, the instance as it is now,
its containers through the Docker layer, and the timeouts of the validated config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg

from actions.containers import Containers, Readiness, poll_until, wait_healthy
from actions.operations.model import OperationError
from actions.operations.repair.plan import (
    RepairAction,
    RepairError,
    label,
    remaining_issues,
)
from actions.operations.runner import OperationContext
from exporter.discovery.model import Instance
from exporter.dockerhost import ContainerDetails
from exporter.errors import DoctorError

log = logging.getLogger(__name__)

_POLL_SECONDS = 1.0
# Each verification runs checks: they are re-run this far apart.
_VERIFY_POLL_SECONDS = 2.0

# -- running --------------------------------------------------------------------------------


@dataclass
class Journal:
    """What an action changed, as undo steps: data (files, roles) first, then services."""

    data: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    services: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def undo(self) -> list[dict[str, Any]]:
        """Run every undo step (later ones first within each kind); each step's outcome."""
        done: list[dict[str, Any]] = []
        for what, step in [*reversed(self.data), *reversed(self.services)]:
            try:
                step()
            except Exception as exc:  # one failed undo must not stop the others
                done.append({"what": what, "ok": False, "error": type(exc).__name__})
                log.warning("rollback step %r failed: %s", what, type(exc).__name__)
            else:
                done.append({"what": what, "ok": True})
        return done


ActFn = Callable[["RepairSession", RepairAction, Journal, dict[str, Any]], None]


def run_actions(ctx: OperationContext, actions: Sequence[RepairAction],
                acts: Mapping[str, ActFn]) -> dict[str, Any]:
    """Backup, act, verify each action; the first failure is rolled back and ends the run."""
    runner = RepairSession(ctx)
    succeeded: list[str] = []
    for n, action in enumerate(actions):
        journal = Journal()
        try:
            with ctx.step(f"repair {action.id}", action=action.action,
                          component=action.component,
                          issue_codes=list(action.issue_codes)) as detail:
                backup = ctx.backups.create(runner.instance(), f"before repair {action.id}")
                detail["backup_id"] = backup.id
                act = acts.get(action.action)
                if act is None:
                    raise RepairError(f"{action.action} cannot be run automatically")
                act(runner, action, journal, detail)
                detail["verify"] = runner.verify(action)
        except Exception as exc:
            why = runner.reason(exc)
            undone, clean = runner.rollback(action, journal)
            later = [a.id for a in actions[n + 1:]]
            message = f"repair {action.id} failed: {why}; {undone}"
            if succeeded:
                message += f"; done before it and kept: {', '.join(succeeded)}"
            if later:
                message += f"; not run: {', '.join(later)}"
            # "rolled back" only when the instance is back where the operation found it.
            raise OperationError(message, rolled_back=clean and not succeeded) from None
        succeeded.append(action.id)
    return {"actions": [a.id for a in actions], "succeeded": succeeded,
            "message": "nothing to repair" if not actions
            else f"{len(succeeded)} repair action(s) done and verified"}


class RepairSession:
    """The operation context plus the helpers the acts share."""

    def __init__(self, ctx: OperationContext) -> None:
        self.ctx = ctx
        settings = ctx.config.actions
        self.health_timeout = settings.health_timeout_seconds
        self.stop_timeout = settings.stop_timeout_seconds
        self.verify_window = min(settings.verify_seconds, self.health_timeout)

    @cached_property
    def docker(self) -> Containers:
        """The instance's containers, through the action side's Docker layer."""
        return Containers(self.ctx.docker, self.ctx.compose)

    @property
    def instance_id(self) -> str:
        """The instance operated on."""
        return self.ctx.instance.id

    def instance(self) -> Instance:
        """The instance as it is now (discovery run afresh: containers change under us)."""
        return self.ctx.refresh()

    def secret(self, *values: str | None) -> None:
        """Make values (new keys, passwords) redacted from here on, in steps and errors."""
        self.ctx.redact_also(*(v for v in values if v))

    def reason(self, exc: BaseException) -> str:
        """A safe one-line reason for a failure."""
        if isinstance(exc, DoctorError):
            text = str(exc)
        elif isinstance(exc, psycopg.Error):
            text = f"database error: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self.ctx.redactor.text(text)[:600]

    # containers ---------------------------------------------------------------------------

    def container(self, component: str) -> ContainerDetails | None:
        """The component's container by compose labels, else by its expected name."""
        return self.docker.find(self.ctx.instance, component)

    def need(self, component: str) -> ContainerDetails:
        """The component's container; RepairError when it has none."""
        found = self.container(component)
        if found is None:
            raise RepairError(f"no {component} container exists")
        return found

    def wait_healthy(self, components: Sequence[str]) -> dict[str, str]:
        """Wait until each component runs and passes its healthcheck (if it has one)."""
        def look(pending: Sequence[str]) -> dict[str, Readiness]:
            shown = {c: state_of(self.container(c)) for c in pending}
            return {c: Readiness(s in ("running", "running/healthy"), s)
                    for c, s in shown.items()}

        def timed_out(left: Mapping[str, Readiness]) -> RepairError:
            return RepairError(f"not healthy within {self.health_timeout:g}s: " + ", ".join(
                f"{c} ({r.shown})" for c, r in left.items()))

        done = wait_healthy(look, components, self.health_timeout, interval=_POLL_SECONDS,
                            timed_out=timed_out)
        return {c: r.shown for c, r in done.items()}

    def restart_and_wait(self, component: str) -> str:
        """Restart the component's container and wait until it is healthy; its state."""
        self.docker.restart(self.need(component).id, self.stop_timeout)
        return self.wait_healthy([component])[component]

    def recreate(self, services: Sequence[str]) -> None:
        """compose up --no-deps --force-recreate, then wait until they are healthy."""
        if not services:
            return
        self.docker.recreate(self.instance(), list(services))
        self.wait_healthy(services)

    # verification -------------------------------------------------------------------------

    def verify(self, action: RepairAction) -> dict[str, Any]:
        """Re-run the checks that raised the issues until none of them is left (bounded)."""
        deadline = time.monotonic() + self.verify_window
        attempts = 0

        def attempt() -> dict[str, Any] | None:
            nonlocal attempts
            attempts += 1
            self.ctx.engine.instance(self.instance_id, fresh=True)
            outcome = self.ctx.engine.run(self.instance_id, trigger="operation",
                                          use_cache=False, checks=list(action.verify_checks))
            left = remaining_issues(action, outcome.diagnostic)
            if not left:
                return {"checks": list(action.verify_checks), "attempts": attempts, "ok": True}
            if time.monotonic() >= deadline:
                raise RepairError("verification failed: " + "; ".join(
                    f"{i.check} still reports {label(i)}: {i.message}" for i in left[:3]))
            return None

        return poll_until(attempt, interval=_VERIFY_POLL_SECONDS)

    def rollback(self, action: RepairAction, journal: Journal) -> tuple[str, bool]:
        """Undo the failed action as its own step; a summary, and whether it all worked."""
        if not journal.data and not journal.services:
            return "it had changed nothing that needs undoing", True
        results: list[dict[str, Any]] = []
        try:
            with self.ctx.step(f"rollback {action.id}") as detail:
                results = journal.undo()
                detail["undone"] = results
                failed = [r["what"] for r in results if not r["ok"]]
                if failed:
                    raise RepairError(f"rollback incomplete: {', '.join(failed)} failed")
        except RepairError as exc:
            return str(exc), False
        self.ctx.mark(f"repair {action.id}", "rolled_back")
        return ("its changes were rolled back ("
                + ", ".join(r["what"] for r in results) + ")"), True


def state_of(item: ContainerDetails | None) -> str:
    """'missing', Docker's state, or 'running/<health>' when a healthcheck exists."""
    return "missing" if item is None else item.shown
