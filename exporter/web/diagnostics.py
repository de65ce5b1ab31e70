"""The diagnostics API: instances, runs, the last result, logs, history and reports."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from flask import Blueprint, Response, g, jsonify, request

from exporter.checks import ALL_CHECKS
from exporter.logs import DEFAULT_LEVEL, DEFAULT_RANGE, default_services, parse_level, parse_range
from exporter.overview import summarize
from exporter.reports import load_report
from exporter.web.access import require
from exporter.web.context import services
from exporter.web.params import int_arg, list_arg, parsed_arg

bp = Blueprint("diagnostics", __name__, url_prefix="/api/instances")



@bp.get("")
@require("viewer", instance_arg=None)
def list_instances() -> Response:
    """Instances the caller may see, with their latest health."""
    svc = services()
    found = svc.engine.discover()
    out = [s.to_dict() for s in summarize(found.instances.values(), svc.store,
                                            g.principal.can_see)]
    return jsonify({"docker_ok": found.docker_ok, "instances": out})


@bp.route("/<instance_id>/run-diagnostics", methods=["GET", "POST"])
@require("operator")
def run_diagnostics(instance_id: str) -> Response:
    """Run (or serve the cached) diagnostic; POST asks for a fresh run, rate limited."""
    checks = list_arg("checks", set(ALL_CHECKS))
    outcome = services().engine.run(instance_id, use_cache=request.method == "GET",
                                    checks=checks)
    response = jsonify(outcome.to_dict())
    if outcome.rate_limited:
        response.headers["Retry-After"] = str(max(1, math.ceil(outcome.retry_after_seconds)))
    return response


@bp.get("/<instance_id>/last-diagnostic")
@require("viewer")
def last_diagnostic(instance_id: str) -> Response | tuple[Response, int]:
    """The latest stored diagnostic; never runs anything."""
    latest = services().store.latest(instance_id)
    if latest is None:
        return jsonify({"error": {"code": "no_diagnostic",
                                  "message": "no diagnostic yet; run one first"},
                        "run_diagnostics_url":
                            f"/api/instances/{instance_id}/run-diagnostics"}), 404
    return jsonify(latest.to_dict(cached=True))


@bp.get("/check-all-health")
@require("admin", instance_arg=None)
def check_all_health() -> Response:
    """Every instance's health, run concurrently (cached results are reused)."""
    svc = services()
    started = datetime.now(UTC)
    # A narrowed admin token neither runs nor sees instances outside its scope.
    outcomes = svc.engine.run_all(use_cache=True, only=g.principal.can_see)
    names = {i.id: i.name for i in svc.engine.discover().instances.values()
             if g.principal.can_see(i.id)}
    results = [{
        "instance_id": o.diagnostic.instance_id,
        "instance_name": names.get(o.diagnostic.instance_id),
        "healthy": o.diagnostic.healthy,
        "cached": o.cached,
        "root_cause": o.diagnostic.root_cause.issue.code if o.diagnostic.root_cause else None,
        "issues": [i.code for i in o.diagnostic.issues],
    } for o in outcomes]
    return jsonify({"timestamp": started.isoformat(), "total_instances": len(results),
                    "unhealthy": sum(not r["healthy"] for r in results), "results": results})


@bp.get("/<instance_id>/diagnostic-logs")
@require("viewer")
def diagnostic_logs(instance_id: str) -> Response:
    """Structured recent logs of chosen components, filtered by level and time range."""
    svc = services()
    instance = svc.engine.instance(instance_id)
    wanted = list_arg("services", set(instance.components)) or default_services(
        instance.components)
    level = parsed_arg("level", DEFAULT_LEVEL, parse_level)
    since = parsed_arg("range", DEFAULT_RANGE, parse_range)
    limit = int_arg("limit", 500, 1, 5000)
    entries, summary = svc.analyzer.get_structured_logs(
        instance, wanted, level=level, since_seconds=since,
        max_lines=svc.config.diagnostics.log_max_lines)
    return jsonify({"instance_id": instance_id, "services": wanted, "level": level,
                    "range_seconds": since, "logs": [e.to_dict() for e in entries[:limit]],
                    "summary": summary.to_dict()})


@bp.get("/<instance_id>/diagnostic-history")
@require("viewer")
def diagnostic_history(instance_id: str) -> Response:
    """Stored diagnostics, newest first."""
    svc = services()
    svc.engine.instance(instance_id)
    limit = int_arg("limit", 10, 1, svc.config.store.max_history_limit)
    history = svc.store.history(instance_id, limit)
    return jsonify({"instance_id": instance_id, "count": len(history),
                    "history": [d.to_dict(cached=True) for d in history]})


@bp.get("/<instance_id>/health-report")
@require("viewer")
def report(instance_id: str) -> Response:
    """Uptime, trend, common issues and time to recovery over the last days."""
    svc = services()
    svc.engine.instance(instance_id)
    days = int_arg("days", 7, 1, 365)
    return jsonify(load_report(svc.store, instance_id, days,
                               limit=svc.config.store.max_report_diagnostics).to_dict())
