"""schemathesis over both OpenAPI documents, with every role's token and scoped tokens.

Each generated request is sent once per caller: viewer, operator, admin and webhook
tokens, an operator and an admin narrowed to `beta`, and a manager JWT of a user who owns
only `alpha`. For every answer: no 5xx, the answer is as the document says (status,
content type, schema), and no instance outside the caller's scope is named, unless the
request itself named it (an unknown id is echoed as sent).

Both apps run over their WSGI interface on plain data (real store, runner, engine and
access control; plain operation bodies and Docker), built at import: schemathesis'
fixture-based loader does not work with this pytest. Examples per operation:
$UBD_SCHEMA_EXAMPLES (default 10); the whole pass costs about a minute of CPU. The examples
are derandomized: every run sends the same requests, so a failure is the code's, never
the draw's (a wider random search: raise UBD_SCHEMA_EXAMPLES locally).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.unit.access_matrix import ALPHA, BETA, manager_jwt
from tests.unit.actions.test_api import World as ActionWorld
from tests.unit.test_exporter_app import World as ExporterWorld

MAX_EXAMPLES = int(os.environ.get("UBD_SCHEMA_EXAMPLES", "10"))

# caller -> (Authorization header, the instance it must never see named, if scoped)
CALLERS: dict[str, tuple[str, str | None]] = {
    "viewer": ("Bearer tok-viewer-5b1c0e7f", None),
    "operator": ("Bearer tok-operator-9d2a4c11", None),
    "admin": ("Bearer tok-admin-3f8e62aa", None),
    "webhook": ("Bearer tok-webhook-2c4e", None),
    "operator-beta": ("Bearer tok-operator-beta-77e0", ALPHA),
    "admin-beta": ("Bearer tok-admin-beta-51aa", ALPHA),
    "jwt-user-alpha": (f"Bearer {manager_jwt('dora', lifetime=7 * 86400)}", BETA),
}

_ROOT = Path(tempfile.mkdtemp(prefix="ubd-fuzz-"))
(_ROOT / "actions").mkdir()
(_ROOT / "exporter").mkdir()
_ACTIONS = ActionWorld(_ROOT / "actions", protect=True)
_EXPORTER = ExporterWorld(_ROOT / "exporter", protect_metrics=True)
# Something about both instances in every fleet-wide answer: audit entries, operations.
for _instance in (ALPHA, BETA):
    _ACTIONS.app.test_client().post(f"/api/instances/{_instance}/backups?wait=true",
                                    json={"reason": "seed"},
                                    headers={"Authorization": CALLERS["admin"][0]})


def _cleanup() -> None:
    _ACTIONS.close()
    _EXPORTER.close()
    shutil.rmtree(_ROOT, ignore_errors=True)


atexit.register(_cleanup)
actions_schema = schemathesis.openapi.from_wsgi("/openapi.json", _ACTIONS.app)
exporter_schema = schemathesis.openapi.from_wsgi("/openapi.json", _EXPORTER.app)


def _sent(case: Any) -> str:
    """Everything the request carried that could name an instance."""
    return json.dumps([case.path_parameters, case.query, case.body], default=str).lower()


def _exercise(case: Any) -> None:
    for name, (authorization, foreign) in CALLERS.items():
        response = case.call_and_validate(headers={"Authorization": authorization})
        assert response.status_code < 500, (name, response.status_code, response.text[:300])
        if foreign is not None and foreign not in _sent(case):
            assert foreign not in response.text.lower(), \
                f"{name} was shown {foreign}: {case.method} {case.formatted_path}: " \
                f"{response.text[:300]}"


@actions_schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_action_api_for_every_caller(case: Any) -> None:
    _exercise(case)


@exporter_schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_exporter_api_for_every_caller(case: Any) -> None:
    _exercise(case)


@pytest.mark.parametrize("world", ["actions", "exporter"])
def test_fleet_wide_answers_hold_both_instances_for_the_unscoped(world: str) -> None:
    # The scope check above is only worth something if the data is there to leak.
    app = _ACTIONS.app if world == "actions" else _EXPORTER.app
    for instance in (ALPHA, BETA):
        path = (f"/api/audit?instance_id={instance}" if world == "actions"
                else "/api/instances/check-all-health")
        answer = app.test_client().get(path, headers={"Authorization": CALLERS["admin"][0]})
        assert f'"{instance}"' in answer.get_data(as_text=True)


def test_the_exporter_document_covers_every_route() -> None:
    documented = {(path, method) for path, item in exporter_schema.raw_schema["paths"].items()
                  for method in item}
    served = set()
    for rule in _EXPORTER.app.url_map.iter_rules():
        if rule.endpoint in ("static", "exporter_openapi.openapi"):
            continue
        path = rule.rule.replace("<instance_id>", "{instance_id}")
        served |= {(path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert documented == served
