"""What the waste service tells the store, for the big screen and the waste dashboard.

Three measurements, as line protocol through InfluxDB's v1 write API:

- `waste_trip`, each trip under way once a minute of the trucks' time: its truck, next stop,
  predicted time there, delay against the timetable, the share of its road driven, and bin
  rooms served against scheduled;
- `waste_visit`, each bin room of a trip once the trip is over, stamped with its scheduled
  time: served, skipped, revisited (a blocked gate come back to) or missed (a breakdown),
  its delay, whether it was on time (within ON_TIME_S), and the keeper notice's lead and
  error;
- `waste_incident`, each blocked gate and breakdown when it opens (`open` 1, `change` 1) and
  when the dispatcher acknowledges it (`open` 0, `change` -1).

Lines wait in the service's state (the outbox, `linli.cloud.waste.state`) until the store has
them: a store that is down loses nothing, and the lines go once it is back. A state that cannot
be reached (`db.unreachable`) holds them in memory until it can; a step the state refuses for a
bug (a constraint violated) is logged and counted once, never tried again for ever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import Field
from sqlalchemy.exc import DBAPIError

from linli.catalog.lineprotocol import format_line
from linli.catalog.ratelog import RateLimitedLog
from linli.catalog.strict import Strict
from linli.cloud.db import unreachable
from linli.cloud.waste.store import StoreError, write_lines
from linli.cloud.waste.tracking import Incident, NoticeKind
from linli.transit.stops import Visit

if TYPE_CHECKING:
    from linli.cloud.waste.state import Snapshot, WasteState
    from linli.cloud.waste.tracking import TripTracker

log = logging.getLogger(__name__)

ON_TIME_S = 600  # served within 10 minutes of the timetable, either way
LEAD_WINDOW_MIN = (13.0, 18.0)  # a notice's lead a keeper can plan with
BATCH = 5000


class VisitStore(Strict):
    """Where the service writes its trips, visits and incidents (InfluxDB 1.x, or 2.x's v1 API)."""

    url: str
    database: str = "linli"
    token_env: str = "LINLI_INFLUX_TOKEN"  # noqa: S105 (a variable name)
    flush_s: Annotated[float, Field(gt=0, le=300)] = 5.0


def trip_line(tracker: TripTracker, truck: str, now_s: float) -> str:
    """Where a trip stands now."""
    trip = tracker.trip
    nxt = tracker.stops.next_index()
    rooms = [i for i, st in enumerate(trip.stop_times) if tracker.bins[i]]
    served = sum(tracker.stops.visits[i].state is Visit.LEFT for i in rooms)
    line = tracker.matcher.line.length or 1.0
    fields: dict[str, str | int | float | bool] = {
        "progress": round(min(1.0, tracker.state.progress / line), 3),
        "served": served,
        "scheduled": len(rooms),
        "broken": tracker.broken,
    }
    if nxt is not None:
        fields["next_stop"] = trip.stop_times[nxt].stop_id
        predicted = tracker.predicted.get(nxt)
        if predicted is not None:
            # A truck late on its own prediction is "due now": a screen never counts down below 0.
            fields["predicted_min"] = round(max(0.0, predicted - now_s) / 60, 1)
            fields["delay_min"] = round((predicted - tracker.zero_s - trip.stop_times[nxt].arrival_s) / 60, 1)
    tags = {"route": trip.route_id, "truck": truck, "trip": trip.id}
    return format_line("waste_trip", tags, fields, round(now_s * 1000))


def visit_lines(tracker: TripTracker, truck: str) -> list[str]:
    """Each bin room of a finished trip: what happened there and how well its keeper was told."""
    told: dict[int, list[tuple[NoticeKind, float, float | None]]] = {}
    for n in tracker.notices:
        told.setdefault(n.index, []).append((n.kind, n.time_s, n.predicted_s))
    out = []
    for i, (visit, st) in enumerate(zip(tracker.stops.visits, tracker.trip.stop_times, strict=True)):
        if not tracker.bins[i]:
            continue  # the depot
        kinds = [k for k, _, _ in told.get(i, [])]
        if visit.state is Visit.SKIPPED:
            outcome = "skipped"
        elif visit.state is Visit.AHEAD or (visit.state is Visit.ARRIVED and not visit.bins):
            outcome = "missed"
        elif NoticeKind.RETURNED in kinds:
            outcome = "revisited"
        else:
            outcome = "served"
        scheduled = tracker.zero_s + st.arrival_s
        fields: dict[str, str | int | float | bool] = {"bins": visit.bins, "kg": round(visit.kg, 1)}
        arrived = visit.arrived_s if outcome != "skipped" else None
        if arrived is not None:
            fields["delay_min"] = round((arrived - scheduled) / 60, 2)
            fields["on_time"] = int(abs(arrived - scheduled) <= ON_TIME_S)
        first = next(((t, p) for k, t, p in told.get(i, []) if k is NoticeKind.NOTICE), None)
        fields["noticed"] = int(first is not None)
        if first is not None and arrived is not None and first[1] is not None:
            lead = (arrived - first[0]) / 60
            fields["lead_min"] = round(lead, 2)
            fields["error_min"] = round((arrived - first[1]) / 60, 2)
            fields["in_window"] = int(LEAD_WINDOW_MIN[0] <= lead <= LEAD_WINDOW_MIN[1])
        if first is not None and outcome in ("skipped", "missed"):
            retracted = {NoticeKind.CANCELLATION, NoticeKind.DELAYED, NoticeKind.DEFERRED}
            last_promise = max(
                j for j, k in enumerate(kinds) if k in (NoticeKind.NOTICE, NoticeKind.CORRECTION)
            )
            fields["uncancelled"] = int(not retracted & set(kinds[last_promise:]))
        tags = {"route": tracker.trip.route_id, "truck": truck, "stop": st.stop_id, "outcome": outcome}
        out.append(format_line("waste_visit", tags, fields, round(scheduled * 1000)))
    return out


def incident_line(incident: Incident, route: str, truck: str, *, open_: bool, at_s: float) -> str:
    """An incident opened, or acknowledged (`open_` False) at `at_s`."""
    tags = {"kind": str(incident.kind), "route": route, "truck": truck, "stop": incident.stop_id or ""}
    fields: dict[str, str | int | float | bool] = {
        "open": int(open_),
        "change": 1 if open_ else -1,  # their sum over a range: the incidents still open
        "trip": incident.trip_id,
        "detail": incident.detail,
    }
    return format_line("waste_incident", {k: v for k, v in tags.items() if v}, fields, round(at_s * 1000))


class Outbox:
    """Lines kept in the service's state until the store has them.

    `state_error(exc, what)` is the service's judgement of a step the state refused: True when
    the state cannot be reached (counted, the step waits), False for a bug (counted in
    `state_bugs`, logged at ERROR)."""

    def __init__(self, state: WasteState, state_error: Callable[[DBAPIError, str], bool]) -> None:
        self.state = state
        self.state_error = state_error
        self.written = 0
        self.failures = 0
        self.refused = 0  # lines the state refused for a bug: given up, each logged
        self._held: list[str] = []  # lines the state could not take yet
        self._holding = threading.Lock()  # put on the event loop, flush in a thread
        self._after = 0  # lines up to this id are in the store, but the state refused to drop them
        self._ratelog = RateLimitedLog(log)

    def put(self, lines: list[str], trips: Sequence[Snapshot] = ()) -> None:
        """Keep lines for the store; in memory while the state cannot be reached. With `trips`
        (where they stand, `WasteState.trip_seen`), in the same transaction: if it fails, the
        lines are held and DBAPIError is raised for the trips, which are not."""
        with self._holding:
            self._held.extend(lines)
            try:
                self.state.put(self._held, trips)
            except DBAPIError as exc:
                if trips:
                    raise  # the service judges it: the lines are held, the trips go with their next report
                if unreachable(exc):
                    self.state_error(exc, "keeping lines for the store")
                    return  # tried again at the next put or flush
                # A bug: one line (or the statement) refused. Each line alone, so that only the
                # ones refused are given up, not every line after them, at every put for ever.
                self._held = self._keep_each(self._held)
                return
            self._held = []

    def _keep_each(self, lines: list[str]) -> list[str]:
        """Each line put on its own: the lines left to hold (the state unreachable meanwhile)."""
        for i, line in enumerate(lines):
            try:
                self.state.put([line])
            except DBAPIError as exc:
                if self.state_error(exc, f"keeping the line {line!r} for the store"):
                    return lines[i:]
                self.refused += 1
        return []

    def pending(self) -> int:
        try:
            return self.state.pending() + len(self._held)
        except DBAPIError:
            return len(self._held)

    def flush(self, store: VisitStore, token: str | None) -> int:
        """Write what waits, a batch at a time (blocking: run it in a thread); lines written."""
        try:
            return self._flush(store, token)
        except DBAPIError as exc:
            self.state_error(exc, "reading the lines for the store")
            return 0

    def _flush(self, store: VisitStore, token: str | None) -> int:
        if self._held:
            self.put([])
        sent = 0
        while True:
            rows = self.state.waiting(BATCH, self._after)
            if not rows:
                return sent
            try:
                write_lines(store.url, store.database, [line for _, line in rows], token=token)
            except StoreError as exc:
                self.failures += 1
                self._ratelog.log(
                    "store", store.url, "waste: the store did not take %d lines, kept: %s", len(rows), exc
                )
                return sent
            sent += len(rows)
            self.written += len(rows)
            try:
                self.state.written([i for i, _ in rows])
            except DBAPIError as exc:
                if self.state_error(exc, "dropping the lines the store has"):
                    return sent  # written again next time: the same points, stored once
                self._after = rows[-1][0]  # a bug: not written again at every flush
