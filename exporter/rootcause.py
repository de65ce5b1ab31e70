"""Which issue explains the others: causal rules as data over the instance's topology.

Every issue sits on an element of the instance (exporter.discovery.topology): a component,
or a link between two. A failing component explains what fails on every component that
needs it, directly or not, and what is observed through it: the rule "PATH" reads "the
effect's component is the cause's, or needs it (its runtime links: the hosts its
environment names, kong.yml's upstreams), or the effect was observed through the gateway
and the cause is the gateway". The root cause is therefore the most upstream element that
fails. A link that fails while both of its ends are healthy (Kong's cached address, an
in-network probe that fails) is nobody else's effect: it is the root, with that link's
repair.

A rule reads "an issue with code CAUSE (on component C, if given) explains issues with one
of the EFFECT codes (on the components given: "same" = the cause's own component, "path"
= as above, or any)".
Issues read from logs explain nothing, except through rules marked from_logs: a service's
own start-up failure (a migration that fails, a setting it cannot load) is shown only by
its last words, and stays an issue only until a later start shows it over.
The root cause is the most fundamental issue that no other issue explains; mutual
explanations are settled by the RANK order below (earlier = more fundamental).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from exporter.diagnostic import RootCause
from exporter.discovery.topology import Topology, template
from exporter.issues import CATALOGUE, SEVERITY_RANK, Issue

ANY = "any"
SAME = "same"
PATH = "path"
GATEWAY = "kong"

_CONTAINER_DOWN = frozenset({"CONTAINER_MISSING", "CONTAINER_NOT_RUNNING",
                             "CONTAINER_CRASH_LOOP", "CONTAINER_OOM_KILLED"})
# What follows when a component is down, on that same component.
_ON_DOWN_COMPONENT = frozenset({
    "CONTAINER_NOT_RUNNING", "CONTAINER_UNHEALTHY", "CONTAINER_CRASH_LOOP",
    "COMPONENT_UNHEALTHY", "COMPONENT_UNREACHABLE", "PORT_NOT_LISTENING",
    "INTERNAL_LINK_DOWN", "GATEWAY_UPSTREAM_ERROR", "LOG_ERROR_SPIKE", "NETWORK_MISSING",
})
# What a failing gateway explains, wherever it is reported.
_GATEWAY_EFFECTS = frozenset({
    "GATEWAY_UNREACHABLE", "GATEWAY_UPSTREAM_ERROR", "GATEWAY_KEY_REJECTED", "ENDPOINT_SLOW",
    "AUTH_UNHEALTHY", "AUTH_USER_CREATE_FAILED", "PORT_NOT_LISTENING",
    "COMPONENT_UNREACHABLE", "COMPONENT_UNHEALTHY", "INTERNAL_LINK_DOWN",
})
# What an unusable auth service explains.
_AUTH_EFFECTS = frozenset({
    "AUTH_UNHEALTHY", "AUTH_USER_CREATE_FAILED", "GATEWAY_UPSTREAM_ERROR",
    "COMPONENT_UNREACHABLE", "COMPONENT_UNHEALTHY", "CONTAINER_UNHEALTHY",
    "CONTAINER_CRASH_LOOP", "CONTAINER_NOT_RUNNING", "INTERNAL_LINK_DOWN", "LOG_ERROR_SPIKE",
})
# What a database nobody can use explains: everything that stands on it.
_DB_EFFECTS = _AUTH_EFFECTS | frozenset({
    "DB_UNREACHABLE", "DB_AUTH_FAILED", "DB_ROLE_PASSWORD_MISMATCH", "DB_SCHEMA_MISSING",
    "DB_CONNECTIONS_HIGH", "AUTH_DB_CONNECTION_FAILED", "PORT_NOT_LISTENING",
})
# What a failing component explains on the components that need it (PATH).
# A missing container or an OOM kill is nobody else's doing.
_NODE_EFFECTS = _ON_DOWN_COMPONENT | _GATEWAY_EFFECTS | _AUTH_EFFECTS | {"CONTAINER_UNHEALTHY"}
# Issues observed through the gateway: a failing gateway explains them wherever they sit.
THROUGH_GATEWAY = _GATEWAY_EFFECTS


@cache
def _template() -> Topology:
    return template()


def path_of(effect: Issue, topology: Topology) -> frozenset[str] | None:
    """The components `effect` depends on to be seen at all (None: anywhere)."""
    if effect.component is None:
        return None
    found = {effect.component, *topology.upstream(effect.component, runtime=True)}
    if effect.code in THROUGH_GATEWAY:
        found.add(GATEWAY)
    return frozenset(found)


@dataclass(frozen=True)
class Rule:
    """CAUSE (on cause_component, if set) explains EFFECTS on effect_components."""

    cause: str
    effects: frozenset[str]
    cause_component: str | None = None
    effect_components: frozenset[str | None] | str = ANY
    from_logs: bool = False  # the cause may be an issue the logs check read

    def explains(self, cause: Issue, effect: Issue, topology: Topology | None = None) -> bool:
        """True when this rule links the two issues."""
        if cause.code != self.cause or effect.code not in self.effects:
            return False
        if self.cause_component is not None and cause.component != self.cause_component:
            return False
        if self.effect_components == ANY:
            return True
        if self.effect_components == SAME:
            return effect.component == cause.component
        if self.effect_components == PATH:
            path = path_of(effect, topology or _template())
            return path is None or cause.component in path
        assert isinstance(self.effect_components, frozenset)
        return effect.component in self.effect_components


def _down(code: str) -> list[Rule]:
    """A component down: what fails on it and on every component that needs it."""
    return [
        Rule(code, _NODE_EFFECTS, effect_components=PATH),
        Rule(code, _CONTAINER_DOWN, effect_components=SAME),
        # The gateway's own configuration is what the running Kong shows.
        Rule(code, frozenset({"CONFIG_DRIFT"}), cause_component=GATEWAY),
        # The db is what every service logs in to: nobody's login works without it.
        Rule(code, _DB_EFFECTS - {"DB_UNREACHABLE"}, cause_component="db",
             effect_components=PATH),
    ]


RULES: tuple[Rule, ...] = (
    Rule("DOCKER_UNREACHABLE", frozenset(CATALOGUE) - {"DOCKER_UNREACHABLE"}),
    Rule("DISK_SPACE_CRITICAL", _DB_EFFECTS | _ON_DOWN_COMPONENT | {"DISK_SPACE_LOW"}),
    Rule("VOLUME_MISSING", _ON_DOWN_COMPONENT | _CONTAINER_DOWN, effect_components=SAME),
    Rule("VOLUME_MISSING", _DB_EFFECTS, cause_component="db", effect_components=PATH),
    Rule("PORT_CONFLICT", _ON_DOWN_COMPONENT | _CONTAINER_DOWN, effect_components=SAME),
    Rule("PORT_CONFLICT", _GATEWAY_EFFECTS | {"CONFIG_DRIFT"}, cause_component="kong"),
    # The db stopped, crashed or refusing: DB_UNREACHABLE is the operator's name for it.
    Rule("DB_UNREACHABLE", _DB_EFFECTS | _CONTAINER_DOWN | _ON_DOWN_COMPONENT,
         effect_components=PATH),
    Rule("DB_AUTH_FAILED", _DB_EFFECTS, effect_components=PATH),
    # A service role whose password differs: its service cannot start or serve.
    Rule("DB_ROLE_PASSWORD_MISMATCH", _AUTH_EFFECTS | {"AUTH_DB_CONNECTION_FAILED"}
         | _CONTAINER_DOWN, effect_components=frozenset({"auth", "rest", "storage", "kong",
                                                         "db", None})),
    Rule("AUTH_DB_CONNECTION_FAILED", _AUTH_EFFECTS,
         effect_components=frozenset({"auth", "kong", None})),
    # GoTrue stops at every start on these: it is down or crash-looping because of them.
    *(Rule(code, _AUTH_EFFECTS, effect_components=frozenset({"auth", "kong", None}),
           from_logs=True) for code in ("AUTH_MIGRATION_FAILED", "AUTH_CONFIG_INVALID")),
    Rule("DB_SCHEMA_MISSING", frozenset({"AUTH_MIGRATION_FAILED"})),
    *_down("CONTAINER_MISSING"),
    *_down("CONTAINER_NOT_RUNNING"),
    *_down("CONTAINER_CRASH_LOOP"),
    *_down("CONTAINER_OOM_KILLED"),
    Rule("NETWORK_MISSING", _ON_DOWN_COMPONENT | _GATEWAY_EFFECTS | _AUTH_EFFECTS),
    Rule("GATEWAY_UNREACHABLE", _GATEWAY_EFFECTS - {"GATEWAY_UNREACHABLE"}),
    Rule("GATEWAY_KEY_REJECTED", frozenset({"AUTH_USER_CREATE_FAILED", "CONFIG_DRIFT",
                                            "AUTH_UNHEALTHY"})),
    # A key signed with another secret, or expired: GoTrue rejects the admin call.
    Rule("JWT_SECRET_MISMATCH", frozenset({"AUTH_USER_CREATE_FAILED", "CONFIG_DRIFT",
                                           "LOG_ERROR_SPIKE", "REST_JWT_REJECTED"})),
    # PostgREST v12 cannot verify any key with a secret under 32 bytes.
    Rule("JWT_SECRET_WEAK", frozenset({"REST_JWT_REJECTED", "LOG_ERROR_SPIKE"})),
    Rule("JWT_KEY_EXPIRED", frozenset({"AUTH_USER_CREATE_FAILED", "LOG_ERROR_SPIKE"})),
    # A hanging or unhealthy auth: the gateway's 5xx and the failed user creation follow.
    Rule("COMPONENT_UNREACHABLE", _AUTH_EFFECTS - {"CONTAINER_NOT_RUNNING"},
         cause_component="auth", effect_components=frozenset({"auth", "kong", None})),
    Rule("AUTH_UNHEALTHY", frozenset({"AUTH_USER_CREATE_FAILED", "GATEWAY_UPSTREAM_ERROR",
                                      "COMPONENT_UNHEALTHY"}),
         effect_components=frozenset({"auth", "kong", None})),
    Rule("GATEWAY_UPSTREAM_ERROR", frozenset({"AUTH_USER_CREATE_FAILED", "AUTH_UNHEALTHY"}),
         cause_component="auth"),
    # Kong proxying to an address its upstream no longer has (a link between two healthy
    # ends): what fails through the gateway follows, on kong and on the upstreams.
    Rule("GATEWAY_UPSTREAM_STALE", frozenset({"GATEWAY_UPSTREAM_ERROR", "LOG_ERROR_SPIKE",
                                              "ENDPOINT_SLOW", "COMPONENT_UNHEALTHY"}),
         effect_components=SAME),
    Rule("GATEWAY_UPSTREAM_STALE", frozenset({"GATEWAY_UPSTREAM_ERROR", "AUTH_UNHEALTHY",
                                              "AUTH_USER_CREATE_FAILED", "ENDPOINT_SLOW"}),
         effect_components=frozenset({"auth", "rest", "storage", "studio", None})),
)

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


def explains(cause: Issue, effect: Issue, rules: Sequence[Rule] = RULES,
             topology: Topology | None = None) -> bool:
    """True when some rule says cause explains effect (over the topology, default template).

    Issues read from logs describe the recent past, which may be over already: they can be
    explained but explain what a live check sees now only through a from_logs rule.
    """
    if cause is effect:
        return False
    from_logs = cause.check == "logs"
    return any(r.explains(cause, effect, topology) for r in rules
               if r.from_logs or not from_logs)


# Log findings that may explain live ones (a service's own start-up failure, current while
# it has not started since) rank as live ones do.
_CURRENT_FROM_LOGS = frozenset(r.cause for r in RULES if r.from_logs)


def _order(issue: Issue) -> tuple[int, int, int, int]:
    # Live findings before what the logs say, at any severity.
    from_logs = issue.check == "logs" and issue.code not in _CURRENT_FROM_LOGS
    return (int(from_logs), -SEVERITY_RANK[issue.severity],
            _CODE_ORDER.get(issue.code, len(_CODE_ORDER)),
            _COMPONENT_ORDER.get(issue.component or "", 9))


def order_issues(issues: Iterable[Issue]) -> list[Issue]:
    """Issues most severe and most fundamental first."""
    return sorted(issues, key=_order)


def find_root_cause(issues: Sequence[Issue], rules: Sequence[Rule] = RULES, *,
                    topology: Topology | None = None) -> RootCause | None:
    """The issue that explains the others (info-level issues never are one), and its chain."""
    topology = topology or _template()
    candidates = [i for i in order_issues(issues) if i.severity != "info"]
    if not candidates:
        return None
    root = candidates[0]
    for candidate in candidates:
        # Explained by something it does not explain back: not a root.
        if not any(explains(other, candidate, rules, topology)
                   and not explains(candidate, other, rules, topology) for other in issues):
            root = candidate
            break
    explained = tuple(i for i in issues if i is not root and _explains_transitively(
        root, i, issues, rules, topology))
    return RootCause(root, explained, chain(root, explained, topology))


def _explains_transitively(root: Issue, target: Issue, issues: Sequence[Issue],
                           rules: Sequence[Rule], topology: Topology) -> bool:
    seen: set[int] = set()
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for other in issues:
            if id(other) in seen or other is current or not explains(current, other, rules,
                                                                     topology):
                continue
            if other is target:
                return True
            seen.add(id(other))
            frontier.append(other)
    return False


def element_of(issue: Issue) -> tuple[str, str | None, str | None]:
    """The element an issue is about: a link (source, target), a component or the instance."""
    evidence = issue.evidence
    if issue.code == "GATEWAY_UPSTREAM_STALE" and evidence.get("upstream"):
        return "link", GATEWAY, str(evidence["upstream"])
    if issue.code == "INTERNAL_LINK_DOWN" and evidence.get("from") and evidence.get("to"):
        return "link", str(evidence["from"]), str(evidence["to"])
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

    out = []
    for key in sorted(steps, key=rank):
        kind, first, second = key
        step: dict[str, Any] = {"element": kind}
        if kind == "link":
            step["link"] = f"{first}->{second}"
        elif kind == "component":
            step["component"] = first
        step["code"] = ", ".join(dict.fromkeys(i.code for i in steps[key]))
        step["issues"] = [{"code": i.code, "component": i.component, "check": i.check}
                          for i in steps[key]]
        out.append(step)
    return tuple(out)


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
