"""Map matching: where along its trip's road a truck is, in metres, from noisy GPS.

A truck's progress is its distance along the trip's shape. Each fix is projected onto the
part of the shape the truck can have reached since the last fix (a window from a little
behind its last progress to as far as it could have driven at `max_speed`), never onto the
whole shape: a route that passes the same road twice, out and back, is then matched to
the pass the truck is on, not to the first one. A fix too far from that part of the road is
off the route (the depot yard, a detour, a bad fix) and leaves the progress where it was; a
fix older than the last, or one that would need an impossible speed, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shapely.geometry import LineString, Point
from shapely.ops import substring

from linli.cloud.waste.gtfs import metres


class Fix(StrEnum):
    """What one GPS fix did to the truck's progress."""

    MATCHED = "matched"
    OFF_ROUTE = "off_route"  # too far from the road it can have reached
    STALE = "stale"  # not newer than the last fix
    FIRST_OFF = "first_off"  # the first fix, and not on the route's start


@dataclass
class Matcher:
    """One truck on one trip's shape."""

    line: LineString  # the shape in metres
    max_speed: float = 60 / 3.6  # m/s: faster than any garbage truck in town
    back_slack: float = 30.0  # m: GPS noise may put the truck a little behind where it was
    ahead_slack: float = 50.0  # m: noise ahead, on top of what it can have driven
    off_route: float = 60.0  # m from the road: not on it
    start_window: float = 300.0  # m: where along the shape a trip's first fix may match
    tie: float = 15.0  # m: two candidates this close to the fix are as good as each other
    progress: float | None = None  # m along the shape; None before the first matched fix
    matched_s: float | None = None  # time of the fix that set the progress
    last_s: float | None = None  # time of the newest fix taken, matched or not
    distance_off: float = 0.0  # of the last fix, m from the road
    speed: float = 0.0  # m/s along the shape, smoothed

    def update(self, lat: float, lon: float, time_s: float) -> Fix:
        """Take one fix; the progress moves only on MATCHED."""
        if self.last_s is not None and time_s <= self.last_s:
            return Fix.STALE
        point = Point(metres(lat, lon))
        if self.progress is None or self.matched_s is None:
            lo, hi = 0.0, min(self.line.length, self.start_window)
        else:
            # Reach grows with the time since the last match, so a detour does not strand it.
            dt = time_s - self.matched_s
            lo = max(0.0, self.progress - self.back_slack)
            hi = min(self.line.length, self.progress + self.max_speed * dt + self.ahead_slack)
        at, off = self._nearest(point, lo, hi)
        # Where the road doubles back on itself both passes are about as near to the fix: of
        # the candidates no more than `tie` further from it, take the one nearest to where
        # the truck should be by now at its recent speed.
        candidates = self._as_near(point, at, off, lo, hi)
        if self.progress is not None and self.matched_s is not None:
            expected = self.progress + self.speed * (time_s - self.matched_s)
            at = min(candidates, key=lambda c: abs(c - expected))
        self.distance_off = off
        self.last_s = time_s
        if off > self.off_route:
            return Fix.FIRST_OFF if self.progress is None else Fix.OFF_ROUTE
        # Noise behind the truck does not move it back: a truck on a trip only goes forward.
        if self.progress is not None and self.matched_s is not None:
            moved = max(0.0, at - self.progress) / (time_s - self.matched_s)
            self.speed = 0.5 * self.speed + 0.5 * min(moved, self.max_speed)
        self.progress = at if self.progress is None else max(self.progress, at)
        self.matched_s = time_s
        return Fix.MATCHED

    def _as_near(self, point: Point, at: float, off: float, lo: float, hi: float) -> list[float]:
        """`at`, and the places before and after it in [lo, hi] within `tie` of as near."""
        found = [at]
        for before in (True, False):
            edge = at
            for _ in range(3):
                a, b = (lo, edge - 2 * self.tie) if before else (edge + 2 * self.tie, hi)
                if b <= a:
                    break
                edge, other_off = self._nearest(point, a, b)
                if other_off > off + self.tie:
                    break
                found.append(edge)
        return found

    def _nearest(self, point: Point, lo: float, hi: float) -> tuple[float, float]:
        """(distance along the shape, distance from the road) of the nearest point in [lo, hi]."""
        window = substring(self.line, lo, hi)
        if window.is_empty or window.length == 0:
            return lo, point.distance(self.line.interpolate(lo))
        return lo + window.project(point), window.distance(point)
