"""The repair plan of an instance's latest diagnostic, and running it (or chosen actions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response

from actions.blueprints.common import (
    endpoint,
    json_response,
    names,
    operation_statuses,
    services,
    submit,
)
from actions.models import RepairPlanOut, RepairRequest, WaitQuery
from exporter.diagnostic import Diagnostic
from exporter.web.access import require
from exporter.web.params import BadRequest

if TYPE_CHECKING:
    from actions.operations.repair import RepairAction
    from exporter.discovery import Instance

bp = Blueprint("repair", __name__, url_prefix="/api/instances")


def plan_dict(instance: Instance, diagnostic: Diagnostic | None,
              plan: list[RepairAction]) -> dict[str, Any]:
    """The plan as JSON, with the diagnostic it comes from and what needs a human."""
    out: dict[str, Any] = {
        "instance_id": instance.id,
        "diagnostic_at": diagnostic.timestamp.isoformat() if diagnostic else None,
        "healthy": diagnostic.healthy if diagnostic else None,
        "actions": [a.to_dict() for a in plan]}
    details = services().bodies.plan_details
    if diagnostic is not None and details is not None:
        out.update({k: v for k, v in details(diagnostic, instance).items() if k not in out})
    return out


@bp.get("/<instance_id>/repair-plan")
@require("viewer")
@endpoint(ok={200: RepairPlanOut}, tags=["repair"])
def repair_plan(instance_id: str) -> Response:
    """What a repair would do, from the latest stored diagnostic (nothing is run)."""
    svc = services()
    instance = svc.engine.instance(instance_id)
    latest = svc.store.latest(instance_id)
    if latest is None:
        out = plan_dict(instance, None, [])
        out["message"] = (f"no diagnostic yet; POST /api/instances/{instance_id}/"
                          "run-diagnostics on the exporter, or POST repair with dry_run")
        return json_response(out)
    return json_response(plan_dict(instance, latest, svc.bodies.plan_repairs(latest, instance)))


@bp.post("/<instance_id>/repair")
@require("operator")
@endpoint(json=RepairRequest, query=WaitQuery,
          ok={**operation_statuses(), 200: RepairPlanOut}, mutating=True, kind="repair",
          tags=["repair"])
def repair(instance_id: str, body: RepairRequest, query: WaitQuery) -> Response:
    """Diagnose afresh, plan, and run the plan (or the chosen actions of it).

    Actions that need confirmation (regenerating JWT keys) run only with `confirm: true`;
    without it, a full plan runs the others and names the held-back ones. `dry_run`
    returns the plan only (200). A plan with nothing to run also answers 200.
    """
    svc = services()
    # Plan against the instance as it is now, not as it was at the last sweep or discovery.
    instance = svc.engine.instance(instance_id, fresh=True)
    diagnostic = svc.engine.run(instance_id, trigger="operation", use_cache=False).diagnostic
    plan = svc.bodies.plan_repairs(diagnostic, instance)
    out = plan_dict(instance, diagnostic, plan)
    if body.actions is not None:
        known = {a.id for a in plan}
        missing = [i for i in dict.fromkeys(body.actions) if i not in known]
        if missing:
            raise BadRequest(f"not in the current repair plan: {names(missing)}; "
                             f"GET repair-plan or use dry_run to see it")
        # Plan order, whatever the request's: root cause first, dependencies before users.
        chosen = [a for a in plan if a.id in set(body.actions)]
        unconfirmed = [a.id for a in chosen if a.needs_confirm and not body.confirm]
        if unconfirmed:
            raise BadRequest(f"{names(unconfirmed)} need(s) confirm: true (client apps "
                             "must be updated afterwards)")
    else:
        chosen = [a for a in plan if body.confirm or not a.needs_confirm]
        held = [a.id for a in plan if a.needs_confirm and not body.confirm]
        if held:
            out["held_back"] = held
            out["message"] = f"{names(held)} need(s) confirm: true and will not run"
    if body.dry_run:
        out["dry_run"] = True
        out["would_run"] = [a.id for a in chosen]
        return json_response(out)
    if not chosen:
        out["message"] = ("nothing to repair" if not plan
                          else out.get("message", "nothing to repair"))
        return json_response(out)
    inputs = {"actions": [a.id for a in chosen], "confirm": body.confirm,
              "diagnostic_at": diagnostic.timestamp.isoformat()}
    return submit("repair", instance_id, inputs, svc.bodies.repair(chosen, body.confirm), query)
