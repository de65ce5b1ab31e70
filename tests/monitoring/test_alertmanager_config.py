"""alertmanager/: configuration, routing, inhibition, templates and the two-peer cluster.

amtool checks the configuration and routes every case of alertmanager/tests/routes.yml
(and, merged with cluster/actions-per-host.yml, of routes-multi-host.yml); a small walker of
the routing tree, held to amtool's answers, shows that every route is taken by some case
and what each notification groups by. A real Alertmanager receives the alerts of
alertmanager/tests/inhibitions.yml and must hold back exactly the ones marked inhibited;
amtool renders the notification templates; two real peers started with the flags of
cluster/peer-*.default must find each other and share a silence.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

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

CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
CASES_DIR = ALERTMANAGER_DIR / "tests"
CLUSTER_DIR = ALERTMANAGER_DIR / "cluster"
ACTIONS_URL = "http://127.0.0.1:9647/api/alerts"
ALERTMANAGER_NAMES = ("prometheus-alertmanager", "alertmanager")


@cache
def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def config() -> dict[str, Any]:
    return copy.deepcopy(load(CONFIG))


def amtool(*args: str) -> str:
    result = run([binary("amtool"), *args])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_config(path: Path) -> str:
    return amtool("check-config", str(path))


# ---- the routing tree, walked the way Alertmanager does -----------------------------------

_MATCHER = re.compile(r'^\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


def matcher_holds(matcher: str, labels: dict[str, str]) -> bool:
    parsed = _MATCHER.match(matcher)
    assert parsed, f"unsupported matcher {matcher!r}"
    name, op, value = parsed.groups()
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None
    return found if op == "=~" else not found


@dataclass
class Route:
    path: str
    receiver: str
    group_by: list[str]
    matchers: list[str]
    continue_: bool
    children: list[Route] = field(default_factory=list)

    @classmethod
    def build(cls, raw: dict[str, Any], parent: Route | None = None,
              path: str = "route") -> Route:
        assert not {"match", "match_re"} & set(raw), f"{path}: use matchers"
        node = cls(path=path,
                   receiver=raw.get("receiver") or (parent.receiver if parent else ""),
                   group_by=list(raw.get("group_by") or (parent.group_by if parent else [])),
                   matchers=list(raw.get("matchers") or []),
                   continue_=bool(raw.get("continue", False)))
        node.children = [cls.build(child, node, f"{path}.routes[{i}]")
                         for i, child in enumerate(raw.get("routes") or [])]
        return node

    def walk(self, labels: dict[str, str]) -> list[Route]:
        """The routes that take an alert with labels, in order (continue included)."""
        if not all(matcher_holds(m, labels) for m in self.matchers):
            return []
        taken: list[Route] = []
        for child in self.children:
            found = child.walk(labels)
            taken.extend(found)
            if found and not child.continue_:
                break
        return taken or [self]

    def all(self) -> Iterator[Route]:
        yield self
        for child in self.children:
            yield from child.all()


def route_cases(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load(CASES_DIR / name)
    return cases


def amtool_receivers(config_file: Path, case: dict[str, Any]) -> list[str]:
    labels = [f"{k}={json.dumps(str(v))}" for k, v in case["labels"].items()]
    out = amtool("config", "routes", "test", f"--config.file={config_file}",
                 f"--verify.receivers={','.join(case['receivers'])}", *labels)
    return out.strip().split(",")


def check_route_case(config_file: Path, tree: Route, case: dict[str, Any]) -> list[Route]:
    assert amtool_receivers(config_file, case) == case["receivers"]
    taken = tree.walk({k: str(v) for k, v in case["labels"].items()})
    assert [r.receiver for r in taken] == case["receivers"], "the walker disagrees with amtool"
    assert taken[-1].group_by == case["group_by"]
    return taken


# ---- configuration -------------------------------------------------------------------------

def test_amtool_check_config() -> None:
    out = check_config(CONFIG)
    assert "SUCCESS" in out and "4 inhibit rules" in out
    templates = [p for pattern in config()["templates"]
                 for p in ALERTMANAGER_DIR.glob(pattern)]
    assert templates, "the templates glob matches no file"


def test_every_receiver_is_routed_and_every_route_has_a_receiver() -> None:
    cfg = config()
    defined = {r["name"] for r in cfg["receivers"]}
    used = {r.receiver for r in Route.build(cfg["route"]).all()}
    assert used == defined


def test_receivers_are_ready_to_fill_in_with_secrets_in_files() -> None:
    receivers = {r["name"]: r for r in config()["receivers"]}
    kinds = {k for r in receivers.values() for k in r if k.endswith("_configs")}
    assert {"webhook_configs", "email_configs", "slack_configs", "telegram_configs"} <= kinds
    for receiver in receivers.values():
        for slack in receiver.get("slack_configs") or []:
            assert "api_url" not in slack and slack["api_url_file"].startswith("/")
        for email in receiver.get("email_configs") or []:
            assert "auth_password" not in email and email["auth_password_file"].startswith("/")
            assert "ultrabase.email.html" in email["html"]
        for hook in receiver.get("webhook_configs") or []:
            auth = hook["http_config"]["authorization"]
            assert "credentials" not in auth and auth["credentials_file"].startswith("/")
        for telegram in receiver.get("telegram_configs") or []:
            # Alertmanager 0.25 (Debian 12) has no bot_token_file: a placeholder only.
            assert "REPLACE" in telegram.get("bot_token", "REPLACE")
            assert telegram["parse_mode"] == "HTML"


def test_action_api_receiver_and_route() -> None:
    cfg = config()
    [actions] = [r for r in cfg["receivers"] if r["name"] == "ultrabase-actions"]
    [hook] = actions["webhook_configs"]
    assert hook["url"] == ACTIONS_URL
    assert hook["http_config"]["authorization"]["credentials_file"]
    assert hook["send_resolved"] is False
    first = cfg["route"]["routes"][0]
    assert first["receiver"] == "ultrabase-actions"
    assert first["matchers"] == ['auto_repair="true"']
    assert first["continue"] is True, "opted-in alerts must still notify people"


def test_notifications_group_by_alertname_and_instance() -> None:
    assert config()["route"]["group_by"] == ["alertname", "host", "instance_id"]


# ---- routing -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", route_cases("routes.yml"), ids=lambda c: c["name"])
def test_route(case: dict[str, Any]) -> None:
    check_route_case(CONFIG, Route.build(config()["route"]), case)


def test_every_route_is_taken_by_a_case() -> None:
    tree = Route.build(config()["route"])
    taken = {r.path for case in route_cases("routes.yml")
             for r in tree.walk({k: str(v) for k, v in case["labels"].items()})}
    # A route with children is taken through them or, when none matches, itself.
    leaves = {r.path for r in tree.all() if not r.children}
    assert leaves <= taken, leaves - taken
    assert tree.path in taken, "no case falls through to the root route"


def test_every_severity_of_the_rules_has_a_route() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())
    severities = {r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}
    matchers = {m for r in config()["route"]["routes"] for m in r.get("matchers") or []}
    assert {f'severity="{s}"' for s in severities} <= matchers


@pytest.fixture(scope="module")
def multi_host_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alertmanager.yml with cluster/actions-per-host.yml merged as its comments say."""
    cfg = config()
    extra = load(CLUSTER_DIR / "actions-per-host.yml")
    [auto] = [r for r in cfg["route"]["routes"] if r.get("matchers") == ['auto_repair="true"']]
    auto["routes"] = extra["routes"]
    cfg["receivers"] += extra["receivers"]
    cfg["templates"] = [str(ALERTMANAGER_DIR / t) for t in cfg["templates"]]
    path = tmp_path_factory.mktemp("am-multi-host") / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg))
    check_config(path)
    return path


@pytest.mark.parametrize("case", route_cases("routes-multi-host.yml"), ids=lambda c: c["name"])
def test_multi_host_route(case: dict[str, Any], multi_host_config: Path) -> None:
    tree = Route.build(yaml.safe_load(multi_host_config.read_text())["route"])
    check_route_case(multi_host_config, tree, case)


# ---- inhibition, on a real Alertmanager ----------------------------------------------------

INHIBITION_CASES = load(CASES_DIR / "inhibitions.yml")


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager with alertmanager.yml (no gossip); its base URL."""
    executable = binary(*ALERTMANAGER_NAMES)
    tmp = tmp_path_factory.mktemp("alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [executable, f"--config.file={CONFIG}", f"--storage.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    with server(args, ready_url=f"{url}/-/ready", log=tmp / "alertmanager.log"):
        yield url


def case_labels(index: int, labels: dict[str, str]) -> dict[str, str]:
    full = {"job": "ultrabase-doctor-exporter", "auto_repair": "false", **labels}
    full["instance"] = f"case{index}-{labels.get('instance', 'a')}:9646"
    return full


@pytest.mark.parametrize("index", range(len(INHIBITION_CASES)),
                         ids=[c["name"] for c in INHIBITION_CASES])
def test_inhibition(index: int, alertmanager: str) -> None:
    case = INHIBITION_CASES[index]
    alerts = [(case_labels(index, a["labels"]), a["inhibited"]) for a in case["alerts"]]
    now = dt.datetime.now(dt.UTC).isoformat()
    http_json(f"{alertmanager}/api/v2/alerts",
              [{"labels": labels, "annotations": {"summary": "test"}, "startsAt": now}
               for labels, _ in alerts])
    expected = {json.dumps(labels, sort_keys=True): inhibited for labels, inhibited in alerts}

    def states() -> dict[str, bool] | None:
        listed = http_json(f"{alertmanager}/api/v2/alerts?active=true&silenced=true"
                           "&inhibited=true&unprocessed=true")
        found = {json.dumps(a["labels"], sort_keys=True): bool(a["status"]["inhibitedBy"])
                 for a in listed}
        mine = {k: v for k, v in found.items() if k in expected}
        return mine if mine == expected else None

    try:
        wait_for(states, timeout=5, what="the inhibitions to settle")
    except AssertionError:
        listed = http_json(f"{alertmanager}/api/v2/alerts")
        got = {json.dumps(a["labels"], sort_keys=True): bool(a["status"]["inhibitedBy"])
               for a in listed}
        wrong = {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
        pytest.fail("alert: (expected inhibited, got)\n" + "\n".join(
            f"{k}: {v}" for k, v in wrong.items()))


# ---- templates -----------------------------------------------------------------------------

def render(template: str, data: Path, kind: str = "text") -> str:
    return amtool("template", "render", f"--template.glob={ALERTMANAGER_DIR}/templates/*.tmpl",
                  f"--template.data={data}", f"--template.type={kind}",
                  f"--template.text={{{{ template {json.dumps(template)} . }}}}")


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    instance_id = labels.get("instance_id")
    annotations = {"summary": labels.pop("summary"), "description": labels.pop("description"),
                   "runbook_url": labels.pop("runbook_url")}
    if instance_id:
        annotations["diagnostics_url"] = \
            f"http://127.0.0.1:9646/api/instances/{instance_id}/run-diagnostics"
    return {"status": status, "labels": {"instance": "127.0.0.1:9646", **labels},
            "annotations": annotations, "startsAt": "2026-11-30T01:00:00Z",
            "endsAt": "2026-11-30T01:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": "0"}


def group(tmp_path: Path, *alerts: dict[str, Any]) -> Path:
    """Notification data for a group of alerts, as Alertmanager computes it."""
    def common(key: str) -> dict[str, str]:
        first = alerts[0][key]
        return {k: v for k, v in first.items() if all(a[key].get(k) == v for a in alerts)}

    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    data = {"receiver": "ultrabase-critical", "status": status, "alerts": list(alerts),
            "groupLabels": {}, "commonLabels": common("labels"),
            "commonAnnotations": common("annotations"), "externalURL": "http://127.0.0.1:9093"}
    path = tmp_path / f"data-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(data))
    return path


BASE = "https://github.com/your-org/ultrabase-doctor/blob/main/docs/runbook.md"


def test_example_data_renders_in_every_channel() -> None:
    data = CASES_DIR / "template-data.json"
    example = json.loads(data.read_text())
    firing = [a for a in example["alerts"] if a["status"] == "firing"]
    title = render("ultrabase.title", data)
    assert title == ("[FIRING:2 critical] 4a3c9fac: Component db is down; "
                     "Component auth is down")
    bodies = {
        "slack": render("ultrabase.slack.text", data),
        "telegram": render("ultrabase.telegram.message", data),
        "email": render("ultrabase.email.text", data),
        "html": render("ultrabase.email.html", data, "html"),
    }
    for channel, body in bodies.items():
        for a in example["alerts"]:
            assert a["annotations"]["description"] in body, channel
        runbook = firing[0]["annotations"]["runbook_url"]
        diagnostics = firing[0]["annotations"]["diagnostics_url"]
        if channel == "slack":
            assert f"<{runbook}|Runbook>" in body and f"<{diagnostics}|Run diagnostics>" in body
        elif channel in ("telegram", "html"):
            assert f'<a href="{runbook}">Runbook</a>' in body
            assert f'<a href="{diagnostics}">Run diagnostics</a>' in body
        else:
            assert f"Runbook: {runbook}" in body and f"Diagnostics: {diagnostics}" in body
    assert bodies["telegram"].startswith(f"<b>{title}</b>")
    assert bodies["email"].startswith(title)
    assert "Resolved:\nComponent kong is down" in bodies["email"]
    assert "resolved" in bodies["slack"].split("Component kong is down")[1].splitlines()[0]
    assert f"<title>{title}</title>" in bodies["html"]


def test_titles_name_the_instance_or_the_host(tmp_path: Path) -> None:
    one = group(tmp_path, alert(alertname="UltrabaseDatabaseUnreachable", severity="critical",
                                instance_id="4a3c9fac", component="db",
                                summary="Database unreachable", description="d",
                                runbook_url=f"{BASE}#db_unreachable"))
    assert render("ultrabase.title", one) == \
        "[FIRING:1 critical] 4a3c9fac: Database unreachable"

    disk = [alert(alertname="UltrabaseDiskSpaceLow", severity="warning", host="docker-a",
                  instance_id=i, summary="Disk space low", description=f"{i} low",
                  runbook_url=f"{BASE}#disk_space_low") for i in ("4a3c9fac", "77e0d1b2")]
    assert render("ultrabase.title", group(tmp_path, *disk)) == \
        "[FIRING:2 warning] docker-a/127.0.0.1:9646: Disk space low"

    docker = alert("resolved", alertname="UltrabaseDockerUnreachable", severity="critical",
                   summary="Docker engine unreachable", description="d",
                   runbook_url=f"{BASE}#docker_unreachable")
    data = group(tmp_path, docker)
    assert render("ultrabase.title", data) == \
        "[RESOLVED critical] 127.0.0.1:9646: Docker engine unreachable"
    assert "Diagnostics:" not in render("ultrabase.email.text", data)


def test_email_html_escapes_what_it_shows(tmp_path: Path) -> None:
    data = group(tmp_path, alert(alertname="UltrabaseInstanceUnhealthy", severity="warning",
                                 instance_id="4a3c9fac", summary="Instance unhealthy",
                                 description="<script>x</script> & more",
                                 runbook_url=f"{BASE}#runbook"))
    html = render("ultrabase.email.html", data, "html")
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt; &amp; more" in html


# ---- the two-peer cluster example ----------------------------------------------------------

def peer_args(path: Path) -> list[str]:
    [line] = [ln for ln in path.read_text().splitlines() if ln.startswith("ARGS=")]
    return shlex.split(line.removeprefix("ARGS="))[0].split()


def test_cluster_peers_name_each_other() -> None:
    one, two = peer_args(CLUSTER_DIR / "peer-1.default"), peer_args(CLUSTER_DIR / "peer-2.default")

    def flag(args: list[str], name: str) -> str:
        [value] = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
        return value

    assert flag(one, "cluster.peer") == flag(two, "cluster.listen-address")
    assert flag(two, "cluster.peer") == flag(one, "cluster.listen-address")
    for args in (one, two):
        assert flag(args, "cluster.advertise-address") == flag(args, "cluster.listen-address")
        assert flag(args, "config.file") == "/etc/prometheus/alertmanager.yml"


def test_two_peers_form_a_cluster_and_share_silences(tmp_path: Path) -> None:
    executable = binary(*ALERTMANAGER_NAMES)
    peers = [peer_args(CLUSTER_DIR / f"peer-{n}.default") for n in (1, 2)]
    # the example's addresses, mapped to free ports on loopback
    addresses = {a.split("=", 1)[1] for args in peers for a in args
                 if a.startswith(("--web.listen-address=", "--cluster.listen-address="))}
    local = {address: f"127.0.0.1:{free_port()}" for address in sorted(addresses)}

    def localise(args: list[str], n: int) -> list[str]:
        out = []
        for arg in args:
            name, _, value = arg.partition("=")
            if name == "--config.file":
                value = str(CONFIG)
            elif name == "--storage.path":
                value = str(tmp_path / f"peer-{n}")
            else:
                for example, here in local.items():
                    value = value.replace(example, here)
            out.append(f"{name}={value}")
        return [executable, *out, "--cluster.settle-timeout=2s",
                "--cluster.reconnect-interval=1s"]

    urls = []
    for n, args in enumerate(peers, 1):
        [web] = [a.split("=", 1)[1] for a in localise(args, n) if a.startswith("--web.listen")]
        urls.append(f"http://{web}")
    with server(localise(peers[0], 1), ready_url=f"{urls[0]}/-/ready",
                log=tmp_path / "peer-1.log"), \
         server(localise(peers[1], 2), ready_url=f"{urls[1]}/-/ready",
                log=tmp_path / "peer-2.log"):
        for url in urls:
            def both_peers(url: str = url) -> bool | None:
                status = http_json(f"{url}/api/v2/status")
                return True if len(status["cluster"].get("peers") or []) == 2 else None

            wait_for(both_peers, timeout=15, what=f"{url} to see both peers")
        now = dt.datetime.now(dt.UTC)
        silence = http_json(f"{urls[0]}/api/v2/silences", {
            "matchers": [{"name": "instance_id", "value": "4a3c9fac", "isRegex": False}],
            "startsAt": now.isoformat(), "endsAt": (now + dt.timedelta(minutes=10)).isoformat(),
            "createdBy": "test", "comment": "cluster test"})
        wait_for(lambda: True if any(s["id"] == silence["silenceID"] for s in http_json(
            f"{urls[1]}/api/v2/silences")) else None, timeout=15,
            what="the silence to reach the second peer")
