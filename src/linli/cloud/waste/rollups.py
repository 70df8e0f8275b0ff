"""Tonnage by day, ISO week and calendar month, in the district's time zone.

Every lift's kilograms are summed by waste type, compound (the stop), route and truck, per
period. Periods are local: a day is midnight to midnight in Asia/Shanghai, a week starts on
Monday (ISO 8601), a month is the calendar month. InfluxQL has no calendar month, so the
rollups are computed here and written back as points of their own (`waste_rollup`), one per
period and group, stamped with the period's start: writing a period again replaces it, so a
lift that arrives late is counted by recomputing the periods it falls in.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from linli.catalog.lineprotocol import format_line

ROLLUP_MEASUREMENT = "waste_rollup"
ZONE = "Asia/Shanghai"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class Lift:
    """One bin-lift cycle, as the truck reported it."""

    time_ms: int
    waste_type: str
    stop: str
    route: str
    truck: str
    bins: int
    kg: float


@dataclass(frozen=True)
class Rollup:
    period: Period
    start: dt.datetime  # local, the period's first instant
    waste_type: str
    stop: str
    route: str
    truck: str
    lifts: int
    bins: int
    kg: float

    def line(self) -> str:
        """The rollup as line protocol, stamped with its period's start (UTC ms)."""
        tags = {
            "period": str(self.period),
            "waste_type": self.waste_type,
            "stop": self.stop,
            "route": self.route,
            "truck": self.truck,
        }
        fields = {"lifts": self.lifts, "bins": self.bins, "kg": round(self.kg, 3)}
        return format_line(ROLLUP_MEASUREMENT, tags, fields, int(self.start.timestamp() * 1000))


def period_start(time_ms: int, period: Period, zone: str = ZONE) -> dt.datetime:
    """The local start of the period a moment falls in."""
    local = dt.datetime.fromtimestamp(time_ms / 1000, ZoneInfo(zone))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - dt.timedelta(days=local.weekday())  # Monday
    return day.replace(day=1)


def rollups(lifts: Iterable[Lift], period: Period, zone: str = ZONE) -> list[Rollup]:
    """The sums of every group's lifts in each period, oldest period first."""
    sums: dict[tuple[dt.datetime, str, str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for lift in lifts:
        key = (period_start(lift.time_ms, period, zone), lift.waste_type, lift.stop, lift.route, lift.truck)
        s = sums[key]
        s[0] += 1
        s[1] += lift.bins
        s[2] += lift.kg
    return [
        Rollup(period, start, waste, stop, route, truck, int(n), int(bins), kg)
        for (start, waste, stop, route, truck), (n, bins, kg) in sorted(sums.items())
    ]


def touched(lifts: Iterable[Lift], period: Period, zone: str = ZONE) -> set[dt.datetime]:
    """The periods some lifts fall in: those to recompute when they arrive late."""
    return {period_start(lift.time_ms, period, zone) for lift in lifts}
