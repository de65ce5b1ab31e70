"""Per-instance diagnostic schedules, and a crontab line for operators who prefer cron."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, g, jsonify

from exporter.scheduler import INTERVALS, ScheduleError, checked_cron, cron_of
from exporter.store import Schedule
from exporter.web.access import require
from exporter.web.context import services
from exporter.web.params import BadRequest, json_body

bp = Blueprint("schedules", __name__, url_prefix="/api/instances")

_DEFAULT_SPEC = "6h"


def _describe(instance_id: str, schedule: Schedule | None) -> dict[str, object]:
    svc = services()
    jobs = svc.scheduler.instance_jobs() if svc.scheduler else {}
    next_run = jobs.get(instance_id)
    return {
        "instance_id": instance_id,
        "schedule": schedule.spec if schedule else None,
        "enabled": schedule.enabled if schedule else False,
        "cron": cron_of(schedule.spec) if schedule else None,
        "updated_at": schedule.updated_at.isoformat() if schedule else None,
        "updated_by": schedule.updated_by if schedule else None,
        "next_run": next_run.isoformat() if next_run else None,
        "global_sweep_interval_seconds": svc.config.schedule.sweep_interval_seconds,
        "choices": sorted(INTERVALS),
    }


@bp.get("/<instance_id>/schedule")
@require("viewer")
def get_schedule(instance_id: str) -> Response:
    """The instance's schedule, if any."""
    services().engine.instance(instance_id)
    return jsonify(_describe(instance_id, services().store.get_schedule(instance_id)))


@bp.put("/<instance_id>/schedule")
@require("operator")
def put_schedule(instance_id: str) -> Response:
    """Set ({"schedule": "6h"|cron, "enabled": bool}) or clear ({"schedule": null})."""
    svc = services()
    svc.engine.instance(instance_id)
    body = json_body()
    unknown = set(body) - {"schedule", "enabled"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    spec = body.get("schedule")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise BadRequest("enabled must be true or false")
    if spec is None:
        svc.store.delete_schedule(instance_id)
        if svc.scheduler:
            svc.scheduler.set_instance(instance_id, None)
        return jsonify(_describe(instance_id, None))
    if not isinstance(spec, str) or len(spec) > 100:
        raise BadRequest("schedule must be a string")
    try:
        checked_cron(spec, svc.config.schedule.min_instance_interval_seconds)
    except ScheduleError as exc:
        raise BadRequest(str(exc)) from None
    schedule = Schedule(instance_id=instance_id, spec=spec.strip(), enabled=enabled,
                        updated_at=datetime.now(UTC), updated_by=g.principal.name)
    svc.store.set_schedule(schedule)
    if svc.scheduler:
        svc.scheduler.set_instance(instance_id, schedule.spec if enabled else None)
    return jsonify(_describe(instance_id, schedule))


@bp.get("/<instance_id>/schedule/cron")
@require("viewer")
def cron_line(instance_id: str) -> Response:
    """A ready crontab line calling run-diagnostics on 127.0.0.1 (token left as placeholder)."""
    svc = services()
    svc.engine.instance(instance_id)
    schedule = svc.store.get_schedule(instance_id)
    spec = schedule.spec if schedule else _DEFAULT_SPEC
    cron = cron_of(spec)
    port = svc.config.exporter.port
    command = (f"curl -fsS -X POST -H 'Authorization: Bearer YOUR_TOKEN' "
               f"http://127.0.0.1:{port}/api/instances/{instance_id}/run-diagnostics "
               f">> /var/log/ultrabase-doctor-{instance_id}.log 2>&1")
    return jsonify({"instance_id": instance_id, "schedule": spec, "cron": cron,
                    "line": f"{cron} {command}",
                    "note": "replace YOUR_TOKEN with an operator token"})
