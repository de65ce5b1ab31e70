"""POST /api/alerts: Alertmanager's webhook, turned into budgeted, audited auto-repairs.

Only firing alerts labelled `auto_repair="true"` count; they are grouped by their
`instance_id` label, and each instance gets at most one repair per webhook. For each
instance, in order: no instance_id, an unknown (or out-of-scope) instance, a spent budget
(config.actions.auto_repair_budget_per_hour), a plan with nothing runnable without confirm,
or an operation already running refuse the repair. Otherwise a fresh diagnostic is planned
and the plan's actions that need no confirmation run as a "repair" operation.

Every decision is an audit entry (action "auto_repair", result "started" or "refused",
the reason in `error`). The budget is counted from those entries, so it holds across
restarts and between processes sharing the store. A webhook with nothing to act on leaves
one "alert_webhook" entry. Refusals still answer 200: Alertmanager retries non-2xx
answers, and retrying a refusal would only repeat it.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response

from actions.audit import AuditEntry
from actions.blueprints.common import ActionServices, endpoint, json_response, services
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
BUDGET_WINDOW = timedelta(hours=1)
# Budget entries read per check; more than any sane budget, bounded all the same.
_BUDGET_SCAN = 1000

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
@require("operator", instance_arg=None)
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
    for instance_id, alerts in groups.items():
        names = tuple(dict.fromkeys(a.labels.get("alertname", "?")[:100] for a in alerts))
        if instance_id is None:
            # Alerts without an instance cannot be acted on; each is refused on its own.
            outcomes.append(_refuse(svc, principal, None, names, "no_instance_id",
                                    "the alert has no instance_id label"))
            continue
        outcomes.append(_decide(svc, principal, instance_id, names))
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
    # Unknown and out-of-scope read the same, as everywhere else in the API.
    if not INSTANCE_ID_PATTERN.fullmatch(instance_id):
        # Not an id at all: it is not written to the audit log either.
        return _refuse(svc, principal, None, alerts, "unknown_instance", "unknown instance")
    if not principal.can_see(instance_id):
        return _refuse(svc, principal, instance_id, alerts, "unknown_instance",
                       "unknown instance")
    try:
        # Fresh: the plan must see the containers as they are now, not as discovery saw
        # them a moment ago (a container stopped since would be planned as "restart").
        instance = svc.engine.instance(instance_id, fresh=True)
    except InstanceNotFoundError:
        return _refuse(svc, principal, instance_id, alerts, "unknown_instance",
                       "unknown instance")
    # Locked per known instance only, so hostile labels cannot grow the lock table.
    with _instance_lock(instance.id):
        return _repair(svc, principal, instance, alerts)


def _repair(svc: ActionServices, principal: Principal, instance: Instance,
            alerts: tuple[str, ...]) -> Outcome:
    """Within the budget and with something to run, start the repair; else refuse."""
    instance_id = instance.id
    budget = svc.config.actions.auto_repair_budget_per_hour
    used = budget_used(svc, instance_id)
    if used >= budget:
        return _refuse(svc, principal, instance_id, alerts, "over_budget",
                       f"auto-repair budget spent: {used} of {budget} in the last hour")
    try:
        diagnostic = svc.engine.run(instance_id, trigger="operation",
                                    use_cache=False).diagnostic
        latest = svc.store.latest(instance_id) or diagnostic
        plan = svc.bodies.plan_repairs(latest, instance)
    except DoctorError as exc:
        return _refuse(svc, principal, instance_id, alerts, "diagnostic_failed", str(exc))
    runnable = [a for a in plan if not a.needs_confirm]
    held = [a.id for a in plan if a.needs_confirm]
    if not runnable:
        why = "nothing to repair" + (f" without confirm (held back: {', '.join(held)})"
                                     if held else "")
        return _refuse(svc, principal, instance_id, alerts, "nothing_to_repair", why,
                       {"held_back": held} if held else None)
    action_ids = [a.id for a in runnable]
    inputs = {"actions": action_ids, "confirm": False, "source": "alertmanager",
              "alerts": list(alerts)}
    try:
        operation = svc.runner.submit("repair", instance_id, principal, inputs,
                                      svc.bodies.repair(runnable, False))
    except OperationConflict as exc:
        return _refuse(svc, principal, instance_id, alerts, "operation_running", str(exc),
                       {"running_operation_id": exc.running_id})
    _audit(svc, principal, AUDIT_ACTION, instance_id,
           {"alerts": list(alerts), "actions": action_ids}, STARTED, None, operation.id)
    log.warning("auto-repair of %s started by alerts %s: operation %s (%s)", instance_id,
                ", ".join(alerts), operation.id, ", ".join(action_ids))
    detail: dict[str, Any] = {"actions": action_ids}
    if held:
        detail["held_back"] = held
    return Outcome(instance_id, alerts, STARTED, operation_id=operation.id, detail=detail)


def budget_used(svc: ActionServices, instance_id: str) -> int:
    """Auto-repairs started on the instance within the last hour."""
    since = datetime.now(UTC) - BUDGET_WINDOW
    entries = svc.store.audit(_BUDGET_SCAN, 0, instance_id=instance_id, action=AUDIT_ACTION,
                              since=since)
    return sum(1 for e in entries if e.result == STARTED)


def _refuse(svc: ActionServices, principal: Principal, instance_id: str | None,
            alerts: tuple[str, ...], reason: str, message: str,
            detail: dict[str, Any] | None = None) -> Outcome:
    _audit(svc, principal, AUDIT_ACTION, instance_id, {"alerts": list(alerts)}, REFUSED,
           f"{reason}: {message}")
    log.warning("auto-repair of %s refused (%s): %s", instance_id or "?", reason, message)
    return Outcome(instance_id, alerts, REFUSED, reason=reason, detail=detail)


def _audit(svc: ActionServices, principal: Principal, action: str, instance_id: str | None,
           inputs: dict[str, Any], result: str, error: str | None,
           operation_id: str | None = None) -> None:
    svc.store.append_audit(AuditEntry(
        at=datetime.now(UTC), who=principal.name, role=principal.role, action=action,
        instance_id=instance_id, inputs=inputs, result=result, error=error,
        operation_id=operation_id))
