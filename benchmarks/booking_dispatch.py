"""Renovation pickups booked through a day, dispatched by VROOM and by the nearest free truck.

Property staff book at the district's compounds through the day (a Poisson stream from 07:00
to 16:00, --bookings in all): each pile 0.5 to 4 m³, wanted from 15 to 90 minutes after the
booking for a window of 2 to 4 hours, ending by the end of the trucks' shift (08:00-18:00).
--trucks renovation trucks of 12 m³ drive the district's roads (the timetable's shapes), take
10 minutes and 2 a cubic metre at a pile, and 15 to unload at the transfer station. Both
dispatchers plan at 20 km/h; the world's roads do not run at it: each pair of places has its
own factor (log-normal, --speed-sd), the same for both dispatchers. A driver declines an order
with chance --decline; an order no truck takes is escalated.

Two dispatchers over the same bookings:

- linli: VROOM (pyvroom) plans every truck's round again whenever a booking comes or a truck is
  free, respecting room, windows and shifts; a truck's next pickup, once it drives there, stays;
- nearest free truck, first come first served: each booking goes to the truck that can be there
  first after the pickups it already has, in the order they came, among the trucks that can
  start it within its window and finish it within their shift (as linli's planner must); a
  booking none can is not taken.

Reported per dispatcher: pickups collected, within their window, waits, km and km per pickup.

    .venv/bin/python benchmarks/booking_dispatch.py --seed 1 --bookings 40 --trucks 2 --json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linli.cloud.waste.dispatch import Pickup, TruckNow, plan
from linli.transit.gtfs import Feed, load_feed
from linli.transit.roads import Roads

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
CAPACITY_M3 = 12.0
SPEED_MS = 20 / 3.6
SHIFT = (8 * 3600, 18 * 3600)
UNLOAD_S = 900.0


def service_s(m3: float) -> float:
    return 600.0 + 120.0 * m3


@dataclass(frozen=True)
class Booking:
    id: str
    at: str  # the compound
    m3: float
    requested_s: float
    earliest_s: float
    latest_s: float


def bookings(feed: Feed, n: int, rng: random.Random) -> list[Booking]:
    rooms = sorted(s for s in feed.stops if s not in feed.extras.depots)
    out = []
    times = sorted(rng.uniform(7 * 3600, 16 * 3600) for _ in range(n))
    for i, t in enumerate(times):
        earliest = t + rng.uniform(15, 90) * 60
        latest = min(SHIFT[1], earliest + rng.uniform(2, 4) * 3600)
        out.append(
            Booking(f"b{i:03d}", rng.choice(rooms), round(rng.uniform(0.5, 4.0), 1), t, earliest, latest)
        )
    return out


@dataclass
class Truck:
    id: str
    at: str = "depot"
    free_s: float = SHIFT[0]
    load: float = 0.0
    metres: float = 0.0
    queue: list[Booking] = field(default_factory=list)  # the baseline's orders


@dataclass
class Result:
    picked: dict[str, float] = field(default_factory=dict)  # booking -> pickup start
    metres: float = 0.0
    escalated: int = 0
    dispatch_s: list[float] = field(default_factory=list)


class World:
    """Road distances between the compounds and the depot, computed once."""

    def __init__(self, feed: Feed, seed: int = 1, speed_sd: float = 0.0) -> None:
        self.feed = feed
        self.seed = seed
        self.speed_sd = speed_sd
        self.roads = Roads(feed)
        self.names = sorted(feed.stops)
        m = self.roads.matrix([feed.stops[n].xy for n in self.names])
        self.dist = {(a, b): m[i][j] for i, a in enumerate(self.names) for j, b in enumerate(self.names)}
        self.depot = feed.extras.depots[0]

    def drive(self, truck: Truck, to: str) -> float:
        """Seconds to drive there, at the road's own speed, not the plan's."""
        metres = self.dist[(truck.at, to)]
        factor = self.slowdown(truck.at, to)
        truck.metres += metres
        truck.at = to
        return metres / SPEED_MS * factor

    def slowdown(self, a: str, b: str) -> float:
        """How much longer than at the plan's 20 km/h the road from a to b takes."""
        if self.speed_sd <= 0 or a == b:
            return 1.0
        return math.exp(random.Random(f"{self.seed}:{a}:{b}").gauss(0, self.speed_sd))


def takes(
    rng: random.Random,
    decline: float,
    booking: str,
    truck: str,
    *,
    declined: dict[str, set[str]],
    trucks: int,
    out: Result,
) -> bool:
    """Whether the driver takes the order; one every driver declined is escalated."""
    if rng.random() >= decline:
        return True
    declined.setdefault(booking, set()).add(truck)
    if len(declined[booking]) >= trucks:
        out.escalated += 1
        declined[booking] = set()
    return False


def unload(world: World, truck: Truck, t: float) -> None:
    """To the transfer station and empty."""
    truck.free_s = max(t, truck.free_s) + world.drive(truck, world.depot) + UNLOAD_S
    truck.load = 0.0


def run_linli(world: World, books: list[Booking], trucks: int, rng: random.Random, decline: float) -> Result:
    out = Result()
    fleet = [Truck(f"truck-renovation-{i + 1}") for i in range(trucks)]
    pending: dict[str, Booking] = {}
    declined: dict[str, set[str]] = {}
    accepted: dict[str, str] = {}
    stream = list(books)
    t = SHIFT[0] - 3600.0
    while t < SHIFT[1] + 3 * 3600:
        arrived = [b for b in stream if b.requested_s <= t]
        stream = [b for b in stream if b.requested_s > t]
        for b in arrived:
            pending[b.id] = b
        free = [tr for tr in fleet if tr.free_s <= t]
        if (arrived or free) and pending:
            started = time.perf_counter()
            now = [
                TruckNow(
                    tr.id,
                    world.feed.stops[tr.at].xy,
                    max(t, tr.free_s),
                    CAPACITY_M3 - tr.load,
                    SHIFT[1],
                    CAPACITY_M3,
                )
                for tr in fleet
            ]
            pickups = [
                Pickup(b.id, world.feed.stops[b.at].xy, b.m3, b.earliest_s, b.latest_s, accepted.get(b.id))
                for b in pending.values()
            ]
            found = plan(world.roads, now, pickups, world.feed.stops[world.depot].xy, t, speed_ms=SPEED_MS)
            if arrived:
                out.dispatch_s.append(time.perf_counter() - started)
            for tr in free:
                rnd = found.rounds.get(tr.id, [])
                if rnd:
                    b = pending[rnd[0][0]]
                    if b.id not in accepted and not takes(
                        rng, decline, b.id, tr.id, declined=declined, trucks=len(fleet), out=out
                    ):
                        continue
                    accepted[b.id] = tr.id
                    del pending[b.id]
                    if tr.load + b.m3 > CAPACITY_M3:  # full: unload first
                        unload(world, tr, t)
                    start = max(max(t, tr.free_s) + world.drive(tr, b.at), b.earliest_s)
                    out.picked[b.id] = start
                    tr.load += b.m3
                    tr.free_s = start + service_s(b.m3)
                elif tr.load > 0:
                    unload(world, tr, t)
        t += 30.0
    for tr in fleet:
        world.drive(tr, world.depot)  # back to the transfer station, as the baseline's
    out.metres = sum(tr.metres for tr in fleet)
    return out


def run_nearest(
    world: World, books: list[Booking], trucks: int, rng: random.Random, decline: float
) -> Result:
    out = Result()
    fleet = [Truck(f"truck-renovation-{i + 1}") for i in range(trucks)]
    # When each truck is done with what it has, and where: to pick the nearest free one.
    ends: dict[str, tuple[float, str, float]] = {tr.id: (float(SHIFT[0]), "depot", 0.0) for tr in fleet}
    for b in books:
        started = time.perf_counter()
        # Planned at 20 km/h, as linli's planner plans: where each truck could start it.
        starts = {tr.id: planned_start(world, ends[tr.id], b) for tr in fleet}
        able = [
            tr
            for tr in fleet
            if starts[tr.id][0] <= b.latest_s and starts[tr.id][0] + service_s(b.m3) <= SHIFT[1]
        ]
        order = sorted(able, key=lambda tr: starts[tr.id][0])
        chosen = None
        for tr in order:
            if rng.random() < decline:
                continue
            chosen = tr
            break
        if chosen is None and order:
            out.escalated += 1
            chosen = order[0]
        out.dispatch_s.append(time.perf_counter() - started)
        if chosen is None:  # no truck can within its window and shift: not taken
            continue
        t, load = starts[chosen.id]
        ends[chosen.id] = (t + service_s(b.m3), b.at, load + b.m3)
        chosen.queue.append(b)
    for tr in fleet:  # drive them
        t = SHIFT[0]
        for b in tr.queue:
            t = max(t, b.requested_s)
            if tr.load + b.m3 > CAPACITY_M3:
                t += world.drive(tr, world.depot) + UNLOAD_S
                tr.load = 0.0
            t = max(t + world.drive(tr, b.at), b.earliest_s)
            out.picked[b.id] = t
            tr.load += b.m3
            t += service_s(b.m3)
        world.drive(tr, world.depot)
    out.metres = sum(tr.metres for tr in fleet)
    return out


def planned_start(world: World, end: tuple[float, str, float], b: Booking) -> tuple[float, float]:
    """When a truck done at `end` (time, place, load) would start booking b, at the plan's
    speed, and its load then (emptied first if b does not fit)."""
    t, at, load = end
    t = max(t, b.requested_s)
    if load + b.m3 > CAPACITY_M3:
        t += world.dist[(at, world.depot)] / SPEED_MS + UNLOAD_S
        at, load = world.depot, 0.0
    return max(t + world.dist[(at, b.at)] / SPEED_MS, b.earliest_s), load


def score(res: Result, books: list[Booking]) -> dict[str, Any]:
    by_id = {b.id: b for b in books}
    within = sum(1 for bid, t in res.picked.items() if by_id[bid].earliest_s <= t <= by_id[bid].latest_s)
    waits = sorted((t - by_id[bid].requested_s) / 60 for bid, t in res.picked.items())
    dispatch = sorted(res.dispatch_s)
    return {
        "collected": len(res.picked),
        "within_window": round(within / len(books), 3),
        "wait_mean_min": round(statistics.fmean(waits), 1) if waits else None,
        "wait_p90_min": round(waits[int(0.9 * (len(waits) - 1))], 1) if waits else None,
        "km": round(res.metres / 1000, 1),
        "km_per_pickup": round(res.metres / 1000 / len(res.picked), 2) if res.picked else None,
        "escalated": res.escalated,
        "dispatch_p50_ms": round(statistics.median(dispatch) * 1000, 1) if dispatch else None,
        "dispatch_max_ms": round(max(dispatch) * 1000, 1) if dispatch else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bookings", type=int, default=40, help="bookings in the day (default 40)")
    parser.add_argument("--trucks", type=int, default=2, help="renovation trucks (default 2)")
    parser.add_argument(
        "--decline", type=float, default=0.05, help="chance a driver declines an order (0.05)"
    )
    parser.add_argument(
        "--speed-sd", type=float, default=0.25, help="each road's factor around the plan's 20 km/h (0.25)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line")
    args = parser.parse_args()
    if args.bookings < 1 or args.trucks < 1 or not 0 <= args.decline < 1:
        parser.error("--bookings and --trucks must be at least 1, --decline in [0, 1)")
    feed = load_feed(FEED)
    world = World(feed, args.seed, args.speed_sd)
    books = bookings(feed, args.bookings, random.Random(args.seed))
    linli = score(run_linli(world, books, args.trucks, random.Random(args.seed + 1), args.decline), books)
    world2 = World(feed, args.seed, args.speed_sd)
    nearest = score(
        run_nearest(world2, books, args.trucks, random.Random(args.seed + 1), args.decline), books
    )
    result = {
        "seed": args.seed, "bookings": args.bookings, "trucks": args.trucks,
        "linli": linli, "nearest_free": nearest,
        "km_saved": round(1 - linli["km"] / nearest["km"], 3) if nearest["km"] else None,
        "km_per_pickup_saved": (
            round(1 - linli["km_per_pickup"] / nearest["km_per_pickup"], 3)
            if linli["km_per_pickup"] and nearest["km_per_pickup"]
            else None
        ),
        "road_fallbacks": world.roads.fallbacks,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.bookings} bookings, {args.trucks} trucks, seed {args.seed}")
    for name in ("linli", "nearest_free"):
        print(f"  {name:<13} {result[name]}")
    print(f"  km saved: {result['km_saved']:.1%}", file=sys.stdout)


if __name__ == "__main__":
    main()
