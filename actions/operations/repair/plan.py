"""Repair planning, pure: a Diagnostic and its Instance in, actions in run order out.

The rules are in the package's docstring (actions/operations/repair/__init__.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.checks import ALL_CHECKS
from exporter.diagnostic import Diagnostic
from exporter.discovery.model import COMPONENTS, Instance
from exporter.errors import DoctorError
from exporter.issues import CATALOGUE, Issue
from exporter.jwtkeys import secret_weak
from exporter.rootcause import explains, order_issues
from exporter.web.params import BadRequest

START, RECREATE, RESTART = "start_container", "recreate_container", "restart_component"
SYNC_ROLES, REGENERATE_KEYS = "sync_db_role_passwords", "regenerate_jwt_keys"
SYNC_GATEWAY, SYNC_CONFIG = "sync_gateway_keys", "sync_config"
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
COMPONENT_ORDER = {c: n for n, c in enumerate(COMPONENTS)}
_CHECK_ORDER = {c: n for n, c in enumerate(ALL_CHECKS)}



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
    groups, dropped = _grouped(intents, one_way)
    roles = _sync_roles(intents, groups)
    follow_ups = _follow_ups(groups, dropped, roles, instance)

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


_Groups = dict[tuple[str, str | None], list[int]]


def _grouped(intents: Mapping[int, _Intent], one_way: Callable[[int, int], bool]
             ) -> tuple[_Groups, dict[str, list[int]]]:
    """Intents grouped by (action, component), and the restarts dropped by rule 3.

    Rule 3: restarts whose every reason another (non-restart) action fixes are dropped.
    """
    groups: _Groups = {}
    for n, intent in intents.items():
        groups.setdefault(intent.key, []).append(n)
    fixers = [n for n, i in intents.items() if i.action != RESTART]
    dropped: dict[str, list[int]] = {}
    for key, members in list(groups.items()):
        if key[0] == RESTART and all(any(one_way(c, n) for c in fixers) for n in members):
            dropped[str(key[1])] = members
            del groups[key]
    return groups, dropped


def _follow_ups(groups: _Groups, dropped: Mapping[str, list[int]], roles: Sequence[str],
                instance: Instance) -> dict[str, list[int]]:
    """The services of the synced roles, restarted after the sync (with their dropped issues)."""
    follow_ups: dict[str, list[int]] = {}
    if (SYNC_ROLES, "db") not in groups:
        return follow_ups
    taken = {k[1] for k in groups if k[0] in CONTAINER_ACTIONS}
    for service in _role_services(roles or tuple(ROLE_SERVICES)):
        component = instance.components.get(service)
        if service in taken or component is None or component.container is None:
            continue
        follow_ups[service] = list(dropped.get(service, []))
    return follow_ups


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
    if issue.code in ("NETWORK_MISSING", "INTERNAL_LINK_DOWN"):
        # Only a recreation reattaches the network with the aliases compose gives (a link
        # down carries this repair only when both its ends are healthy).
        return _Intent(RECREATE, name)
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
    order = COMPONENT_ORDER.get(action.component or "", len(COMPONENT_ORDER))
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


def label(issue: Issue) -> str:
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
        blocks = tuple(dict.fromkeys(label(issues[n]) for n in range(len(issues))
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
                                            label(issues[cause])))
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


