"""Trends: uptime, recurring issues, time to recovery and diagnostic activity over time."""

from __future__ import annotations

from typing import Any

from grafana.dashboards_src.common import (
    Cell,
    Spec,
    assemble,
    bargauge_panel,
    cell,
    console_url_variable,
    datasource_variable,
    healthy,
    host_counter_rate,
    host_variable,
    instance_link,
    instance_variable,
    merge_and_organize,
    named,
    or_zero,
    per_instance,
    query,
    sel,
    table_panel,
    table_queries,
    text_panel,
    timeseries_panel,
)

UID = "ultrabase-trends"
TITLE = "Ultrabase / Trends"

_UPTIME_STEPS = ((None, "red"), (0.95, "orange"), (0.99, "green"))
_HEALTHY = sel("ultrabase_instance_healthy")
# One series per active issue and instance (a doubly scraped exporter counts once).
_ISSUES = per_instance("max", sel("ultrabase_issue_active"), "code", "severity")

RECOVERY_NOTE = """\
**How recovery is measured.** Health comes from `ultrabase_instance_healthy`, the 0/1 \
result of each instance's latest cached diagnostic (sweeps every 5 minutes by default), so \
every time here is accurate to about one sweep interval.

* **Incidents**: healthy → unhealthy changes, counted with `resets()` (the 0/1 gauge drops \
once per incident).
* **Recoveries**: unhealthy → healthy changes, `changes()` minus `resets()`.
* **Unhealthy time**: the share of samples in which the instance was unhealthy times the \
time range (an instance that appeared mid-range is counted as if present throughout).
* **Mean time to recovery**: unhealthy time ÷ incidents (at least 1), so an instance \
unhealthy for the whole range shows the whole range.

Gaps (exporter down, instance not yet discovered) count neither way.
"""


def _uptime() -> list[list[Cell]]:
    rolling = per_instance("max", f"avg_over_time({_HEALTHY}[1d])")
    return [
        [Cell(timeseries_panel(
            "Uptime per instance (rolling 24h)", "Share of the previous 24 hours each "
            "instance was healthy (avg_over_time of ultrabase_instance_healthy).",
            [query(rolling, "{{instance_id}}")], unit="percentunit", steps=_UPTIME_STEPS,
            min_val=0, max_val=1), 16, 9),
         Cell(bargauge_panel(
             "Uptime in the time range", "Share of the dashboard's time range each "
             "instance was healthy, worst first.",
             [query(f"sort({per_instance('max', f'avg_over_time({_HEALTHY}[$__range])')})",
                    "{{instance_id}}", instant=True)],
             unit="percentunit", steps=_UPTIME_STEPS, min_val=0, max_val=1,
             decimals=2), 8, 9)],
        [Cell(timeseries_panel(
            "Unhealthy instances", "How many instances were unhealthy at each moment.",
            [query(or_zero(f"count({healthy()} == 0)"), "unhealthy")],
            steps=((None, "green"), (1, "red")), decimals=0), 12, 8),
         Cell(timeseries_panel(
             "Fleet uptime (rolling 24h)", "Mean over the selected instances of their "
             "rolling 24-hour uptime.",
             [query(f"avg({rolling})", "fleet")], unit="percentunit", steps=_UPTIME_STEPS,
             min_val=0, max_val=1), 12, 8)],
    ]


def _issues() -> list[list[Cell]]:
    # Issue series exist only while active: count 1-minute steps with the issue.
    hours = "sum_over_time(({expr})[$__range:1m]) / 60"
    unhealthy_hours = f"(1 - avg_over_time({_HEALTHY}[$__range])) * $__range_s / 3600"
    return [
        [Cell(timeseries_panel(
            "Active issues by code", "Instances with each issue code active "
            "(count by code of ultrabase_issue_active).",
            [query(or_zero(f"count by (code) ({_ISSUES})", code="none"), "{{code}}")],
            bars=True, stacked=True, decimals=0), 12, 9),
         Cell(timeseries_panel(
             "Active issues by severity", "Active issues by severity (critical, warning, "
             "info) over all selected instances.",
             [query(or_zero(f"count by (severity) ({_ISSUES})", severity="none"),
                    "{{severity}}")],
             bars=True, stacked=True, decimals=0), 12, 9)],
        [Cell(bargauge_panel(
            "Most common issue codes", "Instance-hours each issue code was active in the "
            "time range (1-minute steps), top 10.",
            [query(or_zero(f"topk(10, sum by (code) ({hours.format(expr=_ISSUES)}))",
                           code="none"), "{{code}}", instant=True)],
            unit="h", steps=((None, "orange"),), decimals=1), 12, 9),
         Cell(bargauge_panel(
             "Most unhealthy instances", "Hours each instance was unhealthy (an issue of "
             "severity warning or above active) in the time range: share of unhealthy "
             "samples times the range, top 10.",
             [query(or_zero(f"topk(10, {per_instance('max', unhealthy_hours)})",
                            instance_id="none"), "{{instance_id}}", instant=True)],
             unit="h", steps=((None, "orange"),), decimals=1), 12, 9)],
    ]


def _recovery() -> list[list[Cell]]:
    incidents = per_instance("max", f"resets({_HEALTHY}[$__range])")
    recoveries = per_instance(
        "max", f"changes({_HEALTHY}[$__range]) - resets({_HEALTHY}[$__range])")
    unhealthy = per_instance("max", f"(1 - avg_over_time({_HEALTHY}[$__range])) * $__range_s")
    mttr = f"({unhealthy}) / clamp_min({incidents}, 1)"
    columns = {"Value #A": "Incidents", "Value #B": "Recoveries",
               "Value #C": "Unhealthy time", "Value #D": "Mean time to recovery"}
    return [
        [Cell(table_panel(
            "Recovery in the time range", "Per instance over the dashboard's time range: "
            "incidents, recoveries, unhealthy time and mean time to recovery (see the note).",
            table_queries(named(incidents), named(recoveries), named(unhealthy),
                          named(mttr)),
            transformations=merge_and_organize(
                rename={"instance_id": "Instance", "instance_name": "Name", **columns},
                hide=("Time", "owner", "host"),
                order=("instance_id", "instance_name", *columns)),
            overrides=[
                ("byName", "Incidents", [cell("color-text")]),
                ("byName", "Unhealthy time", [cell("color-text")]),
                ("byName", "Mean time to recovery", [cell("color-text")]),
                ("byName", "Instance", [instance_link()]),
            ],
            steps=((None, "green"), (1, "orange")), sort_by=("Unhealthy time", True)),
            16, 10),
         Cell(text_panel("About time to recovery", RECOVERY_NOTE), 8, 10)],
        [Cell(timeseries_panel(
            "Incidents per instance (rolling 24h)", "Healthy → unhealthy changes in the "
            "previous 24 hours.",
            [query(per_instance("max", f"resets({_HEALTHY}[1d])"), "{{instance_id}}")],
            decimals=0), 12, 8),
         Cell(timeseries_panel(
             "Unhealthy time per instance (rolling 24h)", "Time each instance was "
             "unhealthy in the previous 24 hours (share of samples times 24 h).",
             [query(per_instance("max", f"(1 - avg_over_time({_HEALTHY}[1d])) * 86400"),
                    "{{instance_id}}")],
             unit="s", steps=((None, "green"), (1, "orange"))), 12, 8)],
    ]


def _diagnostics() -> list[Cell]:
    return [
        Cell(timeseries_panel(
            "Diagnostic runs by result", "Diagnostic runs per hour by result "
            "(ultrabase_diagnostic_runs_total; no instance_id label: whole hosts).",
            [query(or_zero(host_counter_rate("ultrabase_diagnostic_runs_total", "result"),
                           result="none"), "{{result}}")]), 8, 8),
        Cell(timeseries_panel(
            "Diagnostic runs by trigger", "Diagnostic runs per hour by trigger: scheduled "
            "sweeps, on-demand API calls, verification after operations.",
            [query(or_zero(host_counter_rate("ultrabase_diagnostic_runs_total", "trigger"),
                           trigger="none"), "{{trigger}}")]), 8, 8),
        Cell(timeseries_panel(
            "Sweep duration", "Seconds the last scheduled sweep over all instances took "
            "(ultrabase_sweep_duration_seconds), per host.",
            [query(f"max by (host) ({sel('ultrabase_sweep_duration_seconds', per_instance=False)})",
                   "sweep {{host}}")], unit="s"), 8, 8),
    ]


def build() -> dict[str, Any]:
    """The trends dashboard as JSON data."""
    return assemble(Spec(
        uid=UID, title=TITLE,
        description="Uptime, recurring issues, time to recovery and diagnostic activity "
                    "of the fleet over time.",
        time_from="now-7d", refresh="5m",
        variables=[datasource_variable(), host_variable(), instance_variable(multi=True),
                   console_url_variable()],
        rows=[
            ("Uptime", _uptime()),
            ("Issues", _issues()),
            ("Time to recovery", _recovery()),
            ("Diagnostics", [_diagnostics()]),
        ]))
