"""Repair: the latest diagnostic's issues mapped to safe actions, run with backup, verify, rollback.

Planning (`build_plan`, `plan_repairs`) is pure: a Diagnostic and its Instance in, actions out.
Only live findings are planned from: issues read from logs describe the recent past and
info-level issues need no repair. The rules, in order:

1. Each issue's repair id (exporter/issues.py) becomes an intent on a target, adjusted to
   the instance: a container action is recreate when the container is missing, start when
   it is stopped or paused, restart when it runs; a repair that is not safe here (a db that
   runs but refuses connections, keys to regenerate from a weak or disputed secret) is
   a manual item with the reason.
2. Issues without a safe repair that nothing else explains are manual items; what they
   explain gets no action at all (no container is started on a missing volume or a taken
   port).
3. A restart whose every reason is explained by an issue another action fixes is dropped:
   auth is not restarted for a DB fault; the DB fix is planned instead, followed by a
   restart of the services that log in as the synced roles.
4. Intents are deduplicated by (action, component); the root cause's action runs first,
   the others in dependency order: db up, role passwords, other containers up, gateway
   keys, API keys, restarts.

Execution (`repair_body`): per action a backup, the act, then the check that raised the
issue is re-run until the issue is gone (bounded). The first failure rolls back what that
action changed (files restored from its backup and their services recreated, role
passwords set back to their previous hashes, containers put back in their previous state)
and stops the plan. Regenerating the API keys runs only with confirm, because client apps
must then switch keys.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import yaml
from docker.errors import DockerException
from psycopg import sql

from actions.files import FileSet
from actions.operations.model import OperationError
from actions.operations.runner import Body, OperationContext
from exporter.checks import ALL_CHECKS
from exporter.checks.database import role_logins
from exporter.checks.listener import withheld as withheld_login
from exporter.diagnostic import Diagnostic
from exporter.discovery.files import (
    FileReadError,
    read_compose_file,
    read_env_file,
    read_kong_file,
)
from exporter.discovery.model import COMPONENTS, Instance
from exporter.discovery.registry import read_registry
from exporter.dockerhost import COMPOSE_PROJECT, COMPOSE_SERVICE
from exporter.errors import DoctorError, RegistryError
from exporter.issues import CATALOGUE, Issue
from exporter.jwtkeys import analyse_key, generate_keys, secret_weak
from exporter.pg import ADMIN_USERS, DbLogin, LoginFailedError, connect, instance_dbname
from exporter.redaction import fingerprint
from exporter.rootcause import explains, order_issues
from exporter.safefs import SymlinkRefused, read_text
from exporter.web.params import BadRequest

if TYPE_CHECKING:
    from docker.models.containers import Container

log = logging.getLogger(__name__)

START, RECREATE, RESTART = "start_container", "recreate_container", "restart_component"
SYNC_ROLES, REGENERATE_KEYS = "sync_db_role_passwords", "regenerate_jwt_keys"
SYNC_GATEWAY, SYNC_CONFIG = "sync_gateway_keys", "sync_config"
REPAIR_IDS: tuple[str, ...] = (START, RECREATE, RESTART, SYNC_ROLES, REGENERATE_KEYS,
                               SYNC_GATEWAY, SYNC_CONFIG)
CONTAINER_ACTIONS = frozenset({START, RECREATE, RESTART})
# Actions that change what client apps use: they run only with confirm.
CONFIRM_ACTIONS = frozenset({REGENERATE_KEYS})

# The services that log in as each Supabase role (Ultrabase's compose template).
ROLE_SERVICES: Mapping[str, tuple[str, ...]] = {
    "supabase_auth_admin": ("auth",),
    "authenticator": ("rest",),
    "supabase_storage_admin": ("storage",),
    "supabase_admin": ("realtime", "meta", "analytics", "supavisor"),
}
_ROLE_USERS = frozenset(s for services in ROLE_SERVICES.values() for s in services)
# What a verified container action must leave behind for its component: none of these.
# A kong container that runs but does not answer yet (it is still starting) hides what it
# was restarted for, so the gateway answering is part of it.
_CONTAINER_DOWN = frozenset({"CONTAINER_MISSING", "CONTAINER_NOT_RUNNING",
                             "CONTAINER_CRASH_LOOP", "CONTAINER_UNHEALTHY",
                             "GATEWAY_UNREACHABLE"})
_STOPPED = frozenset({"exited", "created", "dead", "paused", "removing"})
# Env and compose variables that hold the API keys, by key name.
_KEY_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "anon": ("ANON_KEY", "SUPABASE_ANON_KEY"),
    "service_role": ("SERVICE_ROLE_KEY", "SERVICE_KEY", "SUPABASE_SERVICE_KEY",
                     "SUPABASE_SERVICE_ROLE_KEY"),
}
_ENV_KEY = {"anon": "ANON_KEY", "service_role": "SERVICE_ROLE_KEY"}
_REGISTRY_KEY = {"anon": "anon_key", "service_role": "service_role_key"}
_COMPONENT_ORDER = {c: n for n, c in enumerate(COMPONENTS)}
_CHECK_ORDER = {c: n for n, c in enumerate(ALL_CHECKS)}
# Verification re-runs the checks until the issue is gone, at most this long.
VERIFY_WINDOW_SECONDS = 60.0
_POLL_SECONDS = 1.0


class ConfirmationRequired(BadRequest):
    """An action that changes what client apps use was asked for without confirm."""

    code = "confirmation_required"


class UnknownRepairAction(BadRequest):
    """A requested action id is not in the current plan."""

    code = "unknown_repair_action"


class RepairError(DoctorError):
    """One action could not be carried out or verified; the message is safe to show."""


# -- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairAction:
    """One planned repair: what it does, to what, for which issues, and how it is verified."""

    id: str
    action: str
    component: str | None
    issue_codes: tuple[str, ...]
    needs_confirm: bool
    description: str
    verify_check: str
    # Further checks whose issues this action must clear (the primary one is verify_check).
    also_verify: tuple[str, ...] = ()
    # sync_db_role_passwords: the roles to sync (empty: every service role).
    roles: tuple[str, ...] = ()

    @property
    def verify_checks(self) -> tuple[str, ...]:
        """Every check re-run to verify this action."""
        return tuple(dict.fromkeys((self.verify_check, *self.also_verify)))

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"id": self.id, "action": self.action, "component": self.component,
                "issue_codes": list(self.issue_codes), "needs_confirm": self.needs_confirm,
                "description": self.description, "verify_check": self.verify_check,
                "verify_checks": list(self.verify_checks), "roles": list(self.roles)}


@dataclass(frozen=True)
class ManualItem:
    """An issue no action repairs safely: the operator's to do, with the hint."""

    code: str
    component: str | None
    severity: str
    message: str
    hint: str
    # Issues ("CODE[component]") left alone because this one explains them.
    blocks: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"code": self.code, "component": self.component, "severity": self.severity,
                "message": self.message, "hint": self.hint, "blocks": list(self.blocks)}


@dataclass(frozen=True)
class Consequence:
    """An issue expected to clear once the action on what explains it has run."""

    code: str
    component: str | None
    explained_by: str

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"code": self.code, "component": self.component,
                "explained_by": self.explained_by}


@dataclass(frozen=True)
class RepairPlan:
    """Actions in run order, manual items, and the issues the actions should clear too."""

    instance_id: str
    root_cause: str | None
    actions: tuple[RepairAction, ...]
    manual: tuple[ManualItem, ...] = ()
    consequences: tuple[Consequence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"instance_id": self.instance_id, "root_cause": self.root_cause,
                "actions": [a.to_dict() for a in self.actions],
                "manual": [m.to_dict() for m in self.manual],
                "consequences": [c.to_dict() for c in self.consequences]}


@dataclass(frozen=True)
class _Intent:
    """What one issue asks for: an action on a target."""

    action: str
    component: str | None
    role: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """The deduplication key."""
        return self.action, self.component


def plan_repairs(diagnostic: Diagnostic, instance: Instance) -> list[RepairAction]:
    """The actions of the plan for this diagnostic, in run order."""
    return list(build_plan(diagnostic, instance).actions)


def build_plan(diagnostic: Diagnostic, instance: Instance) -> RepairPlan:
    """The whole plan: actions in run order, manual items and expected consequences."""
    issues = order_issues(i for i in diagnostic.issues
                          if i.check != "logs" and i.severity != "info")
    intents: dict[int, _Intent] = {}
    unsafe: dict[int, str] = {}
    for n, issue in enumerate(issues):
        found = _intent(issue, instance)
        if isinstance(found, _Intent):
            intents[n] = found
        elif isinstance(found, str):
            unsafe[n] = found
    reach = [_reach(n, issues) for n in range(len(issues))]

    def one_way(cause: int, effect: int) -> bool:
        return effect in reach[cause] and cause not in reach[effect]

    # Rule 2: unrepairable issues nothing actionable explains block what they explain.
    blockers = [n for n in range(len(issues)) if n not in intents
                and not any(one_way(c, n) for c in intents)]
    blocked = {n: b for n in intents for b in blockers if one_way(b, n)}
    for n in blocked:
        del intents[n]

    # Rule 3: restarts whose every reason another (non-restart) action fixes are dropped.
    groups: dict[tuple[str, str | None], list[int]] = {}
    for n, intent in intents.items():
        groups.setdefault(intent.key, []).append(n)
    fixers = [n for n, i in intents.items() if i.action != RESTART]
    dropped: dict[str, list[int]] = {}
    for key, members in list(groups.items()):
        if key[0] != RESTART:
            continue
        if all(any(one_way(c, n) for c in fixers) for n in members):
            dropped[str(key[1])] = members
            del groups[key]

    # Follow-ups: the services of the synced roles restart after the sync.
    roles = _sync_roles(intents, groups)
    follow_ups: dict[str, list[int]] = {}
    if (SYNC_ROLES, "db") in groups:
        taken = {k[1] for k in groups if k[0] in CONTAINER_ACTIONS}
        for service in _role_services(roles or tuple(ROLE_SERVICES)):
            component = instance.components.get(service)
            if service in taken or component is None or component.container is None:
                continue
            follow_ups[service] = dropped.get(service, [])

    actions = [_action(key, [issues[n] for n in members], instance, roles)
               for key, members in groups.items()]
    actions += [_follow_up(service, [issues[n] for n in members])
                for service, members in follow_ups.items()]
    root = diagnostic.root_cause.issue if diagnostic.root_cause else None
    actions = _ordered(actions, root, issues, groups)

    planned = {n for members in groups.values() for n in members}
    planned |= {n for members in follow_ups.values() for n in members}
    manual, consequences = _leftovers(issues, planned, blockers, blocked, unsafe, one_way)
    return RepairPlan(instance.id, root.code if root else None, tuple(actions),
                      tuple(manual), tuple(consequences))


def _intent(issue: Issue, instance: Instance) -> _Intent | str | None:
    """The issue's repair on this instance; a reason when it is not safe here; None: none."""
    repair = issue.repair
    if repair is None:
        return None
    if repair in CONTAINER_ACTIONS:
        return _container_intent(issue, instance)
    if repair == SYNC_ROLES:
        return _roles_intent(issue, instance)
    if repair == REGENERATE_KEYS:
        problem = keys_problem(instance)
        return problem if problem else _Intent(REGENERATE_KEYS, None)
    if repair == SYNC_GATEWAY:
        return _gateway_intent(issue, instance)
    if repair == SYNC_CONFIG:
        return ("which source holds the right value is the operator's decision; align the "
                "files with the running containers (or recreate) by hand")
    return f"no automatic action is known for repair {repair!r}"


def _container_intent(issue: Issue, instance: Instance) -> _Intent | str:
    name = issue.component
    if name is None or name not in instance.components:
        return "the issue names no component of this instance to act on"
    container = instance.components[name].container
    if issue.code == "NETWORK_MISSING":
        return _Intent(RECREATE, name)  # only a recreation reattaches the network
    if container is None:
        return _Intent(RECREATE, name)
    if container.state in _STOPPED:
        return _Intent(START, name)
    if issue.code == "DB_UNREACHABLE":
        return ("the db container runs but refuses connections (starting, recovering or out "
                "of connection slots); restarting it could interrupt crash recovery")
    return _Intent(RESTART, name)


def _roles_intent(issue: Issue, instance: Instance) -> _Intent | str:
    if not instance.credentials.postgres_password or instance.endpoints.db_port is None:
        return "the instance's postgres password or published db port is unknown"
    if issue.code == "AUTH_DB_CONNECTION_FAILED":
        if issue.evidence.get("outcome") != "auth_failed":
            return ("GoTrue's login is refused for another reason than its password (role "
                    "or database missing, pg_hba); syncing passwords would not help")
        role = issue.evidence.get("user")
    else:
        role = issue.evidence.get("role")
    return _Intent(SYNC_ROLES, "db", role if isinstance(role, str) and role else None)


def keys_problem(instance: Instance) -> str | None:
    """Why the API keys cannot be regenerated safely here, or None."""
    secret = auth_jwt_secret(instance)
    if not secret:
        return "the JWT secret auth runs with is unknown"
    if secret_weak(secret):
        return "the JWT secret is weak; rotate the secret first, then regenerate the keys"
    rest = (instance.runtime_env.get("rest") or {}).get("PGRST_JWT_SECRET")
    disputed = any("jwt_secret" in (p.evidence.get("credentials") or {})
                   for p in instance.problems if p.code == "CONFIG_DRIFT")
    if (rest and rest != secret) or disputed:
        return ("services or files disagree on the JWT secret; align JWT_SECRET everywhere "
                "first, or keys signed with auth's secret would break the others")
    if instance.files.env_file is None:
        return "the instance's env file is unknown"
    return None


def _gateway_intent(issue: Issue, instance: Instance) -> _Intent | str:
    differs = issue.evidence.get("kong_file_differs")
    credential = issue.evidence.get("credential")
    if differs is False:
        return _Intent(RESTART, "kong")  # kong.yml is right; the running config is stale
    if differs is None or instance.files.kong_file is None:
        return "no kong.yml is known for this instance"
    if credential not in ("anon_key", "service_role_key"):
        return "the dashboard credentials differ in kong.yml; edit them with the config API"
    if instance.files.env_file is None:
        return "the instance's env file is unknown"
    return _Intent(SYNC_GATEWAY, "kong")


def auth_jwt_secret(instance: Instance) -> str | None:
    """The JWT secret auth runs with (its container's env), else the configured one."""
    runtime = (instance.runtime_env.get("auth") or {}).get("GOTRUE_JWT_SECRET")
    return runtime or instance.credentials.jwt_secret


def _reach(start: int, issues: Sequence[Issue]) -> set[int]:
    """Issues start explains, directly or through others."""
    seen: set[int] = set()
    frontier = [start]
    while frontier:
        current = frontier.pop()
        for n, other in enumerate(issues):
            if n not in seen and n != start and _explains(issues[current], other):
                seen.add(n)
                frontier.append(n)
    return seen


def _explains(cause: Issue, effect: Issue) -> bool:
    """rootcause's rules, narrowed: a role mismatch explains only its own service's faults."""
    if not explains(cause, effect):
        return False
    if cause.code == "DB_ROLE_PASSWORD_MISMATCH" and effect.component in _ROLE_USERS:
        role = cause.evidence.get("role")
        return isinstance(role, str) and effect.component in ROLE_SERVICES.get(role, ())
    return True


def _sync_roles(intents: Mapping[int, _Intent],
                groups: Mapping[tuple[str, str | None], list[int]]) -> tuple[str, ...]:
    """Roles to sync, as the issues name them (empty: all service roles)."""
    members = groups.get((SYNC_ROLES, "db"), [])
    named = [intents[n].role for n in members]
    if any(r is None for r in named):
        return ()
    return tuple(dict.fromkeys(r for r in named if r is not None))


def _role_services(roles: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(s for r in roles for s in ROLE_SERVICES.get(r, ())))


def _checks(issues: Sequence[Issue], *extra: str) -> tuple[str, ...]:
    found = {i.check for i in issues if i.check in _CHECK_ORDER} | set(extra)
    return tuple(sorted(found, key=lambda c: _CHECK_ORDER.get(c, 99)))


def _action(key: tuple[str, str | None], members: Sequence[Issue], instance: Instance,
            roles: tuple[str, ...]) -> RepairAction:
    action, component = key
    codes = tuple(dict.fromkeys(i.code for i in members))
    extra = ("container_status",) if action in CONTAINER_ACTIONS else ()
    checks = _checks(members, *extra) or ("container_status",)
    # members are ordered most fundamental first; its check is the one to re-run first
    primary = members[0].check if members[0].check in checks else checks[0]
    also = tuple(c for c in checks if c != primary)
    return RepairAction(
        id=action if component is None else f"{action}:{component}", action=action,
        component=component, issue_codes=codes, needs_confirm=action in CONFIRM_ACTIONS,
        description=_describe(action, component, instance, roles), verify_check=primary,
        also_verify=also, roles=roles if action == SYNC_ROLES else ())


def _follow_up(service: str, members: Sequence[Issue]) -> RepairAction:
    checks = _checks(members, "container_status")
    return RepairAction(
        id=f"{RESTART}:{service}", action=RESTART, component=service,
        issue_codes=tuple(dict.fromkeys(i.code for i in members)), needs_confirm=False,
        description=f"restart {service} so it logs in with the synced role password",
        verify_check="container_status",
        also_verify=tuple(c for c in checks if c != "container_status"))


def _describe(action: str, component: str | None, instance: Instance,
              roles: tuple[str, ...]) -> str:
    if action == START:
        container = instance.components[str(component)].container
        if container is not None and container.state == "paused":
            return f"unpause the {component} container"
        return f"start the stopped {component} container"
    if action == RECREATE:
        return (f"recreate {component} with compose (up -d --no-deps {component}); data in "
                "bind mounts is kept")
    if action == RESTART:
        return f"restart {component}"
    if action == SYNC_ROLES:
        who = ", ".join(roles) if roles else "every Supabase service role"
        return (f"set the DB password of {who} to the one its service is configured with "
                "(ALTER ROLE over a superuser connection), then restart the services "
                "that log in as them")
    if action == REGENERATE_KEYS:
        return ("generate new anon and service_role keys from the JWT secret auth runs with, "
                "write them to the registry, env file, compose file and kong.yml, and "
                "recreate the services that read them; client apps must switch to the "
                "new keys (needs confirm)")
    if action == SYNC_GATEWAY:
        return "write the env file's API keys into kong.yml and restart kong"
    return action


def _phase(action: RepairAction) -> tuple[int, int]:
    order = _COMPONENT_ORDER.get(action.component or "", len(_COMPONENT_ORDER))
    if action.action in (START, RECREATE):
        return (0, order) if action.component == "db" else (2, order)
    phases = {SYNC_ROLES: 1, SYNC_GATEWAY: 3, REGENERATE_KEYS: 4, RESTART: 5}
    return phases.get(action.action, 6), order


def _ordered(actions: list[RepairAction], root: Issue | None, issues: Sequence[Issue],
             groups: Mapping[tuple[str, str | None], list[int]]) -> list[RepairAction]:
    ordered = sorted(actions, key=_phase)
    if root is None:
        return ordered
    for key, members in groups.items():
        if any(issues[n] == root for n in members):
            first = [a for a in ordered if (a.action, a.component) == key]
            return first + [a for a in ordered if (a.action, a.component) != key]
    return ordered


def _label(issue: Issue) -> str:
    return f"{issue.code}[{issue.component}]" if issue.component else issue.code


def _leftovers(issues: Sequence[Issue], planned: set[int],
               blockers: Sequence[int], blocked: Mapping[int, int],
               unsafe: Mapping[int, str], one_way: Callable[[int, int], bool]
               ) -> tuple[list[ManualItem], list[Consequence]]:
    """Manual items (blockers with what they block) and the issues actions should clear."""
    manual: list[ManualItem] = []
    for b in blockers:
        issue = issues[b]
        spec = CATALOGUE.get(issue.code)
        hint = issue.hint or (spec.hint if spec else "")
        if b in unsafe:
            hint = f"not repaired automatically: {unsafe[b]}. {hint}".strip()
        blocks = tuple(dict.fromkeys(_label(issues[n]) for n in range(len(issues))
                                     if n not in planned and n != b and one_way(b, n)))
        manual.append(ManualItem(issue.code, issue.component, issue.severity, issue.message,
                                 hint, blocks))
    consequences: list[Consequence] = []
    for n, issue in enumerate(issues):
        if n in planned or n in blockers or n in blocked:
            continue
        cause = next((c for c in sorted(planned) if one_way(c, n)), None)
        if cause is not None:
            consequences.append(Consequence(issue.code, issue.component,
                                            _label(issues[cause])))
    return manual, consequences


# -- choosing and confirming ------------------------------------------------------------------


def select_actions(plan: Sequence[RepairAction], ids: Sequence[str] | None
                   ) -> list[RepairAction]:
    """The chosen actions in plan order (all when ids is None); 400 for ids not in the plan."""
    if ids is None:
        return list(plan)
    known = {a.id for a in plan}
    missing = [i for i in dict.fromkeys(ids) if i not in known]
    if missing:
        raise UnknownRepairAction(f"not in the current repair plan: {', '.join(missing)}")
    wanted = set(ids)
    return [a for a in plan if a.id in wanted]


def require_confirm(actions: Sequence[RepairAction], confirm: bool) -> None:
    """Refuse (400) when an action that changes what clients use lacks confirm."""
    held = [a.id for a in actions if a.needs_confirm]
    if held and not confirm:
        raise ConfirmationRequired(
            f"{', '.join(held)} changes the API keys client apps use; repeat the request "
            "with confirm: true to run it")


def remaining_issues(action: RepairAction, diagnostic: Diagnostic) -> list[Issue]:
    """Issues of the verify run that say the action did not work."""
    scoped = action.action in CONTAINER_ACTIONS
    codes = set(action.issue_codes) | (_CONTAINER_DOWN if scoped else set())
    return [i for i in diagnostic.issues
            if i.code in codes and i.check != "logs" and i.severity != "info"
            and (not scoped or i.component == action.component)]


# -- running --------------------------------------------------------------------------------


@dataclass
class Journal:
    """What an action changed, as undo steps: data (files, roles) first, then services."""

    data: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    services: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def undo(self) -> list[dict[str, Any]]:
        """Run every undo step (later ones first within each kind); each step's outcome."""
        done: list[dict[str, Any]] = []
        for what, step in [*reversed(self.data), *reversed(self.services)]:
            try:
                step()
            except Exception as exc:  # one failed undo must not stop the others
                done.append({"what": what, "ok": False, "error": type(exc).__name__})
                log.warning("rollback step %r failed: %s", what, type(exc).__name__)
            else:
                done.append({"what": what, "ok": True})
        return done


ActFn = Callable[["_Runner", RepairAction, Journal, dict[str, Any]], None]


def repair_body(actions: Sequence[RepairAction], *, confirm: bool) -> Body:
    """The operation body running these actions in order (confirm checked before anything)."""
    chosen = tuple(actions)
    require_confirm(chosen, confirm)

    def body(ctx: OperationContext) -> Mapping[str, Any]:
        return run_actions(ctx, chosen, ACTS)

    return body


def run_actions(ctx: OperationContext, actions: Sequence[RepairAction],
                acts: Mapping[str, ActFn]) -> dict[str, Any]:
    """Backup, act, verify each action; the first failure is rolled back and ends the run."""
    runner = _Runner(ctx)
    succeeded: list[str] = []
    for n, action in enumerate(actions):
        journal = Journal()
        try:
            with ctx.step(f"repair {action.id}", action=action.action,
                          component=action.component,
                          issue_codes=list(action.issue_codes)) as detail:
                backup = ctx.backups.create(runner.instance(), f"before repair {action.id}")
                detail["backup_id"] = backup.id
                act = acts.get(action.action)
                if act is None:
                    raise RepairError(f"{action.action} cannot be run automatically")
                act(runner, action, journal, detail)
                detail["verify"] = runner.verify(action)
        except Exception as exc:
            why = runner.reason(exc)
            undone, clean = runner.rollback(action, journal)
            later = [a.id for a in actions[n + 1:]]
            message = f"repair {action.id} failed: {why}; {undone}"
            if succeeded:
                message += f"; done before it and kept: {', '.join(succeeded)}"
            if later:
                message += f"; not run: {', '.join(later)}"
            # "rolled back" only when the instance is back where the operation found it.
            raise OperationError(message, rolled_back=clean and not succeeded) from None
        succeeded.append(action.id)
    return {"actions": [a.id for a in actions], "succeeded": succeeded,
            "message": "nothing to repair" if not actions
            else f"{len(succeeded)} repair action(s) done and verified"}


class _Runner:
    """The operation context plus the helpers the acts share."""

    def __init__(self, ctx: OperationContext) -> None:
        self.ctx = ctx
        actions_config = ctx.config.actions
        self.health_timeout = float(getattr(actions_config, "health_timeout_seconds", 120.0))
        self.stop_timeout = float(getattr(actions_config, "stop_timeout_seconds", 30.0))
        self.verify_window = min(VERIFY_WINDOW_SECONDS, self.health_timeout)

    @property
    def instance_id(self) -> str:
        """The instance operated on."""
        return self.ctx.instance.id

    def instance(self) -> Instance:
        """The instance as it is now (discovery run afresh: containers change under us)."""
        return self.ctx.refresh()

    def secret(self, *values: str | None) -> None:
        """Make values (new keys, passwords) redacted from here on, in steps and errors."""
        self.ctx.redact_also(*(v for v in values if v))

    def reason(self, exc: BaseException) -> str:
        """A safe one-line reason for a failure."""
        if isinstance(exc, DoctorError):
            text = str(exc)
        elif isinstance(exc, psycopg.Error):
            text = f"database error: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self.ctx.redactor.text(text)[:600]

    # containers ---------------------------------------------------------------------------

    def container(self, component: str) -> Container | None:
        """The component's container by compose labels, else by its expected name."""
        instance = self.ctx.instance
        client = self.ctx.docker.client
        found = client.containers.list(all=True, filters={"label": [
            f"{COMPOSE_PROJECT}={instance.compose_project}",
            f"{COMPOSE_SERVICE}={component}"]})
        if found:
            return found[0]
        name = instance.component(component).container_name
        if not name:
            return None
        try:
            return client.containers.get(name)
        except DockerException:
            return None

    def wait_healthy(self, components: Sequence[str]) -> dict[str, str]:
        """Wait until each component runs and passes its healthcheck (if it has one)."""
        deadline = time.monotonic() + self.health_timeout
        pending = list(dict.fromkeys(components))
        states: dict[str, str] = {}
        while True:
            for component in list(pending):
                item = self.container(component)
                state = _state_of(item)
                states[component] = state
                if state in ("running", "running/healthy"):
                    pending.remove(component)
            if not pending:
                return states
            if time.monotonic() >= deadline:
                raise RepairError("not healthy within "
                                  f"{self.health_timeout:g}s: " + ", ".join(
                                      f"{c} ({states.get(c)})" for c in pending))
            time.sleep(_POLL_SECONDS)

    # verification -------------------------------------------------------------------------

    def verify(self, action: RepairAction) -> dict[str, Any]:
        """Re-run the checks that raised the issues until none of them is left (bounded)."""
        deadline = time.monotonic() + self.verify_window
        attempts = 0
        while True:
            attempts += 1
            self.ctx.engine.instance(self.instance_id, fresh=True)
            outcome = self.ctx.engine.run(self.instance_id, trigger="operation",
                                          use_cache=False, checks=list(action.verify_checks))
            left = remaining_issues(action, outcome.diagnostic)
            if not left:
                return {"checks": list(action.verify_checks), "attempts": attempts,
                        "ok": True}
            if time.monotonic() >= deadline:
                raise RepairError("verification failed: " + "; ".join(
                    f"{i.check} still reports {_label(i)}: {i.message}" for i in left[:3]))
            time.sleep(2 * _POLL_SECONDS)

    def rollback(self, action: RepairAction, journal: Journal) -> tuple[str, bool]:
        """Undo the failed action as its own step; a summary, and whether it all worked."""
        if not journal.data and not journal.services:
            return "it had changed nothing that needs undoing", True
        results: list[dict[str, Any]] = []
        try:
            with self.ctx.step(f"rollback {action.id}") as detail:
                results = journal.undo()
                detail["undone"] = results
                failed = [r["what"] for r in results if not r["ok"]]
                if failed:
                    raise RepairError(f"rollback incomplete: {', '.join(failed)} failed")
        except RepairError as exc:
            return str(exc), False
        self.ctx.mark(f"repair {action.id}", "rolled_back")
        return ("its changes were rolled back ("
                + ", ".join(r["what"] for r in results) + ")"), True


def _state_of(item: Container | None) -> str:
    """'missing', Docker's state, or 'running/<health>' when a healthcheck exists."""
    if item is None:
        return "missing"
    state = item.attrs.get("State") or {}
    status = str(state.get("Status", "unknown"))
    health = (state.get("Health") or {}).get("Status")
    if status == "running" and health:
        return f"running/{health}"
    return status


# -- the acts ------------------------------------------------------------------------------


def _need_container(runner: _Runner, component: str) -> Container:
    item = runner.container(component)
    if item is None:
        raise RepairError(f"no {component} container exists")
    return item


# Services Kong's routes lead to (Ultrabase's kong.yml). Kong keeps each one's address for
# its DNS TTL (600 s with Docker's DNS), and Docker gives a starting container the lowest
# free address, not always its old one.
KONG_UPSTREAMS = frozenset({"auth", "rest", "storage", "meta", "studio", "functions",
                            "analytics", "realtime"})


def _address(runner: _Runner, component: str) -> str | None:
    """The component's address on the instance network (from the listing, never dialled)."""
    item = runner.container(component)
    if item is None:
        return None
    networks = item.attrs.get("NetworkSettings", {}).get("Networks") or {}
    found = networks.get(f"{runner.ctx.instance.compose_project}_default") or {}
    return str(found.get("IPAddress") or "") or None


def _kong_follows(runner: _Runner, component: str, before: str | None,
                  detail: dict[str, Any]) -> None:
    """Restart kong when the component came back at another address than it had.

    Kong would keep proxying to the old one until its DNS answer expires: restarting the
    service alone does not reach it through the gateway (GATEWAY_UPSTREAM_STALE).
    """
    if component not in KONG_UPSTREAMS or before is None:
        return
    after = _address(runner, component)
    kong = runner.container("kong")
    if after in (None, before) or kong is None or not _state_of(kong).startswith("running"):
        return
    kong.restart(timeout=int(runner.stop_timeout))
    runner.wait_healthy(["kong"])
    detail["kong_restarted"] = (f"{component} moved from {before} to {after}; kong restarted "
                                "to resolve it again")


def act_start(runner: _Runner, action: RepairAction, journal: Journal,
              detail: dict[str, Any]) -> None:
    """Start (or unpause) the stopped container; undo: put it back as it was."""
    component = str(action.component)
    item = _need_container(runner, component)
    before = _state_of(item)
    detail["state_before"] = before
    if before == "paused":
        journal.services.append((f"pause {component} again", item.pause))
        item.unpause()
    elif before.startswith("running"):
        detail["note"] = "already running"
    else:
        timeout = int(runner.stop_timeout)
        journal.services.append((f"stop {component} again",
                                 lambda: item.stop(timeout=timeout)))
        item.start()
    detail["state_after"] = runner.wait_healthy([component])[component]


def act_recreate(runner: _Runner, action: RepairAction, journal: Journal,
                 detail: dict[str, Any]) -> None:
    """compose up --no-deps the service; undo: stop what was created (never remove it)."""
    component = str(action.component)
    before = _state_of(runner.container(component))
    detail["state_before"] = before
    instance = runner.instance()
    if not before.startswith("running"):
        # It was absent or down before: down again is where it was. A container that ran
        # (detached from its network) cannot be brought back once replaced: it stays up.
        journal.services.append((f"stop the recreated {component}",
                                 lambda: _stop_if_present(runner, component)))
    address = _address(runner, component)
    runner.ctx.compose.up(instance, [component], recreate=True)
    detail["state_after"] = runner.wait_healthy([component])[component]
    _kong_follows(runner, component, address, detail)


def _stop_if_present(runner: _Runner, component: str) -> None:
    item = runner.container(component)
    if item is not None and _state_of(item) != "exited":
        item.stop(timeout=int(runner.stop_timeout))


def act_restart(runner: _Runner, action: RepairAction, journal: Journal,
                detail: dict[str, Any]) -> None:
    """Restart the container (a restart changes no file or data: nothing to undo)."""
    component = str(action.component)
    item = _need_container(runner, component)
    detail["state_before"] = _state_of(item)
    address = _address(runner, component)
    item.restart(timeout=int(runner.stop_timeout))
    detail["state_after"] = runner.wait_healthy([component])[component]
    _kong_follows(runner, component, address, detail)


# role passwords ----------------------------------------------------------------------------


def _superuser(instance: Instance, timeout: float) -> psycopg.Connection[Any]:
    """A superuser session on the published db port with the instance's password.

    Setting role passwords needs one (pg_authid and the service roles' passwords):
    supabase_admin on supabase/postgres, where postgres is demoted; any other admin user
    is tried in case the instance's image still makes it a superuser.
    """
    password = instance.credentials.postgres_password
    port = instance.endpoints.db_port
    if not password or port is None:
        raise RepairError("the instance's postgres password or db port is unknown")
    withheld = withheld_login(instance, "db", port, listing=False)
    if withheld:
        raise RepairError(f"no login tried: {withheld}")
    dbname = instance_dbname(instance)
    failures: list[str] = []
    for user in ADMIN_USERS:
        try:
            conn = connect(instance.endpoints.db_host, port, DbLogin(user, password, dbname),
                           timeout)
        except LoginFailedError as exc:
            failures.append(f"{user}: {exc.result.reason}")
            continue
        try:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                               ).fetchone()
            if not (row and row[0]):
                conn.close()
                failures.append(f"{user} logs in but is not a superuser")
                continue
            # The statement carries a password: keep it out of the server's log.
            conn.execute("SET log_statement = 'none'")
            conn.execute("SET log_min_duration_statement = -1")
        except psycopg.Error as exc:
            conn.close()
            failures.append(f"{user}: {str(exc).splitlines()[0][:200]}")
            continue
        return conn
    raise RepairError("no superuser session on the db: " + "; ".join(failures))


def _set_password(conn: psycopg.Connection[Any], role: str, password: str | None) -> None:
    """ALTER ROLE ... PASSWORD, composed (never formatted); a SCRAM/MD5 hash is kept as is."""
    value: sql.Composable = sql.Literal(password) if password is not None else sql.SQL("NULL")
    conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), value))


def act_sync_roles(runner: _Runner, action: RepairAction, journal: Journal,
                   detail: dict[str, Any]) -> None:
    """Set each role's password to the one its service uses; undo: put the old hashes back."""
    instance = runner.instance()
    dbname = instance_dbname(instance)
    wanted = {rl.login.user: rl for rl in role_logins(instance, dbname)
              if not action.roles or rl.login.user in action.roles}
    missing = [r for r in action.roles if r not in wanted]
    if missing:
        raise RepairError(f"no service is known to log in as {', '.join(missing)}")
    runner.secret(*(rl.login.password for rl in wanted.values()))
    timeout = runner.ctx.config.diagnostics.timeout_seconds
    synced: dict[str, Any] = {}
    with _superuser(instance, timeout) as conn:
        for role, login in wanted.items():
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                               (role,)).fetchone()
            if row is None:
                raise RepairError(f"role {role} does not exist")
            previous: str | None = row[0]
            journal.data.append((f"set {role}'s password back",
                                 _password_undo(instance, role, previous, timeout)))
            _set_password(conn, role, login.login.password)
            synced[role] = {"source": login.password_source,
                            "password_fingerprint": fingerprint(login.login.password)}
    detail["roles"] = synced


def _password_undo(instance: Instance, role: str, previous: str | None,
                   timeout: float) -> Callable[[], None]:
    def undo() -> None:
        with _superuser(instance, timeout) as conn:
            _set_password(conn, role, previous)
    return undo


# API keys ----------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class _KeyPlaces:
    """Where the current keys live: old values per key name, and who reads them."""

    old: Mapping[str, frozenset[str]]
    compose_vars: Mapping[tuple[str, str], tuple[str, ...]]  # (key, VAR) -> services
    readers: tuple[str, ...]


def _looks_like_key(value: str | None) -> bool:
    return bool(value) and not str(value).startswith("$") and str(value).count(".") == 2


def _key_places(instance: Instance) -> _KeyPlaces:
    """Every value the keys currently have, in every file and running service."""
    files = instance.files
    old: dict[str, set[str]] = {"anon": set(), "service_role": set()}
    creds = instance.credentials
    old["anon"].add(creds.anon_key or "")
    old["service_role"].add(creds.service_role_key or "")
    kong_env = instance.runtime_env.get("kong") or {}
    old["anon"].add(kong_env.get("SUPABASE_ANON_KEY", ""))
    old["service_role"].add(kong_env.get("SUPABASE_SERVICE_KEY", ""))
    if files.env_file is not None:
        env = read_env_file(files.env_file, root=files.root)
        for name, key in _ENV_KEY.items():
            old[name].add(env.get(key, ""))
    record = _registry_record(instance)
    if record is not None:
        for name, key in _REGISTRY_KEY.items():
            old[name].add(str(record.get(key) or ""))
    compose_env: Mapping[str, Mapping[str, str]] = {}
    compose_specs: Mapping[str, Any] = {}
    if files.compose_file is not None:
        compose_env = read_compose_file(files.compose_file, root=files.root).env
        for name, variables in _KEY_VARIABLES.items():
            for service_env in compose_env.values():
                old[name].update(service_env.get(v, "") for v in variables)
        loaded = yaml.safe_load(read_text(files.root_of(files.compose_file),
                                          files.compose_file))
        compose_specs = (loaded.get("services") or {}) if isinstance(loaded, dict) else {}
    if files.kong_file is not None:
        keys = read_kong_file(files.kong_file, compose_env.get("kong") or kong_env,
                              root=files.root).keys
        old["anon"].add(keys.get("anon", ""))
        old["service_role"].add(keys.get("service_role", ""))
    values = {name: frozenset(v for v in vals if _looks_like_key(v))
              for name, vals in old.items()}
    compose_vars: dict[tuple[str, str], list[str]] = {}
    for service, service_env in compose_env.items():
        for variable, value in service_env.items():
            for name, olds in values.items():
                if value in olds:
                    compose_vars.setdefault((name, variable), []).append(service)
    every = values["anon"] | values["service_role"]
    references = ("${ANON_KEY}", "$ANON_KEY", "${SERVICE_ROLE_KEY}", "$SERVICE_ROLE_KEY")
    readers = [service for service, spec in compose_specs.items()
               if any(v in json.dumps(spec) for v in (*every, *references))]
    if files.kong_file is not None and "kong" in compose_specs and "kong" not in readers:
        readers.append("kong")
    return _KeyPlaces(values, {k: tuple(v) for k, v in compose_vars.items()},
                      tuple(readers))


def _registry_record(instance: Instance) -> Mapping[str, Any] | None:
    """This instance's registry credentials, if it has a registry record."""
    if instance.files.registry is None:
        return None
    try:
        registry = read_registry(instance.files.registry)
    except RegistryError:
        return None
    for record in registry.records:
        if record.id == instance.id:
            return record.credentials
    return None


def act_regenerate_keys(runner: _Runner, action: RepairAction, journal: Journal,
                        detail: dict[str, Any]) -> None:
    """New keys from auth's secret, written everywhere they live, their readers recreated."""
    instance = runner.instance()
    problem = keys_problem(instance)
    if problem:
        raise RepairError(problem)
    secret = str(auth_jwt_secret(instance))
    places = _key_places(instance)
    new = generate_keys(secret, int(time.time()))
    runner.secret(*new.values())
    for name, key in new.items():
        analysis = analyse_key(name, key, secret)
        if not (analysis.signature_valid and analysis.role_valid):
            raise RepairError(f"the new {name} key does not verify against auth's secret")

    files = _stage_keys(instance, places, new)
    backup_id = str(detail.get("backup_id"))
    journal.data.append(("restore the files from the backup",
                         lambda: _restore(runner, instance, backup_id)))
    changed = files.write()
    _check_written(instance, places, new)
    detail["files_changed"] = sorted({Path(p).name for p in changed})
    detail["keys"] = {name: fingerprint(key) for name, key in new.items()}

    services = sorted(set(places.readers) | set(files.affected_services()),
                      key=lambda c: _COMPONENT_ORDER.get(c, len(_COMPONENT_ORDER)))
    journal.services.append(("recreate the key readers with the restored files",
                             lambda: _recreate(runner, services)))
    _recreate(runner, services)
    detail["recreated"] = services


def _stage_keys(instance: Instance, places: _KeyPlaces, new: Mapping[str, str]) -> FileSet:
    """Every edit that puts the new keys in place, staged (nothing written yet)."""
    files = FileSet(instance)
    if instance.files.registry is not None and _registry_record(instance) is not None:
        for name, key in _REGISTRY_KEY.items():
            files.set_registry(("credentials", key), new[name])
    for name, key in _ENV_KEY.items():
        files.set_env(key, new[name])
    for (name, variable), services in places.compose_vars.items():
        files.set_compose_env(services, variable, new[name])
    kong_file = instance.files.kong_file
    if kong_file is not None:
        raw = _kong_raw_keys(instance.files.root_of(kong_file), kong_file)
        for consumer in ("anon", "service_role"):
            # A $VAR reference takes kong's env, which the compose edits already changed.
            if not str(raw.get(consumer, "")).startswith("$"):
                files.set_kong_key(consumer, new[consumer])
    # Whatever the field edits do not model (a healthcheck header) may still hold an old key.
    for key in ("env_file", "compose_file", "kong_file"):
        if getattr(instance.files, key) is None:
            continue
        text = files.text(key)
        updated = text
        for name, olds in places.old.items():
            for old in olds - {new[name]}:
                updated = updated.replace(old, new[name])
        if updated != text:
            files.set_file_text(key, updated)
    return files


def _kong_raw_keys(root: Path, path: Path) -> dict[str, str]:
    """kong.yml's consumer keys as written (a $VAR reference is not resolved)."""
    try:
        data = yaml.safe_load(read_text(root, path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, SymlinkRefused):
        raise RepairError("kong.yml cannot be read") from None
    out: dict[str, str] = {}
    for consumer in (data or {}).get("consumers") or [] if isinstance(data, dict) else []:
        if not isinstance(consumer, dict):
            continue
        for cred in consumer.get("keyauth_credentials") or []:
            if isinstance(cred, dict) and cred.get("key") is not None:
                out[str(consumer.get("username"))] = str(cred["key"])
    return out


def _restore(runner: _Runner, instance: Instance, backup_id: str) -> None:
    runner.ctx.backups.restore_files(instance, backup_id)


def _recreate(runner: _Runner, services: Sequence[str]) -> None:
    """compose up --no-deps --force-recreate, then wait until they are healthy."""
    if not services:
        return
    runner.ctx.compose.up(runner.instance(), list(services), recreate=True)
    runner.wait_healthy(services)


def _check_written(instance: Instance, places: _KeyPlaces, new: Mapping[str, str]) -> None:
    """Every file that holds the keys holds exactly the new ones (read back from disk)."""
    files = instance.files
    wrong: list[str] = []
    every_old = {o for olds in places.old.values() for o in olds} - set(new.values())
    try:
        if files.env_file is not None:
            env = read_env_file(files.env_file, root=files.root)
            wrong += [f"env file {k}" for n, k in _ENV_KEY.items() if env.get(k) != new[n]]
        compose_env: Mapping[str, Mapping[str, str]] = {}
        if files.compose_file is not None:
            text = read_text(files.root_of(files.compose_file), files.compose_file)
            if any(o in text for o in every_old):
                wrong.append("compose file (an old key is left)")
            compose_env = read_compose_file(files.compose_file, root=files.root).env
        if files.kong_file is not None:
            keys = read_kong_file(files.kong_file, compose_env.get("kong") or {},
                                  root=files.root).keys
            wrong += [f"kong.yml {n}" for n in new if keys.get(n) != new[n]]
        record = _registry_record(instance)
        if record is not None:
            wrong += [f"registry {k}" for n, k in _REGISTRY_KEY.items()
                      if record.get(k) != new[n]]
    except (FileReadError, OSError, SymlinkRefused) as exc:
        raise RepairError(f"cannot read back the written files: {type(exc).__name__}") from None
    if wrong:
        raise RepairError("the new keys did not reach: " + ", ".join(wrong))


def act_sync_gateway(runner: _Runner, action: RepairAction, journal: Journal,
                     detail: dict[str, Any]) -> None:
    """Write the env file's keys into kong.yml, then restart kong (it re-reads the file)."""
    instance = runner.instance()
    env_file, kong_file = instance.files.env_file, instance.files.kong_file
    if env_file is None or kong_file is None:
        raise RepairError("the env file or kong.yml of this instance is unknown")
    env = read_env_file(env_file, root=instance.files.root)
    kong_env = instance.runtime_env.get("kong") or {}
    current = read_kong_file(kong_file, kong_env, root=instance.files.root).keys
    files = FileSet(instance)
    changed_keys = []
    for consumer, variable in _ENV_KEY.items():
        value = env.get(variable)
        if value and current.get(consumer) != value:
            files.set_kong_key(consumer, value)
            changed_keys.append(consumer)
    backup_id = str(detail.get("backup_id"))
    if changed_keys:
        journal.data.append(("restore kong.yml from the backup",
                             lambda: _restore(runner, instance, backup_id)))
        files.write()
        after = read_kong_file(kong_file, kong_env, root=instance.files.root).keys
        if any(after.get(c) != env.get(_ENV_KEY[c]) for c in changed_keys):
            raise RepairError("kong.yml does not hold the env file's keys after writing")
    detail["consumers_updated"] = changed_keys
    kong = _need_container(runner, "kong")
    journal.services.append(("restart kong with the restored kong.yml",
                             lambda: _restart_and_wait(runner, "kong")))
    kong.restart(timeout=int(runner.stop_timeout))
    detail["state_after"] = runner.wait_healthy(["kong"])["kong"]


def _restart_and_wait(runner: _Runner, component: str) -> None:
    _need_container(runner, component).restart(timeout=int(runner.stop_timeout))
    runner.wait_healthy([component])


ACTS: Mapping[str, ActFn] = {
    START: act_start,
    RECREATE: act_recreate,
    RESTART: act_restart,
    SYNC_ROLES: act_sync_roles,
    REGENERATE_KEYS: act_regenerate_keys,
    SYNC_GATEWAY: act_sync_gateway,
}
