"""Backups of an instance's files (and database): list, create, restore."""

from __future__ import annotations

from flask import Blueprint, Response

from actions import commands
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

bp = Blueprint("backups", __name__, url_prefix="/api/instances")


@bp.get("/<instance_id>/backups")
@require("viewer")
@endpoint(ok={200: BackupListOut}, tags=["backups"])
def list_backups(instance_id: str) -> Response:
    """The instance's backups, newest first."""
    return json_response({"instance_id": instance_id,
                          "backups": [b.to_dict()
                                      for b in commands.list_backups(services(), instance_id)]})


@bp.post("/<instance_id>/backups")
@require("operator")
@endpoint(json=BackupCreateRequest, query=WaitQuery, ok=operation_statuses(), mutating=True,
          kind="backup", tags=["backups"])
def create_backup(instance_id: str, body: BackupCreateRequest, query: WaitQuery) -> Response:
    """Back up the instance's registry record, env, compose and kong.yml (and pg_dump)."""
    return submit(commands.backup(services(), instance_id, body), query)


@bp.post("/<instance_id>/backups/<backup_id>/restore")
@require("operator")
@endpoint(json=BackupRestoreRequest, query=WaitQuery, ok=operation_statuses(), mutating=True,
          kind="restore", tags=["backups"])
def restore_backup(instance_id: str, backup_id: str, body: BackupRestoreRequest,
                   query: WaitQuery) -> Response:
    """Verify the backup, back up the current state, restore, recreate what changed."""
    return submit(commands.restore(services(), instance_id, backup_id), query)
