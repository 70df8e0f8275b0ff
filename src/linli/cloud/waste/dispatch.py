"""Who collects which renovation pile, and in which order: VROOM over the district's roads.

Distances are along the roads the timetable's shapes draw (metres in UTM 51N), joined where
two roads meet; a pile or a truck is taken onto the road at its nearest point. Where two
places have no road between them the straight line times DETOUR stands in, and is counted.

A plan is a rolling one, made again whenever something changes (a booking, a pickup done, a
truck emptied): each truck's round from where it is, with what room it has left, to the
transfer station. A pickup a truck is already driving to stays its next one; a booking its
driver accepted stays with that truck; everything else may move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from linli.transit.roads import Roads

SCALE = 10  # volumes to VROOM in tenths of a cubic metre
FINISH_S = 1800  # the last pickup of a shift may end this long after it
RELOADS = 1
HORIZON_S = 5400.0  # the first pass of a plan: see plan()


@dataclass(frozen=True)
class TruckNow:
    """A renovation truck as the dispatcher sees it."""

    id: str
    at: tuple[float, float]  # metres
    free_s: float  # when it can start its next pickup from `at` (after the one it is on)
    room_m3: float  # capacity left on board
    shift_end_s: float
    capacity_m3: float = 0.0  # empty; 0: as much as room_m3


@dataclass(frozen=True)
class Pickup:
    booking: str
    at: tuple[float, float]
    m3: float
    earliest_s: float
    latest_s: float
    truck: str | None = None  # accepted by this truck's driver: it stays with it


@dataclass
class Plan:
    """Each truck's pickups in order, with the arrival VROOM expects, and what fits nowhere."""

    rounds: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    unassigned: list[str] = field(default_factory=list)
    metres: float = 0.0


def plan(
    roads: Roads,
    trucks: Sequence[TruckNow],
    pickups: Sequence[Pickup],
    depot: tuple[float, float],
    now_s: float,
    *,
    speed_ms: float = 20 / 3.6,
    service_s: float = 600.0,
    service_per_m3_s: float = 120.0,
    horizon_s: float | None = HORIZON_S,
) -> Plan:
    """One round per truck from where it is to the depot, respecting room, windows and shifts.

    The rounds are planned in two passes. The first fills the next `horizon_s` with as many
    pickups as fit, the most urgent first; the second plans the rest of the day from where each
    truck will then be. One pass over the whole day puts off every pile that can wait (that
    saves kilometres) until the day's last hours have more piles than time.
    """
    live = [p for p in pickups if p.latest_s > now_s]
    out = Plan(unassigned=[p.booking for p in pickups if p.latest_s <= now_s])
    if not trucks or not live:
        out.unassigned += [p.booking for p in live]
        return out
    kw = {"speed_ms": speed_ms, "service_s": service_s, "service_per_m3_s": service_per_m3_s}
    first = _solve(roads, trucks, live, depot, now_s, horizon_s=horizon_s, **kw)
    out.rounds, out.metres = first.rounds, first.metres
    placed = {b for rounds in first.rounds.values() for b, _ in rounds}
    rest = [p for p in live if p.booking not in placed]
    if horizon_s is not None and rest:
        by_id = {p.booking: p for p in live}
        then = []
        for t in trucks:
            rounds = first.rounds.get(t.id, [])
            if not rounds:
                then.append(t)
                continue
            last = by_id[rounds[-1][0]]
            loaded = sum(by_id[b].m3 for b, _ in rounds)
            done = max(rounds[-1][1], last.earliest_s) + service_s + service_per_m3_s * last.m3
            then.append(replace(t, at=last.at, free_s=done, room_m3=t.room_m3 - loaded))
        second = _solve(roads, then, rest, depot, now_s, horizon_s=None, **kw)
        for truck, rounds in second.rounds.items():
            out.rounds.setdefault(truck, []).extend(rounds)
        out.metres += second.metres
        placed |= {b for rounds in second.rounds.values() for b, _ in rounds}
    out.unassigned += [p.booking for p in live if p.booking not in placed]
    return out


def _solve(
    roads: Roads,
    trucks: Sequence[TruckNow],
    live: Sequence[Pickup],
    depot: tuple[float, float],
    now_s: float,
    *,
    speed_ms: float,
    service_s: float,
    service_per_m3_s: float,
    horizon_s: float | None,
) -> Plan:
    # Here, not at the top: the simulator's trucks drive these Roads on an edge box, without VROOM.
    import vroom

    places = [t.at for t in trucks] + [depot] + [p.at for p in live]
    metres = roads.matrix(places)
    problem = vroom.Input()
    problem.set_durations_matrix("car", [[round(m / speed_ms) for m in row] for row in metres])
    problem.set_distances_matrix("car", [[round(m) for m in row] for row in metres])
    depot_i = len(trucks)
    for i, t in enumerate(trucks):
        start = max(0, round(t.free_s - now_s))
        # The shift bounds the pickups; the drive back and the unloading may run past it.
        end = max(start + 1, round(t.shift_end_s + FINISH_S - now_s))
        if horizon_s is not None:
            end = min(end, max(start, round(horizon_s)) + 1)
        problem.add_vehicle(
            vroom.Vehicle(
                i,
                start=i,
                # Room now, and for RELOADS more loads after unloading: VROOM plans one round,
                # the truck unloads when the next pile does not fit (the drive is not planned).
                capacity=[max(0, math.floor((t.room_m3 + RELOADS * t.capacity_m3) * SCALE))],
                skills={i + 1},
                time_window=vroom.TimeWindow(start, end),
            )
        )
    trucks_by_id = {t.id: i for i, t in enumerate(trucks)}
    for k, p in enumerate(live):
        owner = trucks_by_id.get(p.truck or "")
        problem.add_job(
            vroom.Job(
                k,
                location=depot_i + 1 + k,
                default_service=round(service_s + service_per_m3_s * p.m3),
                pickup=[math.ceil(p.m3 * SCALE)],
                skills={owner + 1} if owner is not None else set(),
                # One round cannot take every pile of the day: the ones whose window closes
                # first must not be the ones left for later.
                priority=max(1, min(100, round(100 - (p.latest_s - now_s) / 360))),
                time_windows=[
                    vroom.TimeWindow(max(0, round(p.earliest_s - now_s)), round(p.latest_s - now_s))
                ],
            )
        )
    solution = problem.solve(exploration_level=5, nb_threads=1)
    out = Plan(metres=float(solution.summary.distance))
    for row in solution.routes.itertuples():
        truck = trucks[int(row.vehicle_id)].id
        out.rounds.setdefault(truck, [])
        if row.type == "job":
            # When the pickup starts: a truck early for a window waits there until it opens.
            begins = float(row.arrival) + float(row.waiting_time)
            out.rounds[truck].append((live[int(row.id)].booking, now_s + begins))
    return out
