"""The Grafana dashboards: generated JSON in sync with the code, panels complete, PromQL valid
(promtool), only contract metrics and labels, variables and links, provisioning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.dashboards_src import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    EMPTY_WHEN_HEALTHY,
    PROVISIONED_PATH,
    all_queries,
    build_all,
    panels,
    render_query,
)
from grafana.dashboards_src.__main__ import main as cli_main

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "grafana" / "provisioning"

# DESIGN.md section 6 (counters as exposed, with _total).
CONTRACT_METRICS = {
    "ultrabase_up", "ultrabase_build_info", "ultrabase_instance_info",
    "ultrabase_instance_healthy", "ultrabase_check_success", "ultrabase_check_duration_seconds",
    "ultrabase_diagnostic_timestamp_seconds", "ultrabase_component_up",
    "ultrabase_container_state", "ultrabase_container_restarts", "ultrabase_issue_active",
    "ultrabase_endpoint_latency_seconds", "ultrabase_auth_user_create_success",
    "ultrabase_jwt_expiry_timestamp_seconds", "ultrabase_db_connections",
    "ultrabase_db_max_connections", "ultrabase_db_size_bytes", "ultrabase_volume_size_bytes",
    "ultrabase_filesystem_avail_bytes", "ultrabase_filesystem_size_bytes",
    "ultrabase_log_lines", "ultrabase_diagnostic_runs_total", "ultrabase_operations_total",
    "ultrabase_sweep_duration_seconds",
    # Added after DESIGN.md's list, documented in docs/metrics.md.
    "ultrabase_recent_event_timestamp_seconds",
}
# Metrics without instance_id (exporter-wide or store counters).
HOST_WIDE = {"ultrabase_up", "ultrabase_build_info", "ultrabase_diagnostic_runs_total",
             "ultrabase_operations_total", "ultrabase_sweep_duration_seconds"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED_UIDS = {"ultrabase-fleet", "ultrabase-instance", "ultrabase-trends"}

_SELECTOR = re.compile(r"\b(ultrabase_\w+)\s*(\{[^}]*\})?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return build_all()


@pytest.fixture(scope="module")
def raw_queries() -> list[tuple[str, str, str]]:
    return all_queries(render=False)


def _normalise(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)


def _labels_used(expr: str) -> set[str]:
    """Every label name an expression matches on, groups by or joins on."""
    names = set(_MATCHER_LABEL.findall(expr))
    for group in _GROUPING.findall(expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    return names


# -- generated JSON --------------------------------------------------------------------------

def test_committed_json_is_what_the_code_generates(boards: dict[str, dict[str, Any]]) -> None:
    committed = {p.stem for p in DASHBOARDS_DIR.glob("*.json")}
    assert committed == set(boards), "grafana/dashboards/ holds a file the code does not make"
    for uid, data in boards.items():
        on_disk = json.loads((DASHBOARDS_DIR / f"{uid}.json").read_text(encoding="utf-8"))
        assert _normalise(on_disk) == _normalise(data), (
            f"{uid}.json is stale: run `python -m grafana.dashboards_src`")


def test_cli_check_reports_stale_output_and_write_fixes_it(tmp_path: Path) -> None:
    assert cli_main(["--check", "--out", str(tmp_path)]) == 1
    assert cli_main(["--out", str(tmp_path)]) == 0
    assert cli_main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "ultrabase-trends.json").write_text("{}\n", encoding="utf-8")
    assert cli_main(["--check", "--out", str(tmp_path)]) == 1


def test_uids_are_stable_and_titles_unique(boards: dict[str, dict[str, Any]]) -> None:
    assert set(DASHBOARDS) == EXPECTED_UIDS
    assert {uid: data["uid"] for uid, data in boards.items()} == {u: u for u in EXPECTED_UIDS}
    titles = [data["title"] for data in boards.values()]
    assert len(set(titles)) == len(titles)
    for data in boards.values():
        assert "ultrabase" in data["tags"]


# -- panels ------------------------------------------------------------------------------------

def test_every_query_panel_has_the_datasource_variable_and_targets(
        boards: dict[str, dict[str, Any]]) -> None:
    for uid, data in boards.items():
        ids = [p["id"] for p in data["panels"]]
        assert len(set(ids)) == len(ids), f"{uid}: duplicate panel ids"
        for panel in panels(data):
            where = f"{uid} / {panel.get('title')}"
            assert panel.get("title"), where
            if panel["type"] == "text":
                assert panel["options"]["content"].strip(), where
                continue
            assert panel.get("datasource") == DATASOURCE, where
            targets = panel.get("targets") or []
            assert targets, f"{where}: no target"
            ref_ids = [t["refId"] for t in targets]
            assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), where
            for target in targets:
                assert target.get("datasource") == DATASOURCE, where
                assert target.get("expr", "").strip(), where


def test_panels_fit_the_grid_without_overlapping(boards: dict[str, dict[str, Any]]) -> None:
    for uid, data in boards.items():
        taken: set[tuple[int, int]] = set()
        for panel in data["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, (uid, pos)
            cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                     for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & taken, f"{uid}: {panel['title']} overlaps another panel"
            taken |= cells


def test_expected_panels_are_present(boards: dict[str, dict[str, Any]]) -> None:
    def titles(uid: str) -> set[str]:
        return {p["title"] for p in panels(boards[uid])}

    assert {"Instance health", "Component status", "Active issues", "Uptime",
            "JWT key days left", "Disk free", "Volume sizes"} <= titles("ultrabase-fleet")
    assert {"Component status", "Check duration", "Check success", "Endpoint latency",
            "DB connections", "DB size", "Log errors by component", "Container restarts",
            "Operations per hour (host-wide)", "Auth user create"} <= titles("ultrabase-instance")
    assert {"Uptime per instance (rolling 24h)", "Active issues by code",
            "Recovery in the time range", "Diagnostic runs by result"} <= titles("ultrabase-trends")
    for uid, title in EMPTY_WHEN_HEALTHY:
        assert title in titles(uid), (uid, title)


# -- PromQL ----------------------------------------------------------------------------------

def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or ("/usr/bin/promtool"
                                            if Path("/usr/bin/promtool").exists() else None)
    if promtool is None:
        pytest.skip("promtool is not installed")
    queries = all_queries()
    rules = [{"record": f"dashboard:query_{i}:check", "expr": expr}
             for i, (_, _, expr) in enumerate(queries)]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}),
                    encoding="utf-8")
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout


def test_expressions_use_only_contract_metrics(raw_queries: list[tuple[str, str, str]],
                                               boards: dict[str, dict[str, Any]]) -> None:
    for uid, title, expr in raw_queries:
        metrics = {m for m, _ in _SELECTOR.findall(expr)}
        assert metrics, f"{uid} / {title}: no ultrabase_ metric in {expr}"
        assert metrics <= CONTRACT_METRICS, f"{uid} / {title}: {metrics - CONTRACT_METRICS}"
    for data in boards.values():
        for variable in data["templating"]["list"]:
            if variable["type"] == "query":
                used = {m for m, _ in _SELECTOR.findall(variable["query"])}
                assert used and used <= CONTRACT_METRICS, variable["name"]


def test_every_selector_is_filtered_by_the_variables(
        raw_queries: list[tuple[str, str, str]]) -> None:
    for uid, title, expr in raw_queries:
        for metric, matchers in _SELECTOR.findall(expr):
            where = f"{uid} / {title}: {metric}"
            assert matchers, f"{where} has no label matchers"
            assert 'host=~"$host"' in matchers, where
            if metric not in HOST_WIDE:
                assert 'instance_id=~"$instance_id"' in matchers, where


@pytest.mark.parametrize("bad", [
    'ultrabase_up{instance="x"}',
    "sum by (instance) (ultrabase_up)",
    "a * on (host, instance) group_left (owner) b",
])
def test_instance_label_detector_catches_misuse(bad: str) -> None:
    assert "instance" in _labels_used(bad)


def test_no_expression_or_legend_uses_the_instance_label(
        boards: dict[str, dict[str, Any]]) -> None:
    for uid, data in boards.items():
        for panel in panels(data):
            for target in panel.get("targets", []):
                labels = _labels_used(target["expr"])
                assert "instance" not in labels, f"{uid} / {panel['title']}: {target['expr']}"
                legend = set(_LEGEND_LABEL.findall(target.get("legendFormat", "")))
                assert "instance" not in legend, f"{uid} / {panel['title']}"
        for variable in data["templating"]["list"]:
            assert "instance" not in _labels_used(variable.get("query", "") or ""), uid
            assert not re.search(r",\s*instance\s*\)", str(variable.get("query", ""))), uid


def test_render_query_substitutes_every_variable() -> None:
    expr = ('rate(x{host=~"$host", instance_id=~"${instance_id}"}[$__rate_interval]) '
            "* $__range_s + y[$__range] + z[$__interval]")
    assert render_query(expr, instance_id="abc", host="h1") == (
        'rate(x{host=~"h1", instance_id=~"abc"}[5m]) * 3600 + y[1h] + z[1m]')
    assert render_query("y[$__range]", __range="6h") == "y[6h]"
    with pytest.raises(KeyError):
        render_query("x{a=~\"$unknown\"}")
    for uid, title, expr in all_queries():
        assert "$" not in expr, f"{uid} / {title}: {expr}"


# -- variables and links -----------------------------------------------------------------------

def _variables(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in data["templating"]["list"]}


def test_every_dashboard_has_datasource_host_and_instance_variables(
        boards: dict[str, dict[str, Any]]) -> None:
    for uid, data in boards.items():
        variables = _variables(data)
        assert variables["datasource"]["type"] == "datasource", uid
        assert variables["datasource"]["query"] == "prometheus", uid
        host = variables["host"]
        assert host["includeAll"] is True and host["allValue"] == ".*", uid
        assert "host)" in host["query"], uid
        instance = variables["instance_id"]
        assert "instance_id)" in instance["query"] and '$host' in instance["query"], uid
        for variable in (host, instance):
            assert variable["datasource"] == DATASOURCE, uid
    # The fleet views filter many instances; the detail view shows exactly one.
    assert _variables(boards["ultrabase-fleet"])["instance_id"]["includeAll"] is True
    assert _variables(boards["ultrabase-instance"])["instance_id"]["multi"] is False


def test_instance_detail_links_to_the_exporter_api(boards: dict[str, dict[str, Any]]) -> None:
    data = boards["ultrabase-instance"]
    exporter_url = _variables(data)["exporter_url"]
    assert exporter_url["type"] == "textbox"
    assert exporter_url["query"] == "http://127.0.0.1:9646"
    urls = {link.get("url", "") for link in data["links"]}
    for route in ("run-diagnostics", "last-diagnostic", "health-report"):
        assert any(u.startswith(f"${{exporter_url}}/api/instances/${{instance_id}}/{route}")
                   for u in urls), route


# -- provisioning ----------------------------------------------------------------------------

def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_dashboard_provider_reads_the_dashboards_dir() -> None:
    providers = _yaml(PROVISIONING / "dashboards" / "ultrabase.yml")["providers"]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == PROVISIONED_PATH
    assert DASHBOARDS_DIR == REPO / "grafana" / "dashboards"


def test_compose_mounts_the_dashboards_dir_where_the_provider_reads() -> None:
    compose_file = REPO / "docker-compose.yml"
    if not compose_file.is_file():
        pytest.skip("no docker-compose.yml")
    grafana = _yaml(compose_file)["services"]["grafana"]
    mounts = {}
    for volume in grafana.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source.rstrip("/")
    assert mounts.get(PROVISIONED_PATH) in ("./grafana/dashboards", "grafana/dashboards")
    assert mounts.get("/etc/grafana/provisioning") in ("./grafana/provisioning",
                                                       "grafana/provisioning")


def test_prometheus_datasource_is_provisioned() -> None:
    sources = _yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert len(prometheus) == 1
    assert prometheus[0]["isDefault"] is True
    assert prometheus[0]["url"].startswith("http")


def test_instance_cells_and_the_instance_dashboard_link_to_the_console(
        boards: dict[str, dict[str, Any]]) -> None:
    for uid, data in boards.items():
        console_url = _variables(data)["console_url"]
        assert console_url["type"] == "textbox" and console_url["query"] == \
            "http://127.0.0.1:9647", uid
        links = [link for panel in panels(data)
                 for override in panel.get("fieldConfig", {}).get("overrides", [])
                 for prop_ in override.get("properties", []) if prop_["id"] == "links"
                 for link in prop_["value"]]
        assert any(link["url"] == "${console_url}/instances/${__value.raw}"
                   for link in links), uid
    urls = {link.get("url") for link in boards["ultrabase-instance"]["links"]}
    assert "${console_url}/instances/${instance_id}" in urls
