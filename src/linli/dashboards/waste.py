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

from linli.dashboards import names, theme
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    UNREAD,
    Annotation,
    board,
    choice,
    last_value,
    latest_table,
    legend_hidden,
    place,
    props,
    stacked,
    sum_of,
    trend,
    with_panels,
)
from linli.dashboards.screen import trips_now, trips_table, trucks_map, waste_types
from linli.dashboards.words import t, unit

UID = "linli-waste"


def _trucks() -> Select:
    return Select("truck").tag_matches("route", "route").tag_matches("device", "device")


def dashboard() -> db.Dashboard:
    """The fleet: where the trucks are, their loads and speeds, collections by type and stop, alarms."""
    by_type = waste_types(
        place(
            bargauge.Panel()
            .title(t("waste.by_type"))
            .unit("masskg")
            .decimals(0)
            .reduce_options(sum_of())
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .orientation(common.VizOrientation.HORIZONTAL),
            (12, 0, 12, 9),
            Target(
                _trucks().select("collected_kg", "sum", alias="kg").by("waste_type"), alias="$tag_waste_type"
            ),
        )
    )
    load = place(
        trend(t("waste.load"), "masskg"),
        (0, 9, 12, 8),
        Target(_trucks().select("load_kg", "max", alias="kg").by_time().by("device"), alias="$tag_device"),
    )
    speed = place(
        trend(t("waste.speed"), "velocitykmh"),
        (12, 9, 12, 8),
        Target(_trucks().select("speed", "mean", alias="km/h").by_time().by("device"), alias="$tag_device"),
    )
    lifts = place(
        latest_table(t("waste.latest")).override_by_name(
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
        latest_table(t("waste.alarms")).override_by_name(
            "active",
            props(
                ("mappings", theme.flags((t("waste.raised"), theme.WARNING), (t("waste.cleared"), theme.OK)))
            ),
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
    # The alarm is a code and an incident's detail the service's English: the marks' names say
    # what happened, and the tables beside them say which truck and where.
    raised = _trucks().select("active", alias=UNREAD).field_is("active", "=", True)
    incidents = (
        Select("waste_incident")
        .select("change", alias=UNREAD)
        .field_is("change", "=", 1)
        .tag_matches("route", "route")
        .by("kind")
    )
    dash = (
        board(t("waste.title"), UID, ["waste"])
        .with_variable(choice("route", t("var.route"), names.routes()))
        .with_variable(choice("device", t("var.truck"), names.trucks()))
        .annotation(Annotation(t("waste.alarm_raised"), raised.by("site"), theme.WARNING, text=None))
        .annotation(Annotation(t("waste.incident"), incidents, theme.CRITICAL, text=None))
    )
    trips = place(trips_table(t("waste.trips")), (0, 27, 12, 8), trips_now())
    tonnage = [
        waste_types(
            place(_bars(t(f"waste.tonnage_{period}"), unit("tonne"), span), (x, 35, 8, 9), _tonnage(period))
        )
        for x, (period, span) in zip(
            (0, 8, 16), (("day", "35d"), ("week", "120d"), ("month", "400d")), strict=True
        )
    ]
    on_time = place(
        _shares(t("waste.on_time"), good=0.9),
        (12, 27, 12, 8),
        _performance("on_time", "on time", t("waste.route_on_time", route="$tag_route")),
        _performance("in_window", "notices in time", t("waste.route_notices", route="$tag_route")),
    )
    missed = place(
        _bars(t("waste.outcomes"), unit("room"), "35d"),
        (0, 44, 24, 8),
        *(
            Target(
                Select("waste_performance")
                .tag_is("period", "day")
                .tag_matches("route", "route")
                .select(outcome, "sum", alias=outcome)
                .by_time("1d", fill="none")
                .in_zone(theme.ZONE),
                alias=t(f"waste.{outcome}"),
            )
            for outcome in ("revisited", "skipped", "missed")
        ),
    )
    bookings = place(
        trend(t("waste.bookings"), unit("booking")),
        (0, 52, 12, 8),
        *(
            Target(
                Select("waste_renovation").select(state, "last", alias=state).by_time(),
                alias=t(f"booking.{state}"),
            )
            for state in ("requested", "offered", "accepted", "en_route", "arrived", "at_risk")
        ),
    )
    steps = place(
        latest_table(t("waste.steps")).override_by_name(
            "wait_min", props(("unit", unit("minute")), ("decimals", 0))
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
        _bars(t("waste.booking_days"), unit("booking"), "35d"),
        (0, 60, 12, 8),
        *(
            Target(
                Select("waste_booking_rollup")
                .tag_is("period", "day")
                .select(field, "sum", alias=field)
                .by_time("1d", fill="none")
                .in_zone(theme.ZONE),
                alias=t(f"booking.{field}"),
            )
            for field in ("requested", "collected", "cancelled", "expired")
        ),
    )
    renovation_service = place(
        _shares(t("waste.in_window"), good=0.95),
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
        latest_table(t("waste.truck_runs")),
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


def _performance(field: str, alias: str, legend: str) -> Target:
    """A route's share over the span: the mean of its days' shares."""
    return Target(
        Select("waste_performance")
        .tag_is("period", "day")
        .tag_matches("route", "route")
        .select(field, "mean", alias=alias)
        .by("route"),
        alias=legend,
    )
