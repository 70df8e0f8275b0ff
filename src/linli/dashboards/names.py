"""The district's places and trucks as people name them, for the screens.

The stored data is tagged with ids (`site`, `truck`, `next_stop`); a screen shows the names:
a site's from the scenario (`name`, `name_en`), a bin room's and a truck's from the timetable
(`stop_name` and its translation, the fleet number and plate), in the build's locale. Grafana
shows them through value mappings on those fields; a series named after its tags gets its name
by a display-name override.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from grafana_foundation_sdk.models import dashboard as model

from linli.catalog.i18n import text
from linli.catalog.scenario import PlacedDevice, Scenario, builtin_scenario_path, expand, load_scenario
from linli.dashboards.words import current, t
from linli.transit.gtfs import Feed, load_feed
from linli.transit.names import truck_name

# The codes stored for a renovation booking's state and an elevator camera's sighting, each with
# its words in the catalog (`dashboards.booking.*`, `dashboards.object.*`, `dashboards.action.*`).
BOOKING_STATES = (
    "requested",
    "offered",
    "accepted",
    "en_route",
    "arrived",
    "collected",
    "closed",
    "cancelled",
    "expired",
)
CAMERA_CODES = {"object": ("ebike",), "action": ("none", "voice_warning", "door_held")}
# The source checkout, where the scenario's timetable (deploy/gtfs/...) is.
ROOT = Path(__file__).resolve().parents[3]


@cache
def _district() -> tuple[Scenario, Feed | None]:
    scenario = load_scenario(builtin_scenario_path())
    # An installed copy (the image) has no timetable beside it: its screens name the sites only.
    timetable = ROOT / scenario.timetable
    return scenario, load_feed(timetable) if timetable.is_dir() else None


def sites(kind: str | None = None) -> dict[str, str]:
    """Site id -> its name in the build's locale; with `kind`, only the sites with such devices."""
    scenario, _ = _district()
    english = current() == "en"
    having = {d.site for d in expand(scenario) if d.kind == kind} if kind else None
    return {
        s.id: (s.name_en if english else "") or s.name or s.id
        for s in scenario.sites
        if having is None or s.id in having
    }


def kinds() -> dict[str, str]:
    """Device kind -> its word (充电桩), as alert notices name a device without a name."""
    scenario, _ = _district()
    return {
        kind: text(f"alert.kind.{kind}", current()) for kind in dict.fromkeys(g.kind for g in scenario.groups)
    }


def waste_types() -> dict[str, str]:
    """Waste type -> its Shanghai name (湿垃圾)."""
    return {w: t(f"waste.{w}") for w in ("wet", "dry", "recyclable", "hazardous", "renovation")}


def stops() -> dict[str, str]:
    """Bin room (stop) id -> its name in the build's locale."""
    _, feed = _district()
    return {stop.id: stop.name_in(current()) for stop in feed.stops.values()} if feed else {}


def routes() -> dict[str, str]:
    """Route id -> its name in the build's locale (湿垃圾北线); the renovation truck's runs to
    bookings are the route `on-call`, which no timetable has."""
    _, feed = _district()
    timetabled = {route: feed.route_name(route, current()) for route in feed.routes} if feed else {}
    return {**timetabled, "on-call": t("route.on_call")}


def trucks() -> dict[str, str]:
    """Truck id -> its fleet number and plate, as the build's locale writes them."""
    _, feed = _district()
    return {truck: truck_name(feed, truck, current()) for truck in feed.extras.trucks} if feed else {}


def devices(kind: str) -> list[PlacedDevice]:
    """The district's devices of one kind, in the scenario's order."""
    scenario, _ = _district()
    return [d for d in expand(scenario) if d.kind == kind]


def tag_names(tag: str, measurements: frozenset[str]) -> dict[str, str]:
    """What a tag's values (or a column's) are called, for the measurements it is read from: ids
    by the names people know, codes by their words; empty when the values are neither (a port
    number, a device's nameplate)."""
    if tag in {"site", "compound"}:
        # Only the sites that have such devices, when every measurement read is a kind's own.
        kinds_read = measurements & set(kinds())
        return sites(next(iter(kinds_read))) if len(kinds_read) == len(measurements) == 1 else sites()
    if tag in {"next_stop", "next stop", "stop"}:
        return stops()
    if tag == "truck" or (tag == "device" and measurements & {"truck", "waste_trip", "health"}):
        return trucks()
    by_tag = {"route": routes, "waste_type": waste_types}
    return by_tag[tag]() if tag in by_tag else _codes(tag, measurements)


def _codes(tag: str, measurements: frozenset[str]) -> dict[str, str]:
    if tag == "kind" and measurements & {"health", "alert"}:  # elsewhere a kind of incident
        return kinds()
    if tag == "state" and "waste_booking" in measurements:
        return {state: t(f"booking.{state}") for state in BOOKING_STATES}
    if tag in CAMERA_CODES and "camera" in measurements:
        return {code: t(f"{tag}.{code}") for code in CAMERA_CODES[tag]}
    return {}


def choices(names: dict[str, str]) -> str:
    """A custom variable's options: each shown by its name, standing for its id (`名字 : id`)."""
    # Grafana splits the options at commas and each at " : "; a name keeps its own commas escaped.
    return ", ".join(f"{name.replace(',', chr(92) + ',')} : {i}" for i, name in names.items())


def renames(names: dict[str, str]) -> list[model.DataTransformerConfig]:
    """Transformations that write each id in a series' name as its name (虹许小区一区 station-1).

    Grafana anchors the pattern (^...$); the id must stand as a word of the name."""
    return [
        model.DataTransformerConfig(
            id_val="renameByRegex",
            options={"regex": f"(.* )?{re.escape(i)}( .*)?", "renamePattern": f"$1{name}$2"},
        )
        for i, name in names.items()
    ]


def mapping(names: dict[str, str]) -> list[model.ValueMapping]:
    """A value mapping that shows each id as its name."""
    options = {i: model.ValueMappingResult(text=name, index=n) for n, (i, name) in enumerate(names.items())}
    return [model.ValueMap(options=options)]
