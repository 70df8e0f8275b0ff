"""Garbage trucks that run their GTFS trips, like buses, with the day's traffic.

Each trip leaves the depot near its scheduled time and drives its shape: the road, not a
straight line between stops. Each segment between two stops takes its scheduled time,
stretched by the hour's congestion (the morning and evening rush) and by a random factor of
its own (log-normal, `traffic_sd`), which the timetable knows nothing about. At each stop the
truck dwells for its bins. It reports its position every MOVING_REPORT_S while driving and
STOPPED_REPORT_S while still, with GPS noise, and each lift. What really happened, the
arrival at every stop, is the ground truth that benchmarks score predictions against; the
tracker never sees it.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pyproj import Transformer

from linli.cloud.waste.gtfs import Feed, Trip, service_zero
from linli.cloud.waste.stops import stop_distances

MOVING_REPORT_S = 10
STOPPED_REPORT_S = 30
GPS_NOISE_M = 7.0
TO_WGS84 = Transformer.from_crs("EPSG:32651", "EPSG:4326", always_xy=True)
# How much slower than the timetable's free flow traffic is, by local hour.
RUSH = {7: 1.35, 8: 1.45, 9: 1.15, 17: 1.3, 18: 1.45, 19: 1.15}


def congestion(hour: int) -> float:
    return RUSH.get(hour, 1.0)


@dataclass(frozen=True)
class Arrival:
    """Ground truth: when a truck really reached a stop of a trip (epoch seconds)."""

    trip_id: str
    index: int
    stop_id: str
    scheduled_s: float
    actual_s: float


@dataclass
class TripRun:
    """One trip driven once: the messages the truck sent and the arrivals it made."""

    messages: list[tuple[str, dict[str, Any]]]
    arrivals: list[Arrival]


def drive_trip(
    feed: Feed,
    trip: Trip,
    date: dt.date,
    rng: random.Random,
    *,
    traffic_sd: float = 0.2,
    parked_s: float = 1800,
) -> TripRun:
    """Drive one trip on one day, reporting from the depot `parked_s` before it leaves."""
    route = feed.routes[trip.route_id]
    line = feed.shapes[trip.shape_id].line
    places = stop_distances(feed, trip)
    zero = service_zero(date, feed.timezone)
    tz = ZoneInfo(feed.timezone)
    out: list[tuple[str, dict[str, Any]]] = []
    arrivals: list[Arrival] = []
    common = {"waste_type": route.waste_type, "route": trip.route_id}

    def report(t: float, at_m: float, speed_kmh: float, stop: str | None) -> None:
        p = line.interpolate(at_m)
        lon, lat = TO_WGS84.transform(p.x + rng.gauss(0, GPS_NOISE_M), p.y + rng.gauss(0, GPS_NOISE_M))
        body: dict[str, Any] = {
            "ts": round(t * 1000), **common, "lat": round(lat, 6), "lon": round(lon, 6),
            "speed": round(speed_kmh, 1), "heading": 0, "acc": True, "alarm_flags": 0,
            "load_kg": 0.0, "mileage_km": 0.0,
        }  # fmt: skip
        if stop is not None:
            body["stop"] = stop
        out.append(("location", body))

    stops = trip.stop_times
    t = zero + stops[0].departure_s + rng.uniform(0, 60)
    for s in range(int(parked_s), 0, -STOPPED_REPORT_S):  # parked, switched on, waiting
        report(t - s, places[0], 0.0, stops[0].stop_id)
    for k, st in enumerate(stops):
        if k > 0:
            # Drive the segment from the stop before: scheduled time, stretched by traffic.
            scheduled = max(30, st.arrival_s - stops[k - 1].departure_s)
            hour = dt.datetime.fromtimestamp(t, tz).hour
            took = scheduled * congestion(hour) * math.exp(rng.gauss(0, traffic_sd))
            a, b = places[k - 1], places[k]
            speed = (b - a) / took * 3.6 if took > 0 else 0.0
            for s in range(MOVING_REPORT_S, int(took), MOVING_REPORT_S):
                report(t + s, a + (b - a) * s / took, speed, None)
            t += took
        arrivals.append(Arrival(trip.id, k, st.stop_id, zero + st.arrival_s, t))
        if st.stop_id in feed.extras.depots:
            report(t, places[k], 0.0, st.stop_id)
            continue
        bins = max(1, feed.extras.stops[st.stop_id].bins + rng.randint(-1, 1))
        dwell = max(30.0, rng.gauss(60 + 20 * bins, 15))
        for s in range(0, int(dwell), STOPPED_REPORT_S):
            report(t + s, places[k], 0.0, st.stop_id)
        kg = round(sum(max(2.0, rng.gauss(route.kg_per_bin, route.kg_per_bin / 5)) for _ in range(bins)), 1)
        lift = {"ts": round((t + min(30.0, dwell / 2)) * 1000), **common, "stop": st.stop_id}
        out.append(("lift", {**lift, "bins": bins, "collected_kg": kg}))
        t += dwell
    return TripRun(out, arrivals)
