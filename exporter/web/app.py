"""The exporter's Flask app factory."""

from __future__ import annotations

from flask import Flask

from exporter.access import AccessControl
from exporter.web import diagnostics, metrics, openapi, schedules
from exporter.web.access import init_access
from exporter.web.context import EXTENSION, Services
from exporter.web.errors import register_error_handlers


def create_app(svc: Services, access: AccessControl) -> Flask:
    """An app serving /metrics, /healthz, /openapi.json and the diagnostics API."""
    app = Flask("ultrabase_doctor.exporter")
    # The same limit waitress holds before Flask sees anything (api.max_body_bytes).
    app.config["MAX_CONTENT_LENGTH"] = svc.config.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = svc

    register_error_handlers(app)
    init_access(app, access, known_instances=svc.engine.knows)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(diagnostics.bp)
    app.register_blueprint(schedules.bp)
    app.register_blueprint(openapi.bp)
    return app
