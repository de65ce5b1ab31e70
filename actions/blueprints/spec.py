"""The OpenAPI document and the `endpoint` decorator: documentation, rate limit, parsing.

A route is declared as

    @bp.post("/<instance_id>/safe-restart")
    @require("operator")                       # 401/403/404 first, as in the exporter
    @endpoint(json=SafeRestartRequest, query=WaitQuery, ok={202: OperationOut},
              mutating=True, tags=["restart"])
    def safe_restart(instance_id, body, query): ...

`endpoint` documents the route in /openapi.json (spectree, from the same pydantic models),
then, after access control has passed, applies the rate limits of mutating routes and
validates the query string and the JSON body, handing the parsed models to the view.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from flask import request
from pydantic import BaseModel, ValidationError
from spectree import Response as SpecResponse
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.models import SecureType
from werkzeug.exceptions import HTTPException

from actions.audit import AuditEntry
from actions.blueprints.context import services
from actions.blueprints.limits import rate_limits
from actions.commands import shown as _shown
from actions.models import ErrorBody
from exporter import __version__
from exporter.errors import DoctorError
from exporter.web.access import current_principal
from exporter.web.params import BadRequest, json_object

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

SPEC = SpecTree(
    "flask",
    title="Ultrabase Doctor action API",
    description="Safe restart, repair, config edits and backups of self-hosted Supabase "
                "instances managed by Ultrabase. Long operations answer 202 with an "
                "operation to follow at /api/operations/{op_id}.",
    version=__version__,
    # Only routes declared with endpoint() are documented; the UI pages are not served.
    mode="strict",
    page_templates={},
    annotations=False,
    validation_error_status=400,
    validation_error_model=ErrorBody,
    # Plain model names: the models are unique by name within this API.
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    security_schemes=[SecurityScheme(
        name="bearer", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer"))],
    security={"bearer": []},
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the current app's documented routes."""
    spec: dict[str, Any] = SPEC.spec
    return spec


def endpoint(*, ok: Mapping[int, type[BaseModel] | None], json: type[BaseModel] | None = None,
             query: type[BaseModel] | None = None, scoped: bool = True, mutating: bool = False,
             kind: str | None = None, public: bool = False,
             tags: Sequence[str] = ()) -> Callable[[F], F]:
    """Document the route, then (rate limit and) parse `query` and `body` for the view.

    A mutating route names its audit action in `kind`: a request refused after access
    control (invalid, too large, unknown backup) leaves an audit entry; lock conflicts are
    audited by the runner, rate-limited floods are not audited at all.
    """
    statuses = _statuses(ok, json=json is not None, query=query is not None, scoped=scoped,
                         mutating=mutating, public=public)
    responses = SpecResponse(**{f"HTTP_{code}": model for code, model in statuses.items()})
    document = SPEC.validate(json=json, query=query, resp=responses, tags=list(tags),
                             security=None if not public else {}, skip_validation=True)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if mutating:
                rate_limits().hit(kwargs.get("instance_id"))
            try:
                if query is not None:
                    kwargs["query"] = parse_query(query)
                if json is not None:
                    kwargs["body"] = parse_body(json)
                return view(*args, **kwargs)
            except (DoctorError, HTTPException) as exc:
                if kind is not None:
                    audit_refusal(kind, kwargs.get("instance_id"), exc)
                raise

        return cast(F, document(wrapper))

    return decorate


def _statuses(ok: Mapping[int, type[BaseModel] | None], *, json: bool, query: bool,
              scoped: bool, mutating: bool, public: bool) -> dict[int, type[BaseModel] | None]:
    """Every status the route can answer, so a client (or schemathesis) can hold the API to
    its document."""
    errors = {401: not public, 403: not public, 404: scoped, 400: json or query, 413: json,
              429: mutating}
    return {**ok, **{code: ErrorBody for code, applies in errors.items() if applies}}


def audit_refusal(kind: str, instance_id: str | None, exc: Exception) -> None:
    """Record a refused change (4xx other than 429) in the audit log; never fails the answer."""
    status = exc.code if isinstance(exc, HTTPException) else getattr(exc, "status", 500)
    if not isinstance(status, int) or not 400 <= status < 500 or status == 429:
        return
    if getattr(exc, "running_id", None) is not None:
        return  # a lock conflict: the runner audits it
    code = getattr(exc, "code", None) if not isinstance(exc, HTTPException) else None
    message = exc.description if isinstance(exc, HTTPException) else str(exc)
    principal = current_principal()
    entry = AuditEntry(at=datetime.now(UTC), who=principal.name, role=principal.role,
                       action=kind, instance_id=instance_id, inputs={}, result="refused",
                       error=f"{status} {code or 'refused'}: {message}"[:500])
    try:
        services().store.append_audit(entry)
    except DoctorError as err:
        log.error("audit entry of a refused %s not written: %s", kind, err)


# parsing ------------------------------------------------------------------------------------

_MAX_PROBLEMS = 10


def parse_body(model: type[BaseModel]) -> Any:
    """The request body (JSON object; empty means {}) validated by `model`, else 400."""
    # get_data raises 413 beyond MAX_CONTENT_LENGTH. Any content type is read as JSON, so
    # `curl -d '{...}'` works without a header.
    return _validate(model, json_object(request.get_data(cache=True)), "body")


def parse_query(model: type[BaseModel]) -> Any:
    """The query string validated by `model`, else 400."""
    repeated = [key for key, values in request.args.lists() if len(values) > 1]
    if repeated:
        raise BadRequest(f"query parameter {_shown(repeated[0])} is given more than once")
    return _validate(model, request.args.to_dict(), "query")


def _validate(model: type[BaseModel], data: Mapping[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"invalid {where}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """The problems, each as `field: message`; input values are never repeated."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:_MAX_PROBLEMS]:
        where = ".".join(_shown(str(part)) for part in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown field")
        elif error["type"] == "missing":
            problems.append(f"{where}: required")
        else:
            problems.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - _MAX_PROBLEMS
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)
