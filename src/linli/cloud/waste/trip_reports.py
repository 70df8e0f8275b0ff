"""Where the trips followed stand, for the state, and the store's lines: the reports of the
ticks one message moves the clock over, written together after the last of them."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError

from linli.cloud.waste.faults import StateFaults
from linli.cloud.waste.outbox import Outbox, trip_line
from linli.cloud.waste.tracking import TripTracker
from linli.transit.gtfs import Feed

REPORT_S = 60.0  # a trip under way is written to the store this often (the trucks' time)

TripRows = tuple[dict[str, Any], list[dict[str, Any]]]


class TripReports:
    """The ticks' reports: `report` and `seen` add to them, `lines` takes the store's lines, and
    `write` puts them all in the state in one transaction (`WasteEngine.advance`, once the
    clock has moved)."""

    def __init__(self, feed: Feed, outbox: Outbox, faults: StateFaults) -> None:
        self.feed = feed
        self.outbox = outbox
        self.faults = faults
        self._reported: dict[str, float] = {}  # trip -> when its last waste_trip point was
        # The ticks' reports, written together (`write`): trip -> its rows, and the store's lines.
        self._trips: dict[str, TripRows] = {}
        self.lines: list[str] = []

    def report(self, key: str, tracker: TripTracker, now: float) -> None:
        """A trip under way, once a minute of the trucks' time (written at the tick's end)."""
        if now - self._reported.get(key, 0.0) < REPORT_S:
            return
        self._reported[key] = now
        self.seen(key, tracker, now)
        self.lines.append(trip_line(tracker, self.feed.routes[tracker.trip.route_id].truck, now))

    def seen(self, key: str, tracker: TripTracker, now: float, *, finished: bool = False) -> None:
        """Where a trip stands, for the state (any service answers for every trip from it),
        written with the tick's other reports (`write`)."""
        self._trips[key] = snapshot(self.feed, key, tracker, now, finished=finished)

    def write(self) -> None:
        """What the ticks found, in one transaction: where their trips stand (each as its newest
        tick left it), and the store's lines. Before the message that moved the clock is
        acknowledged, as each report was before."""
        if not (self._trips or self.lines):
            return
        trips, self._trips = list(self._trips.values()), {}
        lines, self.lines = self.lines, []
        try:
            self.outbox.put(lines, trips)
        except DBAPIError as exc:  # the lines held by the outbox; the trips written with their next report
            if not self.faults(exc, "writing the trips") and trips:
                self.outbox.put([])  # a trip the state refuses (a bug) holds up no line


def snapshot(feed: Feed, key: str, tracker: TripTracker, now: float, *, finished: bool = False) -> TripRows:
    """A trip followed here as the state keeps it: the trip's row, and its stops' rows."""
    trip, route = tracker.trip, feed.routes[tracker.trip.route_id]
    row = {
        "trip_id": trip.id,
        "day": key.split("@")[1],
        "route": trip.route_id,
        "truck": route.truck,
        "waste_type": route.waste_type,
        "next_idx": tracker.stops.next_index(),
        "progress_m": round(tracker.state.progress, 1),
        "finished": finished,
        "updated_ms": round(now * 1000),
    }
    stops = [
        {
            "idx": i,
            "stop_id": v.stop_id,
            "state": str(v.state),
            "scheduled_ms": round((tracker.zero_s + st.arrival_s) * 1000),
            "predicted_ms": None if i not in tracker.predicted else round(tracker.predicted[i] * 1000),
        }
        for i, (v, st) in enumerate(zip(tracker.stops.visits, trip.stop_times, strict=True))
    ]
    return row, stops
