"""The instance's editable settings: read (secrets masked) and change (backup, apply, verify)."""

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
from actions.models import ConfigEditRequest, ConfigOut, WaitQuery
from exporter.web.access import require

bp = Blueprint("config", __name__, url_prefix="/api/instances")


@bp.get("/<instance_id>/config")
@require("viewer")
@endpoint(ok={200: ConfigOut}, tags=["config"])
def get_config(instance_id: str) -> Response:
    """The editable settings as they are in the instance's files; secrets masked."""
    return json_response({"instance_id": instance_id,
                          "config": commands.current_config(services(), instance_id)})


@bp.put("/<instance_id>/config")
@require("operator")
@endpoint(json=ConfigEditRequest, query=WaitQuery, ok=operation_statuses(), mutating=True,
          kind="config_edit", tags=["config"])
def put_config(instance_id: str, body: ConfigEditRequest, query: WaitQuery) -> Response:
    """Change settings in every file that carries them, recreate the affected services.

    A backup is taken first; if the instance is not healthy afterwards the files are
    restored, the services recreated again, and the operation ends "rolled_back".
    """
    return submit(commands.config_edit(services(), instance_id, body), query)
