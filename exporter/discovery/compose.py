"""Generic compose discovery: any compose project running a GoTrue container."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from exporter.config import INSTANCE_ID_PATTERN
from exporter.discovery.files import FileReadError, read_compose_file
from exporter.discovery.join import Candidate, volume_dirs_from_binds
from exporter.discovery.model import InstanceFiles
from exporter.dockerhost import COMPOSE_CONFIG_FILES, ContainerSummary

log = logging.getLogger(__name__)
_GOTRUE_IMAGES = ("supabase/gotrue", "supabase/auth")


def is_supabase_project(containers: Iterable[ContainerSummary]) -> bool:
    """True when the project runs GoTrue (by image or by the compose service name)."""
    for c in containers:
        image = c.image.split("@")[0].rsplit(":", 1)[0]
        if c.compose_service == "auth" or image.endswith(_GOTRUE_IMAGES):
            return True
    return False


def compose_candidates(projects: Mapping[str, Sequence[ContainerSummary]],
                       claimed: set[str]) -> list[Candidate]:
    """Candidates for unclaimed Supabase compose projects; the id is the project name."""
    out: list[Candidate] = []
    for project, containers in sorted(projects.items()):
        if project in claimed or not is_supabase_project(containers):
            continue
        if not INSTANCE_ID_PATTERN.fullmatch(project):
            log.warning("compose project %r runs GoTrue but its name is not a valid instance "
                        "id; skipped", project)
            continue
        services = {c.compose_service: c.name for c in containers if c.compose_service}
        files = InstanceFiles()
        config_files = containers[0].labels.get(COMPOSE_CONFIG_FILES, "")
        if config_files:
            compose_path = Path(config_files.split(",")[0])
            try:
                facts = read_compose_file(compose_path)
                files = InstanceFiles(compose_file=compose_path,
                                      volume_dirs=volume_dirs_from_binds(facts.binds),
                                      root=compose_path.parent)
                for service in facts.services:
                    services.setdefault(service, facts.container_names.get(service, ""))
            except FileReadError:
                # The file may live where this process cannot read it; runtime still tells.
                files = InstanceFiles(compose_file=compose_path, root=compose_path.parent)
        out.append(Candidate(
            id=project, name=project, owner=None, source="compose", compose_project=project,
            expected={s: (n or None) for s, n in sorted(services.items())}, files=files,
        ))
    return out
