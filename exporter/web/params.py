"""Parsing and validating request parameters: a clear 400 for bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request

from exporter.errors import DoctorError

T = TypeVar("T")


class BadRequest(DoctorError):
    """A request parameter or body is invalid."""

    status = 400
    code = "bad_request"


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # str.isdigit() is also true of "²" and other non-ASCII digits, which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def list_arg(name: str, allowed: set[str] | None = None, max_items: int = 20) -> list[str] | None:
    """A comma-separated query parameter, each item checked against allowed."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return None
    items = [p.strip() for p in raw.split(",") if p.strip()]
    if len(items) > max_items:
        raise BadRequest(f"{name} takes at most {max_items} items")
    if allowed is not None:
        unknown = sorted(set(items) - allowed)
        if unknown:
            shown = ", ".join(u[:40] for u in unknown[:5])
            raise BadRequest(f"{name}: unknown value(s) {shown}; allowed: "
                             f"{', '.join(sorted(allowed))}")
    return items


def parsed_arg(name: str, default: str, parse: Callable[[str], T]) -> T:
    """A query parameter run through a parser whose ValueError becomes a 400."""
    raw = request.args.get(name) or default
    try:
        return parse(raw)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object ({} when blank), else BadRequest."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the parser's stack (e.g. 100 000 `[`).
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_body(max_keys: int = 20) -> dict[str, Any]:
    """The request's JSON object body ({} when empty)."""
    body = json_object(request.get_data(cache=True))
    if len(body) > max_keys:
        raise BadRequest("the body has too many keys")
    return body
