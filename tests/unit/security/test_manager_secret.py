"""H1 and I2 of the security review: manager JWTs signed with a guessable secret.

The attack: the Ultrabase manager falls back to a public default JWT secret, so anyone who
reads its source can sign `{"id": "admin"}` and, were the doctor configured with that
secret, become the doctor's admin. The doctor now refuses such a secret at start-up with a
config error naming the key, and never echoes the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr

from actions.cli import main
from exporter.access import AccessControl, Unauthorized
from exporter.cli import EXIT_USAGE
from exporter.config import ApiConfig, ManagerJwtConfig, parse_config
from exporter.errors import ConfigError

MANAGER_DEFAULT = "ultrabase_jwt_secret_change_in_production"
STRONG = "k" * 16 + "0123456789abcdef0123"  # 36 bytes


def _raw(secret: str, users: Path) -> dict[str, object]:
    return {"discovery": {"sources": ["compose"]},
            "api": {"manager_jwt": {"secret": secret, "users_file": str(users)}}}


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"admin": {"id": "admin", "role": "admin", "projects": ["*"]}}))
    return path


@pytest.mark.parametrize("secret", [
    MANAGER_DEFAULT, MANAGER_DEFAULT.upper(), f" {MANAGER_DEFAULT} ",
    "your-super-secret-jwt-token-with-at-least-32-characters-long",
    "x", "short-but-not-empty", "é" * 15,  # 30 bytes of UTF-8
])
def test_weak_or_public_secret_is_a_config_error_naming_the_key(secret: str,
                                                                users: Path) -> None:
    for raw, environ in ((_raw(secret, users), {}),
                         (_raw(STRONG, users), {"ULTRABASE_DOCTOR_MANAGER_JWT_SECRET": secret})):
        with pytest.raises(ConfigError) as caught:
            parse_config(raw, environ=environ)
        text = str(caught.value)
        assert "api.manager_jwt.secret" in text and "ULTRABASE_DOCTOR_MANAGER_JWT_SECRET" in text
        if len(secret.strip()) > 3:  # "x" is in any English sentence
            assert secret.strip() not in text


def test_access_control_built_directly_refuses_it_too(users: Path) -> None:
    api = ApiConfig(manager_jwt=ManagerJwtConfig(secret=SecretStr(MANAGER_DEFAULT),
                                                 users_file=users))
    with pytest.raises(ConfigError, match=r"api\.manager_jwt\.secret: is a publicly known"):
        AccessControl(api)


def test_the_cli_will_not_start_with_the_managers_default(tmp_path: Path, users: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(_raw(MANAGER_DEFAULT, users)))
    assert main(["serve", "--config", str(config)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "api.manager_jwt.secret" in err and "publicly known default" in err
    assert MANAGER_DEFAULT not in err


def test_a_strong_secret_still_works_and_forged_tokens_fail(users: Path) -> None:
    config = parse_config(_raw(STRONG, users), environ={})
    control = AccessControl(config.api)
    now = int(time.time())
    good = jwt.encode({"id": "admin", "exp": now + 60}, STRONG, algorithm="HS256")
    assert control.authenticate(f"Bearer {good}").role == "admin"
    forged = jwt.encode({"id": "admin", "role": "admin", "exp": now + 3600}, MANAGER_DEFAULT,
                        algorithm="HS256")
    with pytest.raises(Unauthorized):
        control.authenticate(f"Bearer {forged}")


@pytest.mark.parametrize("claim", ["Infinity", "NaN", "1e999"])
def test_an_exp_that_never_comes_is_refused(claim: str, users: Path) -> None:
    # I2: json.loads reads these as float('inf') / float('nan'): `NaN <= now` is False.
    control = AccessControl(parse_config(_raw(STRONG, users), environ={}).api)
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}').decode()
    payload = jwt.utils.base64url_encode(
        f'{{"id":"admin","exp":{claim}}}'.encode()).decode()
    signing = f"{header}.{payload}".encode()
    signature = jwt.utils.base64url_encode(
        hmac.new(STRONG.encode(), signing, hashlib.sha256).digest()).decode()
    with pytest.raises(Unauthorized):
        control.authenticate(f"Bearer {header}.{payload}.{signature}")
