"""The console's pages: the fleet, one instance, its history, logs, operations and settings.

Handlers only parse and validate the form or query, then call what the JSON APIs call:
`actions.commands` for operations, the engine for diagnostics (its single flight and rate
limit), the store and `exporter.reports` for history, the log analyzer for logs. Changing
requests pass the action API's per-caller and per-instance rate limits and leave the same
audit entries when refused.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from actions import commands
from actions.blueprints.common import (
    RateLimited,
    audit_refusal,
    describe_errors,
    rate_limits,
    services,
)
from actions.commands import Launch
from actions.console import i18n
from actions.console.charts import health_chart
from actions.console.session import (
    CSRF_FIELD,
    SignInNeeded,
    add_security_headers,
    check_csrf,
    csrf_token,
    session_principal,
    sign_in,
    sign_out,
    signed_in,
)
from actions.context import ActionServices
from actions.models import (
    BackupCreateRequest,
    ConfigEditRequest,
    RepairRequest,
    RestartServiceRequest,
    SafeRestartRequest,
)
from actions.operations.model import FINISHED
from exporter.access import AccessError, Principal, Unauthorized
from exporter.errors import DoctorError, InstanceNotFoundError
from exporter.issues import CATALOGUE
from exporter.logs import (
    DEFAULT_LEVEL,
    DEFAULT_RANGE,
    LEVELS,
    default_services,
    parse_level,
    parse_range,
)
from exporter.overview import STATUS_ORDER, InstanceSummary, summarize, worst_first
from exporter.reports import HealthPoint, health_report, load_window
from exporter.runbook import ALERT_ONLY
from exporter.web.access import current_access, current_principal
from exporter.web.params import BadRequest, int_arg

log = logging.getLogger(__name__)

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/assets")

RANGES = ("15m", "1h", "6h", "24h", "7d")
HISTORY_DAYS = (1, 7, 30)
HISTORY_ROWS = 20
LOG_ROWS = 500
AUDIT_ROWS = 100
# The Grafana dashboard the console links to (grafana/dashboards_src/instance.py UID).
GRAFANA_INSTANCE_DASHBOARD = "ultrabase-instance"


# context ------------------------------------------------------------------------------------


@bp.app_template_global()
def runbook_link(code: str) -> str:
    """The runbook entry of an issue code (docs/runbook.md's anchors)."""
    base = services().config.console.runbook_url or url_for("console.runbook")
    return f"{base}#{quote(code.lower())}"


@bp.app_template_global()
def grafana_link(instance_id: str) -> str | None:
    """The instance's Grafana dashboard when a Grafana URL is configured."""
    base = services().config.console.grafana_url
    if not base:
        return None
    return (f"{base.rstrip('/')}/d/{GRAFANA_INSTANCE_DASHBOARD}"
            f"?var-instance_id={quote(instance_id)}")


@bp.app_template_filter("when")
def when(moment: datetime | str | None) -> str:
    """A moment as UTC date and time to the second."""
    if moment is None:
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@bp.app_template_filter("ago")
def ago(moment: datetime | str | None) -> str:
    """How long ago, shortly (42 s, 5 min, 3 h, 2 d)."""
    if moment is None:
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@bp.app_template_filter("percent")
def percent(value: float | None) -> str:
    """An uptime percentage, or a dash when unknown."""
    return "—" if value is None else f"{value:.1f}%"


@bp.app_template_filter("seconds")
def seconds(value: float | None) -> str:
    """A duration in seconds, shortly."""
    if value is None:
        return "—"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


@bp.context_processor
def _context() -> dict[str, Any]:
    lang = i18n.language()
    principal = g.get("principal")
    return {"_": i18n.translator(lang), "lang": lang, "languages": i18n.LANGUAGES,
            "principal": principal,
            "can_act": isinstance(principal, Principal) and principal.has_role("operator"),
            "is_admin": isinstance(principal, Principal) and principal.has_role("admin"),
            "csrf_field": CSRF_FIELD, "csrf_token": csrf_token, "here": _here()}


@bp.after_request
def _headers(response: Response) -> Response:
    return add_security_headers(response)


def _here() -> str:
    """The current path and query, for the sign-in and language forms' way back."""
    query = request.query_string.decode("latin-1")
    return request.path + (f"?{query}" if query else "")


def _safe_next(target: str | None) -> str:
    """A local path to go back to; anything else goes to the fleet."""
    if (not target or not target.startswith("/") or target.startswith(("//", "/\\"))
            or any(ch in target for ch in "\r\n\\")):
        return url_for("console.fleet")
    return target


def _page(template: str, status: int = 200, **values: Any) -> tuple[str, int]:
    return render_template(f"console/{template}", **values), status


def _t(text: str, **values: Any) -> str:
    return i18n.translator(i18n.language())(text, **values)


def _see_other(endpoint: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **values), 303)  # type: ignore[return-value]


# errors -------------------------------------------------------------------------------------


@bp.errorhandler(DoctorError)
def _error(exc: DoctorError) -> Response | tuple[str, int]:
    """The console's error page, with the status the JSON API would answer."""
    if isinstance(exc, SignInNeeded):
        if request.method == "GET" and request.args.get("partial") is None \
                and not request.path.endswith("/status"):
            return redirect(url_for("console.login", next=_here()))  # type: ignore[return-value]
        return _page("error.html", 401, message=_t("Your session has ended; sign in again."),
                     retry_after=None, running=None)
    status = 404 if isinstance(exc, InstanceNotFoundError) else int(getattr(exc, "status", 500))
    message = _t("Instance not found.") if status == 404 and isinstance(
        exc, InstanceNotFoundError | AccessError) else str(exc)
    if status >= 500:
        log.error("console request failed: %s", exc)
    retry = exc.retry_after if isinstance(exc, RateLimited) else None
    running = getattr(exc, "running_id", None)
    body, status = _page("error.html", status, message=message, retry_after=retry,
                         running=running if isinstance(running, str) else None)
    response = make_response(body, status)
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    return response


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response | tuple[str, int]:
    if isinstance(exc, HTTPException):
        return exc  # type: ignore[return-value]
    log.exception("console: unexpected error")
    return _page("error.html", 500, message=_t("Internal error; see the service log."),
                 retry_after=None, running=None)


# signing in ---------------------------------------------------------------------------------


@bp.get("/login")
def login() -> tuple[str, int]:
    """The sign-in form."""
    return _page("login.html", next=_safe_next(request.args.get("next")), error=None)


@bp.post("/login")
def login_post() -> Response | tuple[str, int]:
    """Sign in with an API token or an Ultrabase manager JWT."""
    check_csrf(request)
    target = _safe_next(request.form.get("next"))
    try:
        sign_in(current_access(), request.form.get("credential", ""))
    except Unauthorized:
        return _page("login.html", 401, next=target,
                     error=_t("That token is not accepted here."))
    return redirect(target, 303)  # type: ignore[return-value]


@bp.post("/logout")
def logout() -> Response:
    """Sign out."""
    check_csrf(request)
    sign_out()
    return _see_other("console.login")


@bp.post("/language")
def language() -> Response:
    """Switch the console's language."""
    check_csrf(request)
    chosen = request.form.get("lang", "")
    if chosen in i18n.LANGUAGES:
        session["lang"] = chosen
    return redirect(_safe_next(request.form.get("next")), 303)  # type: ignore[return-value]


@bp.get("/runbook")
def runbook() -> tuple[str, int]:
    """Every issue code with what to do, from the catalogue (docs/runbook.md's content)."""
    g.principal = session_principal()
    return _page("runbook.html", catalogue=CATALOGUE, alert_only=ALERT_ONLY)


# the fleet ----------------------------------------------------------------------------------


@bp.get("/")
@signed_in("viewer", instance_arg=None)
def fleet() -> tuple[str, int]:
    """One card per instance, worst first, filtered by status and owner; nothing is run."""
    svc = services()
    found = svc.engine.discover()
    every = summarize(found.instances.values(), svc.store, current_principal().can_see,
                      uptime=True)
    status = request.args.get("status", "")
    if status and status not in STATUS_ORDER:
        raise BadRequest(f"status must be one of {', '.join(STATUS_ORDER)}")
    owner = request.args.get("owner", "")
    owners = sorted({s.instance.owner for s in every if s.instance.owner})
    cards = [s for s in worst_first(every)
             if (not status or s.status == status) and (not owner or s.instance.owner == owner)]
    counts = Counter(s.status for s in every)
    template = "_cards.html" if request.args.get("partial") == "cards" else "fleet.html"
    return _page(template, cards=cards, counts=counts, total=len(every), chosen=status,
                 owner=owner, owners=owners, statuses=list(STATUS_ORDER),
                 docker_ok=found.docker_ok)


# one instance -------------------------------------------------------------------------------


def _summary(svc: ActionServices, instance_id: str) -> InstanceSummary:
    instance = svc.engine.instance(instance_id)
    return summarize([instance], svc.store, lambda _id: True, uptime=True)[0]


def _instance_page(template: str, instance_id: str, status: int = 200, *,
                   summary: InstanceSummary | None = None, **values: Any) -> tuple[str, int]:
    svc = services()
    summary = summary or _summary(svc, instance_id)
    return _page(template, status, summary=summary, inst=summary.instance, iid=instance_id,
                 running_operation=svc.store.lock_holder(instance_id), **values)


@bp.get("/instances/<instance_id>")
@signed_in("viewer")
def instance(instance_id: str) -> tuple[str, int]:
    """Status, actions and the last diagnostic: root cause, chain, checks, issues."""
    svc = services()
    summary = _summary(svc, instance_id)
    latest = summary.latest
    diagnostic = latest.to_dict(cached=True) if latest else None
    return _instance_page("instance.html", instance_id, summary=summary, tab="overview",
                          diagnostic=diagnostic,
                          diagnosing=svc.engine.running(instance_id),
                          rate_window=svc.config.diagnostics.rate_limit_seconds)


@bp.post("/instances/<instance_id>/diagnose")
@signed_in("operator")
def diagnose(instance_id: str) -> Response:
    """Run a diagnostic now, in the background (single flight, rate limited as the API)."""
    started = services().engine.start(instance_id)
    if started.status == "started":
        flash(_t("Diagnostic started; this page follows it."), "info")
    elif started.status == "running":
        flash(_t("A diagnostic of this instance is already running; this page follows it."),
              "warning")
    else:
        wait = max(1, round(started.outcome.retry_after_seconds)) if started.outcome else 1
        flash(_t("Rate limited: one on-demand diagnostic per instance every %(window)s s. "
                 "Retry in %(wait)s s; the last result is shown.",
                 window=round(services().config.diagnostics.rate_limit_seconds), wait=wait),
              "warning")
    target = _safe_next(request.form.get("next") or url_for("console.instance",
                                                            instance_id=instance_id))
    return redirect(target, 303)  # type: ignore[return-value]


@bp.get("/instances/<instance_id>/diagnose/status")
@signed_in("viewer")
def diagnose_status(instance_id: str) -> Response:
    """Whether a diagnostic is running, and when the last one ended (for the page's poll)."""
    svc = services()
    latest = svc.store.latest(instance_id)
    return jsonify({"running": svc.engine.running(instance_id),
                    "last_diagnostic_at": latest.timestamp.isoformat() if latest else None})


@bp.get("/instances/<instance_id>/history")
@signed_in("viewer")
def history(instance_id: str) -> tuple[str, int]:
    """Health over time as a chart, the health report, and the latest diagnostics."""
    svc = services()
    days = int_arg("days", 7, 1, 365)
    # One read of the window serves the report, the chart and the list.
    window = load_window(svc.store, instance_id, days,
                         limit=svc.config.store.max_report_diagnostics)
    report = health_report(instance_id, window.history, days, window.end,
                           before=window.before)
    points = [HealthPoint(d.timestamp, d.healthy, len(d.issues)) for d in window.history]
    before = window.before
    chart = health_chart(points, window.start, window.end,
                         HealthPoint(before.timestamp, before.healthy) if before else None)
    rows = window.history[::-1][:HISTORY_ROWS]
    return _instance_page("history.html", instance_id, tab="history", report=report,
                          chart=chart, rows=rows, days=days, day_choices=HISTORY_DAYS)


@bp.get("/instances/<instance_id>/logs")
@signed_in("viewer")
def logs(instance_id: str) -> tuple[str, int]:
    """Recent logs of chosen services, at or above a level, over a time range."""
    svc = services()
    inst = svc.engine.instance(instance_id)
    wanted = request.args.getlist("service") or default_services(inst.components)
    try:
        level = parse_level(request.args.get("level") or DEFAULT_LEVEL)
        window = parse_range(request.args.get("range") or DEFAULT_RANGE)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    entries: list[Any] = []
    found = None
    if svc.analyzer is not None:
        try:
            entries, found = svc.analyzer.get_structured_logs(
                inst, wanted, level=level, since_seconds=window,
                max_lines=svc.config.diagnostics.log_max_lines)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return _instance_page("logs.html", instance_id, tab="logs", entries=entries[:LOG_ROWS],
                          log_summary=found, services=list(inst.components), wanted=wanted,
                          level=level, levels=LEVELS, range=request.args.get("range")
                          or DEFAULT_RANGE, ranges=RANGES, available=svc.analyzer is not None)


@bp.get("/instances/<instance_id>/audit")
@signed_in("admin")
def audit(instance_id: str) -> tuple[str, int]:
    """The audit trail of this instance, newest first (admins, as GET /api/audit)."""
    entries = services().store.audit(AUDIT_ROWS, 0, instance_id=instance_id)
    return _instance_page("audit.html", instance_id, tab="audit", entries=entries)


# operations ---------------------------------------------------------------------------------


def _start(kind: str, instance_id: str, prepare: Callable[[], Launch]) -> Response:
    """Rate limit, prepare, start; then follow the operation on its page."""
    rate_limits().hit(instance_id)
    try:
        operation = prepare().start(services(), current_principal())
    except (DoctorError, HTTPException) as exc:
        audit_refusal(kind, instance_id, exc)
        raise
    return _see_other("console.operation", op_id=operation.id)


def _model(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """A request model from form data, with the JSON API's messages."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"invalid form: {describe_errors(exc)}") from None


def _checked(name: str) -> bool:
    return request.form.get(name) in ("on", "true", "yes", "1")


@bp.get("/operations/<op_id>")
@signed_in("viewer", instance_arg=None)
def operation(op_id: str) -> tuple[str, int]:
    """An operation's steps as they progress; the page polls itself until it ends."""
    found = commands.find_operation(services(), current_principal(), op_id)
    template = "_operation.html" if request.args.get("partial") == "steps" else "operation.html"
    return _page(template, op=found.to_dict(), finished=found.status in FINISHED)


@bp.get("/instances/<instance_id>/restart")
@signed_in("operator")
def restart(instance_id: str) -> tuple[str, int]:
    """What a safe restart and a component restart do, before they are confirmed."""
    inst = services().engine.instance(instance_id)
    return _instance_page("restart.html", instance_id, tab="restart",
                          components=list(inst.components))


@bp.post("/instances/<instance_id>/safe-restart")
@signed_in("operator")
def safe_restart(instance_id: str) -> Response:
    """Back up, stop and start in dependency order, verify; roll back on failure."""
    return _start("safe_restart", instance_id, lambda: commands.safe_restart(
        services(), instance_id, _model(SafeRestartRequest, {})))


@bp.post("/instances/<instance_id>/restart-service")
@signed_in("operator")
def restart_service(instance_id: str) -> Response:
    """Restart one component (and its dependents when asked)."""
    return _start("restart_service", instance_id, lambda: commands.restart_service(
        services(), instance_id, _model(RestartServiceRequest, {
            "component": request.form.get("component", ""),
            "with_dependents": _checked("with_dependents")})))


@bp.get("/instances/<instance_id>/repair")
@signed_in("viewer")
def repair(instance_id: str) -> tuple[str, int]:
    """The repair plan of the last diagnostic, with its consequences; nothing is run."""
    return _instance_page("repair.html", instance_id, tab="repair",
                          plan=commands.repair_plan(services(), instance_id))


@bp.post("/instances/<instance_id>/repair")
@signed_in("operator")
def repair_post(instance_id: str) -> Response | tuple[str, int]:
    """Diagnose afresh, plan and run the plan (confirmed actions only with confirm)."""
    svc = services()
    rate_limits().hit(instance_id)
    try:
        wanted = request.form.getlist("action") or None
        body = _model(RepairRequest, {"actions": wanted, "confirm": _checked("confirm")})
        decision = commands.repair(svc, instance_id, body)
        if decision.launch is None:
            return _instance_page("repair.html", instance_id, tab="repair", plan=decision.plan)
        op = decision.launch.start(svc, current_principal())
    except (DoctorError, HTTPException) as exc:
        audit_refusal("repair", instance_id, exc)
        raise
    return _see_other("console.operation", op_id=op.id)


@bp.get("/instances/<instance_id>/config")
@signed_in("viewer")
def config(instance_id: str) -> tuple[str, int]:
    """The editable settings (secrets masked), as a form for operators."""
    return _instance_page("config.html", instance_id, tab="config",
                          current=commands.current_config(services(), instance_id), error=None)


@bp.post("/instances/<instance_id>/config")
@signed_in("operator")
def config_post(instance_id: str) -> Response | tuple[str, int]:
    """Change settings with the API's validation; the operation rolls back if health fails."""
    svc = services()
    current = commands.current_config(svc, instance_id)
    fields = current.get("fields", {})
    try:
        return _start("config_edit", instance_id, lambda: commands.config_edit(
            svc, instance_id, _model(ConfigEditRequest, {
                "changes": commands.typed_settings(
                    {name: request.form.get(name, "") for name in fields}, fields)})))
    except BadRequest as exc:
        # The form again, with the problem; nothing was changed.
        return _instance_page("config.html", instance_id, 400, tab="config", current=current,
                              error=str(exc))


@bp.get("/instances/<instance_id>/backups")
@signed_in("viewer")
def backups(instance_id: str) -> tuple[str, int]:
    """The instance's backups, newest first, and a form to take one."""
    return _instance_page("backups.html", instance_id, tab="backups",
                          backups=commands.list_backups(services(), instance_id))


@bp.post("/instances/<instance_id>/backups")
@signed_in("operator")
def backup_post(instance_id: str) -> Response:
    """Take a backup (and a database dump when asked)."""
    return _start("backup", instance_id, lambda: commands.backup(
        services(), instance_id, _model(BackupCreateRequest, {
            "db_dump": _checked("db_dump"),
            "reason": request.form.get("reason") or "console"})))


@bp.get("/instances/<instance_id>/backups/<backup_id>/restore")
@signed_in("operator")
def restore(instance_id: str, backup_id: str) -> tuple[str, int]:
    """What restoring this backup does, before it is confirmed."""
    found = commands.find_backup(services(), instance_id, backup_id)
    return _instance_page("restore.html", instance_id, tab="backups", backup=found)


@bp.post("/instances/<instance_id>/backups/<backup_id>/restore")
@signed_in("operator")
def restore_post(instance_id: str, backup_id: str) -> Response:
    """Verify the backup, back up the current state, restore, recreate what changed."""
    return _start("restore", instance_id,
                  lambda: commands.restore(services(), instance_id, backup_id))

