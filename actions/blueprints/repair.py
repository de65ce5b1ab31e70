"""The repair plan of an instance's latest diagnostic, and running it (or chosen actions)."""

from __future__ import annotations

from flask import Blueprint, Response

from actions import commands
from actions.blueprints.common import (
    endpoint,
    json_response,
    operation_statuses,
    services,
    submit,
)
from actions.models import RepairPlanOut, RepairRequest, WaitQuery
from exporter.web.access import require

bp = Blueprint("repair", __name__, url_prefix="/api/instances")


@bp.get("/<instance_id>/repair-plan")
@require("viewer")
@endpoint(ok={200: RepairPlanOut}, tags=["repair"])
def repair_plan(instance_id: str) -> Response:
    """What a repair would do, from the latest stored diagnostic (nothing is run)."""
    return json_response(commands.repair_plan(services(), instance_id))


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
    decision = commands.repair(services(), instance_id, body)
    if decision.launch is None:
        return json_response(decision.plan)
    return submit(decision.launch, query)
