"""Drill-down: fire facilities of the high-rise buildings, against their limits."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from linli.catalog.profile import get_profile
from linli.dashboards import names, theme
from linli.dashboards.alerts import RECENT
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    Annotation,
    alerts_fired,
    board,
    choice,
    latest_table,
    place,
    props,
    timeline,
    trend,
    variable,
    with_panels,
)
from linli.dashboards.words import t

UID = "linli-fire"
PUMP_NAMES = {"0": "stopped", "1": "running", "2": "fault"}


def _in(measurement: str) -> Select:
    return Select(measurement).tag_matches("site", "site").tag_matches("device", "device")


def dashboard() -> db.Dashboard:
    """Fire facilities: pressures and levels against their limits, pumps, alarm points, loops."""
    pressure, level = get_profile("fire_pressure"), get_profile("fire_level")
    sprinkler, hydrant = (pressure.thresholds_for({"system": s})[0] for s in ("sprinkler", "hydrant"))
    [low] = [t for t in level.thresholds if t.field == "level"]
    pressures = place(
        trend(t("fire.pipe_pressure"), "pressurempa")
        .description(t("fire.pressure_note", sprinkler=f"{sprinkler.value:g}", hydrant=f"{hydrant.value:g}"))
        .thresholds(theme.limit(sprinkler))
        .override_by_regexp(".*hydrant.*", props(("thresholds", theme.limit(hydrant).build())))
        .decimals(3),
        (0, 0, 12, 9),
        Target(
            _in("fire_pressure")
            .select("pressure", "last", alias="MPa")
            .held()
            .by("site", "device", "system"),
            alias="$tag_site $tag_device",
        ),
    )
    tanks = place(
        trend(t("fire.tank_level"), "lengthm").thresholds(theme.limit(low)).decimals(2),
        (12, 0, 12, 9),
        Target(
            _in("fire_level").select("level", "last", alias="m").held().by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    pumps = place(
        timeline(
            t("fire.pumps"),
            theme.states(
                {k: theme.PUMP_STATES[v] for k, v in PUMP_NAMES.items()},
                {code: t(f"pump.{name}") for code, name in PUMP_NAMES.items()},
            ),
        ),
        (0, 9, 24, 6),
        Target(
            _in("fire_pump")
            .select("state", "last", alias="state")
            .by_time("1m", fill="previous")
            .by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    flag = ("custom.cellOptions", {"type": "color-background"})
    points = place(
        latest_table(t("fire.points_now"))
        .override_by_name(
            "alarm",
            props(
                flag,
                ("mappings", theme.flags((t("fire.alarm"), theme.CRITICAL), (t("fire.normal"), theme.OK))),
            ),
        )
        .override_by_name(
            "fault",
            props(
                flag, ("mappings", theme.flags((t("fire.fault"), theme.WARNING), (t("fire.ok"), theme.OK)))
            ),
        )
        .override_by_name(
            "shielded",
            props(
                flag,
                ("mappings", theme.flags((t("fire.shielded"), theme.OFF), (t("fire.in_service"), theme.OK))),
            ),
        ),
        (0, 15, 14, 10),
        Target(
            _in("fire_point")
            .select("alarm", "last", alias="alarm")
            .select("fault", "last", alias="fault")
            .select("shielded", "last", alias="shielded")
            .during(RECENT)
            .by("site", "device", "system"),
            fmt="table",
        ),
    )
    loops = place(
        trend(t("fire.loops"), "mamp").thresholds(
            theme.steps((None, theme.WARNING), (3.6, theme.OK), (21, theme.WARNING))
        ),
        (14, 15, 10, 10),
        Target(
            _in("fire_pressure").select("loop_current", "last", alias="mA").held().by("site", "device"),
            alias="$tag_site $tag_device",
        ),
        Target(
            _in("fire_level").select("loop_current", "last", alias="mA").held().by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    flips = Select("fire_point").tag_matches("site", "site")
    raised, cleared = Annotation.changes(
        t("fire.alarm_raised"), t("fire.alarm_cleared"), flips, "alarm", theme.CRITICAL
    )
    dash = (
        board(t("fire.title"), UID, ["fire"])
        .annotation(alerts_fired("^fire_"))
        .with_variable(choice("site", t("var.building"), names.sites("fire_pressure")))
        .with_variable(
            variable("device", t("var.sensor"), "fire_point", "device", within=(("site", "site"),))
        )
        .annotation(raised)
        .annotation(cleared)
    )
    return with_panels(dash, pressures, tanks, pumps, points, loops)
