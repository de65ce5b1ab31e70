"""Fleet overview: every instance's health, components, issues, uptime, keys and disk."""

from __future__ import annotations

from typing import Any

from grafana.dashboards_src.common import (
    DISK_CRITICAL_FREE,
    DISK_LOW_FREE,
    HEALTH,
    JWT_WARNING_DAYS,
    SWEEP_SECONDS,
    UP_DOWN,
    Cell,
    Spec,
    active_issues_table,
    assemble,
    cell,
    console_url_variable,
    datasource_variable,
    healthy,
    host_variable,
    info,
    instance_link,
    instance_variable,
    merge_and_organize,
    named,
    or_zero,
    per_instance,
    prop,
    query,
    recent_events_table,
    sel,
    stat_panel,
    state_timeline_panel,
    table_panel,
    table_queries,
    thresholds,
    transform,
    value_map,
)

UID = "ultrabase-fleet"
TITLE = "Ultrabase / Fleet overview"

_IDENTITY = {"instance_id": "Instance", "instance_name": "Name", "owner": "Owner",
             "host": "Host"}
_IDENTITY_ORDER = ("instance_id", "instance_name", "owner", "host")
_UPTIME_STEPS = ((None, "red"), (0.95, "orange"), (0.99, "green"))


def _stats() -> list[Cell]:
    diagnostic_age = per_instance("max", sel("ultrabase_diagnostic_timestamp_seconds"))
    critical = sel("ultrabase_issue_active", 'severity="critical"')
    return [
        Cell(stat_panel(
            "Instances", "Instances the last discovery found (ultrabase_instance_info).",
            [query(or_zero(f"count({per_instance('max', sel('ultrabase_instance_info'))})"))],
            steps=((None, "blue"),)), 4, 4),
        Cell(stat_panel(
            "Healthy", "Instances whose latest diagnostic has no issue of severity warning "
            "or above.",
            [query(or_zero(f"count({healthy()} == 1)"))]), 4, 4),
        Cell(stat_panel(
            "Unhealthy", "Instances whose latest diagnostic has an issue of severity "
            "warning or above.",
            [query(or_zero(f"count({healthy()} == 0)"))],
            steps=((None, "green"), (1, "red"))), 4, 4),
        Cell(stat_panel(
            "Critical issues", "Active issues of severity critical, over all instances.",
            [query(or_zero(f"count({critical})"))],
            steps=((None, "green"), (1, "red"))), 4, 4),
        Cell(stat_panel(
            "Oldest diagnostic", "Age of the oldest cached diagnostic. Sweeps run every "
            f"{SWEEP_SECONDS // 60} min by default; an old one means sweeps are failing or "
            "slow.",
            [query(f"max(time() - {diagnostic_age})")], unit="s",
            steps=((None, "green"), (3 * SWEEP_SECONDS, "orange"), (3600, "red"))), 4, 4),
        Cell(stat_panel(
            "Docker reachable", "Whether the exporter's last sweep could reach the Docker "
            "engine (ultrabase_up), worst host.",
            [query(f"min({sel('ultrabase_up', per_instance=False)})")],
            mappings=value_map(("1", "Yes", "green"), ("0", "No", "red")),
            steps=((None, "red"), (1, "green"))), 4, 4),
    ]


def _health_table() -> Cell:
    age = per_instance("max", sel("ultrabase_diagnostic_timestamp_seconds"))
    issues = (f"{per_instance('count', sel('ultrabase_issue_active'))} or "
              f"({per_instance('max', sel('ultrabase_instance_info'))} * 0)")
    return Cell(table_panel(
        "Instance health",
        "Each instance's overall health from its latest cached diagnostic, with its name "
        "and owner (ultrabase_instance_info). \"Not diagnosed yet\": discovered, no "
        "diagnostic cached. Click an instance for its detail dashboard.",
        table_queries(f"{named(healthy())} or ({info()} * -1)",
                      named(f"time() - {age}"),
                      named(issues)),
        transformations=merge_and_organize(
            rename={**_IDENTITY, "Value #A": "Health", "Value #B": "Diagnostic age",
                    "Value #C": "Active issues"},
            order=(*_IDENTITY_ORDER, "Value #A", "Value #B", "Value #C")),
        overrides=[
            ("byName", "Health", [prop("mappings", HEALTH), cell("color-background")]),
            ("byName", "Diagnostic age", [
                prop("unit", "s"), cell("color-text"),
                prop("thresholds", thresholds(((None, "green"), (3 * SWEEP_SECONDS, "orange"),
                                               (3600, "red"))).build())]),
            ("byName", "Active issues", [
                cell("color-text"),
                prop("thresholds", thresholds(((None, "green"), (1, "orange"))).build())]),
            ("byName", "Instance", [instance_link()]),
        ],
        sort_by=("Health", False)), 12, 10)


def _uptime_table() -> Cell:
    def uptime(window: str) -> str:
        return named(per_instance(
            "max", f"avg_over_time({sel('ultrabase_instance_healthy')}[{window}])"))

    columns = {"Value #A": "24 hours", "Value #B": "7 days", "Value #C": "30 days"}
    return Cell(table_panel(
        "Uptime",
        "Share of samples in which the instance was healthy (avg_over_time of "
        "ultrabase_instance_healthy) over the last 24 hours, 7 days and 30 days; only the "
        "time Prometheus has samples for counts.",
        table_queries(uptime("1d"), uptime("7d"), uptime("30d")),
        transformations=merge_and_organize(
            rename={**_IDENTITY, **columns},
            order=(*_IDENTITY_ORDER, *columns)),
        overrides=[*(("byName", name, [cell("color-text")]) for name in columns.values()),
                   ("byName", "Instance", [instance_link()])],
        unit="percentunit", steps=_UPTIME_STEPS, sort_by=("24 hours", False)), 12, 10)


def _component_grid() -> Cell:
    return Cell(table_panel(
        "Component status",
        "Instances (rows) by component (columns): 1/UP when the component answered its "
        "health probe or Docker reports it healthy (ultrabase_component_up).",
        table_queries(per_instance("max", sel("ultrabase_component_up"), "component")),
        transformations=[transform("groupingToMatrix", {
            "columnField": "component", "rowField": "instance_id", "valueField": "Value"})],
        overrides=[("byType", "number", [cell("color-background")])],
        mappings=UP_DOWN, steps=((None, "red"), (1, "green"))), 24, 10)


def _health_timeline() -> Cell:
    return Cell(state_timeline_panel(
        "Health timeline",
        "Each instance's overall health over time (ultrabase_instance_healthy).",
        [query(named(healthy()), "{{instance_id}} {{instance_name}}")],
        mappings=HEALTH), 24, 12)


def _jwt_table() -> Cell:
    days = per_instance(
        "min", f"({sel('ultrabase_jwt_expiry_timestamp_seconds')} - time()) / 86400", "role")
    return Cell(table_panel(
        "JWT key days left",
        "Days until each instance's anon and service_role keys expire "
        f"(ultrabase_jwt_expiry_timestamp_seconds). Orange below {JWT_WARNING_DAYS} days "
        "(JWT_KEY_EXPIRING), red once expired.",
        table_queries(named(days)),
        transformations=merge_and_organize(
            rename={**_IDENTITY, "role": "Key", "Value": "Days left"},
            hide=("Time", "owner", "host"),
            order=("instance_id", "instance_name", "role", "Value")),
        overrides=[("byName", "Days left", [cell("color-background")]),
                   ("byName", "Instance", [instance_link()])],
        steps=((None, "red"), (0, "orange"), (JWT_WARNING_DAYS, "green")),
        sort_by=("Days left", False)), 8, 10)


def _filesystem_table() -> Cell:
    free = per_instance("max", f"{sel('ultrabase_filesystem_avail_bytes')} / "
                               f"{sel('ultrabase_filesystem_size_bytes')}")
    avail = per_instance("max", sel("ultrabase_filesystem_avail_bytes"))
    return Cell(table_panel(
        "Disk free",
        "Free share and free bytes of the filesystem holding each instance's files "
        f"(ultrabase_filesystem_avail_bytes / _size_bytes). Orange below "
        f"{DISK_LOW_FREE:.0%}, red below {DISK_CRITICAL_FREE:.0%} (DISK_SPACE_LOW, _CRITICAL).",
        table_queries(named(free), named(avail)),
        transformations=merge_and_organize(
            rename={**_IDENTITY, "Value #A": "Free", "Value #B": "Available"},
            hide=("Time", "owner", "host"),
            order=("instance_id", "instance_name", "Value #A", "Value #B")),
        overrides=[
            ("byName", "Free", [prop("unit", "percentunit"), prop("min", 0), prop("max", 1),
                                cell("gauge", mode="basic")]),
            ("byName", "Available", [prop("unit", "bytes")]),
            ("byName", "Instance", [instance_link()]),
        ],
        steps=((None, "red"), (DISK_CRITICAL_FREE, "orange"), (DISK_LOW_FREE, "green")),
        sort_by=("Free", False)), 8, 10)


def _volume_grid() -> Cell:
    return Cell(table_panel(
        "Volume sizes",
        "Size of each instance's volume directories (ultrabase_volume_size_bytes): "
        "instances (rows) by volume (columns).",
        table_queries(per_instance("max", sel("ultrabase_volume_size_bytes"), "volume")),
        transformations=[transform("groupingToMatrix", {
            "columnField": "volume", "rowField": "instance_id", "valueField": "Value"})],
        unit="bytes"), 8, 10)


def build() -> dict[str, Any]:
    """The fleet overview dashboard as JSON data."""
    return assemble(Spec(
        uid=UID, title=TITLE,
        description="Health of every Supabase instance Ultrabase Doctor diagnoses.",
        time_from="now-6h", refresh="1m",
        variables=[datasource_variable(), host_variable(), instance_variable(multi=True),
                   console_url_variable()],
        rows=[
            ("Fleet", [_stats()]),
            ("Instances", [[_health_table(), _uptime_table()], [_component_grid()],
                           [_health_timeline()]]),
            ("Issues", [[Cell(active_issues_table(), 24, 8)],
                        [Cell(recent_events_table(), 24, 5)]]),
            ("Keys and disk", [[_jwt_table(), _filesystem_table(), _volume_grid()]]),
        ]))
