"""JWT key analysis and generation, on keys signed here with PyJWT."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from exporter.jwtkeys import (
    MIN_SECRET_LENGTH,
    analyse_key,
    generate_key,
    generate_keys,
    generate_secret,
    secret_weak,
    secrets_that_sign,
    signature_valid,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SECRET = "a-perfectly-fine-secret-of-40-characters!"
OTHER = "another-perfectly-fine-secret-0123456789"


def sign(claims: dict[str, object], secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A token signed with PyJWT; a short secret is allowed here on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=algorithm)


def claims(role: str, exp_in: timedelta | None = timedelta(days=200)) -> dict[str, object]:
    out: dict[str, object] = {"role": role, "iss": "supabase",
                              "iat": int((NOW - timedelta(days=10)).timestamp())}
    if exp_in is not None:
        out["exp"] = int((NOW + exp_in).timestamp())
    return out


def test_a_valid_key_verifies_and_reports_its_claims() -> None:
    token = sign(claims("anon"))
    report = analyse_key("anon", token, SECRET)
    assert report.decodable and report.signature_valid is True
    assert (report.role, report.expected_role, report.role_valid) == ("anon", "anon", True)
    assert report.algorithm == "HS256"
    assert report.expires_at == int((NOW + timedelta(days=200)).timestamp())
    assert report.expiry(NOW, warning_days=30) == "valid"


def test_a_key_signed_with_another_secret_does_not_verify() -> None:
    report = analyse_key("service_role", sign(claims("service_role"), OTHER), SECRET)
    assert report.decodable
    assert report.signature_valid is False
    assert report.role_valid  # claims are still read


def test_without_a_secret_the_signature_is_unknown_not_invalid() -> None:
    report = analyse_key("anon", sign(claims("anon")), None)
    assert report.signature_valid is None
    assert report.role == "anon"


def test_a_wrong_role_claim_is_reported() -> None:
    report = analyse_key("service_role", sign(claims("anon")), SECRET)
    assert report.signature_valid is True
    assert not report.role_valid
    assert report.to_dict()["role_valid"] is False


@pytest.mark.parametrize(("exp_in", "state"), [
    (timedelta(days=-1), "expired"),
    (timedelta(seconds=0), "expired"),
    (timedelta(days=10), "expiring"),
    (timedelta(days=30), "expiring"),
    (timedelta(days=31), "valid"),
    (None, "no_expiry"),
])
def test_expiry_states(exp_in: timedelta | None, state: str) -> None:
    report = analyse_key("anon", sign(claims("anon", exp_in)), SECRET)
    assert report.expiry(NOW, warning_days=30) == state


def test_an_expired_key_still_decodes_and_verifies() -> None:
    report = analyse_key("anon", sign(claims("anon", timedelta(days=-400))), SECRET)
    assert report.decodable and report.signature_valid is True
    assert report.expiry(NOW, 30) == "expired"


def test_garbage_is_not_decodable() -> None:
    report = analyse_key("anon", "not-a-jwt", SECRET)
    assert not report.decodable
    assert report.signature_valid is None
    assert report.error and "not a JWT" in report.error


def test_a_non_hs256_key_does_not_verify_against_the_secret() -> None:
    token = sign(claims("anon"), SECRET, algorithm="HS512")
    assert analyse_key("anon", token, SECRET).algorithm == "HS512"
    assert analyse_key("anon", token, SECRET).signature_valid is False


def test_a_tampered_payload_fails_verification() -> None:
    header, _, sig = sign(claims("anon")).split(".")
    forged_payload = sign(claims("service_role")).split(".")[1]
    assert not signature_valid(f"{header}.{forged_payload}.{sig}", SECRET)


def test_a_weak_secret_is_flagged_and_its_keys_still_verify_without_warnings() -> None:
    weak = "short-secret"
    assert secret_weak(weak)
    assert not secret_weak("x" * MIN_SECRET_LENGTH)
    token = sign(claims("anon"), weak)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verification must not go through PyJWT's warning
        assert analyse_key("anon", token, weak).signature_valid is True


def test_secrets_that_sign_names_the_matching_candidates() -> None:
    token = sign(claims("anon"), OTHER)
    found = secrets_that_sign(token, {"runtime:rest": OTHER, "runtime:db": SECRET,
                                      "env_file": None})
    assert found == ["runtime:rest"]


def test_generated_keys_verify_with_their_secret_and_carry_the_ultrabase_claims() -> None:
    issued = int(NOW.timestamp())
    keys = generate_keys(SECRET, issued)
    assert set(keys) == {"anon", "service_role"}
    for name, token in keys.items():
        decoded = jwt.decode(token, SECRET, algorithms=["HS256"],
                             options={"verify_exp": False})
        assert decoded == {"role": name, "iss": "supabase", "iat": issued,
                           "exp": issued + 365 * 24 * 3600}
        assert analyse_key(name, token, SECRET).signature_valid is True


def test_generation_refuses_a_weak_secret_and_a_bad_lifetime() -> None:
    with pytest.raises(ValueError, match="shorter than 32"):
        generate_key("short", "anon", 0)
    with pytest.raises(ValueError, match="positive"):
        generate_key(SECRET, "anon", 0, lifetime_seconds=0)


def test_generated_secrets_are_long_enough_and_random() -> None:
    first, second = generate_secret(), generate_secret()
    assert len(first) == 48 and first != second
    assert not secret_weak(generate_secret(32))
    with pytest.raises(ValueError):
        generate_secret(16)
