"""prometheus/: configuration, recording and alerting rules, checked with the real binaries.

promtool checks the configurations (single-host and multi-host, whose file_sd target files
it validates too) and the rule files, and runs the rule unit tests in prometheus/tests/.
The rule files are parsed here to hold them to the project's conventions: the alerts the
issue asks for exist, each with severity, auto_repair "false", instance_id and component
where they apply, summary, description, runbook_url and diagnostics_url; every alert has a
firing and a non-firing promtool case; every recording rule is tested. A real Prometheus
then renders the annotations with the external label runbook_base, which promtool 2.42
cannot set in a unit test.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.issues import CATALOGUE
from exporter.metrics.collector import UltrabaseCollector
from exporter.metrics.snapshot import MetricsSnapshot
from tests.monitoring.support import (
    ALERTMANAGER_DIR,
    PROMETHEUS_DIR,
    binary,
    free_port,
    http_json,
    run,
    server,
    wait_for,
)

RULES = PROMETHEUS_DIR / "rules"
ALERTS_FILE = RULES / "alerts.yml"
RECORDING_FILE = RULES / "recording.yml"
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
CONFIGS = [PROMETHEUS_DIR / "prometheus.yml", PROMETHEUS_DIR / "multi-host" / "prometheus.yml"]

EXPORTER_JOB = "ultrabase-doctor-exporter"
ACTIONS_JOB = "ultrabase-doctor-actions"

# Alert -> (per instance, the README runbook anchor(s) of the issue code behind it). Anchors
# are the lower-case issue codes of exporter/issues.py, plus headings for what is no issue.
PER_INSTANCE = True
EXPORTER_WIDE = False
REQUIRED_ALERTS: dict[str, tuple[bool, set[str]]] = {
    "UltrabaseInstanceUnhealthy": (PER_INSTANCE, {"runbook"}),
    "UltrabaseComponentDown": (PER_INSTANCE, {"component_unreachable"}),
    "UltrabaseAuthUserCreationFailing": (PER_INSTANCE, {"auth_user_create_failed"}),
    "UltrabaseDatabaseUnreachable": (PER_INSTANCE, {"db_unreachable"}),
    "UltrabaseJwtKeyExpiringSoon": (PER_INSTANCE, {"jwt_key_expiring"}),
    "UltrabaseJwtKeyExpired": (PER_INSTANCE, {"jwt_key_expired"}),
    "UltrabaseDiskSpaceLow": (PER_INSTANCE, {"disk_space_low", "disk_space_critical"}),
    "UltrabaseDiskPredictedFull": (PER_INSTANCE, {"disk_space_low"}),
    "UltrabaseContainerCrashLooping": (PER_INSTANCE, {"container_crash_loop"}),
    "UltrabaseDiagnosticsStale": (PER_INSTANCE, {"diagnostics_stale"}),
    "UltrabaseDockerUnreachable": (EXPORTER_WIDE, {"docker_unreachable"}),
    "UltrabaseExporterDown": (EXPORTER_WIDE, {"exporter_down"}),
}
# Anchors that are no issue code: the Runbook section itself and the alert-only conditions.
EXTRA_ANCHORS = {"runbook", "diagnostics_stale", "exporter_down", "action_api_down"}
# Alerts about one component: where the label comes from (the series, or the rule).
COMPONENT_ALERTS = {
    "UltrabaseComponentDown": None,
    "UltrabaseContainerCrashLooping": None,
    "UltrabaseAuthUserCreationFailing": "auth",
    "UltrabaseDatabaseUnreachable": "db",
}
RUNBOOK = re.compile(r"^\{\{ \$externalLabels\.runbook_base \}\}#([a-z_]+)$")
DIAGNOSTICS_URL = ("http://{{ $labels.instance }}/api/instances/{{ $labels.instance_id }}"
                   "/run-diagnostics")


@cache
def _parsed(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load(path: Path) -> Any:
    """The YAML of path (parsed once per session; a copy, free to change)."""
    return copy.deepcopy(_parsed(path))


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load(ALERTS_FILE)["groups"] for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in load(RECORDING_FILE)["groups"] for r in g["rules"] if "record" in r]


def alert_cases() -> list[dict[str, Any]]:
    """Every alert_rule_test of the unit test files."""
    return [case for path in UNIT_TESTS for test in load(path).get("tests") or []
            for case in test.get("alert_rule_test") or []]


def duration_seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


# ---- promtool ------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(PROMETHEUS_DIR)))
def test_promtool_check_config(config: Path) -> None:
    result = run([binary("promtool"), "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    files = sorted(RULES.glob("*.yml"))
    assert {p.name for p in files} == {"alerts.yml", "recording.yml"}
    result = run([binary("promtool"), "check", "rules", *map(str, files)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(unit_test: Path) -> None:
    result = run([binary("promtool"), "test", "rules", unit_test.name], cwd=unit_test.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_load_the_shipped_rule_files() -> None:
    loaded = {(path.parent / f).resolve() for path in UNIT_TESTS
              for f in load(path)["rule_files"]}
    assert loaded == {ALERTS_FILE.resolve(), RECORDING_FILE.resolve()}


# ---- alerting rules ------------------------------------------------------------------------

def test_the_required_alerts_exist() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert set(REQUIRED_ALERTS) <= names, set(REQUIRED_ALERTS) - names


@pytest.mark.parametrize("rule", alert_rules(),
                         ids=lambda r: f"{r['alert']}-{r['labels'].get('severity')}")
def test_alert_labels_and_annotations(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    labels, annotations = rule["labels"], rule["annotations"]
    per_instance, anchors = REQUIRED_ALERTS.get(name, (EXPORTER_WIDE, EXTRA_ANCHORS))
    assert labels["severity"] in ("critical", "warning")
    assert labels["auto_repair"] == "false", "auto repair is opt-in"
    # instance_id comes from the series, never from a static label
    assert "instance_id" not in labels
    if COMPONENT_ALERTS.get(name):
        assert labels["component"] == COMPONENT_ALERTS[name]
    # 30 s .. 1 hour: two evaluations at least (a restart judged healthy again within them
    # does not notify), short enough to act
    assert 30 <= duration_seconds(rule["for"]) <= 3600, rule["for"]

    assert set(annotations) == ({"summary", "description", "runbook_url", "diagnostics_url"}
                                if per_instance else {"summary", "description", "runbook_url"})
    assert "$labels.instance_id" not in annotations["summary"], \
        "notification titles put the instance in front of the summary"
    assert "{{" in annotations["description"], "the description shows values"
    found = RUNBOOK.match(annotations["runbook_url"])
    assert found, annotations["runbook_url"]
    anchor = found.group(1)
    assert anchor in anchors
    assert anchor in {code.lower() for code in CATALOGUE} | EXTRA_ANCHORS
    if per_instance:
        assert annotations["diagnostics_url"] == DIAGNOSTICS_URL


def for_of(alert: str, severity: str) -> float:
    [rule] = [r for r in alert_rules()
              if r["alert"] == alert and r["labels"]["severity"] == severity]
    return duration_seconds(rule["for"])


def test_the_shipped_intervals_meet_the_detection_budget() -> None:
    # A container fault shows on /metrics within 15 s and any other within 60 s (events and
    # the quick probe; bench/detect measures it). From there, with every interval at its
    # worst: scrape, evaluation, `for`, Alertmanager's group_wait -> notified within 90 s
    # and 3 minutes; a heal seen within 60 s resolves after scrape, evaluation and
    # group_interval (a resolution waits for the group's next flush) -> within 3 minutes.
    for config in CONFIGS:
        scrape = duration_seconds(load(config)["global"]["scrape_interval"])
        evaluation = duration_seconds(load(config)["global"]["evaluation_interval"])
        am = load(ALERTMANAGER_DIR / "alertmanager.yml")["route"]
        wait, interval = (duration_seconds(am[k]) for k in ("group_wait", "group_interval"))
        lag = scrape + evaluation
        assert 15 + lag + for_of("UltrabaseInstanceUnhealthy", "critical") + wait <= 90
        assert 60 + lag + for_of("UltrabaseInstanceUnhealthy", "warning") + wait <= 180
        assert 60 + lag + interval <= 180


def test_finer_alerts_never_notify_ahead_of_the_unhealthy_instance() -> None:
    # UltrabaseInstanceUnhealthy inhibits them (alertmanager.yml); firing earlier they
    # would notify before it.
    [rule] = [r for r in load(ALERTMANAGER_DIR / "alertmanager.yml")["inhibit_rules"]
              if 'alertname="UltrabaseInstanceUnhealthy"' in r["source_matchers"]
              and 'severity="critical"' in r["source_matchers"]]
    targets = re.compile(next(m.split("=~", 1)[1].strip('"') for m in rule["target_matchers"]
                              if m.startswith("alertname=~")))
    shortest = min(for_of("UltrabaseInstanceUnhealthy", s) for s in ("critical", "warning"))
    inhibited = [r for r in alert_rules() if targets.fullmatch(r["alert"])]
    assert len(inhibited) >= 7
    for r in inhibited:
        assert duration_seconds(r["for"]) >= shortest, r["alert"]
        same = for_of("UltrabaseInstanceUnhealthy", r["labels"]["severity"])
        assert duration_seconds(r["for"]) >= same, (r["alert"], r["labels"]["severity"])


def test_alerts_of_one_name_differ_by_severity_only() -> None:
    seen: dict[str, set[str]] = {}
    for rule in alert_rules():
        severities = seen.setdefault(rule["alert"], set())
        assert rule["labels"]["severity"] not in severities, f"{rule['alert']} twice"
        severities.add(rule["labels"]["severity"])


def test_alert_expressions_say_what_the_issue_asks() -> None:
    exprs: dict[str, str] = {}
    for rule in alert_rules():
        exprs[rule["alert"]] = exprs.get(rule["alert"], "") + " " + " ".join(rule["expr"].split())
    assert "time() - ultrabase_diagnostic_timestamp_seconds > 900" in \
        exprs["UltrabaseDiagnosticsStale"]
    assert exprs["UltrabaseDockerUnreachable"].strip() == "ultrabase_up == 0"
    assert f'up{{job="{EXPORTER_JOB}"}} == 0' in exprs["UltrabaseExporterDown"]
    assert f'absent(up{{job="{EXPORTER_JOB}"}})' in exprs["UltrabaseExporterDown"]
    assert "< 14 * 86400" in exprs["UltrabaseJwtKeyExpiringSoon"]
    assert "predict_linear(ultrabase_filesystem_avail_bytes[" in exprs["UltrabaseDiskPredictedFull"]
    assert "24 * 3600" in exprs["UltrabaseDiskPredictedFull"]


def test_rules_use_only_metrics_the_exporter_serves() -> None:
    served = set()
    for family in UltrabaseCollector(source=None).families(MetricsSnapshot()):  # type: ignore[arg-type]
        served.add(family.name + ("_total" if family.type == "counter" else ""))
    text = ALERTS_FILE.read_text() + RECORDING_FILE.read_text()
    used = set(re.findall(r"(?<![\w:])ultrabase_[a-z_]+", text))
    assert used, "no metric found"
    assert used <= served, used - served


def test_rules_name_the_jobs_of_the_scrape_configs() -> None:
    jobs = set(re.findall(r'job="([^"]+)"', ALERTS_FILE.read_text()))
    assert jobs == {EXPORTER_JOB, ACTIONS_JOB}
    for config in CONFIGS:
        names = {job["job_name"] for job in load(config)["scrape_configs"]}
        assert jobs <= names, (config, names)


# ---- coverage of the promtool alert tests --------------------------------------------------

@pytest.mark.parametrize("name", sorted({r["alert"] for r in alert_rules()}))
def test_every_alert_fires_and_stays_quiet_in_promtool_tests(name: str) -> None:
    cases = [c for c in alert_cases() if c["alertname"] == name]
    firing = [a for c in cases for a in c.get("exp_alerts") or []]
    assert firing, f"{name}: no promtool case where it fires"
    assert any(not c.get("exp_alerts") for c in cases), f"{name}: no case where it is quiet"
    severities = {r["labels"]["severity"] for r in alert_rules() if r["alert"] == name}
    assert severities <= {a["exp_labels"]["severity"] for a in firing}, \
        f"{name}: a severity variant never fires in the tests"
    per_instance = REQUIRED_ALERTS.get(name, (EXPORTER_WIDE, set()))[0]
    for alert in firing:
        labels, annotations = alert["exp_labels"], alert.get("exp_annotations") or {}
        assert labels["auto_repair"] == "false"
        if per_instance:
            assert labels.get("instance_id"), f"{name}: instance_id not carried"
            assert annotations["diagnostics_url"] == (
                f"http://{labels['instance']}/api/instances/{labels['instance_id']}"
                "/run-diagnostics")
        if name in COMPONENT_ALERTS:
            assert labels.get("component"), f"{name}: component not carried"
        assert annotations, f"{name}: annotations not checked"
        assert annotations["runbook_url"].startswith("#")
        assert annotations["runbook_url"][1:] in REQUIRED_ALERTS.get(name, (0, EXTRA_ANCHORS))[1]


# ---- recording rules -----------------------------------------------------------------------

def test_the_required_recording_rules_exist() -> None:
    records = {r["record"]: r["expr"] for r in recording_rules()}
    for window in ("1d", "7d", "30d"):
        assert f"instance_id:ultrabase_instance_healthy:avg_over_time{window}" in records
        assert f"instance_id_component:ultrabase_component_up:avg_over_time{window}" in records
    assert "count by (severity) (ultrabase_issue_active)" in \
        records["severity:ultrabase_issue_active:count"]
    assert "ultrabase_issue_active" in records["instance_id_severity:ultrabase_issue_active:count"]


def test_uptime_buckets_match_their_group_interval() -> None:
    # Each scraped sample must be counted once: the bucket's range equals the interval.
    for group in load(RECORDING_FILE)["groups"]:
        for rule in group["rules"]:
            bucket = re.search(r"_over_time\(ultrabase_\w+\[(\w+)\]\)", rule["expr"])
            if bucket:
                assert group.get("interval") == bucket.group(1), rule["record"]


def test_every_recording_rule_is_tested() -> None:
    tested = " ".join(case["expr"] for path in UNIT_TESTS
                      for test in load(path).get("tests") or []
                      for case in test.get("promql_expr_test") or [])
    for rule in recording_rules():
        assert re.search(rf"(?<![\w:]){re.escape(rule['record'])}(?![\w:])", tested), \
            rule["record"]


# ---- prometheus.yml ------------------------------------------------------------------------

def scrape_targets(config: dict[str, Any], job: str) -> list[str]:
    [scrape] = [j for j in config["scrape_configs"] if j["job_name"] == job]
    return [t for sc in scrape.get("static_configs") or [] for t in sc["targets"]]


def test_single_host_config_scrapes_both_processes() -> None:
    config = load(PROMETHEUS_DIR / "prometheus.yml")
    assert scrape_targets(config, EXPORTER_JOB) == ["127.0.0.1:9646"]
    assert scrape_targets(config, ACTIONS_JOB) == ["127.0.0.1:9647"]
    assert config["global"]["external_labels"]["runbook_base"].startswith("https://")
    assert sorted(config["rule_files"]) == ["rules/alerts.yml", "rules/recording.yml"]
    alertmanagers = [t for am in config["alerting"]["alertmanagers"]
                     for sc in am["static_configs"] for t in sc["targets"]]
    assert alertmanagers == ["127.0.0.1:9093"]


def test_the_action_api_job_drops_per_instance_series() -> None:
    for path in CONFIGS:
        [job] = [j for j in load(path)["scrape_configs"] if j["job_name"] == ACTIONS_JOB]
        [rule] = job["metric_relabel_configs"]
        assert rule["action"] == "drop" and rule["source_labels"] == ["__name__"]
        pattern = re.compile(rule["regex"])
        for dropped in ("ultrabase_issue_active", "ultrabase_up", "ultrabase_watch_up",
                        "ultrabase_instance_healthy",
                        "ultrabase_diagnostic_timestamp_seconds", "ultrabase_component_up"):
            assert pattern.fullmatch(dropped), dropped
        for kept in ("ultrabase_operations_total", "ultrabase_build_info",
                     "process_resident_memory_bytes"):
            assert not pattern.fullmatch(kept), kept


def test_multi_host_config_discovers_hosts_from_files() -> None:
    directory = PROMETHEUS_DIR / "multi-host"
    config = load(directory / "prometheus.yml")
    for job in (EXPORTER_JOB, ACTIONS_JOB):
        [scrape] = [j for j in config["scrape_configs"] if j["job_name"] == job]
        assert "static_configs" not in scrape
        files = [directory / f for sd in scrape["file_sd_configs"] for f in sd["files"]]
        assert files
        for path in files:
            groups = json.loads(path.read_text())
            assert groups, path
            for group in groups:
                assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", group["labels"]["host"]), group
                assert group["targets"]
    hosts = {json.dumps(sorted(g["labels"]["host"] for g in json.loads(p.read_text())))
             for p in (directory / "targets").glob("*.json")}
    assert len(hosts) == 1, "exporters and action APIs list the same hosts"
    alertmanagers = [t for am in config["alerting"]["alertmanagers"]
                     for sc in am["static_configs"] for t in sc["targets"]]
    assert len(alertmanagers) >= 2, "every peer of the Alertmanager cluster"
    notes = (directory / "README.md").read_text()
    assert "federate" in notes and "remote_write" in notes


def test_documented_auto_repair_opt_in_is_valid_config(tmp_path: Path) -> None:
    source = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# alert_relabel_configs:")
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#"):
            break
        block.append(line.replace("# ", "", 1))
    enabled = "\n".join(lines[:start] + block + lines[start + len(block):])
    config = yaml.safe_load(enabled)
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    [relabel] = config["alerting"]["alert_relabel_configs"]
    assert relabel["target_label"] == "auto_repair" and relabel["replacement"] == "true"
    assert re.fullmatch(relabel["regex"], "UltrabaseJwtKeyExpired;4a3c9fac")
    assert not re.fullmatch(relabel["regex"], "UltrabaseJwtKeyExpired;0badc0de")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run([binary("promtool"), "check", "config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# ---- a real Prometheus: annotations with the external label ---------------------------------

class _Exposition(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def fake_exporter() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 serving a fixed ultrabase_* exposition."""
    now = time.time()
    handler = type("Handler", (_Exposition,), {"body": "\n".join([
        "ultrabase_up 1",
        'ultrabase_instance_info{instance_id="4a3c9fac",instance_name="shop",owner="alice"} 1',
        'ultrabase_instance_healthy{instance_id="4a3c9fac"} 0',
        f'ultrabase_diagnostic_timestamp_seconds{{instance_id="4a3c9fac"}} {now:.0f}',
        'ultrabase_issue_active{instance_id="4a3c9fac",code="JWT_KEY_EXPIRED",'
        'severity="critical",component="auth"} 1',
        'ultrabase_jwt_expiry_timestamp_seconds{instance_id="4a3c9fac",role="service_role"} '
        f"{now - 3600:.0f}",
        "",
    ]).encode()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_prometheus_renders_runbook_and_diagnostics_urls(tmp_path: Path,
                                                         fake_exporter: int) -> None:
    prometheus = binary("prometheus")
    config = load(PROMETHEUS_DIR / "prometheus.yml")
    base = config["global"]["external_labels"]["runbook_base"]
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    config.pop("alerting")
    target = f"127.0.0.1:{fake_exporter}"
    [exporter_job] = [j for j in config["scrape_configs"] if j["job_name"] == EXPORTER_JOB]
    exporter_job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [exporter_job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    with server(args, ready_url=f"{url}/-/ready", log=tmp_path / "prometheus.log"):
        def pending() -> dict[str, dict[str, str]] | None:
            alerts = http_json(f"{url}/api/v1/alerts")["data"]["alerts"]
            found = {a["labels"]["alertname"]: a["annotations"] for a in alerts}
            wanted = {"UltrabaseJwtKeyExpired", "UltrabaseInstanceUnhealthy"}
            return found if wanted <= set(found) else None

        found = wait_for(pending, timeout=20, what="the alerts to be pending")
    expired = found["UltrabaseJwtKeyExpired"]
    assert expired["runbook_url"] == f"{base}#jwt_key_expired"
    assert expired["diagnostics_url"] == \
        f"http://{target}/api/instances/4a3c9fac/run-diagnostics"
    assert "expired 1h 0m" in expired["description"]
    unhealthy = found["UltrabaseInstanceUnhealthy"]
    assert unhealthy["runbook_url"] == f"{base}#runbook"
    assert "Instance 4a3c9fac (shop) has critical issues" in unhealthy["description"]
    assert "JWT_KEY_EXPIRED [auth]" in unhealthy["description"]
