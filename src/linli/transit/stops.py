"""Where each stop lies along its trip's road, and when a truck arrives, serves and leaves it.

A stop's place is its distance along the trip's shape, found in order: each stop is
projected onto the road after the stop before it, so a road that passes a compound twice
places it on the right pass. A truck has arrived at a bin room when it has stood still within
the stop's geofence for STAND_S, or when it lifts bins there (a lift names its stop, so it
settles doubt); either way the arrival is the first still fix. A truck crawling past in a queue
(the audit saw 3.9 km/h within 40 m) has not arrived. At a depot, where nothing is lifted, the
first still fix is the arrival. A truck has served the stop with its lifts, and left once it is
beyond the geofence. A stop the truck drives past without stopping or lifting is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from shapely.geometry import Point
from shapely.ops import substring

from linli.transit.gtfs import Feed, Trip

GEOFENCE_M = 40.0  # a truck within this of a stop, along its road, is at the stop
STILL_KMH = 2.0  # slower than this, a truck stands still (GPS speed at a standstill is ~0)
STAND_S = 45.0  # standing still this long in a bin room's geofence, without a lift, is an arrival


def stop_distances(feed: Feed, trip: Trip) -> list[float]:
    """Each stop time's distance along the trip's shape, in metres, never decreasing."""
    line = feed.shapes[trip.shape_id].line
    out: list[float] = []
    done = 0.0
    for st in trip.stop_times:
        rest = substring(line, done, line.length)
        at = done if rest.length == 0 else done + rest.project(Point(feed.stops[st.stop_id].xy))
        out.append(at)
        done = at
    return out


class Visit(StrEnum):
    """Where a stop stands on a trip under way."""

    AHEAD = "ahead"
    ARRIVED = "arrived"
    LEFT = "left"  # served and left
    SKIPPED = "skipped"  # driven past without stopping or lifting


@dataclass
class StopVisit:
    stop_id: str
    at_m: float
    state: Visit = Visit.AHEAD
    arrived_s: float | None = None
    left_s: float | None = None
    bins: int = 0
    kg: float = 0.0
    depot: bool = False  # nothing is lifted there: the first still fix is the arrival
    still_s: float | None = None  # since when the truck stands still in the geofence


@dataclass(frozen=True)
class StopEvent:
    """A change of one stop's visit, for the notices and the statistics."""

    stop_id: str
    index: int
    state: Visit
    time_s: float


@dataclass
class StopTracker:
    """The visits of one trip's stops, from the truck's progress and its lifts."""

    visits: list[StopVisit]
    geofence: float = GEOFENCE_M
    events: list[StopEvent] = field(default_factory=list)

    @classmethod
    def for_trip(cls, feed: Feed, trip: Trip, places: list[float] | None = None) -> StopTracker:
        """A trip's stops, all ahead; at `places` along its road (`stop_distances`, worked out
        here if not given)."""
        places = stop_distances(feed, trip) if places is None else places
        depots = set(feed.extras.depots)
        return cls(
            [
                StopVisit(st.stop_id, at, depot=st.stop_id in depots)
                for st, at in zip(trip.stop_times, places, strict=True)
            ]
        )

    def position(self, progress: float, speed_kmh: float, time_s: float) -> list[StopEvent]:
        """A matched position: the visits it starts, ends or passes by."""
        new: list[StopEvent] = []
        for i, v in enumerate(self.visits):
            if v.state is Visit.AHEAD:
                near = abs(progress - v.at_m) <= self.geofence
                still = near and speed_kmh < STILL_KMH
                v.still_s = (time_s if v.still_s is None else v.still_s) if still else None
                if v.still_s is not None and (v.depot or time_s - v.still_s >= STAND_S):
                    new.append(self._set(i, Visit.ARRIVED, v.still_s))
                elif progress > v.at_m + self.geofence:
                    new.append(self._set(i, Visit.SKIPPED, time_s))
            elif v.state is Visit.ARRIVED and progress > v.at_m + self.geofence:
                new.append(self._set(i, Visit.LEFT, time_s))
        self.events += new
        return new

    def lift(
        self, stop_id: str, bins: int, kg: float, time_s: float, *, again: bool = False
    ) -> list[StopEvent]:
        """Bins lifted at a stop: it is being served (a lift settles a doubtful arrival).

        The first visit of that stop not yet left is the one served; a stop first taken for
        skipped is served after all when its lift comes late; `again` reopens one left (a
        blocked stop the truck came back to). A truck already standing there arrived when it
        stopped, not when it lifted.
        """
        new: list[StopEvent] = []
        for i, v in enumerate(self.visits):
            if v.stop_id != stop_id or (v.state is Visit.LEFT and not again):
                continue
            if v.state is not Visit.ARRIVED:
                arrived = time_s if v.still_s is None else min(v.still_s, time_s)
                new.append(self._set(i, Visit.ARRIVED, arrived))
            v.bins += bins
            v.kg += kg
            break
        self.events += new
        return new

    def _set(self, index: int, state: Visit, time_s: float) -> StopEvent:
        v = self.visits[index]
        v.state = state
        v.still_s = None
        if state is Visit.ARRIVED:
            v.arrived_s = time_s
        elif state is Visit.LEFT:
            v.left_s = time_s
        return StopEvent(v.stop_id, index, state, time_s)

    def next_index(self) -> int | None:
        """The first stop not yet reached, or None when the trip is done."""
        for i, v in enumerate(self.visits):
            if v.state is Visit.AHEAD:
                return i
        return None
