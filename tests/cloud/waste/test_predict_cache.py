"""What the predictor works out once (issue 36) gives exactly what it worked out every time."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

from linli.cloud.waste.predict import History

# Whole-hour offsets with and without summer time, half- and quarter-hour ones, a half-hour shift.
ZONES = [
    "Asia/Shanghai",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Australia/Lord_Howe",
]


def test_the_local_hour_is_the_one_datetime_gives_in_every_zone() -> None:
    rng = random.Random(36)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    for zone in ZONES:
        history = History(zone)
        times = [start + rng.uniform(0, 2 * 365 * 86400) for _ in range(3000)]
        # Around each hour's end, and every summer-time change of the two years.
        times += [start + h * 3600 + d for h in range(0, 2 * 365 * 24, 97) for d in (-1e-7, -5e-4, 0.0, 1e-7)]
        tz = ZoneInfo(zone)
        changes = [
            t
            for t in range(int(start), int(start) + 2 * 365 * 86400, 1800)
            if dt.datetime.fromtimestamp(t, tz).utcoffset()
            != dt.datetime.fromtimestamp(t + 1800, tz).utcoffset()
        ]
        times += [c + d for c in changes for d in range(-3600, 5400, 599)]
        rng.shuffle(times)
        for t in times * 2:  # the second time from what the first worked out
            assert history.hour(t) == dt.datetime.fromtimestamp(t, tz).hour, (zone, t)


def test_a_segment_learned_moves_the_hours_traffic_at_once() -> None:
    """The hour's traffic and the road's factor kept between segments are worked out again once
    a segment of that hour or road is learned: the same times as a history that has just
    learned them all."""
    rng = random.Random(7)
    zero = dt.datetime(2026, 11, 23, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    learning = History()
    for n in range(300):
        left = zero + rng.uniform(6, 20) * 3600
        learning.add_segment("r", rng.randrange(5), left, left + rng.uniform(60, 600), 240.0)
        fresh = History()  # the same samples, nothing worked out yet
        fresh._segments, fresh._hours, fresh._roads = learning._segments, learning._hours, learning._roads
        index, leave = rng.randrange(5), zero + rng.uniform(6, 20) * 3600
        assert learning.segment("r", index, leave, 240.0) == fresh.segment("r", index, leave, 240.0), n
