"""The Ultrabase registry in both formats, with malformed records isolated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.discovery.registry import parse_registry, read_registry
from exporter.errors import RegistryError
from tests.unit.layout import DATA


def test_reference_registry_current_format() -> None:
    registry = read_registry(DATA / "instances.json")
    assert registry.format == "keyed"
    (record,) = registry.records
    assert record.id == "4a3c9fac"
    assert record.ports["kong_http"] == 8100 and record.ports["postgres_ext"] == 5432
    assert record.credentials["jwt_secret"] == "jwt_secret_key_123"
    assert record.compose_file == "docker-compose-4a3c9fac.yml"
    assert record.problems == ()


def test_reference_registry_list_format_empty() -> None:
    registry = read_registry(DATA / "instances.list-format.json")
    assert registry.format == "list" and registry.records == ()


def test_list_format_with_records() -> None:
    data = {"instances": [{"id": "abcd1234", "name": "one"}, {"id": "ef012345", "name": "two"}],
            "nextPort": 8200}
    registry = parse_registry(data, Path("r.json"))
    assert [r.id for r in registry.records] == ["abcd1234", "ef012345"]


def test_malformed_records_do_not_hide_others() -> None:
    data = {
        "good0001": {"id": "good0001", "name": "fine", "ports": {"kong_http": 8100}},
        "bad00002": {"id": "bad00002", "name": 7, "ports": {"kong_http": "lots"},
                     "credentials": {"jwt_secret": 42}},
        "NOT VALID": {"name": "x"},
        "bad00003": "a string",
    }
    registry = parse_registry(data, Path("r.json"))
    ids = [r.id for r in registry.records]
    assert ids == ["good0001", "bad00002", "bad00003"]
    good, bad, text = registry.records
    assert good.problems == ()
    codes = {p.code for p in bad.problems}
    assert codes == {"INSTANCE_RECORD_INVALID"}
    assert len(bad.problems) == 3  # name, port, credential
    assert text.problems and text.problems[0].code == "INSTANCE_RECORD_INVALID"
    assert [p.code for p in registry.problems] == ["INSTANCE_RECORD_INVALID"]


def test_file_names_in_record_cannot_escape_core_dir() -> None:
    data = {"abcd1234": {"id": "abcd1234", "name": "x",
                         "docker": {"compose_file": "../../etc/passwd", "env_file": "/etc/shadow",
                                    "volumes_dir": ".."}}}
    (record,) = parse_registry(data, Path("r.json")).records
    assert record.compose_file == "docker-compose-abcd1234.yml"
    assert record.env_file == ".env-abcd1234"
    assert record.volumes_dir == "volumes-abcd1234"
    assert len(record.problems) == 3


def test_unreadable_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read the Ultrabase registry"):
        read_registry(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        read_registry(broken)
    broken.write_text(json.dumps([1, 2]))
    with pytest.raises(RegistryError, match="must be a JSON object"):
        read_registry(broken)


def test_record_repr_holds_no_secret() -> None:
    (record,) = read_registry(DATA / "instances.json").records
    assert "secure_password_123" not in repr(record)
