"""/metrics and /healthz: rendered from the store, never probing anything."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from exporter import __version__
from exporter.metrics.render import MetricsRenderer, only_instances
from exporter.web.access import current_principal, open_route
from exporter.web.context import services

bp = Blueprint("metrics", __name__)


def exposition(renderer: MetricsRenderer) -> Response:
    """The renderer's cached Prometheus text, narrowed to the caller's scope when protected."""
    output = renderer.render()
    principal = current_principal()
    # Open /metrics (api.protect_metrics false) is anonymous and shows the fleet, as
    # documented; a token narrowed to some instances sees only their series.
    if principal.source != "anonymous" and principal.instances is not None:
        output = only_instances(output, principal.instances)
    return Response(output, mimetype=None, content_type=CONTENT_TYPE_LATEST)


@bp.get("/metrics")
@open_route()
def metrics() -> Response:
    """Prometheus exposition of the cached diagnostics."""
    return exposition(services().renderer)


@bp.get("/healthz")
@open_route()
def healthz() -> Response:
    """Liveness (always 200 while the process answers); "degraded" when a watch is down."""
    watch = services().watch
    body: dict[str, object] = {"status": "ok", "version": __version__}
    if watch is not None:
        body["watch"] = watch.to_dict()
        if not watch.healthy:
            body["status"] = "degraded"
    return jsonify(body)
