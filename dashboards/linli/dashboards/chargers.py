"""Drill-down: e-bike chargers, by site and station, port by port."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from linli.catalog.profile import get_profile
from linli.dashboards import theme
from linli.dashboards.alerts import RECENT
from linli.dashboards.influxql import Select, Target
from linli.dashboards.panels import (
    Annotation,
    alerts_fired,
    board,
    latest_table,
    place,
    props,
    timeline,
    trend,
    variable,
    with_panels,
)

UID = "linli-chargers"
STATE_NAMES = {"0": "idle", "1": "charging", "2": "full", "3": "fault", "4": "disabled"}


def _charger(*fields: tuple[str, str | None, str]) -> Select:
    """The charger measurement for the chosen sites and stations, with (field, fn, alias) columns."""
    select = Select("charger").tag_matches("site", "site").tag_matches("device", "device")
    for name, fn, alias in fields:
        select = select.select(name, fn, alias=alias)
    return select


def _limit(field: str) -> db.ThresholdsConfig:
    [threshold] = [t for t in get_profile("charger").thresholds if t.field == field]
    return theme.limit(threshold)


def dashboard() -> db.Dashboard:
    """Chargers: port states over time, power, temperatures against their limits, the ports now."""
    states = place(
        timeline(
            "Port states",
            theme.states({k: theme.CHARGER_STATES[v] for k, v in STATE_NAMES.items()}, STATE_NAMES),
        ),
        (0, 0, 24, 9),
        Target(
            _charger(("state", "last", "state")).by_time("1m", fill="previous").by("site", "device", "port"),
            alias="$tag_site $tag_device port $tag_port",
        ),
    )
    power = place(
        trend("Station power", "watt"),
        (0, 9, 12, 8),
        Target(
            _charger(("total_power", "mean", "W")).during("$timeFilter").by_time().by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    port_temp = place(
        trend("Port temperature", "celsius").thresholds(_limit("temperature")),
        (12, 9, 12, 8),
        Target(
            _charger(("temperature", "last", "°C")).held().by("site", "device", "port"),
            alias="$tag_site $tag_device port $tag_port",
        ),
    )
    cabinet = place(
        trend("Cabinet temperature", "celsius").thresholds(_limit("cabinet_temp")),
        (0, 17, 12, 8),
        Target(
            _charger(("cabinet_temp", "last", "°C")).held().by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    voltage = place(
        trend("Mains voltage", "volt"),
        (12, 17, 12, 8),
        Target(_charger(("voltage", "last", "V")).held().by("site", "device"), alias="$tag_site $tag_device"),
    )
    ports_now = place(
        latest_table("Ports now")
        .mappings(theme.states({k: theme.CHARGER_STATES[v] for k, v in STATE_NAMES.items()}, STATE_NAMES))
        .override_by_name("power", props(("unit", "watt")))
        .override_by_name(
            "temperature",
            props(
                ("unit", "celsius"),
                ("thresholds", _limit("temperature").build()),
                ("custom.cellOptions", {"type": "color-text"}),
            ),
        )
        .override_by_name("energy", props(("unit", "kwatth"))),
        (0, 25, 24, 10),
        Target(
            _charger(
                ("state", "last", "state"),
                ("power", "last", "power"),
                ("temperature", "last", "temperature"),
                ("energy", "last", "energy"),
                ("stop_reason", "last", "stop_reason"),
            )
            .during(RECENT)
            .by("site", "device", "port"),
            fmt="table",
        ),
    )
    dash = (
        board("Chargers", UID, ["chargers"])
        .annotation(alerts_fired("^charger$"))
        .with_variable(variable("site", "Site", "charger", "site"))
        .with_variable(variable("device", "Station", "charger", "device", within=(("site", "site"),)))
        .annotation(
            Annotation.changes(
                "Smoke alarm raised (1) or cleared (-1)",
                Select("charger").tag_matches("site", "site"),
                "smoke_alarm",
                theme.CRITICAL,
            )
        )
    )
    return with_panels(dash, states, power, port_temp, cabinet, voltage, ports_now)
