"""A garbage truck that runs its route's GTFS trips, like a bus.

The timetable is data (`linli waste check` validates it): the truck drives every trip of
the route whose `truck` it is, on the days the calendar runs it, with the scenario's traffic
(`linli.sim.timetable`). Between trips it is parked at the depot, ignition off, and reports
every `between_trips_s`. A truck with no route in the timetable (a spare, or the renovation
truck) stays parked. It reports its position every 10 s while moving and every 30 s while
stopped on a trip, each bin lift, and the driver's alarm button.

A truck on call for renovation waste (the timetable's `[renovation]` trucks) takes orders from
the platform on its `order` topic: its driver accepts most (ACCEPT) on `order_reply`, drives to
each pile on the roads at town speed (leaving so as to arrive when the requester's window
opens, never before), lifts it, and goes back to the depot when it has nothing more to do.

Faults: `blocked` finds the third bin room of each trip blocked (the alarm, on to the next,
back after the last); `breakdown` breaks down halfway to the third bin room of its first
trip, and never moves again.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import queue
import random
from typing import Any
from zoneinfo import ZoneInfo

import networkx as nx
from shapely import LineString

from linli.catalog.profile import Profile, get_profile
from linli.sim.context import DeviceContext
from linli.sim.timetable import (
    GPS_NOISE_M,
    MOVING_REPORT_S,
    STOPPED_REPORT_S,
    TO_WGS84,
    Traffic,
    TripFaults,
    TripRun,
    drive_trip,
)
from linli.transit.gtfs import Feed, Trip, metres, runs_on, service_zero
from linli.transit.roads import Roads

Message = tuple[str, dict[str, Any]]
FAULTS = frozenset({"blocked", "breakdown"})
ACCEPT = 0.9  # a driver takes this share of orders
ON_CALL_KMH = 20.0
KG_PER_M3 = 250.0  # renovation rubble, loose [assumed]
# The third bin room (index 0 is the depot).
FAULT_STOP = 3
# A trip may end this much after its timetable says.
LATE_S = 3 * 3600
# A fault struck while the truck runs hits a bin room at least this far ahead (simulated s).
AHEAD_S = 60.0


class Truck:
    """One truck on its timetable; `advance_to` returns the messages it published on the way."""

    def __init__(
        self,
        *,
        seed: str,
        start: float,
        feed: Feed,
        truck: str,
        traffic: Traffic,
        faults: frozenset[str] = frozenset(),
        between_trips_s: float = STOPPED_REPORT_S,
    ) -> None:
        self.profile: Profile = get_profile("truck")
        self.seed = seed
        self.feed = feed
        self.traffic = traffic
        self.faults = faults
        self.between_trips_s = between_trips_s
        self.routes = sorted(rid for rid, r in feed.routes.items() if r.truck == truck)
        self.tz = ZoneInfo(feed.timezone)
        depot = feed.stops[feed.extras.depots[0]] if feed.extras.depots else None
        self.depot = (depot.lat, depot.lon) if depot else (0.0, 0.0)
        self.depot_id = depot.id if depot else None
        self.t = self.start = start
        # The day before too: its trips may run past midnight.
        self.planned_until: dt.date = self._date(start) - dt.timedelta(days=2)
        self.queue: list[tuple[int, int, Message]] = []
        self.broken = False
        self.busy: list[tuple[float, float]] = []  # (first, last message) of each trip
        self.planned: list[tuple[Trip, dt.date, int]] = []  # each trip driven, its index in busy
        self.pending: set[str] = set()  # struck with no trip ahead: the next day's first trip
        self._n = 0
        on_call = feed.extras.renovation
        self.on_call = on_call is not None and any(t.id == truck for t in on_call.trucks)
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.rng = random.Random(f"{seed}:on-call")
        self.jobs: list[dict[str, Any]] = []
        self.free_s = start
        self.at_xy = feed.stops[self.depot_id].xy if self.depot_id else (0.0, 0.0)
        self._roads: Roads | None = None

    def on_order(self, order: dict[str, Any]) -> None:
        """An order from the platform (on the MQTT client's thread): answered at the next step."""
        self.inbox.put(order)

    def advance_to(self, t: float) -> list[Message]:
        """Every message with a time in (the last call's t, t]."""
        while self.planned_until < self._date(t):
            self.planned_until += dt.timedelta(days=1)
            self._plan(self.planned_until)
        if self.on_call:
            self._take_orders(self.t)  # heard since the last step: answered just after it
        out: list[Message] = []
        while self.queue and self.queue[0][0] <= t * 1000:
            ts, _, message = heapq.heappop(self.queue)
            parked = message[0] == "location" and message[1].get("acc") is False
            if parked and (self._away() or any(a * 1000 <= ts <= b * 1000 for a, b in self.busy)):
                continue  # on a job, not parked
            if ts > self.t * 1000:
                out.append(message)
        self.t = max(self.t, t)
        return out

    def _away(self) -> bool:
        """Out on a renovation job, or on the way back from one."""
        return (
            self.on_call
            and self.depot_id is not None
            and math.dist(self.at_xy, self.feed.stops[self.depot_id].xy) > 60
        )

    def _take_orders(self, t: float) -> None:
        """Answer new orders; when free, drive to the next pile, or home when there is none."""
        while not self.inbox.empty():
            order = self.inbox.get_nowait()
            if order.get("cancelled"):
                self.jobs = [j for j in self.jobs if j["booking"] != order.get("booking")]
                continue
            accept = self.rng.random() < ACCEPT
            self._push(
                ("order_reply", {"ts": round((t + 5) * 1000), "booking": order["booking"], "accept": accept})
            )
            if accept:
                self.jobs.append(order)
        if self.free_s > t:
            return
        if self.jobs:
            job = self.jobs.pop(0)
            self._drive_to(metres(job["lat"], job["lon"]), t + 10, job)
        elif self.depot_id and math.dist(self.at_xy, self.feed.stops[self.depot_id].xy) > 60:
            self._drive_to(self.feed.stops[self.depot_id].xy, t + 10, None)

    def _drive_to(self, to: tuple[float, float], t: float, job: dict[str, Any] | None) -> None:
        """Along the roads to a pile (lifting it) or to the depot, reporting on the way."""
        if self._roads is None:
            self._roads = Roads(self.feed)
        roads = self._roads
        path = nx.shortest_path(roads.graph, roads.nearest(self.at_xy), roads.nearest(to), weight="m")
        line = LineString([self.at_xy, *(roads.points[n] for n in path), to])
        speed = ON_CALL_KMH / 3.6
        if job is not None and job.get("earliest_ms"):
            # The driver leaves so as to be there when the requester's window opens, not before.
            t = max(t, float(job["earliest_ms"]) / 1000 - line.length / speed)
        start = t
        body = {"waste_type": "renovation", "route": "on-call"}
        for s in range(0, int(line.length / speed), MOVING_REPORT_S):
            p = line.interpolate(s * speed)
            self._push(("location", self._position(t + s, p.x, p.y, ON_CALL_KMH, body)))
        t += line.length / speed
        self.at_xy = to
        if job is not None:
            dwell = 600 + 120 * float(job.get("volume_m3") or 1.0)
            for s in range(0, int(dwell), STOPPED_REPORT_S):
                self._push(
                    (
                        "location",
                        self._position(t + s, to[0], to[1], 0.0, {**body, "stop": job.get("compound", "")}),
                    )
                )
            kg = round(float(job.get("volume_m3") or 1.0) * KG_PER_M3 * self.rng.uniform(0.8, 1.2), 1)
            lift = {
                "ts": round((t + 60) * 1000),
                **body,
                "stop": job.get("compound", ""),
                "bins": 1,
                "collected_kg": kg,
            }
            self._push(("lift", lift))
            t += dwell
        # Home from a job: away from the depot since the job ended, so not parked there meanwhile.
        self.busy.append((min(start, self.free_s) if job is None else start, t))
        self.free_s = t

    def _position(self, t: float, x: float, y: float, kmh: float, extra: dict[str, Any]) -> dict[str, Any]:
        lon, lat = TO_WGS84.transform(x + self.rng.gauss(0, GPS_NOISE_M), y + self.rng.gauss(0, GPS_NOISE_M))
        return {
            "ts": round(t * 1000), "lat": round(lat, 6), "lon": round(lon, 6), "speed": kmh, "heading": 0,
            "acc": True, "alarm_flags": 0, "load_kg": 0.0, "mileage_km": 0.0, **extra,
        }  # fmt: skip

    def _date(self, t: float) -> dt.date:
        return dt.datetime.fromtimestamp(t, self.tz).date()

    def _plan(self, date: dt.date) -> None:
        """The day's trips, and parked reports between them."""
        trips = sorted(
            (
                tr
                for tr in self.feed.trips.values()
                if tr.route_id in self.routes and runs_on(self.feed, tr, date)
            ),
            key=lambda tr: tr.stop_times[0].departure_s,
        )
        day0 = service_zero(date, self.feed.timezone)
        for trip in trips:
            if self.broken:
                break
            if day0 + trip.stop_times[-1].arrival_s + LATE_S < self.start:
                continue  # over before the simulation starts: its faults must not carry over
            names = self.faults | self.pending
            self.pending = set()
            faults = TripFaults(
                blocked=frozenset({FAULT_STOP}) if "blocked" in names else frozenset(),
                breakdown_before=FAULT_STOP if "breakdown" in names else None,
            )
            run = self._drive(trip, date, faults)
            for message in run.messages:
                self._push(message)
            self.planned.append((trip, date, len(self.busy)))
            self.busy.append((run.messages[0][1]["ts"] / 1000, run.end_s))
            self.broken = run.broken
        t = day0
        while t < day0 + 86400:
            on_trip = any(a <= t <= b for a, b in self.busy)
            if not on_trip and not (self.broken and self.busy and t > self.busy[-1][1]):
                self._push(("location", self._parked(t)))
            t += self.between_trips_s

    def _drive(self, trip: Trip, date: dt.date, faults: TripFaults | None = None) -> TripRun:
        """The trip driven on `date`: the same roads and luck each time it is driven again."""
        rng = random.Random(f"{self.seed}:{trip.id}:{date.isoformat()}")
        return drive_trip(self.feed, trip, date, rng, traffic=self.traffic, faults=faults)

    def strike(self, names: frozenset[str]) -> None:
        """Faults from now on, while the district runs: `blocked`, the next bin room the truck
        comes to has its gate blocked; `breakdown`, it breaks down after the next one, for good.
        With no trip ahead, the next day's first trip has them."""
        for name in sorted(names & FAULTS):
            if not self._strike(name):
                self.pending.add(name)

    def _strike(self, name: str) -> bool:
        """Drive again the first planned trip with a bin room still ahead, with the fault there;
        what was already sent stays as it was (the same luck, so the same until that stop)."""
        now_ms = self.t * 1000
        depots = set(self.feed.extras.depots)
        for i, (trip, date, b) in enumerate(self.planned):
            first, end = self.busy[b]
            if end <= self.t or self.broken:
                continue
            last = len(trip.stop_times) - 1
            ahead = [
                a.index
                for a in self._drive(trip, date).arrivals
                if 0 < a.index < last
                and a.stop_id not in depots
                and a.actual_s is not None
                and a.actual_s > self.t + AHEAD_S
            ]
            if not ahead:
                continue
            k = ahead[0]
            # A breakdown halfway to the stop after the next: the truck has not left the next yet.
            faults = (
                TripFaults(blocked=frozenset({k}))
                if name == "blocked"
                else TripFaults(breakdown_before=k + 1)
            )
            run = self._drive(trip, date, faults)
            self.queue = [
                e
                for e in self.queue
                if e[0] <= now_ms or not (run.broken or first * 1000 <= e[0] <= end * 1000)
            ]
            heapq.heapify(self.queue)
            for message in run.messages:
                if message[1]["ts"] > now_ms:
                    self._push(message)
            self.busy[b] = (first, run.end_s)
            if run.broken:
                self.broken = True
                del self.busy[b + 1 :], self.planned[i + 1 :]
            return True
        return False

    def _push(self, message: Message) -> None:
        self._n += 1
        heapq.heappush(self.queue, (int(message[1]["ts"]), self._n, message))

    def _parked(self, t: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ts": round(t * 1000), "lat": self.depot[0], "lon": self.depot[1], "speed": 0.0,
            "heading": 0, "acc": False, "alarm_flags": 0, "load_kg": 0.0, "mileage_km": 0.0,
        }  # fmt: skip
        if self.routes:
            route = self.feed.routes[self.routes[0]]
            body |= {"waste_type": route.waste_type, "route": self.routes[0]}
        else:
            body |= {"waste_type": "renovation", "route": "on-call"}
        if self.depot_id:
            body["stop"] = self.depot_id
        return body


def make(ctx: DeviceContext) -> Truck:
    """The truck named by its device id in the scenario's timetable."""
    feed = ctx.timetable
    if not isinstance(feed, Feed):
        raise KeyError(
            f"truck {ctx.site}/{ctx.device}: the scenario has no timetable; "
            "set `timetable` in the scenario or pass --gtfs DIR"
        )
    traffic = ctx.traffic if isinstance(ctx.traffic, Traffic) else Traffic()
    return Truck(
        seed=ctx.seed, start=ctx.start, feed=feed, truck=ctx.device, traffic=traffic, faults=ctx.faults
    )
