"""The audit log: who did what to which instance, with what (redacted), and how it ended.

Entries live in the store's ``audit`` table; every operation writes one when it ends, and
the API writes one for requests refused before an operation started (a lock conflict,
say). Inputs are redacted twice over: every value under a key that looks secret is
replaced whole, and every known secret is replaced wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from actions.operations.model import Operation
from exporter.redaction import Redactor

REDACTED = "<redacted>"
# Keys whose values are secrets whatever they hold: passwords, keys, tokens, JWT secrets.
_SECRET_KEY = re.compile(r"pass|secret|token|key|credential|private|dsn|authorization",
                         re.IGNORECASE)


@dataclass(frozen=True)
class AuditEntry:
    """One audited action; `id` is None until stored."""

    at: datetime
    who: str
    role: str
    action: str
    instance_id: str | None
    inputs: Mapping[str, Any]
    result: str
    duration_seconds: float | None = None
    steps: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None
    operation_id: str | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON shape, as GET /api/audit serves it."""
        return {"id": self.id, "at": self.at.astimezone(UTC).isoformat(), "who": self.who,
                "role": self.role, "action": self.action, "instance_id": self.instance_id,
                "operation_id": self.operation_id, "inputs": dict(self.inputs),
                "result": self.result,
                "duration_seconds": None if self.duration_seconds is None
                else round(self.duration_seconds, 3),
                "steps": [dict(s) for s in self.steps], "error": self.error}

    @classmethod
    def for_operation(cls, operation: Operation) -> AuditEntry:
        """The entry a finished operation leaves (the operation is already redacted)."""
        return cls(at=operation.finished_at or operation.created_at, who=operation.principal,
                   role=operation.role, action=operation.kind,
                   instance_id=operation.instance_id, inputs=dict(operation.inputs),
                   result=operation.status, duration_seconds=operation.duration_seconds,
                   steps=tuple(_step_summary(s.to_dict()) for s in operation.steps),
                   error=operation.error, operation_id=operation.id)


def looks_secret(key: str) -> bool:
    """True for keys whose values are secrets (password, jwt_secret, service_key, ...)."""
    return bool(_SECRET_KEY.search(key))


def redact_inputs(inputs: Any, redactor: Redactor) -> Any:
    """A copy of request inputs with secret-looking keys blanked and known secrets replaced."""
    if isinstance(inputs, Mapping):
        return {str(k): REDACTED if looks_secret(str(k)) and v not in (None, "")
                else redact_inputs(v, redactor) for k, v in inputs.items()}
    if isinstance(inputs, list | tuple):
        return [redact_inputs(v, redactor) for v in inputs]
    if isinstance(inputs, str):
        return redactor.text(inputs)
    return inputs


def secret_values(inputs: Any) -> list[str]:
    """The string values under secret-looking keys, so they can be redacted elsewhere too."""
    found: list[str] = []
    if isinstance(inputs, Mapping):
        for key, value in inputs.items():
            if looks_secret(str(key)) and isinstance(value, str) and value:
                found.append(value)
            else:
                found.extend(secret_values(value))
    elif isinstance(inputs, list | tuple):
        for value in inputs:
            found.extend(secret_values(value))
    return found


def _step_summary(step: Mapping[str, Any]) -> dict[str, Any]:
    # The audit keeps each step's outcome and timing; full details stay on the operation.
    out = {k: step[k] for k in ("name", "status", "duration_seconds") if k in step}
    detail = step.get("detail") or {}
    if isinstance(detail, Mapping) and detail.get("error"):
        out["error"] = detail["error"]
    return out
