"""Request and response models of the action API.

Request models validate every body and query string (unknown fields rejected, every size
bounded) and are also what /openapi.json is generated from, so the document cannot drift
from what the API accepts. Response models only document: the API's answers come from the
operations' own `to_dict()`s, and response models allow extra keys so a new field never
breaks a client that validates against the document.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from exporter.config import INSTANCE_ID_PATTERN

# No control characters (newline, NUL, ...) anywhere a value may end up in a file.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

# What the Ultrabase manager's own config editor accepts for the values the doctor writes
# into its registry (fernandinhomartins40/ultrabase src/management/config-editor.js at
# 1460089: validateName 2-50 of [a-zA-Z0-9-_\s], validateUsername 3-30 of [a-zA-Z0-9_],
# validatePassword 4-100). Its dashboard (src/public/index.html) puts registry values into
# innerHTML and into JavaScript strings inside onclick attributes without escaping, so
# markup and quotes must never reach the registry: whitespace is a plain space here, and
# the password, which the manager takes unchecked, keeps to letters, digits, space and
# punctuation that is neither markup, a quote, nor special to kong's shell evaluation.
INSTANCE_NAME_PATTERN = r"^[A-Za-z0-9 _-]{2,50}$"
DASHBOARD_USERNAME_PATTERN = r"^[A-Za-z0-9_]{3,30}$"
DASHBOARD_PASSWORD_PATTERN = r"^[A-Za-z0-9 !#%()*+,./:;=?@\[\]^_{|}~-]{8,100}$"  # noqa: S105
# A message, not a password:
DASHBOARD_PASSWORD_RULE = (
    "must be 8 to 100 letters, digits, spaces or !#%()*+,-./:;=?@[]^_{|}~ "  # noqa: S105
    "(no quotes, markup, $, & or backslash)")



def _integral(value: Any) -> Any:
    # JSON has one number type: 5.0 is the integer 5 to any JSON Schema reader, so it is
    # accepted as one; 5.5, "5" and true still fail the strict int check.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Constraints go before the validator: after it, pydantic would write them into the JSON
# Schema as unknown keywords ("ge") instead of "minimum".
WholeNumber = BeforeValidator(_integral)
ComponentName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
RepairActionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
ShortText = Annotated[str, StringConstraints(max_length=256, pattern=_PRINTABLE)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=200,
                                          pattern=r"^[A-Za-z0-9 _.,:;()/+-]+$")]
LabelText = Annotated[str, StringConstraints(max_length=4096)]
Labels = Annotated[dict[Annotated[str, StringConstraints(max_length=256)], LabelText],
                   Field(max_length=64)]



class _Request(BaseModel):
    """A request body: unknown fields refused, JSON types only (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Query(BaseModel):
    """A query string: unknown parameters refused; values are parsed from text."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    """A documented answer; extra keys allowed so additions stay compatible."""

    model_config = ConfigDict(extra="allow")


# requests ---------------------------------------------------------------------------------


class SafeRestartRequest(_Request):
    """Stop and start the instance (or the named components) in dependency order."""

    components: Annotated[list[ComponentName], Field(min_length=1, max_length=20)] | None = None
    stop_timeout_seconds: Annotated[float, Field(gt=0, le=600)] | None = None


class RestartServiceRequest(_Request):
    """Restart one component, and the components that depend on it when asked."""

    component: ComponentName
    with_dependents: bool = False


class RepairRequest(_Request):
    """Run the repair plan, or the chosen actions of it; dry_run only returns the plan."""

    actions: Annotated[list[RepairActionId], Field(min_length=1, max_length=20)] | None = None
    dry_run: bool = False
    confirm: bool = False


class ConfigChanges(_Request):
    """The editable settings; only those present are changed."""

    name: Annotated[str, StringConstraints(pattern=INSTANCE_NAME_PATTERN)] | None = None
    dashboard_username: Annotated[str, StringConstraints(
        pattern=DASHBOARD_USERNAME_PATTERN)] | None = None
    dashboard_password: Annotated[SecretStr, Field(min_length=8, max_length=100)] | None = None
    site_url: Annotated[str, StringConstraints(min_length=1, max_length=1024,
                                               pattern=_PRINTABLE)] | None = None
    disable_signup: bool | None = None
    enable_email_autoconfirm: bool | None = None
    jwt_expiry: Annotated[int, Field(ge=60, le=604_800), WholeNumber] | None = None
    smtp_admin_email: ShortText | None = None
    smtp_host: ShortText | None = None
    smtp_port: Annotated[int, Field(ge=1, le=65535), WholeNumber] | None = None
    smtp_user: ShortText | None = None
    smtp_pass: Annotated[SecretStr, Field(max_length=256)] | None = None
    smtp_sender_name: ShortText | None = None

    @field_validator("dashboard_password", "smtp_pass")
    @classmethod
    def _printable_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and any(ord(ch) < 0x20 or ord(ch) == 0x7F
                                     for ch in value.get_secret_value()):
            # The message never repeats the value: it is a secret.
            raise ValueError("must not contain control characters (newline, NUL, ...)")
        return value

    @field_validator("dashboard_password")
    @classmethod
    def _registry_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(DASHBOARD_PASSWORD_PATTERN,
                                                  value.get_secret_value()):
            raise ValueError(DASHBOARD_PASSWORD_RULE)
        return value

    def given(self) -> dict[str, Any]:
        """The fields present in the request, secrets unwrapped (for the operation only)."""
        out: dict[str, Any] = {}
        for key in self.model_fields_set:
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return out

    def redacted(self) -> dict[str, Any]:
        """The fields present, secrets replaced by a mask (for audit and operation inputs)."""
        return {key: "********" if isinstance(getattr(self, key), SecretStr) else value
                for key, value in self.given().items()}


class ConfigEditRequest(_Request):
    """Change settings: applied to every file that carries them, then services recreated."""

    changes: ConfigChanges

    @model_validator(mode="after")
    def _something(self) -> ConfigEditRequest:
        if not self.changes.given():
            raise ValueError("changes must name at least one setting")
        return self


class BackupCreateRequest(_Request):
    """Back up the instance's files, and its database when asked."""

    db_dump: bool = False
    reason: Reason = "manual"


class BackupRestoreRequest(_Request):
    """Restore a backup (verified first; the current state is backed up before)."""


class WaitQuery(_Query):
    """`?wait=true` blocks until the operation ends, at most `timeout` seconds."""

    wait: bool = False
    timeout: Annotated[float, Field(gt=0, le=3600)] = 600.0


class AuditQuery(_Query):
    """Filters of the audit log, newest first."""

    instance_id: Annotated[str, StringConstraints(pattern=INSTANCE_ID_PATTERN.pattern)] | None \
        = None
    who: Annotated[str, StringConstraints(min_length=1, max_length=128,
                                          pattern=_PRINTABLE)] | None = None
    action: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")] | None = None
    since: datetime | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0

    @field_validator("since", mode="before")
    @classmethod
    def _iso_only(cls, value: Any) -> Any:
        # ISO-8601 text only: a bare number would otherwise be read as a Unix time.
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError("must be an ISO-8601 date-time")
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be an ISO-8601 date-time, e.g. 2025-01-31T12:00:00Z") \
                from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Webhook(BaseModel):
    """Alertmanager's payload: fields it may add in later versions are ignored, not refused."""

    # Refusing unknown keys here would drop real alerts after an Alertmanager upgrade;
    # every field read is still typed and bounded.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class WebhookAlert(_Webhook):
    """One alert of a webhook notification."""

    status: Literal["firing", "resolved"]
    labels: Labels = {}
    annotations: Labels = {}
    # camelCase: Alertmanager's own field names.
    startsAt: LabelText | None = None
    endsAt: LabelText | None = None
    generatorURL: LabelText | None = None
    fingerprint: Annotated[str, StringConstraints(max_length=64)] | None = None


class AlertmanagerWebhook(_Webhook):
    """Alertmanager's webhook notification, version 4."""

    version: Annotated[str, StringConstraints(max_length=8)] = "4"
    groupKey: LabelText | None = None
    truncatedAlerts: Annotated[int, Field(ge=0), WholeNumber] = 0
    status: Literal["firing", "resolved"]
    receiver: Annotated[str, StringConstraints(max_length=256)] = ""
    groupLabels: Labels = {}
    commonLabels: Labels = {}
    commonAnnotations: Labels = {}
    externalURL: LabelText | None = None
    alerts: Annotated[list[WebhookAlert], Field(max_length=1000)]


# responses --------------------------------------------------------------------------------


class ErrorDetail(_Response):
    """What went wrong."""

    code: str
    message: str


class ErrorBody(_Response):
    """Every error: `{"error": {"code", "message"}}` (409 adds the running operation's id)."""

    error: ErrorDetail
    running_operation_id: str | None = None


class StepOut(_Response):
    """One step of an operation, as it progresses."""

    name: str
    status: Literal["running", "ok", "failed", "skipped", "rolled_back"]
    started_at: str
    duration_seconds: float | None = None
    detail: dict[str, Any] = {}


class OperationOut(_Response):
    """An operation: its steps show progress; `status` says how it ended."""

    id: str
    kind: str
    instance_id: str
    status: Literal["pending", "running", "succeeded", "failed", "rolled_back"]
    principal: str
    role: str
    inputs: dict[str, Any] = {}
    steps: list[StepOut] = []
    result: dict[str, Any] = {}
    error: str | None = None
    failed_step: str | None = None
    created_at: str
    finished_at: str | None = None


class RepairActionOut(_Response):
    """One action of a repair plan."""

    id: str
    action: str
    component: str | None = None
    issue_codes: list[str] = []
    needs_confirm: bool
    description: str
    verify_check: str


class RepairPlanOut(_Response):
    """The repair plan of the instance's latest diagnostic."""

    instance_id: str
    diagnostic_at: str | None = None
    healthy: bool | None = None
    actions: list[RepairActionOut]
    operation: OperationOut | None = None
    message: str | None = None


class ConfigOut(_Response):
    """The editable settings' current values, secrets masked."""

    instance_id: str
    config: dict[str, Any]


class BackupOut(_Response):
    """One backup: file names and sizes, never contents."""

    id: str
    instance_id: str
    created_at: str
    reason: str
    files: list[str]
    size_bytes: int
    has_db_dump: bool
    verified: bool | None = None


class BackupListOut(_Response):
    """The instance's backups, newest first."""

    instance_id: str
    backups: list[BackupOut]


class AuditEntryOut(_Response):
    """One audit entry: who did what, to which instance, and how it ended."""

    at: str
    who: str
    role: str
    action: str
    instance_id: str | None = None
    result: str


class AuditListOut(_Response):
    """Audit entries, newest first."""

    count: int
    entries: list[AuditEntryOut]


class AlertOutcome(_Response):
    """What the webhook did about one instance's auto-repair alerts."""

    instance_id: str | None = None
    alerts: list[str]
    outcome: Literal["started", "refused"]
    reason: str | None = None
    operation_id: str | None = None


class WebhookOut(_Response):
    """The webhook's answer: per instance, a repair started or why not."""

    received: int
    ignored: int
    results: list[AlertOutcome]


class HealthOut(_Response):
    """Liveness."""

    status: Literal["ok"]
    version: str
