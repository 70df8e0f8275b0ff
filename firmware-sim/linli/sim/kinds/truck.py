"""A garbage truck on a fixed route, like a bus.

The route is data: an ordered list of collection points with WGS-84 coordinates. The
truck leaves the depot, drives from stop to stop at town speed, stops at each to lift
its bins (weighed by the on-board scale), and at the end of the route unloads at the
transfer station and starts over. It reports its position every 10 s while moving and
every 30 s while stopped, each bin-lift cycle, and the driver's alarm button.

Faults: `blocked` raises a blocked-access alarm at the third stop, waits five minutes,
clears it and skips the stop; `breakdown` stops the truck for good after the second stop.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from linli.catalog.profile import Profile, get_profile
from linli.sim.context import DeviceContext

EARTH_RADIUS_M = 6_371_000.0
MOVING_REPORT_S = 10
STOPPED_REPORT_S = 30
UNLOAD_S = 900
BLOCKED_WAIT_S = 300

Message = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Stop:
    """A collection point on a route."""

    id: str
    lat: float
    lon: float
    bins: int = 4


@dataclass(frozen=True)
class Route:
    """An ordered list of stops run in a loop, and the waste it collects."""

    id: str
    waste_type: str
    stops: tuple[Stop, ...]
    kg_per_bin: float = 60.0
    speed_kmh: float = 25.0


def distance_m(a: Stop, b: Stop) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def bearing_deg(a: Stop, b: Stop) -> int:
    """Initial heading from a to b, 0-359 clockwise from north."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dl = math.radians(b.lon - a.lon)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return round(math.degrees(math.atan2(y, x))) % 360


class Truck:
    """One truck on its route; `advance_to` returns the messages it published on the way."""

    def __init__(
        self, *, seed: str, start: float, route: Route, faults: frozenset[str] = frozenset()
    ) -> None:
        if len(route.stops) < 2:
            raise ValueError(f"route '{route.id}' needs at least two stops")
        self.profile: Profile = get_profile("truck")
        self.rng = random.Random(seed)
        self.route = route
        self.faults = faults
        self.t = math.floor(start)
        self.leg = 0  # driving from stops[leg] to stops[leg + 1]
        self.travelled_m = 0.0
        self.dwell = self.rng.randint(0, 120)  # seconds left at the current stop
        self.load_kg = 0.0
        self.mileage_km = round(self.rng.uniform(10_000, 90_000), 1)
        self.speed = 0.0
        self.heading = bearing_deg(route.stops[0], route.stops[1])
        self.lat, self.lon = route.stops[0].lat, route.stops[0].lon
        self.at_stop: str | None = route.stops[0].id
        self.next_report = self.t
        self.blocked_until: int | None = None
        self.broken = False
        self.visits = 0

    def advance_to(self, t: float) -> list[Message]:
        out: list[Message] = []
        while self.t + 1 <= t:
            self.t += 1
            self._step(out)
        return out

    def _step(self, out: list[Message]) -> None:
        if self.broken:
            self.speed = 0.0
        elif self.dwell > 0:
            self.dwell -= 1
            self.speed = 0.0
            if self.dwell == 0:
                self._leave(out)
        else:
            self._drive(out)
        if self.t >= self.next_report:
            self.next_report = self.t + (MOVING_REPORT_S if self.speed > 0 else STOPPED_REPORT_S)
            out.append(("location", self._location()))

    def _drive(self, out: list[Message]) -> None:
        stops = self.route.stops
        a, b = stops[self.leg], stops[(self.leg + 1) % len(stops)]
        self.speed = round(max(5.0, self.rng.gauss(self.route.speed_kmh, 4.0)), 1)
        step_m = self.speed / 3.6
        self.travelled_m += step_m
        self.mileage_km = round(self.mileage_km + step_m / 1000, 3)
        self.at_stop = None
        leg_m = max(1.0, distance_m(a, b))
        if self.travelled_m >= leg_m:
            self._arrive(out, b)
            return
        f = self.travelled_m / leg_m
        self.lat = a.lat + (b.lat - a.lat) * f
        self.lon = a.lon + (b.lon - a.lon) * f
        self.heading = bearing_deg(a, b)

    def _arrive(self, out: list[Message], stop: Stop) -> None:
        self.leg = (self.leg + 1) % len(self.route.stops)
        self.travelled_m = 0.0
        self.lat, self.lon = stop.lat, stop.lon
        self.speed = 0.0
        self.at_stop = stop.id
        self.visits += 1
        out.append(("location", self._location()))
        self.next_report = self.t + STOPPED_REPORT_S
        if self.leg == 0:
            # Back at the depot: unload at the transfer station.
            self.load_kg = 0.0
            self.dwell = UNLOAD_S
            return
        if "blocked" in self.faults and self.visits == 3:
            out.append(
                ("alarm", {"ts": self.t * 1000, "alarm": "blocked_access", "active": True, "stop": stop.id})
            )
            self.blocked_until = self.t + BLOCKED_WAIT_S
            self.dwell = BLOCKED_WAIT_S
            return
        if "breakdown" in self.faults and self.visits == 2:
            out.append(
                ("alarm", {"ts": self.t * 1000, "alarm": "breakdown", "active": True, "stop": stop.id})
            )
            self.broken = True
            return
        bins = max(1, stop.bins + self.rng.randint(-1, 1))
        kg = round(sum(max(5.0, self.rng.gauss(self.route.kg_per_bin, 12.0)) for _ in range(bins)), 1)
        self.load_kg = round(self.load_kg + kg, 1)
        self.dwell = 60 + 25 * bins
        out.append(
            (
                "lift",
                {
                    "ts": self.t * 1000,
                    "waste_type": self.route.waste_type,
                    "route": self.route.id,
                    "stop": stop.id,
                    "bins": bins,
                    "collected_kg": kg,
                },
            )
        )

    def _leave(self, out: list[Message]) -> None:
        if self.blocked_until is not None:
            out.append(
                (
                    "alarm",
                    {
                        "ts": self.t * 1000,
                        "alarm": "blocked_access",
                        "active": False,
                        "stop": self.at_stop or "",
                    },
                )
            )
            self.blocked_until = None

    def _location(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "ts": self.t * 1000,
            "waste_type": self.route.waste_type,
            "route": self.route.id,
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "speed": self.speed,
            "heading": self.heading,
            "acc": not self.broken,
            "alarm_flags": 0,
            "load_kg": self.load_kg,
            "mileage_km": round(self.mileage_km, 1),
        }
        if self.at_stop is not None:
            payload["stop"] = self.at_stop
        return payload


FAULTS = frozenset({"blocked", "breakdown"})


def make(ctx: DeviceContext) -> Truck:
    """A truck on the route named by the `route` option."""
    name = str(ctx.options.get("route", ""))
    if name not in ctx.routes:
        known = ", ".join(sorted(ctx.routes)) or "none"
        raise KeyError(f"truck {ctx.site}/{ctx.device}: option 'route' = {name!r}; routes defined: {known}")
    route: Route = ctx.routes[name]
    return Truck(seed=ctx.seed, start=ctx.start, route=route, faults=ctx.faults)
