"""L2 and L3 of the security review: symbolic links inside an instance's tree.

The attacks, in the real Ultrabase layout: `.env-<id>` replaced by a link to a host file
was read by GET config and copied into a backup; `volumes-<id>/api` (a directory) replaced
by a link to an outside directory let a config edit rewrite a file outside the tree;
PGDATA/PG_VERSION replaced by a link to a root-only file put its first 16 characters into a
viewer-readable step. Now no read or write follows a link anywhere below the instance's
root, directories included, and PG_VERSION is shown only when it is a version number.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from actions.backups import BackupFailed, BackupStore
from actions.files import FileSet, UnsafeEdit
from actions.operations.config_edit import current_config
from actions.operations.restart_state import path_state as _path_state
from actions.operations.restart_state import read_pg_version as _read_pg_version
from exporter.config import parse_config
from exporter.discovery.model import Instance
from exporter.discovery.ultrabase import ultrabase_candidates
from exporter.safefs import SymlinkRefused, read_bytes, replace_file
from tests.unit.actions.test_files import IID, OTHER, make_instance, write_manager_registry

HOST_SECRET = "HOST_ROOT_PASSWORD=hunter2\nSITE_URL=https://outside.example\n"


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    write_manager_registry(tmp_path, OTHER, IID)
    return make_instance(tmp_path)


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.env"
    secret.write_text(HOST_SECRET)
    secret.chmod(0o600)
    return outside


def test_a_linked_env_file_is_neither_shown_nor_backed_up(instance: Instance,
                                                          tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    env = instance.files.env_file
    assert env is not None
    env.unlink()
    env.symlink_to(outside / "secret.env")
    shown = current_config(instance)
    assert "outside.example" not in str(shown) and "hunter2" not in str(shown)
    assert shown["editable"] is False
    assert any("symbolic link" in p for p in shown["problems"])
    backups = BackupStore(tmp_path / "backups")
    with pytest.raises(BackupFailed, match="symbolic link"):
        backups.create(instance, "manual")
    assert not any("hunter2" in p.read_text(errors="replace")
                   for p in (tmp_path / "backups").rglob("*") if p.is_file())


def test_a_linked_directory_stops_the_edit_outside_the_tree(instance: Instance,
                                                           tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    kong = instance.files.kong_file
    assert kong is not None
    api = kong.parent
    (outside / "kong.yml").write_bytes(kong.read_bytes())
    before = (outside / "kong.yml").read_bytes()
    for entry in api.iterdir():
        entry.unlink()
    api.rmdir()
    api.symlink_to(outside, target_is_directory=True)
    files = FileSet(instance)
    with pytest.raises(UnsafeEdit, match="symbolic link"):
        files.set_kong_basicauth(None, "Outside-Write-1")
    # Even a write handed the path directly does not pass through the linked directory.
    root = instance.files.root
    assert root is not None
    with pytest.raises(SymlinkRefused):
        replace_file(root, kong, b"x: 1\n")
    with pytest.raises(SymlinkRefused):
        read_bytes(root, kong)
    assert (outside / "kong.yml").read_bytes() == before
    assert sorted(p.name for p in outside.iterdir()) == ["kong.yml", "secret.env"]
    assert "Outside-Write-1" not in str(current_config(instance))


def test_discovery_does_not_read_through_links(instance: Instance, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    kong = instance.files.kong_file
    assert kong is not None
    (outside / "kong.yml").write_bytes(kong.read_bytes())
    api = kong.parent
    for entry in api.iterdir():
        entry.unlink()
    api.rmdir()
    api.symlink_to(outside, target_is_directory=True)
    config = parse_config({"ultrabase": {"registry": str(tmp_path / "instances.json"),
                                         "core_dir": str(tmp_path / "supabase-core")},
                           "discovery": {"sources": ["ultrabase"]}}, environ={})
    candidates, _ = ultrabase_candidates(config.ultrabase)
    mine = next(c for c in candidates if c.id == IID)
    assert "kong_file" not in mine.file_credentials
    [problem] = [p for p in mine.problems if p.code == "INSTANCE_FILES_MISSING"]
    assert "symbolic link" in str(problem.evidence)


def test_pg_version_through_a_link_is_never_read(tmp_path: Path) -> None:
    root = tmp_path / "supabase-core"
    pgdata = root / f"volumes-{IID}" / "db" / "data"
    pgdata.mkdir(parents=True)
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$SALTSALT$HASH...:19000:0:99999:7:::\n")
    shadow.chmod(0o600)
    (pgdata / "PG_VERSION").symlink_to(shadow)
    assert _read_pg_version(pgdata, root) is None
    # A data dir swapped for a link: neither the version nor the entries behind it.
    (pgdata / "PG_VERSION").unlink()
    (pgdata / "PG_VERSION").write_text("15\n")
    assert _read_pg_version(pgdata, root) == "15"
    db = pgdata.parent
    (db / "data").rename(db / "real")
    (db / "data").symlink_to(tmp_path, target_is_directory=True)
    assert _read_pg_version(pgdata, root) is None
    state = _path_state(pgdata, root)
    assert state.kind == "symlink" and state.entries == frozenset()
    # Whatever a regular PG_VERSION holds, only a version number is shown.
    (db / "data").unlink()
    (db / "real").rename(db / "data")
    (pgdata / "PG_VERSION").write_text("root:$6$SALTSALT")
    assert _read_pg_version(pgdata, root) is None


def test_a_regular_layout_still_works(instance: Instance, tmp_path: Path) -> None:
    files = FileSet(instance)
    files.set_kong_basicauth(None, "Inside-Write-1")
    assert [p.name for p in files.write()] == ["kong.yml"]
    assert FileSet(instance).get_kong_basicauth()[1] == "Inside-Write-1"
    backup = BackupStore(tmp_path / "backups").create(instance, "manual")
    assert "kong.yml" in backup.files
    moved = dataclasses.replace(instance.files, root=None)
    assert FileSet(dataclasses.replace(instance, files=moved)).paths().keys() == \
        FileSet(instance).paths().keys()
