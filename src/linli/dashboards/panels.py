"""Panel helpers shared by every dashboard: placement, queries, and readable defaults."""

from __future__ import annotations

import re
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from linli.catalog.alerttext import LABEL_FIELDS
from linli.dashboards import names
from linli.dashboards.influxql import DATASOURCE, InfluxQuery, Select, Target, show_tag_values
from linli.dashboards.theme import ZONE
from linli.dashboards.words import current, t


class PanelBuilder(Protocol):
    def override_by_name(self, name: str, properties: list[model.DynamicConfigValue]) -> Self: ...
    def grid_pos(self, grid_pos: model.GridPos) -> Self: ...
    def with_target(self, target: cogbuilder.Builder[cogvariants.Dataquery]) -> Self: ...
    def datasource(self, datasource: model.DataSourceRef) -> Self: ...
    def with_transformation(self, transformation: model.DataTransformerConfig) -> Self: ...


P = TypeVar("P", bound=PanelBuilder)


def place(panel: P, at: tuple[int, int, int, int], *targets: Target) -> P:
    """Put a panel at (x, y, width, height) of the 24-column grid, with its queries lettered A, B, C...

    Ids never reach a person: a table shows its columns under the catalog's words for them and
    a column of ids (sites, routes, trucks, bin rooms) by names; a series named after a tag of
    ids (`$tag_site`) gets the names written in by a rename."""
    x, y, w, h = at
    panel.grid_pos(model.GridPos(h=h, w=w, x=x, y=y)).datasource(DATASOURCE)
    renamed: dict[str, str] = {}
    for i, target in enumerate(targets):
        panel.with_target(target.ref_id(chr(ord("A") + i)))
        measurements = frozenset(r.measurement for r in target.select.refs())
        for tag in re.findall(r"\$tag_(\w+)", target.alias_text or ""):
            if tag != "waste_type":  # shown by `screen.waste_types`, each in its bin colour
                renamed |= names.tag_names(tag, measurements)
    for rename in names.renames(renamed):
        panel.with_transformation(rename)
    if isinstance(panel, table.Panel) or any(target.fmt == "table" for target in targets):
        for column, known in table_columns(*targets).items():
            shown: list[tuple[str, object]] = [("mappings", names.mapping(known))] if known else []
            if isinstance(panel, table.Panel):
                shown.append(("displayName", t(f"col.{column.replace(' ', '_')}")))
            if shown:
                panel.override_by_name(column, props(*shown))
    return panel


def table_columns(*targets: Target) -> dict[str, dict[str, str]]:
    """The columns of the targets' rows as a table shows them (time, the group's tags, the
    fields), each with the names of its values when they are ids."""
    columns: dict[str, dict[str, str]] = {"Time": {}}
    for target in targets:
        measurements = frozenset(r.measurement for r in target.select.refs())
        for name in [*target.select.group_tags, *target.select.column_names()]:
            columns.setdefault(name, names.tag_names(name, measurements))
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


def choice(name: str, label: str, options: dict[str, str]) -> db.CustomVariable:
    """A multi-value variable over ids, each listed by its name (InfluxQL's tag values cannot
    carry one): people pick 虹许小区一区, the queries filter by `hongxu-1`. With All."""
    listed = [model.VariableOption(selected=False, text=name, value=i) for i, name in options.items()]
    everything = model.VariableOption(selected=True, text=t("var.all"), value="$__all")
    return (
        db.CustomVariable(name)
        .label(label)
        .values(names.choices(options))
        .options([everything, *listed])
        .multi(True)
        .include_all(True)
        .current(everything)
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
        .select(LABEL_FIELDS[current()], alias="text")
        .tag_like("kind", kinds)
        .tag_matches("site", "site")
        .field_is("state", "=", "firing")
        .by("site")
    )
    return Annotation(t("anno.alert_fired"), fired, "red")


# A column Grafana's InfluxQL annotations skip. Any other column that is neither text, tags nor
# time becomes the mark's title ("legacy case" in Grafana's influx_series.ts): a mark that carries
# only a number (a change's 1) names that column so, and shows the annotation's name alone.
UNREAD = "sequence_number"


class Annotation(cogbuilder.Builder[model.AnnotationQuery]):
    """Events from InfluxQL drawn on every time axis: the rows' `text` column is the label.

    No column is read as tags: the rows' tags are ids (a site's), which a person never sees."""

    def __init__(self, name: str, select: Select, colour: str, text: str | None = "text") -> None:
        self.name = name
        self.select = select
        self.colour = colour
        self.text = text

    @classmethod
    def changes(
        cls, raised: str, cleared: str, source: Select, field: str, colour: str
    ) -> tuple[Annotation, Annotation]:
        """Two kinds of mark where a 0/1 field changed, per device: `raised` (0 to 1) and `cleared`.

        Their names say what changed; the rows carry only the change, a number, so no column
        is read as text."""
        steps = source.select(field, "difference", alias="change").by("site", "device")
        marks = Select.over(steps).select("change", alias=UNREAD).by("site")
        return (
            cls(raised, marks.field_is("change", ">", 0), colour, text=None),
            cls(cleared, marks.field_is("change", "<", 0), colour, text=None),
        )

    def build(self) -> model.AnnotationQuery:
        # Grafana's InfluxQL annotations read their columns from these keys.
        extra: dict[str, object] = {"fromAnnotations": True}
        if self.text is not None:
            extra["textColumn"] = self.text
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
