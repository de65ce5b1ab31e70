"""The console over the action API's real runner, store, engine and access control.

Signed in as each caller of the access table; pages, forms and what they start; the
session cookie, form tokens and security headers; escaping; English and Portuguese.
"""

from __future__ import annotations

import base64
import json
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from actions.console import i18n
from actions.console.session import CONTENT_SECURITY_POLICY, KEY_FILE, SessionKeeper
from exporter.config import StaticInstance
from exporter.diagnostic import Diagnostic
from exporter.issues import CATALOGUE, make_issue
from tests.unit.access_matrix import ALPHA, BETA, CALLERS, Caller, Route, matrix_cases
from tests.unit.actions.test_api import ADMIN, OPERATOR, OPERATOR_BETA, VIEWER, World

TEMPLATES = Path(__file__).resolve().parents[3] / "actions" / "console" / "templates"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FINISHED = ("succeeded", "failed", "rolled_back")


def credential(header: dict[str, str]) -> str:
    return header["Authorization"].partition(" ")[2]


def form_token(client: FlaskClient, path: str = "/login") -> str:
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found, f"no form token on {path}"
    return found.group(1)


def sign_in(client: FlaskClient, token: str, **headers: str) -> Any:
    return client.post("/login", data={"csrf_token": form_token(client), "credential": token,
                                       "next": "/"}, headers=headers)


def current_config(instance: Any) -> dict[str, Any]:
    """The shape of actions.operations.config_edit.current_config, with plain values."""
    def field(kind: str, value: Any, secret: bool = False) -> dict[str, Any]:
        return {"value": value, "type": kind, "secret": secret, "description": kind,
                "in_sync": True, "places": ["registry"], "recreates": []}

    return {"editable": True, "not_editable_because": None, "problems": [], "fields": {
        "name": field("str", instance.name), "disable_signup": field("bool", False),
        "jwt_expiry": field("int", 3600), "dashboard_password": field("str", "********", True)}}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path, bodies={"current_config": current_config})
    yield made
    made.close()


def signed_in(world: World, header: dict[str, str]) -> FlaskClient:
    client = world.app.test_client()
    assert sign_in(client, credential(header)).status_code == 303
    return client


def wait_finished(client: FlaskClient, location: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = client.get(location + "?partial=steps").get_data(as_text=True)
        status = re.search(r'data-status="([a-z_]+)"', text)
        if status and status.group(1) in FINISHED:
            return status.group(1)
        time.sleep(0.05)
    raise AssertionError(f"{location} did not finish")


# signing in and the cookie ------------------------------------------------------------------


def test_pages_need_a_sign_in(world: World) -> None:
    client = world.app.test_client()
    for path in ("/", f"/instances/{ALPHA}", f"/instances/{ALPHA}/history"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    posted = client.post(f"/instances/{ALPHA}/safe-restart", data={})
    assert posted.status_code in (400, 401)
    assert world.operations() == 0


def test_bad_and_expired_credentials_are_refused(world: World) -> None:
    for caller in CALLERS:
        if caller.role is None and caller.authorization:
            client = world.app.test_client()
            response = sign_in(client, caller.authorization.partition(" ")[2])
            assert response.status_code == 401, caller.name
            assert "not accepted" in response.get_data(as_text=True)
            assert client.get("/").status_code == 302


def test_session_cookie_is_strict_and_never_holds_the_token(world: World) -> None:
    client = world.app.test_client()
    response = sign_in(client, credential(ADMIN))
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    value = cookie.split(";")[0].partition("=")[2]
    payload = value.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert credential(ADMIN) not in value and credential(ADMIN) not in decoded
    assert set(json.loads(decoded)) <= {"sid", "csrf_token", "_permanent", "lang"}


def test_cookie_is_secure_over_https(world: World) -> None:
    client = world.app.test_client()
    page = client.get("/login", base_url="https://localhost")
    token = CSRF.search(page.get_data(as_text=True))
    assert token and "Secure" in page.headers["Set-Cookie"]
    response = client.post("/login", base_url="https://localhost", data={
        "csrf_token": token.group(1), "credential": credential(ADMIN), "next": "/"})
    assert response.status_code == 303 and "Secure" in response.headers["Set-Cookie"]


def test_sign_out_ends_the_session_on_the_server(world: World) -> None:
    client = signed_in(world, ADMIN)
    cookie = client.get_cookie("ubd_console")
    assert cookie is not None
    token = form_token(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    replay = world.app.test_client()
    replay.set_cookie("ubd_console", cookie.value)
    assert replay.get("/").status_code == 302


def test_session_key_is_generated_once_and_private(world: World, tmp_path: Path) -> None:
    key = tmp_path / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) >= 32
    (tmp_path / "again").mkdir()
    again = World(tmp_path / "again")
    try:
        assert again.app.secret_key != world.app.secret_key
    finally:
        again.close()


def test_sessions_expire_and_are_bounded() -> None:
    now = [1000.0]
    keeper = SessionKeeper(60, max_sessions=2, clock=lambda: now[0])
    first = keeper.open("a")
    assert keeper.credential(first) == "a"
    keeper.open("b")
    keeper.open("c")
    assert keeper.credential(first) is None and len(keeper) == 2
    now[0] += 61
    assert all(keeper.credential(s) is None for s in list(keeper._held))


# access: role and scope ---------------------------------------------------------------------

PAGES = [
    Route("GET", "/", "viewer"),
    Route("GET", "/instances/{instance_id}", "viewer"),
    Route("GET", "/instances/{instance_id}/history", "viewer"),
    Route("GET", "/instances/{instance_id}/logs", "viewer"),
    Route("GET", "/instances/{instance_id}/repair", "viewer"),
    Route("GET", "/instances/{instance_id}/config", "viewer"),
    Route("GET", "/instances/{instance_id}/backups", "viewer"),
    Route("GET", "/instances/{instance_id}/restart", "operator"),
    Route("GET", "/instances/{instance_id}/audit", "admin"),
    Route("POST", "/instances/{instance_id}/safe-restart", "operator", ok=frozenset({303})),
    Route("POST", "/instances/{instance_id}/backups", "operator", ok=frozenset({303})),
]


def test_every_page_by_role_and_scope(world: World) -> None:
    clients: dict[str, FlaskClient] = {}
    problems: list[str] = []
    for case in matrix_cases(PAGES):
        caller: Caller = case.caller
        if caller.role is None:
            continue  # refused at sign-in: see test_bad_and_expired_credentials_are_refused
        client = clients.get(caller.name)
        if client is None:
            client = world.app.test_client()
            assert sign_in(client, caller.authorization.partition(" ")[2]).status_code == 303
            clients[caller.name] = client
        if case.route.method == "POST":
            response = client.post(case.path, data={"csrf_token": form_token(client, "/")})
            if response.status_code == 303:
                wait_finished(client, response.headers["Location"])
        else:
            response = client.get(case.path)
        wanted = case.route.ok if case.expected is None else {case.expected}
        if response.status_code not in wanted:
            problems.append(f"{case}: got {response.status_code}")
        text = response.get_data(as_text=True)
        if case.expected == 404 and "Instance not found." not in text:
            problems.append(f"{case}: 404 page does not read like any unknown instance")
    assert problems == []


def test_viewer_sees_no_action_buttons(world: World) -> None:
    client = signed_in(world, VIEWER)
    for path in ("/", f"/instances/{ALPHA}", f"/instances/{ALPHA}/repair",
                 f"/instances/{ALPHA}/config", f"/instances/{ALPHA}/backups"):
        text = client.get(path).get_data(as_text=True)
        assert "data-action=" not in text, path
        posts = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', text)
        assert set(posts) <= {"/language", "/logout"}, (path, posts)
    operator = signed_in(world, OPERATOR).get(f"/instances/{ALPHA}").get_data(as_text=True)
    assert 'data-action="diagnose"' in operator and 'data-action="restart"' in operator


def test_scoped_token_sees_only_its_instance(world: World) -> None:
    client = signed_in(world, OPERATOR_BETA)
    fleet = client.get("/").get_data(as_text=True)
    assert f'data-instance="{BETA}"' in fleet and f'data-instance="{ALPHA}"' not in fleet
    assert client.get(f"/instances/{ALPHA}").status_code == 404
    assert client.get("/instances/ghost").status_code == 404


def test_operation_of_another_scope_reads_as_not_found(world: World) -> None:
    admin = signed_in(world, ADMIN)
    started = admin.post(f"/instances/{ALPHA}/backups",
                         data={"csrf_token": form_token(admin, "/")})
    location = started.headers["Location"]
    assert wait_finished(admin, location) == "succeeded"
    assert signed_in(world, OPERATOR_BETA).get(location).status_code == 404


# forms --------------------------------------------------------------------------------------


def test_a_post_without_the_form_token_is_refused(world: World) -> None:
    client = signed_in(world, ADMIN)
    for data in ({}, {"csrf_token": "forged-" + "x" * 40}):
        response = client.post(f"/instances/{ALPHA}/safe-restart", data=data)
        assert response.status_code == 400
        assert "form token" in response.get_data(as_text=True)
    other = signed_in(world, OPERATOR)
    stolen = form_token(other, "/")
    assert client.post(f"/instances/{ALPHA}/safe-restart",
                       data={"csrf_token": stolen}).status_code == 400
    assert world.operations() == 0 and world.plain.calls == []


def test_safe_restart_runs_through_the_runner_and_shows_its_steps(world: World) -> None:
    client = signed_in(world, OPERATOR)
    response = client.post(f"/instances/{ALPHA}/safe-restart",
                           data={"csrf_token": form_token(client, "/")})
    assert response.status_code == 303
    location = response.headers["Location"]
    assert wait_finished(client, location) == "succeeded"
    page = client.get(location).get_data(as_text=True)
    assert 'id="steps"' in page and ">safe_restart<" in page
    assert world.plain.calls == [("safe_restart", ALPHA, {"components": None})]
    entry = world.store.audit(10, 0, instance_id=ALPHA)[0]
    assert (entry.who, entry.action, entry.result) == ("operator", "safe_restart",
                                                      "succeeded")


def test_a_second_operation_names_the_running_one(world: World) -> None:
    world.plain.hold("backup")
    client = signed_in(world, OPERATOR)
    token = form_token(client, "/")
    first = client.post(f"/instances/{ALPHA}/backups", data={"csrf_token": token})
    second = client.post(f"/instances/{ALPHA}/safe-restart", data={"csrf_token": token})
    assert second.status_code == 409
    op_id = first.headers["Location"].rsplit("/", 1)[1]
    assert f"/operations/{op_id}" in second.get_data(as_text=True)
    world.plain.release()
    assert wait_finished(client, first.headers["Location"]) == "succeeded"


def test_restart_of_an_unknown_component_is_refused_and_audited(world: World) -> None:
    client = signed_in(world, OPERATOR)
    response = client.post(f"/instances/{ALPHA}/restart-service",
                           data={"csrf_token": form_token(client, "/"), "component": "nope"})
    assert response.status_code == 400
    assert "unknown component" in response.get_data(as_text=True)
    assert world.operations() == 0
    assert world.store.audit(5, 0, instance_id=ALPHA)[0].result == "refused"


def test_config_form_validates_like_the_api(world: World) -> None:
    client = signed_in(world, OPERATOR)
    token = form_token(client, "/")
    bad = client.post(f"/instances/{ALPHA}/config",
                      data={"csrf_token": token, "name": "bad\nname"})
    assert bad.status_code == 400 and 'id="config-error"' in bad.get_data(as_text=True)
    empty = client.post(f"/instances/{ALPHA}/config", data={"csrf_token": token})
    assert empty.status_code == 400
    assert world.operations() == 0
    good = client.post(f"/instances/{ALPHA}/config",
                       data={"csrf_token": token, "name": "Renamed", "disable_signup": "true",
                             "jwt_expiry": "3600"})
    assert good.status_code == 303, good.get_data(as_text=True)
    assert wait_finished(client, good.headers["Location"]) == "succeeded"
    assert world.plain.calls[-1] == ("config_edit", ALPHA,
                                     {"keys": ["disable_signup", "jwt_expiry", "name"]})


def test_diagnostics_are_single_flight_and_rate_limited(world: World) -> None:
    world.check.delay = 0.6
    client = signed_in(world, OPERATOR)
    token = form_token(client, "/")
    first = client.post(f"/instances/{ALPHA}/diagnose", data={"csrf_token": token})
    assert first.status_code == 303
    page = client.get(f"/instances/{ALPHA}").get_data(as_text=True)
    assert "Diagnostic started" in page and 'id="diagnosing"' in page
    client.post(f"/instances/{ALPHA}/diagnose", data={"csrf_token": token})
    assert "already running" in client.get(f"/instances/{ALPHA}").get_data(as_text=True)
    deadline = time.monotonic() + 10
    while client.get(f"/instances/{ALPHA}/diagnose/status").get_json()["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.post(f"/instances/{ALPHA}/diagnose", data={"csrf_token": token})
    assert "Rate limited" in client.get(f"/instances/{ALPHA}").get_data(as_text=True)
    assert world.check.calls == 3  # the fixture's sweep (2 instances) and one run


def test_viewer_cannot_run_diagnostics(world: World) -> None:
    client = signed_in(world, VIEWER)
    response = client.post(f"/instances/{ALPHA}/diagnose",
                           data={"csrf_token": form_token(client, "/")})
    assert response.status_code == 403
    assert not world.engine.running(ALPHA)


# what pages show ----------------------------------------------------------------------------


def test_security_headers_and_nothing_inline(world: World) -> None:
    client = signed_in(world, ADMIN)
    for path in ("/", f"/instances/{ALPHA}", f"/instances/{ALPHA}/history",
                 f"/instances/{ALPHA}/logs", f"/instances/{ALPHA}/repair",
                 f"/instances/{ALPHA}/restart", f"/instances/{ALPHA}/config",
                 f"/instances/{ALPHA}/backups", f"/instances/{ALPHA}/audit", "/runbook",
                 "/login"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "DENY"
        text = response.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=|javascript:", text), path
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path


def test_names_and_values_are_escaped(world: World) -> None:
    hostile = '<script>alert("x")</script>'
    world.engine.config = world.config.model_copy(update={"discovery": world.config.discovery
        .model_copy(update={"static": (StaticInstance(id=ALPHA, name=hostile, owner=hostile),
                                       StaticInstance(id=BETA))})})
    world.engine.discover(fresh=True)
    client = signed_in(world, ADMIN)
    for path in ("/", f"/instances/{ALPHA}", f"/?owner={hostile}"):
        text = client.get(path).get_data(as_text=True)
        assert hostile not in text
        assert "&lt;script&gt;" in text, path


def test_fleet_cards_show_root_cause_worst_first_and_filter(world: World) -> None:
    client = signed_in(world, ADMIN)
    page = client.get("/").get_data(as_text=True)
    order = re.findall(r'data-instance="([a-z]+)" data-status="([a-z]+)"', page)
    assert sorted(order) == [(ALPHA, "healthy"), (BETA, "healthy")]
    assert "Uptime" in page and "24 h" in page
    only = client.get("/?status=unhealthy").get_data(as_text=True)
    assert "data-instance=" not in only
    assert client.get("/?status=bogus").status_code == 400
    partial = client.get("/?partial=cards").get_data(as_text=True)
    assert "<html" not in partial and f'data-instance="{ALPHA}"' in partial


def test_history_shows_a_chart_and_the_report(world: World) -> None:
    client = signed_in(world, ADMIN)
    page = client.get(f"/instances/{ALPHA}/history?days=7").get_data(as_text=True)
    assert '<svg id="health-chart"' in page and 'class="bar ok"' in page
    assert 'id="report"' in page and "Mean time to recovery" in page
    assert client.get(f"/instances/{ALPHA}/history?days=0").status_code == 400


def test_runbook_has_every_code_and_links_use_it(world: World) -> None:
    page = world.app.test_client().get("/runbook").get_data(as_text=True)
    for code in CATALOGUE:
        assert f'id="{code.lower()}"' in page


def test_portuguese_from_the_browser_and_the_switch(world: World) -> None:
    client = signed_in(world, OPERATOR)
    page = client.get("/", headers={"Accept-Language": "pt-BR,pt;q=0.9"})
    text = page.get_data(as_text=True)
    assert 'lang="pt-BR"' in text and "Executar Diagnóstico Agora" in text
    assert "Histórico" in text and "Restart Seguro" in text
    english = client.post("/language", data={"csrf_token": form_token(client, "/"),
                                             "lang": "en", "next": "/"},
                          headers={"Accept-Language": "pt-BR"})
    assert english.status_code == 303 and english.headers["Location"] == "/"
    again = client.get("/", headers={"Accept-Language": "pt-BR"}).get_data(as_text=True)
    assert "Run diagnostics now" in again
    assert client.post("/language", data={"lang": "pt-BR"}).status_code == 400


def test_every_template_text_has_a_portuguese_translation() -> None:
    texts: set[str] = set()
    for path in TEMPLATES.rglob("*.html"):
        texts |= set(re.findall(r'_\("((?:[^"\\]|\\.)*)"', path.read_text()))
    views = (TEMPLATES.parent / "views.py").read_text()
    texts |= {"".join(re.findall(r'"((?:[^"\\]|\\.)*)"', call))
              for call in re.findall(r"_t\(((?:\s*\"[^\"]*\"\s*)+)", views)}
    missing = sorted(t for t in texts if t not in i18n.PT_BR)
    assert missing == []
    assert len(texts) > 100


def test_next_cannot_leave_the_console(world: World) -> None:
    client = world.app.test_client()
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        # A sign-in makes a new form token: nothing from before it carries over.
        response = client.post("/login", data={"csrf_token": form_token(client),
                                               "next": target,
                                               "credential": credential(ADMIN)})
        assert response.headers["Location"] == "/"


def test_chain_and_recent_events_show_when_the_diagnostic_has_them(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = Diagnostic.to_dict

    def with_more(self: Diagnostic, **kwargs: Any) -> dict[str, Any]:
        out = plain(self, **kwargs)
        out["chain"] = [{"from": "auth", "to": "db", "status": "failed",
                         "code": "DB_ROLE_PASSWORD_MISMATCH"}, "kong → auth"]
        out["recent_events"] = [{"code": "LOG_ERROR_SPIKE", "component": "auth",
                                 "first_seen": "2026-05-08T10:00:00Z",
                                 "last_seen": "2026-05-08T10:05:00Z", "count": 7,
                                 "excerpt": "<b>connection refused</b>"}]
        return out

    world.check.issues = (make_issue("DB_ROLE_PASSWORD_MISMATCH", check="database_connection",
                                     component="db", message="rejected"),)
    world.engine.run(ALPHA, trigger="operation", use_cache=False)
    monkeypatch.setattr(Diagnostic, "to_dict", with_more)
    page = signed_in(world, VIEWER).get(f"/instances/{ALPHA}").get_data(as_text=True)
    chain = page[page.index('id="chain"'):]
    assert "auth · db · DB_ROLE_PASSWORD_MISMATCH · failed" in chain
    assert "kong → auth" in chain
    events = page[page.index('id="recent-events"'):]
    assert "LOG_ERROR_SPIKE" in events and "&lt;b&gt;connection refused&lt;/b&gt;" in events


def test_root_cause_and_what_it_explains(world: World) -> None:
    cause = make_issue("DB_ROLE_PASSWORD_MISMATCH", check="database_connection",
                       component="db", message="role rejects the password",
                       evidence={"role": "supabase_auth_admin"})
    effect = make_issue("AUTH_UNHEALTHY", check="auth_service", component="auth",
                        message="auth is down")
    world.check.issues = (cause, effect)
    world.engine.run(ALPHA, trigger="operation", use_cache=False)
    client = signed_in(world, VIEWER)
    page = client.get(f"/instances/{ALPHA}").get_data(as_text=True)
    root = page[page.index('id="root-cause"'):page.index('id="checks"')]
    assert "DB_ROLE_PASSWORD_MISMATCH" in root and "supabase_auth_admin" in root
    assert "#db_role_password_mismatch" in root  # the runbook link
    assert "AUTH_UNHEALTHY" in root[root.index('id="chain"'):]
    fleet = client.get("/").get_data(as_text=True)
    card = fleet[fleet.index(f'data-instance="{ALPHA}"'):]
    assert 'data-status="unhealthy"' in card[:200] and "DB_ROLE_PASSWORD_MISMATCH" in card
    assert fleet.index(f'data-instance="{ALPHA}"') < fleet.index(f'data-instance="{BETA}"')


def test_changes_share_the_api_rate_limit(tmp_path: Path) -> None:
    world = World(tmp_path, rate_limit="1/minute")
    try:
        client = signed_in(world, OPERATOR)
        token = form_token(client, "/")
        first = client.post(f"/instances/{ALPHA}/backups", data={"csrf_token": token})
        assert first.status_code == 303
        wait_finished(client, first.headers["Location"])
        second = client.post(f"/instances/{ALPHA}/backups", data={"csrf_token": token})
        assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
        assert world.operations() == 1
    finally:
        world.close()
