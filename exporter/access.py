"""Who is calling and what they may touch: API tokens, Ultrabase manager JWTs, roles, scopes.

Framework-free: the HTTP services call `AccessControl.authenticate` with the raw
Authorization header and `AccessControl.authorize` with the role and instance a route needs.
Failures are `AccessError`s carrying the HTTP status and error code the APIs answer with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeGuard

import jwt

from exporter.config import INSTANCE_ID_PATTERN, ApiConfig, manager_secret_problem
from exporter.errors import ConfigError, DoctorError

log = logging.getLogger(__name__)

# viewer < operator < admin, each with the rights of the ones before it. webhook stands
# apart: Alertmanager's token may call the webhook (POST /api/alerts) and nothing else;
# operators and admins may call it too.
Role = Literal["viewer", "operator", "admin", "webhook"]
Source = Literal["token", "manager_jwt", "anonymous", "local"]

ROLE_RANK: Mapping[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}
_WEBHOOK_CALLERS: frozenset[Role] = frozenset({"webhook", "operator", "admin"})

# Longer credentials are refused unread rather than hashed: no real token comes near this.
_MAX_CREDENTIAL_LENGTH = 8192
_JWT_ALGORITHMS = ["HS256"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name (for audit), role and the instances it may touch."""

    name: str
    role: Role
    instances: frozenset[str] | None  # None: every instance
    source: Source

    def can_see(self, instance_id: str) -> bool:
        """Whether the instance is within this caller's scope."""
        return self.instances is None or instance_id in self.instances

    def has_role(self, needed: Role) -> bool:
        """Whether this caller's role is at least `needed`."""
        if needed == "webhook":
            return self.role in _WEBHOOK_CALLERS
        if self.role == "webhook":
            return False
        return ROLE_RANK[self.role] >= ROLE_RANK[needed]


class AccessError(DoctorError):
    """A request refused by access control; `status` and `code` are what the API answers."""

    status: ClassVar[int] = 403
    code: ClassVar[str] = "forbidden"


class Unauthorized(AccessError):
    """No credentials, or credentials that are not valid (one message for every reason)."""

    status = 401
    code = "unauthorized"
    MESSAGE: ClassVar[str] = "missing or invalid credentials"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class Forbidden(AccessError):
    """The caller's role is too low for the request."""

    status = 403
    code = "forbidden"

    def __init__(self, needed: Role) -> None:
        super().__init__(f"this request needs the {needed} role")


class NotFound(AccessError):
    """The instance is unknown or outside the caller's scope (indistinguishable on purpose)."""

    status = 404
    code = "not_found"

    def __init__(self, instance_id: str) -> None:
        # An id that cannot be an instance id is not echoed: it is arbitrary client input.
        if INSTANCE_ID_PATTERN.fullmatch(instance_id):
            super().__init__(f"instance {instance_id} not found")
        else:
            super().__init__("instance not found")


@dataclass(frozen=True, repr=False)
class _Token:
    """A configured API token: its digest and the principal it stands for."""

    digest: bytes
    principal: Principal


@dataclass(frozen=True)
class _UsersSnapshot:
    """users.json as last read, keyed by the file's identity so a change forces a re-read."""

    key: tuple[int, int, int]  # (inode, size, mtime_ns)
    users: Mapping[str, Any]


class AccessControl:
    """Authentication and authorization shared by the exporter and the action API."""

    def __init__(self, api: ApiConfig, *, users_file: Path | None = None,
                 owners: Callable[[], Mapping[str, str | None]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """Take tokens and manager-JWT settings from `api`."""
        # users_file: where users.json is when api.manager_jwt.users_file is unset (usually
        # ultrabase.users_file). owners: instance id -> owner user id, from the registry;
        # called once per manager-JWT authentication. clock: the time JWT expiry is judged by.
        self._protect_metrics = api.protect_metrics
        self._tokens = tuple(_token(t.name, t.token_sha256, t.role, t.instances)
                             for t in api.tokens)
        self._owners = owners
        self._clock = clock
        self._secret: bytes | None = None
        self._users_file: Path | None = None
        self._users: _UsersSnapshot | None = None
        self._users_problem: str | None = None
        self._lock = threading.Lock()
        manager = api.manager_jwt
        if manager is not None and manager.secret is None:
            log.warning("api.manager_jwt is set but has no secret: Ultrabase manager JWTs "
                        "are not accepted")
        elif manager is not None and manager.secret is not None:
            secret = manager.secret.get_secret_value()
            problem = manager_secret_problem(secret)
            if problem is not None:
                raise ConfigError(f"api.manager_jwt.secret: {problem}")
            path = manager.users_file or users_file
            if path is None:
                raise ConfigError("api.manager_jwt: needs users_file (or ultrabase.users_file) "
                                  "to find the manager's users")
            self._secret = secret.encode()
            self._users_file = path

    def __repr__(self) -> str:
        return (f"AccessControl(tokens={len(self._tokens)}, "
                f"manager_jwt={self._secret is not None})")

    @property
    def protect_metrics(self) -> bool:
        """Whether /metrics and /healthz need a viewer (api.protect_metrics)."""
        return self._protect_metrics

    @property
    def manager_jwt_enabled(self) -> bool:
        """Whether Ultrabase manager JWTs are accepted."""
        return self._secret is not None

    def anonymous(self) -> Principal:
        """The caller of an open route: a viewer of no instance."""
        return Principal(name="anonymous", role="viewer", instances=frozenset(),
                         source="anonymous")

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization: Bearer <token>` header, else Unauthorized."""
        credential = _bearer(authorization)
        if credential is None:
            log.debug("request without usable bearer credentials")
            raise Unauthorized()
        principal = self._match_token(credential)
        if principal is not None:
            return principal
        if self._secret is not None and credential.count(".") == 2:
            principal = self._manager_principal(credential)
            if principal is not None:
                return principal
        else:
            log.info("rejected a bearer credential: not a configured API token")
        raise Unauthorized()

    def authorize(self, principal: Principal, needed: Role, instance_id: str | None = None,
                  *, known: Callable[[str], bool] | None = None) -> None:
        """Raise Forbidden or NotFound unless the principal may make a `needed` request."""
        # The role is checked first, so a caller whose role is too low learns nothing about
        # instances. Without `known`, only the id's form and the caller's scope are checked.
        if not principal.has_role(needed):
            raise Forbidden(needed)
        if instance_id is None:
            return
        if (not INSTANCE_ID_PATTERN.fullmatch(instance_id)
                or not principal.can_see(instance_id)
                or (known is not None and not known(instance_id))):
            raise NotFound(instance_id)

    def _match_token(self, credential: str) -> Principal | None:
        digest = hashlib.sha256(credential.encode("ascii")).digest()
        found: Principal | None = None
        # Every configured digest is compared, with no early exit, so the time taken does
        # not reveal which token (or how many) came close.
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token.principal
        return found

    def _manager_principal(self, credential: str) -> Principal | None:
        assert self._secret is not None
        try:
            claims = jwt.decode(
                credential, self._secret, algorithms=_JWT_ALGORITHMS,
                # Time claims are checked below against the injected clock.
                options={"require": ["exp", "id"], "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False},
            )
        except jwt.InvalidTokenError as exc:
            log.info("rejected a manager JWT: %s", type(exc).__name__)
            return None
        now = self._clock()
        exp, nbf, user_id = claims.get("exp"), claims.get("nbf"), claims.get("id")
        # A NaN or infinite exp would never expire (NaN <= now is False).
        if not _is_number(exp) or exp <= now:
            log.info("rejected a manager JWT: expired or without a valid exp")
            return None
        if nbf is not None and (not _is_number(nbf) or nbf > now):
            log.info("rejected a manager JWT: not yet valid")
            return None
        if not isinstance(user_id, str) or not user_id:
            log.info("rejected a manager JWT: no valid id claim")
            return None
        users = self._read_users()
        # The manager looks users up by key (the username, which it also uses as the id).
        user = users.get(user_id) if users is not None else None
        if not isinstance(user, Mapping):
            log.info("rejected a manager JWT: user %r is not in users.json", user_id)
            return None
        return self._user_principal(user_id, user)

    def _user_principal(self, user_id: str, user: Mapping[str, Any]) -> Principal:
        name = f"ultrabase:{user_id}"
        # users.json, not the token's role claim, decides: a demotion takes effect at once.
        if user.get("role") == "admin":
            return Principal(name=name, role="admin", instances=None, source="manager_jwt")
        projects = user.get("projects")
        projects = projects if isinstance(projects, list) else []
        if "*" in projects:
            return Principal(name=name, role="operator", instances=None, source="manager_jwt")
        allowed = {p for p in projects if isinstance(p, str)}
        allowed |= self._owned_by(user_id)
        return Principal(name=name, role="operator", instances=frozenset(allowed),
                         source="manager_jwt")

    def _owned_by(self, user_id: str) -> set[str]:
        if self._owners is None:
            return set()
        try:
            owners = self._owners()
        except DoctorError as exc:
            # Without the registry only the user's projects count: fewer rights, never more.
            log.warning("instance owners unavailable for manager JWT scope: %s", exc)
            return set()
        return {iid for iid, owner in owners.items() if owner == user_id}

    def _read_users(self) -> Mapping[str, Any] | None:
        assert self._users_file is not None
        path = self._users_file
        with self._lock:
            try:
                st = os.stat(path)
            except OSError as exc:
                self._users = None
                self._note_users_problem(f"cannot read {path}: {exc.strerror or exc}")
                return None
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self._users is not None and self._users.key == key:
                return self._users.users
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                # Not cached: the manager rewrites the file in place, so a half-written
                # file is retried on the next request instead of locking everyone out.
                self._users = None
                self._note_users_problem(f"cannot parse {path}: {type(exc).__name__}")
                return None
            if not isinstance(data, dict):
                self._users = None
                self._note_users_problem(f"{path} does not hold a JSON object")
                return None
            self._users = _UsersSnapshot(key=key, users=data)
            self._users_problem = None
            return data

    def _note_users_problem(self, problem: str) -> None:
        # Logged once per distinct problem, not once per request.
        if problem != self._users_problem:
            log.warning("manager JWTs refused: %s", problem)
            self._users_problem = problem


def _token(name: str, token_sha256: str, role: Role, scopes: tuple[str, ...]) -> _Token:
    instances = None if "*" in scopes else frozenset(scopes)
    return _Token(digest=bytes.fromhex(token_sha256),
                  principal=Principal(name=name, role=role, instances=instances,
                                      source="token"))


def _bearer(authorization: str | None) -> str | None:
    """The credential of a `Bearer` header (scheme matched case-insensitively), else None."""
    if not authorization or len(authorization) > _MAX_CREDENTIAL_LENGTH:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip(" ")
    if scheme.lower() != "bearer" or not credential:
        return None
    # Visible ASCII only: anything else (spaces, controls, non-ASCII) is not a token.
    if not all("\x21" <= ch <= "\x7e" for ch in credential):
        return None
    return credential


def _is_number(value: object) -> TypeGuard[float]:
    """A JSON number that is a real point in time: not a bool, NaN or infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)
