"""/metrics, /healthz and /openapi.json of the action API."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from actions.blueprints.common import endpoint, openapi_document, services
from actions.models import ErrorBody, HealthOut
from exporter import __version__
from exporter.web.access import open_route
from exporter.web.metrics import exposition

bp = Blueprint("actions_metrics", __name__)


@bp.get("/metrics")
@open_route()
def metrics() -> Response:
    """The same families as the exporter (ultrabase_operations_total among them)."""
    return exposition(services().renderer)


@bp.get("/healthz")
@open_route()
# Public unless api.protect_metrics: then a viewer (401 without, 403 for the webhook role).
@endpoint(ok={200: HealthOut, 401: ErrorBody, 403: ErrorBody}, scoped=False, public=True,
          tags=["service"])
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok", "version": __version__})


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document, generated from the models that validate the requests."""
    # Always public: it describes the API, holds no data and no secret.
    return jsonify(openapi_document())
