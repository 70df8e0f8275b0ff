"""The dispatcher's commands on the trips an engine follows: skip or defer a stop, another
truck for a trip, an incident acknowledged. The API calls them between two truck messages."""

from __future__ import annotations

import logging
from typing import Any

from linli.cloud.waste.engine import WasteEngine
from linli.cloud.waste.outbox import incident_line
from linli.cloud.waste.tracking import Incident, IncidentKind

log = logging.getLogger(__name__)


def skip(engine: WasteEngine, trip_id: str, stop_id: str) -> str:
    """Take a stop off a trip under way; its keeper hears it is cancelled. See `command`."""
    return command(engine, "skip", trip_id, stop_id)


def defer(engine: WasteEngine, trip_id: str, stop_id: str) -> str:
    """Move a stop to the end of a trip under way (the dispatcher's call): its keeper hears
    it is deferred, the stops after it are predicted without it. See `command`."""
    return command(engine, "defer", trip_id, stop_id)


def replace(engine: WasteEngine, trip_id: str, truck: str) -> str:
    """Another truck takes a trip over: its messages drive the trip from now on. See `command`."""
    return command(engine, "replace", trip_id, truck)


def command(engine: WasteEngine, kind: str, trip_id: str, arg: str) -> str:
    """A dispatcher's command (`skip` or `defer` the stop `arg`, `replace` the truck by
    `arg`): "done"; "" when no such trip is under way here."""
    trip = engine.feed.trips.get(trip_id)
    tracker = engine.trip_now(trip_id)
    if trip is None or tracker is None:
        return ""
    t = round(engine.now_s * 1000) / 1000  # to the millisecond, as every clock of the state
    if kind == "replace":
        engine.route_of_truck[arg] = trip.route_id
        tracker.replaced(t)
        log.warning("waste: truck %s takes over trip %s", arg, trip_id)
        return "done"
    done = tracker.skip(arg, t) if kind == "skip" else tracker.defer(arg, t)
    if done:
        # Predicted without the stop's dwell at once, at the trip's own time (not the clock's).
        tracker.tick(max(tracker.ticked_s, tracker.last_heard_s))
        engine.claims.send_new(tracker)
    return "done" if done else ""


def acknowledge(engine: WasteEngine, number: int) -> dict[str, Any] | None:
    """The dispatcher has seen incident `number` (GET /incidents): it is closed."""
    row = engine.state.acknowledge(number, round(engine.now_s * 1000))
    if row is not None and row["newly"]:
        incident = Incident(
            IncidentKind(row["kind"]), row["trip"], row["stop"], row["time_ms"] / 1000, row["detail"]
        )
        engine.outbox.put(
            [incident_line(incident, row["route"], row["truck"], open_=False, at_s=engine.now_s)]
        )
    return row
