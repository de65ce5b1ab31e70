"""BackupStore: what a backup holds, modes, ids, manifest checks, restore and retention.

pg_dump is replaced here by a small script that records how it was called (argv and
environment), to prove the password travels only in PGPASSWORD; the real pg_dump against
a live database is exercised by tests/integration/test_config_live.py.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from actions.backups import (
    DB_DUMP,
    ENTRY_NAMES,
    BackupCorrupt,
    BackupFailed,
    BackupNotFound,
    BackupStore,
)
from actions.files import FileSet, registry_record_span
from actions.operations.backup import restore_body
from actions.operations.model import OperationError
from exporter.discovery.model import Instance
from exporter.pg import DbLogin, LoginResult
from tests.unit import layout
from tests.unit.actions.test_config_edit import PlainCompose, PlainContext, PlainEngine, run
from tests.unit.actions.test_files import (
    IID,
    OTHER,
    make_instance,
    snapshot,
    write_manager_registry,
)

OTHER_SECRET = layout.instance_values(OTHER)["POSTGRES_PASSWORD"]


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    write_manager_registry(tmp_path, OTHER, IID)
    return make_instance(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> BackupStore:
    return BackupStore(tmp_path / "backups", retention=10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- create ------------------------------------------------------------------------------


def test_backup_holds_this_instance_only_private(instance: Instance, store: BackupStore) -> None:
    store.root.mkdir(mode=0o755)
    store.root.chmod(0o755)
    backup = store.create(instance, "manual")
    directory = store.root / IID / backup.id
    assert mode(store.root) == mode(store.root / IID) == mode(directory) == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted([*ENTRY_NAMES.values(), "manifest.json"])
    assert all(mode(p) == 0o600 for p in directory.iterdir())
    assert instance.files.registry is not None
    registry = instance.files.registry.read_text()
    start, end = registry_record_span(registry, IID)
    assert (directory / "registry-record.json").read_text() == registry[start:end]
    for path in directory.iterdir():
        assert OTHER_SECRET not in path.read_text(), path.name
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["instance_id"] == IID and manifest["db_dump"] is None
    assert set(manifest["files"]) == set(ENTRY_NAMES)
    assert backup.files == tuple(ENTRY_NAMES.values())
    assert backup.size_bytes == sum(e["size"] for e in manifest["files"].values())


def test_backup_is_the_on_disk_state_not_pending_edits(instance: Instance,
                                                       store: BackupStore) -> None:
    files = FileSet(instance)
    files.set_env("SITE_URL", "https://pending.example")
    backup = store.create(instance, "before edit", files=files)
    env = (store.root / IID / backup.id / "env").read_text()
    assert "pending.example" not in env
    assert instance.files.env_file is not None
    assert env == instance.files.env_file.read_text()


def test_list_is_newest_first_and_shows_no_content(instance: Instance,
                                                   store: BackupStore) -> None:
    made = [store.create(instance, f"r{i}").id for i in range(3)]
    listed = store.list(IID)
    assert [b.id for b in listed] == list(reversed(made))
    text = json.dumps([b.to_dict() for b in listed])
    assert f"dash-{IID}" not in text and f"pg-pass-{IID}" not in text
    assert listed[0].verified is None
    assert store.list("0000ffff") == []


def test_reason_is_one_bounded_printable_line(instance: Instance, store: BackupStore) -> None:
    backup = store.create(instance, "line\nbreak\x00" + "x" * 500)
    assert "\n" not in backup.reason and "\x00" not in backup.reason
    assert len(backup.reason) == 200


def test_retention_prunes_the_oldest(instance: Instance, tmp_path: Path) -> None:
    store = BackupStore(tmp_path / "kept", retention=3)
    made = [store.create(instance, f"r{i}").id for i in range(5)]
    assert [b.id for b in store.list(IID)] == list(reversed(made[2:]))
    assert sorted(p.name for p in (store.root / IID).iterdir()) == sorted(made[2:])


def test_a_failed_backup_leaves_nothing(instance: Instance, store: BackupStore) -> None:
    assert instance.files.registry is not None
    instance.files.registry.write_text("{not json")
    with pytest.raises(BackupFailed):
        store.create(instance, "x")
    assert list((store.root / IID).iterdir()) == []


# --- ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    "..", "../x", "a/b", "/etc", "20260101T000000Z-abcdef/../..", "x\x00", "9" * 5000, "",
    "20260101T000000Z-ABCDEF", "20260101T000000Z-abcdef ", "20260101T000000Z-abcdef",
])
def test_bad_or_unknown_ids_are_not_found(instance: Instance, store: BackupStore,
                                          bad: str) -> None:
    store.create(instance, "x")
    before = snapshot(instance)
    for call in (lambda: store.get(IID, bad), lambda: store.verify(IID, bad),
                 lambda: store.restore_files(instance, bad)):
        with pytest.raises(BackupNotFound) as caught:
            call()
        assert caught.value.status == 404
        assert bad[:20] not in str(caught.value) or bad == ""
    assert snapshot(instance) == before


def test_bad_instance_ids_and_symlinked_backups_are_not_found(instance: Instance,
                                                              store: BackupStore) -> None:
    backup = store.create(instance, "x")
    with pytest.raises(BackupNotFound):
        store.list("../etc")
    link = store.root / IID / "20300101T000000Z-abcdef"
    link.symlink_to(store.root / IID / backup.id)
    with pytest.raises(BackupNotFound):
        store.get(IID, link.name)
    assert [b.id for b in store.list(IID)] == [backup.id]
    with pytest.raises(BackupNotFound):
        store.get(OTHER, backup.id)


# --- manifest ----------------------------------------------------------------------------


@pytest.mark.parametrize("tamper", ["content", "missing", "manifest-sha", "manifest-name",
                                    "manifest-unknown-key", "manifest-instance"])
def test_tampering_is_detected_and_nothing_restored(instance: Instance, store: BackupStore,
                                                    tamper: str) -> None:
    backup = store.create(instance, "x")
    directory = store.root / IID / backup.id
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if tamper == "content":
        (directory / "env").write_text((directory / "env").read_text() + "EVIL=1\n")
    elif tamper == "missing":
        (directory / "kong.yml").unlink()
    elif tamper == "manifest-sha":
        manifest["files"]["compose_file"]["sha256"] = "0" * 64
    elif tamper == "manifest-name":
        manifest["files"]["env_file"]["name"] = "../../../../etc/passwd"
    elif tamper == "manifest-unknown-key":
        manifest["files"]["users"] = dict(manifest["files"]["env_file"])
    elif tamper == "manifest-instance":
        manifest["instance_id"] = OTHER
    manifest_path.write_text(json.dumps(manifest))
    files = FileSet(instance)
    files.set_env("SITE_URL", "https://changed.example")
    files.write()
    before = snapshot(instance)
    with pytest.raises(BackupCorrupt):
        store.verify(IID, backup.id)
    with pytest.raises(BackupCorrupt):
        store.restore_files(instance, backup.id)
    assert snapshot(instance) == before


# --- restore -----------------------------------------------------------------------------


def test_restore_round_trip_keeps_other_records_and_modes(instance: Instance,
                                                          store: BackupStore) -> None:
    at_backup = snapshot(instance)
    backup = store.create(instance, "x")
    files = FileSet(instance)
    files.set_registry(("credentials", "dashboard_password"), "changed-pass")
    files.set_env("DASHBOARD_PASSWORD", "changed-pass")
    files.set_compose_env(["kong"], "DASHBOARD_PASSWORD", "changed-pass")
    files.set_kong_basicauth(None, "changed-pass")
    files.write()
    assert instance.files.registry is not None and instance.files.kong_file is not None
    # Meanwhile the manager changes another instance's record: the restore must keep it.
    registry = instance.files.registry
    manager_edit = registry.read_text().replace(f'"Project {OTHER}"', '"Renamed by manager"')
    registry.write_text(manager_edit)
    instance.files.kong_file.chmod(0o640)
    written = store.restore_files(instance, backup.id)
    assert {p.name for p in written} == {"instances.json", f".env-{IID}",
                                         f"docker-compose-{IID}.yml", "kong.yml"}
    now = snapshot(instance)
    for path, data in at_backup.items():
        if not path.endswith("instances.json"):
            assert now[path] == data, path
    restored = registry.read_text()
    start, end = registry_record_span(restored, IID)
    original = at_backup[str(registry)].decode()
    o_start, o_end = registry_record_span(original, IID)
    assert restored[start:end] == original[o_start:o_end]
    assert json.loads(restored)[OTHER]["name"] == "Renamed by manager"
    assert restored[:start] == manager_edit[:start]
    assert mode(instance.files.kong_file) == 0o640
    assert store.restore_files(instance, backup.id) == []  # already as backed up


# --- pg_dump -----------------------------------------------------------------------------


def _pg_dump_stub(tmp_path: Path, *, refuse: tuple[str, ...] = (), fail: bool = False) -> Path:
    record = tmp_path / "pg_dump_calls.jsonl"
    stub = tmp_path / "pg_dump"
    stub.write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(record)!r}, "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
user = [a for a in sys.argv if a.startswith("--username=")][0].split("=", 1)[1]
if user in {list(refuse)!r}:
    sys.stderr.write("pg_dump: error: FATAL:  password authentication failed for user "
                     + repr(user) + "\\n")
    sys.exit(1)
if {fail!r}:
    sys.stderr.write("pg_dump: error: query failed: permission denied for table secret\\n")
    sys.exit(1)
sys.stdout.buffer.write(b"PGDMP" + b"\\x00" * 100)
""")
    stub.chmod(0o755)
    return stub


def _database_says_yes(host: str, port: int, login: DbLogin, timeout: float) -> LoginResult:
    # The SCRAM-only login before pg_dump, answered as a database that took it would
    # (tests/unit/security/test_db_auth.py runs it against a listener that does not).
    return LoginResult("ok")


def _calls(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "pg_dump_calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_db_dump_password_only_in_env(instance: Instance, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "evil.example")
    monkeypatch.setenv("PGSERVICEFILE", "/tmp/evil")
    store = BackupStore(tmp_path / "b", pg_dump=str(_pg_dump_stub(tmp_path)),
                        login_check=_database_says_yes)
    backup = store.create(instance, "with db", db_dump=True)
    assert backup.has_db_dump and DB_DUMP in backup.files
    [call] = _calls(tmp_path)
    password = f"pg-pass-{IID}"
    assert all(password not in arg for arg in call["argv"])
    assert call["env"]["PGPASSWORD"] == password
    assert not {k for k in call["env"] if k.startswith("PG")} - {
        "PGPASSWORD", "PGCONNECT_TIMEOUT", "PGAPPNAME", "PGREQUIREAUTH"}
    assert call["env"]["PGREQUIREAUTH"] == "scram-sha-256"
    assert "--host=127.0.0.1" in call["argv"] and "--port=5433" in call["argv"]
    assert "--username=supabase_admin" in call["argv"] and "--format=custom" in call["argv"]
    dump = tmp_path / "b" / IID / backup.id / DB_DUMP
    assert mode(dump) == 0o600 and dump.read_bytes().startswith(b"PGDMP")
    store.verify(IID, backup.id)
    dump.write_bytes(b"PGDMP tampered")
    with pytest.raises(BackupCorrupt):
        store.verify(IID, backup.id)


def test_db_dump_falls_back_to_postgres_when_supabase_admin_is_refused(
        instance: Instance, tmp_path: Path) -> None:
    store = BackupStore(tmp_path / "b", pg_dump=str(_pg_dump_stub(
        tmp_path, refuse=("supabase_admin",))), login_check=_database_says_yes)
    store.create(instance, "with db", db_dump=True)
    users = [next(a for a in c["argv"] if a.startswith("--username=")) for c in _calls(tmp_path)]
    assert users == ["--username=supabase_admin", "--username=postgres"]


def test_db_dump_failure_keeps_no_backup(instance: Instance, tmp_path: Path) -> None:
    store = BackupStore(tmp_path / "b", pg_dump=str(_pg_dump_stub(tmp_path, fail=True)),
                        login_check=_database_says_yes)
    with pytest.raises(BackupFailed, match="permission denied"):
        store.create(instance, "with db", db_dump=True)
    assert list((tmp_path / "b" / IID).iterdir()) == []
    assert len(_calls(tmp_path)) == 1  # not a login problem: no second user tried


# --- the restore operation ---------------------------------------------------------------


def test_restore_body_restores_and_recreates_what_changed(instance: Instance,
                                                          store: BackupStore) -> None:
    at_backup = snapshot(instance)
    backup = store.create(instance, "x")
    files = FileSet(instance)
    files.set_compose_env(["auth"], "GOTRUE_SITE_URL", "https://changed.example")
    files.set_registry(("name",), "changed")
    files.write()
    ctx = PlainContext(instance, store)
    result = run(restore_body(backup.id), ctx)
    assert snapshot(instance) == at_backup
    assert ctx.compose.calls == [("auth",)]
    assert result["restored"] == backup.id and result["recreated"] == ["auth"]
    pre = store.get(IID, result["pre_restore_backup"])
    assert "before restoring" in pre.reason
    assert [s.split(":")[0] for s in ctx.step_names()] == [
        "verify_backup", "stage", "backup", "baseline_health", "write_files", "recreate",
        "verify_health"]


def test_restore_body_rolls_back_when_unhealthy(instance: Instance,
                                                store: BackupStore) -> None:
    backup = store.create(instance, "x")
    files = FileSet(instance)
    files.set_compose_env(["kong"], "DASHBOARD_PASSWORD", "newer-pass")
    files.set_kong_basicauth(None, "newer-pass")
    files.write()
    before = snapshot(instance)
    compose = PlainCompose()
    ctx = PlainContext(instance, store, compose=compose,
                       engine=PlainEngine(lambda: len(compose.calls) != 1))
    with pytest.raises(OperationError) as caught:
        run(restore_body(backup.id), ctx)
    assert caught.value.rolled_back is True
    assert snapshot(instance) == before
    assert compose.calls == [("kong",), ("kong",)]


def test_restore_body_refuses_a_corrupt_backup_before_touching_anything(
        instance: Instance, store: BackupStore) -> None:
    backup = store.create(instance, "x")
    (store.root / IID / backup.id / "kong.yml").write_text("evil: true\n")
    before = snapshot(instance)
    ctx = PlainContext(instance, store)
    with pytest.raises(BackupCorrupt):
        run(restore_body(backup.id), ctx)
    assert snapshot(instance) == before and ctx.compose.calls == []
    assert [b.id for b in store.list(IID)] == [backup.id]
