"""The action API's Flask app factory."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from actions.blueprints import alerts, audit, backups, config, metrics, operations, repair, restart
from actions.blueprints.common import (
    EXTENSION,
    RATE_LIMITS_EXTENSION,
    WAIT_SLOTS_EXTENSION,
    RateLimited,
    RateLimits,
    WaitSlots,
)
from actions.console import init_console
from actions.context import ActionServices
from exporter.access import AccessControl
from exporter.errors import DoctorError
from exporter.web.access import init_access
from exporter.web.errors import error_response, register_error_handlers

log = logging.getLogger(__name__)


def create_app(svc: ActionServices, access: AccessControl) -> Flask:
    """An app serving the action routes, /metrics, /healthz, /openapi.json and the console."""
    app = Flask("ultrabase_doctor.actions")
    # Alertmanager's webhook (up to 1000 alerts) is the largest body; waitress holds the
    # same limit before Flask sees anything.
    app.config["MAX_CONTENT_LENGTH"] = svc.config.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = svc
    app.extensions[RATE_LIMITS_EXTENSION] = RateLimits(app, svc.config.actions.rate_limit)
    app.extensions[WAIT_SLOTS_EXTENSION] = WaitSlots(svc.config.actions.max_waits,
                                                     svc.config.actions.max_waits_per_caller)

    register_error_handlers(app)
    _register_action_errors(app)
    init_access(app, access, known_instances=svc.engine.knows)
    for blueprint in (restart.bp, repair.bp, config.bp, backups.bp, operations.bp, audit.bp,
                      alerts.bp, metrics.bp):
        app.register_blueprint(blueprint)
    if svc.config.console.enabled:
        init_console(app, svc.config)
    return app


def _register_action_errors(app: Flask) -> None:
    """Errors with more to say than code and message: the running operation, Retry-After."""

    @app.errorhandler(DoctorError)
    def _doctor(exc: DoctorError) -> tuple[Response, int]:
        status = int(getattr(exc, "status", 500))
        code = str(getattr(exc, "code", "error"))
        running = getattr(exc, "running_id", None)
        if not isinstance(running, str):
            if status >= 500:
                log.error("request failed: %s", exc)
            return error_response(status, code, str(exc))
        # 409: which operation holds the instance, and where to follow it.
        response = jsonify({"error": {"code": code, "message": str(exc)},
                            "running_operation_id": running})
        response.headers["Location"] = f"/api/operations/{running}"
        return response, status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        # Keep what the error itself says about the resource, e.g. Allow on a 405.
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response, status

    @app.errorhandler(RateLimited)
    def _rate_limited(exc: RateLimited) -> tuple[Response, int]:
        response, status = error_response(429, exc.code, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, status
