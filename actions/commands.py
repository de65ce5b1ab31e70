"""What every front end of the action services asks of them: the JSON API, the console, the CLI.

Plain functions over `ActionServices`: each checks what the request names (components,
plan actions, backups) against the instance as it is, and prepares the operation as a
`Launch` (kind, inputs as recorded, body). A front end starts it with `Launch.start`, which
goes through the one operation runner: the instance lock, the redacted record, the audit
entry. Access control is the front end's (the caller's role and scope are checked before
these are called); parsing is the request models' (actions.models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actions.backups import BACKUP_ID_PATTERN, Backup, BackupNotFound
from actions.context import ActionServices
from actions.models import (
    BackupCreateRequest,
    ConfigEditRequest,
    RepairRequest,
    RestartServiceRequest,
    SafeRestartRequest,
)
from actions.operations.model import OPERATION_ID_PATTERN, Operation, OperationNotFound
from actions.operations.repair import RepairAction
from actions.operations.runner import Body
from exporter.access import Principal
from exporter.diagnostic import Diagnostic
from exporter.discovery import Instance
from exporter.web.params import BadRequest

_SHOWN_NAMES = 10


@dataclass(frozen=True)
class Launch:
    """An operation ready to start: what the runner records and the body it runs."""

    kind: str
    instance_id: str
    inputs: Mapping[str, Any]
    body: Body = field(repr=False)

    def start(self, svc: ActionServices, principal: Principal) -> Operation:
        """Lock the instance and run the body in the background; the operation as started."""
        return svc.runner.submit(self.kind, self.instance_id, principal, self.inputs,
                                 self.body)


def shown(text: str) -> str:
    """A client-supplied name, shortened and stripped of control characters."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[:40])
    return clean + ("..." if len(text) > 40 else "")


def names(items: Sequence[str]) -> str:
    """A short comma-separated list of client-supplied names."""
    return ", ".join(shown(i) for i in list(items)[:_SHOWN_NAMES])


# restarts ---------------------------------------------------------------------------------


def known_components(svc: ActionServices, instance_id: str, wanted: Sequence[str]) -> None:
    """BadRequest unless every named component is one of the instance's."""
    instance = svc.engine.instance(instance_id)
    unknown = sorted(set(wanted) - set(instance.components))
    if unknown:
        raise BadRequest(f"unknown component(s): {names(unknown)}; the instance has "
                         f"{', '.join(instance.components)}")


def safe_restart(svc: ActionServices, instance_id: str, request: SafeRestartRequest) -> Launch:
    """Stop and start the instance (or the named components) in dependency order."""
    components = list(dict.fromkeys(request.components)) if request.components else None
    if components:
        known_components(svc, instance_id, components)
    else:
        svc.engine.instance(instance_id)
    inputs = {"components": components, "stop_timeout_seconds": request.stop_timeout_seconds}
    return Launch("safe_restart", instance_id, inputs, svc.bodies.safe_restart(components))


def restart_service(svc: ActionServices, instance_id: str,
                    request: RestartServiceRequest) -> Launch:
    """Restart one component, and those that depend on it when asked."""
    known_components(svc, instance_id, [request.component])
    inputs = {"component": request.component, "with_dependents": request.with_dependents}
    return Launch("restart_service", instance_id, inputs,
                  svc.bodies.restart_service(request.component, request.with_dependents))


# repair -----------------------------------------------------------------------------------


def plan_dict(svc: ActionServices, instance: Instance, diagnostic: Diagnostic | None,
              plan: Sequence[RepairAction]) -> dict[str, Any]:
    """The plan as JSON, with the diagnostic it comes from and what needs a human."""
    out: dict[str, Any] = {
        "instance_id": instance.id,
        "diagnostic_at": diagnostic.timestamp.isoformat() if diagnostic else None,
        "healthy": diagnostic.healthy if diagnostic else None,
        "actions": [a.to_dict() for a in plan]}
    details = svc.bodies.plan_details
    if diagnostic is not None and details is not None:
        out.update({k: v for k, v in details(diagnostic, instance).items() if k not in out})
    return out


def repair_plan(svc: ActionServices, instance_id: str) -> dict[str, Any]:
    """What a repair would do, from the latest stored diagnostic (nothing is run)."""
    instance = svc.engine.instance(instance_id)
    latest = svc.store.latest(instance_id)
    if latest is None:
        out = plan_dict(svc, instance, None, [])
        out["message"] = (f"no diagnostic yet; POST /api/instances/{instance_id}/"
                          "run-diagnostics on the exporter, or POST repair with dry_run")
        return out
    return plan_dict(svc, instance, latest, svc.bodies.plan_repairs(latest, instance))


@dataclass(frozen=True)
class RepairDecision:
    """A repair request decided: the fresh plan, and the operation to start (if any)."""

    plan: dict[str, Any]
    launch: Launch | None


def repair(svc: ActionServices, instance_id: str, request: RepairRequest) -> RepairDecision:
    """Diagnose afresh, plan, and choose what runs (nothing for a dry run or an empty plan).

    Actions that need confirmation run only with `confirm`; without it, a full plan runs
    the others and names the held-back ones.
    """
    # Plan against the instance as it is now, not as it was at the last sweep or discovery.
    instance = svc.engine.instance(instance_id, fresh=True)
    # A dry run changes nothing, so it shares the per-instance rate limit (and single
    # flight) of run-diagnostics: within the window it plans from the latest diagnostic.
    outcome = svc.engine.run(instance_id, trigger="operation", use_cache=False,
                             limited=request.dry_run)
    diagnostic = outcome.diagnostic
    plan = svc.bodies.plan_repairs(diagnostic, instance)
    out = plan_dict(svc, instance, diagnostic, plan)
    if outcome.rate_limited:
        out["rate_limited"] = True
        out["retry_after_seconds"] = round(outcome.retry_after_seconds, 1)
    if request.actions is not None:
        known = {a.id for a in plan}
        missing = [i for i in dict.fromkeys(request.actions) if i not in known]
        if missing:
            raise BadRequest(f"not in the current repair plan: {names(missing)}; "
                             f"GET repair-plan or use dry_run to see it")
        # Plan order, whatever the request's: root cause first, dependencies before users.
        chosen = [a for a in plan if a.id in set(request.actions)]
        unconfirmed = [a.id for a in chosen if a.needs_confirm and not request.confirm]
        if unconfirmed:
            raise BadRequest(f"{names(unconfirmed)} need(s) confirm: true (client apps "
                             "must be updated afterwards)")
    else:
        chosen = [a for a in plan if request.confirm or not a.needs_confirm]
        held = [a.id for a in plan if a.needs_confirm and not request.confirm]
        if held:
            out["held_back"] = held
            out["message"] = f"{names(held)} need(s) confirm: true and will not run"
    if request.dry_run:
        out["dry_run"] = True
        out["would_run"] = [a.id for a in chosen]
        return RepairDecision(out, None)
    if not chosen:
        out["message"] = ("nothing to repair" if not plan
                          else out.get("message", "nothing to repair"))
        return RepairDecision(out, None)
    inputs = {"actions": [a.id for a in chosen], "confirm": request.confirm,
              "diagnostic_at": diagnostic.timestamp.isoformat()}
    return RepairDecision(out, Launch("repair", instance_id, inputs,
                                      svc.bodies.repair(chosen, request.confirm)))


# config -----------------------------------------------------------------------------------


def current_config(svc: ActionServices, instance_id: str) -> dict[str, Any]:
    """The editable settings as the instance's files hold them; secrets masked."""
    return svc.bodies.current_config(svc.engine.instance(instance_id))


def typed_settings(raw: Mapping[str, str], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Settings given as text (a form, `--set key=value`) in their JSON types.

    `fields` is current_config()'s "fields": each setting's "type" says how to read it.
    Empty text means "unchanged"; the request model and validate_changes judge the rest.
    """
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if text == "":
            continue
        spec = fields.get(name)
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if kind == "bool":
            if text.strip().lower() not in ("true", "false"):
                raise BadRequest(f"{shown(name)} must be true or false")
            out[name] = text.strip().lower() == "true"
        elif kind == "int":
            digits = text.strip()
            if not digits.lstrip("-").isdigit() or len(digits) > 12:
                raise BadRequest(f"{shown(name)} must be an integer")
            out[name] = int(digits)
        else:
            out[name] = text
    return out


def config_edit(svc: ActionServices, instance_id: str, request: ConfigEditRequest) -> Launch:
    """Change settings in every file that carries them; rolled back if health fails."""
    svc.engine.instance(instance_id)
    changes = svc.bodies.validate_changes(request.changes.given())
    # The operation record gets masked secrets; only the body's closure holds the values.
    inputs = {"changes": request.changes.redacted()}
    return Launch("config_edit", instance_id, inputs, svc.bodies.config_edit(changes))


# backups ----------------------------------------------------------------------------------


def list_backups(svc: ActionServices, instance_id: str) -> list[Backup]:
    """The instance's backups, newest first."""
    svc.engine.instance(instance_id)
    return svc.backups.list(instance_id)


def backup(svc: ActionServices, instance_id: str, request: BackupCreateRequest) -> Launch:
    """Back up the instance's registry record, env, compose and kong.yml (and database)."""
    svc.engine.instance(instance_id)
    inputs = {"reason": request.reason, "db_dump": request.db_dump}
    return Launch("backup", instance_id, inputs,
                  svc.bodies.backup(request.reason, request.db_dump))


def find_backup(svc: ActionServices, instance_id: str, backup_id: str) -> Backup:
    """One backup of this instance; BackupNotFound for anything else."""
    svc.engine.instance(instance_id)
    # Checked before anything touches a path: only the backup store's own id form passes.
    if not BACKUP_ID_PATTERN.fullmatch(backup_id):
        raise BackupNotFound()
    return svc.backups.get(instance_id, backup_id)


def restore(svc: ActionServices, instance_id: str, backup_id: str) -> Launch:
    """Restore a backup of this instance (verified first; the current state backed up)."""
    # Only an existing backup of this instance starts an operation.
    find_backup(svc, instance_id, backup_id)
    return Launch("restore", instance_id, {"backup_id": backup_id},
                  svc.bodies.restore(backup_id))


# operations -------------------------------------------------------------------------------


def find_operation(svc: ActionServices, principal: Principal, op_id: str) -> Operation:
    """The operation, if the caller may see its instance; unknown and hidden read the same."""
    if not OPERATION_ID_PATTERN.fullmatch(op_id):
        raise OperationNotFound()
    operation = svc.runner.get(op_id)
    if operation is None or not principal.can_see(operation.instance_id):
        raise OperationNotFound()
    return operation
