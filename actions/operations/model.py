"""Operations as the API shows them: steps with durations, status, result and errors.

An operation is stored (and served) already redacted: its inputs, step details, result and
error never hold a secret. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, cast, get_args

from exporter.errors import DoctorError

OperationStatus = Literal["pending", "running", "succeeded", "failed", "rolled_back"]
StepStatus = Literal["running", "ok", "failed", "skipped", "rolled_back"]

FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "rolled_back"})
# Operation ids are what the runner makes (uuid4 hex); anything else is not an operation.
OPERATION_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


class OperationError(DoctorError):
    """An operation failed; the message is safe to show and says why.

    `rolled_back` tells that whatever the operation had changed was undone, so the
    operation ends as "rolled_back" rather than "failed".
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "operation_failed"

    def __init__(self, message: str, *, rolled_back: bool = False) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


class OperationConflict(OperationError):
    """Another operation holds the instance; `running_id` is that operation's id."""

    status = 409
    code = "operation_running"

    def __init__(self, instance_id: str, running_id: str) -> None:
        super().__init__(f"operation {running_id} is running on instance {instance_id}")
        self.instance_id = instance_id
        self.running_id = running_id


class OperationNotFound(OperationError):
    """No operation has this id."""

    status = 404
    code = "not_found"

    def __init__(self) -> None:
        super().__init__("operation not found")


class StepFailed(OperationError):
    """Raised inside a step: `step` failed because of `reason`."""

    def __init__(self, step: str, reason: str, *, rolled_back: bool = False) -> None:
        super().__init__(f"{step} failed: {reason}", rolled_back=rolled_back)
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class Step:
    """One recorded step of an operation."""

    name: str
    status: StepStatus
    started_at: datetime
    duration_seconds: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"name": self.name, "status": self.status,
                "started_at": self.started_at.isoformat(),
                "duration_seconds": None if self.duration_seconds is None
                else round(self.duration_seconds, 3),
                "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """Inverse of to_dict."""
        duration = data.get("duration_seconds")
        return cls(name=str(data["name"]), status=_literal(StepStatus, data["status"]),
                   started_at=_when(data["started_at"]),
                   duration_seconds=None if duration is None else float(duration),
                   detail=dict(data.get("detail") or {}))


@dataclass(frozen=True)
class Operation:
    """An operation on one instance, as far as it has got."""

    id: str
    kind: str
    instance_id: str
    status: OperationStatus
    principal: str
    role: str
    inputs: Mapping[str, Any]
    steps: tuple[Step, ...]
    result: Mapping[str, Any]
    error: str | None
    failed_step: str | None
    created_at: datetime
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """True once the operation ended, whatever the outcome."""
        return self.status in FINISHED

    @property
    def duration_seconds(self) -> float | None:
        """Wall time from creation to the end, once finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """JSON shape, as the API serves it."""
        return {"id": self.id, "kind": self.kind, "instance_id": self.instance_id,
                "status": self.status, "principal": self.principal, "role": self.role,
                "inputs": dict(self.inputs), "steps": [s.to_dict() for s in self.steps],
                "result": dict(self.result), "error": self.error,
                "failed_step": self.failed_step, "created_at": self.created_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "duration_seconds": None if self.duration_seconds is None
                else round(self.duration_seconds, 3)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        """Inverse of to_dict."""
        finished = data.get("finished_at")
        return cls(id=str(data["id"]), kind=str(data["kind"]),
                   instance_id=str(data["instance_id"]),
                   status=_literal(OperationStatus, data["status"]),
                   principal=str(data["principal"]), role=str(data["role"]),
                   inputs=dict(data.get("inputs") or {}),
                   steps=tuple(Step.from_dict(s) for s in data.get("steps") or ()),
                   result=dict(data.get("result") or {}), error=data.get("error"),
                   failed_step=data.get("failed_step"), created_at=_when(data["created_at"]),
                   finished_at=_when(finished) if finished else None)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _when(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _literal(kind: Any, value: Any) -> Any:
    if value not in get_args(kind):
        raise ValueError(f"unknown status {value!r}")
    return cast(Any, value)
