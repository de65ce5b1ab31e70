"""Ultrabase Doctor's Grafana dashboards as code (grafana-foundation-sdk).

One module per dashboard (fleet, instance, trends) plus shared helpers in common.
`python -m grafana.dashboards_src` writes grafana/dashboards/*.json; `--check` only
compares. all_queries() lists every panel expression for the end-to-end tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from grafana.dashboards_src import fleet, instance, trends
from grafana.dashboards_src.common import render_json

DASHBOARDS_DIR = Path(__file__).resolve().parent.parent / "dashboards"
# Where Grafana sees DASHBOARDS_DIR (grafana/provisioning/dashboards/ultrabase.yml; the
# compose file mounts ./grafana/dashboards there, read-only).
PROVISIONED_PATH = "/var/lib/grafana/dashboards"

# uid -> builder; the JSON file is <uid>.json.
DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    fleet.UID: fleet.build,
    instance.UID: instance.build,
    trends.UID: trends.build,
}

# (dashboard uid, panel title) of the panels that list problems and so are rightly empty on
# a healthy fleet. Every other expression returns data whenever the exporter has run a sweep.
EMPTY_WHEN_HEALTHY: frozenset[tuple[str, str]] = frozenset({
    (fleet.UID, "Active issues"),
    (instance.UID, "Active issues"),
    (fleet.UID, "Recent events"),
    (instance.UID, "Recent events"),
})
# Of those, the panels of faults that are over: empty until a fault has been healed (and so
# also while the first one is still going on).
EMPTY_UNTIL_HEALED: frozenset[tuple[str, str]] = frozenset({
    (fleet.UID, "Recent events"),
    (instance.UID, "Recent events"),
})

# What render_query puts in place of Grafana's built-in variables.
BUILTINS: dict[str, str] = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard as JSON data, by uid."""
    return {uid: build() for uid, build in DASHBOARDS.items()}


def write_all(out_dir: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every dashboard to out_dir/<uid>.json; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid, data in build_all().items():
        path = out_dir / f"{uid}.json"
        path.write_text(render_json(data), encoding="utf-8")
        paths.append(path)
    return paths


def stale(out_dir: Path = DASHBOARDS_DIR) -> list[str]:
    """Files in out_dir that differ from what the code generates (or are missing)."""
    differing = []
    for uid, data in build_all().items():
        path = out_dir / f"{uid}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render_json(data):
            differing.append(path.name)
    return differing


def render_query(expr: str, instance_id: str = ".*", host: str = ".*", **builtins: str) -> str:
    """expr with $instance_id, $host and Grafana's built-ins ($__rate_interval, $__range,
    $__range_s, $__interval) replaced, ready for Prometheus. Keyword arguments override
    BUILTINS (e.g. `__range="6h", __range_s="21600"`)."""
    values = {**BUILTINS, **builtins, "instance_id": instance_id, "host": host}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(substitute, expr)


def panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows excluded (nested row panels included)."""
    for panel in data.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def all_queries(*, render: bool = True) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every target of every panel.

    A panel with several targets appears once per target. With render (the default) the
    expressions are passed through render_query(): all instances, all hosts, and the
    built-ins of BUILTINS.
    """
    out = []
    for uid, data in build_all().items():
        for panel in panels(data):
            for target in panel.get("targets", []):
                expr = target["expr"]
                out.append((uid, panel["title"], render_query(expr) if render else expr))
    return out
