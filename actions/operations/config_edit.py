"""The config editor: the editable settings, where each lives, and the edit operation.

The Ultrabase manager bakes settings into the rendered files, so one setting lives in
several places (registry record, env file, rendered compose file, kong.yml) and only takes
effect when the containers that read it are recreated. An edit: validate every value →
stage every file edit in memory → back up → write each file atomically → `compose up -d
--no-deps --force-recreate` the services whose configuration changed → wait for them and
for quick_health (no critical issue that was not there before) → on any failure restore
the files from the backup, recreate the same services again and fail with a message that
says it was rolled back and why.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from actions.backups import Backup
from actions.containers import LOG_CHARS, Containers, Readiness, last_message
from actions.containers import wait_healthy as containers_wait
from actions.files import FileSet, UnsafeEdit, UnsafeValue, check_value, kong_scalar
from actions.models import (
    DASHBOARD_PASSWORD_PATTERN,
    DASHBOARD_PASSWORD_RULE,
    DASHBOARD_USERNAME_PATTERN,
    INSTANCE_NAME_PATTERN,
)
from actions.operations.health import issue_key, settle_quick_health
from actions.operations.model import OperationError, StepFailed
from actions.operations.runner import Body, OperationContext
from exporter.discovery.model import Instance
from exporter.dockerhost import ContainerDetails, ContainerSummary
from exporter.errors import DoctorError
from exporter.web.params import BadRequest

MASK = "********"
# A recreated container without a healthcheck must stay up this long to count as started.
SETTLE_SECONDS = 3.0
_POLL_SECONDS = 1.0

Kind = Literal["str", "bool", "int"]
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+"
_HOSTNAME = (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
             r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_EMAIL = r"[A-Za-z0-9._%+-]{1,64}@" + _HOSTNAME


def _check_url(value: str) -> str | None:
    """Why value is not an absolute http(s) URL, or None."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a malformed port)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http:// or https:// URL"
    return None


@dataclass(frozen=True)
class FieldSpec:
    """One editable setting: its type and limits, where it lives, what reads it."""

    name: str
    kind: Kind
    description: str
    secret: bool = False
    min_length: int = 0
    max_length: int = 256
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    check: Callable[[str], str | None] | None = None
    # How to say what `pattern` allows, for a refusal that tells the caller what to send.
    rule: str | None = None
    registry: tuple[str, ...] | None = None  # path in the instance's registry record
    env: tuple[str, ...] = ()  # keys in the env file
    compose: tuple[tuple[str, str], ...] = ()  # (service, KEY) in the rendered compose file
    # (service, KEY) written only where the service already defines KEY
    compose_if_present: tuple[tuple[str, str], ...] = ()
    kong: Literal["username", "password"] | None = None  # kong.yml basic-auth credential
    recreate: tuple[str, ...] = ()  # services recreated when the value changes

    def validate(self, value: Any) -> bool | int | str:
        """The value, checked; UnsafeValue (a 400) saying what is wrong, never the value."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise UnsafeValue(f"{self.name} must be true or false")
            return value
        if self.kind == "int":
            return self._integer(value)
        return self._text(value)

    def _integer(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UnsafeValue(f"{self.name} must be an integer")
        low = self.minimum if self.minimum is not None else value
        high = self.maximum if self.maximum is not None else value
        if not low <= value <= high:
            raise UnsafeValue(f"{self.name} must be from {self.minimum} to {self.maximum}")
        return value

    def _text(self, value: Any) -> str:
        text = check_value(value, max_length=self.max_length,
                           pattern=None if self.rule else self.pattern, name=self.name)
        if self.rule and self.pattern and re.fullmatch(self.pattern, text) is None:
            raise UnsafeValue(f"{self.name} {self.rule}")
        if len(text) < self.min_length:
            raise UnsafeValue(f"{self.name} must have at least {self.min_length} characters")
        if self.min_length and not text.strip():
            raise UnsafeValue(f"{self.name} must not be blank")
        if self.kong is not None:
            kong_scalar(text, self.name)
        problem = self.check(text) if self.check is not None and text else None
        if problem:
            raise UnsafeValue(f"{self.name} {problem}")
        return text

    def text(self, value: bool | int | str) -> str:
        """The value as written in the env and compose files."""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def normalize(self, raw: Any) -> Any:
        """A value read from a file or a container's env, in this field's type if it parses."""
        if raw is None:
            return None
        if self.kind == "bool":
            text = "true" if raw is True else "false" if raw is False else str(raw)
            return True if text in _GO_TRUE else False if text in _GO_FALSE else text
        if self.kind == "int":
            text = str(raw)
            return int(text) if re.fullmatch(r"-?[0-9]{1,12}", text) else text
        return str(raw)


_SMTP_RECREATE = ("auth",)

EDITABLE: Mapping[str, FieldSpec] = {spec.name: spec for spec in (
    # The three values that reach the manager's registry (and its dashboard's HTML) take
    # only what the manager's own forms take: see actions.models.
    FieldSpec("name", "str", "The instance's display name (registry only; nothing restarts)",
              min_length=2, max_length=50, pattern=INSTANCE_NAME_PATTERN, registry=("name",),
              rule="must be 2 to 50 letters (A-Z, a-z), digits, spaces, - or _, as the "
                   "Ultrabase manager's own editor accepts"),
    FieldSpec("dashboard_username", "str", "Studio's basic-auth user behind Kong",
              min_length=3, max_length=30, pattern=DASHBOARD_USERNAME_PATTERN,
              rule="must be 3 to 30 letters (A-Z, a-z), digits or _, as the Ultrabase "
                   "manager's own editor accepts",
              registry=("credentials", "dashboard_username"), env=("DASHBOARD_USERNAME",),
              compose=(("kong", "DASHBOARD_USERNAME"),),
              compose_if_present=(("studio", "DASHBOARD_USERNAME"),),
              kong="username", recreate=("kong", "studio")),
    FieldSpec("dashboard_password", "str", "Studio's basic-auth password behind Kong",
              secret=True, min_length=8, max_length=100, pattern=DASHBOARD_PASSWORD_PATTERN,
              rule=DASHBOARD_PASSWORD_RULE,
              registry=("credentials", "dashboard_password"), env=("DASHBOARD_PASSWORD",),
              compose=(("kong", "DASHBOARD_PASSWORD"),),
              compose_if_present=(("studio", "DASHBOARD_PASSWORD"),),
              kong="password", recreate=("kong", "studio")),
    FieldSpec("site_url", "str", "GoTrue's SITE_URL (redirects, e-mail links)",
              min_length=1, max_length=2048, pattern=_URL_CHARS, check=_check_url,
              env=("SITE_URL",), compose=(("auth", "GOTRUE_SITE_URL"),), recreate=("auth",)),
    FieldSpec("disable_signup", "bool", "Refuse new sign-ups",
              env=("DISABLE_SIGNUP",), compose=(("auth", "GOTRUE_DISABLE_SIGNUP"),),
              recreate=("auth",)),
    FieldSpec("enable_email_autoconfirm", "bool", "Confirm e-mail sign-ups without a mail",
              env=("ENABLE_EMAIL_AUTOCONFIRM",),
              compose=(("auth", "GOTRUE_MAILER_AUTOCONFIRM"),), recreate=("auth",)),
    # db's JWT_EXP is left alone: it only feeds the init scripts of a new data dir, and
    # changing it would make the next full `compose up` recreate the database for nothing.
    FieldSpec("jwt_expiry", "int", "Lifetime of access tokens, in seconds",
              minimum=60, maximum=604800, env=("JWT_EXPIRY",),
              compose=(("auth", "GOTRUE_JWT_EXP"), ("rest", "PGRST_APP_SETTINGS_JWT_EXP")),
              recreate=("auth", "rest")),
    FieldSpec("smtp_admin_email", "str", "Sender address of auth e-mails",
              max_length=254, pattern=_EMAIL + "|", env=("SMTP_ADMIN_EMAIL",),
              compose=(("auth", "GOTRUE_SMTP_ADMIN_EMAIL"),), recreate=_SMTP_RECREATE),
    FieldSpec("smtp_host", "str", "SMTP server host name or IPv4 address",
              max_length=253, pattern=_HOSTNAME + "|", env=("SMTP_HOST",),
              compose=(("auth", "GOTRUE_SMTP_HOST"),), recreate=_SMTP_RECREATE),
    FieldSpec("smtp_port", "int", "SMTP server port", minimum=1, maximum=65535,
              env=("SMTP_PORT",), compose=(("auth", "GOTRUE_SMTP_PORT"),),
              recreate=_SMTP_RECREATE),
    FieldSpec("smtp_user", "str", "SMTP login user", max_length=256, env=("SMTP_USER",),
              compose=(("auth", "GOTRUE_SMTP_USER"),), recreate=_SMTP_RECREATE),
    FieldSpec("smtp_pass", "str", "SMTP login password", secret=True, max_length=256,
              env=("SMTP_PASS",), compose=(("auth", "GOTRUE_SMTP_PASS"),),
              recreate=_SMTP_RECREATE),
    FieldSpec("smtp_sender_name", "str", "Sender name of auth e-mails", max_length=128,
              env=("SMTP_SENDER_NAME",), compose=(("auth", "GOTRUE_SMTP_SENDER_NAME"),),
              recreate=_SMTP_RECREATE),
)}


# --- validation -------------------------------------------------------------------------


def validate_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The checked values by field; BadRequest listing every problem at once."""
    if not isinstance(changes, Mapping) or not changes:
        raise BadRequest("changes must name at least one setting")
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name, value in changes.items():
        spec = EDITABLE.get(name) if isinstance(name, str) else None
        if spec is None:
            problems.append(f"{str(name)[:40]!r} is not an editable setting")
            continue
        try:
            out[name] = spec.validate(value)
        except BadRequest as exc:
            problems.append(str(exc))
    if problems:
        raise BadRequest("invalid changes: " + "; ".join(problems))
    return out


# --- reading ----------------------------------------------------------------------------


def current_config(instance: Instance) -> dict[str, Any]:
    """Each editable setting as the files (and running containers) hold it; secrets masked.

    `value` is what a recreated container would get (the compose file first); `in_sync`
    tells whether every place that carries the setting agrees.
    """
    files = FileSet(instance)
    problems: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for spec in EDITABLE.values():
        places = _places(files, instance, spec, problems)
        present = {place: spec.normalize(raw) for place, raw in places.items()
                   if raw is not None}
        ordered = sorted(present, key=_place_rank)
        value = present[ordered[0]] if ordered else None
        distinct = {repr(v) for v in present.values()}
        entry: dict[str, Any] = {
            "value": (MASK if value else value) if spec.secret else value,
            "type": spec.kind, "secret": spec.secret, "description": spec.description,
            "in_sync": len(distinct) <= 1,
            "places": ordered, "recreates": list(spec.recreate),
        }
        if len(distinct) > 1 and not spec.secret:
            entry["values"] = {place: present[place] for place in ordered}
        fields[spec.name] = entry
    return {"editable": _editable_reason(instance) is None,
            "not_editable_because": _editable_reason(instance), "fields": fields,
            "problems": [f"{key}: {why}" for key, why in sorted(problems.items())]}


def _places(files: FileSet, instance: Instance, spec: FieldSpec,
            problems: dict[str, str]) -> dict[str, Any]:
    """Where the setting is found: place name -> raw value (None: not set there)."""
    found: dict[str, Any] = {}

    def read(key: str, place: str, getter: Callable[[], Any]) -> None:
        if key in problems or getattr(instance.files, key) is None:
            return
        try:
            found[place] = getter()
        except UnsafeEdit as exc:
            problems[key] = str(exc)

    if spec.registry is not None:
        path = spec.registry
        read("registry", "registry:" + ".".join(path), lambda: files.get_registry(path))
    for key in spec.env:
        read("env_file", f"env_file:{key}", lambda k=key: files.get_env(k))  # type: ignore[misc]
    for service, key in (*spec.compose, *spec.compose_if_present):
        read("compose_file", f"compose_file:{service}.{key}",
             lambda s=service, k=key: files.get_compose_env(s, k))  # type: ignore[misc]
        runtime = instance.runtime_env.get(service)
        if runtime is not None and key in runtime:
            found[f"runtime:{service}.{key}"] = runtime[key]
    if spec.kong is not None:
        index = 0 if spec.kong == "username" else 1
        read("kong_file", f"kong_file:basicauth.{spec.kong}",
             lambda: files.get_kong_basicauth()[index])
    return found


def _place_rank(place: str) -> tuple[int, str]:
    order = ("compose_file", "kong_file", "env_file", "registry", "runtime")
    return order.index(place.split(":", 1)[0]), place


def _editable_reason(instance: Instance) -> str | None:
    """Why the config editor cannot change this instance, or None."""
    if instance.source != "ultrabase":
        return ("settings are edited only in the Ultrabase layout (registry, env file, "
                "rendered compose file, kong.yml)")
    # A file reached through a symbolic link counts as missing: it is not followed.
    present = FileSet(instance).paths()
    missing = [k for k in ("registry", "env_file", "compose_file", "kong_file")
               if k not in present]
    if missing:
        return "missing " + ", ".join(m.replace("_", " ") for m in missing)
    return None


# --- planning ---------------------------------------------------------------------------


def plan_changes(instance: Instance, values: Mapping[str, Any]
                 ) -> tuple[FileSet, list[str], tuple[str, ...]]:
    """Stage every edit in memory: (file set, fields that change, services to recreate)."""
    reason = _editable_reason(instance)
    if reason is not None:
        raise OperationError(f"instance {instance.id} cannot be edited: {reason}")
    files = FileSet(instance)
    changed: list[str] = []
    recreate: set[str] = set()
    for name, value in values.items():
        spec = EDITABLE[name]
        before = {k: files.text(k) for k in _file_keys(spec)}
        _stage(files, spec, value)
        if any(files.text(k) != text for k, text in before.items()):
            changed.append(name)
            recreate.update(spec.recreate)
    services = tuple(s for s in files.affected_services() if s in recreate)
    return files, changed, services


def _file_keys(spec: FieldSpec) -> list[str]:
    keys = []
    if spec.registry is not None:
        keys.append("registry")
    if spec.env:
        keys.append("env_file")
    if spec.compose or spec.compose_if_present:
        keys.append("compose_file")
    if spec.kong is not None:
        keys.append("kong_file")
    return keys


def _stage(files: FileSet, spec: FieldSpec, value: bool | int | str) -> None:
    text = spec.text(value)
    if spec.registry is not None:
        files.set_registry(spec.registry, value)
    for key in spec.env:
        files.set_env(key, text)
    for service, key in spec.compose:
        files.set_compose_env([service], key, text)
    for service, key in spec.compose_if_present:
        files.set_compose_env([service], key, text, only_where_present=True)
    if spec.kong == "username":
        files.set_kong_basicauth(text, None)
    elif spec.kong == "password":
        files.set_kong_basicauth(None, text)


# --- the operation ----------------------------------------------------------------------


def config_edit_body(changes: Mapping[str, Any]) -> Body:
    """An operation applying `changes` (validated here, before any operation exists)."""
    values = validate_changes(changes)
    secrets = [str(v) for k, v in values.items() if EDITABLE[k].secret and v]

    def body(ctx: OperationContext) -> dict[str, Any]:
        if secrets:
            ctx.redact_also(*secrets)
        instance = ctx.instance
        with ctx.step("plan", fields=sorted(values)) as detail:
            files, changed, services = plan_changes(instance, values)
            detail.update(changed_fields=changed, files=files.changed(),
                          services=list(services))
        if not files.changed():
            return {"changed": [], "files": [], "recreated": [],
                    "message": "every value is already in place; nothing was changed"}
        with ctx.step("backup") as detail:
            backup = ctx.backups.create(instance, "before config edit of " + ", ".join(changed),
                                        files=files)
            detail["backup_id"] = backup.id
        outcome = apply_and_verify(ctx, files, backup, services, what="the config change")
        return {"changed": changed, **outcome}

    return body


def apply_and_verify(ctx: OperationContext, files: FileSet, backup: Backup,
                     services: Sequence[str], *, what: str) -> dict[str, Any]:
    """Write the staged files, recreate `services`, wait for health; roll back on failure.

    Health is judged against a baseline taken first: a critical-path issue that was there
    before the change (and has nothing to do with it) does not fail it; a new one does.
    The rollback restores the files from `backup`, recreates the same services again and
    raises OperationError(rolled_back=True) saying why; only if the rollback itself fails
    does the error say so and name the backup to restore by hand.
    """
    services = tuple(services)
    instance = ctx.instance
    with ctx.step("baseline_health") as detail:
        before = ctx.engine.quick_health(instance.id)
        baseline = frozenset(issue_key(i) for i in before.issues)
        detail["healthy"] = before.healthy
        if before.issues:
            detail["issues"] = sorted({i.code for i in before.issues})
    try:
        with ctx.step("write_files") as detail:
            written = files.write()
            detail["files"] = [p.name for p in written]
    except UnsafeEdit as exc:
        # write() checks every file before touching any: nothing changed on disk.
        raise OperationError(f"{what} was not applied: {exc}") from None
    except Exception as exc:
        _rollback(ctx, backup, services, what, _why(exc), baseline)
    try:
        if services:
            with ctx.step("recreate", services=list(services)):
                ctx.compose.up(instance, services, recreate=True)
        with ctx.step("verify_health", services=list(services)) as detail:
            wait_healthy(ctx, services, detail, baseline=baseline)
    except Exception as exc:
        _rollback(ctx, backup, services, what, _why(exc), baseline)
    return {"backup_id": backup.id, "files": [p.name for p in written],
            "recreated": list(services)}


def _rollback(ctx: OperationContext, backup: Backup, services: Sequence[str], what: str,
              reason: str, baseline: frozenset[tuple[str, str | None]]) -> NoReturn:
    """Put the backed-up files back, recreate the services again, and raise."""
    instance = ctx.instance
    for name in ("write_files", "recreate"):
        ctx.mark(name, "rolled_back")
    again = tuple(services)
    try:
        with ctx.step("rollback_files", backup_id=backup.id) as detail:
            staged = ctx.backups.stage(instance, ctx.backups.load(instance.id, backup.id))
            again = tuple(sorted(set(services) | set(staged.affected_services())))
            detail["files"] = [p.name for p in staged.write()]
        if again:
            with ctx.step("rollback_recreate", services=list(again)):
                ctx.compose.up(instance, again, recreate=True)
    except Exception as exc:
        raise OperationError(
            f"{what} failed: {reason}. The rollback failed too ({_why(exc)}): restore "
            f"backup {backup.id} by hand") from None
    done = f"files restored from backup {backup.id}" + (
        f", {', '.join(again)} recreated" if again else "")
    try:
        with ctx.step("rollback_verify", services=list(again)) as detail:
            wait_healthy(ctx, again, detail, baseline=baseline)
    except Exception as exc:
        raise OperationError(
            f"{what} was rolled back ({done}) because: {reason}. The instance is still "
            f"not healthy after the rollback: {_why(exc)}", rolled_back=True) from None
    raise OperationError(f"{what} was rolled back ({done}) because: {reason}",
                         rolled_back=True)


def _why(exc: BaseException) -> str:
    if isinstance(exc, StepFailed):
        return exc.reason
    if isinstance(exc, DoctorError):
        return str(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500] if first else type(exc).__name__


# --- waiting for health -----------------------------------------------------------------


def wait_healthy(ctx: OperationContext, services: Sequence[str], detail: dict[str, Any],
                 *, baseline: frozenset[tuple[str, str | None]] = frozenset()) -> None:
    """Recreated services up (healthy, or steady without a healthcheck), then quick_health.

    Fails at once (StepFailed) when a recreated container exits, restarts or turns
    unhealthy; otherwise waits up to actions.health_timeout_seconds for quick_health to
    show no critical issue beyond the `baseline` ones (code, component) found before.
    """
    timeout = ctx.config.actions.health_timeout_seconds
    deadline = time.monotonic() + timeout
    docker = Containers(ctx.docker, ctx.compose)

    def look(pending: Sequence[str]) -> dict[str, Readiness]:
        listed = _service_containers(ctx)
        return {s: Readiness(_service_ready(ctx, docker, s, listed.get(s))) for s in pending}

    def timed_out(left: Mapping[str, Readiness]) -> StepFailed:
        return StepFailed("verify_health", f"{', '.join(left)} did not become healthy "
                                           f"within {timeout:g}s")

    containers_wait(look, services, timeout, interval=_POLL_SECONDS, timed_out=timed_out)
    detail["services_ready"] = list(services)
    health, new, _ = settle_quick_health(ctx, deadline, baseline)
    if new:
        issues = "; ".join(f"{i.code}: {i.message}" for i in new[:3])
        detail["quick_health"] = [i.code for i in new]
        raise StepFailed("verify_health", f"quick health check failed ({issues})")
    detail["quick_health"] = "healthy" if health.healthy else "as before the change"
    if health.issues:
        detail["pre_existing_issues"] = sorted({i.code for i in health.issues})


def _service_containers(ctx: OperationContext) -> dict[str, ContainerSummary]:
    project = ctx.instance.compose_project
    return {c.compose_service: c for c in ctx.docker.list_containers()
            if c.compose_project == project and c.compose_service}


def _service_ready(ctx: OperationContext, docker: Containers, service: str,
                   container: ContainerSummary | None) -> bool:
    """True when the recreated container is up; StepFailed when it is failing."""
    if container is None:
        return False
    details = docker.inspect(container.id)
    if details is None:
        return False
    what = _failing(container, details)
    if what:
        raise StepFailed("verify_health",
                         f"{service} {what}{_log_tail(ctx, docker, container.id)}")
    if container.state != "running":
        return False
    if container.health is not None:
        return container.health == "healthy"
    started = _parse_time(details.started_at)
    return started is not None and (datetime.now(UTC) - started).total_seconds() >= SETTLE_SECONDS


def _failing(container: ContainerSummary, details: ContainerDetails) -> str:
    """How the recreated container fails, or "" when it does not (yet)."""
    if container.state in ("exited", "dead"):
        return f"exited with code {details.exit_code}"
    if container.state == "restarting" or details.restart_count > 0:
        return f"keeps restarting ({details.restart_count} restarts" + (
            f", last exit code {details.exit_code})" if details.exit_code else ")")
    if container.health == "unhealthy":
        return "fails its healthcheck"
    return ""


def _log_tail(ctx: OperationContext, docker: Containers, container_id: str) -> str:
    """The container's last log line, as a short reason (JSON logs: their message)."""
    text = last_message(docker.log_tail(container_id, 3))
    if text is None:
        return ""
    text = ctx.redactor.text(text)
    # The cause is usually at the end of a long line (e.g. "... (SQLSTATE 28P01)").
    return f" (last log: {'…' + text[-LOG_CHARS:] if len(text) > LOG_CHARS else text})"


def _parse_time(value: str) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    try:
        # Docker gives nanoseconds; Python takes at most microseconds.
        trimmed = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
        parsed = datetime.fromisoformat(trimmed)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
