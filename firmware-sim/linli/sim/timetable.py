"""Garbage trucks that run their GTFS trips, like buses, with the day's traffic.

Each trip leaves the depot near its scheduled time and drives its shape: the road, not a
straight line between stops. A segment between two stops takes its scheduled time,
stretched three ways the timetable knows nothing about:

- the hour's congestion (the morning and evening rush);
- its road's own factor (log-normal, `Traffic.sd`): the planners' guess for that stretch is
  too short or too long, the same every day;
- a factor of this one drive (log-normal, `Traffic.trip_sd`): lights, a delivery van.

At each stop the truck dwells for its bins. It reports its position every MOVING_REPORT_S
while driving and STOPPED_REPORT_S while still, with GPS noise, and each lift. Faults are
injected per trip: a blocked gate (the driver's alarm, a short wait, on to the next stop,
back after the last), a stop driven past, a breakdown halfway along a segment. What really
happened, the arrival at every stop, is the ground truth that benchmarks score predictions
against; the tracker never sees it.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pyproj import Transformer
from shapely import LineString

from linli.cloud.waste.gtfs import Feed, Trip, service_zero
from linli.cloud.waste.stops import stop_distances

MOVING_REPORT_S = 10
STOPPED_REPORT_S = 30
GPS_NOISE_M = 7.0
BLOCKED_WAIT_S = 120  # at a blocked gate before the driver goes on
RETURN_MS = 5.0  # back along the road to a blocked gate, m/s
TO_WGS84 = Transformer.from_crs("EPSG:32651", "EPSG:4326", always_xy=True)
# How much slower than the timetable's free flow traffic is, by local hour.
RUSH = {7: 1.35, 8: 1.45, 9: 1.15, 17: 1.3, 18: 1.45, 19: 1.15}

Message = tuple[str, dict[str, Any]]


def congestion(hour: int) -> float:
    return RUSH.get(hour, 1.0)


@dataclass(frozen=True)
class Traffic:
    """How the roads really run against the timetable, the same for the same seed."""

    seed: int = 1
    sd: float = 0.3  # each road segment's own factor, fixed for the run
    trip_sd: float = 0.1  # each drive of a segment
    rush: bool = True  # slower in the rush hours (RUSH); off, every hour runs at free flow

    def road(self, route_id: str, index: int) -> float:
        """The factor of the segment into stop `index` of the route's road."""
        if self.sd <= 0:
            return 1.0
        return math.exp(random.Random(f"{self.seed}:{route_id}:{index}").gauss(0, self.sd))


@dataclass(frozen=True)
class TripFaults:
    """What goes wrong on one drive of a trip, by stop index."""

    blocked: frozenset[int] = frozenset()  # the gate is blocked at the first visit
    skipped: frozenset[int] = frozenset()  # driven past without stopping
    breakdown_before: int | None = None  # breaks down halfway to this stop, for good


class Outcome(StrEnum):
    SERVED = "served"
    BLOCKED = "blocked"  # found blocked, served on the way back
    SKIPPED = "skipped"  # driven past
    NOT_REACHED = "not_reached"  # the truck broke down before it


@dataclass(frozen=True)
class Arrival:
    """Ground truth: what happened at one stop of a trip (epoch seconds)."""

    trip_id: str
    index: int
    stop_id: str
    scheduled_s: float
    actual_s: float | None  # the first arrival; None if never reached
    outcome: Outcome = Outcome.SERVED
    served_s: float | None = None  # the lift, for a blocked stop on the way back


@dataclass
class TripRun:
    """One trip driven once: the messages the truck sent and what happened at each stop."""

    messages: list[Message]
    arrivals: list[Arrival]
    end_s: float = 0.0
    broken: bool = False


@dataclass
class _Drive:
    """The truck on its road while one trip is driven."""

    line: LineString
    rng: random.Random
    common: dict[str, Any]
    t: float
    tz: ZoneInfo
    at_m: float = 0.0
    load_kg: float = 0.0
    out: list[Message] = field(default_factory=list)

    def report(self, speed_kmh: float, stop: str | None, *, acc: bool = True, heading: int = 0) -> None:
        p = self.line.interpolate(self.at_m)
        noise = self.rng.gauss(0, GPS_NOISE_M), self.rng.gauss(0, GPS_NOISE_M)
        lon, lat = TO_WGS84.transform(p.x + noise[0], p.y + noise[1])
        body: dict[str, Any] = {
            "ts": round(self.t * 1000), **self.common, "lat": round(lat, 6), "lon": round(lon, 6),
            "speed": round(speed_kmh, 1), "heading": heading, "acc": acc, "alarm_flags": 0,
            "load_kg": round(self.load_kg, 1), "mileage_km": 0.0,
        }  # fmt: skip
        if stop is not None:
            body["stop"] = stop
        self.out.append(("location", body))

    def drive(self, to_m: float, seconds: float) -> None:
        """Along the road to `to_m` (back if behind) in `seconds`, reporting on the way."""
        start, span = self.at_m, to_m - self.at_m
        speed = abs(span) / seconds * 3.6 if seconds > 0 else 0.0
        heading = self._heading(1 if span >= 0 else -1)
        t0 = self.t
        for s in range(MOVING_REPORT_S, int(seconds), MOVING_REPORT_S):
            self.at_m, self.t = start + span * s / seconds, t0 + s
            self.report(speed, None, heading=heading)
        self.at_m, self.t = to_m, t0 + seconds

    def wait(self, seconds: float, stop: str | None, *, acc: bool = True) -> None:
        t0 = self.t
        for s in range(0, int(seconds), STOPPED_REPORT_S):
            self.t = t0 + s
            self.report(0.0, stop, acc=acc)
        self.t = t0 + seconds

    def alarm(self, name: str, active: bool, stop: str) -> None:
        body = {"ts": round(self.t * 1000), "alarm": name, "active": active, "stop": stop}
        self.out.append(("alarm", body))

    def _heading(self, sign: int) -> int:
        a = self.line.interpolate(max(0.0, self.at_m - 5))
        b = self.line.interpolate(min(self.line.length, self.at_m + 5))
        degrees = math.degrees(math.atan2((b.x - a.x) * sign, (b.y - a.y) * sign))
        return round(degrees) % 360


def drive_trip(
    feed: Feed,
    trip: Trip,
    date: dt.date,
    rng: random.Random,
    *,
    traffic: Traffic | None = None,
    faults: TripFaults | None = None,
    parked_s: float = 1800,
) -> TripRun:
    """Drive one trip on one day, reporting from the depot `parked_s` before it leaves."""
    traffic = traffic or Traffic(sd=0.0, trip_sd=0.2)
    faults = faults or TripFaults()
    route = feed.routes[trip.route_id]
    places = stop_distances(feed, trip)
    zero = service_zero(date, feed.timezone)
    stops = trip.stop_times
    depots = set(feed.extras.depots)
    truck = _Drive(
        feed.shapes[trip.shape_id].line,
        rng,
        {"waste_type": route.waste_type, "route": trip.route_id},
        zero + stops[0].departure_s + rng.uniform(0, 60) - parked_s,
        ZoneInfo(feed.timezone),
        places[0],
    )
    truck.wait(parked_s, stops[0].stop_id)  # parked, switched on, waiting
    arrivals: list[Arrival] = []
    deferred: list[int] = []

    def serve(k: int) -> None:
        stop_id = stops[k].stop_id
        bins = max(1, feed.extras.stops[stop_id].bins + rng.randint(-1, 1))
        dwell = max(30.0, rng.gauss(60 + 20 * bins, 15))
        kg = round(sum(max(2.0, rng.gauss(route.kg_per_bin, route.kg_per_bin / 5)) for _ in range(bins)), 1)
        lift_s = truck.t + min(30.0, dwell / 2)
        truck.wait(dwell, stop_id)
        truck.load_kg += kg
        lift = {"ts": round(lift_s * 1000), **truck.common, "stop": stop_id, "bins": bins, "collected_kg": kg}
        truck.out.append(("lift", lift))

    for k, st in enumerate(stops):
        if k > 0:
            if k == len(stops) - 1:
                for j in deferred:  # back to the blocked gates, now clear, before the depot
                    truck.drive(places[j], abs(truck.at_m - places[j]) / RETURN_MS)
                    served = truck.t
                    serve(j)
                    arrivals[j] = replace(arrivals[j], outcome=Outcome.BLOCKED, served_s=served)
            took = _segment_s(trip, k, places, truck, traffic)
            if faults.breakdown_before == k:
                truck.drive(truck.at_m + (places[k] - truck.at_m) / 2, took / 2)
                truck.alarm("breakdown", True, "")
                truck.wait(1800, None, acc=False)
                arrivals += [
                    Arrival(
                        trip.id, j, stops[j].stop_id, zero + stops[j].arrival_s, None, Outcome.NOT_REACHED
                    )
                    for j in range(k, len(stops))
                ]
                return TripRun(sorted(truck.out, key=_time), arrivals, truck.t, broken=True)
            truck.drive(places[k], took)
        outcome = Outcome.SKIPPED if k in faults.skipped and st.stop_id not in depots else Outcome.SERVED
        arrivals.append(Arrival(trip.id, k, st.stop_id, zero + st.arrival_s, truck.t, outcome))
        if st.stop_id in depots:
            truck.wait(STOPPED_REPORT_S, st.stop_id)
        elif k in faults.blocked and outcome is Outcome.SERVED:
            truck.alarm("blocked_access", True, st.stop_id)
            truck.wait(BLOCKED_WAIT_S, st.stop_id)
            truck.alarm("blocked_access", False, st.stop_id)
            deferred.append(k)
        elif outcome is Outcome.SERVED:
            serve(k)
    return TripRun(sorted(truck.out, key=_time), arrivals, truck.t)


def _segment_s(trip: Trip, k: int, places: list[float], truck: _Drive, traffic: Traffic) -> float:
    """Seconds from where the truck is to stop k: the timetable's, stretched by traffic."""
    st = trip.stop_times
    scheduled = float(max(30, st[k].arrival_s - st[k - 1].departure_s))
    scheduled *= abs(places[k] - truck.at_m) / max(1.0, places[k] - places[k - 1])
    hour = dt.datetime.fromtimestamp(truck.t, truck.tz).hour
    took = scheduled * (congestion(hour) if traffic.rush else 1.0) * traffic.road(trip.route_id, k)
    return took * math.exp(truck.rng.gauss(0, traffic.trip_sd)) if traffic.trip_sd > 0 else took


def _time(message: Message) -> int:
    ts: int = message[1]["ts"]
    return ts
