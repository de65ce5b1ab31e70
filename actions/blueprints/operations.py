"""Following an operation: its steps as they progress, and `?wait=true` to block for the end."""

from __future__ import annotations

from flask import Blueprint, Response

from actions.blueprints.common import endpoint, operation_response, services
from actions.models import ErrorBody, OperationOut, WaitQuery
from actions.operations.model import FINISHED, OPERATION_ID_PATTERN, OperationNotFound
from exporter.web.access import current_principal, require

bp = Blueprint("operations", __name__, url_prefix="/api/operations")


@bp.get("/<op_id>")
@require("viewer", instance_arg=None)
@endpoint(query=WaitQuery, ok={200: OperationOut, 404: ErrorBody}, scoped=False,
          tags=["operations"])
def get_operation(op_id: str, query: WaitQuery) -> Response:
    """The operation; with `?wait=true` the answer comes when it ends (or at `timeout`)."""
    runner = services().runner
    # Unknown, malformed and out-of-scope ids all read "operation not found".
    if not OPERATION_ID_PATTERN.match(op_id):
        raise OperationNotFound()
    operation = runner.get(op_id)
    if operation is None or not current_principal().can_see(operation.instance_id):
        raise OperationNotFound()
    if query.wait and operation.status not in FINISHED:
        operation = runner.wait(op_id, query.timeout)
    return operation_response(operation, 200)
