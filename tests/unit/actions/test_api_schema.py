"""schemathesis against /openapi.json: no 5xx, every answer as documented.

Runs over the app's WSGI interface (no server) with an admin token, so generated requests
get past access control and reach validation and the (plain) operation bodies. The app is
built at import: schemathesis' fixture-based loader does not work with this pytest.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.unit.actions.test_api import ADMIN, World

MAX_EXAMPLES = int(os.environ.get("UBD_SCHEMA_EXAMPLES", "15"))

_ROOT = Path(tempfile.mkdtemp(prefix="ubd-schema-"))
_WORLD = World(_ROOT)


def _cleanup() -> None:
    _WORLD.close()
    shutil.rmtree(_ROOT, ignore_errors=True)


atexit.register(_cleanup)
schema = schemathesis.openapi.from_wsgi("/openapi.json", _WORLD.app)


@pytest.fixture(scope="module")
def schema_world() -> Iterator[World]:
    yield _WORLD


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_document(case: Any) -> None:
    case.call_and_validate(headers=dict(ADMIN))


def test_document_covers_every_action_route(schema_world: World, tmp_path: Path) -> None:
    document = schema_world.app.test_client().get("/openapi.json").json
    paths = document["paths"]
    expected = {
        "/api/instances/{instance_id}/safe-restart": {"post"},
        "/api/instances/{instance_id}/restart-service": {"post"},
        "/api/instances/{instance_id}/repair-plan": {"get"},
        "/api/instances/{instance_id}/repair": {"post"},
        "/api/instances/{instance_id}/config": {"get", "put"},
        "/api/instances/{instance_id}/backups": {"get", "post"},
        "/api/instances/{instance_id}/backups/{backup_id}/restore": {"post"},
        "/api/operations/{op_id}": {"get"},
        "/api/audit": {"get"},
        "/api/alerts": {"post"},
        "/healthz": {"get"},
    }
    assert {p: set(v) for p, v in paths.items()} == expected
    # The request models are the validating ones: unknown fields are refused in the document.
    schemas = document["components"]["schemas"]
    for name in ("SafeRestartRequest", "RestartServiceRequest", "RepairRequest",
                 "ConfigEditRequest", "ConfigChanges", "BackupCreateRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    assert document["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"}}
    # Every constraint is a JSON Schema keyword (pydantic leaves "ge" etc. when misplaced).
    text = json.dumps(document)
    assert not re.search(r'"(ge|le|gt|lt|min_length|max_length)":', text)
    restart = paths["/api/instances/{instance_id}/safe-restart"]["post"]["responses"]
    assert {"202", "400", "401", "403", "404", "409", "413", "429"} <= set(restart)
