"""Safe restart of an instance and restart of one service (with its dependents if asked)."""

from __future__ import annotations

from flask import Blueprint, Response

from actions import commands
from actions.blueprints.common import endpoint, operation_statuses, services, submit
from actions.models import RestartServiceRequest, SafeRestartRequest, WaitQuery
from exporter.web.access import require

bp = Blueprint("restart", __name__, url_prefix="/api/instances")


@bp.post("/<instance_id>/safe-restart")
@require("operator")
@endpoint(json=SafeRestartRequest, query=WaitQuery, ok=operation_statuses(), mutating=True,
          kind="safe_restart", tags=["operations"])
def safe_restart(instance_id: str, body: SafeRestartRequest, query: WaitQuery) -> Response:
    """Back up, capture state, stop and start in dependency order, verify, compare.

    Answers 202 with the operation (Location: /api/operations/<id>), or 200 when
    `?wait=true` saw it end; 409 names the operation already running on the instance.
    """
    return submit(commands.safe_restart(services(), instance_id, body), query)


@bp.post("/<instance_id>/restart-service")
@require("operator")
@endpoint(json=RestartServiceRequest, query=WaitQuery, ok=operation_statuses(),
          mutating=True, kind="restart_service", tags=["operations"])
def restart_service(instance_id: str, body: RestartServiceRequest,
                    query: WaitQuery) -> Response:
    """Restart one component, and the components that depend on it when asked."""
    return submit(commands.restart_service(services(), instance_id, body), query)
