"""Drill-down: the garbage fleet on its routes, what it collected, and its alarms; tonnage by
day, ISO week and month, on-time performance, the keepers' notices and the incidents.

The periods come from the rollups `linli waste stats --write` keeps (`waste_rollup`,
`waste_performance`), since InfluxQL has no calendar month; the trips and incidents from the
waste service (`waste_trip`, `waste_incident`).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common

from linli.dashboards import theme
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    Annotation,
    board,
    colour,
    last_value,
    latest_table,
    legend_hidden,
    place,
    props,
    stacked,
    sum_of,
    trend,
    variable,
    with_panels,
)
from linli.dashboards.screen import WASTE_COLOURS, trips_now, trips_table, trucks_map

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
    incidents = (
        Select("waste_incident")
        .select("detail", alias="text")
        .field_is("change", "=", 1)
        .tag_matches("route", "route")
        .by("kind")
    )
    dash = (
        board("Waste fleet", UID, ["waste"])
        .with_variable(variable("route", "Route", "truck", "route"))
        .with_variable(variable("device", "Truck", "truck", "device", within=(("route", "route"),)))
        .annotation(Annotation("Driver alarm raised", raised.by("site"), theme.WARNING))
        .annotation(Annotation("Blocked gate or breakdown", incidents, theme.CRITICAL))
    )
    trips = place(trips_table("Trips"), (0, 27, 12, 8), trips_now())
    tonnage = [
        place(_bars(f"Tonnage by {name}", "masst", span), (x, 35, 8, 9), _tonnage(period))
        for x, (name, period, span) in zip(
            (0, 8, 16),
            (("day", "day", "35d"), ("ISO week", "week", "120d"), ("month", "month", "400d")),
            strict=True,
        )
    ]
    for panel in tonnage:
        for waste_type, fixed in WASTE_COLOURS.items():
            panel.override_by_name(waste_type, colour(fixed))
    on_time = place(
        _shares("On time (within 10 min), notices 13-18 min ahead, by route", good=0.9),
        (12, 27, 12, 8),
        _performance("on_time", "on time"),
        _performance("in_window", "notices in time"),
    )
    missed = place(
        _bars("Bin rooms revisited, skipped, missed, by day", "short", "35d"),
        (0, 44, 24, 8),
        *(
            Target(
                Select("waste_performance")
                .tag_is("period", "day")
                .tag_matches("route", "route")
                .select(outcome, "sum", alias=outcome)
                .by_time("1d", fill="none")
                .in_zone(theme.ZONE),
                alias=outcome,
            )
            for outcome in ("revisited", "skipped", "missed")
        ),
    )
    bookings = place(
        trend("Renovation bookings by state", "short"),
        (0, 52, 12, 8),
        *(
            Target(
                Select("waste_renovation").select(state, "last", alias=state).by_time(),
                alias=state.replace("_", " "),
            )
            for state in ("requested", "offered", "accepted", "en_route", "arrived", "at_risk")
        ),
    )
    steps = place(
        latest_table("Renovation bookings, step by step").override_by_name(
            "wait_min", props(("unit", "m"), ("decimals", 0))
        ),
        (12, 52, 12, 8),
        Target(
            Select("waste_booking")
            .select("booking")
            .select("m3")
            .select("wait_min")
            .select("kg")
            .by("state", "compound", "truck")
            .latest(50),
            fmt="table",
        ),
    )
    renovation_days = place(
        _bars("Renovation bookings by day: asked, collected, cancelled, expired", "short", "35d"),
        (0, 60, 12, 8),
        *(
            Target(
                Select("waste_booking_rollup")
                .tag_is("period", "day")
                .select(field, "sum", alias=field)
                .by_time("1d", fill="none")
                .in_zone(theme.ZONE),
                alias=field,
            )
            for field in ("requested", "collected", "cancelled", "expired")
        ),
    )
    renovation_service = place(
        _shares("Renovation: collected within the window, by compound", good=0.95),
        (12, 60, 12, 8),
        Target(
            Select("waste_booking_rollup")
            .tag_is("period", "day")
            .select("in_window", "mean", alias="in window")
            .by("compound"),
            alias="$tag_compound",
        ),
    )
    truck_runs = place(
        latest_table("Renovation trucks' runs: pickups, m³ and kg collected in the range"),
        (0, 68, 12, 6),
        Target(
            Select("waste_booking")
            .tag_is("state", "collected")
            .select("kg", "count", alias="pickups")
            .select("m3", "sum", alias="m3")
            .select("kg", "sum", alias="kg")
            .by("truck"),
            fmt="table",
        ),
    )
    return with_panels(
        dash,
        trucks_map((0, 0, 12, 9)),
        by_type,
        load,
        speed,
        lifts,
        alarms,
        trips,
        on_time,
        *tonnage,
        missed,
        bookings,
        steps,
        renovation_days,
        renovation_service,
        truck_runs,
    )


def _shares(title: str, *, good: float) -> bargauge.Panel:
    """Shares (0-1) over the last 35 days as bars: red under 0.8, green from `good`."""
    return (
        bargauge.Panel()
        .title(title)
        .unit("percentunit")
        .min(0)
        .max(1)
        .reduce_options(last_value())
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .thresholds(theme.steps((None, theme.CRITICAL), (0.8, theme.WARNING), (good, theme.OK)))
        .time_from("35d")
    )


def _bars(title: str, unit: str, span: str) -> timeseries.Panel:
    """Stacked bars over a span of its own: a period's bar stands at its first day."""
    return (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(stacked())
        .time_from(span)
        .legend(legend_hidden())
    )


def _tonnage(period: str) -> Target:
    return Target(
        Select("waste_rollup")
        .tag_is("period", period)
        .tag_matches("route", "route")
        .select("kg", "sum", alias="t", scale=0.001)
        .by_time("1d", fill="none")
        .in_zone(theme.ZONE)
        .by("waste_type"),
        alias="$tag_waste_type",
    )


def _performance(field: str, alias: str) -> Target:
    """A route's share over the span: the mean of its days' shares."""
    return Target(
        Select("waste_performance")
        .tag_is("period", "day")
        .tag_matches("route", "route")
        .select(field, "mean", alias=alias)
        .by("route"),
        alias=f"$tag_route {alias}",
    )
