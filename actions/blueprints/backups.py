"""Backups of an instance's files (and database): list, create, restore."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response

from actions.backups import BACKUP_ID_PATTERN, BackupNotFound
from actions.blueprints.common import (
    endpoint,
    json_response,
    operation_statuses,
    services,
    submit,
)
from actions.models import (
    BackupCreateRequest,
    BackupListOut,
    BackupRestoreRequest,
    WaitQuery,
)
from exporter.web.access import require

if TYPE_CHECKING:
    from actions.operations.runner import Body, OperationContext

bp = Blueprint("backups", __name__, url_prefix="/api/instances")

@bp.get("/<instance_id>/backups")
@require("viewer")
@endpoint(ok={200: BackupListOut}, tags=["backups"])
def list_backups(instance_id: str) -> Response:
    """The instance's backups, newest first."""
    svc = services()
    svc.engine.instance(instance_id)
    return json_response({"instance_id": instance_id,
                          "backups": [b.to_dict() for b in svc.backups.list(instance_id)]})


@bp.post("/<instance_id>/backups")
@require("operator")
@endpoint(json=BackupCreateRequest, query=WaitQuery, ok=operation_statuses(), mutating=True,
          kind="backup", tags=["backups"])
def create_backup(instance_id: str, body: BackupCreateRequest, query: WaitQuery) -> Response:
    """Back up the instance's registry record, env, compose and kong.yml (and pg_dump)."""
    svc = services()
    svc.engine.instance(instance_id)
    inputs = {"reason": body.reason, "db_dump": body.db_dump}
    return submit("backup", instance_id, inputs, svc.bodies.backup(body.reason, body.db_dump),
                  query)


@bp.post("/<instance_id>/backups/<backup_id>/restore")
@require("operator")
@endpoint(json=BackupRestoreRequest, query=WaitQuery, ok=operation_statuses(), mutating=True,
          kind="restore", tags=["backups"])
def restore_backup(instance_id: str, backup_id: str, body: BackupRestoreRequest,
                   query: WaitQuery) -> Response:
    """Verify the backup, back up the current state, restore, recreate what changed."""
    svc = services()
    svc.engine.instance(instance_id)
    # Checked before anything touches a path: only the backup store's own id form passes,
    # and only an existing backup of this instance starts an operation.
    if not BACKUP_ID_PATTERN.match(backup_id):
        raise BackupNotFound()
    svc.backups.get(instance_id, backup_id)
    return submit("restore", instance_id, {"backup_id": backup_id},
                  svc.bodies.restore(backup_id), query)


# default operation bodies ------------------------------------------------------------------


def backup_body(reason: str, db_dump: bool) -> Body:
    """An operation that takes one backup (restores are actions.backups.restore_body)."""

    def body(ctx: OperationContext) -> dict[str, Any]:
        with ctx.step("backup", db_dump=db_dump) as detail:
            backup = ctx.backups.create(ctx.instance, reason, db_dump=db_dump)
            detail["backup_id"] = backup.id
        return {"backup": backup.to_dict()}

    return body
