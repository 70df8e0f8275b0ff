"""Drill-down: the garbage fleet on its routes, what it collected, and its alarms."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common

from linli.dashboards import theme
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    Annotation,
    board,
    colour,
    latest_table,
    place,
    props,
    sum_of,
    trend,
    variable,
    with_panels,
)
from linli.dashboards.screen import WASTE_COLOURS, trucks_map

UID = "linli-waste"


def _trucks() -> Select:
    return Select("truck").tag_matches("route", "route").tag_matches("device", "device")


def dashboard() -> db.Dashboard:
    """The fleet: where the trucks are, their loads and speeds, collections by type and stop, alarms."""
    by_type = place(
        bargauge.Panel()
        .title("Collected, by waste type")
        .unit("masskg")
        .decimals(0)
        .reduce_options(sum_of())
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL),
        (12, 0, 12, 9),
        Target(_trucks().select("collected_kg", "sum", alias="kg").by("waste_type"), alias="$tag_waste_type"),
    )
    for waste_type, fixed in WASTE_COLOURS.items():
        by_type.override_by_name(waste_type, colour(fixed))
    load = place(
        trend("Load on board", "masskg"),
        (0, 9, 12, 8),
        Target(_trucks().select("load_kg", "max", alias="kg").by_time().by("device"), alias="$tag_device"),
    )
    speed = place(
        trend("Speed", "velocitykmh"),
        (12, 9, 12, 8),
        Target(_trucks().select("speed", "mean", alias="km/h").by_time().by("device"), alias="$tag_device"),
    )
    lifts = place(
        latest_table("Latest collections").override_by_name(
            "collected_kg", props(("unit", "masskg"), ("decimals", 0))
        ),
        (0, 17, 12, 10),
        Target(
            _trucks()
            .select("stop")
            .select("bins")
            .select("collected_kg")
            .field_is("bins", ">", 0)
            .by("device", "route", "waste_type")
            .latest(50),
            fmt="table",
        ),
    )
    alarms = place(
        latest_table("Driver alarms").override_by_name(
            "active", props(("mappings", theme.flags(("raised", theme.WARNING), ("cleared", theme.OK))))
        ),
        (12, 17, 12, 10),
        Target(
            _trucks()
            .select("alarm")
            .select("active")
            .select("stop")
            .field_is("alarm", "!=", "")
            .by("device")
            .latest(100),
            fmt="table",
        ),
    )
    raised = _trucks().select("alarm", alias="text").field_is("active", "=", True)
    dash = (
        board("Waste fleet", UID, ["waste"])
        .with_variable(variable("route", "Route", "truck", "route"))
        .with_variable(variable("device", "Truck", "truck", "device", within=(("route", "route"),)))
        .annotation(Annotation("Driver alarm raised", raised.by("site"), theme.WARNING))
    )
    return with_panels(dash, trucks_map((0, 0, 12, 9)), by_type, load, speed, lifts, alarms)
