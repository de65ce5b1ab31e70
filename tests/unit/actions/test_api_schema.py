"""The action API's /openapi.json: it covers every route, with validating request models.

schemathesis holds the API to this document for every role in tests/unit/test_api_fuzz.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.actions.test_api import World


@pytest.fixture(scope="module")
def schema_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = World(tmp_path_factory.mktemp("schema"))
    yield world
    world.close()


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
