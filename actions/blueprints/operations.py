"""Following an operation: its steps as they progress, and `?wait=true` to block for the end."""

from __future__ import annotations

from flask import Blueprint, Response

from actions import commands
from actions.blueprints.common import endpoint, operation_response, services, wait_for
from actions.models import ErrorBody, OperationOut, WaitQuery
from actions.operations.model import FINISHED
from exporter.web.access import current_principal, require

bp = Blueprint("operations", __name__, url_prefix="/api/operations")


@bp.get("/<op_id>")
@require("viewer", instance_arg=None)
@endpoint(query=WaitQuery, ok={200: OperationOut, 404: ErrorBody}, scoped=False,
          tags=["operations"])
def get_operation(op_id: str, query: WaitQuery) -> Response:
    """The operation; with `?wait=true` the answer comes when it ends (or at `timeout`)."""
    svc = services()
    # Unknown, malformed and out-of-scope ids all read "operation not found".
    operation = commands.find_operation(svc, current_principal(), op_id)
    if query.wait and operation.status not in FINISHED:
        operation = wait_for(operation, query.timeout)
    return operation_response(operation, 200)
