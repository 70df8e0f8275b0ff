"""Map matching: where along its trip's road a truck is, in metres, from noisy GPS.

A truck's progress is its distance along the trip's shape. Each fix is projected onto the
part of the shape the truck can have reached since the last fix (a window from a little
behind its last progress to as far as it could have driven at `max_speed`), never onto the
whole shape: a route that passes the same road twice, out and back, is then matched to
the pass the truck is on, not to the first one. A fix too far from that part of the road is
off the route (the depot yard, a detour, a bad fix) and leaves the progress where it was; a
fix older than the last, or one that would need an impossible speed, is refused.

The nearest point of a window is found over the shape's segments held as NumPy arrays: every
segment of the window projected at once: 33 µs a search on the district's 329-vertex road
against 121 µs for cutting the window out as its own line (`shapely.ops.substring`) and
projecting onto it, measured side by side, with the same answer (`tests/cloud/waste/test_match.py`
compares the two). A fix makes up to seven searches (the doubled-back road's candidates).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from shapely.geometry import LineString

from linli.transit.gtfs import metres


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
    segments: Segments = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.segments = Segments(self.line)

    def update(self, lat: float, lon: float, time_s: float) -> Fix:
        """Take one fix; the progress moves only on MATCHED."""
        if self.last_s is not None and time_s <= self.last_s:
            return Fix.STALE
        x, y = metres(lat, lon)
        if self.progress is None or self.matched_s is None:
            lo, hi = 0.0, min(self.line.length, self.start_window)
        else:
            # Reach grows with the time since the last match, so a detour does not strand it.
            dt = time_s - self.matched_s
            lo = max(0.0, self.progress - self.back_slack)
            hi = min(self.line.length, self.progress + self.max_speed * dt + self.ahead_slack)
        at, off = self.segments.nearest(x, y, lo, hi)
        # Where the road doubles back on itself both passes are about as near to the fix: of
        # the candidates no more than `tie` further from it, take the one nearest to where
        # the truck should be by now at its recent speed.
        candidates = self._as_near((x, y), at, off, lo, hi)
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

    def _as_near(self, fix: tuple[float, float], at: float, off: float, lo: float, hi: float) -> list[float]:
        """`at`, and the places before and after it in [lo, hi] within `tie` of as near as `fix`."""
        x, y = fix
        found = [at]
        for before in (True, False):
            edge = at
            for _ in range(3):
                a, b = (lo, edge - 2 * self.tie) if before else (edge + 2 * self.tie, hi)
                if b <= a:
                    break
                edge, other_off = self.segments.nearest(x, y, a, b)
                if other_off > off + self.tie:
                    break
                found.append(edge)
        return found


class Segments:
    """A line's segments as arrays: starts, directions, lengths and where each starts along it.

    What a search needs of each segment that does not depend on the fix is worked out once
    here: its squared length, and how much of it a window that covers it whole spans (the
    ratio is not always exactly 1 in floating point, and must be what it was).
    """

    def __init__(self, line: LineString) -> None:
        xy = np.asarray(line.coords, dtype=float)[:, :2]
        self.start: NDArray[np.float64] = xy[:-1]
        self.step: NDArray[np.float64] = xy[1:] - xy[:-1]
        self.length: NDArray[np.float64] = np.hypot(self.step[:, 0], self.step[:, 1])
        self.along: NDArray[np.float64] = np.concatenate(([0.0], np.cumsum(self.length)))
        self.total = float(self.along[-1])
        # Contiguous columns, and the same values as plain floats for the searches' scalars.
        self._x0, self._y0 = self.start[:, 0].copy(), self.start[:, 1].copy()
        self._dx, self._dy = self.step[:, 0].copy(), self.step[:, 1].copy()
        self._along = self.along.tolist()
        self._lengths = self.length.tolist()
        positive = self.length > 0
        # A segment of no length projects every point to its start (t = 0): dividing by 1
        # gives that, where dividing by 0 gave NaN, then 0.
        self._squared = np.where(positive, self.length * self.length, 1.0)
        ends = self.along[:-1] + self.length
        with np.errstate(divide="ignore", invalid="ignore"):
            whole = np.where(positive, (ends - self.along[:-1]) / self.length, 0.0)
        self._whole: NDArray[np.float64] = whole

    def nearest(self, x: float, y: float, lo: float, hi: float) -> tuple[float, float]:
        """(distance along the line, distance from it) of the point of [lo, hi] nearest (x, y):
        the first such point, as Shapely's `project` gives it."""
        lo, hi = max(0.0, lo), min(self.total, hi)
        if hi <= lo:
            px, py = self.point_at(lo)
            return lo, float(np.hypot(px - x, py - y))
        # The segments that overlap the window. Only the first can start before it and only
        # the last end after it: those two are clipped to it, the others are whole.
        first = max(0, bisect.bisect_right(self._along, lo) - 1)
        last = min(len(self._lengths), bisect.bisect_left(self._along, hi))
        x0, y0 = self._x0[first:last], self._y0[first:last]
        dx, dy = self._dx[first:last], self._dy[first:last]
        t = ((x - x0) * dx + (y - y0) * dy) / self._squared[first:last]
        np.maximum(t, 0.0, out=t)
        begin, length = self._along[first], self._lengths[first]
        if length > 0:
            t[0] = max(t[0], (max(lo, begin) - begin) / length)
        t_hi = self._whole[first:last].copy()
        begin, length = self._along[last - 1], self._lengths[last - 1]
        t_hi[-1] = (min(hi, begin + length) - begin) / length if length > 0 else 0.0
        np.minimum(t, t_hi, out=t)
        off = np.hypot(x0 + t * dx - x, y0 + t * dy - y)
        best = int(np.argmin(off))
        return self._along[first + best] + float(t[best]) * self._lengths[first + best], float(off[best])

    def point_at(self, along: float) -> tuple[float, float]:
        """The point `along` metres from the line's start."""
        i = min(max(0, int(np.searchsorted(self.along, along, side="right")) - 1), len(self.length) - 1)
        t = 0.0 if self.length[i] == 0 else (along - self.along[i]) / self.length[i]
        return float(self.start[i, 0] + t * self.step[i, 0]), float(self.start[i, 1] + t * self.step[i, 1])
