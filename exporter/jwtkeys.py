"""Supabase API keys as HS256 JWTs: analysis against a secret, expiry, and generation.

Pure functions on plain values: no I/O, no clock (callers pass `now`). Signatures are
checked with PyJWT's HMAC algorithm directly, so a short secret is reported here as weak
instead of making PyJWT warn through the process-wide warnings machinery.
"""

from __future__ import annotations

import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode

MIN_SECRET_LENGTH = 32
ALGORITHM = "HS256"
ISSUER = "supabase"
# Ultrabase's manager issues keys valid for one year.
DEFAULT_LIFETIME_SECONDS = 365 * 24 * 3600
# Key name as Ultrabase stores it -> the role claim GoTrue and PostgREST expect.
EXPECTED_ROLES: Mapping[str, str] = {"anon": "anon", "service_role": "service_role"}

ExpiryState = Literal["valid", "expiring", "expired", "no_expiry"]
_HS256 = HMACAlgorithm(HMACAlgorithm.SHA256)


class KeyClaims(TypedDict, total=False):
    """KeyAnalysis as details show it (to_dict gives every key)."""

    exp: int | None
    iat: int | None
    role: str | None
    expected_role: str
    role_valid: bool
    algorithm: str | None
    signature_valid: bool | None
    error: str | None


@dataclass(frozen=True)
class KeyAnalysis:
    """What one API key says about itself and whether the given secret signed it."""

    name: str  # "anon" or "service_role"
    expected_role: str
    decodable: bool
    algorithm: str | None = None
    role: str | None = None
    issued_at: int | None = None
    expires_at: int | None = None
    # None when no secret was given or the key could not be decoded
    signature_valid: bool | None = None
    error: str | None = None  # why it could not be decoded (safe text)

    @property
    def role_valid(self) -> bool:
        """True when the role claim is the one this key must carry."""
        return self.role == self.expected_role

    def expiry(self, now: datetime, warning_days: int) -> ExpiryState:
        """valid, expiring (within warning_days), expired, or no_expiry."""
        if self.expires_at is None:
            return "no_expiry"
        left = self.expires_at - now.timestamp()
        if left <= 0:
            return "expired"
        if left <= warning_days * 86400:
            return "expiring"
        return "valid"

    def to_dict(self) -> KeyClaims:
        """The public, secret-free view (the key itself is never included)."""
        return {
            "exp": self.expires_at, "iat": self.issued_at, "role": self.role,
            "expected_role": self.expected_role, "role_valid": self.role_valid,
            "algorithm": self.algorithm, "signature_valid": self.signature_valid,
            "error": self.error,
        }


def signature_valid(token: str, secret: str) -> bool:
    """True when token is an HS256 JWT signed with secret."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = jwt.get_unverified_header(token)
        signature = base64url_decode(parts[2].encode())
    except (jwt.PyJWTError, binascii.Error, ValueError):
        return False
    if header.get("alg") != ALGORITHM:
        return False
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    return bool(_HS256.verify(signing_input, _HS256.prepare_key(secret), signature))


def analyse_key(name: str, token: str, secret: str | None) -> KeyAnalysis:
    """Decode a key's header and claims and, when a secret is given, check its signature."""
    expected = EXPECTED_ROLES.get(name, name)
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        return KeyAnalysis(name, expected, decodable=False,
                           error=f"not a JWT: {type(exc).__name__}")
    return KeyAnalysis(
        name, expected, decodable=True,
        algorithm=_str(header.get("alg")), role=_str(claims.get("role")),
        issued_at=_int(claims.get("iat")),
        expires_at=_int(claims.get("exp")),
        signature_valid=signature_valid(token, secret) if secret else None,
    )


def secret_bytes(secret: str) -> int:
    """The secret's length as HMAC sees it: its UTF-8 bytes."""
    return len(secret.encode())


def secret_weak(secret: str) -> bool:
    """True when the secret is shorter than the 32 bytes HS256 needs.

    PostgREST v12 verifies keys with hs-jose, whose HMAC refuses a key shorter than the
    digest (KeySizeTooSmall), so every request carrying a JWT fails; v13 refuses to start.
    """
    return secret_bytes(secret) < MIN_SECRET_LENGTH


def secrets_that_sign(token: str, candidates: Mapping[str, str | None]) -> list[str]:
    """Names of the candidate secrets that signed token (to say which secret a key fits)."""
    return sorted(name for name, secret in candidates.items()
                  if secret and signature_valid(token, secret))


def key_claims(role: str, issued_at: int,
               lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS) -> dict[str, Any]:
    """The claims Ultrabase puts in an API key: role, iss, iat, exp."""
    if lifetime_seconds <= 0:
        raise ValueError("lifetime_seconds must be positive")
    return {"role": role, "iss": ISSUER, "iat": issued_at, "exp": issued_at + lifetime_seconds}


def generate_key(secret: str, role: str, issued_at: int,
                 lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS) -> str:
    """A new HS256 API key for role; refuses a weak secret (it would be rejected anyway)."""
    if secret_weak(secret):
        raise ValueError(f"the JWT secret is shorter than {MIN_SECRET_LENGTH} bytes")
    return jwt.encode(key_claims(role, issued_at, lifetime_seconds), secret,
                      algorithm=ALGORITHM, headers={"typ": "JWT"})


def generate_keys(secret: str, issued_at: int,
                  lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS) -> dict[str, str]:
    """A fresh anon and service_role key pair signed with secret."""
    return {name: generate_key(secret, role, issued_at, lifetime_seconds)
            for name, role in EXPECTED_ROLES.items()}


def generate_secret(length: int = 48) -> str:
    """A random URL-safe secret of exactly length characters (at least 32)."""
    if length < MIN_SECRET_LENGTH:
        raise ValueError(f"a JWT secret needs at least {MIN_SECRET_LENGTH} characters")
    return secrets.token_urlsafe(length)[:length]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return None
