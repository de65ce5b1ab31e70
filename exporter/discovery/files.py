"""Reading an instance's rendered files: env file, compose file and kong.yml."""

from __future__ import annotations

import io
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values

from exporter.safefs import SymlinkRefused, lstat_under, read_bytes, within

# Credential fields, as read from each service's environment.
_SERVICE_ENV_FIELDS: Mapping[str, Mapping[str, str]] = {
    "auth": {"GOTRUE_JWT_SECRET": "jwt_secret", "GOTRUE_DB_DATABASE_URL": "postgres_password"},
    "rest": {"PGRST_JWT_SECRET": "jwt_secret", "PGRST_DB_URI": "postgres_password"},
    "kong": {"SUPABASE_ANON_KEY": "anon_key", "SUPABASE_SERVICE_KEY": "service_role_key",
             "DASHBOARD_USERNAME": "dashboard_username",
             "DASHBOARD_PASSWORD": "dashboard_password"},
    "db": {"POSTGRES_PASSWORD": "postgres_password", "JWT_SECRET": "jwt_secret"},
    "storage": {"DATABASE_URL": "postgres_password", "PGRST_JWT_SECRET": "jwt_secret"},
}
# Components whose runtime env discovery reads (inspect), because they carry credentials.
CREDENTIAL_COMPONENTS: tuple[str, ...] = tuple(_SERVICE_ENV_FIELDS)

_ENV_FILE_FIELDS: Mapping[str, str] = {
    "POSTGRES_PASSWORD": "postgres_password", "JWT_SECRET": "jwt_secret",
    "ANON_KEY": "anon_key", "SERVICE_ROLE_KEY": "service_role_key",
    "DASHBOARD_USERNAME": "dashboard_username", "DASHBOARD_PASSWORD": "dashboard_password",
}
_VAR = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


class FileReadError(Exception):
    """A file could not be read or parsed; the message names the reason, never content."""


class _ParsedFiles:
    """Parsed file contents reused while a file's stat signature is unchanged.

    Every sweep re-reads every instance's compose, env and kong files; parsing them is
    most of discovery's cost, and they change only when someone edits them.
    """

    def __init__(self, capacity: int = 512, clock: Callable[[], float] = time.time) -> None:
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[tuple[int, ...], Any]] = OrderedDict()

    def get(self, path: Path, kind: str, parse: Callable[[str], Any],
            root: Path | None = None) -> Any:
        """parse(text of path), from memory when the file is unchanged since last time.

        Nothing below `root` (the instance's tree) is reached through a symbolic link.
        """
        base = within(root, path)
        try:
            st = lstat_under(base, path)
        except FileNotFoundError:
            raise FileReadError("missing") from None
        except SymlinkRefused:
            raise FileReadError("reached through a symbolic link, which is not followed") \
                from None
        except OSError as exc:
            raise FileReadError(exc.strerror or type(exc).__name__) from None
        if stat.S_ISLNK(st.st_mode):
            raise FileReadError("a symbolic link, which is not followed")
        signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        key = (str(path), kind)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == signature:
                self._items.move_to_end(key)
                return hit[1]
        # Parsed after the stat: a file changed in between is stored under the older
        # signature, so the next stat misses and parses again; never stale.
        value = parse(_read_text(base, path))
        # ctime too: a copy that keeps an old mtime (cp -p, copy2) is still a recent change.
        if self._clock() - max(st.st_mtime, st.st_ctime) < _RACY_SECONDS:
            return value
        with self._lock:
            self._items[key] = (signature, value)
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return value


# File times tick in coarse steps: a same-size edit within one step keeps the signature,
# so a file modified this recently is parsed afresh every time (git's "racy" rule).
_RACY_SECONDS = 2.0
_PARSED = _ParsedFiles()
# libyaml's loader when PyYAML was built with it: the same documents, several times faster.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_text(root: Path, path: Path) -> str:
    try:
        return read_bytes(root, path).decode("utf-8")
    except FileNotFoundError:
        raise FileReadError("missing") from None
    except SymlinkRefused:
        raise FileReadError("a symbolic link or not a regular file, which is not followed") \
            from None
    except OSError as exc:
        raise FileReadError(exc.strerror or type(exc).__name__) from None
    except UnicodeDecodeError:
        raise FileReadError("not UTF-8 text") from None


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise FileReadError("not valid YAML" + (f" (line {mark.line + 1})" if mark else "")
                            ) from None


def _read_yaml(path: Path, root: Path | None = None) -> Any:
    """The parsed document; shared between callers, so it is only ever read."""
    return _PARSED.get(path, "yaml", _parse_yaml, root)


def _parse_env(text: str) -> dict[str, str]:
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v or "" for k, v in values.items()}


def read_env_file(path: Path, *, root: Path | None = None) -> dict[str, str]:
    """KEY=VALUE pairs as compose reads them, without interpolation."""
    return dict(_PARSED.get(path, "env", _parse_env, root))


def env_file_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """Credential fields named by an env file."""
    return {fld: env[key] for key, fld in _ENV_FILE_FIELDS.items() if env.get(key)}


def service_env_credentials(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """Credential fields as one service's environment configures them."""
    found: dict[str, str] = {}
    for key, fld in _SERVICE_ENV_FIELDS.get(service, {}).items():
        value = env.get(key)
        if not value:
            continue
        if key.endswith(("_URL", "_URI")):
            password = urlsplit(value).password
            if password:
                found[fld] = password
        else:
            found[fld] = value
    return found


@dataclass(frozen=True, repr=False)
class ComposeFacts:
    """What a rendered compose file says about its services."""

    project: str | None
    env: Mapping[str, Mapping[str, str]]  # service -> environment
    container_names: Mapping[str, str]
    # service -> [(host_ip, host_port, container_port)]; host_port 0: any free one
    ports: Mapping[str, tuple[tuple[str, int, int], ...]]
    binds: Mapping[str, tuple[tuple[Path, str], ...]]  # service -> [(host path, target)]
    services: tuple[str, ...] = field(default_factory=tuple)
    # service -> {dependency: condition} as its depends_on declares (a list: started)
    depends_on: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def read_compose_file(path: Path, *, root: Path | None = None) -> ComposeFacts:
    """Parse a rendered compose file (values literal, as the manager renders them)."""
    data = _read_yaml(path, root)
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise FileReadError("has no services mapping")
    base = path.parent
    env: dict[str, dict[str, str]] = {}
    names: dict[str, str] = {}
    ports: dict[str, tuple[tuple[str, int, int], ...]] = {}
    binds: dict[str, tuple[tuple[Path, str], ...]] = {}
    depends: dict[str, dict[str, str]] = {}
    for service, spec in data["services"].items():
        if not isinstance(spec, dict):
            continue
        depends[service] = _depends_on(spec.get("depends_on"))
        env[service] = _environment(spec.get("environment"))
        if isinstance(spec.get("container_name"), str):
            names[service] = spec["container_name"]
        ports[service] = tuple(p for p in (_port(x) for x in spec.get("ports") or []) if p)
        binds[service] = tuple(b for b in (_bind(x, base) for x in spec.get("volumes") or [])
                               if b)
    project = data.get("name") if isinstance(data.get("name"), str) else None
    return ComposeFacts(project=project, env=env, container_names=names, ports=ports,
                        binds=binds, services=tuple(data["services"]), depends_on=depends)


def _depends_on(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        return {str(name): "service_started" for name in value}
    if isinstance(value, dict):
        return {str(name): str(spec.get("condition", "service_started"))
                if isinstance(spec, dict) else "service_started"
                for name, spec in value.items()}
    return {}


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            key, _, val = str(item).partition("=")
            out[key] = val
        return out
    return {}


def _port(value: Any) -> tuple[str, int, int] | None:
    if isinstance(value, dict):
        try:
            return (str(value.get("host_ip", "")), int(value["published"]),
                    int(value["target"]))
        except (KeyError, TypeError, ValueError):
            return None
    parts = str(value).split("/")[0].split(":")
    try:
        # An empty host port (":6543", what envsubst leaves of an unset variable) asks
        # Docker for any free one: 0 here.
        if len(parts) == 3:
            return parts[0], int(parts[1] or 0), int(parts[2])
        if len(parts) == 2:
            return "", int(parts[0] or 0), int(parts[1])
    except ValueError:
        return None
    return None


def _bind(value: Any, base: Path) -> tuple[Path, str] | None:
    if isinstance(value, dict):
        if value.get("type") != "bind":
            return None
        source, target = str(value.get("source", "")), str(value.get("target", ""))
    else:
        parts = str(value).split(":")
        if len(parts) < 2:
            return None
        source, target = parts[0], parts[1]
    if not source.startswith((".", "/")):
        return None  # a named volume
    path = Path(source) if source.startswith("/") else (base / source)
    return path, target


@dataclass(frozen=True, repr=False)
class KongFacts:
    """Consumer keys and dashboard credentials from a kong.yml."""

    keys: Mapping[str, str]  # consumer username -> key
    dashboard_username: str | None
    dashboard_password: str | None
    routes: tuple[tuple[str, str], ...]  # (service name, path)
    duplicate_services: tuple[str, ...]
    upstreams: tuple[tuple[str, str], ...] = ()  # (service name, url), $VARS resolved


def read_kong_file(path: Path, env: Mapping[str, str] | None = None, *,
                   root: Path | None = None) -> KongFacts:
    """Parse kong.yml, resolving bare $VARS from kong's env as its entrypoint does."""
    data = _read_yaml(path, root)
    if not isinstance(data, dict):
        raise FileReadError("is not a mapping")
    env = env or {}
    # Studio's login: the first basic-auth credential.
    login = next(iter(_mappings(data.get("basicauth_credentials"))), {})
    routes: list[tuple[str, str]] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    upstreams: list[tuple[str, str]] = []
    for service in _mappings(data.get("services")):
        name = str(service.get("name", ""))
        url = _kong_value(service.get("url"), env)
        if url:
            upstreams.append((name, _resolve_vars(url, env)))
        if name in seen:
            duplicates.append(name)
        seen.add(name)
        routes.extend((name, str(p)) for route in _mappings(service.get("routes"))
                      for p in route.get("paths") or [])
    return KongFacts(keys=_consumer_keys(data, env),
                     dashboard_username=_kong_value(login.get("username"), env),
                     dashboard_password=_kong_value(login.get("password"), env),
                     routes=tuple(routes),
                     duplicate_services=tuple(duplicates), upstreams=tuple(upstreams))


def _consumer_keys(data: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Consumer username -> its key-auth key."""
    keys: dict[str, str] = {}
    for consumer in _mappings(data.get("consumers")):
        for cred in consumer.get("keyauth_credentials") or []:
            key = _kong_value(cred.get("key"), env) if isinstance(cred, dict) else None
            if key and consumer.get("username"):
                keys[str(consumer["username"])] = key
    return keys


def _mappings(items: Any) -> list[dict[str, Any]]:
    """The mappings of a YAML list, skipping anything else in it."""
    return [item for item in items or [] if isinstance(item, dict)]


def _kong_value(raw: Any, env: Mapping[str, str]) -> str | None:
    """A value as kong's entrypoint reads it: a bare $VAR is taken from kong's env."""
    if raw is None:
        return None
    text = str(raw)
    match = _VAR.match(text)
    return env.get(match.group(1)) if match else text


_INNER_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _resolve_vars(text: str, env: Mapping[str, str]) -> str:
    """$VAR and ${VAR} inside a value (an upstream url names its host with one)."""
    return _INNER_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def kong_credentials(facts: KongFacts) -> dict[str, str]:
    """Credential fields as kong.yml holds them."""
    found: dict[str, str] = {}
    if facts.keys.get("anon"):
        found["anon_key"] = facts.keys["anon"]
    if facts.keys.get("service_role"):
        found["service_role_key"] = facts.keys["service_role"]
    if facts.dashboard_username:
        found["dashboard_username"] = facts.dashboard_username
    if facts.dashboard_password:
        found["dashboard_password"] = facts.dashboard_password
    return found


# Values published with the manager's template or Supabase's, which anyone can read there.
PLACEHOLDERS: frozenset[str] = frozenset({
    "your_logflare_key",  # ultabasereal supabase-core/generate.bash
    "your-super-secret-and-long-logflare-key",  # supabase/docker/.env.example
})
# The settings whose placeholder value is a credential (the logflare ingest and API keys).
PLACEHOLDER_SETTINGS = ("LOGFLARE_API_KEY", "LOGFLARE_LOGGER_BACKEND_API_KEY")


def placeholder_settings(env: Mapping[str, str], where: str) -> dict[str, list[str]]:
    """"SETTING=value" -> [where] for each credential setting holding a published
    placeholder (the value is public: it is printed)."""
    return {f"{key}={env[key]}": [where] for key in PLACEHOLDER_SETTINGS
            if env.get(key) in PLACEHOLDERS}
