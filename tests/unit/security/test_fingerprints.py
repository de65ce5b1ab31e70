"""L4 of the security review: fingerprints a viewer can test guesses against.

The attack: with the dashboard password drifting between kong.yml (`admin`, the manager's
default) and the other files, CONFIG_DRIFT evidence showed `sha256:8c6976e5b541` for
kong.yml, and sha256("admin")[:12] is 8c6976e5b541. Fingerprints are now an HMAC keyed with
a random per-installation key kept beside the store (0600): equal secrets still match each
other, but no guess can be checked without the key.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.config import parse_config
from exporter.discovery import discover
from exporter.redaction import (
    KEY_FILE,
    fingerprint,
    install_fingerprint_key,
    installation_key,
    use_fingerprint_key,
)
from tests.unit.layout import instance_values, registry_record, write_instance, write_registry
from tests.unit.plaindocker import PlainDocker, containers_for, runtime_envs

IID = "aaaa0001"
GUESSES = ("admin", "password", "supabase", "this_password_is_insecure_and_should_be_updated",
           f"dash-{IID}", "123456")


@pytest.fixture(autouse=True)
def own_key() -> Iterator[None]:
    # Other tests' fingerprints stay as they were: the key of this module is put back.
    previous = use_fingerprint_key(None)
    yield
    use_fingerprint_key(previous)


def _unkeyed(guess: str) -> str:
    return "sha256:" + hashlib.sha256(guess.encode()).hexdigest()[:12]


def test_drift_evidence_cannot_be_checked_against_guesses(tmp_path: Path) -> None:
    store = tmp_path / "store" / "store.sqlite3"
    store.parent.mkdir(mode=0o700)
    install_fingerprint_key(store)
    core = tmp_path / "supabase-core"
    values = instance_values(IID)
    write_instance(core, values)
    write_registry(tmp_path / "instances.json", {IID: registry_record(values)})
    kong = core / f"volumes-{IID}" / "api" / "kong.yml"
    kong.write_text(kong.read_text().replace(values["DASHBOARD_PASSWORD"], "admin"))
    config = parse_config({"ultrabase": {"registry": str(tmp_path / "instances.json")},
                           "discovery": {"sources": ["ultrabase"]}}, environ={})
    docker = PlainDocker(containers_for(IID), runtime_envs(IID, values))
    found = discover(config, docker).instances[IID]
    [drift] = [p for p in found.problems if p.code == "CONFIG_DRIFT"]
    shown = drift.evidence["credentials"]["dashboard_password"]
    assert shown["kong_file"] == fingerprint("admin")
    assert shown["kong_file"] != shown["env_file"]
    everything = str(drift.to_dict())
    for guess in GUESSES:
        assert _unkeyed(guess) not in everything, guess


def test_the_key_is_private_stable_and_per_installation(tmp_path: Path) -> None:
    one, two = tmp_path / "one" / "store.sqlite3", tmp_path / "two" / "store.sqlite3"
    key = installation_key(one)
    path = one.parent / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 32
    assert installation_key(one) == key
    use_fingerprint_key(key)
    mine = fingerprint("admin")
    use_fingerprint_key(installation_key(two))
    assert fingerprint("admin") != mine  # another installation, another fingerprint
    use_fingerprint_key(installation_key(one))
    assert fingerprint("admin") == mine  # the same installation, the same one
    assert mine != _unkeyed("admin")


def test_a_link_is_not_taken_for_the_key(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    planted = tmp_path / "planted"
    planted.write_bytes(b"k" * 32)
    (tmp_path / KEY_FILE).symlink_to(planted)
    with pytest.raises(OSError):
        installation_key(store)


def _race(store: str, start: Any, out: Any) -> None:
    start.wait()
    out.put(installation_key(Path(store)).hex())


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    store = str(tmp_path / "store.sqlite3")
    workers = [context.Process(target=_race, args=(store, start, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    keys = {out.get(timeout=30) for _ in workers}
    for worker in workers:
        worker.join(30)
    assert len(keys) == 1
    assert sorted(os.listdir(tmp_path)) == [KEY_FILE]  # no temp file left


def test_without_an_installed_key_fingerprints_are_keyed_anyway() -> None:
    assert fingerprint("admin") != _unkeyed("admin")
    assert fingerprint("admin") == fingerprint("admin")
