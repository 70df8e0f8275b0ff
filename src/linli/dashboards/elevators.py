"""Drill-down: elevator cameras that stop e-bikes from riding up to the flats."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, piechart, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common

from linli.dashboards import names, theme
from linli.dashboards.edge import online_flags
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    UNREAD,
    Annotation,
    big_text,
    board,
    choice,
    latest_table,
    legend_right,
    place,
    props,
    stacked,
    sum_of,
    timeline,
    variable,
    with_panels,
)
from linli.dashboards.words import t, unit

UID = "linli-elevators"


def _camera() -> Select:
    return Select("camera").tag_matches("site", "site").tag_matches("device", "device")


def dashboard() -> db.Dashboard:
    """Cameras: interceptions by camera and by hour, what they saw, whether they are up, the latest events."""
    per_camera = place(
        bargauge.Panel()
        .title(t("elevators.by_lift"))
        .unit(unit("bike"))
        .reduce_options(sum_of())
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .text(big_text(24))
        .decimals(0)
        .thresholds(theme.steps((None, theme.WORKING))),
        (0, 0, 8, 9),
        Target(
            _camera().select("interception", "sum", alias="stopped").by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    by_hour = place(
        timeseries.Panel()
        .title(t("elevators.by_hour"))
        .unit(unit("bike"))
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .decimals(0)
        .stacking(stacked())
        .legend(legend_right()),
        (8, 0, 10, 9),
        Target(
            _camera()
            .select("interception", "sum", alias="stopped")
            .by_time("1h", fill="0")
            .by("device")
            .in_zone(theme.ZONE),
            alias="$tag_device",
        ),
    )
    objects = place(
        piechart.Panel().title(t("elevators.objects")).reduce_options(sum_of()),
        (18, 0, 6, 9),
        Target(_camera().select("confidence", "count", alias="detections").by("object"), alias="$tag_object"),
    )
    online = place(
        timeline(t("elevators.online"), online_flags()),
        (0, 9, 24, 6),
        Target(
            Select("health")
            .tag_is("kind", "camera")
            .tag_matches("site", "site")
            .tag_matches("device", "device")
            .select("online", "last", alias="online")
            .by_time("1m", fill="previous")
            .by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    events = place(
        latest_table(t("elevators.events")).override_by_name("held_s", props(("unit", "s"))),
        (0, 15, 24, 10),
        Target(
            _camera()
            .select("floor")
            .select("action")
            .select("confidence")
            .select("held_s")
            .field_is("interception", "=", 1)
            .by("site", "device", "object")
            .latest(200),
            fmt="table",
        ),
    )
    # The stored action is a code, and annotations have no value mappings: the mark's name
    # says what happened and the events table says how the lift answered.
    stopped = _camera().select("interception", alias=UNREAD).field_is("interception", "=", 1).by("site")
    dash = (
        board(t("elevators.title"), UID, ["elevators"])
        .with_variable(choice("site", t("var.building"), names.sites("camera")))
        .with_variable(variable("device", t("var.lift"), "camera", "device", within=(("site", "site"),)))
        .annotation(Annotation(t("elevators.stopped"), stopped, theme.WORKING, text=None))
    )
    return with_panels(dash, per_camera, by_hour, objects, online, events)
