"""Map matching on noisy and looping roads: progress in metres along the trip's shape."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import LineString, Point
from shapely.ops import substring

from linli.cloud.waste.match import Fix, Matcher, Segments
from linli.transit.gtfs import load_feed, metres

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"

TO_WGS84 = Transformer.from_crs("EPSG:32651", "EPSG:4326", always_xy=True)
X0, Y0 = metres(31.201, 121.392)  # the depot


def latlon(x: float, y: float) -> tuple[float, float]:
    lon, lat = TO_WGS84.transform(x, y)
    return float(lat), float(lon)


def out_and_back() -> LineString:
    """1 km east along a road, 200 m north, then back west along the same road."""
    return LineString([(X0, Y0), (X0 + 1000, Y0), (X0 + 1000, Y0 + 200), (X0 + 1000, Y0), (X0, Y0)])


def drive(
    line: LineString, speed: float, every_s: float, noise_m: float, seed: int
) -> list[tuple[float, float, float, float]]:
    """(true distance, lat, lon, time) of fixes along the line, with Gaussian GPS noise."""
    rng = random.Random(seed)
    out = []
    t, d = 0.0, 0.0
    while d <= line.length:
        p = line.interpolate(d)
        lat, lon = latlon(p.x + rng.gauss(0, noise_m), p.y + rng.gauss(0, noise_m))
        out.append((d, lat, lon, t))
        t += every_s
        d += speed * every_s
    return out


def test_progress_follows_the_truck_out_and_back_along_the_same_road() -> None:
    line = out_and_back()
    for seed in range(5):
        m = Matcher(line)
        errors = []
        for true, lat, lon, t in drive(line, speed=8.0, every_s=5.0, noise_m=8.0, seed=seed):
            assert m.update(lat, lon, t) is Fix.MATCHED
            assert m.progress is not None
            errors.append(abs(m.progress - true))
        # On the way back the road is the same as on the way out: a plain projection would
        # put the truck 1,400 m behind. The window keeps it on its own pass.
        assert max(errors) < 40, (seed, max(errors))
        assert sorted(errors)[len(errors) // 2] < 12


def test_a_teleport_a_fix_from_the_past_and_an_impossible_leap_leave_the_progress() -> None:
    line = out_and_back()
    m = Matcher(line)
    assert m.update(*latlon(X0 + 100, Y0), 10.0) is Fix.MATCHED
    assert m.progress is not None
    at = m.progress
    assert m.update(*latlon(X0 + 5000, Y0 + 5000), 15.0) is Fix.OFF_ROUTE  # 5 km away
    assert m.update(*latlon(X0 + 120, Y0), 9.0) is Fix.STALE  # older than the last
    assert m.update(*latlon(X0 + 900, Y0), 16.0) is Fix.OFF_ROUTE  # 800 m in 6 s along the road
    assert m.progress == at
    # Back on the road, a little further: matched again.
    assert m.update(*latlon(X0 + 140, Y0), 20.0) is Fix.MATCHED
    assert m.progress is not None
    assert 130 < m.progress < 150


def test_the_depot_yard_is_off_the_route_until_the_truck_drives_out() -> None:
    m = Matcher(out_and_back())
    assert m.update(*latlon(X0 - 50, Y0 - 150), 0.0) is Fix.FIRST_OFF  # parked in the yard
    assert m.progress is None
    assert m.update(*latlon(X0 + 20, Y0 + 5), 30.0) is Fix.MATCHED
    assert m.progress is not None
    assert 15 < m.progress < 25


def test_a_detour_does_not_strand_the_truck() -> None:
    m = Matcher(out_and_back())
    assert m.update(*latlon(X0 + 100, Y0), 0.0) is Fix.MATCHED
    for t in range(10, 60, 10):  # 50 s on a side street, 150 m off the road
        assert m.update(*latlon(X0 + 100 + t * 5, Y0 - 150), float(t)) is Fix.OFF_ROUTE
    assert m.update(*latlon(X0 + 450, Y0), 60.0) is Fix.MATCHED  # rejoins 350 m further on
    assert m.progress is not None
    assert 440 < m.progress < 460


@functools.cache
def road() -> tuple[LineString, Segments]:
    """A real road of the district: 300-odd vertices, passing some places twice."""
    line = load_feed(FEED).shapes["wet-north-road"].line
    return line, Segments(line)


def shapely_nearest(line: LineString, x: float, y: float, lo: float, hi: float) -> tuple[float, float]:
    """The window cut out as its own line and projected on: how it was done, slowly, before."""
    window = substring(line, lo, hi)
    point = Point(x, y)
    if window.is_empty or window.length == 0:
        return lo, point.distance(line.interpolate(lo))
    return lo + window.project(point), window.distance(point)


@settings(max_examples=300, deadline=None)
@given(
    lo=st.floats(0, 1.0),
    width=st.floats(0, 1.0),
    dx=st.floats(-300, 1300),
    dy=st.floats(-300, 500),
)
def test_the_array_search_finds_what_shapely_finds(lo: float, width: float, dx: float, dy: float) -> None:
    line, segments = road()
    a = lo * line.length
    b = min(line.length, a + width * line.length)
    x, y = X0 + dx, Y0 + dy
    along, off = segments.nearest(x, y, a, b)
    ref_along, ref_off = shapely_nearest(line, x, y, a, b)
    assert a - 1e-6 <= along <= b + 1e-6
    assert off == pytest.approx(ref_off, abs=1e-6)
    # The same place, or another of the window exactly as near (a tie either may take).
    if along != pytest.approx(ref_along, abs=1e-6):
        assert Point(x, y).distance(line.interpolate(along)) == pytest.approx(ref_off, abs=1e-6)


def array_nearest(segments: Segments, x: float, y: float, lo: float, hi: float) -> tuple[float, float]:
    """The array search as it was first written (issue 36): every segment of the window clipped
    to it, NaN for those of no length. The search now gives exactly its answers, faster."""
    lo, hi = max(0.0, lo), min(segments.total, hi)
    if hi <= lo:
        px, py = segments.point_at(lo)
        return lo, float(np.hypot(px - x, py - y))
    first = max(0, int(np.searchsorted(segments.along, lo, side="right")) - 1)
    last = min(len(segments.length), int(np.searchsorted(segments.along, hi, side="left")))
    length = segments.length[first:last]
    begins = segments.along[first:last]
    step = segments.step[first:last]
    start = segments.start[first:last]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo = np.where(length > 0, (np.maximum(lo, begins) - begins) / length, 0.0)
        t_hi = np.where(length > 0, (np.minimum(hi, begins + length) - begins) / length, 0.0)
        t = ((x - start[:, 0]) * step[:, 0] + (y - start[:, 1]) * step[:, 1]) / (length * length)
    t = np.clip(np.nan_to_num(t), t_lo, t_hi)
    off = np.hypot(start[:, 0] + t * step[:, 0] - x, start[:, 1] + t * step[:, 1] - y)
    best = int(np.argmin(off))
    return float(begins[best] + t[best] * length[best]), float(off[best])


def test_the_search_gives_exactly_the_answers_of_the_first_array_search() -> None:
    """Bit for bit, not within a tolerance: a service's progress, and so its notices, must not
    move by an optimisation. Windows at random and at the vertices themselves (where a segment
    is clipped to nothing), on the district's road and on one with a repeated vertex."""
    line, segments = road()
    rng = random.Random(36)
    cases: list[tuple[Segments, float]] = [(segments, line.length)]
    repeated = LineString([(X0, Y0), (X0 + 100, Y0), (X0 + 100, Y0), (X0 + 100, Y0 + 80), (X0, Y0 + 80)])
    cases.append((Segments(repeated), repeated.length))
    checked = 0
    for segs, length in cases:
        vertices = segs.along.tolist()
        for _ in range(3000):
            a = rng.choice(vertices) if rng.random() < 0.3 else rng.uniform(-10, length)
            b = rng.choice(vertices) if rng.random() < 0.3 else a + rng.expovariate(1 / 250)
            x, y = segs.point_at(rng.uniform(0, length))
            x, y = x + rng.gauss(0, 40), y + rng.gauss(0, 40)
            assert segs.nearest(x, y, a, b) == array_nearest(segs, x, y, a, b), (a, b, x, y)
            checked += 1
    assert checked == 6000
