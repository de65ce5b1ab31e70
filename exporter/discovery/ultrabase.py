"""The Ultrabase source: registry records joined with each instance's rendered files."""

from __future__ import annotations

from pathlib import Path

from exporter.config import UltrabaseConfig
from exporter.discovery.files import (
    FileReadError,
    env_file_credentials,
    kong_credentials,
    placeholder_settings,
    read_compose_file,
    read_env_file,
    read_kong_file,
    service_env_credentials,
)
from exporter.discovery.join import Candidate, volume_dirs_from_binds
from exporter.discovery.model import (
    COMPONENTS,
    InstanceFiles,
    LayoutFacts,
    RegistryState,
    ultrabase_container_name,
)
from exporter.discovery.registry import Registry, RegistryRecord, read_registry
from exporter.issues import Issue, make_issue
from exporter.safefs import kind


def core_dir(config: UltrabaseConfig) -> Path:
    """supabase-core: configured, else beside the registry."""
    if config.core_dir is not None:
        return config.core_dir
    assert config.registry is not None
    return config.registry.parent / "supabase-core"


def ultrabase_candidates(config: UltrabaseConfig) -> tuple[list[Candidate], Registry]:
    """One candidate per registry record; raises RegistryError if the registry is unreadable."""
    assert config.registry is not None
    registry = read_registry(config.registry)
    base = core_dir(config)
    return [_candidate(record, base, registry.path) for record in registry.records], registry


def _candidate(record: RegistryRecord, base: Path, registry_path: Path) -> Candidate:
    problems: list[Issue] = list(record.problems)
    env_path = base / record.env_file
    compose_path = base / record.compose_file
    volumes = base / record.volumes_dir
    kong_path = volumes / "api" / "kong.yml"
    credentials: dict[str, dict[str, str]] = {"registry": dict(record.credentials)}
    missing: dict[str, str] = {}

    placeholders: dict[str, list[str]] = {}
    try:
        env = read_env_file(env_path, root=base)
        credentials["env_file"] = env_file_credentials(env)
        placeholders = placeholder_settings(env, env_path.name)
    except FileReadError as exc:
        missing["env_file"] = f"{env_path}: {exc}"
    kong_env: dict[str, str] = {}
    volume_dirs: dict[str, Path] = {}
    declared_ports: dict[str, tuple[tuple[str, int, int], ...]] = {}
    try:
        compose = read_compose_file(compose_path, root=base)
        merged: dict[str, str] = {}
        for service in ("db", "auth", "rest", "kong"):
            merged.update(service_env_credentials(service, compose.env.get(service, {})))
        credentials["compose_file"] = merged
        kong_env = dict(compose.env.get("kong", {}))
        volume_dirs = volume_dirs_from_binds(compose.binds)
        declared_ports = {k: v for k, v in compose.ports.items() if v}
        for service, service_env in sorted(compose.env.items()):
            for key, where in placeholder_settings(service_env, f"compose:{service}").items():
                placeholders.setdefault(key, []).extend(where)
    except FileReadError as exc:
        missing["compose_file"] = f"{compose_path}: {exc}"
    try:
        credentials["kong_file"] = kong_credentials(read_kong_file(kong_path, kong_env,
                                                                   root=base))
    except FileReadError as exc:
        missing["kong_file"] = f"{kong_path}: {exc}"
    found = kind(base, volumes)
    if found != "dir":
        missing["volumes_dir"] = f"{volumes}: " + (
            "a symbolic link, not followed" if found == "symlink" else "missing")
    if missing:
        problems.append(make_issue(
            "INSTANCE_FILES_MISSING", check="discovery",
            message="cannot read " + ", ".join(sorted(missing)),
            evidence={"files": missing},
        ))
    if not volume_dirs:
        volume_dirs = {"db_data": volumes / "db" / "data", "storage": volumes / "storage",
                       "functions": volumes / "functions"}
    data_dir_exists = _exists(base, volume_dirs.get("db_data"))
    return Candidate(
        id=record.id, name=record.name, owner=record.owner, source="ultrabase",
        compose_project=f"supabase-{record.id}",
        expected={c: ultrabase_container_name(c, record.id) for c in COMPONENTS},
        files=InstanceFiles(registry=registry_path, env_file=env_path,
                            compose_file=compose_path, kong_file=kong_path,
                            volumes_dir=volumes, volume_dirs=volume_dirs, root=base),
        file_credentials=credentials, registry_ports=record.ports,
        problems=tuple(problems), created_at=record.created_at,
        registry=RegistryState(status=record.status, updated_at=record.updated_at,
                               data_dir_exists=data_dir_exists),
        layout=LayoutFacts(ports=declared_ports,
                           placeholders={k: tuple(v) for k, v in placeholders.items()}),
    )


def _exists(base: Path, path: Path | None) -> bool | None:
    """True for a directory, False when nothing is there, None when it cannot be told."""
    if path is None:
        return None
    try:
        return {"dir": True, "missing": False}.get(kind(base, path))
    except OSError:
        return None
