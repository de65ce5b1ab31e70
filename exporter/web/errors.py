"""Every error the HTTP services return is JSON: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from exporter.errors import DoctorError, InstanceNotFoundError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    """The JSON error body with its status."""
    return jsonify({"error": {"code": code, "message": message}}), status


def register_error_handlers(app: Flask) -> None:
    """JSON for HTTP errors, the tool's own errors and anything unexpected."""

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        # Keep what werkzeug says besides the body, e.g. Allow on a 405.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(InstanceNotFoundError)
    def _not_found(exc: InstanceNotFoundError) -> tuple[Response, int]:
        # One message for unknown and out-of-scope, so scope cannot be probed.
        return error_response(404, "not_found", "instance not found")

    @app.errorhandler(DoctorError)
    def _doctor(exc: DoctorError) -> tuple[Response, int]:
        status = int(getattr(exc, "status", 500))
        code = str(getattr(exc, "code", "error"))
        if status >= 500:
            log.error("request failed: %s", exc)
        return error_response(status, code, str(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal error; see the service log")
