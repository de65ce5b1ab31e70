"""The backup and restore operations (the backups themselves are kept by actions.backups).

A backup takes one copy of the instance's files (and its database, when asked). A restore
verifies the backup, backs up the current state, writes the backup's files back and
recreates the services they configure, through the config editor's apply-and-verify: if
the instance is not healthy afterwards, the pre-restore state is put back the same way and
the operation ends "rolled_back".
"""

from __future__ import annotations

from typing import Any

from actions.operations.config_edit import apply_and_verify
from actions.operations.runner import Body, OperationContext


def backup_body(reason: str, db_dump: bool) -> Body:
    """An operation that takes one backup."""

    def body(ctx: OperationContext) -> dict[str, Any]:
        with ctx.step("backup", db_dump=db_dump) as detail:
            backup = ctx.backups.create(ctx.instance, reason, db_dump=db_dump)
            detail["backup_id"] = backup.id
        return {"backup": backup.to_dict()}

    return body


def restore_body(backup_id: str) -> Body:
    """An operation: verify → back up the current state → restore files → recreate → health.

    If the instance is not healthy afterwards, the pre-restore state is put back the same
    way and the operation ends "rolled_back".
    """
    def body(ctx: OperationContext) -> dict[str, Any]:
        instance = ctx.instance
        with ctx.step("verify_backup", backup_id=backup_id) as detail:
            content = ctx.backups.load(instance.id, backup_id)
            detail["files"] = sorted(content.files)
        with ctx.step("stage") as detail:
            staged = ctx.backups.stage(instance, content)
            detail["files"] = staged.changed()
            detail["services"] = list(staged.affected_services())
        if not staged.changed():
            return {"restored": backup_id, "files": [], "recreated": [],
                    "message": "the instance's files already match the backup"}
        with ctx.step("backup") as detail:
            before = ctx.backups.create(instance, f"before restoring {backup_id}")
            detail["backup_id"] = before.id
        outcome = apply_and_verify(ctx, staged, before, staged.affected_services(),
                                   what=f"restore of backup {backup_id}")
        return {"restored": backup_id, "pre_restore_backup": before.id, **outcome}

    return body
