"""Garbage trucks that run their GTFS trips, like buses, with the day's traffic.

Each trip leaves the depot near its scheduled time, or later (`Departures`: a share of trips
minutes late, a few very late), and drives its shape: the road, not a straight line between
stops. A segment between two stops takes its scheduled time, stretched in ways the timetable
knows nothing about:

- the hour's congestion (the morning and evening rush);
- its road's own factor (log-normal, `Traffic.sd`): the planners' guess for that stretch is
  too short or too long, the same every day;
- the day's factor, shared by every road (log-normal, `Traffic.day_sd`): rain, an accident
  on the ring road;
- the trip's factor, shared by its segments (log-normal, `Traffic.run_sd`): this driver, this
  load;
- a factor of this one drive (log-normal, `Traffic.trip_sd`): a delivery van.

On the way the truck stops at signals and crawls in their queues (`Traffic.signals_per_km`),
so its speed is not constant between stops. At each stop it dwells for its bins. It reports
its position every MOVING_REPORT_S while driving and STOPPED_REPORT_S while still, with GPS
noise, and each lift; over the cellular network (`Gps`) fixes drop out for minutes (some sent
when it is back, some lost), come late behind newer ones, or twice: `TripRun.messages` is in
the order they arrive, each with its own time. Faults are injected per trip: a blocked gate
(the driver's alarm, a short wait, on to the next stop, back after the last), a stop driven
past (crawled past, looking), a stop served after the next one without telling anyone, a
breakdown halfway along a segment. What really happened, the arrival at every stop, is the
ground truth that benchmarks score predictions against; the tracker never sees it.

Every behaviour the timetable's kind world did not have is off by default here (the service's
tests and the demo keep their world); `benchmarks/waste_eta.py` turns them on by default.
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

from linli.transit.gtfs import Feed, Trip, service_zero
from linli.transit.stops import stop_distances

MOVING_REPORT_S = 10
STOPPED_REPORT_S = 30
GPS_NOISE_M = 7.0
BLOCKED_WAIT_S = 120  # at a blocked gate before the driver goes on
RETURN_MS = 5.0  # back along the road to a blocked gate, m/s
TO_WGS84 = Transformer.from_crs("EPSG:32651", "EPSG:4326", always_xy=True)
# How much slower than the timetable's free flow traffic is, by local hour.
RUSH = {7: 1.35, 8: 1.45, 9: 1.15, 17: 1.3, 18: 1.45, 19: 1.15}

CRAWL_MS = 1.1  # in a queue, or crawling past a bin room: 4 km/h
MAX_MS = 50 / 3.6  # between signals, no faster than this
SIGNAL_CLEAR_M = 80.0  # no signal this near a stop: standing at one is not an arrival

Message = tuple[str, dict[str, Any]]


@dataclass(frozen=True, order=True)
class Signal:
    """A stop on the road that is not a stop of the trip: a red light, its queue crawled first."""

    at_m: float
    wait_s: float
    queue_m: float


def congestion(hour: int) -> float:
    return RUSH.get(hour, 1.0)


@dataclass(frozen=True)
class Traffic:
    """How the roads really run against the timetable, the same for the same seed."""

    seed: int = 1
    sd: float = 0.3  # each road segment's own factor, fixed for the run
    trip_sd: float = 0.1  # each drive of a segment
    rush: bool = True  # slower in the rush hours (RUSH); off, every hour runs at free flow
    day_sd: float = 0.0  # the day's factor, shared by every road that day
    run_sd: float = 0.0  # a trip's factor, shared by its segments
    signals_per_km: float = 0.0  # signals on the road; the truck stops at half of them

    def road(self, route_id: str, index: int) -> float:
        """The factor of the segment into stop `index` of the route's road."""
        if self.sd <= 0:
            return 1.0
        return math.exp(random.Random(f"{self.seed}:{route_id}:{index}").gauss(0, self.sd))

    def day(self, date: dt.date) -> float:
        """The factor of every road on one day."""
        if self.day_sd <= 0:
            return 1.0
        return math.exp(random.Random(f"{self.seed}:day:{date}").gauss(0, self.day_sd))


@dataclass(frozen=True)
class Departures:
    """How late trucks leave the depot: `late_share` of trips minutes late (exponential, mean
    `late_min`), `very_late_share` 15 to 30 minutes late; the others within a minute."""

    late_share: float = 0.0
    late_min: float = 4.0
    very_late_share: float = 0.0

    def delay_s(self, rng: random.Random) -> float:
        draw = rng.random()
        if draw < self.very_late_share:
            return rng.uniform(15 * 60, 30 * 60)
        if draw < self.very_late_share + self.late_share:
            return 60 + rng.expovariate(1 / (self.late_min * 60))
        return rng.uniform(0, 60)


@dataclass(frozen=True)
class Gps:
    """The cellular link of a truck's fixes (lifts and alarms are sent until acknowledged)."""

    dropouts_per_h: float = 0.0  # out of reach for 2 to 6 minutes
    lost_share: float = 0.5  # of the fixes of a dropout never sent; the rest sent when back
    late_share: float = 0.0  # fixes 5 to 40 s late, behind newer ones
    repeat_share: float = 0.0  # fixes sent twice

    def deliver(self, messages: list[Message], rng: random.Random) -> tuple[list[Message], list[int]]:
        """The messages in the order they arrive, and when each arrives (ms)."""
        out: list[tuple[int, int, Message]] = []
        if not messages:
            return [], []
        start, end = messages[0][1]["ts"], messages[-1][1]["ts"]
        gaps: list[tuple[int, int]] = []
        for _ in range(_poisson(rng, self.dropouts_per_h * (end - start) / 3_600_000)):
            at = rng.randint(start, end)
            gaps.append((at, at + round(rng.uniform(120, 360) * 1000)))
        for n, (kind, body) in enumerate(messages):
            ts = body["ts"]
            arrive = ts
            if kind == "location":
                gap = next((g for g in gaps if g[0] <= ts < g[1]), None)
                if gap is not None:
                    if rng.random() < self.lost_share:
                        continue
                    arrive = gap[1]
                elif rng.random() < self.late_share:
                    arrive = ts + round(rng.uniform(5, 40) * 1000)
                if rng.random() < self.repeat_share:
                    out.append((arrive + round(rng.uniform(1, 20) * 1000), n, (kind, body)))
            out.append((arrive, n, (kind, body)))
        out.sort(key=lambda m: (m[0], m[1]))
        return [m for _, _, m in out], [a for a, _, _ in out]


@dataclass(frozen=True)
class TripFaults:
    """What goes wrong on one drive of a trip, by stop index."""

    blocked: frozenset[int] = frozenset()  # the gate is blocked at the first visit
    skipped: frozenset[int] = frozenset()  # driven past without stopping
    breakdown_before: int | None = None  # breaks down halfway to this stop, for good
    reordered: frozenset[int] = frozenset()  # driven past, served after the next stop


class Outcome(StrEnum):
    SERVED = "served"
    BLOCKED = "blocked"  # found blocked, served on the way back
    SKIPPED = "skipped"  # driven past
    REORDERED = "reordered"  # driven past, served after the next stop
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
    """One trip driven once: the messages the truck sent, in the order they arrive (`delivered_ms`,
    when each does), and what happened at each stop."""

    messages: list[Message]
    arrivals: list[Arrival]
    end_s: float = 0.0
    broken: bool = False
    delivered_ms: list[int] = field(default_factory=list)
    left_s: float = 0.0  # when it left the depot


@dataclass
class _Drive:
    """The truck on its road while one trip is driven."""

    line: LineString
    rng: random.Random  # the GPS noise, apart from the drive's luck: more fixes, the same drive
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

    def drive(self, to_m: float, seconds: float, signals: list[Signal] | None = None) -> None:
        """Along the road to `to_m` (back if behind) in `seconds`, reporting on the way; at the
        `signals` ahead it crawls in the queue and stands, in time taken from the moving."""
        end = self.t + seconds
        ahead = sorted(sg for sg in signals or [] if self.at_m <= sg.at_m - sg.queue_m and sg.at_m <= to_m)
        held = sum(sg.wait_s + sg.queue_m / CRAWL_MS for sg in ahead)
        moving_m = to_m - self.at_m - sum(sg.queue_m for sg in ahead)
        if ahead and seconds - held > moving_m / MAX_MS:
            speed = moving_m / (seconds - held)
            for sg in ahead:
                self._move(sg.at_m - sg.queue_m, (sg.at_m - sg.queue_m - self.at_m) / speed)
                self._move(sg.at_m, sg.queue_m / CRAWL_MS)
                self.wait(sg.wait_s, None)
        self._move(to_m, max(0.0, end - self.t))

    def _move(self, to_m: float, seconds: float) -> None:
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


def drive_trip(  # noqa: PLR0915 (one drive, told in order)
    feed: Feed,
    trip: Trip,
    date: dt.date,
    rng: random.Random,
    *,
    traffic: Traffic | None = None,
    faults: TripFaults | None = None,
    parked_s: float = 1800,
    departures: Departures | None = None,
    gps: Gps | None = None,
) -> TripRun:
    """Drive one trip on one day, reporting from the depot `parked_s` before it is due to leave."""
    traffic = traffic or Traffic(sd=0.0, trip_sd=0.2)
    faults = faults or TripFaults()
    departures = departures or Departures()
    route = feed.routes[trip.route_id]
    places = stop_distances(feed, trip)
    zero = service_zero(date, feed.timezone)
    stops = trip.stop_times
    depots = set(feed.extras.depots)
    truck = _Drive(
        feed.shapes[trip.shape_id].line,
        random.Random(rng.random()),
        {"waste_type": route.waste_type, "route": trip.route_id},
        zero + stops[0].departure_s - parked_s,
        ZoneInfo(feed.timezone),
        places[0],
    )
    truck.wait(parked_s + departures.delay_s(rng), stops[0].stop_id)  # parked, switched on, waiting
    left_s = truck.t
    # Drawn apart from the drive's own luck, so that turning one on leaves the others as they were.
    lights = random.Random(f"{traffic.seed}:lights:{trip.id}:{date}")
    factor = traffic.day(date)
    if traffic.run_sd > 0:
        factor *= math.exp(random.Random(f"{traffic.seed}:run:{trip.id}:{date}").gauss(0, traffic.run_sd))
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

    def done(broken: bool = False) -> TripRun:
        messages = sorted(truck.out, key=_time)
        delivered = [_time(m) for m in messages]
        if gps is not None:
            messages, delivered = gps.deliver(messages, random.Random(rng.random()))
        return TripRun(messages, arrivals, truck.t, broken, delivered, left_s)

    for k, st in enumerate(stops):
        if k > 0:
            if k == len(stops) - 1:
                for j in deferred:  # back to the blocked gates, now clear, before the depot
                    truck.drive(places[j], abs(truck.at_m - places[j]) / RETURN_MS)
                    served = truck.t
                    serve(j)
                    arrivals[j] = replace(arrivals[j], outcome=Outcome.BLOCKED, served_s=served)
            took = _segment_s(trip, k, places, truck, traffic) * factor
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
                return done(broken=True)
            truck.drive(places[k], took, _signals(trip, k, places, traffic, lights, faults=faults))
        if arrivals and arrivals[-1].outcome is Outcome.REORDERED and arrivals[-1].actual_s is None:
            # Served the stop after the one driven past, then back to that one, then on.
            arrivals.append(Arrival(trip.id, k, st.stop_id, zero + st.arrival_s, truck.t))
            serve(k)
            j = k - 1
            truck.drive(places[j], abs(truck.at_m - places[j]) / RETURN_MS)
            arrivals[j] = replace(arrivals[j], actual_s=truck.t, served_s=truck.t)
            serve(j)
            continue
        reordered = k in faults.reordered and 0 < k < len(stops) - 2 and stops[k + 1].stop_id not in depots
        if reordered and st.stop_id not in depots:
            arrivals.append(Arrival(trip.id, k, st.stop_id, zero + st.arrival_s, None, Outcome.REORDERED))
            continue
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
    return done()


def _signals(
    trip: Trip, k: int, places: list[float], traffic: Traffic, rng: random.Random, *, faults: TripFaults
) -> list[Signal]:
    """The signals on the segment into stop k that are red for this drive (the same places every
    day), and a skipped stop's geofence crawled through, the driver looking and going on."""
    out = []
    a, b = places[k - 1] + SIGNAL_CLEAR_M, places[k] - SIGNAL_CLEAR_M
    if traffic.signals_per_km > 0 and b > a:
        road = random.Random(f"{traffic.seed}:signals:{trip.route_id}:{k}")
        count = round(traffic.signals_per_km * (b - a) / 1000 + road.random() - 0.5)
        for at in sorted(road.uniform(a, b) for _ in range(max(0, count))):
            if rng.random() < 0.5:  # red
                out.append(Signal(at, rng.uniform(10, 40), min(at - a, rng.uniform(0, 40))))
    if k in faults.skipped or k - 1 in faults.skipped:
        # Through the skipped stop's geofence at a crawl, as the audit's truck did.
        at = places[k] if k in faults.skipped else places[k - 1] + 45
        out.append(Signal(at, 0.0, 45.0))
    return out


def _segment_s(trip: Trip, k: int, places: list[float], truck: _Drive, traffic: Traffic) -> float:
    """Seconds from where the truck is to stop k: the timetable's, stretched by traffic."""
    st = trip.stop_times
    scheduled = float(max(30, st[k].arrival_s - st[k - 1].departure_s))
    scheduled *= abs(places[k] - truck.at_m) / max(1.0, places[k] - places[k - 1])
    hour = dt.datetime.fromtimestamp(truck.t, truck.tz).hour
    took = scheduled * (congestion(hour) if traffic.rush else 1.0) * traffic.road(trip.route_id, k)
    return took * math.exp(truck.rng.gauss(0, traffic.trip_sd)) if traffic.trip_sd > 0 else took


def _poisson(rng: random.Random, mean: float) -> int:
    count, t = 0, rng.expovariate(1.0) if mean > 0 else math.inf
    while t < mean:
        count += 1
        t += rng.expovariate(1.0)
    return count


def _time(message: Message) -> int:
    ts: int = message[1]["ts"]
    return ts
