"""I1 of the security review: `$`-anchored id patterns took a trailing newline.

`INSTANCE_ID_PATTERN.match("4a3c9fac\\n")` matched (`$` also matches before a final
newline), so `GET /api/instances/4a3c9fac%0a/...` answered `instance 4a3c9fac\\n not found`.
Ids are now matched whole; such an id is unknown and not echoed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.backups import BackupNotFound, BackupStore
from exporter.access import NotFound
from exporter.errors import InstanceNotFoundError
from tests.unit.access_matrix import ALPHA
from tests.unit.actions.test_api import ADMIN, BACKUP_ID, World


@pytest.mark.parametrize("suffix", ["%0a", "%0A", "%0d%0a"])
def test_a_trailing_newline_is_no_id(tmp_path: Path, suffix: str) -> None:
    world = World(tmp_path)
    try:
        answer = world.app.test_client().get(f"/api/instances/{ALPHA}{suffix}/backups",
                                              headers=ADMIN)
        assert answer.status_code == 404
        assert answer.json["error"]["message"] == "instance not found"
        with pytest.raises(InstanceNotFoundError):
            world.engine.instance(ALPHA + "\n")
        assert world.runner.get("0" * 32 + "\n") is None
    finally:
        world.close()


def test_every_id_pattern_matches_whole(tmp_path: Path) -> None:
    assert str(NotFound(ALPHA + "\n")) == "instance not found"
    store = BackupStore(tmp_path)
    (tmp_path / ALPHA / BACKUP_ID).mkdir(parents=True)
    with pytest.raises(BackupNotFound):
        store.get(ALPHA, BACKUP_ID + "\n")
    with pytest.raises(BackupNotFound):
        store.get(ALPHA + "\n", BACKUP_ID)
