"""What the dashboards share: data source, variables, PromQL helpers, panel factories, layout.

Every selector carries `host=~"$host"` (the label Prometheus adds per scrape target in a
multi-host setup; a series without it matches `.*`) and, where the series is about an
instance, `instance_id=~"$instance_id"`. The exporter's own label is `instance_id`; the
label `instance` belongs to Prometheus (the scrape target) and is never used here.

Aggregations keep `host` next to `instance_id`: the compose discovery names an instance
after its compose project, so two hosts can both have an instance called `supabase`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, statetimeline, table
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import text as textpanel
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm
from grafana_foundation_sdk.models import text as textmodel

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Where a browser reaches the exporter's HTTP API; a textbox variable, so it can be changed.
EXPORTER_URL = "http://127.0.0.1:9646"
# The action API, whose / is the operator console (instance pages at /instances/<id>).
CONSOLE_URL = "http://127.0.0.1:9647"
TAG = "ultrabase"
TAGS = [TAG, "ultrabase-doctor", "supabase"]

HOST = 'host=~"$host"'
INSTANCE = 'instance_id=~"$instance_id"'
# Labels an instance is identified by (see the module docstring).
KEY = "host, instance_id"

# Default thresholds of the exporter (config.example.yaml), mirrored in the colours.
DISK_LOW_FREE = 0.15
DISK_CRITICAL_FREE = 0.05
DB_CONNECTIONS_RATIO = 0.8
JWT_WARNING_DAYS = 30
ENDPOINT_SLOW_SECONDS = 2
LOG_ERROR_SPIKE = 20
SWEEP_SECONDS = 300
# The synthetic user test runs at most hourly in scheduled sweeps and its series exists only
# while the latest diagnostic ran it, so its last value is looked up over this window.
SYNTHETIC_WINDOW = "2h"


# -- PromQL -------------------------------------------------------------------------------

def sel(metric: str, *matchers: str, per_instance: bool = True) -> str:
    """`metric{host=~"$host", instance_id=~"$instance_id", <matchers>}`."""
    parts = [HOST, *([INSTANCE] if per_instance else []), *matchers]
    return f"{metric}{{{', '.join(parts)}}}"


def per_instance(agg: str, expr: str, *extra: str) -> str:
    """`agg by (host, instance_id, <extra>) (expr)`: one series per instance (and extra)."""
    labels = ", ".join([KEY, *extra])
    return f"{agg} by ({labels}) ({expr})"


def info() -> str:
    """One ultrabase_instance_info series per instance, with its name and owner."""
    return per_instance("max", sel("ultrabase_instance_info"), "instance_name", "owner")


def named(expr: str) -> str:
    """expr (one series per host, instance_id) with the instance's name and owner added."""
    return f"({expr}) * on ({KEY}) group_left (instance_name, owner) {info()}"


def healthy() -> str:
    """ultrabase_instance_healthy, one series per instance."""
    return per_instance("max", sel("ultrabase_instance_healthy"))


def or_zero(expr: str, **labels: str) -> str:
    """expr, or a single 0 (with labels, for the legend) when expr is empty.

    For counts and counters, where no series means zero; `on ()` makes the 0 appear only
    when expr has no series at all.
    """
    fallback = "vector(0)"
    for name, value in labels.items():
        fallback = f'label_replace({fallback}, "{name}", "{value}", "", "")'
    return f"({expr}) or on () {fallback}"


def or_not_run(expr: str) -> str:
    """expr per instance, or -1 for an instance that has no such series (see NOT_RUN)."""
    return f"({expr}) or ({per_instance('max', sel('ultrabase_instance_info'))} * -1)"


COUNTER_LABELS: dict[str, tuple[str, ...]] = {
    "ultrabase_diagnostic_runs_total": ("trigger", "result"),
    "ultrabase_operations_total": ("operation", "result"),
}


def host_counter_rate(metric: str, *by: str) -> str:
    """Rate per hour of a store counter by the labels `by`, summed over hosts.

    The counters come from the SQLite store that both processes of one host share; should
    both be scraped, `max by (host, <all the counter's labels>)` keeps one copy per host
    before the sum.
    """
    every = ", ".join(COUNTER_LABELS[metric])
    inner = f"rate({sel(metric, per_instance=False)}[$__rate_interval])"
    return f"sum by ({', '.join(by)}) (max by (host, {every}) ({inner})) * 3600"


# -- targets --------------------------------------------------------------------------------

def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          as_table: bool = False) -> prometheus.Dataquery:
    """A Prometheus target on the dashboard's data source variable."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if as_table:
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


def table_queries(*exprs: str) -> list[prometheus.Dataquery]:
    """Instant table-format targets A, B, C, ... (their values become `Value #A`, ...)."""
    return [query(e, ref=chr(ord("A") + i), instant=True, as_table=True)
            for i, e in enumerate(exprs)]


# -- field config ---------------------------------------------------------------------------

Steps = Sequence[tuple[float | None, str]]

GREEN_ONLY: Steps = ((None, "green"),)


def thresholds(steps: Steps) -> dash.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return (dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in steps]))


def value_map(*entries: tuple[str, str, str]) -> list[dm.ValueMapping]:
    """One value mapping from (value, text, colour) entries."""
    return [dm.ValueMap(options={value: dm.ValueMappingResult(text=text, color=color, index=i)
                                 for i, (value, text, color) in enumerate(entries)})]


UP_DOWN = value_map(("1", "UP", "green"), ("0", "DOWN", "red"))
OK_FAILED = value_map(("1", "OK", "green"), ("0", "FAILED", "red"))
HEALTH = value_map(("1", "Healthy", "green"), ("0", "Unhealthy", "red"),
                   ("-1", "Not diagnosed yet", "text"))
NOT_RUN = value_map(("1", "OK", "green"), ("0", "FAILED", "red"),
                    ("-1", "Not run", "text"))


def prop(id_val: str, value: Any) -> dm.DynamicConfigValue:
    """One override property."""
    return dm.DynamicConfigValue(id_val=id_val, value=value)


def cell(kind: str, **extra: Any) -> dm.DynamicConfigValue:
    """Override property: how a table cell is drawn (color-background, gauge, auto, ...)."""
    return prop("custom.cellOptions", {"type": kind, **extra})


def transform(id_val: str, options: dict[str, Any]) -> dm.DataTransformerConfig:
    """One transformation."""
    return dm.DataTransformerConfig(id_val=id_val, options=options)


def merge_and_organize(rename: dict[str, str], hide: Sequence[str] = ("Time",),
                       order: Sequence[str] = ()) -> list[dm.DataTransformerConfig]:
    """Merge the instant table targets into one table, then rename, hide and order columns."""
    return [
        transform("merge", {}),
        transform("organize", {
            "excludeByName": {name: True for name in hide},
            "indexByName": {name: i for i, name in enumerate(order)},
            "renameByName": rename,
        }),
    ]


def instance_link(title: str = "Instance detail") -> dm.DynamicConfigValue:
    """Data links from an instance_id cell: the instance detail dashboard, and the
    instance's page in the operator console (where its actions are)."""
    url = ("/d/ultrabase-instance?var-instance_id=${__value.raw}"
           "&${datasource:queryparam}&${host:queryparam}&${__url_time_range}")
    return prop("links", [{"title": title, "url": url},
                          {"title": "Open in the console",
                           "url": "${console_url}/instances/${__value.raw}",
                           "targetBlank": True}])


# -- panels ---------------------------------------------------------------------------------

def _base(panel: Any, title: str, description: str,
          targets: Sequence[prometheus.Dataquery]) -> Any:
    return (panel.title(title).description(description).datasource(DATASOURCE)
            .targets(list(targets)))


def stat_panel(title: str, description: str, targets: Sequence[prometheus.Dataquery], *,
               unit: str = "none", steps: Steps = GREEN_ONLY,
               mappings: list[dm.ValueMapping] | None = None,
               decimals: int | None = None, no_value: str = "") -> stat.Panel:
    """A single big value, coloured by thresholds or mappings."""
    panel = (_base(stat.Panel(), title, description, targets)
             .unit(unit).thresholds(thresholds(steps))
             .color_mode(cm.BigValueColorMode.BACKGROUND)
             .graph_mode(cm.BigValueGraphMode.NONE)
             .text_mode(cm.BigValueTextMode.AUTO)
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if mappings:
        panel = panel.mappings(mappings)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if no_value:
        panel = panel.no_value(no_value)
    return panel  # type: ignore[no-any-return]


def table_panel(title: str, description: str, targets: Sequence[prometheus.Dataquery], *,
                transformations: Sequence[dm.DataTransformerConfig] = (),
                overrides: Sequence[tuple[str, str, list[dm.DynamicConfigValue]]] = (),
                unit: str = "none", steps: Steps = GREEN_ONLY,
                mappings: list[dm.ValueMapping] | None = None,
                sort_by: tuple[str, bool] | None = None, no_value: str = "") -> table.Panel:
    """A table; overrides are (matcher id, matcher option, properties)."""
    panel = (_base(table.Panel(), title, description, targets)
             .unit(unit).thresholds(thresholds(steps))
             .transformations(list(transformations)).filterable(True))
    for matcher, option, properties in overrides:
        panel = panel.with_override(dm.MatcherConfig(id_val=matcher, options=option),
                                    properties)
    if mappings:
        panel = panel.mappings(mappings)
    if sort_by is not None:
        panel = panel.sort_by([_sort(*sort_by)])
    if no_value:
        panel = panel.no_value(no_value)
    return panel  # type: ignore[no-any-return]


def _sort(name: str, desc: bool) -> Builder[cm.TableSortByFieldState]:
    return TableSortByFieldState().display_name(name).desc(desc)


def timeseries_panel(title: str, description: str, targets: Sequence[prometheus.Dataquery],
                     *, unit: str = "none", steps: Steps = GREEN_ONLY,
                     threshold_line: bool = False, bars: bool = False, stacked: bool = False,
                     min_val: float | None = None, max_val: float | None = None,
                     decimals: int | None = None) -> ts.Panel:
    """A graph; `threshold_line` draws the thresholds as dashed lines."""
    panel = (_base(ts.Panel(), title, description, targets)
             .unit(unit).thresholds(thresholds(steps))
             .legend(VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
             .fill_opacity(25 if stacked else 10).line_width(1)
             .span_nulls(False).show_points(cm.VisibilityMode.NEVER))
    if threshold_line:
        panel = panel.thresholds_style(
            GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
    if bars:
        panel = panel.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(60)
    if stacked:
        panel = panel.stacking(StackingConfig().mode(cm.StackingMode.NORMAL))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel  # type: ignore[no-any-return]


def state_timeline_panel(title: str, description: str,
                         targets: Sequence[prometheus.Dataquery], *,
                         mappings: list[dm.ValueMapping],
                         steps: Steps = ((None, "red"), (1, "green")),
                         per_page: int = 20) -> statetimeline.Panel:
    """One lane per series, coloured by mapping (UP/DOWN over time); per_page lanes a page."""
    panel = (_base(statetimeline.Panel(), title, description, targets)
             .per_page(per_page).mappings(mappings).thresholds(thresholds(steps))
             .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
             .show_value(cm.VisibilityMode.NEVER).merge_values(True)
             .row_height(0.8).fill_opacity(80).line_width(0)
             .legend(VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM).show_legend(True)))
    return panel  # type: ignore[no-any-return]


def bargauge_panel(title: str, description: str, targets: Sequence[prometheus.Dataquery], *,
                   unit: str = "none", steps: Steps = GREEN_ONLY,
                   min_val: float | None = None, max_val: float | None = None,
                   decimals: int | None = None) -> bargauge.Panel:
    """Horizontal bars, one per series (instant)."""
    panel = (_base(bargauge.Panel(), title, description, targets)
             .unit(unit).thresholds(thresholds(steps))
             .orientation(cm.VizOrientation.HORIZONTAL)
             .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
             .show_unfilled(True)
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel  # type: ignore[no-any-return]


def text_panel(title: str, markdown: str) -> textpanel.Panel:
    """A markdown note (no query)."""
    return textpanel.Panel().title(title).mode(textmodel.TextMode.MARKDOWN).content(markdown)


# -- variables and links --------------------------------------------------------------------

ALL = dm.VariableOption(selected=True, text="All", value="$__all")


def datasource_variable() -> dash.DatasourceVariable:
    """`datasource`: any Prometheus data source."""
    return dash.DatasourceVariable("datasource").label("Data source").type("prometheus")


def host_variable() -> dash.QueryVariable:
    """`host`: the label a multi-host Prometheus adds per target; All (`.*`) by default."""
    return (dash.QueryVariable("host").label("Host")
            .description("Docker host (the `host` label set per scrape target); All also "
                         "matches series without the label")
            .datasource(DATASOURCE).query("label_values(ultrabase_up, host)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*").current(ALL))


def instance_variable(*, multi: bool) -> dash.QueryVariable:
    """`instance_id`: the instances on the selected hosts; with All (`.*`) when multi."""
    variable = (dash.QueryVariable("instance_id").label("Instance")
                .description("Instance id (Ultrabase's 8-hex id or the compose project)")
                .datasource(DATASOURCE)
                .query(f"label_values(ultrabase_instance_info{{{HOST}}}, instance_id)")
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(dm.VariableSort.ALPHABETICAL_ASC))
    if multi:
        variable = variable.multi(True).include_all(True).all_value(".*").current(ALL)
    return variable


def exporter_url_variable() -> dash.TextBoxVariable:
    """`exporter_url`: the exporter's base URL as the browser reaches it."""
    return (dash.TextBoxVariable("exporter_url").label("Exporter URL")
            .description("Base URL of the Ultrabase Doctor exporter API, for the links")
            .default_value(EXPORTER_URL)
            .current(dm.VariableOption(selected=True, text=EXPORTER_URL, value=EXPORTER_URL)))


def console_url_variable() -> dash.TextBoxVariable:
    """`console_url`: the operator console's base URL (the action API) as the browser
    reaches it."""
    return (dash.TextBoxVariable("console_url").label("Console URL")
            .description("Base URL of the Ultrabase Doctor console (the action API), for the "
                         "links to an instance's page with its actions")
            .default_value(CONSOLE_URL)
            .current(dm.VariableOption(selected=True, text=CONSOLE_URL, value=CONSOLE_URL)))


def dashboards_link() -> dash.DashboardLink:
    """A drop-down of the other Ultrabase dashboards, keeping time range and variables."""
    return (dash.DashboardLink("Ultrabase dashboards").type(dm.DashboardLinkType.DASHBOARDS)
            .tags([TAG]).as_dropdown(True).include_vars(True).keep_time(True))


def url_link(title: str, url: str, tooltip: str, icon: str = "external link") -> dash.DashboardLink:
    """A link to an external URL, opened in a new tab."""
    return (dash.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(url)
            .tooltip(tooltip).icon(icon).target_blank(True))


def builtin_annotations() -> dash.AnnotationQuery:
    """Grafana's built-in annotations (as a new dashboard has them)."""
    return (dash.AnnotationQuery().name("Annotations & Alerts")
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard")
            .built_in(1))


# -- layout and assembly --------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """A panel with its size on the 24-column grid."""

    panel: Any
    w: int
    h: int


Line = Sequence[Cell]
Row = tuple[str, Sequence[Line]]


@dataclass(frozen=True)
class Spec:
    """Everything a dashboard is made of."""

    uid: str
    title: str
    description: str
    time_from: str
    refresh: str
    variables: Sequence[Any]
    rows: Sequence[Row]
    links: Sequence[dash.DashboardLink] = ()


def assemble(spec: Spec) -> dict[str, Any]:
    """Lay the rows out, build with the SDK and return the dashboard as plain JSON data."""
    board = (dash.Dashboard(spec.title).uid(spec.uid).description(spec.description)
             .tags(TAGS).editable().tooltip(dm.DashboardCursorSync.CROSSHAIR)
             .time(spec.time_from, "now").refresh(spec.refresh).timezone("browser")
             .annotation(builtin_annotations())
             .links([dashboards_link(), *spec.links])
             .variables(list(spec.variables)))
    y = 0
    for title, lines in spec.rows:
        board = board.with_row(dash.Row(title).grid_pos(dm.GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for line in lines:
            if sum(c.w for c in line) != 24:
                raise ValueError(f"{spec.uid}/{title}: a line must be 24 columns wide")
            x = 0
            for c in line:
                board = board.with_panel(c.panel.grid_pos(dm.GridPos(h=c.h, w=c.w, x=x, y=y)))
                x += c.w
            y += max(c.h for c in line)
    data: dict[str, Any] = json.loads(JSONEncoder().encode(board.build()))
    for number, panel in enumerate(data["panels"], start=1):
        panel["id"] = number
    return data


def render_json(data: dict[str, Any]) -> str:
    """The committed form of a dashboard: sorted keys, 2-space indent, final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- panels used by more than one dashboard ---------------------------------------------------

def recent_events_table() -> table.Panel:
    """Faults live checks show over (recent events): never active issues, shown for context."""
    expr = named(per_instance("max", sel("ultrabase_recent_event_timestamp_seconds"),
                              "code", "component")) + " * 1000"
    return table_panel(
        "Recent events",
        "Faults of the recent past that live checks show over "
        "(ultrabase_recent_event_timestamp_seconds): when each was last seen. They are "
        "never an active issue, a root cause or a repair; the excerpt and count are in the "
        "exporter's last-diagnostic API (recent_events).",
        table_queries(expr), unit="dateTimeAsIso",
        transformations=merge_and_organize(
            rename={"code": "Code", "component": "Component", "instance_id": "Instance",
                    "instance_name": "Name", "owner": "Owner", "host": "Host",
                    "Value": "Last seen"},
            hide=("Time",),
            order=("Value", "code", "component", "instance_id", "instance_name", "owner",
                   "host")),
        overrides=[("byName", "Instance", [instance_link()])],
        sort_by=("Last seen", True), no_value="No recent events")


def active_issues_table() -> table.Panel:
    """Every active issue with its instance's name; empty (\"No active issues\") when healthy."""
    expr = named(per_instance("max", sel("ultrabase_issue_active"),
                              "code", "severity", "component"))
    severity = value_map(("critical", "critical", "red"), ("warning", "warning", "orange"),
                         ("info", "info", "blue"))
    return table_panel(
        "Active issues",
        "Issues of the latest cached diagnostic (ultrabase_issue_active), by code, severity "
        "and component. The code's hint and evidence are in the exporter's last-diagnostic "
        "API.",
        table_queries(expr),
        transformations=merge_and_organize(
            rename={"severity": "Severity", "code": "Code", "component": "Component",
                    "instance_id": "Instance", "instance_name": "Name", "owner": "Owner",
                    "host": "Host"},
            hide=("Time", "Value"),
            order=("severity", "code", "component", "instance_id", "instance_name", "owner",
                   "host")),
        overrides=[("byName", "Severity", [prop("mappings", severity), cell("color-text")]),
                   ("byName", "Instance", [instance_link()])],
        no_value="No active issues")
