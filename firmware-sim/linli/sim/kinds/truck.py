"""A garbage truck that runs its route's GTFS trips, like a bus.

The timetable is data (`linli waste check` validates it): the truck drives every trip of
the route whose `truck` it is, on the days the calendar runs it, with the scenario's traffic
(`linli.sim.timetable`). Between trips it is parked at the depot, ignition off, and reports
every `between_trips_s`. A truck with no route in the timetable (a spare, or the renovation
truck) stays parked. It reports its position every 10 s while moving and every 30 s while
stopped on a trip, each bin lift, and the driver's alarm button.

Faults: `blocked` finds the third bin room of each trip blocked (the alarm, on to the next,
back after the last); `breakdown` breaks down halfway to the third bin room of its first
trip, and never moves again.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from typing import Any
from zoneinfo import ZoneInfo

from linli.catalog.profile import Profile, get_profile
from linli.cloud.waste.gtfs import Feed, runs_on, service_zero
from linli.sim.context import DeviceContext
from linli.sim.timetable import STOPPED_REPORT_S, Traffic, TripFaults, drive_trip

Message = tuple[str, dict[str, Any]]
FAULTS = frozenset({"blocked", "breakdown"})
# The third bin room (index 0 is the depot).
FAULT_STOP = 3
# A trip may end this much after its timetable says.
LATE_S = 3 * 3600


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
        self._n = 0
        self.ground_truth: list[dict[str, Any]] = []

    def advance_to(self, t: float) -> list[Message]:
        """Every message with a time in (the last call's t, t]."""
        while self.planned_until < self._date(t):
            self.planned_until += dt.timedelta(days=1)
            self._plan(self.planned_until)
        out: list[Message] = []
        while self.queue and self.queue[0][0] <= t * 1000:
            ts, _, message = heapq.heappop(self.queue)
            if ts > self.t * 1000:
                out.append(message)
        self.t = max(self.t, t)
        return out

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
            rng = random.Random(f"{self.seed}:{trip.id}:{date.isoformat()}")
            faults = TripFaults(
                blocked=frozenset({FAULT_STOP}) if "blocked" in self.faults else frozenset(),
                breakdown_before=FAULT_STOP if "breakdown" in self.faults else None,
            )
            run = drive_trip(self.feed, trip, date, rng, traffic=self.traffic, faults=faults)
            for message in run.messages:
                self._push(message)
            self.busy.append((run.messages[0][1]["ts"] / 1000, run.end_s))
            self.ground_truth += [a.to_json() for a in run.arrivals]
            self.broken = run.broken
        t = day0
        while t < day0 + 86400:
            on_trip = any(a <= t <= b for a, b in self.busy)
            if not on_trip and not (self.broken and self.busy and t > self.busy[-1][1]):
                self._push(("location", self._parked(t)))
            t += self.between_trips_s

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
