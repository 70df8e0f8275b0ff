"""Panel helpers shared by every dashboard: placement, queries, and readable defaults."""

from __future__ import annotations

from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from linli.dashboards.influxql import DATASOURCE, InfluxQuery, Select, Target, show_tag_values
from linli.dashboards.theme import ZONE
from linli.dashboards.words import t


class PanelBuilder(Protocol):
    def override_by_name(self, name: str, properties: list[model.DynamicConfigValue]) -> Self: ...
    def grid_pos(self, grid_pos: model.GridPos) -> Self: ...
    def with_target(self, target: cogbuilder.Builder[cogvariants.Dataquery]) -> Self: ...
    def datasource(self, datasource: model.DataSourceRef) -> Self: ...


P = TypeVar("P", bound=PanelBuilder)


def place(panel: P, at: tuple[int, int, int, int], *targets: Target) -> P:
    """Put a panel at (x, y, width, height) of the 24-column grid, with its queries lettered A, B, C...

    A table shows its columns (the queries' tags and fields) under the catalog's words for them."""
    x, y, w, h = at
    panel.grid_pos(model.GridPos(h=h, w=w, x=x, y=y)).datasource(DATASOURCE)
    for i, target in enumerate(targets):
        panel.with_target(target.ref_id(chr(ord("A") + i)))
    if isinstance(panel, table.Panel):
        for column in table_columns(*targets):
            panel.override_by_name(column, props(("displayName", t(f"col.{column.replace(' ', '_')}"))))
    return panel


def table_columns(*targets: Target) -> list[str]:
    """The columns of the targets' rows as a table shows them: time, the group's tags, the fields."""
    columns = ["Time"]
    for target in targets:
        for name in [*target.select.group_tags, *target.select.column_names()]:
            if name not in columns:
                columns.append(name)
    return columns


def last_value() -> cb.ReduceDataOptions:
    """Show each series' latest value."""
    return cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def big_text(value_size: float = 64) -> cb.VizTextDisplayOptions:
    """Numbers that read from across the room on the wall screen."""
    return cb.VizTextDisplayOptions().title_size(22).value_size(value_size)


def legend_hidden() -> cb.VizLegendOptions:
    return cb.VizLegendOptions().show_legend(False).display_mode(common.LegendDisplayMode.HIDDEN)


def legend_right() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.RIGHT)
        .calcs(["lastNotNull"])
    )


def transform(id_val: str, options: dict[str, object]) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val=id_val, options=options)


def props(*pairs: tuple[str, object]) -> list[model.DynamicConfigValue]:
    """Field-config overrides: (property id, value)."""
    return [model.DynamicConfigValue(id_val=k, value=v) for k, v in pairs]


def variable(
    name: str, label: str, measurement: str, key: str, *, within: tuple[tuple[str, str], ...] = ()
) -> db.QueryVariable:
    """A multi-value variable over a tag's values, narrowed by earlier variables, with All."""
    query, _ = show_tag_values(measurement, key, within)
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


def timeline(title: str, mappings: list[model.ValueMapping]) -> statetimeline.Panel:
    """States over time, one lane per series, coloured by `mappings`."""
    return (
        statetimeline.Panel()
        .title(title)
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .mappings(mappings)
        .legend(legend_hidden())
    )


def with_panels(dash: db.Dashboard, *panels: cogbuilder.Builder[model.Panel]) -> db.Dashboard:
    for panel in panels:
        dash.with_panel(panel)
    return dash


def alerts_fired(kinds: str) -> Annotation:
    """The edge's alert events (measurement `alert`) for device kinds matching `kinds`, as marks."""
    fired = (
        Select("alert")
        .select("title", alias="text")
        .tag_like("kind", kinds)
        .tag_matches("site", "site")
        .field_is("state", "=", "firing")
        .by("site")
    )
    return Annotation(t("anno.alert_fired"), fired, "red")


class Annotation(cogbuilder.Builder[model.AnnotationQuery]):
    """Events from InfluxQL drawn on every time axis: the rows' `text` column is the label."""

    def __init__(self, name: str, select: Select, colour: str) -> None:
        self.name = name
        self.select = select
        self.colour = colour

    @classmethod
    def changes(cls, name: str, source: Select, field: str, colour: str) -> Annotation:
        """A mark wherever a 0/1 field changed, per device: its text is 1 (raised) or -1 (cleared)."""
        steps = source.select(field, "difference", alias="text").by("site", "device")
        return cls(name, Select.over(steps).select("text").field_is("text", "!=", 0).by("site"), colour)

    def build(self) -> model.AnnotationQuery:
        # Grafana's InfluxQL annotations read their columns from these keys.
        extra: dict[str, object] = {"fromAnnotations": True, "textColumn": "text", "tagsColumn": "site"}
        target = InfluxQuery("Anno", self.select, "table", extra=extra)
        return model.AnnotationQuery(
            name=self.name,
            datasource=DATASOURCE,
            enable=True,
            icon_color=self.colour,
            target=target,  # type: ignore[arg-type]  # see schema.RELAXED
        )


def trend(title: str, unit: str) -> timeseries.Panel:
    """A time series with its limits drawn as dashed lines, legend on the right."""
    return (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .line_width(2)
        .fill_opacity(10)
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED))
        .legend(legend_right())
    )


def latest_table(title: str) -> table.Panel:
    """A table of each device's latest values, one row per device."""
    return table.Panel().title(title).cell_height(common.TableCellHeight.SM).filterable(True)


def board(title: str, uid: str, tags: list[str]) -> db.Dashboard:
    """A drill-down dashboard: the district's time zone, the last 6 hours, refreshing."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .tags(["linli", *tags])
        .timezone(ZONE)
        .time("now-6h", "now")
        .refresh("30s")
        .readonly()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            db.DashboardLink(t("link.district"))
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["linli"])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
    )


def sum_of() -> cb.ReduceDataOptions:
    """Show each series' total over the time range."""
    return cb.ReduceDataOptions().calcs(["sum"]).values(False)


def stacked() -> cb.StackingConfig:
    return cb.StackingConfig().mode(common.StackingMode.NORMAL)


def named(key: str, fixed: str) -> list[model.DynamicConfigValue]:
    """An override showing a series under the catalog's name for `key`, in one fixed colour."""
    return props(("displayName", t(key)), ("color", {"mode": "fixed", "fixedColor": fixed}))


def colour(name: str) -> list[model.DynamicConfigValue]:
    """An override giving a series one fixed colour."""
    return props(("color", {"mode": "fixed", "fixedColor": name}))
