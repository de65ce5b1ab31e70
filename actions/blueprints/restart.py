"""Safe restart of an instance and restart of one service (with its dependents if asked)."""

from __future__ import annotations

from flask import Blueprint, Response

from actions.blueprints.common import endpoint, names, operation_statuses, services, submit
from actions.models import RestartServiceRequest, SafeRestartRequest, WaitQuery
from exporter.web.access import require
from exporter.web.params import BadRequest

bp = Blueprint("restart", __name__, url_prefix="/api/instances")


def _known_components(instance_id: str, wanted: list[str]) -> None:
    """400 unless every named component is one of the instance's."""
    instance = services().engine.instance(instance_id)
    unknown = sorted(set(wanted) - set(instance.components))
    if unknown:
        raise BadRequest(f"unknown component(s): {names(unknown)}; the instance has "
                         f"{', '.join(instance.components)}")


@bp.post("/<instance_id>/safe-restart")
@require("operator")
@endpoint(json=SafeRestartRequest, query=WaitQuery, ok=operation_statuses(), mutating=True,
          kind="safe_restart", tags=["operations"])
def safe_restart(instance_id: str, body: SafeRestartRequest, query: WaitQuery) -> Response:
    """Back up, capture state, stop and start in dependency order, verify, compare.

    Answers 202 with the operation (Location: /api/operations/<id>), or 200 when
    `?wait=true` saw it end; 409 names the operation already running on the instance.
    """
    components = list(dict.fromkeys(body.components)) if body.components else None
    if components:
        _known_components(instance_id, components)
    inputs = {"components": components, "stop_timeout_seconds": body.stop_timeout_seconds}
    return submit("safe_restart", instance_id, inputs,
                  services().bodies.safe_restart(components), query)


@bp.post("/<instance_id>/restart-service")
@require("operator")
@endpoint(json=RestartServiceRequest, query=WaitQuery, ok=operation_statuses(),
          mutating=True, kind="restart_service", tags=["operations"])
def restart_service(instance_id: str, body: RestartServiceRequest,
                    query: WaitQuery) -> Response:
    """Restart one component, and the components that depend on it when asked."""
    _known_components(instance_id, [body.component])
    inputs = {"component": body.component, "with_dependents": body.with_dependents}
    return submit("restart_service", instance_id, inputs,
                  services().bodies.restart_service(body.component, body.with_dependents),
                  query)
