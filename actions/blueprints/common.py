"""What every action route shares: the services, the endpoint decorator, operation answers.

The parts live in context.py (services), spec.py (OpenAPI, `endpoint`, parsing) and
limits.py (rate limits, wait slots); this module gathers them for the route modules and
holds the answers of routes that start an operation.

How a route is declared is in spec.py.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify
from pydantic import BaseModel

from actions.blueprints.context import (
    EXTENSION,
    RATE_LIMITS_EXTENSION,
    WAIT_SLOTS_EXTENSION,
    services,
)
from actions.blueprints.limits import RateLimited, RateLimits, WaitSlots, rate_limits, wait_slots
from actions.blueprints.spec import (
    SPEC,
    audit_refusal,
    describe_errors,
    endpoint,
    openapi_document,
    parse_body,
    parse_query,
)
from actions.commands import Launch
from actions.models import ErrorBody, OperationOut, WaitQuery
from actions.operations.model import FINISHED, Operation
from exporter.web.access import current_principal

__all__ = [
    "EXTENSION",
    "RATE_LIMITS_EXTENSION",
    "SPEC",
    "WAIT_SLOTS_EXTENSION",
    "RateLimited",
    "RateLimits",
    "WaitSlots",
    "audit_refusal",
    "describe_errors",
    "endpoint",
    "json_response",
    "openapi_document",
    "operation_response",
    "operation_statuses",
    "parse_body",
    "parse_query",
    "rate_limits",
    "services",
    "submit",
    "wait_for",
    "wait_slots",
]

log = logging.getLogger(__name__)


def wait_for(operation: Operation, timeout: float) -> Operation:
    """The operation when it ends or at `timeout`; at once when no wait slot is free."""
    # No shortcut on the status seen here: a body that just ended is closed (audited,
    # counted, unlocked) a moment later, and runner.wait returns only after that.
    principal = current_principal()
    with wait_slots().hold(f"{principal.source}:{principal.name}") as granted:
        if not granted:
            log.info("?wait=true of %s answered at once: its wait slots are all taken",
                     principal.name)
            return operation
        return services().runner.wait(operation.id, timeout)


# operations ---------------------------------------------------------------------------------


def operation_response(operation: Operation, status: int) -> Response:
    """The operation's JSON with its status and a Location to follow it at."""
    response = jsonify(operation.to_dict())
    response.status_code = status
    response.headers["Location"] = f"/api/operations/{operation.id}"
    return response


def submit(launch: Launch, wait: WaitQuery) -> Response:
    """Start an operation: 202 at once, or 200 when `wait` saw it finish."""
    svc = services()
    operation = launch.start(svc, current_principal())
    if not wait.wait:
        # 202 even when a quick body already ended: the answer says "accepted", the
        # operation's own status says how far it got.
        return operation_response(operation, 202)
    operation = wait_for(operation, wait.timeout)
    return operation_response(operation, 200 if operation.status in FINISHED else 202)


def operation_statuses() -> dict[int, type[BaseModel] | None]:
    """The answers of a route that starts an operation."""
    return {200: OperationOut, 202: OperationOut, 409: ErrorBody}


def json_response(data: Any, status: int = 200) -> Response:
    """JSON with a status."""
    response = jsonify(data)
    response.status_code = status
    return response

