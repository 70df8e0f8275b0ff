"""The big screen: the whole district at a glance, for the operations-center wall.

Laid out for 1920x1080 in kiosk mode (28 grid rows of 24 columns; on a 4K wall Grafana
scales the same grid), numbers large enough to read from across the room, and every
colour as `theme` defines it.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, bargauge, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from linli.catalog.profile import get_profile
from linli.dashboards import names, theme
from linli.dashboards.alerts import RECENT, rules
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    P,
    big_text,
    last_value,
    legend_hidden,
    named,
    place,
    props,
    transform,
)
from linli.dashboards.words import t, unit

UID = "linli-screen"
TODAY = "now/d"  # from local midnight: the dashboard's time zone is the district's

WASTE_COLOURS = {  # Shanghai's bin colours, lightened where the dark theme would hide them
    "wet": "#a0522d",
    "dry": "#d8d9da",
    "recyclable": "#5794f2",
    "hazardous": "#b877d9",
    "renovation": "#c8a165",
}


def waste_types(panel: P) -> P:
    """Each waste type in its bin colour, under its name."""
    for waste_type, fixed in WASTE_COLOURS.items():
        panel.override_by_name(waste_type, named(f"waste.{waste_type}", fixed))
    return panel


def ports_in_state(state: int, alias: str) -> Target:
    """How many charger ports are in `state` now, by site, as a table."""
    latest = (
        Select("charger").select("state", "last", alias="state").during(RECENT).by("site", "device", "port")
    )
    count = Select.over(latest).select("state", "count", alias=alias).field_is("state", "=", state).by("site")
    return Target(count, fmt="table")


def devices_online() -> list[Target]:
    latest = Select("health").select("online", "last", alias="online").tag_not("kind", "agent").during(RECENT)
    latest = latest.by("site", "device", "kind")
    return [
        Target(Select.over(latest).select("online", "sum", alias="online"), alias=t("screen.online")),
        Target(Select.over(latest).select("online", "count", alias="expected"), alias=t("screen.expected")),
    ]


def fire_alarms() -> Target:
    """Fire-alarm points (smoke detectors, fire doors) in alarm now."""
    latest = Select("fire_point").select("alarm", "last", alias="alarm").during(RECENT).by("site", "device")
    return Target(Select.over(latest).select("alarm", "sum", alias="points"), alias=t("screen.fire_alarms"))


def charging_power_now() -> Target:
    latest = Select("charger").select("total_power", "last", alias="w").during(RECENT).by("site", "device")
    return Target(
        Select.over(latest).select("w", "sum", alias="kW", scale=0.001), alias=t("screen.charging_power")
    )


def interceptions(interval: str | None = None) -> Target:
    select = Select("camera").select("interception", "sum", alias="interceptions")
    if interval:
        select = select.by_time(interval, fill="0").in_zone(theme.ZONE)
    return Target(select, alias=t("screen.ebikes_stopped"))


def collected(by_type: bool) -> Target:
    select = Select("truck").select("collected_kg", "sum", alias="t", scale=0.001)
    if by_type:
        return Target(select.by("waste_type"), alias="$tag_waste_type")
    return Target(select, alias=t("screen.collected"))


def _stats(y: int) -> list[stat.Panel]:
    def tile(title: str, x: int, *targets: Target) -> stat.Panel:
        panel = (
            stat.Panel()
            .title(title)
            .reduce_options(last_value())
            .text(big_text())
            .color_mode(common.BigValueColorMode.VALUE)
            .graph_mode(common.BigValueGraphMode.NONE)
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        )
        return place(panel, (x, y, 4, 4), *targets)

    return [
        tile(t("screen.devices_online"), 0, *devices_online())
        .unit(unit("device"))
        .thresholds(theme.steps((None, theme.OK)))
        .override_by_name(t("screen.expected"), props(("color", {"mode": "fixed", "fixedColor": "text"}))),
        tile(t("screen.fire_alarms"), 4, fire_alarms()).unit(unit("point")).thresholds(theme.any_is_bad()),
        tile(
            t("screen.ports"), 8, _ports_total(1, t("screen.charging")), _ports_total(3, t("screen.faulted"))
        )
        .unit(unit("port"))
        .thresholds(theme.steps((None, theme.WORKING)))
        .override_by_name(
            t("screen.faulted"),
            props(
                (
                    "thresholds",
                    {
                        "mode": "absolute",
                        "steps": [{"value": None, "color": theme.OK}, {"value": 1, "color": theme.CRITICAL}],
                    },
                )
            ),
        ),
        tile(t("screen.charging_power"), 12, charging_power_now())
        .unit(unit("power"))
        .decimals(1)
        .thresholds(theme.steps((None, theme.WORKING))),
        tile(t("screen.ebikes_today"), 16, interceptions())
        .unit(unit("bike"))
        .time_from(TODAY)
        .hide_time_override(True)
        .thresholds(theme.steps((None, theme.WORKING))),
        tile(t("screen.rooms_today"), 20, *bin_rooms_today())
        .unit(unit("room"))
        .time_from(TODAY)
        .hide_time_override(True)
        .decimals(0)
        .thresholds(theme.steps((None, theme.WORKING)))
        .override_by_name(t("screen.scheduled"), props(("color", {"mode": "fixed", "fixedColor": "text"}))),
    ]


def bin_rooms_today() -> list[Target]:
    """Bin rooms served against scheduled, over today's trips that have set off (the waste
    service's `waste_trip`): a trip due later today has served nothing yet and is not counted."""
    per_trip = (
        Select("waste_trip")
        .select("served", "last", alias="served")
        .select("scheduled", "last", alias="scheduled")
        .select("progress", "last", alias="progress")
        .by("trip")
    )
    begun = Select.over(per_trip).field_is("progress", ">", 0)
    return [
        Target(begun.select("served", "sum", alias="served"), alias=t("screen.served")),
        Target(begun.select("scheduled", "sum", alias="scheduled"), alias=t("screen.scheduled")),
    ]


def trips_now() -> Target:
    """Each truck's trip: next stop, minutes to it, delay against the timetable, progress."""
    return Target(
        Select("waste_trip")
        .select("next_stop", "last", alias="next stop")
        .select("predicted_min", "last", alias="in min")
        .select("delay_min", "last", alias="delay min")
        .select("progress", "last", alias="progress")
        .select("served", "last", alias="served")
        .select("scheduled", "last", alias="of")
        .by("truck", "route"),
        fmt="table",
    )


def trips_table(title: str) -> table.Panel:
    """The trips as a table: each truck, its route and its next stop by name (`place`), delay
    coloured past 5 and 10 minutes, progress as a bar, bin rooms served of scheduled as rooms."""
    return (
        table.Panel()
        .title(title)
        .cell_height(common.TableCellHeight.SM)
        .override_by_name("in min", props(("unit", unit("minute"))))
        .override_by_name("served", props(("unit", unit("room"))))
        .override_by_name("of", props(("unit", unit("room"))))
        .override_by_name(
            "delay min",
            props(
                ("unit", unit("minute")),
                ("decimals", 1),
                (
                    "thresholds",
                    {
                        "mode": "absolute",
                        "steps": [
                            {"value": None, "color": theme.OK},
                            {"value": 5, "color": theme.WARNING},
                            {"value": 10, "color": theme.CRITICAL},
                        ],
                    },
                ),
                ("custom.cellOptions", {"type": "color-text"}),
            ),
        )
        .override_by_name(
            "progress",
            props(
                ("unit", "percentunit"),
                ("max", 1),
                ("custom.cellOptions", {"type": "gauge", "mode": "basic"}),
            ),
        )
    )


def waste_incidents_open() -> Target:
    """Blocked gates and breakdowns not yet acknowledged by the dispatcher."""
    return Target(
        Select("waste_incident").select("change", "sum", alias="open"), alias=t("screen.waste_incidents")
    )


def _ports_total(state: int, alias: str) -> Target:
    latest = (
        Select("charger").select("state", "last", alias="state").during(RECENT).by("site", "device", "port")
    )
    return Target(
        Select.over(latest).select("state", "count", alias="ports").field_is("state", "=", state), alias=alias
    )


def _chargers(y: int) -> list[object]:
    by_site = place(
        barchart.Panel()
        .title(t("screen.ports_by_site"))
        .unit(unit("port"))
        .orientation(common.VizOrientation.HORIZONTAL)  # site names read across, never overlap
        .stacking(common.StackingMode.NORMAL)
        .show_value(common.VisibilityMode.NEVER)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .override_by_name("charging", named("screen.charging", theme.WORKING))
        .override_by_name("idle", named("screen.idle", theme.OK))
        .override_by_name("faulted", named("screen.faulted", theme.CRITICAL))
        .with_transformation(transform("joinByField", {"byField": "site", "mode": "outer"}))
        .with_transformation(
            transform(
                "organize", {"excludeByName": {"Time": True, "Time 1": True, "Time 2": True, "Time 3": True}}
            )
        ),
        (0, y, 14, 8),
        ports_in_state(1, "charging"),
        ports_in_state(0, "idle"),
        ports_in_state(3, "faulted"),
    )
    # The sum needs every station's value in every window, and InfluxQL cannot fill a
    # subquery's empty windows for an outer GROUP BY time (influxdata/influxdb#16960), so
    # the profile stores a station's total power at every poll (it has no deadband).
    inner = Select("charger").select("total_power", "mean", alias="w").by_time().by("site", "device")
    power = Select.over(inner).select("w", "sum", alias="kW", scale=0.001).by_time().during("$timeFilter")
    draw = place(
        timeseries.Panel()
        .title(t("screen.district_power"))
        .unit(unit("power"))
        .fill_opacity(30)
        .line_width(2)
        .color_scheme(db.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color(theme.WORKING))
        .legend(legend_hidden()),
        (14, y, 10, 8),
        Target(power, alias=t("screen.charging_power")),
    )
    return [by_site, draw]


def _fire(y: int) -> list[object]:
    pressure = get_profile("fire_pressure")
    level = get_profile("fire_level")
    sprinkler, hydrant = (pressure.thresholds_for({"system": s})[0] for s in ("sprinkler", "hydrant"))
    pressures = place(
        bargauge.Panel()
        .title(t("screen.fire_pressure"))
        .unit("pressurempa")
        .decimals(2)
        .min(0)
        .max(1)
        .reduce_options(last_value())
        .display_mode(common.BarGaugeDisplayMode.LCD)
        .orientation(common.VizOrientation.HORIZONTAL)
        .text(big_text(20))
        .thresholds(theme.limit(sprinkler)),
        (0, y, 7, 7),
        Target(
            Select("fire_pressure")
            .select("pressure", "last", alias="MPa")
            .during(RECENT)
            .by("site", "device", "system"),
            alias="$tag_site $tag_device",
        ),
    )
    # Each pipe under its building's name (written in by `place`) and its system; a hydrant
    # main against its own limit.
    site_names = names.sites()
    for device in names.devices("fire_pressure"):
        system = device.group.tags["system"]
        building = site_names[device.site]
        shown = ("displayName", f"{building} {t(f'system.{system}')}")
        limit = [("thresholds", theme.limit(hydrant).build())] if system == "hydrant" else []
        pressures.override_by_name(f"{building} {device.device}", props(shown, *limit))
    [low] = [t for t in level.thresholds if t.field == "level"]
    tanks = place(
        bargauge.Panel()
        .title(t("screen.tank_level"))
        .unit("lengthm")
        .decimals(2)
        .min(0)
        .max(5)
        .reduce_options(last_value())
        .display_mode(common.BarGaugeDisplayMode.LCD)
        .orientation(common.VizOrientation.HORIZONTAL)
        .text(big_text(20))
        .thresholds(theme.limit(low)),
        (7, y, 5, 7),
        Target(
            Select("fire_level").select("level", "last", alias="m").during(RECENT).by("site"),
            alias="$tag_site",
        ),
    )
    by_hour = place(
        timeseries.Panel()
        .title(t("screen.ebikes_by_hour"))
        .unit(unit("bike"))
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .time_from(TODAY)
        .hide_time_override(True)
        .decimals(0)
        .color_scheme(db.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color(theme.WORKING))
        .legend(legend_hidden()),
        (12, y, 6, 7),
        interceptions("1h"),
    )
    waste = place(
        bargauge.Panel()
        .title(t("screen.waste_today"))
        .unit(unit("tonne"))
        .decimals(1)
        .reduce_options(cb.ReduceDataOptions().calcs(["sum"]).values(False))
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .text(big_text(20))
        .time_from(TODAY)
        .hide_time_override(True),
        (18, y, 6, 7),
        collected(by_type=True),
    )
    return [pressures, tanks, by_hour, waste_types(waste)]


def trucks_map(at: tuple[int, int, int, int]) -> geomap.Panel:
    """Trucks at their latest position (blue moving, orange stopped) over the road they drove."""
    latest = (
        Select("truck")
        .select("lat", "last", alias="lat")
        .select("lon", "last", alias="lon")
        .select("speed", "last", alias="speed")
        .select("load_kg", "last", alias="load_kg")
        .by("device", "route", "waste_type")
    )
    track = Select("truck").select("lat", alias="lat").select("lon", alias="lon").by("device")
    location = (
        cb.FrameGeometrySource().mode(common.FrameGeometrySourceMode.COORDS).latitude("lat").longitude("lon")
    )
    trucks = (
        cb.MapLayerOptions()
        .type("markers")
        .name(t("trucks.layer"))
        .location(location)
        .filter_data({"id": "byRefId", "options": "A"})
        .config(
            {
                "showLegend": False,
                "style": {
                    "size": {"fixed": 9},
                    "color": {"field": "speed"},
                    "text": {"field": "device", "mode": "field"},  # by its fleet number (`place`)
                    "textConfig": {"fontSize": 11, "offsetY": -14},
                },
            }
        )
    )
    road = (
        cb.MapLayerOptions()
        .type("route")
        .name(t("trucks.routes"))
        .location(location)
        .filter_data({"id": "byRefId", "options": "B"})
        .config({"style": {"color": {"fixed": theme.WORKING}, "opacity": 0.5, "lineWidth": 2}, "arrow": 0})
    )
    return place(
        geomap.Panel()
        .title(t("trucks.title"))
        .view(geomap.MapViewConfig().id("fit").all_layers(True).padding(10))
        .basemap(cb.MapLayerOptions().type("default").name(t("trucks.basemap")))
        .layers([road, trucks])
        .thresholds(theme.steps((None, theme.WARNING), (1, theme.WORKING))),
        at,
        Target(latest, fmt="table"),
        Target(track, fmt="table"),
    )


def _bottom(y: int) -> list[object]:
    alerts = place(
        bargauge.Panel()
        .title(t("screen.alerts"))
        .unit(unit("device"))
        .reduce_options(last_value())
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .text(big_text(22))
        .min(0)
        .decimals(0)
        .no_value(t("screen.no_alerts"))
        .thresholds(theme.any_is_bad()),
        (16, y, 8, 9),
        *(Target(r.count, alias=r.name) for r in rules()),
        waste_incidents_open(),
    )
    for rule in rules():
        colour = theme.SEVERITY_COLOUR[rule.severity]
        alerts.override_by_name(
            rule.name,
            props(
                (
                    "thresholds",
                    {
                        "mode": "absolute",
                        "steps": [{"value": None, "color": theme.OK}, {"value": 1, "color": colour}],
                    },
                )
            ),
        )
    at_risk = {
        "mode": "absolute",
        "steps": [{"value": None, "color": theme.OK}, {"value": 1, "color": theme.WARNING}],
    }
    bookings = place(
        stat.Panel()
        .title(t("screen.renovation"))
        .unit(unit("booking"))
        .reduce_options(last_value())
        .text(big_text(28))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .thresholds(theme.steps((None, theme.WORKING)))
        .override_by_name(t("screen.at_risk"), props(("thresholds", at_risk))),
        (8, y + 6, 8, 3),
        *renovation_now(),
    )
    trips = place(trips_table(t("screen.rounds")), (8, y, 8, 6), trips_now())
    return [trucks_map((0, y, 8, 9)), trips, bookings, alerts]


def renovation_now() -> list[Target]:
    """Renovation bookings open, trucks driving to one, and bookings that may miss their window."""
    status = Select("waste_renovation")
    return [
        Target(status.select("open", "last", alias="open"), alias=t("screen.open")),
        Target(status.select("trucks_en_route", "last", alias="en route"), alias=t("screen.en_route")),
        Target(status.select("at_risk", "last", alias="at risk"), alias=t("screen.at_risk")),
    ]


def dashboard() -> db.Dashboard:
    """The big screen."""
    board = (
        db.Dashboard(t("screen.title"))
        .uid(UID)
        .tags(["linli", "big-screen"])
        .timezone(theme.ZONE)
        .time("now-6h", "now")
        .refresh("10s")
        .readonly()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for panel in [*_stats(0), *_chargers(4), *_fire(12), *_bottom(19)]:
        board.with_panel(panel)  # type: ignore[arg-type]
    return board
