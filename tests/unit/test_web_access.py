"""The Flask glue of access control, over a small app with one route per kind of need."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask, Response, g, jsonify

from exporter.access import AccessControl
from exporter.errors import DoctorError
from exporter.web.access import (
    ACCESS_EXTENSION,
    INSTANCES_EXTENSION,
    current_principal,
    init_access,
    open_route,
    require,
)
from tests.unit.access_matrix import (
    ALPHA,
    BETA,
    CALLERS,
    KNOWN_INSTANCES,
    MATRIX_OWNERS,
    Caller,
    Case,
    Route,
    check_case,
    matrix_api,
    matrix_cases,
    write_matrix_users,
)

ROUTES = (
    Route("GET", "/fleet/viewer", "viewer"),
    Route("POST", "/fleet/operator", "operator", body={}),
    Route("GET", "/fleet/admin", "admin"),
    Route("GET", "/i/{instance_id}/viewer", "viewer"),
    Route("POST", "/i/{instance_id}/operator", "operator", body={"x": 1}),
    Route("PUT", "/i/{instance_id}/admin", "admin", body={}),
    Route("GET", "/open", None),
)
CASES = matrix_cases(ROUTES)
PROTECTED_OPEN_CASES = matrix_cases([r for r in ROUTES if r.needed is None],
                                    protect_open=True)


def _who() -> Response:
    return jsonify({"principal": current_principal().name, "source": g.principal.source})


def make_app(users_file: Path, *, protect_metrics: bool = False,
             known: bool = True) -> Flask:
    """An app with one route per (role, fleet-wide or instance-scoped) and an open route."""
    app = Flask("test_web_access")
    app.config["TESTING"] = True
    access = AccessControl(matrix_api(users_file, protect_metrics=protect_metrics),
                           owners=lambda: MATRIX_OWNERS)
    init_access(app, access,
                known_instances=(lambda i: i in KNOWN_INSTANCES) if known else None)

    # A catch-all handler like the real app's: AccessError must still win (more specific).
    @app.errorhandler(DoctorError)
    def _doctor(exc: DoctorError) -> tuple[Response, int]:
        return jsonify({"error": {"code": "generic", "message": "x"}}), 500

    @app.get("/fleet/viewer")
    @require("viewer", instance_arg=None)
    def fleet_viewer() -> Response:
        return _who()

    @app.post("/fleet/operator")
    @require("operator", instance_arg=None)
    def fleet_operator() -> Response:
        return _who()

    @app.get("/fleet/admin")
    @require("admin", instance_arg=None)
    def fleet_admin() -> Response:
        return _who()

    @app.get("/i/<instance_id>/viewer")
    @require("viewer")
    def inst_viewer(instance_id: str) -> Response:
        return _who()

    @app.post("/i/<instance_id>/operator")
    @require("operator")
    def inst_operator(instance_id: str) -> Response:
        return _who()

    @app.put("/i/<instance_id>/admin")
    @require("admin")
    def inst_admin(instance_id: str) -> Response:
        return _who()

    @app.get("/open")
    @open_route()
    def open_() -> Response:
        return _who()

    @app.get("/other/<name>")
    @require("viewer")  # wrongly names instance_id: a programming error
    def misnamed(name: str) -> Response:
        return _who()

    return app


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("access") / "users.json"
    write_matrix_users(path)
    return path


@pytest.fixture(scope="module")
def app(users_file: Path) -> Flask:
    return make_app(users_file)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matrix(app: Flask, case: Case) -> None:
    assert check_case(app.test_client(), case) == []


@pytest.mark.parametrize("case", PROTECTED_OPEN_CASES, ids=str)
def test_matrix_with_protected_metrics(users_file: Path, case: Case) -> None:
    app = make_app(users_file, protect_metrics=True)
    assert check_case(app.test_client(), case) == []


def test_table_covers_every_outcome() -> None:
    assert {c.expected for c in CASES} == {None, 401, 403, 404}
    # 403: the webhook role may not read a protected /metrics.
    assert {c.expected for c in PROTECTED_OPEN_CASES} == {None, 401, 403}
    # Each caller kind under test is present.
    assert {c.name for c in CALLERS} >= {"none", "bad", "viewer", "operator", "admin",
                                          "operator-beta", "jwt-user"}


def _caller(name: str) -> Caller:
    return next(c for c in CALLERS if c.name == name)


def test_principal_is_stored_for_the_view(app: Flask) -> None:
    client = app.test_client()
    auth = {"Authorization": _caller("jwt-user").authorization or ""}
    body = client.post(f"/i/{ALPHA}/operator", json={}, headers=auth).get_json()
    assert body == {"principal": "ultrabase:dora", "source": "manager_jwt"}
    auth = {"Authorization": _caller("admin").authorization or ""}
    assert client.get("/fleet/admin", headers=auth).get_json() == {"principal": "admin",
                                                                   "source": "token"}
    assert client.get("/open").get_json() == {"principal": "anonymous",
                                              "source": "anonymous"}


def test_open_route_ignores_credentials_when_open(app: Flask) -> None:
    response = app.test_client().get("/open", headers={"Authorization": "Bearer junk"})
    assert response.status_code == 200
    assert response.get_json()["source"] == "anonymous"


def test_explicit_protection_overrides_config(users_file: Path) -> None:
    app = make_app(users_file, protect_metrics=False)

    @app.get("/always-protected")
    @open_route(protected=True)
    def always() -> Response:
        return _who()

    client = app.test_client()
    assert client.get("/always-protected").status_code == 401
    auth = {"Authorization": _caller("viewer").authorization or ""}
    assert client.get("/always-protected", headers=auth).status_code == 200


def test_401_names_the_bearer_scheme(app: Flask) -> None:
    response = app.test_client().get("/fleet/viewer")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json() == {"error": {"code": "unauthorized",
                                             "message": "missing or invalid credentials"}}


def test_403_has_no_authenticate_header(app: Flask) -> None:
    auth = {"Authorization": _caller("viewer").authorization or ""}
    response = app.test_client().get("/fleet/admin", headers=auth)
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers


def test_known_instances_come_from_the_app(users_file: Path) -> None:
    app = make_app(users_file)
    auth = {"Authorization": _caller("admin").authorization or ""}
    client = app.test_client()
    assert client.get(f"/i/{BETA}/viewer", headers=auth).status_code == 200
    app.extensions[INSTANCES_EXTENSION] = lambda instance_id: instance_id == ALPHA
    assert client.get(f"/i/{BETA}/viewer", headers=auth).status_code == 404
    assert client.get(f"/i/{ALPHA}/viewer", headers=auth).status_code == 200


def test_decorator_known_overrides_the_app(users_file: Path) -> None:
    app = make_app(users_file)

    @app.get("/only-ghost/<instance_id>")
    @require("viewer", known=lambda instance_id: instance_id == "ghost")
    def only_ghost(instance_id: str) -> Response:
        return _who()

    auth = {"Authorization": _caller("admin").authorization or ""}
    client = app.test_client()
    assert client.get("/only-ghost/ghost", headers=auth).status_code == 200
    assert client.get(f"/only-ghost/{ALPHA}", headers=auth).status_code == 404


def test_missing_known_instances_fails_loudly(users_file: Path) -> None:
    app = make_app(users_file, known=False)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    auth = {"Authorization": _caller("admin").authorization or ""}
    with pytest.raises(RuntimeError, match=r"ultrabase_doctor\.instances"):
        app.test_client().get(f"/i/{ALPHA}/viewer", headers=auth)
    # Fleet-wide routes do not need it.
    assert app.test_client().get("/fleet/viewer", headers=auth).status_code == 200


def test_misnamed_instance_argument_fails_loudly(app: Flask) -> None:
    auth = {"Authorization": _caller("admin").authorization or ""}
    with pytest.raises(RuntimeError, match="instance_id"):
        app.test_client().get("/other/x", headers=auth)


def test_without_init_access_fails_loudly() -> None:
    app = Flask("bare")
    app.config["TESTING"] = True

    @app.get("/x")
    @require("viewer", instance_arg=None)
    def x() -> Response:
        return _who()

    with pytest.raises(RuntimeError, match="init_access"):
        app.test_client().get("/x")
    assert ACCESS_EXTENSION not in app.extensions
