"""POST /api/alerts: Alertmanager's webhook, turned into budgeted, audited auto-repairs.

Only firing alerts labelled `auto_repair="true"` count; they are grouped by their
`instance_id` label, and each instance gets at most one repair per webhook (at most
MAX_GROUPS instances per webhook). For each instance, in order: no instance_id, an unknown
(or out-of-scope) instance, a spent budget (config.actions.auto_repair_budget_per_hour), a
plan with nothing runnable without confirm, or an operation already running refuse the
repair. Otherwise the instance is diagnosed (sharing the per-instance rate limit and single
flight of run-diagnostics: within its window the latest diagnostic is reused) and the
plan's actions that need no confirmation run as a "repair" operation.

The budget counts only repairs that started: a unit is taken in the store in one
transaction (so processes sharing it cannot overspend it) just before the repair is
submitted, and given back when the submit is refused. Refused calls, and callers outside
the instance's scope, never touch it. Exhausted budgets show on /metrics
(ultrabase_auto_repair_budget_exhausted).

Every decision is an audit entry (action "auto_repair", result "started" or "refused",
the reason in `error`); refusals of ids that are unknown or out of the caller's scope are
written without the id. A webhook with nothing to act on leaves one "alert_webhook"
entry. Refusals still answer 200: Alertmanager retries non-2xx answers, and retrying a
refusal would only repeat it.

The `webhook` role may call this route and nothing else: the token Alertmanager holds can
start only the repairs of alerts opted in to auto-repair.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response

from actions.audit import AuditEntry
from actions.blueprints.common import endpoint, json_response, services
from actions.context import ActionServices
from actions.models import AlertmanagerWebhook, WebhookAlert, WebhookOut
from actions.operations.model import OperationConflict
from exporter.access import Principal
from exporter.config import INSTANCE_ID_PATTERN
from exporter.discovery import Instance
from exporter.errors import DoctorError, InstanceNotFoundError
from exporter.web.access import current_principal, require

log = logging.getLogger(__name__)

bp = Blueprint("alerts", __name__, url_prefix="/api/alerts")

AUTO_REPAIR_LABEL = "auto_repair"
INSTANCE_LABEL = "instance_id"
AUDIT_ACTION = "auto_repair"
WEBHOOK_ACTION = "alert_webhook"
STARTED, REFUSED = "started", "refused"
# Instances acted on per webhook; the rest are refused in one audit entry. A real
# notification groups alerts by instance, so this is far above what one carries.
MAX_GROUPS = 100
# Alert names kept per outcome and audit entry (each at most 100 characters).
_MAX_NAMES = 10

# Counting an instance's budget and starting its repair happen under that instance's lock,
# so two webhooks arriving together cannot both spend the last unit; other instances'
# alerts are not held up meanwhile.
_DECIDING: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_DECIDING_GUARD = threading.Lock()


def _instance_lock(instance_id: str) -> threading.Lock:
    with _DECIDING_GUARD:
        return _DECIDING[instance_id]


@dataclass(frozen=True)
class Outcome:
    """What was done about one instance's alerts."""

    instance_id: str | None
    alerts: tuple[str, ...]
    outcome: str
    reason: str | None = None
    operation_id: str | None = None
    detail: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        out: dict[str, Any] = {"instance_id": self.instance_id, "alerts": list(self.alerts),
                               "outcome": self.outcome, "reason": self.reason,
                               "operation_id": self.operation_id}
        if self.detail:
            out.update(self.detail)
        return out


@bp.post("")
@require("webhook", instance_arg=None)
@endpoint(json=AlertmanagerWebhook, ok={200: WebhookOut}, scoped=False, mutating=True,
          kind=WEBHOOK_ACTION, tags=["alerts"])
def webhook(body: AlertmanagerWebhook) -> Response:
    """Start the repair of each instance with a firing `auto_repair="true"` alert."""
    svc = services()
    principal = current_principal()
    wanted = [a for a in body.alerts
              if a.status == "firing" and a.labels.get(AUTO_REPAIR_LABEL) == "true"]
    groups: dict[str | None, list[WebhookAlert]] = defaultdict(list)
    for alert in wanted:
        groups[alert.labels.get(INSTANCE_LABEL) or None].append(alert)
    outcomes: list[Outcome] = []
    for index, (instance_id, alerts) in enumerate(groups.items()):
        names = _names(alerts)
        if index >= MAX_GROUPS:
            outcomes.append(Outcome(instance_id, names, REFUSED, reason="too_many_instances"))
            continue
        if instance_id is None:
            # Alerts without an instance cannot be acted on; each is refused on its own.
            outcomes.append(_refuse(svc, principal, None, names, "no_instance_id",
                                    "the alert has no instance_id label"))
            continue
        outcomes.append(_decide(svc, principal, instance_id, names))
    if len(groups) > MAX_GROUPS:
        _audit(svc, principal, AUDIT_ACTION, None, {"instances": len(groups) - MAX_GROUPS},
               REFUSED, f"too_many_instances: only {MAX_GROUPS} instances per notification")
    if not groups:
        _audit(svc, principal, WEBHOOK_ACTION, None,
               {"receiver": body.receiver[:100], "status": body.status,
                "alerts": len(body.alerts)}, "ignored",
               "no firing alert labelled auto_repair=\"true\"")
    return json_response({"received": len(body.alerts),
                          "ignored": len(body.alerts) - len(wanted),
                          "results": [o.to_dict() for o in outcomes]})


def _decide(svc: ActionServices, principal: Principal, instance_id: str,
            alerts: tuple[str, ...]) -> Outcome:
    """Refuse, or start the repair of, one instance."""
    # Unknown and out-of-scope read the same, as everywhere else in the API, and neither
    # is written under the id: an instance's audit trail holds only calls that could act
    # on it.
    is_id = INSTANCE_ID_PATTERN.fullmatch(instance_id) is not None
    # The answer names the id the caller sent (never text that is not an id).
    unknown = Outcome(instance_id if is_id else None, alerts, REFUSED,
                      reason="unknown_instance")
    if not is_id or not principal.can_see(instance_id):
        _refuse(svc, principal, None, alerts, "unknown_instance", "unknown instance")
        return unknown
    try:
        # Fresh: the plan must see the containers as they are now, not as discovery saw
        # them a moment ago (a container stopped since would be planned as "restart").
        instance = svc.engine.instance(instance_id, fresh=True)
    except InstanceNotFoundError:
        _refuse(svc, principal, None, alerts, "unknown_instance", "unknown instance")
        return unknown
    # Locked per known instance only, so hostile labels cannot grow the lock table.
    with _instance_lock(instance.id):
        return _repair(svc, principal, instance, alerts)


def _repair(svc: ActionServices, principal: Principal, instance: Instance,
            alerts: tuple[str, ...]) -> Outcome:
    """Within the budget and with something to run, start the repair; else refuse."""
    instance_id = instance.id
    budget = svc.config.actions.auto_repair_budget_per_hour
    # Checked before the diagnostic too, so a spent budget costs no run.
    used = budget_used(svc, instance_id)
    if used >= budget:
        return _over_budget(svc, principal, instance_id, alerts, used, budget)
    try:
        outcome = svc.engine.run(instance_id, trigger="operation", use_cache=False,
                                 limited=True)
        latest = svc.store.latest(instance_id) or outcome.diagnostic
        plan = svc.bodies.plan_repairs(latest, instance)
    except DoctorError as exc:
        return _refuse(svc, principal, instance_id, alerts, "diagnostic_failed", str(exc))
    reused = {"diagnostic_reused": True} if outcome.rate_limited else {}
    runnable = [a for a in plan if not a.needs_confirm]
    held = [a.id for a in plan if a.needs_confirm]
    if not runnable:
        why = "nothing to repair" + (f" without confirm (held back: {', '.join(held)})"
                                     if held else "")
        return _refuse(svc, principal, instance_id, alerts, "nothing_to_repair", why,
                       {**({"held_back": held} if held else {}), **reused} or None)
    action_ids = [a.id for a in runnable]
    inputs = {"actions": action_ids, "confirm": False, "source": "alertmanager",
              "alerts": list(alerts)}
    reservation = svc.store.reserve_auto_repair(instance_id, budget)
    if reservation is None:
        # Another process spent the last unit while this one diagnosed.
        return _over_budget(svc, principal, instance_id, alerts, budget, budget)
    try:
        operation = svc.runner.submit("repair", instance_id, principal, inputs,
                                      svc.bodies.repair(runnable, False))
    except BaseException as exc:
        # Nothing started: the unit goes back.
        svc.store.release_auto_repair(reservation)
        if isinstance(exc, OperationConflict):
            return _refuse(svc, principal, instance_id, alerts, "operation_running",
                           str(exc), {"running_operation_id": exc.running_id})
        raise
    svc.store.confirm_auto_repair(reservation, operation.id)
    _audit(svc, principal, AUDIT_ACTION, instance_id,
           {"alerts": list(alerts), "actions": action_ids}, STARTED, None, operation.id)
    log.warning("auto-repair of %s started by alerts %s: operation %s (%s)", instance_id,
                ", ".join(alerts), operation.id, ", ".join(action_ids))
    detail: dict[str, Any] = {"actions": action_ids, **reused}
    if held:
        detail["held_back"] = held
    return Outcome(instance_id, alerts, STARTED, operation_id=operation.id, detail=detail)


def budget_used(svc: ActionServices, instance_id: str) -> int:
    """Auto-repairs started on the instance within the last hour."""
    use = svc.store.auto_repairs_used(instance_id).get(instance_id)
    return use.used if use is not None else 0


def _over_budget(svc: ActionServices, principal: Principal, instance_id: str,
                 alerts: tuple[str, ...], used: int, budget: int) -> Outcome:
    return _refuse(svc, principal, instance_id, alerts, "over_budget",
                   f"auto-repair budget spent: {used} of {budget} in the last hour")


def _names(alerts: list[WebhookAlert]) -> tuple[str, ...]:
    """The alerts' distinct names, each shortened; past _MAX_NAMES, how many more."""
    found = list(dict.fromkeys(a.labels.get("alertname", "?")[:100] for a in alerts))
    if len(found) > _MAX_NAMES:
        return (*found[:_MAX_NAMES], f"and {len(found) - _MAX_NAMES} more")
    return tuple(found)


def _refuse(svc: ActionServices, principal: Principal, instance_id: str | None,
            alerts: tuple[str, ...], reason: str, message: str,
            detail: dict[str, Any] | None = None) -> Outcome:
    _audit(svc, principal, AUDIT_ACTION, instance_id, {"alerts": list(alerts)}, REFUSED,
           f"{reason}: {message}")
    log.warning("auto-repair of %s refused (%s): %s", instance_id or "an unknown instance",
                reason, message)
    return Outcome(instance_id, alerts, REFUSED, reason=reason, detail=detail)


def _audit(svc: ActionServices, principal: Principal, action: str, instance_id: str | None,
           inputs: dict[str, Any], result: str, error: str | None,
           operation_id: str | None = None) -> None:
    svc.store.append_audit(AuditEntry(
        at=datetime.now(UTC), who=principal.name, role=principal.role, action=action,
        instance_id=instance_id, inputs=inputs, result=result, error=error,
        operation_id=operation_id))
