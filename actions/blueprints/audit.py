"""The audit log (admin): who did what to which instance, and how it ended."""

from __future__ import annotations

from flask import Blueprint, Response

from actions.blueprints.common import endpoint, json_response, services
from actions.models import AuditListOut, AuditQuery
from actions.store import AuditScope
from exporter.web.access import current_principal, require

bp = Blueprint("audit", __name__, url_prefix="/api/audit")


@bp.get("")
@require("admin", instance_arg=None)
@endpoint(query=AuditQuery, ok={200: AuditListOut}, scoped=False, tags=["audit"])
def audit_log(query: AuditQuery) -> Response:
    """Entries newest first, filtered by instance_id, who, action and since (ISO-8601)."""
    # An admin token narrowed to some instances reads only their entries (and its own
    # entries about no instance); whatever else the log holds is left out, not refused.
    principal = current_principal()
    scope = None if principal.instances is None else AuditScope(principal.instances,
                                                                 principal.name)
    entries = services().store.audit(query.limit, query.offset, instance_id=query.instance_id,
                                     who=query.who, action=query.action, since=query.since,
                                     scope=scope)
    return json_response({"count": len(entries), "entries": [e.to_dict() for e in entries]})
