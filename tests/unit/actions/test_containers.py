"""The action side's Docker layer on plain data: finding a component's container, the log
tail, the one wait loop and the inspect model. (Real Docker is exercised by the live
restart, repair and config tests in tests/integration.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from actions.containers import Containers, Readiness, last_message, poll_until, wait_healthy
from actions.operations.model import OperationError
from exporter.discovery.model import Component, ultrabase_container_name
from exporter.dockerhost import ContainerSummary, details_of
from tests.unit.checks.support import make_instance
from tests.unit.plaindocker import PlainDocker, containers_for


class LoggingDocker(PlainDocker):
    """Plain containers whose logs are fixed lines, each with Docker's timestamp."""

    def logs(self, container_id: str, since: float, tail: int) -> list[str]:
        lines = ["2026-01-01T00:00:00.000000001Z first",
                 "2026-01-01T00:00:01.000000001Z ",
                 '2026-01-01T00:00:02.000000001Z {"level":"fatal","msg":"boom"}']
        return lines[-tail:]


def test_find_goes_by_compose_labels_then_by_name() -> None:
    instance = make_instance()
    listed = containers_for(instance.id, project=instance.compose_project)
    docker = Containers(PlainDocker(listed))
    found = docker.find(instance, "auth")
    assert found is not None and found.id == f"{instance.id}-auth"
    # Without labels the container is still found by the name the template gives it.
    unlabelled = [ContainerSummary(c.id, c.name, c.image, c.state, c.status, c.created)
                  for c in listed]
    named = replace(instance, components={
        "kong": Component("kong", ultrabase_container_name("kong", instance.id))})
    by_name = Containers(PlainDocker(unlabelled)).find(named, "kong")
    assert by_name is not None and by_name.id == f"{instance.id}-kong"
    assert Containers(PlainDocker([])).find(instance, "auth") is None


def test_a_docker_failure_is_an_operation_error() -> None:
    docker = Containers(PlainDocker([], down=True))
    with pytest.raises(OperationError, match="cannot list containers"):
        docker.find(make_instance(), "auth")


def test_log_tail_drops_timestamps_and_blank_lines() -> None:
    docker = Containers(LoggingDocker([]))
    lines = docker.log_tail("c1", 3)
    assert lines == ['first', '{"level":"fatal","msg":"boom"}']
    assert last_message(lines) == "boom"
    assert last_message(["plain text"]) == "plain text"
    assert last_message([]) is None


def test_wait_healthy_returns_each_last_verdict() -> None:
    looks: list[Sequence[str]] = []
    up_after = {"db": 1, "auth": 3}

    def look(pending: Sequence[str]) -> Mapping[str, Readiness]:
        looks.append(list(pending))
        return {c: Readiness(len(looks) >= up_after[c], f"look {len(looks)}") for c in pending}

    seen = wait_healthy(look, ["db", "auth", "db"], 10, interval=0,
                        timed_out=lambda left: AssertionError(str(left)))
    assert looks == [["db", "auth"], ["auth"], ["auth"]]
    assert seen == {"db": Readiness(True, "look 1"), "auth": Readiness(True, "look 3")}


def test_wait_healthy_raises_what_timed_out_makes_of_those_left() -> None:
    def look(pending: Sequence[str]) -> Mapping[str, Readiness]:
        return {c: Readiness(c == "db", "starting") for c in pending}

    with pytest.raises(OperationError, match=r"^auth \(starting\)$"):
        wait_healthy(look, ["db", "auth"], 0, interval=0, timed_out=lambda left: OperationError(
            ", ".join(f"{c} ({r.shown})" for c, r in left.items())))


def test_poll_until_sleeps_between_ticks_only() -> None:
    answers = iter([None, None, "done"])
    slept: list[float] = []
    assert poll_until(lambda: next(answers), interval=0.5, sleep=slept.append) == "done"
    assert slept == [0.5, 0.5]


def test_inspect_model_reads_state_health_mounts_and_healthcheck() -> None:
    details = details_of({
        "Id": "abc", "Name": "/supabase-db-x", "Image": "sha256:1",
        "State": {"Status": "running", "ExitCode": 0, "Health": {"Status": "starting"}},
        "RestartCount": 2, "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}},
        "Config": {"Healthcheck": {"Test": ["CMD-SHELL", "pg_isready"]}},
        "Mounts": [{"Type": "volume", "Name": "db-config", "Source": "/v", "Destination": "/d",
                    "RW": True}],
        "NetworkSettings": {"Networks": {"p_default": {"IPAddress": "172.18.0.2"}}}})
    assert (details.name, details.state, details.health, details.restart_count) == \
        ("supabase-db-x", "running", "starting", 2)
    assert details.running and not details.ok and details.shown == "running/starting"
    assert details.healthcheck == ("/bin/sh", "-c", "pg_isready")
    assert details.mounts[0].name == "db-config" and not details.mounts[0].read_only
    assert details.addresses == {"p_default": "172.18.0.2"}
    assert details.to_dict()["container"] == "supabase-db-x"
