"""The YAML configuration: its schema, defaults, environment overrides and validation."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from exporter.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/ultrabase-doctor/config.yaml")
CONFIG_PATH_ENV = "ULTRABASE_DOCTOR_CONFIG"

# Secrets (and the Docker endpoint, which containers set per service) may live in the
# environment instead of the file; the variable wins. Each may also be given as a file
# named by VARIABLE_FILE (a compose secret under /run/secrets, say), so that the secret sits
# in no container's environment, which anyone who can inspect the container reads.
ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = {
    "ULTRABASE_DOCTOR_MANAGER_JWT_SECRET": ("api", "manager_jwt", "secret"),
    "ULTRABASE_DOCTOR_ALERTMANAGER_PASSWORD": ("alertmanager", "password"),
    "ULTRABASE_DOCTOR_DOCKER_BASE_URL": ("docker", "base_url"),
    "ULTRABASE_DOCTOR_CONSOLE_SECRET": ("console", "secret_key"),
}

# Match ids with fullmatch(): `$` alone also matches before a trailing newline.
INSTANCE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# A manager JWT secret shorter than this can be brute-forced offline from one token.
MIN_MANAGER_SECRET_BYTES = 32
# Secrets published with the software they configure: anyone holding one can mint an admin
# token. The Ultrabase manager falls back to the first (fernandinhomartins40/ultrabase
# src/server.js: `process.env.JWT_SECRET || 'ultrabase_jwt_secret_change_in_production'`);
# the second is supabase/docker's .env.example JWT_SECRET, the third this project's example.
PUBLIC_MANAGER_SECRETS = frozenset({
    "ultrabase_jwt_secret_change_in_production",
    "your-super-secret-jwt-token-with-at-least-32-characters-long",
    "set-me-or-use-the-environment",
})

Seconds = Annotated[float, Field(gt=0, le=86400)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    """Base of every config section: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UltrabaseConfig(_Section):
    """Where the Ultrabase manager keeps its registry and instance files."""

    registry: Path | None = None
    core_dir: Path | None = None
    users_file: Path | None = None


class StaticInstance(_Section):
    """An instance named in the config instead of discovered."""

    id: str
    name: str | None = None
    owner: str | None = None
    compose_project: str | None = None
    gateway_url: str | None = None
    db_port: Port | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not INSTANCE_ID_PATTERN.fullmatch(value):
            raise ValueError("must match ^[a-z0-9][a-z0-9_-]{0,62}$")
        return value


class DiscoveryConfig(_Section):
    """Which discovery sources are on."""

    sources: tuple[Literal["ultrabase", "compose", "static"], ...] = ("ultrabase", "compose")
    static: tuple[StaticInstance, ...] = ()


class DockerConfig(_Section):
    """How to reach the Docker engine and compose."""

    base_url: str = "unix:///var/run/docker.sock"
    timeout_seconds: Seconds = 5.0
    # None: find `docker compose` or `docker-compose` on PATH.
    compose_command: tuple[str, ...] | None = None


class Thresholds(_Section):
    """Limits above or below which a check raises an issue."""

    disk_low_free_percent: Annotated[float, Field(ge=0, le=100)] = 15.0
    disk_critical_free_percent: Annotated[float, Field(ge=0, le=100)] = 5.0
    db_connections_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8
    jwt_expiry_warning_days: Annotated[int, Field(ge=0, le=3650)] = 30
    endpoint_slow_seconds: Seconds = 2.0
    logs_oversized_bytes: Annotated[int, Field(gt=0)] = 512 * 1024 * 1024
    log_error_spike: Annotated[int, Field(gt=0)] = 20


class DiagnosticsConfig(_Section):
    """How diagnostics run, are cached and are limited."""

    timeout_seconds: Seconds = 5.0
    cache_ttl_seconds: Seconds = 300.0
    rate_limit_seconds: Annotated[float, Field(ge=0, le=86400)] = 120.0
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # The synthetic user test writes to GoTrue's audit log; scheduled sweeps run it at most
    # this often per instance (on-demand runs always include it).
    synthetic_user_interval_seconds: Annotated[float, Field(ge=0)] = 3600.0
    log_window_seconds: Seconds = 900.0
    log_max_lines: Annotated[int, Field(ge=10, le=100_000)] = 1000
    thresholds: Thresholds = Thresholds()


class ScheduleConfig(_Section):
    """The global sweep."""

    enabled: bool = True
    sweep_interval_seconds: Annotated[float, Field(ge=10, le=86400)] = 300.0
    # Per-instance schedules (PUT .../schedule) may not run more often than this: each run
    # is a full diagnostic, synthetic user included.
    min_instance_interval_seconds: Annotated[float, Field(ge=60, le=86400)] = 900.0


class WatchConfig(_Section):
    """Detection between sweeps: Docker's event stream and the quick probe."""

    # Follow the engine's container events (die, stop, pause, health_status, ...) and
    # diagnose the affected instance at once.
    events: bool = True
    # A burst of events for one instance is one diagnostic: it starts this long after the
    # burst's last event, but no later than event_max_delay_seconds after its first.
    event_settle_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0
    event_max_delay_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    # At most one event-triggered diagnostic per instance this often (a crash loop sends
    # events for as long as it lasts).
    event_min_gap_seconds: Annotated[float, Field(ge=0, le=3600)] = 10.0
    # After a container (re)starts, an instance still unhealthy is looked at again (at most
    # every event_min_gap_seconds) for this long: rest and kong have no healthcheck whose
    # event would say when they answer.
    start_grace_seconds: Annotated[float, Field(ge=0, le=600)] = 60.0
    # Reconnecting to a broken event stream backs off up to this long between attempts.
    reconnect_max_seconds: Annotated[float, Field(ge=1, le=600)] = 30.0
    # The quick probe: one container listing and a few gateway requests per instance; a
    # full diagnostic runs only where what it sees differs from the latest diagnostic.
    probe: bool = True
    probe_interval_seconds: Annotated[float, Field(ge=5, le=3600)] = 30.0
    # Its requests through each instance's gateway: auth (GoTrue's health, anon key), rest
    # (PostgREST with the anon key as Bearer), admin (one page of GoTrue's admin user list
    # with the service key: it reads the database). Each is cheap for the real services;
    # rest and admin cost the test fleet's stand-ins 10-25 ms of CPU per instance and round.
    probe_requests: tuple[Literal["auth", "rest", "admin"], ...] = ("auth",)


class StoreConfig(_Section):
    """The SQLite store shared by the exporter and the action API."""

    path: Path = Path("/var/lib/ultrabase-doctor/store.sqlite3")
    history_limit: Annotated[int, Field(ge=1, le=10_000)] = 100
    # Audit entries and finished operations older than this are deleted (by the exporter's
    # sweep, and by the action API once an hour as operations end).
    audit_retention_days: Annotated[int, Field(ge=1, le=3650)] = 90
    operations_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    # What one request may read: the largest `limit` of diagnostic-history, and the newest
    # diagnostics a health report reads (each is a full diagnostic, 5-10 KB of JSON).
    max_history_limit: Annotated[int, Field(ge=1, le=10_000)] = 500
    max_report_diagnostics: Annotated[int, Field(ge=10, le=10_000)] = 2016


class TokenConfig(_Section):
    """An API token, kept only as its SHA-256."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    # webhook: Alertmanager's token, which may call POST /api/alerts and nothing else.
    role: Literal["viewer", "operator", "admin", "webhook"]
    instances: tuple[str, ...] = ("*",)


class ManagerJwtConfig(_Section):
    """Acceptance of the Ultrabase manager's own HS256 JWTs."""

    secret: SecretStr | None = None
    users_file: Path | None = None


class ApiConfig(_Section):
    """Access control and request limits shared by both HTTP services."""

    tokens: tuple[TokenConfig, ...] = ()
    manager_jwt: ManagerJwtConfig | None = None
    protect_metrics: bool = False
    # Largest request body taken, by the WSGI server and by Flask alike; a request that
    # does not authenticate gets no body read at all.
    max_body_bytes: Annotated[int, Field(ge=4096, le=64 * 1024 * 1024)] = 1024 * 1024


class ListenConfig(_Section):
    """Where one HTTP service listens."""

    host: str = "127.0.0.1"
    port: Port


class ActionsConfig(_Section):
    """The action API: where it listens and how operations behave."""

    host: str = "127.0.0.1"
    port: Port = 9647
    backups_dir: Path = Path("/var/lib/ultrabase-doctor/backups")
    backup_retention: Annotated[int, Field(ge=1, le=1000)] = 10
    stop_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    health_timeout_seconds: Annotated[float, Field(gt=0, le=1800)] = 120.0
    # After a restart, how long quick_health may take to come clean: components without a
    # healthcheck (rest, kong) are up once they run, and answer a moment later.
    settle_seconds: Annotated[float, Field(ge=0, le=600)] = 30.0
    # How long a repair re-runs the checks that raised its issues until they are gone (at
    # most health_timeout_seconds).
    verify_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    auto_repair_budget_per_hour: Annotated[int, Field(ge=0, le=100)] = 3
    # `?wait=true` requests blocked at once, in total and per caller. Each holds one of the
    # 8 worker threads, so at most half can wait: /healthz, /metrics and the webhook always
    # find a free one. A wait beyond either limit answers at once, as without ?wait.
    max_waits: Annotated[int, Field(ge=0, le=4)] = 4
    max_waits_per_caller: Annotated[int, Field(ge=1, le=4)] = 2
    # flask-limiter syntax, per token and per instance on mutating routes.
    rate_limit: Annotated[str, Field(min_length=3, max_length=64)] = "30/minute"

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("must be a rate like '30/minute' or '10 per second'") from None
        return value


class ConsoleConfig(_Section):
    """The operator console served at / of the action API."""

    enabled: bool = True
    # Signs the session cookie. Unset: a random key kept in console_secret beside the store.
    secret_key: Annotated[SecretStr, Field(min_length=32)] | None = None
    # None: Secure when the request came over https (behind a proxy: set true).
    secure_cookie: bool | None = None
    session_hours: Annotated[float, Field(gt=0, le=720)] = 12.0
    # The instance's Grafana dashboard is linked when set, e.g. http://127.0.0.1:3000.
    grafana_url: Annotated[str, Field(pattern=r"^https?://[^\s\"'<>]+$")] | None = None
    # Base of the runbook links (docs/runbook.md); unset: the console's own /runbook page.
    runbook_url: Annotated[str, Field(pattern=r"^https?://[^\s\"'<>#]+$")] | None = None


class AlertmanagerConfig(_Section):
    """Where silences are created during planned operations."""

    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None


class Config(_Section):
    """The whole configuration."""

    ultrabase: UltrabaseConfig = UltrabaseConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    docker: DockerConfig = DockerConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    watch: WatchConfig = WatchConfig()
    store: StoreConfig = StoreConfig()
    api: ApiConfig = ApiConfig()
    exporter: ListenConfig = ListenConfig(port=9646)
    actions: ActionsConfig = ActionsConfig()
    console: ConsoleConfig = ConsoleConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()


def resolve_config_path(explicit: str | os.PathLike[str] | None,
                        environ: Mapping[str, str] = os.environ) -> Path:
    """The config path: the argument, else $ULTRABASE_DOCTOR_CONFIG, else the default."""
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_PATH_ENV):
        return Path(environ[CONFIG_PATH_ENV])
    return DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str],
                environ: Mapping[str, str] = os.environ) -> Config:
    """Read, override from the environment and validate; every problem reported at once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return parse_config(raw, environ=environ, source=str(path))


def parse_config(raw: Mapping[str, Any], *, environ: Mapping[str, str] = os.environ,
                 source: str = "<config>") -> Config:
    """Validate a config mapping (after environment overrides)."""
    data = _apply_env_overrides(raw, environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = tuple(_describe(err) for err in exc.errors())
        raise ConfigError(f"invalid config in {source}:", problems) from None
    _check_consistency(config, source)
    return config


def _apply_env_overrides(raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    # A section whose keys are all commented out parses as None: it means "defaults".
    data: dict[str, Any] = {k: _deep_copy(v) for k, v in raw.items() if v is not None}
    for variable, keys in ENV_OVERRIDES.items():
        value = environ.get(variable) or _secret_file(variable, environ.get(f"{variable}_FILE"))
        if not value:
            continue
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return data


# A secret file larger than this is not a secret but a mistake (a directory listing, a key
# store): refused rather than read into memory.
MAX_SECRET_FILE_BYTES = 64 * 1024


def _secret_file(variable: str, path: str | None) -> str | None:
    """The content of the file VARIABLE_FILE names, without its final line break."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{variable}_FILE: cannot read {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{variable}_FILE: {path} is larger than "
                          f"{MAX_SECRET_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8").rstrip("\r\n") or None
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}_FILE: {path} is not UTF-8 text") from None


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _describe(error: Mapping[str, Any]) -> str:
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    if error["type"] == "missing":
        return f"{path}: required key missing"
    # Never echo the input: it may be a secret.
    return f"{path}: {error['msg']}"


def manager_secret_problem(secret: str) -> str | None:
    """Why `secret` must not sign manager JWTs the doctor accepts, or None when it may."""
    if not secret:
        return "must not be empty"
    if secret in PUBLIC_MANAGER_SECRETS or secret.strip().lower() in PUBLIC_MANAGER_SECRETS:
        return ("is a publicly known default: anyone could sign an admin token with it; "
                "set the manager's JWT_SECRET to a random value (e.g. openssl rand -hex 32) "
                "and use the same value here")
    if len(secret.encode("utf-8")) < MIN_MANAGER_SECRET_BYTES:
        return (f"is shorter than {MIN_MANAGER_SECRET_BYTES} bytes: a token signed with it "
                "can be brute-forced offline; use a random value (e.g. openssl rand -hex 32)")
    return None


def _check_consistency(config: Config, source: str) -> None:
    """Raise ConfigError listing every rule across sections that config breaks."""
    problems = [*_secret_problems(config), *_ordering_problems(config),
                *_token_problems(config), *_source_problems(config)]
    if problems:
        raise ConfigError(f"invalid config in {source}:", tuple(problems))


def _secret_problems(config: Config) -> Iterator[str]:
    manager = config.api.manager_jwt
    if manager is not None and manager.secret is not None:
        problem = manager_secret_problem(manager.secret.get_secret_value())
        if problem is not None:
            # Named with its variable too: the value usually comes from the environment.
            yield f"api.manager_jwt.secret (or ULTRABASE_DOCTOR_MANAGER_JWT_SECRET): {problem}"


def _ordering_problems(config: Config) -> Iterator[str]:
    """Pairs of settings where one must not pass the other."""
    thresholds = config.diagnostics.thresholds
    if thresholds.disk_critical_free_percent > thresholds.disk_low_free_percent:
        yield ("diagnostics.thresholds.disk_critical_free_percent: must not exceed "
               "disk_low_free_percent")
    watch = config.watch
    if watch.event_max_delay_seconds < watch.event_settle_seconds:
        yield "watch.event_max_delay_seconds: must not be less than event_settle_seconds"


def _token_problems(config: Config) -> Iterator[str]:
    names = [t.name for t in config.api.tokens]
    for name in sorted({n for n in names if names.count(n) > 1}):
        yield f"api.tokens: name {name!r} is used more than once"
    for i, token in enumerate(config.api.tokens):
        for scope in token.instances:
            if scope != "*" and not INSTANCE_ID_PATTERN.fullmatch(scope):
                yield f"api.tokens[{i}].instances: {scope!r} is not an instance id"


def _source_problems(config: Config) -> Iterator[str]:
    """Discovery sources switched on without what they read."""
    if "static" in config.discovery.sources and not config.discovery.static:
        yield "discovery.static: the static source is on but lists no instance"
    if "ultrabase" in config.discovery.sources and config.ultrabase.registry is None:
        yield "ultrabase.registry: required when the ultrabase source is on"
