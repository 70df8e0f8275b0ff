"""The timetable's trips to follow at a time of the clock, worked out once a service day."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from linli.cloud.waste.config import WasteConfig
from linli.transit.gtfs import Feed, Trip, runs_on, service_zero

# A trip is given up this long after its scheduled end (a truck that never came).
OVERDUE_S = 3 * 3600


class DueTrips:
    """Which trips of `feed` are followed when: from `lookahead_min` before each leaves until
    `OVERDUE_S` after its scheduled end."""

    def __init__(self, config: WasteConfig, feed: Feed) -> None:
        self.config = config
        self.feed = feed
        self._days: dict[dt.date, list[tuple[str, Trip, float, float, float]]] = {}

    def __call__(self, now: float) -> list[tuple[str, Trip, float, float]]:
        """(key, trip, zero, when it is opened) of the trips to follow at `now`."""
        today = dt.datetime.fromtimestamp(now, ZoneInfo(self.feed.timezone)).date()
        return [
            (key, trip, zero, opens)
            for date in (today - dt.timedelta(days=1), today)
            for key, trip, zero, opens, end in self._runs(date)
            if opens <= now <= end + OVERDUE_S
        ]

    def _runs(self, date: dt.date) -> list[tuple[str, Trip, float, float, float]]:
        """(key, trip, zero, opened, scheduled end) of every trip running on `date`: worked out
        once a day, not at every tick."""
        runs = self._days.get(date)
        if runs is None:
            zero = service_zero(date, self.feed.timezone)
            lookahead_s = self.config.lookahead_min * 60
            runs = [
                (
                    f"{trip.id}@{date.isoformat()}",
                    trip,
                    zero,
                    zero + trip.stop_times[0].departure_s - lookahead_s,
                    zero + trip.stop_times[-1].arrival_s,
                )
                for trip in self.feed.trips.values()
                if runs_on(self.feed, trip, date)
            ]
            if len(self._days) > 3:  # yesterday's, today's and tomorrow's are enough
                self._days.clear()
            self._days[date] = runs
        return runs
