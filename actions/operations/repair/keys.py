"""The API-key acts of a repair: regenerate the keys everywhere they live, sync the gateway.

The keys live in the env file, the compose file (per service), kong.yml, the registry and
the running containers' environment; `_key_places` finds every current value, the new keys
are staged as one FileSet, written, read back, and their readers recreated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from actions.files import FileSet
from actions.operations.repair.plan import (
    COMPONENT_ORDER,
    RepairAction,
    RepairError,
    auth_jwt_secret,
    keys_problem,
)
from actions.operations.repair.run import Journal, RepairSession
from exporter.discovery.files import (
    FileReadError,
    read_compose_file,
    read_env_file,
    read_kong_file,
)
from exporter.discovery.model import Instance
from exporter.discovery.registry import read_registry
from exporter.errors import RegistryError
from exporter.jwtkeys import analyse_key, generate_keys
from exporter.redaction import fingerprint
from exporter.safefs import SymlinkRefused, read_text

# Env and compose variables that hold the API keys, by key name.
_KEY_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "anon": ("ANON_KEY", "SUPABASE_ANON_KEY"),
    "service_role": ("SERVICE_ROLE_KEY", "SERVICE_KEY", "SUPABASE_SERVICE_KEY",
                     "SUPABASE_SERVICE_ROLE_KEY"),
}
_ENV_KEY = {"anon": "ANON_KEY", "service_role": "SERVICE_ROLE_KEY"}
_REGISTRY_KEY = {"anon": "anon_key", "service_role": "service_role_key"}
# API keys ----------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class _KeyPlaces:
    """Where the current keys live: old values per key name, and who reads them."""

    old: Mapping[str, frozenset[str]]
    compose_vars: Mapping[tuple[str, str], tuple[str, ...]]  # (key, VAR) -> services
    readers: tuple[str, ...]


def _looks_like_key(value: str | None) -> bool:
    return bool(value) and not str(value).startswith("$") and str(value).count(".") == 2


def _key_places(instance: Instance) -> _KeyPlaces:
    """Every value the keys currently have, in every file and running service."""
    files = instance.files
    kong_env = instance.runtime_env.get("kong") or {}
    compose_env: Mapping[str, Mapping[str, str]] = {}
    compose_specs: Mapping[str, Any] = {}
    if files.compose_file is not None:
        compose_env = read_compose_file(files.compose_file, root=files.root).env
        loaded = yaml.safe_load(read_text(files.root_of(files.compose_file),
                                          files.compose_file))
        compose_specs = (loaded.get("services") or {}) if isinstance(loaded, dict) else {}
    found = _known_values(instance, compose_env, kong_env)
    values = {name: frozenset(v for v in vals if _looks_like_key(v))
              for name, vals in found.items()}
    return _KeyPlaces(values, _compose_vars(compose_env, values),
                      _readers(instance, compose_specs, values))


def _known_values(instance: Instance, compose_env: Mapping[str, Mapping[str, str]],
                  kong_env: Mapping[str, str]) -> dict[str, set[str]]:
    """Each key's values as the credentials, kong's env and the files hold them."""
    files = instance.files
    creds = instance.credentials
    old: dict[str, set[str]] = {
        "anon": {creds.anon_key or "", kong_env.get("SUPABASE_ANON_KEY", "")},
        "service_role": {creds.service_role_key or "", kong_env.get("SUPABASE_SERVICE_KEY", "")},
    }
    env = read_env_file(files.env_file, root=files.root) if files.env_file is not None else {}
    record = _registry_record(instance) or {}
    for name in old:
        old[name].add(env.get(_ENV_KEY[name], ""))
        old[name].add(str(record.get(_REGISTRY_KEY[name]) or ""))
        for service_env in compose_env.values():
            old[name].update(service_env.get(v, "") for v in _KEY_VARIABLES[name])
    if files.kong_file is not None:
        keys = read_kong_file(files.kong_file, compose_env.get("kong") or kong_env,
                              root=files.root).keys
        for name in old:
            old[name].add(keys.get(name, ""))
    return old


def _compose_vars(compose_env: Mapping[str, Mapping[str, str]],
                  values: Mapping[str, frozenset[str]]
                  ) -> dict[tuple[str, str], tuple[str, ...]]:
    """(key, VAR) -> the services whose compose environment holds that key in VAR."""
    found: dict[tuple[str, str], list[str]] = {}
    for service, service_env in compose_env.items():
        for variable, value in service_env.items():
            for name, olds in values.items():
                if value in olds:
                    found.setdefault((name, variable), []).append(service)
    return {k: tuple(v) for k, v in found.items()}


def _readers(instance: Instance, compose_specs: Mapping[str, Any],
             values: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    """The compose services whose definition holds a key (or refers to one), and kong."""
    every = values["anon"] | values["service_role"]
    references = ("${ANON_KEY}", "$ANON_KEY", "${SERVICE_ROLE_KEY}", "$SERVICE_ROLE_KEY")
    readers = [service for service, spec in compose_specs.items()
               if any(v in json.dumps(spec) for v in (*every, *references))]
    if instance.files.kong_file is not None and "kong" in compose_specs \
            and "kong" not in readers:
        readers.append("kong")
    return tuple(readers)


def _registry_record(instance: Instance) -> Mapping[str, Any] | None:
    """This instance's registry credentials, if it has a registry record."""
    if instance.files.registry is None:
        return None
    try:
        registry = read_registry(instance.files.registry)
    except RegistryError:
        return None
    for record in registry.records:
        if record.id == instance.id:
            return record.credentials
    return None


def act_regenerate_keys(runner: RepairSession, action: RepairAction, journal: Journal,
                        detail: dict[str, Any]) -> None:
    """New keys from auth's secret, written everywhere they live, their readers recreated."""
    instance = runner.instance()
    problem = keys_problem(instance)
    if problem:
        raise RepairError(problem)
    secret = str(auth_jwt_secret(instance))
    places = _key_places(instance)
    new = generate_keys(secret, int(time.time()))
    runner.secret(*new.values())
    for name, key in new.items():
        analysis = analyse_key(name, key, secret)
        if not (analysis.signature_valid and analysis.role_valid):
            raise RepairError(f"the new {name} key does not verify against auth's secret")

    files = _stage_keys(instance, places, new)
    backup_id = str(detail.get("backup_id"))
    journal.data.append(("restore the files from the backup",
                         lambda: _restore(runner, instance, backup_id)))
    changed = files.write()
    _check_written(instance, places, new)
    detail["files_changed"] = sorted({Path(p).name for p in changed})
    detail["keys"] = {name: fingerprint(key) for name, key in new.items()}

    services = sorted(set(places.readers) | set(files.affected_services()),
                      key=lambda c: COMPONENT_ORDER.get(c, len(COMPONENT_ORDER)))
    journal.services.append(("recreate the key readers with the restored files",
                             lambda: runner.recreate(services)))
    runner.recreate(services)
    detail["recreated"] = services


def _stage_keys(instance: Instance, places: _KeyPlaces, new: Mapping[str, str]) -> FileSet:
    """Every edit that puts the new keys in place, staged (nothing written yet)."""
    files = FileSet(instance)
    if instance.files.registry is not None and _registry_record(instance) is not None:
        for name, key in _REGISTRY_KEY.items():
            files.set_registry(("credentials", key), new[name])
    for name, key in _ENV_KEY.items():
        files.set_env(key, new[name])
    for (name, variable), services in places.compose_vars.items():
        files.set_compose_env(services, variable, new[name])
    kong_file = instance.files.kong_file
    if kong_file is not None:
        raw = _kong_raw_keys(instance.files.root_of(kong_file), kong_file)
        for consumer in ("anon", "service_role"):
            # A $VAR reference takes kong's env, which the compose edits already changed.
            if not str(raw.get(consumer, "")).startswith("$"):
                files.set_kong_key(consumer, new[consumer])
    # Whatever the field edits do not model (a healthcheck header) may still hold an old key.
    for key in ("env_file", "compose_file", "kong_file"):
        if getattr(instance.files, key) is not None:
            _replace_old_keys(files, key, places, new)
    return files


def _replace_old_keys(files: FileSet, key: str, places: _KeyPlaces,
                      new: Mapping[str, str]) -> None:
    """Every old key value left in the staged file replaced by the new key."""
    text = files.text(key)
    updated = text
    for name, olds in places.old.items():
        for old in olds - {new[name]}:
            updated = updated.replace(old, new[name])
    if updated != text:
        files.set_file_text(key, updated)


def _kong_raw_keys(root: Path, path: Path) -> dict[str, str]:
    """kong.yml's consumer keys as written (a $VAR reference is not resolved)."""
    try:
        data = yaml.safe_load(read_text(root, path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, SymlinkRefused):
        raise RepairError("kong.yml cannot be read") from None
    out: dict[str, str] = {}
    for consumer in (data or {}).get("consumers") or [] if isinstance(data, dict) else []:
        if not isinstance(consumer, dict):
            continue
        for cred in consumer.get("keyauth_credentials") or []:
            if isinstance(cred, dict) and cred.get("key") is not None:
                out[str(consumer.get("username"))] = str(cred["key"])
    return out


def _restore(runner: RepairSession, instance: Instance, backup_id: str) -> None:
    runner.ctx.backups.restore_files(instance, backup_id)


def _check_written(instance: Instance, places: _KeyPlaces, new: Mapping[str, str]) -> None:
    """Every file that holds the keys holds exactly the new ones (read back from disk)."""
    files = instance.files
    wrong: list[str] = []
    every_old = {o for olds in places.old.values() for o in olds} - set(new.values())
    try:
        if files.env_file is not None:
            env = read_env_file(files.env_file, root=files.root)
            wrong += [f"env file {k}" for n, k in _ENV_KEY.items() if env.get(k) != new[n]]
        compose_env: Mapping[str, Mapping[str, str]] = {}
        if files.compose_file is not None:
            text = read_text(files.root_of(files.compose_file), files.compose_file)
            if any(o in text for o in every_old):
                wrong.append("compose file (an old key is left)")
            compose_env = read_compose_file(files.compose_file, root=files.root).env
        if files.kong_file is not None:
            keys = read_kong_file(files.kong_file, compose_env.get("kong") or {},
                                  root=files.root).keys
            wrong += [f"kong.yml {n}" for n in new if keys.get(n) != new[n]]
        record = _registry_record(instance)
        if record is not None:
            wrong += [f"registry {k}" for n, k in _REGISTRY_KEY.items()
                      if record.get(k) != new[n]]
    except (FileReadError, OSError, SymlinkRefused) as exc:
        raise RepairError(f"cannot read back the written files: {type(exc).__name__}") from None
    if wrong:
        raise RepairError("the new keys did not reach: " + ", ".join(wrong))


def act_sync_gateway(runner: RepairSession, action: RepairAction, journal: Journal,
                     detail: dict[str, Any]) -> None:
    """Write the env file's keys into kong.yml, then restart kong (it re-reads the file)."""
    instance = runner.instance()
    env_file, kong_file = instance.files.env_file, instance.files.kong_file
    if env_file is None or kong_file is None:
        raise RepairError("the env file or kong.yml of this instance is unknown")
    env = read_env_file(env_file, root=instance.files.root)
    kong_env = instance.runtime_env.get("kong") or {}
    current = read_kong_file(kong_file, kong_env, root=instance.files.root).keys
    files = FileSet(instance)
    changed_keys = []
    for consumer, variable in _ENV_KEY.items():
        value = env.get(variable)
        if value and current.get(consumer) != value:
            files.set_kong_key(consumer, value)
            changed_keys.append(consumer)
    backup_id = str(detail.get("backup_id"))
    if changed_keys:
        journal.data.append(("restore kong.yml from the backup",
                             lambda: _restore(runner, instance, backup_id)))
        files.write()
        after = read_kong_file(kong_file, kong_env, root=instance.files.root).keys
        if any(after.get(c) != env.get(_ENV_KEY[c]) for c in changed_keys):
            raise RepairError("kong.yml does not hold the env file's keys after writing")
    detail["consumers_updated"] = changed_keys
    runner.need("kong")
    journal.services.append(("restart kong with the restored kong.yml",
                             lambda: runner.restart_and_wait("kong")))
    detail["state_after"] = runner.restart_and_wait("kong")
