"""The import graph: no cycle between modules, and dependencies point one way.

Every module of the packages is parsed, and every import counts: at module level, inside
functions and under ``TYPE_CHECKING``. An import names the module it reaches (``from a.b
import c`` reaches ``a.b.c`` when that is a module, else ``a.b``); the parent packages it
runs on the way are not edges, so a package whose ``__init__`` gathers its modules is no
cycle. The layers: the exporter is the domain, the action API builds on it, and the fleet
is the test world that neither may import nor be imported by them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("exporter", "actions", "fleet")
# package -> the packages it must never import
FORBIDDEN: Mapping[str, frozenset[str]] = {
    "exporter": frozenset({"actions", "fleet"}),
    "actions": frozenset({"fleet"}),
    "fleet": frozenset({"exporter", "actions"}),
}

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    """The dotted module name of a file under root (a package is its __init__)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """Module -> the modules of the packages it imports, anywhere in its text."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: Graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.level, node.module)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            edges.update(found for t in targets if (found := _known(t, files)) is not None)
        edges.discard(name)
        graph[name] = edges
    return graph


def _absolute(name: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if level == 0:
        return module or ""
    parts = name.split(".") if is_package else name.split(".")[:-1]
    parts = parts[:len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


def _known(target: str, files: Mapping[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of the modules, if any."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in files:
            return candidate
    return None


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module, sorted: each is a set
    of modules that all reach one another."""
    reach = {node: _reachable(graph, node) for node in graph}
    found = {tuple(sorted({node, *(m for m in reach[node] if node in reach.get(m, ()))}))
             for node in graph}
    return sorted(list(component) for component in found if len(component) > 1)


def _reachable(graph: Graph, start: str) -> set[str]:
    """Every module start imports, directly or through others."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def upward(graph: Graph, forbidden: Mapping[str, frozenset[str]]) -> list[str]:
    """Every import from a package into one it must not import, as 'a -> b'."""
    return sorted(f"{source} -> {target}" for source, targets in graph.items()
                  for target in targets
                  if target.split(".")[0] in forbidden.get(source.split(".")[0], ()))


def test_no_module_imports_another_that_imports_it_back() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 100  # the walk found the tree
    assert cycles(graph) == []


def test_dependencies_point_one_way() -> None:
    assert upward(import_graph(ROOT, PACKAGES), FORBIDDEN) == []


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_walk_sees_lazy_type_only_and_relative_imports(tmp_path: Path) -> None:
    _write(tmp_path, {
        "low/__init__.py": "from low import a\n",
        "low/a.py": "def f():\n    from low.sub import b\n",
        "low/sub/__init__.py": "",
        "low/sub/b.py": ("from typing import TYPE_CHECKING\n"
                         "if TYPE_CHECKING:\n    from .. import c\n"),
        "low/c.py": "import high.x\nfrom . import a\n",
        "high/__init__.py": "",
        "high/x.py": "import low.a, os\n",
    })
    graph = import_graph(tmp_path, ("low", "high"))
    assert graph == {"low": {"low.a"}, "low.a": {"low.sub.b"}, "low.sub": set(),
                     "low.sub.b": {"low.c"}, "low.c": {"high.x", "low.a"},
                     "high": set(), "high.x": {"low.a"}}
    assert cycles(graph) == [["high.x", "low.a", "low.c", "low.sub.b"]]
    assert upward(graph, {"low": frozenset({"high"})}) == ["low.c -> high.x"]
    graph["low.c"] = {"low.a"}
    graph["high.x"] = set()
    assert cycles(graph) == [["low.a", "low.c", "low.sub.b"]]
    graph["low.c"] = set()
    assert cycles(graph) == [] and upward(graph, {"low": frozenset({"high"})}) == []
