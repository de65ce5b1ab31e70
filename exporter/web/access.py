"""Flask glue for access control: the error handler and the decorators views wear.

Contract with the app factory:
- `init_access(app, access)` must be called once per app.
- `app.extensions[INSTANCES_EXTENSION]` must hold a callable `(instance_id) -> bool` saying
  whether the instance exists. It is only called with ids that match INSTANCE_ID_PATTERN and
  are in the caller's scope; it should be cheap (cached discovery) and must not raise for an
  unknown id. A view decorated with `require(..., instance_arg=...)` fails loudly
  (RuntimeError) when no such callable is set.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, request

from exporter.access import AccessControl, AccessError, Principal, Role, Unauthorized

ACCESS_EXTENSION = "ultrabase_doctor.access"
INSTANCES_EXTENSION = "ultrabase_doctor.instances"

F = TypeVar("F", bound=Callable[..., Any])


def init_access(app: Flask, access: AccessControl, *,
                known_instances: Callable[[str], bool] | None = None) -> None:
    """Attach `access` to the app and answer AccessErrors as JSON errors."""
    app.extensions[ACCESS_EXTENSION] = access
    if known_instances is not None:
        app.extensions[INSTANCES_EXTENSION] = known_instances
    app.register_error_handler(AccessError, access_error_response)


def access_error_response(exc: AccessError) -> tuple[Response, int]:
    """`{"error": {"code", "message"}}` with the error's status; 401 names the scheme."""
    response = jsonify({"error": {"code": exc.code, "message": str(exc)}})
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response, exc.status


def current_access() -> AccessControl:
    """The current app's AccessControl."""
    access = current_app.extensions.get(ACCESS_EXTENSION)
    if not isinstance(access, AccessControl):
        raise RuntimeError("init_access() was not called for this app")
    return access


def current_principal() -> Principal:
    """The principal the route's decorator stored for this request."""
    principal = g.get("principal")
    if not isinstance(principal, Principal):
        raise RuntimeError("the view is not wrapped by require() or open_route()")
    return principal


def require(role: Role, *, instance_arg: str | None = "instance_id",
            known: Callable[[str], bool] | None = None) -> Callable[[F], F]:
    """Authenticate, authorize `role` on URL argument `instance_arg`, set `g.principal`."""
    # instance_arg=None marks a fleet-wide route; `known` overrides the app's callable.

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            access = current_access()
            principal = access.authenticate(request.headers.get("Authorization"))
            instance_id: str | None = None
            exists = known
            if instance_arg is not None:
                if instance_arg not in kwargs:
                    raise RuntimeError(f"route has no URL argument {instance_arg!r}")
                instance_id = str(kwargs[instance_arg])
                if exists is None:
                    exists = current_app.extensions.get(INSTANCES_EXTENSION)
                if not callable(exists):
                    raise RuntimeError(f"app.extensions[{INSTANCES_EXTENSION!r}] is not set")
            access.authorize(principal, role, instance_id, known=exists)
            g.principal = principal
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def open_route(protected: bool | None = None) -> Callable[[F], F]:
    """For /metrics and /healthz: anonymous access, or any viewer when protected."""
    # protected=None follows api.protect_metrics, read per request so blueprints defined at
    # import time need not know the config.

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            access = current_access()
            if access.protect_metrics if protected is None else protected:
                principal = access.authenticate(request.headers.get("Authorization"))
                access.authorize(principal, "viewer")
            else:
                principal = access.anonymous()
            g.principal = principal
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
