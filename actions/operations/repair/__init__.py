"""Repair: the latest diagnostic's issues mapped to safe actions, run with backup, verify, rollback.

Planning (`build_plan`, `plan_repairs`) is pure: a Diagnostic and its Instance in, actions out.
Only live findings are planned from: issues read from logs describe the recent past and
info-level issues need no repair. The rules, in order:

1. Each issue's repair id (exporter/issues.py) becomes an intent on a target, adjusted to
   the instance: a container action is recreate when the container is missing, start when
   it is stopped or paused, restart when it runs; a repair that is not safe here (a db that
   runs but refuses connections, keys to regenerate from a weak or disputed secret) is
   a manual item with the reason.
2. Issues without a safe repair that nothing else explains are manual items; what they
   explain gets no action at all (no container is started on a missing volume or a taken
   port).
3. A restart whose every reason is explained by an issue another action fixes is dropped:
   auth is not restarted for a DB fault; the DB fix is planned instead, followed by a
   restart of the services that log in as the synced roles.
4. Intents are deduplicated by (action, component); the root cause's action runs first,
   the others in dependency order: db up, role passwords, other containers up, gateway
   keys, API keys, restarts.

Execution (`repair_body`): per action a backup, the act, then the check that raised the
issue is re-run until the issue is gone (bounded). The first failure rolls back what that
action changed (files restored from its backup and their services recreated, role
passwords set back to their previous hashes, containers put back in their previous state)
and stops the plan. Regenerating the API keys runs only with confirm, because client apps
must then switch keys.

The package's modules follow those seams: plan.py (pure planning), run.py (the run loop and
the session the acts share), acts.py (containers and role passwords, and the table of
acts) and keys.py (API keys and the gateway).
"""

from __future__ import annotations

from actions.operations.repair.acts import ACTS, repair_body
from actions.operations.repair.plan import (
    CONFIRM_ACTIONS,
    CONTAINER_ACTIONS,
    ConfirmationRequired,
    ManualItem,
    RepairAction,
    RepairError,
    RepairPlan,
    UnknownRepairAction,
    build_plan,
    plan_repairs,
    remaining_issues,
    require_confirm,
    select_actions,
)
from actions.operations.repair.run import ActFn, Journal, RepairSession, run_actions

__all__ = [
    "ACTS",
    "CONFIRM_ACTIONS",
    "CONTAINER_ACTIONS",
    "ActFn",
    "ConfirmationRequired",
    "Journal",
    "ManualItem",
    "RepairAction",
    "RepairError",
    "RepairPlan",
    "RepairSession",
    "UnknownRepairAction",
    "build_plan",
    "plan_repairs",
    "remaining_issues",
    "repair_body",
    "require_confirm",
    "run_actions",
    "select_actions",
]
