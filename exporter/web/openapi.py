"""GET /openapi.json of the exporter: the diagnostics API as an OpenAPI 3.1 document.

The exporter's routes parse their query strings by hand (exporter.web.params), so the
document is written here next to the limits it states, and read from the same config;
tests/unit/test_exporter_openapi.py holds it to the app's URL map, and schemathesis holds
the app to it (no 5xx, every answer as documented, for every role).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from exporter import __version__
from exporter.checks import ALL_CHECKS
from exporter.config import Config
from exporter.web.context import services

bp = Blueprint("exporter_openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_OBJECT = {"type": "object", "additionalProperties": True}
_ID = {"name": "instance_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _answers(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {
        "schema": ok}}}}
    for status in errors:
        out[str(status)] = {"description": _REASONS[status],
                            "content": {"application/json": {"schema": _ERROR}}}
    return out


_REASONS = {400: "Invalid parameters", 401: "No or invalid credentials",
            403: "The role is too low", 404: "Unknown instance, or outside the caller's scope",
            413: "The body is too large"}
_GUARDED = (401, 403)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _instance_route(summary: str, *, query: list[dict[str, Any]] | None = None,
                    bad_request: bool = False, ok: dict[str, Any] | None = None,
                    body: dict[str, Any] | None = None) -> dict[str, Any]:
    errors = (*_GUARDED, 404, *((400,) if bad_request or body else ()),
              *((413,) if body else ()))
    out: dict[str, Any] = {"summary": summary, "parameters": [_ID, *(query or [])],
                           "responses": _answers(ok or _OBJECT, *errors)}
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": body}}}
    return out


def openapi_document(config: Config) -> dict[str, Any]:
    """The exporter's OpenAPI document, with the limits of `config`."""
    checks = ",".join(ALL_CHECKS)
    diagnostics = _query("checks", {"type": "string", "maxLength": 400},
                         f"a comma-separated subset of {checks}")
    public = {"security": [], "responses": {
        "200": {"description": "OK", "content": {"application/json": {"schema": _OBJECT}}},
        **{str(s): {"description": _REASONS[s], "content": {"application/json": {
            "schema": _ERROR}}} for s in _GUARDED}}}
    metrics = {"security": [], "summary": "Prometheus exposition of the cached diagnostics",
               "responses": {"200": {"description": "OK", "content": {"text/plain": {
                   "schema": {"type": "string"}}}},
                   **{str(s): {"description": _REASONS[s], "content": {
                       "application/json": {"schema": _ERROR}}} for s in _GUARDED}}}
    schedule_body = {"type": "object", "additionalProperties": False, "properties": {
        "schedule": {"anyOf": [{"type": "string", "maxLength": 100}, {"type": "null"}]},
        "enabled": {"type": "boolean"}}}
    paths: dict[str, Any] = {
        "/healthz": {"get": {**public, "summary": "Liveness"}},
        "/metrics": {"get": metrics},
        "/api/instances": {"get": {
            "summary": "Instances in the caller's scope, with their latest health",
            "responses": _answers(_OBJECT, *_GUARDED)}},
        "/api/instances/check-all-health": {"get": {
            "summary": "Every instance in the caller's scope, run concurrently (admin)",
            "responses": _answers(_OBJECT, *_GUARDED)}},
        "/api/instances/{instance_id}/run-diagnostics": {
            "get": _instance_route("The cached diagnostic if fresh, else a run",
                                   query=[diagnostics], bad_request=True),
            "post": _instance_route("A fresh run (rate limited per instance)",
                                    query=[diagnostics], bad_request=True)},
        "/api/instances/{instance_id}/last-diagnostic": {
            "get": _instance_route("The stored result; never runs anything")},
        "/api/instances/{instance_id}/diagnostic-logs": {"get": _instance_route(
            "Parsed recent log entries and a summary", bad_request=True, query=[
                _query("services", {"type": "string", "maxLength": 400},
                       "comma-separated components"),
                _query("level", {"type": "string", "maxLength": 20},
                       "minimum level: debug, info, warning, error, fatal, all"),
                _query("range", {"type": "string", "maxLength": 20},
                       "how far back: 15m, 1h, 24h, 7d"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000},
                       "entries returned at most")])},
        "/api/instances/{instance_id}/diagnostic-history": {"get": _instance_route(
            "Stored diagnostics, newest first", bad_request=True, query=[
                _query("limit", {"type": "integer", "minimum": 1,
                                 "maximum": config.store.max_history_limit},
                       "how many (store.max_history_limit at most)")])},
        "/api/instances/{instance_id}/health-report": {"get": _instance_route(
            "Uptime, trend, common issues and recovery time", bad_request=True, query=[
                _query("days", {"type": "integer", "minimum": 1, "maximum": 365},
                       "the period")])},
        "/api/instances/{instance_id}/schedule": {
            "get": _instance_route("The instance's schedule"),
            "put": _instance_route("Set or clear the instance's schedule",
                                   body=schedule_body)},
        "/api/instances/{instance_id}/schedule/cron": {
            "get": _instance_route("A crontab line calling run-diagnostics")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ultrabase Doctor diagnostics API", "version": __version__,
                 "description": "Diagnostics, history, reports and schedules of self-hosted "
                                "Supabase instances managed by Ultrabase."},
        "paths": paths,
        "components": {
            "schemas": {"ErrorBody": {
                "type": "object", "required": ["error"], "additionalProperties": True,
                "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"},
                                   "message": {"type": "string"}}}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """The document; public: it describes the API and holds no data."""
    return jsonify(openapi_document(services().config))
