"""Which issue explains the others: one table of what each code means, read over the graph.

Every issue code declares (ROLES) the element it sits on, what it does to that element as
a cause (its KIND) and which kinds of symptom it is as an effect (SHOWS):

- a component (the issue's own), a link "A needs B" (INTERNAL_LINK_DOWN's from/to, Kong's
  route to an upstream, a service's login to the db), the instance, or the host;
- a cause of one KIND produces the symptoms REACH names, and only on the elements that
  depend on it: a component explains what fails on itself and on every component that
  needs it, directly or not (exporter.discovery.topology, runtime links); a link explains
  what fails on its source and on what needs the source, and what is observed through it;
  what is observed through the gateway (THROUGH_GATEWAY) also depends on kong;
- a link that fails while both of its ends are healthy (Kong's cached address, a name the
  network no longer resolves) is that link's own fault: nothing on its ends explains it,
  and it explains what is observed through it.

The root cause is therefore the most upstream element that fails. Issues read from logs
explain nothing, except codes marked from_logs: a service's own start-up failure (a
migration that fails, a setting it cannot load) is shown only by its last words, and stays
an issue only until a later start shows it over. Mutual explanations (two names for one
failure) are settled by the RANK order below (earlier = more fundamental).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Literal

from exporter.diagnostic import RootCause
from exporter.discovery.topology import Topology, template
from exporter.issues import CATALOGUE, SEVERITY_RANK, Issue

GATEWAY = "kong"

On = Literal["component", "link", "instance", "host"]
# What a failure does, as a cause.
Kind = Literal["engine", "disk", "down", "hung", "refuses", "schema", "start", "key", "route",
               "none"]
# What a failure looks like, as an effect.
Symptom = Literal["own", "state", "answer", "serve", "gateway", "login", "start", "key",
                  "config", "disk"]

# The symptoms each kind of failure produces on the elements that depend on it.
REACH: Mapping[Kind, frozenset[Symptom]] = {
    # The Docker engine: everything the tool sees goes through it.
    "engine": frozenset({"own", "state", "answer", "serve", "gateway", "login", "start",
                         "key", "config", "disk"}),
    # A full disk: the db stops writing, and everything that needs it follows.
    "disk": frozenset({"state", "answer", "serve", "gateway", "login", "disk"}),
    # Not running (stopped, crashing, missing, its port or volume gone): nothing it serves.
    "down": frozenset({"own", "state", "answer", "serve", "gateway", "login", "config"}),
    # Running but not answering: what asks it fails, nothing stops.
    "hung": frozenset({"serve", "gateway"}),
    # The db refuses the logins of who needs it: they cannot start or serve.
    "refuses": frozenset({"state", "answer", "serve", "gateway", "login"}),
    # A schema a service migrates at start is missing: its start-up fails.
    "schema": frozenset({"start"}),
    # A service's own start-up failure: it is down because of it.
    "start": frozenset({"state", "serve", "gateway"}),
    # A key or secret that does not verify: what uses the key fails.
    "key": frozenset({"key"}),
    # A link's own fault: what is observed through the link fails.
    "route": frozenset({"serve", "gateway"}),
    "none": frozenset(),
}
# Symptoms seen on the gateway that come from what its routes lead to (an upstream's
# errors in Kong's log); its own state and answer do not.
ROUTED: frozenset[Symptom] = frozenset({"serve", "gateway"})
# Symptoms a failure causes only on its own component (a missing container, an OOM kill
# are nobody else's doing).
OWN_ONLY: frozenset[Symptom] = frozenset({"own"})


@dataclass(frozen=True)
class Role:
    """What an issue code says: where it sits, what it does as a cause, how it shows."""

    kind: Kind = "none"
    shows: frozenset[Symptom] = frozenset()
    on: On = "component"
    # on="link": the component the issue's component needs ("db" for a login), unless the
    # evidence names the link's ends.
    target: str | None = None
    # Observed through the gateway: kong is on its path too.
    through_gateway: bool = False
    # May explain live findings when read from the logs (a service's own start-up failure).
    from_logs: bool = False


def _role(kind: Kind = "none", *shows: Symptom, on: On = "component", target: str | None = None,
          gateway: bool = False, from_logs: bool = False) -> Role:
    return Role(kind, frozenset(shows), on, target, gateway, from_logs)


# Every catalogue code (a unit test checks): where it sits, its kind, its symptoms.
ROLES: Mapping[str, Role] = {
    "INSTANCE_RECORD_INVALID": _role(on="instance"),
    "INSTANCE_FILES_MISSING": _role(on="instance"),
    # The running Kong's configuration is what a stopped gateway cannot show.
    "CONFIG_DRIFT": _role("none", "config", "key", on="instance", target=GATEWAY),
    "DOCKER_UNREACHABLE": _role("engine", on="host"),
    "CONTAINER_MISSING": _role("down", "own"),
    "CONTAINER_NOT_RUNNING": _role("down", "own", "state"),
    "CONTAINER_UNHEALTHY": _role("none", "serve"),
    "CONTAINER_CRASH_LOOP": _role("down", "own", "state"),
    "CONTAINER_OOM_KILLED": _role("down", "own"),
    "COMPONENT_UNHEALTHY": _role("none", "serve", gateway=True),
    "COMPONENT_UNREACHABLE": _role("hung", "serve", gateway=True),
    # The operator's name for a db that is stopped, crashing or refusing connections.
    "DB_UNREACHABLE": _role("down", "login"),
    "DB_AUTH_FAILED": _role("refuses", "login"),
    # A service's login to the db, as the evidence names it (role, service).
    "DB_ROLE_PASSWORD_MISMATCH": _role("refuses", "login", on="link", target="db"),
    "DB_CONNECTIONS_HIGH": _role("none", "login"),
    "DB_SCHEMA_MISSING": _role("schema", "login"),
    "GATEWAY_UNREACHABLE": _role("hung", "answer", gateway=True),
    "GATEWAY_KEY_REJECTED": _role("key", "gateway", gateway=True),
    "GATEWAY_UPSTREAM_ERROR": _role("hung", "serve", "gateway", gateway=True),
    "ENDPOINT_SLOW": _role("none", "gateway", gateway=True),
    "AUTH_UNHEALTHY": _role("hung", "gateway", "key", gateway=True),
    "AUTH_USER_CREATE_FAILED": _role("none", "gateway", "key", gateway=True),
    "AUTH_DB_CONNECTION_FAILED": _role("refuses", "login", on="link", target="db"),
    "JWT_SECRET_MISMATCH": _role("key", on="instance"),
    "JWT_KEY_EXPIRED": _role("key", on="instance"),
    "JWT_KEY_EXPIRING": _role(),
    # PostgREST v12 cannot verify any key with a secret under 32 bytes.
    "JWT_SECRET_WEAK": _role("key", on="instance"),
    "DISK_SPACE_LOW": _role("none", "disk", on="instance"),
    "DISK_SPACE_CRITICAL": _role("disk", on="host"),
    "VOLUME_MISSING": _role("down"),
    "LOGS_OVERSIZED": _role(),
    "PORT_NOT_LISTENING": _role("none", "answer", gateway=True),
    "PORT_CONFLICT": _role("down"),
    "NETWORK_MISSING": _role("down", "serve"),
    # As seen from its source (evidence from/to); with both ends healthy, its own fault.
    "INTERNAL_LINK_DOWN": _role("none", "serve", on="link", gateway=True),
    "LOG_ERROR_SPIKE": _role("none", "serve", "key"),
    "AUTH_MIGRATION_FAILED": _role("start", "start", from_logs=True),
    "AUTH_CONFIG_INVALID": _role("start", "start", from_logs=True),
    "REST_JWT_REJECTED": _role("none", "key"),
    # Kong's route to an upstream that is up (evidence upstream): the link's own fault.
    "GATEWAY_UPSTREAM_STALE": _role("route", on="link"),
    "INSTANCE_CREATING": _role(on="instance"),
    "INSTANCE_STOPPED": _role(on="instance"),
    "INSTANCE_NOT_STARTED": _role(on="instance"),
    "PORT_EXPOSED": _role(),
    "DEFAULT_CREDENTIALS": _role(on="instance"),
}
# A failing link whose two ends are healthy (evidence "ends_healthy"): its own fault.
LINK_FAULT = _role("route", on="link")
# Issues observed through the gateway: a failing gateway explains them wherever they sit.
THROUGH_GATEWAY = frozenset(code for code, role in ROLES.items() if role.through_gateway)

# Tie-breaker, most fundamental first; codes not listed come after, in catalogue order.
RANK: tuple[str, ...] = (
    "DOCKER_UNREACHABLE", "DISK_SPACE_CRITICAL", "VOLUME_MISSING", "PORT_CONFLICT",
    "DB_UNREACHABLE", "DB_AUTH_FAILED", "DB_ROLE_PASSWORD_MISMATCH",
    "AUTH_DB_CONNECTION_FAILED", "AUTH_MIGRATION_FAILED", "AUTH_CONFIG_INVALID",
    "CONTAINER_MISSING", "CONTAINER_OOM_KILLED",
    "CONTAINER_CRASH_LOOP", "CONTAINER_NOT_RUNNING", "NETWORK_MISSING", "GATEWAY_UNREACHABLE",
    "GATEWAY_KEY_REJECTED", "GATEWAY_UPSTREAM_STALE", "JWT_SECRET_MISMATCH", "JWT_SECRET_WEAK",
    "JWT_KEY_EXPIRED", "REST_JWT_REJECTED", "COMPONENT_UNREACHABLE",
    "AUTH_UNHEALTHY", "GATEWAY_UPSTREAM_ERROR", "INTERNAL_LINK_DOWN", "COMPONENT_UNHEALTHY",
    "CONTAINER_UNHEALTHY", "PORT_NOT_LISTENING", "DB_SCHEMA_MISSING",
    "AUTH_USER_CREATE_FAILED", "INSTANCE_FILES_MISSING", "INSTANCE_RECORD_INVALID",
    "CONFIG_DRIFT", "DISK_SPACE_LOW", "DB_CONNECTIONS_HIGH", "JWT_KEY_EXPIRING",
    "ENDPOINT_SLOW", "LOGS_OVERSIZED", "LOG_ERROR_SPIKE",
)
_CODE_ORDER = {code: n for n, code in enumerate([*RANK, *(c for c in CATALOGUE
                                                         if c not in RANK)])}
# The critical path first, so "db down" wins over "storage down" at equal rank.
_COMPONENT_ORDER = {c: n for n, c in enumerate(("db", "auth", "rest", "kong"))}
# Log findings that may explain live ones rank as live ones do.
_CURRENT_FROM_LOGS = frozenset(code for code, role in ROLES.items() if role.from_logs)


@cache
def _template() -> Topology:
    return template()


def role_of(issue: Issue) -> Role:
    """The issue's role; a failing link whose evidence shows both ends healthy is a fault."""
    role = ROLES.get(issue.code, Role())
    if role.on == "link" and issue.evidence.get("ends_healthy") is True:
        return LINK_FAULT
    return role


@dataclass(frozen=True)
class Element:
    """Where an issue sits: a component, a link source->target, the instance or the host."""

    on: On
    source: str | None = None  # the component, or the link's source
    target: str | None = None  # the link's target (None: not known)


def _element(issue: Issue, role: Role) -> Element:
    """The element the issue sits on, from its role and evidence."""
    evidence = issue.evidence
    if role.on in ("host", "instance"):
        return Element(role.on)
    if role.on == "link":
        source = evidence.get("from") or evidence.get("service") or issue.component
        target = evidence.get("to") or evidence.get("upstream") or role.target
        if role.kind == "route" and not evidence.get("from"):
            source = GATEWAY  # Kong's route to an upstream (any, when not named)
        elif target is None:
            source = None  # a link to nowhere known is its component's issue
        if source is not None and source != target:
            return Element("link", str(source), str(target) if target else None)
    if issue.component is None:
        return Element("instance")
    return Element("component", issue.component)


def path_of(effect: Issue, topology: Topology) -> frozenset[str] | None:
    """The components `effect` depends on to be seen at all (None: anywhere)."""
    role = role_of(effect)
    element = _element(effect, role)
    found: set[str] = set()
    if element.on == "component" and element.source is not None:
        found = set(_needed(element.source, topology))
        if element.source == GATEWAY and role.shows & ROUTED:
            # What fails through Kong's routes needs what they lead to.
            found |= topology.upstream(GATEWAY, runtime=True)
    elif element.on == "link" and element.target is not None:
        found = set(_needed(element.target, topology))
    elif element.on == "instance" and role.target is not None:
        found = {role.target}
    else:
        return None  # the instance, or a link to somewhere unknown: anywhere
    if effect.code in THROUGH_GATEWAY:
        found.add(GATEWAY)
    return frozenset(found) if found else None


@lru_cache(maxsize=1024)
def _needed(component: str, topology: Topology) -> frozenset[str]:
    """The component and everything it needs while it runs.

    What the gateway proxies to is not what it needs: a failing upstream shows on its own
    component, through the gateway, while Kong itself keeps serving.
    """
    found = {component}
    frontier = [component]
    while frontier:
        current = frontier.pop()
        if current == GATEWAY:
            continue
        for other in topology.needs(current, runtime=True):
            if other not in found:
                found.add(other)
                frontier.append(other)
    return frozenset(found)


def _reaches(cause: Issue, cause_role: Role, effect: Issue, topology: Topology) -> bool:
    """True when the effect's element depends on the cause's element."""
    element = _element(cause, cause_role)
    if element.on in ("host", "instance"):
        return True
    if element.on == "link":
        return _through_link(element, effect, topology)
    if role_of(effect).shows <= OWN_ONLY:
        return effect.component == cause.component
    path = path_of(effect, topology)
    return path is None or element.source in path


def _through_link(link: Element, effect: Issue, topology: Topology) -> bool:
    """The effect is on the link's source, on what needs the source, or seen through it."""
    effect_element = _element(effect, role_of(effect))
    if effect_element.on == "link" and (effect_element.source, effect_element.target) == (
            link.source, link.target):
        return True
    where = effect.component
    if where is None:
        return True
    assert link.source is not None  # links always have a source
    if where == link.source or where in topology.downstream(link.source, runtime=True):
        return True
    # Observed through the gateway on the route's upstream (any, when not known).
    return (link.source == GATEWAY and effect.code in THROUGH_GATEWAY
            and link.target in (None, where))


def explains(cause: Issue, effect: Issue, topology: Topology | None = None) -> bool:
    """True when cause explains effect over the topology (default: the template's).

    Issues read from logs describe the recent past, which may be over already: they can be
    explained but explain what a live check sees now only when their code is from_logs.
    """
    cause_role, effect_role = role_of(cause), role_of(effect)
    if cause is effect or (cause.check == "logs" and not cause_role.from_logs):
        return False
    if cause_role.kind == "engine":
        return effect_role.kind != "engine"
    if effect_role is LINK_FAULT or not REACH[cause_role.kind] & effect_role.shows:
        return False  # a link fault's ends are healthy: nothing on them explains it
    return _reaches(cause, cause_role, effect, topology or _template())


def _order(issue: Issue) -> tuple[int, int, int, int]:
    # Live findings before what the logs say, at any severity.
    from_logs = issue.check == "logs" and issue.code not in _CURRENT_FROM_LOGS
    return (int(from_logs), -SEVERITY_RANK[issue.severity],
            _CODE_ORDER.get(issue.code, len(_CODE_ORDER)),
            _COMPONENT_ORDER.get(issue.component or "", 9))


def order_issues(issues: Iterable[Issue]) -> list[Issue]:
    """Issues most severe and most fundamental first."""
    return sorted(issues, key=_order)


def find_root_cause(issues: Sequence[Issue], *,
                    topology: Topology | None = None) -> RootCause | None:
    """The issue that explains the others (info-level issues never are one), and its chain."""
    topology = topology or _template()
    candidates = [i for i in order_issues(issues) if i.severity != "info"]
    if not candidates:
        return None
    # Explained by something it does not explain back: not a root.
    root = next((c for c in candidates if not any(
        explains(other, c, topology) and not explains(c, other, topology)
        for other in issues)), candidates[0])
    explained = tuple(i for i in issues if i is not root and _explains_transitively(
        root, i, issues, topology))
    return RootCause(root, explained, chain(root, explained, topology))


def _explains_transitively(root: Issue, target: Issue, issues: Sequence[Issue],
                           topology: Topology) -> bool:
    seen: set[int] = set()
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for other in issues:
            if id(other) in seen or other is current or not explains(current, other,
                                                                     topology):
                continue
            if other is target:
                return True
            seen.add(id(other))
            frontier.append(other)
    return False


def element_of(issue: Issue) -> tuple[str, str | None, str | None]:
    """The element an issue is shown on: a link its evidence names, a component or the
    instance."""
    element = _element(issue, role_of(issue))
    named = issue.evidence.get("to") or issue.evidence.get("upstream")
    if element.on == "link" and named:
        return "link", element.source, element.target
    if issue.component is None:
        return "instance", None, None
    return "component", issue.component, None


def chain(root: Issue, explained: Sequence[Issue], topology: Topology) -> tuple[
        dict[str, Any], ...]:
    """From the root's element to its effects, each step an element and its issues.

    Steps follow the topology: the root's element first, then the elements that need it,
    nearest first; what sits elsewhere (observed through the gateway, the instance) last.
    """
    steps: dict[tuple[str, str | None, str | None], list[Issue]] = {}
    for issue in (root, *explained):
        steps.setdefault(element_of(issue), []).append(issue)
    start = element_of(root)
    origin = start[2] if start[0] == "link" else start[1]
    distance = _distances(origin, topology) if origin else {}

    def rank(key: tuple[str, str | None, str | None]) -> tuple[int, int]:
        if key == start:
            return (0, 0)
        name = key[1] if key[0] == "component" else key[2]
        return (1, distance.get(name or "", len(topology.components) + 1))

    return tuple(_step(key, steps[key]) for key in sorted(steps, key=rank))


def _step(key: tuple[str, str | None, str | None], issues: Sequence[Issue]) -> dict[str, Any]:
    kind, first, second = key
    step: dict[str, Any] = {"element": kind}
    if kind == "link":
        step["link"] = f"{first}->{second}"
    elif kind == "component":
        step["component"] = first
    step["code"] = ", ".join(dict.fromkeys(i.code for i in issues))
    step["issues"] = [{"code": i.code, "component": i.component, "check": i.check}
                      for i in issues]
    return step


def _distances(origin: str, topology: Topology) -> dict[str, int]:
    """Hops from `origin` to each component that needs it (runtime links)."""
    found = {origin: 0}
    frontier = [origin]
    while frontier:
        current = frontier.pop(0)
        for user in topology.users(current, runtime=True):
            if user not in found:
                found[user] = found[current] + 1
                frontier.append(user)
    return found
