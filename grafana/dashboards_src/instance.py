"""Instance detail: one instance's components, checks, endpoints, database, disk and logs."""

from __future__ import annotations

from typing import Any

from grafana.dashboards_src.common import (
    DB_CONNECTIONS_RATIO,
    DISK_CRITICAL_FREE,
    DISK_LOW_FREE,
    ENDPOINT_SLOW_SECONDS,
    HEALTH,
    JWT_WARNING_DAYS,
    LOG_ERROR_SPIKE,
    NOT_RUN,
    OK_FAILED,
    SWEEP_SECONDS,
    SYNTHETIC_WINDOW,
    UP_DOWN,
    Cell,
    Spec,
    active_issues_table,
    assemble,
    console_url_variable,
    datasource_variable,
    exporter_url_variable,
    healthy,
    host_counter_rate,
    host_variable,
    info,
    instance_variable,
    merge_and_organize,
    or_not_run,
    or_zero,
    per_instance,
    query,
    recent_events_table,
    sel,
    stat_panel,
    state_timeline_panel,
    table_panel,
    table_queries,
    timeseries_panel,
    url_link,
)

UID = "ultrabase-instance"
TITLE = "Ultrabase / Instance detail"

_API = "${exporter_url}/api/instances/${instance_id}"
_JWT_STEPS = ((None, "red"), (0, "orange"), (JWT_WARNING_DAYS, "green"))
_FREE_STEPS = ((None, "red"), (DISK_CRITICAL_FREE, "orange"), (DISK_LOW_FREE, "green"))


def _synthetic_user() -> str:
    return or_not_run(per_instance(
        "max", f"last_over_time({sel('ultrabase_auth_user_create_success')}"
               f"[{SYNTHETIC_WINDOW}])"))


def _jwt_days(agg: str, *by: str) -> str:
    days = f"({sel('ultrabase_jwt_expiry_timestamp_seconds')} - time()) / 86400"
    return per_instance(agg, days, *by) if by else f"{agg}({days})"


def _summary() -> list[Cell]:
    age = per_instance("max", sel("ultrabase_diagnostic_timestamp_seconds"))
    db_used = (f"max({sel('ultrabase_db_connections')} / "
               f"{sel('ultrabase_db_max_connections')})")
    return [
        Cell(table_panel(
            "Instance", "The instance's name and owner from the last discovery.",
            table_queries(info()),
            transformations=merge_and_organize(
                rename={"instance_id": "Instance", "instance_name": "Name",
                        "owner": "Owner"},
                hide=("Time", "Value", "host"),
                order=("instance_id", "instance_name", "owner"))), 6, 5),
        Cell(stat_panel(
            "Health", "Overall health of the latest cached diagnostic: unhealthy when an "
            "issue of severity warning or above is active.",
            [query(f"{healthy()} or ({per_instance('max', sel('ultrabase_instance_info'))}"
                   " * -1)")],
            mappings=HEALTH, steps=((None, "red"), (1, "green"))), 3, 5),
        Cell(stat_panel(
            "Diagnostic age", "Seconds since the latest cached diagnostic finished.",
            [query(f"time() - {age}")], unit="s",
            steps=((None, "green"), (3 * SWEEP_SECONDS, "orange"), (3600, "red"))), 3, 5),
        Cell(stat_panel(
            "Active issues", "Issues of the latest cached diagnostic, any severity.",
            [query(or_zero(f"count({sel('ultrabase_issue_active')})"))],
            steps=((None, "green"), (1, "orange"))), 3, 5),
        Cell(stat_panel(
            "Synthetic user", "Last result of the synthetic admin user create + delete "
            f"through the gateway within {SYNTHETIC_WINDOW} (scheduled sweeps run it at most "
            "hourly; on-demand runs always do).",
            [query(_synthetic_user())], mappings=NOT_RUN,
            steps=((None, "red"), (1, "green"))), 3, 5),
        Cell(stat_panel(
            "JWT key days left", "Days until the first of the anon and service_role keys "
            f"expires; orange below {JWT_WARNING_DAYS} days, red once expired.",
            [query(_jwt_days("min"))], steps=_JWT_STEPS, decimals=0), 3, 5),
        Cell(stat_panel(
            "DB connections used", "Open connections as a share of max_connections; "
            f"DB_CONNECTIONS_HIGH above {DB_CONNECTIONS_RATIO:.0%}.",
            [query(db_used)], unit="percentunit",
            steps=((None, "green"), (DB_CONNECTIONS_RATIO, "red"))), 3, 5),
    ]


def _components() -> list[list[Cell]]:
    errors = per_instance("sum", sel("ultrabase_log_lines", 'level=~"error|fatal"'),
                          "component")
    any_lines = per_instance("sum", sel("ultrabase_log_lines"), "component")
    return [
        [Cell(state_timeline_panel(
            "Component status", "Each component's health probe over time "
            "(ultrabase_component_up).",
            [query(per_instance("max", sel("ultrabase_component_up"), "component"),
                   "{{component}}")],
            mappings=UP_DOWN), 24, 9)],
        [Cell(timeseries_panel(
            "Container restarts", "Docker's restart count of each component's container; "
            "a growing count is a crash loop (CONTAINER_CRASH_LOOP).",
            [query(per_instance("max", sel("ultrabase_container_restarts"), "component"),
                   "{{component}}")], decimals=0), 12, 8),
         Cell(timeseries_panel(
             "Log errors by component", "Error and fatal log lines each component wrote in "
             f"the logs check's window; {LOG_ERROR_SPIKE} or more raise an issue.",
             [query(f"{errors} or ({any_lines} * 0)", "{{component}}")],
             steps=((None, "green"), (LOG_ERROR_SPIKE, "red")), threshold_line=True,
             bars=True, decimals=0), 12, 8)],
    ]


def _checks() -> list[Cell]:
    return [
        Cell(state_timeline_panel(
            "Check success", "Whether each check family passed (ultrabase_check_success).",
            [query(per_instance("max", sel("ultrabase_check_success"), "check"),
                   "{{check}}")],
            mappings=OK_FAILED), 12, 8),
        Cell(timeseries_panel(
            "Check duration", "Seconds each check took in the diagnostic "
            "(ultrabase_check_duration_seconds).",
            [query(per_instance("max", sel("ultrabase_check_duration_seconds"), "check"),
                   "{{check}}")], unit="s"), 12, 8),
    ]


def _gateway_and_auth() -> list[Cell]:
    return [
        Cell(timeseries_panel(
            "Endpoint latency", "Seconds each gateway route took to answer "
            f"(ultrabase_endpoint_latency_seconds); ENDPOINT_SLOW above "
            f"{ENDPOINT_SLOW_SECONDS} s; a gap means it did not answer.",
            [query(per_instance("max", sel("ultrabase_endpoint_latency_seconds"),
                                "endpoint"), "{{endpoint}}")],
            unit="s", steps=((None, "green"), (ENDPOINT_SLOW_SECONDS, "red")),
            threshold_line=True), 8, 8),
        Cell(state_timeline_panel(
            "Auth user create", "Synthetic admin user create + delete through the gateway "
            "(ultrabase_auth_user_create_success), last result within "
            f"{SYNTHETIC_WINDOW}; \"Not run\" when it did not run in that window.",
            [query(_synthetic_user(), "synthetic user")], mappings=NOT_RUN), 8, 8),
        Cell(timeseries_panel(
            "JWT key days left", "Days until each API key expires "
            "(ultrabase_jwt_expiry_timestamp_seconds).",
            [query(_jwt_days("min", "role"), "{{role}}")], steps=_JWT_STEPS,
            threshold_line=True, decimals=0), 8, 8),
    ]


def _database_and_disk() -> list[Cell]:
    free = per_instance("max", f"{sel('ultrabase_filesystem_avail_bytes')} / "
                               f"{sel('ultrabase_filesystem_size_bytes')}")
    return [
        Cell(timeseries_panel(
            "DB connections", "Open connections against max_connections "
            "(ultrabase_db_connections, ultrabase_db_max_connections).",
            [query(per_instance("max", sel("ultrabase_db_connections")), "connections"),
             query(per_instance("max", sel("ultrabase_db_max_connections")),
                   "max_connections", ref="B")], decimals=0), 6, 8),
        Cell(timeseries_panel(
            "DB size", "Size of the instance's database (ultrabase_db_size_bytes).",
            [query(per_instance("max", sel("ultrabase_db_size_bytes")), "database")],
            unit="bytes"), 6, 8),
        Cell(timeseries_panel(
            "Disk free", "Free share of the filesystem holding the instance's files.",
            [query(free, "free")], unit="percentunit", steps=_FREE_STEPS,
            threshold_line=True, min_val=0, max_val=1), 6, 8),
        Cell(timeseries_panel(
            "Volume sizes", "Size of each volume directory (ultrabase_volume_size_bytes).",
            [query(per_instance("max", sel("ultrabase_volume_size_bytes"), "volume"),
                   "{{volume}}")], unit="bytes"), 6, 8),
    ]


def _activity() -> list[Cell]:
    host_wide = (" These counters have no instance_id label: they cover every instance of "
                 "the selected hosts.")
    return [
        Cell(timeseries_panel(
            "Operations per hour (host-wide)", "Safe restarts, repairs, config edits and "
            "backups per hour by operation and result (ultrabase_operations_total)."
            + host_wide,
            [query(or_zero(host_counter_rate("ultrabase_operations_total", "operation",
                                             "result"), operation="none", result="none"),
                   "{{operation}} {{result}}")]), 12, 8),
        Cell(timeseries_panel(
            "Diagnostic runs per hour (host-wide)", "Diagnostic runs per hour by trigger "
            "and result (ultrabase_diagnostic_runs_total)." + host_wide,
            [query(or_zero(host_counter_rate("ultrabase_diagnostic_runs_total", "trigger",
                                             "result"), trigger="none", result="none"),
                   "{{trigger}} {{result}}")]), 12, 8),
    ]


def build() -> dict[str, Any]:
    """The instance detail dashboard as JSON data."""
    auth = " The exporter API wants an Authorization: Bearer token (viewer or above)."
    return assemble(Spec(
        uid=UID, title=TITLE,
        description="One Supabase instance in depth, with links to the exporter's "
                    "diagnostics API.",
        time_from="now-24h", refresh="1m",
        variables=[datasource_variable(), host_variable(), instance_variable(multi=False),
                   exporter_url_variable(), console_url_variable()],
        links=[
            url_link("Console", "${console_url}/instances/${instance_id}",
                     "This instance in the operator console: run diagnostics, repair, safe "
                     "restart, settings, backups (sign in with a token).", icon="dashboard"),
            url_link("Run diagnostics", f"{_API}/run-diagnostics",
                     "Run a diagnostic of this instance now (operator token; rate limited)."
                     + auth, icon="bolt"),
            url_link("Last diagnostic", f"{_API}/last-diagnostic",
                     "The cached diagnostic with every check, issue, hint and root cause."
                     + auth, icon="info"),
            url_link("Health report", f"{_API}/health-report?days=7",
                     "Uptime, incidents and recurring issues of the last 7 days." + auth,
                     icon="doc"),
            url_link("Diagnostic history", f"{_API}/diagnostic-history?limit=10",
                     "The last 10 diagnostics." + auth, icon="doc"),
        ],
        rows=[
            ("Instance", [_summary()]),
            ("Issues", [[Cell(active_issues_table(), 24, 6)],
                        [Cell(recent_events_table(), 24, 5)]]),
            ("Components", _components()),
            ("Checks", [_checks()]),
            ("Gateway and auth", [_gateway_and_auth()]),
            ("Database and disk", [_database_and_disk()]),
            ("Activity", [_activity()]),
        ]))
