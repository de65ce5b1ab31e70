"""deploy/systemd/: the hardened unit for `ultrabase-doctor serve`, verified by systemd itself.

`systemd-analyze verify` loads the unit the way systemd would (every key known, every
value valid, the command executable) and prints nothing when it is clean. The command is
checked as installed here: the unit's /usr/local/bin/ultrabase-doctor (where `pip install .`
puts it as root) is pointed at this environment's console script for the check only.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "ultrabase-doctor.service"
DROP_IN = REPO / "deploy" / "systemd" / "ultrabase-doctor.service.d" / "dedicated-user.conf"
EXEC = "/usr/local/bin/ultrabase-doctor serve --config /etc/ultrabase-doctor/config.yaml"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = "systemd-analyze is not installed (Debian package systemd)"
        if in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return found


def _settings(*texts: str) -> dict[str, list[str]]:
    """Every Service key with its values, drop-ins after the unit (as systemd merges them)."""
    out: dict[str, list[str]] = {}
    for text in texts:
        parser = configparser.ConfigParser(strict=False, interpolation=None,
                                           comment_prefixes=("#", ";"))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(text)
        if parser.has_section("Service"):
            for key, value in parser.items("Service"):
                out.setdefault(key, []).append(value)
    return out


def _verify(tmp_path: Path, text: str) -> None:
    command = shutil.which("ultrabase-doctor")
    assert command is not None, "the console script is not installed"
    unit = tmp_path / "ultrabase-doctor.service"
    unit.write_text(text.replace("/usr/local/bin/ultrabase-doctor", command))
    done = subprocess.run([_analyze(), "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stderr


def test_the_unit_is_clean_for_systemd(tmp_path: Path) -> None:
    _verify(tmp_path, UNIT.read_text())


def test_the_dedicated_user_variant_is_clean_too(tmp_path: Path) -> None:
    # A drop-in's [Service] lines apply after the unit's: the same as appending them.
    _verify(tmp_path, UNIT.read_text() + "\n" + DROP_IN.read_text())


def test_the_unit_is_hardened_as_documented() -> None:
    service = _settings(UNIT.read_text())
    assert service["ExecStart"] == [EXEC]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "Restart": "on-failure",
                       "StateDirectory": "ultrabase-doctor", "StateDirectoryMode": "0700",
                       "UMask": "0077", "KillMode": "mixed"}.items():
        assert service[key] == [value], key
    assert set(service["CapabilityBoundingSet"][0].split()) == {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"}
    # Writable: the manager's registry directory and supabase-core, as config.example.yaml
    # names them; the store and backups are under the state directory.
    example = yaml.safe_load((REPO / "config.example.yaml").read_text())
    writable = set(service["ReadWritePaths"][0].split())
    assert writable == {str(Path(example["ultrabase"]["registry"]).parent),
                        example["ultrabase"]["core_dir"]}
    state = "/var/lib/ultrabase-doctor"
    assert example["store"]["path"].startswith(state + "/")
    assert example["actions"]["backups_dir"].startswith(state + "/")


def test_the_dedicated_user_drops_root() -> None:
    merged = _settings(UNIT.read_text(), DROP_IN.read_text())
    assert merged["User"] == ["ultrabase-doctor"]
    assert merged["SupplementaryGroups"] == ["docker"]
    assert merged["CapabilityBoundingSet"][-1] == ""  # the drop-in empties the set
