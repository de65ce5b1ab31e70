"""The access-control table: every route, caller and instance, with the status each must get.

Reusable over any Flask app that uses `exporter.web.access`:

    api = matrix_api(users_file)            # tokens and manager JWT settings for CALLERS
    write_matrix_users(users_file)          # the manager's users.json they refer to
    AccessControl(api, owners=lambda: MATRIX_OWNERS)   # and KNOWN_INSTANCES as known ids
    for case in matrix_cases(routes):       # e.g. pytest.mark.parametrize(..., ids=str)
        assert check_case(client, case) == []

Expected-status rule, in order: an open route lets everyone through (unless protected, when
it needs a viewer); no or bad credentials → 401; role below the route's → 403; an
instance-scoped route on an unknown instance or one outside the caller's scope → 404;
otherwise one of the route's `ok` statuses.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from flask.testing import FlaskClient
from pydantic import SecretStr

from exporter.access import ROLE_RANK, NotFound, Role
from exporter.config import ApiConfig, ManagerJwtConfig, TokenConfig

INSTANCE_PLACEHOLDER = "{instance_id}"

ALPHA, BETA, GHOST = "alpha", "beta", "ghost"
KNOWN_INSTANCES = frozenset({ALPHA, BETA})
# instance id → owner user id, as the registry says; dora owns alpha.
MATRIX_OWNERS: Mapping[str, str | None] = {ALPHA: "dora", BETA: "admin"}
MANAGER_SECRET = "matrix-manager-secret-0123456789abcdef"

ERROR_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


@dataclass(frozen=True)
class Route:
    """A route under test; `needed` None marks an open route (/metrics, /healthz)."""

    method: str
    path: str  # may hold {instance_id}
    needed: Role | None
    ok: frozenset[int] = frozenset({200})  # statuses meaning "let through"
    body: Any = None  # JSON body for POST/PUT

    @property
    def scoped(self) -> bool:
        """Whether the route names an instance."""
        return INSTANCE_PLACEHOLDER in self.path


@dataclass(frozen=True)
class Caller:
    """A caller: its Authorization header and what it should be allowed."""

    name: str
    authorization: str | None
    role: Role | None  # None: not authenticated
    instances: frozenset[str] | None = None  # None: every instance

    def sees(self, instance_id: str) -> bool:
        """Whether the instance is in this caller's scope."""
        return self.instances is None or instance_id in self.instances


@dataclass(frozen=True)
class Target:
    """The instance a scoped route is called on."""

    id: str
    known: bool


@dataclass(frozen=True)
class Case:
    """One request of the table and its expected status (None: one of route.ok)."""

    route: Route
    caller: Caller
    target: Target | None
    expected: int | None
    protect_open: bool = False

    @property
    def path(self) -> str:
        """The request path."""
        if self.target is None:
            return self.route.path
        return self.route.path.replace(INSTANCE_PLACEHOLDER, self.target.id)

    def __str__(self) -> str:
        want = "ok" if self.expected is None else str(self.expected)
        return f"{self.caller.name}-{self.route.method}-{self.path}-{want}"


@dataclass(frozen=True)
class _TokenSpec:
    name: str
    token: str
    role: Role
    instances: tuple[str, ...] = field(default=("*",))


_TOKENS = (
    _TokenSpec("viewer", "tok-viewer-5b1c0e7f", "viewer"),
    _TokenSpec("operator", "tok-operator-9d2a4c11", "operator"),
    _TokenSpec("operator-beta", "tok-operator-beta-77e0", "operator", (BETA,)),
    _TokenSpec("admin", "tok-admin-3f8e62aa", "admin"),
    # An admin narrowed to one instance: fleet-wide routes must leave the others out.
    _TokenSpec("admin-beta", "tok-admin-beta-51aa", "admin", (BETA,)),
    # Alertmanager's token: the webhook and nothing else.
    _TokenSpec("webhook", "tok-webhook-2c4e", "webhook"),
)

# users.json as the manager writes it: keyed by username, which is also the id.
MATRIX_USERS: Mapping[str, Mapping[str, Any]] = {
    "admin": {"id": "admin", "password_hash": "x", "role": "admin", "projects": ["*"]},
    "dora": {"id": "dora", "password_hash": "x", "role": "user", "projects": []},
}


def manager_jwt(user_id: str, *, role: str = "user", lifetime: float = 86400.0,
                secret: str = MANAGER_SECRET, algorithm: str = "HS256") -> str:
    """A JWT as the manager issues it: `{id, role, iat, exp}`."""
    now = int(time.time())
    claims = {"id": user_id, "role": role, "iat": now, "exp": now + int(lifetime)}
    return jwt.encode(claims, secret, algorithm=algorithm)


CALLERS: tuple[Caller, ...] = (
    Caller("none", None, None),
    Caller("bad", "Bearer tok-not-configured", None),
    *(Caller(t.name, f"Bearer {t.token}", t.role,
             None if "*" in t.instances else frozenset(t.instances)) for t in _TOKENS),
    Caller("jwt-user", f"Bearer {manager_jwt('dora')}", "operator", frozenset({ALPHA})),
    Caller("jwt-admin", f"Bearer {manager_jwt('admin', role='admin')}", "admin"),
    Caller("jwt-expired", f"Bearer {manager_jwt('admin', role='admin', lifetime=-60)}", None),
)

TARGETS: tuple[Target, ...] = (Target(ALPHA, True), Target(BETA, True), Target(GHOST, False))


def matrix_api(users_file: Path, *, protect_metrics: bool = False) -> ApiConfig:
    """The api config section under which CALLERS are who they claim."""
    return ApiConfig(
        tokens=tuple(TokenConfig(name=t.name, token_sha256=hashlib.sha256(
            t.token.encode()).hexdigest(), role=t.role, instances=t.instances)
            for t in _TOKENS),
        manager_jwt=ManagerJwtConfig(secret=SecretStr(MANAGER_SECRET), users_file=users_file),
        protect_metrics=protect_metrics,
    )


def write_matrix_users(path: Path) -> None:
    """Write the users.json the manager JWTs of CALLERS refer to."""
    path.write_text(json.dumps(MATRIX_USERS, indent=2), encoding="utf-8")


def _allowed(role: Role, needed: Role) -> bool:
    """The role table as the API documents it (webhook: the webhook route only)."""
    if needed == "webhook":
        return role in ("webhook", "operator", "admin")
    if role == "webhook":
        return False
    return ROLE_RANK[role] >= ROLE_RANK[needed]


def expected_status(route: Route, caller: Caller, target: Target | None, *,
                    protect_open: bool = False) -> int | None:
    """The status the request must get; None means one of route.ok."""
    needed = route.needed
    if needed is None:
        if not protect_open:
            return None
        needed = "viewer"
    if caller.role is None:
        return 401
    if not _allowed(caller.role, needed):
        return 403
    if target is not None and (not target.known or not caller.sees(target.id)):
        return 404
    return None


def matrix_cases(routes: Iterable[Route], callers: Sequence[Caller] = CALLERS,
                 targets: Sequence[Target] = TARGETS, *,
                 protect_open: bool = False) -> list[Case]:
    """Every route, caller and (for scoped routes) target, with its expected status."""
    out: list[Case] = []
    for route in routes:
        for caller in callers:
            for target in (targets if route.scoped else (None,)):
                out.append(Case(route, caller, target,
                                expected_status(route, caller, target,
                                                protect_open=protect_open),
                                protect_open))
    return out


def check_case(client: FlaskClient, case: Case) -> list[str]:
    """Make the request; the ways its answer differs from the table (empty: as expected)."""
    headers = {"Authorization": case.caller.authorization} if case.caller.authorization else {}
    response = client.open(case.path, method=case.route.method, headers=headers,
                           json=case.route.body)
    status = response.status_code
    if case.expected is None:
        if status not in case.route.ok:
            return [f"{case}: got {status}, wanted one of {sorted(case.route.ok)}: "
                    f"{response.get_data(as_text=True)[:200]}"]
        return []
    problems: list[str] = []
    if status != case.expected:
        problems.append(f"{case}: got {status}, wanted {case.expected}")
    body = response.get_json(silent=True)
    error = body.get("error") if isinstance(body, dict) else None
    if (not isinstance(body, dict) or not isinstance(error, dict) or set(body) != {"error"}
            or set(error) != {"code", "message"}
            or error["code"] != ERROR_CODES[case.expected]
            or not isinstance(error["message"], str) or not error["message"]):
        problems.append(f"{case}: error body {body!r}")
    # Out of scope and unknown must read the same, so scope cannot be probed.
    elif (case.expected == 404 and case.target is not None
          and error["message"] != str(NotFound(case.target.id))):
        problems.append(f"{case}: 404 message {error['message']!r} tells scope apart")
    if case.expected == 401 and response.headers.get("WWW-Authenticate") != "Bearer":
        problems.append(f"{case}: 401 without WWW-Authenticate: Bearer")
    credential = (case.caller.authorization or "").partition(" ")[2]
    if credential and credential in response.get_data(as_text=True):
        problems.append(f"{case}: the response echoes the credential")
    return problems


def run_matrix(client: FlaskClient, routes: Iterable[Route], **kwargs: Any) -> list[str]:
    """check_case over every case of matrix_cases(routes, **kwargs)."""
    return [p for case in matrix_cases(routes, **kwargs) for p in check_case(client, case)]
