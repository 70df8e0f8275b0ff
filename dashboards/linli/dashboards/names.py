"""The district's places and trucks as people name them, for the screens.

The stored data is tagged with ids (`site`, `truck`, `next_stop`); a screen shows the names:
a site's from the scenario (`name`, `name_en`), a bin room's and a truck's from the timetable
(`stop_name` and its translation, the fleet number and plate), in the build's locale. Grafana
shows them through value mappings on those fields; a series named after its tags gets its name
by a display-name override.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from grafana_foundation_sdk.models import dashboard as model

from linli.cloud.waste.gtfs import Feed, load_feed
from linli.cloud.waste.messages import truck_name
from linli.dashboards.words import current
from linli.sim.scenario import PlacedDevice, Scenario, builtin_scenario_path, expand, load_scenario

# The source checkout, where the scenario's timetable (deploy/gtfs/...) is.
ROOT = Path(__file__).resolve().parents[3]


@cache
def _district() -> tuple[Scenario, Feed | None]:
    scenario = load_scenario(builtin_scenario_path())
    # An installed copy (the image) has no timetable beside it: its screens name the sites only.
    timetable = ROOT / scenario.timetable
    return scenario, load_feed(timetable) if timetable.is_dir() else None


def sites() -> dict[str, str]:
    """Site id -> its name in the build's locale."""
    scenario, _ = _district()
    english = current() == "en"
    return {s.id: (s.name_en if english else "") or s.name or s.id for s in scenario.sites}


def stops() -> dict[str, str]:
    """Bin room (stop) id -> its name in the build's locale."""
    _, feed = _district()
    return {stop.id: stop.name_in(current()) for stop in feed.stops.values()} if feed else {}


def routes() -> dict[str, str]:
    """Route id -> its name in the build's locale (湿垃圾北线)."""
    _, feed = _district()
    return {route: feed.route_name(route, current()) for route in feed.routes} if feed else {}


def trucks() -> dict[str, str]:
    """Truck id -> its fleet number and plate, as the build's locale writes them."""
    _, feed = _district()
    return {truck: truck_name(feed, truck, current()) for truck in feed.extras.trucks} if feed else {}


def devices(kind: str) -> list[PlacedDevice]:
    """The district's devices of one kind, in the scenario's order."""
    scenario, _ = _district()
    return [d for d in expand(scenario) if d.kind == kind]


def mapping(names: dict[str, str]) -> list[model.ValueMapping]:
    """A value mapping that shows each id as its name."""
    options = {i: model.ValueMappingResult(text=name, index=n) for n, (i, name) in enumerate(names.items())}
    return [model.ValueMap(options=options)]
