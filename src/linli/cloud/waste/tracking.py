"""One trip under way: its truck's messages in, keeper notices out.

The tracker matches each position to the trip's road, follows the stops' visits, predicts
the arrival at every stop ahead, and decides the keepers' messages:

- `notice` once the predicted arrival is `notice_min` away (15 minutes unless the stop says
  otherwise) and AIM_S more, the middle of the window a keeper is promised (13 to 18 minutes),
  naming the truck, the waste type and the time;
- `correction` when the prediction has stayed more than CORRECTION_S from the time told for
  CORRECTION_HOLD_S, at most MAX_CORRECTIONS times a stop;
- `cancellation` for a noticed stop the truck passes by without serving;
- `arrived` and `collected` (bins and kilograms) when they happen.

A keeper never gets a notice for a stop the truck has already passed or skipped. Messages
come late and out of order over the cellular network: the trip is decided at the newest time
heard (`now_s`), so an old fix never takes it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from linli.cloud.waste.match import Fix, Matcher
from linli.cloud.waste.predict import AIM_S, History, Step, TripState, observe, predict
from linli.transit.gtfs import Feed, Trip
from linli.transit.stops import StopEvent, StopTracker, Visit

# A keeper is corrected only when the time told is this far off (a change they would act on),
# has been for this long (a red light or a lost minute of GPS is not news), and no more than
# this many times a stop: a fresh service corrected 17:40 -> 17:43 -> 17:46 -> 17:49.
CORRECTION_S = 180.0
CORRECTION_HOLD_S = 60.0
MAX_CORRECTIONS = 2
# history, the trip's state, now -> predicted arrival by stop index
Predictor = Callable[[History, TripState, float], dict[int, float]]


class NoticeKind(StrEnum):
    NOTICE = "notice"
    CORRECTION = "correction"
    CANCELLATION = "cancellation"
    ARRIVED = "arrived"
    COLLECTED = "collected"
    DEFERRED = "deferred"  # the gate is blocked: the truck goes on and comes back later
    RETURNED = "returned"  # back at a stop it had to leave
    DELAYED = "delayed"  # the truck broke down: another is on its way


class IncidentKind(StrEnum):
    BLOCKED = "blocked"  # the driver's alarm at a stop, or a wait without lifting
    BREAKDOWN = "breakdown"  # the driver's alarm, the ignition off mid-route, or silence


@dataclass(frozen=True)
class Incident:
    kind: IncidentKind
    trip_id: str
    stop_id: str | None
    time_s: float
    detail: str


@dataclass(frozen=True)
class KeeperNotice:
    """One message for one stop's keepers."""

    kind: NoticeKind
    trip_id: str
    stop_id: str
    index: int
    time_s: float  # when it was decided (the message's own time)
    predicted_s: float | None = None  # the predicted arrival, for notices and corrections
    bins: int = 0
    kg: float = 0.0


@dataclass
class TripTracker:
    """A trip's state from its truck's messages; `notices` is everything decided so far."""

    feed: Feed
    trip: Trip
    zero_s: float
    history: History
    predictor: Predictor = predict
    blocked_wait_s: float = 300.0  # at a stop this long without lifting: the gate is blocked
    on_blocked: str = "defer"  # or "skip": what a blocked gate does to its stop
    notices: list[KeeperNotice] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    # Each stop's distance along the road (`stop_distances`), if the caller has it already:
    # the trips of a route share their road and stops, and working it out is slow.
    places: list[float] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.matcher = Matcher(self.feed.shapes[self.trip.shape_id].line)
        self.stops = StopTracker.for_trip(self.feed, self.trip, self.places)
        depots = set(self.feed.extras.depots)
        self.bins = [
            0 if st.stop_id in depots else self.feed.extras.stops[st.stop_id].bins
            for st in self.trip.stop_times
        ]
        places = [visit.at_m for visit in self.stops.visits]  # worked out once, by `for_trip`
        self.state = TripState(self.trip, self.zero_s, places, self.bins)
        self.predicted: dict[int, float] = {}
        self._told: dict[int, float] = {}  # stop index -> the arrival time last told
        self._corrected: dict[int, int] = {}  # stop index -> corrections told
        self._off_since: dict[int, float] = {}  # stop index -> since when the prediction is off
        self._depots = depots
        # Whether the truck has said anything yet: a trip whose truck is silent is not announced.
        self.seen = False
        self.last_fix: tuple[float, float, float] | None = None  # lat, lon, time
        self.last_heard_s = 0.0
        self.deferred: set[int] = set()  # stops left because the gate was blocked
        self._away: set[int] = set()  # deferred stops the truck has since driven away from
        self.now_s = 0.0  # the newest time heard or ticked: decisions are never taken back
        self.broken = False
        self.ticked_s = 0.0  # the service's newest tick this trip was evaluated at
        # Told up to this time (the truck's) before this service followed the trip: what the
        # truck's messages until then decided was told, and the visits are set from it.
        self.resumed_s = 0.0

    @property
    def under_way(self) -> bool:
        """Left the depot and not yet back: where stopping is not parking."""
        started = self.stops.visits[0].state in (Visit.LEFT, Visit.SKIPPED)
        return started and self.stops.next_index() is not None

    def location(self, lat: float, lon: float, speed_kmh: float, time_s: float) -> Fix:
        """A position: progress, visits, predictions, notices."""
        self.seen = True
        self.last_heard_s = max(self.last_heard_s, time_s)
        self.now_s = max(self.now_s, time_s)
        fix = self.matcher.update(lat, lon, time_s)  # STALE when older than the last: not used
        if fix is Fix.MATCHED and self.matcher.progress is not None:
            self.last_fix = (lat, lon, time_s)
            self.state.progress = self.matcher.progress
            for event in self.stops.position(self.matcher.progress, speed_kmh, time_s):
                self._visit(event)
        self._predict(self.now_s)
        return fix

    def replay(self, messages: list[tuple[str, dict[str, Any]]], *, tick_s: float = 30.0) -> None:
        """A truck's messages (location, lift, alarm) in the order they arrive, with the clock
        ticking every `tick_s` from half an hour before the trip leaves up to the newest message
        heard, as the service's clock does: for the benchmarks and tests."""
        leave = self.zero_s + self.trip.stop_times[0].departure_s
        last = max((body["ts"] / 1000 for _, body in messages), default=leave)
        ticks = _steps(leave - 1800, last, tick_s)
        heard = -float("inf")
        for kind, body in [*messages, ("end", {"ts": round(last * 1000) + 1})]:
            t = body["ts"] / 1000
            heard = max(heard, t)
            while ticks and ticks[0] < heard:
                self.tick(ticks.pop(0))
            if kind == "location":
                self.location(body["lat"], body["lon"], body["speed"], t)
            elif kind == "lift":
                self.lift(body["stop"], body["bins"], body["collected_kg"], t)
            elif kind == "alarm" and body["active"]:
                if body["alarm"] == "blocked_access":
                    self.blocked(body["stop"], t)
                elif body["alarm"] == "breakdown":
                    self.breakdown(t, "the driver's breakdown alarm")

    def already_told(self, index: int, kind: NoticeKind, time_s: float, predicted_s: float | None) -> None:
        """A notice sent before a restart: corrections are measured from it, not sent anew, and
        an arrival puts the truck back where it was, so the road is matched from there on."""
        if kind in (NoticeKind.NOTICE, NoticeKind.CORRECTION) and predicted_s is not None:
            self._told[index] = predicted_s
            if kind is NoticeKind.CORRECTION:
                self._corrected[index] = self._corrected.get(index, 0) + 1
        elif kind is NoticeKind.ARRIVED:
            for i, visit in enumerate(self.stops.visits[: index + 1]):
                if visit.state is Visit.AHEAD:
                    visit.state = Visit.ARRIVED if i == index else Visit.LEFT
                    self.state.arrived.setdefault(i, time_s)
                    if i < index:
                        self.state.left.setdefault(i, time_s)
            self.matcher.progress = max(self.matcher.progress or 0.0, self.state.places[index])
            self.matcher.matched_s = time_s
            self.state.progress = self.matcher.progress
            self.seen = True

    def restore(self, steps: list[Step]) -> None:
        """The steps this trip took before a restart (`WasteState.steps_of`): its pace, and when
        its truck reached and left each stop, so that it predicts as it did. After
        `already_told`, whose times (the notices') they correct."""
        self.state.restore(steps)
        for step in steps:
            visit = self.stops.visits[step.index]
            # A visit the notices already set arriving keeps no arrival time of its own: with it
            # (and no bins, which the notices do not keep) a truck standing there broken down
            # would be found blocked. Its arrival for the prediction is the step's (TripState).
            if step.state is Visit.ARRIVED and visit.state is Visit.AHEAD:
                visit.state, visit.arrived_s = Visit.ARRIVED, step.time_s
            elif step.state is not Visit.ARRIVED and visit.state in (Visit.AHEAD, Visit.ARRIVED):
                visit.state, visit.left_s = step.state, step.time_s
                visit.arrived_s = visit.arrived_s if visit.arrived_s is not None else step.from_s

    def tick(self, now_s: float) -> None:
        """The clock, between messages: a trip about to leave is noticed before its truck moves,
        and a truck waiting at a stop without lifting is found blocked."""
        self.now_s = max(self.now_s, now_s)
        for i, v in enumerate(self.stops.visits):
            waited = v.arrived_s is not None and now_s - v.arrived_s > self.blocked_wait_s
            bin_room = v.stop_id not in self._depots
            if v.state is Visit.ARRIVED and not v.bins and waited and bin_room and i not in self.deferred:
                self.blocked(v.stop_id, now_s, f"waited {self.blocked_wait_s / 60:.0f} min without lifting")
        self._predict(self.now_s)

    def blocked(self, stop_id: str, time_s: float, detail: str = "the driver's alarm") -> Incident | None:
        """The gate of a stop is blocked: the truck goes on, and the stop is served on its way
        back (`on_blocked` "defer") or given up for this trip ("skip")."""
        done = self.skip(stop_id, time_s) if self.on_blocked == "skip" else self.defer(stop_id, time_s)
        if not done:
            return None
        incident = Incident(IncidentKind.BLOCKED, self.trip.id, stop_id, time_s, detail)
        self.incidents.append(incident)
        return incident

    def defer(self, stop_id: str, time_s: float) -> bool:
        """Move a stop to the end of the trip: its keeper hears "deferred", and "returned" when
        the truck is back; the stops after it are predicted without its dwell."""
        for i, v in enumerate(self.stops.visits):
            if v.stop_id == stop_id and v.state in (Visit.AHEAD, Visit.ARRIVED) and i not in self.deferred:
                self.deferred.add(i)
                self.state.passing.add(i)
                self._tell(NoticeKind.DEFERRED, i, time_s)
                return True
        return False

    def breakdown(self, time_s: float, detail: str) -> Incident | None:
        """The truck cannot go on: every stop not yet served is told it is delayed."""
        if self.broken:
            return None
        self.broken = True
        for i, v in enumerate(self.stops.visits):
            if v.state is Visit.AHEAD:
                self._tell(NoticeKind.DELAYED, i, time_s)
        incident = Incident(IncidentKind.BREAKDOWN, self.trip.id, None, time_s, detail)
        self.incidents.append(incident)
        return incident

    def skip(self, stop_id: str, time_s: float) -> bool:
        """The dispatcher takes a stop off this trip: its keeper is told, if told it was coming.

        The truck still drives past it, so the trip's progress is left as it is.
        """
        for i, v in enumerate(self.stops.visits):
            if v.stop_id == stop_id and (v.state is Visit.AHEAD or i in self.deferred):
                v.state = Visit.SKIPPED
                self.deferred.discard(i)
                self.state.passing.add(i)
                if i in self._told:
                    self._tell(NoticeKind.CANCELLATION, i, time_s)
                return True
        return False

    def replaced(self, time_s: float) -> None:
        """Another truck took the trip over: times are promised again, from where it stands."""
        self.broken = False
        self.last_heard_s = max(self.last_heard_s, time_s)
        self.matcher.matched_s = time_s  # its reach grows from now on, from the breakdown's place

    def lift(self, stop_id: str, bins: int, kg: float, time_s: float) -> None:
        """Bins lifted at a stop."""
        self.seen = True
        self.last_heard_s = max(self.last_heard_s, time_s)
        self.now_s = max(self.now_s, time_s)
        back = [i for i in self.deferred if self.trip.stop_times[i].stop_id == stop_id]
        for event in self.stops.lift(stop_id, bins, kg, time_s, again=bool(back)):
            if back and event.index in back:
                self.deferred.discard(event.index)
                self._away.discard(event.index)
                self._tell(NoticeKind.RETURNED, event.index, self.now_s)
                continue
            self._visit(event)
        for i, v in enumerate(self.stops.visits):
            if v.stop_id == stop_id and v.state is Visit.ARRIVED:
                self._tell(NoticeKind.COLLECTED, i, self.now_s, bins=v.bins, kg=v.kg)
                break
        self._predict(self.now_s)

    def _visit(self, event: StopEvent) -> None:
        observe(self.history, self.state, event, self.stops.visits[event.index].bins)
        deferred = event.index in self.deferred
        if deferred and event.state in (Visit.LEFT, Visit.SKIPPED):
            self._away.add(event.index)
        if event.state is Visit.ARRIVED and deferred:
            # Told it comes later: "back" once the truck has been away and is there again; the
            # truck still standing at the blocked gate it alarmed from is not back.
            if event.index in self._away:
                self.deferred.discard(event.index)
                self._away.discard(event.index)
                self._tell(NoticeKind.RETURNED, event.index, self.now_s)
        elif event.state is Visit.ARRIVED:
            self._tell(NoticeKind.ARRIVED, event.index, self.now_s)
        elif event.state is Visit.SKIPPED and event.index in self._told and not deferred:
            # Driven past: not coming on this trip. A deferred stop is passed on purpose.
            self._tell(NoticeKind.CANCELLATION, event.index, self.now_s)

    def _predict(self, now_s: float) -> None:
        if self.broken:
            self.predicted = {}  # no time can be promised until another truck takes over
            return
        self.predicted = self.predictor(self.history, self.state, now_s)
        for index, at in self.predicted.items():
            stop = self.trip.stop_times[index].stop_id
            if (
                stop in self._depots
                or self.stops.visits[index].state is not Visit.AHEAD
                or index in self.deferred
            ):
                continue
            lead = self.feed.extras.stops[stop].notice_min * 60
            told = self._told.get(index)
            if told is None and at - now_s <= lead + AIM_S:
                self._tell(NoticeKind.NOTICE, index, now_s, predicted_s=at)
            elif told is not None and self._correct(index, at - told, now_s):
                self._tell(NoticeKind.CORRECTION, index, now_s, predicted_s=at)

    def _correct(self, index: int, off_s: float, now_s: float) -> bool:
        """Whether a stop's keeper is told a new time: off by more than CORRECTION_S, for
        CORRECTION_HOLD_S on end, and not yet corrected MAX_CORRECTIONS times."""
        if abs(off_s) <= CORRECTION_S or self._corrected.get(index, 0) >= MAX_CORRECTIONS:
            self._off_since.pop(index, None)
            return False
        if now_s - self._off_since.setdefault(index, now_s) < CORRECTION_HOLD_S:
            return False
        del self._off_since[index]
        self._corrected[index] = self._corrected.get(index, 0) + 1
        return True

    def _tell(
        self,
        kind: NoticeKind,
        index: int,
        time_s: float,
        *,
        predicted_s: float | None = None,
        bins: int = 0,
        kg: float = 0.0,
    ) -> None:
        stop = self.trip.stop_times[index].stop_id
        if stop in self._depots:
            return
        if kind in (NoticeKind.NOTICE, NoticeKind.CORRECTION) and predicted_s is not None:
            self._told[index] = predicted_s
        self.notices.append(KeeperNotice(kind, self.trip.id, stop, index, time_s, predicted_s, bins, kg))


def _steps(start: float, end: float, step: float) -> list[float]:
    return [start + i * step for i in range(int((end - start) // step) + 1)]
