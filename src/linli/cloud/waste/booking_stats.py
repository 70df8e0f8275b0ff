"""Renovation bookings per compound and period: asked, collected, cancelled, expired, how long
property staff waited and whether the truck came within the window.

Read from the `waste_booking` steps the waste service writes (each one stamped with its time:
a booking counts as requested in the period it was made, as collected in the period it was
collected), and written back as `waste_booking_rollup` points, one per compound and period
(day, ISO week, calendar month in Asia/Shanghai), stamped with the period's start.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from linli.catalog.lineprotocol import format_line
from linli.cloud.waste.rollups import ZONE, Period, period_start

BOOKING_ROLLUP = "waste_booking_rollup"


@dataclass(frozen=True)
class BookingStep:
    """One step of one booking, as the service stored it."""

    time_ms: int
    state: str
    compound: str
    wait_min: float | None = None
    in_window: int | None = None
    kg: float | None = None


@dataclass(frozen=True)
class BookingFigures:
    period: Period
    start: dt.datetime
    compound: str
    requested: int
    collected: int
    cancelled: int
    expired: int
    in_window: float | None  # share of the collected
    wait_mean_min: float | None  # request to pickup
    wait_p90_min: float | None
    kg: float

    def line(self) -> str:
        fields: dict[str, str | int | float | bool] = {
            "requested": self.requested,
            "collected": self.collected,
            "cancelled": self.cancelled,
            "expired": self.expired,
            "kg": round(self.kg, 1),
        }
        for key in ("in_window", "wait_mean_min", "wait_p90_min"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = round(value, 3)
        tags = {"period": str(self.period), "compound": self.compound}
        return format_line(BOOKING_ROLLUP, tags, fields, int(self.start.timestamp() * 1000))


def booking_figures(steps: Iterable[BookingStep], period: Period, zone: str = ZONE) -> list[BookingFigures]:
    """Each compound's figures in each period, oldest first."""
    groups: dict[tuple[dt.datetime, str], list[BookingStep]] = defaultdict(list)
    for step in steps:
        groups[(period_start(step.time_ms, period, zone), step.compound)].append(step)
    out = []
    for (start, compound), group in sorted(groups.items()):
        collected = [s for s in group if s.state == "collected"]
        waits = sorted(s.wait_min for s in collected if s.wait_min is not None)
        windows = [s.in_window for s in collected if s.in_window is not None]
        out.append(
            BookingFigures(
                period,
                start,
                compound,
                requested=sum(s.state == "requested" for s in group),
                collected=len(collected),
                cancelled=sum(s.state == "cancelled" for s in group),
                expired=sum(s.state == "expired" for s in group),
                in_window=sum(windows) / len(windows) if windows else None,
                wait_mean_min=statistics.fmean(waits) if waits else None,
                wait_p90_min=waits[int(0.9 * (len(waits) - 1))] if waits else None,
                kg=sum(s.kg or 0.0 for s in collected),
            )
        )
    return out
