"""The Ultrabase registry (instances.json) in both formats seen in the wild."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config import INSTANCE_ID_PATTERN
from exporter.errors import RegistryError
from exporter.issues import Issue, make_issue

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_PORT_KEYS = ("kong_http", "kong_https", "postgres_ext", "supavisor", "analytics")
_CREDENTIAL_KEYS = ("postgres_password", "jwt_secret", "anon_key", "service_role_key",
                    "dashboard_username", "dashboard_password")


@dataclass(frozen=True, repr=False)
class RegistryRecord:
    """One instance's record, with only the fields the tool relies on, validated."""

    id: str
    name: str
    owner: str | None
    created_at: str | None
    ports: Mapping[str, int]
    credentials: Mapping[str, str]
    compose_file: str
    env_file: str
    volumes_dir: str
    problems: tuple[Issue, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)
    # The manager's word on the instance: creating, running, stopped or error, and when it
    # last saved the record (None when absent or not text).
    status: str | None = None
    updated_at: str | None = None

    def __repr__(self) -> str:
        return f"RegistryRecord(id={self.id!r})"


@dataclass(frozen=True)
class Registry:
    """All records, plus problems that belong to no instance."""

    path: Path
    format: str  # "keyed" (current) or "list" (older)
    records: tuple[RegistryRecord, ...]
    problems: tuple[Issue, ...] = ()


def read_registry(path: Path) -> Registry:
    """Read and parse the registry; a whole-file failure is a RegistryError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read the Ultrabase registry {path}: "
                            f"{exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RegistryError(f"the Ultrabase registry {path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"the Ultrabase registry {path} is not valid JSON "
                            f"(line {exc.lineno}, column {exc.colno})") from None
    return parse_registry(data, path)


def parse_registry(data: Any, path: Path) -> Registry:
    """Records from either registry format."""
    if isinstance(data, dict) and isinstance(data.get("instances"), list):
        items = [(None, item) for item in data["instances"]]
        fmt = "list"
    elif isinstance(data, dict):
        items = list(data.items())
        fmt = "keyed"
    else:
        raise RegistryError(f"the Ultrabase registry {path} must be a JSON object")
    records: list[RegistryRecord] = []
    orphans: list[Issue] = []
    seen: set[str] = set()
    for position, (key, item) in enumerate(items):
        record_id = key if key is not None else (item.get("id") if isinstance(item, dict)
                                                 else None)
        where = f"key {key!r}" if key is not None else f"instances[{position}]"
        if not isinstance(record_id, str) or not INSTANCE_ID_PATTERN.fullmatch(record_id):
            orphans.append(_invalid(None, f"registry entry at {where} has no valid id",
                                    {"entry": where}))
            continue
        if record_id in seen:
            orphans.append(_invalid(None, f"registry lists instance {record_id} twice",
                                    {"entry": where}))
            continue
        seen.add(record_id)
        records.append(_record(record_id, item, where))
    return Registry(path=path, format=fmt, records=tuple(records), problems=tuple(orphans))


def _invalid(instance_id: str | None, message: str, evidence: Mapping[str, Any]) -> Issue:
    return make_issue("INSTANCE_RECORD_INVALID", check="discovery", message=message,
                      evidence={"instance_id": instance_id, **evidence} if instance_id is None
                      else evidence)


def _record(record_id: str, item: Any, where: str) -> RegistryRecord:
    """One registry entry: every field that is unusable is left out as a problem."""
    problems: list[str] = []
    if not isinstance(item, dict):
        problems.append(f"the record is a {type(item).__name__}, not an object")
        item = {}
    if "id" in item and item["id"] != record_id:
        problems.append("its id field differs from its key")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("name is missing or not text")
        name = record_id
    ports = _ports(_section(item, "ports", problems), problems)
    creds = _credentials(_section(item, "credentials", problems), problems)
    names = _file_names(record_id, _section(item, "docker", problems), problems)
    issues = tuple(
        _invalid(record_id, f"registry record of {record_id} ({where}): {p}", {"field": p})
        for p in problems
    )
    return RegistryRecord(
        id=record_id, name=name, owner=_text(item, "owner"),
        created_at=_text(item, "created_at"), ports=ports, credentials=creds,
        compose_file=names["compose_file"], env_file=names["env_file"],
        volumes_dir=names["volumes_dir"], problems=issues, raw=item,
        status=_text(item, "status"), updated_at=_text(item, "updated_at"),
    )


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) else None


def _ports(section: Mapping[str, Any], problems: list[str]) -> dict[str, int]:
    """The section's valid port numbers (digit strings too); the others are problems."""
    ports: dict[str, int] = {}
    for key in _PORT_KEYS:
        value = section.get(key)
        if value is None:
            continue
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
            ports[key] = value
        else:
            problems.append(f"ports.{key} is not a port number")
    return ports


def _credentials(section: Mapping[str, Any], problems: list[str]) -> dict[str, str]:
    """The section's credentials that are text; the others are problems."""
    creds: dict[str, str] = {}
    for key in _CREDENTIAL_KEYS:
        value = section.get(key)
        if isinstance(value, str):
            creds[key] = value
        elif value is not None:
            problems.append(f"credentials.{key} is not text")
    return creds


def _file_names(record_id: str, section: Mapping[str, Any], problems: list[str]
                ) -> dict[str, str]:
    """compose_file, env_file and volumes_dir: plain names, else the manager's defaults."""
    names: dict[str, str] = {}
    for key, default in (("compose_file", f"docker-compose-{record_id}.yml"),
                         ("env_file", f".env-{record_id}"),
                         ("volumes_dir", f"volumes-{record_id}")):
        value = section.get(key, default)
        # The record names files inside supabase-core; anything path-like is refused so a
        # record can never point the tool elsewhere on the host.
        if not isinstance(value, str) or not _PLAIN_NAME.match(value) or value in (".", ".."):
            problems.append(f"docker.{key} is not a plain file name; using {default}")
            value = default
        names[key] = value
    return names


def _section(item: Mapping[str, Any], key: str, problems: list[str]) -> Mapping[str, Any]:
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{key} is not an object")
        return {}
    return value
