"""An instance's dependency graph: its components and the links "A needs B" between them.

Built once per instance from what is deployed: compose's depends_on (the container label
as created, else the compose file), the other services' hostnames its environment names
(a DSN's @db:5432, a URL's //rest:3000, a bare DB_HOST=db) and the upstream URLs of
kong.yml's services. What no file tells falls back to the reference template (DESIGN §4).

The safe restart orders its stops and starts by the depends_on links (what compose itself
honours); the root cause walks every link.
"""

from __future__ import annotations

import graphlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from exporter.discovery.files import FileReadError, read_compose_file, read_kong_file
from exporter.discovery.model import COMPONENTS, Instance, ultrabase_container_name
from exporter.dockerhost import COMPOSE_DEPENDS_ON

log = logging.getLogger(__name__)

Condition = Literal["service_healthy", "service_started", "service_completed_successfully"]
LinkKind = Literal["depends_on", "env", "route"]
Graph = Mapping[str, Mapping[str, Condition]]

_CONDITIONS: Mapping[str, Condition] = {
    "service_healthy": "service_healthy", "service_started": "service_started",
    "service_completed_successfully": "service_completed_successfully"}

# The reference template's depends_on (DESIGN §4), for containers that carry no compose
# label (created by other tools, or compose v1) and no readable compose file.
FALLBACK_DEPENDS_ON: Mapping[str, Mapping[str, Condition]] = {
    "vector": {},
    "imgproxy": {},
    "db": {"vector": "service_healthy"},
    "analytics": {"db": "service_healthy"},
    "studio": {"analytics": "service_healthy"},
    "kong": {"analytics": "service_healthy"},
    "functions": {"analytics": "service_healthy"},
    **{name: {"db": "service_healthy", "analytics": "service_healthy"}
       for name in ("auth", "rest", "realtime", "meta", "supavisor")},
    "storage": {"db": "service_healthy", "rest": "service_started",
                "imgproxy": "service_started"},
}
# The reference template's other links: the hosts its environment and kong.yml name
# (docker-compose.yml's *_URL/*_HOST values, kong.yml's services[].url).
FALLBACK_USES: Mapping[str, tuple[str, ...]] = {
    "kong": ("auth", "rest", "realtime", "storage", "meta", "functions", "analytics"),
    "auth": ("db",), "rest": ("db",), "realtime": ("db",), "meta": ("db",),
    "supavisor": ("db",), "analytics": ("db",), "functions": ("kong", "db"),
    "storage": ("db", "rest", "imgproxy"), "studio": ("meta", "kong", "analytics"),
}
# A host named in a value: after "://" or a userinfo "@", or a libpq "host=".
_URL_HOST = re.compile(r"(?:://(?:[^@/\s]*@)?|@|\bhost=)([A-Za-z0-9][A-Za-z0-9_.-]*)")


@dataclass(frozen=True)
class Link:
    """`source` needs `target`; how the deployed files say so."""

    source: str
    target: str
    kinds: frozenset[LinkKind]
    condition: Condition | None = None  # compose's depends_on condition, when declared

    @property
    def runtime(self) -> bool:
        """True when the source uses the target while it runs (not start order only)."""
        return bool(self.kinds & {"env", "route"})

    @property
    def name(self) -> str:
        """The link as shown: "kong->auth"."""
        return f"{self.source}->{self.target}"

    def to_dict(self) -> dict[str, object]:
        """JSON shape."""
        return {"source": self.source, "target": self.target, "kinds": sorted(self.kinds),
                "condition": self.condition}


@dataclass(frozen=True)
class Topology:
    """Components and the links between them (no self-links, only known components)."""

    components: tuple[str, ...]
    links: tuple[Link, ...]

    def needs(self, component: str, runtime: bool = False) -> tuple[str, ...]:
        """What `component` needs directly (runtime: only links it uses while it runs)."""
        return tuple(link.target for link in self.links
                     if link.source == component and (not runtime or link.runtime))

    def users(self, component: str, runtime: bool = False) -> tuple[str, ...]:
        """What needs `component` directly (runtime: only links used while running)."""
        return tuple(link.source for link in self.links
                     if link.target == component and (not runtime or link.runtime))

    def link(self, source: str, target: str) -> Link | None:
        """The link source->target, if there is one."""
        return next((k for k in self.links if k.source == source and k.target == target),
                    None)

    def upstream(self, component: str, runtime: bool = False) -> set[str]:
        """Everything `component` needs, directly or not."""
        return _closure(component, lambda c: self.needs(c, runtime))

    def downstream(self, component: str, runtime: bool = False) -> set[str]:
        """Everything that needs `component`, directly or not."""
        return _closure(component, lambda c: self.users(c, runtime))

    def start_graph(self) -> dict[str, dict[str, Condition]]:
        """component -> {dependency: condition}: the depends_on links compose honours."""
        graph: dict[str, dict[str, Condition]] = {c: {} for c in self.components}
        for link in self.links:
            if "depends_on" in link.kinds:
                graph[link.source][link.target] = link.condition or "service_started"
        return graph

    def to_dict(self) -> dict[str, object]:
        """JSON shape."""
        return {"components": list(self.components),
                "links": [link.to_dict() for link in self.links]}


def _closure(start: str, step: Callable[[str], Iterable[str]]) -> set[str]:
    found: set[str] = set()
    frontier = [start]
    while frontier:
        for other in step(frontier.pop()):
            if other not in found and other != start:
                found.add(other)
                frontier.append(other)
    return found


def parse_depends_on(label: str) -> dict[str, Condition]:
    """Compose v2's label, e.g. "db:service_healthy:false,rest:service_started:false"."""
    out: dict[str, Condition] = {}
    for part in label.split(","):
        name, _, rest = part.strip().partition(":")
        if not name:
            continue
        out[name] = _CONDITIONS.get(rest.split(":", 1)[0], "service_started")
    return out


def hosts_named(value: str) -> set[str]:
    """The host names a configuration value points at (URLs, DSNs, host=...)."""
    return {m.group(1).lower() for m in _URL_HOST.finditer(value)}


class _Links:
    """Links found so far, keyed by (source, target), with their kinds and condition."""

    def __init__(self, components: Sequence[str]) -> None:
        self.known = set(components)
        self.found: dict[tuple[str, str], tuple[set[LinkKind], Condition | None]] = {}

    def add(self, source: str, target: str | None, kind: LinkKind,
            condition: Condition | None = None) -> None:
        """Record source->target (only between known components, never to itself)."""
        if target is None or source == target or not {source, target} <= self.known:
            return
        kinds, held = self.found.setdefault((source, target), (set(), None))
        kinds.add(kind)
        self.found[(source, target)] = (kinds, condition or held)

    def start_graph(self, components: Sequence[str]) -> dict[str, dict[str, Condition]]:
        """component -> {dependency: condition} of the depends_on links."""
        return {s: {t: c or "service_started" for (a, t), (kinds, c) in self.found.items()
                    if a == s and "depends_on" in kinds} for s in components}


def _env_hosts(key: str, value: str) -> set[str]:
    """The hosts one environment variable names (a bare *_HOST value too)."""
    hosts = hosts_named(value)
    if key.upper().endswith(("_HOST", "_HOSTNAME")):
        hosts.add(value.strip().lower())
    return hosts


def build(components: Sequence[str], *,
          depends_on: Mapping[str, Mapping[str, Condition]],
          env: Mapping[str, Mapping[str, str]] | None = None,
          routes: Iterable[tuple[str, str]] = (),
          aliases: Mapping[str, str] | None = None) -> Topology:
    """A topology from plain facts: depends_on per component, env per component, kong routes.

    `aliases` maps other host names (container names) to their component; a component's
    own name always names it.
    """
    names = {c.lower(): c for c in components}
    names.update({k.lower(): v for k, v in (aliases or {}).items() if v in components})
    found = _Links(components)
    for source, deps in depends_on.items():
        for target, condition in deps.items():
            found.add(source, target, "depends_on", condition)
    for source, values in (env or {}).items():
        for host in {h for key, value in values.items() for h in _env_hosts(key, value)}:
            found.add(source, names.get(host), "env")
    for host in {h for _service, url in routes for h in hosts_named(url)}:
        found.add("kong", names.get(host), "route")
    # Components in start order (runtime links may form cycles: kong <-> functions).
    ordered = order(found.start_graph(components), components)
    position = {c: n for n, c in enumerate(ordered)}
    links = tuple(Link(s, t, frozenset(kinds), condition)
                  for (s, t), (kinds, condition) in sorted(
                      found.found.items(), key=lambda item: (position[item[0][0]],
                                                             position[item[0][1]])))
    return Topology(tuple(ordered), links)


def template(components: Sequence[str] = COMPONENTS) -> Topology:
    """The reference template's topology, for what no deployed file tells."""
    return build(components, depends_on=FALLBACK_DEPENDS_ON,
                 env={s: {f"{t.upper()}_HOST": t for t in targets}
                      for s, targets in FALLBACK_USES.items()})


def _files_facts(instance: Instance) -> tuple[dict[str, Mapping[str, str]],
                                               dict[str, Mapping[str, Condition]],
                                               tuple[tuple[str, str], ...] | None]:
    """env and depends_on from the compose file, routes from kong.yml (what is readable)."""
    env: dict[str, Mapping[str, str]] = {}
    declared: dict[str, Mapping[str, Condition]] = {}
    routes: tuple[tuple[str, str], ...] | None = None
    files = instance.files
    if files.compose_file is not None:
        try:
            facts = read_compose_file(files.compose_file, root=files.root)
            env.update(facts.env)
            declared.update({s: {d: _CONDITIONS.get(c, "service_started")
                                 for d, c in deps.items()}
                             for s, deps in facts.depends_on.items()})
        except FileReadError as exc:
            log.debug("topology of %s without its compose file: %s", instance.id, exc)
    if files.kong_file is not None:
        try:
            routes = read_kong_file(files.kong_file, env.get("kong"),
                                    root=files.root).upstreams
        except FileReadError as exc:
            log.debug("topology of %s without kong.yml: %s", instance.id, exc)
    return env, declared, routes


def _depends_on(instance: Instance, declared: Mapping[str, Mapping[str, Condition]]
                ) -> dict[str, Mapping[str, Condition]]:
    """Each component's depends_on: its container's label, else the file, else the template."""
    out: dict[str, Mapping[str, Condition]] = {}
    for name, component in instance.components.items():
        labels = component.container.labels if component.container else {}
        if COMPOSE_DEPENDS_ON in labels:
            out[name] = parse_depends_on(labels[COMPOSE_DEPENDS_ON])
        else:
            out[name] = declared.get(name, dict(FALLBACK_DEPENDS_ON.get(name, {})))
    return out


def topology_of(instance: Instance) -> Topology:
    """The instance's topology as deployed; the template's links where no file tells."""
    components = list(instance.components)
    env, declared, routes = _files_facts(instance)
    for name in components:
        env.setdefault(name, {f"{t.upper()}_HOST": t for t in FALLBACK_USES.get(name, ())})
    if routes is None:
        routes = tuple((t, f"http://{t}/") for t in FALLBACK_USES["kong"])
    aliases = {ultrabase_container_name(c, instance.id): c for c in components}
    aliases.update({component.container_name: name
                    for name, component in instance.components.items()
                    if component.container_name})
    return build(components, depends_on=_depends_on(instance, declared), env=env,
                 routes=routes, aliases=aliases)


# ordering -----------------------------------------------------------------------------

def _rank(name: str) -> tuple[int, str]:
    return (COMPONENTS.index(name) if name in COMPONENTS else len(COMPONENTS), name)


def order(graph: Graph, names: Sequence[str]) -> list[str]:
    """`names`, each after what it depends on within them; ties by the template's order.

    A cycle is broken where it is found (logged), its members in the template's order.
    """
    wanted = set(names)
    edges = {n: {d for d in graph.get(n, {}) if d in wanted and d != n} for n in names}
    while True:
        sorter = graphlib.TopologicalSorter(edges)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = set(exc.args[1])
            log.warning("dependency cycle among %s; using the template's order",
                        ", ".join(sorted(cycle)))
            for member in cycle:
                edges[member] -= cycle
            continue
        out: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=_rank)
            out.extend(ready)
            sorter.done(*ready)
        return out


def levels(graph: Graph, names: Sequence[str]) -> list[list[str]]:
    """`names` grouped by depth: level 0 depends on none of them, level n on level n-1."""
    ordered = order(graph, names)
    depth: dict[str, int] = {}
    for name in ordered:
        inside = [depth[d] for d in graph.get(name, {}) if d in depth]
        depth[name] = 1 + max(inside) if inside else 0
    out: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for name in ordered:
        out[depth[name]].append(name)
    return out


def dependents_in(graph: Graph, component: str) -> set[str]:
    """Transitive dependents of `component` within `graph`."""
    return _closure(component, lambda c: [n for n, deps in graph.items() if c in deps])
