"""How well the collection ran, per route and period: on time, skipped, revisited, told in time.

Read from the `waste_visit` points the service writes when a trip is over, one per bin room.
Per route and period (day, ISO week, calendar month in Asia/Shanghai, as the tonnage):

- on-time performance: the share of bin rooms reached within 10 minutes of the timetable;
- served, revisited (a blocked gate come back to), skipped and missed (a breakdown);
- the notices' accuracy: the share whose lead was 13 to 18 minutes, the median error, and
  notices left standing for a bin room the truck never served.

They are written back as `waste_performance` points, one per route and period, stamped with
the period's start; writing a period again replaces it.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from linli.catalog.lineprotocol import format_line
from linli.cloud.waste.rollups import ZONE, Period, period_start

PERFORMANCE_MEASUREMENT = "waste_performance"
OUTCOMES = ("served", "revisited", "skipped", "missed")


@dataclass(frozen=True)
class VisitRecord:
    """One bin room of one trip, as the service recorded it."""

    time_ms: int  # scheduled
    route: str
    outcome: str
    on_time: int | None
    in_window: int | None
    error_min: float | None
    noticed: int
    uncancelled: int


@dataclass(frozen=True)
class Performance:
    period: Period
    start: dt.datetime
    route: str
    stops: int
    outcomes: dict[str, int]
    on_time: float | None  # share of the bin rooms reached
    noticed: int
    in_window: float | None  # share of the notices scored
    p50_error_min: float | None
    uncancelled: int

    def line(self) -> str:
        fields: dict[str, str | int | float | bool] = {
            "stops": self.stops,
            "noticed": self.noticed,
            "uncancelled": self.uncancelled,
        }
        fields |= {o: self.outcomes.get(o, 0) for o in OUTCOMES}
        for key in ("on_time", "in_window", "p50_error_min"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = round(value, 4)
        tags = {"period": str(self.period), "route": self.route}
        return format_line(PERFORMANCE_MEASUREMENT, tags, fields, int(self.start.timestamp() * 1000))


def performance(visits: Iterable[VisitRecord], period: Period, zone: str = ZONE) -> list[Performance]:
    """Each route's figures in each period, oldest first."""
    groups: dict[tuple[dt.datetime, str], list[VisitRecord]] = defaultdict(list)
    for v in visits:
        groups[(period_start(v.time_ms, period, zone), v.route)].append(v)
    out = []
    for (start, route), vs in sorted(groups.items()):
        reached = [v.on_time for v in vs if v.on_time is not None]
        scored = [v.in_window for v in vs if v.in_window is not None]
        errors = [abs(v.error_min) for v in vs if v.error_min is not None]
        out.append(
            Performance(
                period,
                start,
                route,
                len(vs),
                {o: sum(v.outcome == o for v in vs) for o in OUTCOMES},
                sum(reached) / len(reached) if reached else None,
                sum(v.noticed for v in vs),
                sum(scored) / len(scored) if scored else None,
                statistics.median(errors) if errors else None,
                sum(v.uncancelled for v in vs),
            )
        )
    return out
