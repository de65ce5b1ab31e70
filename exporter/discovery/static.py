"""Instances listed in the config file."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from exporter.config import StaticInstance
from exporter.discovery.join import Candidate
from exporter.discovery.model import COMPONENTS, ultrabase_container_name


def static_candidates(entries: Iterable[StaticInstance]) -> list[Candidate]:
    """One candidate per configured entry, expecting the Ultrabase component set."""
    out: list[Candidate] = []
    for entry in entries:
        ports: dict[str, int] = {}
        if entry.gateway_url:
            port = urlsplit(entry.gateway_url).port
            if port:
                ports["kong_http"] = port
        if entry.db_port:
            ports["postgres_ext"] = entry.db_port
        out.append(Candidate(
            id=entry.id, name=entry.name or entry.id, owner=entry.owner, source="static",
            compose_project=entry.compose_project or f"supabase-{entry.id}",
            expected={c: ultrabase_container_name(c, entry.id) for c in COMPONENTS},
            registry_ports=ports,
        ))
    return out
