"""M3 and L10 of the security review: request bodies, read before or without authentication.

The attack: an unauthenticated `POST` announcing 300 MiB was spooled whole by waitress
before the app (and so access control) saw it; up to 100 connections at once. Now the
waitress parser answers 401 as soon as the headers are in, without reading one byte of the
body, unless it is a small form of announced length (the console's, at most 64 KiB, held in
memory); an authenticated body is capped at api.max_body_bytes by waitress and Flask
alike. L10: deep JSON and non-ASCII digits were 500s; they are 400s.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.web.wsgi import UNVERIFIED_BODY_BYTES
from tests.unit.access_matrix import ALPHA
from tests.unit.actions.test_api import ADMIN, World
from tests.unit.served import Served, read_response
from tests.unit.test_exporter_app import World as ExporterWorld

LIMIT = 64 * 1024  # a small cap keeps the test fast; the default is 1 MiB
HUGE = 300 * 1024 * 1024


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # One world and one server for the module: no test here may start anything.
    made = World(tmp_path_factory.mktemp("bodies"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[Served]:
    running = Served(world.app, max_body=LIMIT)
    yield running
    running.close()


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in
                                                           headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("credentials", [None, "Bearer tok-not-configured", "Basic YWRtaW4="])
@pytest.mark.parametrize("framing", ["length", "chunked", "expect"])
def test_unauthenticated_bodies_are_refused_before_a_byte_is_read(
        served: Served, world: World, credentials: str | None, framing: str) -> None:
    headers = {"Content-Type": "application/json"}
    if credentials:
        headers["Authorization"] = credentials
    if framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(HUGE)
    if framing == "expect":
        headers["Expect"] = "100-continue"
    with served.connect() as sock:
        started = time.monotonic()
        # Only the headers: the answer must come without the 300 MiB ever being sent.
        sock.sendall(_head(f"/api/instances/{ALPHA}/backups", headers))
        status, answer_headers, body = read_response(sock)
        took = time.monotonic() - started
        assert status == 401, body
        assert json.loads(body) == {"error": {"code": "unauthorized",
                                              "message": "missing or invalid credentials"}}
        assert answer_headers["www-authenticate"] == "Bearer"
        assert answer_headers["connection"].lower() == "close"
        assert took < 2
        # The server closed the connection: what the client sends next is never read.
        assert sock.recv(1) == b""
    assert world.operations() == 0 and world.store.audit(10) == []


def test_a_request_without_body_still_reaches_the_app(served: Served) -> None:
    # GET with a bad token is not cut short: the app answers, as the API documents.
    answer = httpx.get(f"{served.url()}/api/audit", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{served.url()}/healthz").status_code == 200


def test_an_authenticated_oversized_body_is_refused_unread(served: Served,
                                                           world: World) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(HUGE), **ADMIN}
    with served.connect() as sock:
        sock.sendall(_head(f"/api/instances/{ALPHA}/backups", headers))
        status, _, body = read_response(sock)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_entity_too_large"
    assert world.operations() == 0


def test_a_chunked_body_stops_at_the_limit(served: Served, world: World) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"reason": "'
        for _ in range(HUGE // 65536):
            yield b"x" * 65536
    answer = httpx.post(f"{served.url()}/api/instances/{ALPHA}/backups", headers=ADMIN,
                        content=chunks(), timeout=10)
    assert answer.status_code == 413
    assert world.operations() == 0


def test_a_body_at_the_limit_reaches_the_app(served: Served, world: World) -> None:
    prefix, suffix = b'{"reason": "', b'"}'
    body = prefix + b"x" * (LIMIT - len(prefix) - len(suffix)) + suffix
    assert len(body) == LIMIT
    answer = httpx.post(f"{served.url()}/api/instances/{ALPHA}/backups", headers=ADMIN,
                        content=body)
    # Past both limits: the model refuses a 64 KiB reason, nothing more.
    assert answer.status_code == 400 and "reason" in answer.json()["error"]["message"]
    assert world.operations() == 0


def test_the_default_cap_is_one_mebibyte(world: World) -> None:
    assert world.config.api.max_body_bytes == 1024 * 1024
    assert world.app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024


# L10 ---------------------------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("path", ["repair", "safe-restart", "config", "backups"])
def test_deep_json_is_a_400_on_the_action_api(world: World, path: str) -> None:
    method = "PUT" if path == "config" else "POST"
    answer = world.app.test_client().open(f"/api/instances/{ALPHA}/{path}", method=method,
                                           data=DEEP, headers=ADMIN)
    assert answer.status_code == 400
    assert answer.json["error"]["message"] == "the body is not valid JSON"
    assert world.operations() == 0 and world.plain.calls == []


def test_deep_json_and_odd_digits_are_400s_on_the_exporter(tmp_path: Path) -> None:
    exporter = ExporterWorld(tmp_path)
    try:
        client = exporter.app.test_client()
        auth = {"Authorization": "Bearer tok-admin-3f8e62aa"}
        answer = client.put(f"/api/instances/{ALPHA}/schedule", data=DEEP, headers=auth)
        assert answer.status_code == 400
        assert exporter.store.get_schedule(ALPHA) is None
        for query in ("diagnostic-history?limit=\u00b2", "health-report?days=\u00b2",
                      "diagnostic-history?limit=\u0663", "diagnostic-logs?limit=\uff15"):
            answer = client.get(f"/api/instances/{ALPHA}/{query}", headers=auth)
            assert answer.status_code == 400, query
            assert answer.json["error"]["code"] == "bad_request"
    finally:
        exporter.close()


def test_the_consoles_forms_still_work_through_the_server(served: Served,
                                                          world: World) -> None:
    # The console's forms carry no bearer token: a small body of announced length is read
    # (in memory) and the app judges it, as it does any unauthenticated request.
    with httpx.Client(base_url=served.url(), timeout=10) as browser:
        page = browser.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        signed = browser.post("/login", data={
            "csrf_token": token.group(1), "credential": ADMIN["Authorization"].split()[1],
            "next": "/"})
        assert signed.status_code == 303, signed.text[:300]
        assert browser.get("/").status_code == 200
    # A small unauthenticated body to the API is refused by the app, nothing started.
    answer = httpx.post(f"{served.url()}/api/instances/{ALPHA}/backups", json={})
    assert answer.status_code == 401 and world.operations() == 0


def test_the_unverified_allowance_ends_at_its_limit(served: Served, world: World) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Content-Length": str(UNVERIFIED_BODY_BYTES + 1)}
    with served.connect() as sock:
        sock.sendall(_head("/login", headers))
        status, _, _ = read_response(sock)
        assert status == 401
        assert sock.recv(1) == b""
