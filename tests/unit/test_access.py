"""Access control core: API tokens, manager JWTs, roles and scopes."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from exporter.access import (
    AccessControl,
    AccessError,
    Forbidden,
    NotFound,
    Principal,
    Role,
    Unauthorized,
)
from exporter.config import ApiConfig, ManagerJwtConfig, TokenConfig
from exporter.errors import ConfigError, DoctorError, RegistryError

NOW = 1_760_000_000.0
SECRET = "manager-secret-for-tests-" + "0123456789abcdef" * 3  # long enough for HS512
TOKENS = {"viewer": "tok-v-aaaa", "operator": "tok-o-bbbb", "admin": "tok-a-cccc"}
OWNERS: dict[str, str | None] = {"alpha": "dora", "beta": "admin", "gamma": None}
USERS: dict[str, Any] = {
    "admin": {"id": "admin", "role": "admin", "projects": ["*"]},
    "dora": {"id": "dora", "role": "user", "projects": []},
    "erin": {"id": "erin", "role": "user", "projects": ["beta", "gamma"]},
    "fay": {"id": "fay", "role": "user", "projects": ["*"]},
    "gus": {"id": "gus", "role": "admin", "projects": []},
}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def token_config(name: str, token: str, role: Role, *instances: str) -> TokenConfig:
    return TokenConfig(name=name, token_sha256=sha(token), role=role,
                       instances=instances or ("*",))


def api(users_file: Path | None = None, *, tokens: tuple[TokenConfig, ...] | None = None,
        secret: str | None = SECRET) -> ApiConfig:
    if tokens is None:
        tokens = (token_config("viewer", TOKENS["viewer"], "viewer"),
                  token_config("operator", TOKENS["operator"], "operator", "alpha"),
                  token_config("admin", TOKENS["admin"], "admin"))
    manager = (ManagerJwtConfig(secret=None if secret is None else SecretStr(secret),
                                users_file=users_file) if users_file else None)
    return ApiConfig(tokens=tokens, manager_jwt=manager)


def mint(claims: Mapping[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(dict(claims), secret, algorithm=algorithm)


def manager_token(user_id: str, *, role: str = "user", exp: float = NOW + 86400) -> str:
    return mint({"id": user_id, "role": role, "iat": int(NOW), "exp": int(exp)})


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.json"
    path.write_text(json.dumps(USERS), encoding="utf-8")
    return path


@pytest.fixture
def control(users_file: Path) -> AccessControl:
    return AccessControl(api(users_file), owners=lambda: OWNERS, clock=lambda: NOW)


def refused(control: AccessControl, header: str | None) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        control.authenticate(header)
    return info.value


def rewrite(path: Path, users: Mapping[str, Any], bump: int) -> None:
    """Write users.json and move its mtime on, as a later save by the manager would."""
    before = path.stat().st_mtime_ns
    path.write_text(json.dumps(users), encoding="utf-8")
    os.utime(path, ns=(before + bump * 1_000_000_000, before + bump * 1_000_000_000))


# --- API tokens ---------------------------------------------------------------------------

def test_right_token_gives_its_principal(control: AccessControl) -> None:
    assert control.authenticate(bearer(TOKENS["operator"])) == Principal(
        name="operator", role="operator", instances=frozenset({"alpha"}), source="token")
    assert control.authenticate(bearer(TOKENS["admin"])).instances is None


def test_scheme_is_case_insensitive(control: AccessControl) -> None:
    # RFC 7235: the auth scheme is case-insensitive.
    assert control.authenticate(f"bearer {TOKENS['viewer']}").name == "viewer"
    assert control.authenticate(f"BEARER {TOKENS['viewer']}").name == "viewer"


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Bearer tok-v-aaab", "Bearer TOK-V-AAAA",
    f"Basic {TOKENS['viewer']}", f"Token {TOKENS['viewer']}", f"Bearer{TOKENS['viewer']}",
    f"Bearer {TOKENS['viewer']} extra", f"Bearer {TOKENS['viewer']}\u00e9",
    f"Bearer\t{TOKENS['viewer']}", "Bearer " + "x" * 9000, f"{TOKENS['viewer']}",
], ids=repr)
def test_missing_wrong_or_malformed_is_unauthorized(control: AccessControl,
                                                    header: str | None) -> None:
    error = refused(control, header)
    # One message for every reason; nothing of the credential in it.
    assert str(error) == Unauthorized.MESSAGE
    assert (error.status, error.code) == (401, "unauthorized")
    assert TOKENS["viewer"] not in repr(error)


def test_surrounding_spaces_are_tolerated(control: AccessControl) -> None:
    assert control.authenticate(f"  Bearer   {TOKENS['viewer']}  ").name == "viewer"


def test_every_hash_is_compared(control: AccessControl,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    configured = {bytes.fromhex(sha(t)) for t in TOKENS.values()}
    for header in (bearer(TOKENS["viewer"]), bearer(TOKENS["admin"]), bearer("nope")):
        calls.clear()
        with contextlib.suppress(Unauthorized):
            control.authenticate(header)
        # The first token matching still leaves every other hash compared: no early exit.
        assert len(calls) == 3 and set(calls) == configured, header


def test_star_anywhere_means_every_instance(tmp_path: Path) -> None:
    tokens = (token_config("mixed", "tok-mixed", "operator", "alpha", "*"),)
    control = AccessControl(api(tokens=tokens))
    assert control.authenticate(bearer("tok-mixed")).instances is None


def test_scoped_admin_token_keeps_its_scope() -> None:
    # The config narrows an admin token: honoured, never widened.
    tokens = (token_config("narrow", "tok-narrow", "admin", "alpha"),)
    principal = AccessControl(api(tokens=tokens)).authenticate(bearer("tok-narrow"))
    assert principal.role == "admin" and principal.instances == frozenset({"alpha"})


def test_no_token_value_in_reprs(control: AccessControl) -> None:
    principal = control.authenticate(bearer(TOKENS["admin"]))
    for text in (repr(control), repr(principal), repr(control._tokens)):
        assert TOKENS["admin"] not in text and sha(TOKENS["admin"]) not in text
        assert SECRET not in text


def test_failures_do_not_log_the_credential(control: AccessControl,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.access")
    expired = manager_token("admin", exp=NOW - 1)
    for header in (bearer("secret-guess-123"), bearer(expired), bearer(manager_token("zed"))):
        refused(control, header)
    assert caplog.records, "rejections are logged"
    assert "secret-guess-123" not in caplog.text and expired not in caplog.text


# --- manager JWTs -------------------------------------------------------------------------

def test_manager_admin_sees_everything(control: AccessControl) -> None:
    assert control.authenticate(bearer(manager_token("admin", role="admin"))) == Principal(
        name="ultrabase:admin", role="admin", instances=None, source="manager_jwt")


def test_admin_role_comes_from_users_json(control: AccessControl) -> None:
    # gus is admin in users.json even with no projects; the token's role claim is ignored.
    assert control.authenticate(bearer(manager_token("gus", role="user"))).role == "admin"
    dora = control.authenticate(bearer(manager_token("dora", role="admin")))
    assert dora.role == "operator"


def test_manager_user_as_owner(control: AccessControl) -> None:
    principal = control.authenticate(bearer(manager_token("dora")))
    assert principal.role == "operator" and principal.instances == frozenset({"alpha"})


def test_manager_user_via_projects(control: AccessControl) -> None:
    principal = control.authenticate(bearer(manager_token("erin")))
    assert principal.instances == frozenset({"beta", "gamma"})


def test_owner_and_projects_add_up(users_file: Path) -> None:
    control = AccessControl(api(users_file), owners=lambda: {"alpha": "erin"},
                            clock=lambda: NOW)
    assert control.authenticate(bearer(manager_token("erin"))).instances == frozenset(
        {"alpha", "beta", "gamma"})


def test_star_projects_means_every_instance(control: AccessControl) -> None:
    principal = control.authenticate(bearer(manager_token("fay")))
    assert principal.role == "operator" and principal.instances is None


def test_owners_are_asked_per_authentication(users_file: Path) -> None:
    owners: dict[str, str | None] = {}
    control = AccessControl(api(users_file), owners=lambda: owners, clock=lambda: NOW)
    token = bearer(manager_token("dora"))
    assert control.authenticate(token).instances == frozenset()
    owners["delta"] = "dora"
    assert control.authenticate(token).instances == frozenset({"delta"})


def test_unreadable_registry_leaves_only_projects(users_file: Path) -> None:
    def broken() -> Mapping[str, str | None]:
        raise RegistryError("registry unreadable")

    control = AccessControl(api(users_file), owners=broken, clock=lambda: NOW)
    assert control.authenticate(bearer(manager_token("dora"))).instances == frozenset()
    assert control.authenticate(bearer(manager_token("erin"))).instances == frozenset(
        {"beta", "gamma"})


def test_expiry_follows_the_clock(users_file: Path) -> None:
    now = [NOW]
    control = AccessControl(api(users_file), clock=lambda: now[0])
    token = bearer(manager_token("admin", exp=NOW + 10))
    assert control.authenticate(token).role == "admin"
    now[0] = NOW + 10
    refused(control, token)


@pytest.mark.parametrize("claims", [
    {"id": "admin", "role": "admin", "exp": int(NOW) - 1},
    {"id": "admin", "role": "admin"},  # no exp
    {"id": "admin", "exp": "tomorrow"},
    {"role": "admin", "exp": int(NOW) + 60},  # no id
    {"id": 7, "exp": int(NOW) + 60},
    {"id": "", "exp": int(NOW) + 60},
    {"id": "admin", "exp": int(NOW) + 60, "nbf": int(NOW) + 30},
], ids=["expired", "no-exp", "text-exp", "no-id", "number-id", "empty-id", "future-nbf"])
def test_bad_claims_are_refused(control: AccessControl, claims: dict[str, Any]) -> None:
    assert str(refused(control, bearer(mint(claims)))) == Unauthorized.MESSAGE


def test_wrong_secret_is_refused(control: AccessControl) -> None:
    forged = mint({"id": "admin", "exp": int(NOW) + 60}, secret=SECRET + "x")
    refused(control, bearer(forged))


def test_other_algorithms_are_refused(control: AccessControl) -> None:
    claims = {"id": "admin", "role": "admin", "exp": int(NOW) + 60}
    refused(control, bearer(mint(claims, algorithm="HS512")))

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    refused(control, bearer(unsigned))
    # The same claims signed properly pass, so the refusals above are about the algorithm.
    assert control.authenticate(bearer(mint(claims))).role == "admin"


def test_unknown_user_is_refused(control: AccessControl) -> None:
    refused(control, bearer(manager_token("zed")))


def test_users_json_changes_are_picked_up(control: AccessControl, users_file: Path) -> None:
    token = bearer(manager_token("dora"))
    assert control.authenticate(token).instances == frozenset({"alpha"})
    rewrite(users_file, {**USERS, "dora": {"id": "dora", "role": "user",
                                           "projects": ["gamma"]}}, bump=1)
    assert control.authenticate(token).instances == frozenset({"alpha", "gamma"})
    rewrite(users_file, {**USERS, "dora": {"id": "dora", "role": "admin"}}, bump=2)
    assert control.authenticate(token).role == "admin"
    rewrite(users_file, {k: v for k, v in USERS.items() if k != "dora"}, bump=3)
    refused(control, token)


def test_users_json_is_not_reread_while_unchanged(control: AccessControl,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    token = bearer(manager_token("dora"))
    control.authenticate(token)
    reads: list[Path] = []
    real = Path.read_text

    def counting(self: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    control.authenticate(token)
    control.authenticate(token)
    assert reads == []


def test_missing_or_broken_users_json_refuses_then_recovers(control: AccessControl,
                                                            users_file: Path) -> None:
    token = bearer(manager_token("admin"))
    users_file.unlink()
    refused(control, token)
    users_file.write_text('{"admin": {"id": "adm', encoding="utf-8")  # half written
    refused(control, token)
    rewrite(users_file, USERS, bump=1)
    assert control.authenticate(token).role == "admin"
    rewrite(users_file, {}, bump=2)
    refused(control, token)
    users_file.write_text("[]", encoding="utf-8")
    refused(control, token)


def test_manager_jwts_off_without_config(users_file: Path) -> None:
    token = bearer(manager_token("admin", role="admin"))
    refused(AccessControl(api(None), clock=lambda: NOW), token)
    # A section without a secret (e.g. its variable unset) turns them off too.
    no_secret = ApiConfig(manager_jwt=ManagerJwtConfig(users_file=users_file))
    control = AccessControl(no_secret, clock=lambda: NOW)
    assert not control.manager_jwt_enabled
    refused(control, token)


def test_users_file_falls_back_to_the_ultrabase_one(users_file: Path) -> None:
    config = ApiConfig(manager_jwt=ManagerJwtConfig(secret=SecretStr(SECRET)))
    with pytest.raises(ConfigError, match="users_file"):
        AccessControl(config)
    control = AccessControl(config, users_file=users_file, clock=lambda: NOW)
    assert control.authenticate(bearer(manager_token("admin"))).role == "admin"


def test_empty_secret_is_a_config_error(users_file: Path) -> None:
    with pytest.raises(ConfigError, match="secret"):
        AccessControl(api(users_file, secret=""))


def test_api_token_wins_over_jwt_parsing(users_file: Path) -> None:
    # A configured token shaped like a JWT is still a token.
    token = "a.b.c"
    control = AccessControl(api(users_file, tokens=(token_config("dotted", token, "viewer"),)))
    assert control.authenticate(bearer(token)).name == "dotted"


# --- authorization: roles by scopes -----------------------------------------------------

ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
KNOWN = frozenset({"alpha", "beta"})
# Authorization needs no users file: one shared instance keeps the big table fast.
PLAIN = AccessControl(api())


def known(instance_id: str) -> bool:
    return instance_id in KNOWN


def outcome(principal: Principal, needed: Role,
            instance_id: str | None) -> type[AccessError] | None:
    try:
        PLAIN.authorize(principal, needed, instance_id, known=known)
    except AccessError as exc:
        return type(exc)
    return None


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("needed", ROLES)
@pytest.mark.parametrize("scope", [None, frozenset({"alpha"}), frozenset()], ids=str)
@pytest.mark.parametrize("instance_id", [None, "alpha", "beta", "ghost", "Bad/Id"], ids=str)
def test_roles_by_scopes(role: Role, needed: Role,
                         scope: frozenset[str] | None, instance_id: str | None) -> None:
    principal = Principal(name="p", role=role, instances=scope, source="token")
    rank = {"viewer": 0, "operator": 1, "admin": 2}
    if rank[role] < rank[needed]:
        want: type[AccessError] | None = Forbidden  # before any instance check
    elif instance_id is None or (instance_id in KNOWN
                                 and (scope is None or instance_id in scope)):
        want = None
    else:
        want = NotFound
    assert outcome(principal, needed, instance_id) is want


def test_out_of_scope_reads_like_unknown() -> None:
    scoped = Principal(name="p", role="operator", instances=frozenset({"alpha"}),
                       source="token")
    everything = Principal(name="q", role="admin", instances=None, source="token")
    with pytest.raises(NotFound) as out_of_scope:
        PLAIN.authorize(scoped, "viewer", "beta", known=known)
    with pytest.raises(NotFound) as unknown:
        PLAIN.authorize(everything, "viewer", "beta", known=lambda _: False)
    assert str(out_of_scope.value) == str(unknown.value) == "instance beta not found"
    assert (out_of_scope.value.status, out_of_scope.value.code) == (404, "not_found")


def test_invalid_ids_are_not_echoed() -> None:
    admin = Principal(name="q", role="admin", instances=None, source="token")
    with pytest.raises(NotFound) as info:
        PLAIN.authorize(admin, "viewer", "<script>", known=lambda _: True)
    assert "<script>" not in str(info.value)


def test_known_is_only_asked_about_visible_valid_ids() -> None:
    asked: list[str] = []

    def spy(instance_id: str) -> bool:
        asked.append(instance_id)
        return True

    scoped = Principal(name="p", role="operator", instances=frozenset({"alpha"}),
                       source="token")
    for instance_id in ("beta", "../etc", "alpha"):
        with contextlib.suppress(NotFound):
            PLAIN.authorize(scoped, "viewer", instance_id, known=spy)
    assert asked == ["alpha"]


def test_forbidden_names_the_needed_role() -> None:
    viewer = PLAIN.authenticate(bearer(TOKENS["viewer"]))
    with pytest.raises(Forbidden) as info:
        PLAIN.authorize(viewer, "admin")
    assert (info.value.status, info.value.code) == (403, "forbidden")
    assert "admin" in str(info.value)


def test_anonymous_is_a_viewer_of_nothing() -> None:
    anonymous = PLAIN.anonymous()
    assert (anonymous.role, anonymous.source) == ("viewer", "anonymous")
    assert not anonymous.can_see("alpha")
    PLAIN.authorize(anonymous, "viewer")
    with pytest.raises(NotFound):
        PLAIN.authorize(anonymous, "viewer", "alpha", known=known)
    with pytest.raises(Forbidden):
        PLAIN.authorize(anonymous, "operator")


def test_errors_are_doctor_errors() -> None:
    assert all(issubclass(e, AccessError) and issubclass(e, DoctorError)
               for e in (Unauthorized, Forbidden, NotFound))


def test_principal_is_frozen() -> None:
    principal = PLAIN.authenticate(bearer(TOKENS["viewer"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.role = "admin"  # type: ignore[misc]

