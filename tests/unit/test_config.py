"""Config loading: defaults, every error at once with its key path, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import load_config, parse_config
from exporter.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD_HASH = "a" * 64


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ultrabase:\n  registry: /srv/ultrabase/instances.json\n")
    config = load_config(path, environ={})
    assert config.diagnostics.cache_ttl_seconds == 300
    assert config.diagnostics.rate_limit_seconds == 120
    assert config.diagnostics.timeout_seconds == 5
    assert config.schedule.sweep_interval_seconds == 300
    assert config.store.history_limit == 100
    assert config.exporter.port == 9646 and config.actions.port == 9647


def test_every_error_is_reported_with_its_key_path() -> None:
    raw = {
        "docker": {"timout": 3},
        "diagnostics": {"timeout_seconds": -1},
        "api": {"tokens": [{"name": "x", "token_sha256": "nothex", "role": "boss"}]},
        "surprise": 1,
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={})
    text = str(caught.value)
    for expected in ("docker.timout: unknown key", "diagnostics.timeout_seconds",
                     "api.tokens[0].token_sha256", "api.tokens[0].role", "surprise: unknown key"):
        assert expected in text
    assert len(caught.value.problems) == 5


def test_consistency_errors_are_reported_together() -> None:
    raw = {
        "discovery": {"sources": ["ultrabase", "static"]},
        "diagnostics": {"thresholds": {"disk_low_free_percent": 5,
                                       "disk_critical_free_percent": 10}},
        "api": {"tokens": [{"name": "a", "token_sha256": GOOD_HASH, "role": "admin"},
                           {"name": "a", "token_sha256": GOOD_HASH, "role": "viewer",
                            "instances": ["../etc"]}]},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={})
    problems = caught.value.problems
    assert any("ultrabase.registry" in p for p in problems)
    assert any("discovery.static" in p for p in problems)
    assert any("disk_critical_free_percent" in p for p in problems)
    assert any("used more than once" in p for p in problems)
    assert any("not an instance id" in p for p in problems)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", environ={})
    assert "\n" not in str(caught.value)
    assert "cannot read config file" in str(caught.value)


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad, environ={})


def test_environment_overrides_secret_and_never_echoes_it() -> None:
    raw = {"discovery": {"sources": ["compose"]},
           "api": {"manager_jwt": {"secret": "file-" + "x" * 40}}}
    from_env = "from-env-" + "y" * 32
    config = parse_config(raw, environ={"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET": from_env})
    assert config.api.manager_jwt is not None and config.api.manager_jwt.secret is not None
    assert config.api.manager_jwt.secret.get_secret_value() == from_env
    assert from_env not in repr(config)


def test_invalid_value_is_not_echoed() -> None:
    raw = {"discovery": {"sources": ["compose"]},
           "api": {"tokens": [{"name": "t", "token_sha256": "super-secret-token",
                               "role": "admin"}]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={})
    assert "super-secret-token" not in str(caught.value)


def test_example_config_in_repo_is_valid() -> None:
    config = load_config(ROOT / "config.example.yaml", environ={})
    assert config.discovery.sources



def test_bad_rate_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"actions.rate_limit"):
        parse_config({"discovery": {"sources": ["compose"]},
                      "actions": {"rate_limit": "lots please"}}, environ={})
