"""Random per-instance secrets and the anon/service_role JWTs signed with them."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime, timedelta

import jwt

from fleet.model import Credentials

_ALPHABET = string.ascii_letters + string.digits
KEY_LIFETIME = timedelta(days=365)
# The `iss` claim of the fleet's keys, and the real manager's (server.js
# generateSupabaseKey: `iss: 'supabase-instance-manager'`).
ISSUER = "supabase"
MANAGER_ISSUER = "supabase-instance-manager"


def random_secret(length: int) -> str:
    """Letters and digits, starting with a letter (safe unquoted in YAML, env and URLs)."""
    return secrets.choice(string.ascii_letters) + "".join(
        secrets.choice(_ALPHABET) for _ in range(length - 1))


def manager_secret(length: int) -> str:
    """Letters and digits drawn as server.js generateSecurePassword draws them (any first
    character)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def sign_key(role: str, secret: str, issued: datetime, expires: datetime,
             issuer: str = ISSUER) -> str:
    """An HS256 API key `{role, iss, iat, exp}` as the manager creates them."""
    claims = {"role": role, "iss": issuer, "iat": int(issued.timestamp()),
              "exp": int(expires.timestamp())}
    return jwt.encode(claims, secret, algorithm="HS256")


def new_credentials(now: datetime | None = None) -> Credentials:
    """Fresh secrets for one instance; keys expire one year after `now`."""
    now = now or datetime.now(UTC)
    jwt_secret = random_secret(48)
    return Credentials(
        postgres_password=random_secret(32),
        jwt_secret=jwt_secret,
        anon_key=sign_key("anon", jwt_secret, now, now + KEY_LIFETIME),
        service_role_key=sign_key("service_role", jwt_secret, now, now + KEY_LIFETIME),
        dashboard_username="admin",
        dashboard_password=random_secret(24),
        logflare_api_key=random_secret(32),
    )


def manager_credentials(now: datetime | None = None) -> Credentials:
    """Secrets as the real manager makes them (server.js generateInstanceConfig at d18077b):
    a 64-character JWT secret, a 16-character db password, the fixed dashboard login
    admin/admin, a 32-character vault key and a 24-character logflare key (neither of
    which reaches the instance's files), keys issued by supabase-instance-manager."""
    now = now or datetime.now(UTC)
    jwt_secret = manager_secret(64)
    return Credentials(
        postgres_password=manager_secret(16),
        jwt_secret=jwt_secret,
        anon_key=sign_key("anon", jwt_secret, now, now + KEY_LIFETIME, MANAGER_ISSUER),
        service_role_key=sign_key("service_role", jwt_secret, now, now + KEY_LIFETIME,
                                  MANAGER_ISSUER),
        dashboard_username="admin",
        dashboard_password="admin",
        logflare_api_key=manager_secret(24),
        vault_enc_key=manager_secret(32),
    )


def wrong_secret_key(role: str, now: datetime | None = None) -> str:
    """A well-formed key for `role` signed with a secret no instance uses."""
    now = now or datetime.now(UTC)
    return sign_key(role, random_secret(48), now, now + KEY_LIFETIME)


def expired_key(role: str, secret: str, now: datetime | None = None) -> str:
    """A key for `role` signed with the right secret whose exp is a day in the past."""
    now = now or datetime.now(UTC)
    return sign_key(role, secret, now - KEY_LIFETIME - timedelta(days=1),
                    now - timedelta(days=1))


def other_valid_key(role: str, secret: str, now: datetime | None = None) -> str:
    """A valid key for `role` that differs from the instance's (another iat)."""
    now = (now or datetime.now(UTC)) - timedelta(minutes=7)
    return sign_key(role, secret, now, now + KEY_LIFETIME)
