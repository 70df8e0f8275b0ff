"""Drill-down: e-bike chargers, by site and station, port by port."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

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

UID = "linli-chargers"
STATE_NAMES = {"0": "idle", "1": "charging", "2": "full", "3": "fault", "4": "disabled"}


def _port_states() -> list[model.ValueMapping]:
    """Each stored state code in its colour, under the catalog's word for it."""
    labels = {code: t(f"state.{name}") for code, name in STATE_NAMES.items()}
    return theme.states({k: theme.CHARGER_STATES[v] for k, v in STATE_NAMES.items()}, labels)


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
        timeline(t("chargers.port_states"), _port_states()),
        (0, 0, 24, 9),
        Target(
            _charger(("state", "last", "state")).by_time("1m", fill="previous").by("site", "device", "port"),
            alias=t("port", site="$tag_site", device="$tag_device", port="$tag_port"),
        ),
    )
    power = place(
        trend(t("chargers.station_power"), "watt"),
        (0, 9, 12, 8),
        Target(
            _charger(("total_power", "mean", "W")).during("$timeFilter").by_time().by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    port_temp = place(
        trend(t("chargers.port_temp"), "celsius").thresholds(_limit("temperature")),
        (12, 9, 12, 8),
        Target(
            _charger(("temperature", "last", "°C")).held().by("site", "device", "port"),
            alias=t("port", site="$tag_site", device="$tag_device", port="$tag_port"),
        ),
    )
    cabinet = place(
        trend(t("chargers.cabinet_temp"), "celsius").thresholds(_limit("cabinet_temp")),
        (0, 17, 12, 8),
        Target(
            _charger(("cabinet_temp", "last", "°C")).held().by("site", "device"),
            alias="$tag_site $tag_device",
        ),
    )
    voltage = place(
        trend(t("chargers.voltage"), "volt"),
        (12, 17, 12, 8),
        Target(_charger(("voltage", "last", "V")).held().by("site", "device"), alias="$tag_site $tag_device"),
    )
    ports_now = place(
        latest_table(t("chargers.ports_now"))
        .mappings(_port_states())
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
    flips = Select("charger").tag_matches("site", "site")
    raised, cleared = Annotation.changes(
        t("chargers.smoke_raised"), t("chargers.smoke_cleared"), flips, "smoke_alarm", theme.CRITICAL
    )
    dash = (
        board(t("chargers.title"), UID, ["chargers"])
        .annotation(alerts_fired("^charger$"))
        .with_variable(choice("site", t("var.site"), names.sites("charger")))
        .with_variable(variable("device", t("var.station"), "charger", "device", within=(("site", "site"),)))
        .annotation(raised)
        .annotation(cleared)
    )
    return with_panels(dash, states, power, port_temp, cabinet, voltage, ports_now)
