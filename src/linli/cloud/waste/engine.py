"""The waste service's domain: trucks' messages in, trips followed, keepers told.

It takes every truck's location, lift and alarm messages, follows each trip of the timetable
from `lookahead_min` before it leaves (a `TripTracker` each), and tells each keeper notice and
incident once (`linli.cloud.waste.claims`) through held deliveries (`linli.cloud.waste.held`).
Time is the messages' own: the clock is the newest message's time, moved on in `tick_s` steps,
so a day simulated fast runs as a real one; this machine's clock (`wall`, injected) only
stamps dead letters and leases. Each trip runs on its own truck's time, and a message too far
ahead of the service's clock is refused (`linli.cloud.waste.clocks`): one truck cannot move
the others. Nothing here touches the network: the feed (`linli.cloud.waste.feed`) hands the
messages in, and `linli.cloud.waste.service` wires the engine to it and to the API. The trips
due are worked out in `due`, a tick's reports written in `trip_reports`, and the dispatcher's
commands applied in `commands`.

Several services may share one state (PostgreSQL, on several hosts): each follows every
trip, so any of them can stop, and each notice and incident is claimed in the state before
anyone is told (`linli.cloud.waste.state`), so it is told once. A deployment that outgrows one
service partitions statically by subdistrict, one feed per service (docs/scale.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError

from linli.catalog.deadletter import dead_letter_envelope
from linli.catalog.ratelog import RateLimitedLog
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.waste.bookings import BookingError
from linli.cloud.waste.claims import Claims
from linli.cloud.waste.clocks import TruckClocks
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.due import OVERDUE_S, DueTrips
from linli.cloud.waste.faults import StateFaults
from linli.cloud.waste.held import HeldDeliveries
from linli.cloud.waste.outbox import Outbox, trip_line, visit_lines
from linli.cloud.waste.payloads import MESSAGES, Alarm, LiftMessage, Location, Payload, RefusedError, decode
from linli.cloud.waste.predict import History
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.renovation_link import RenovationLink
from linli.cloud.waste.state import Leadership, WasteState
from linli.cloud.waste.tracking import Incident, TripTracker
from linli.cloud.waste.trip_reports import TripReports
from linli.transit.gtfs import Feed, Trip, service_zero
from linli.transit.stops import stop_distances

log = logging.getLogger(__name__)


class WasteEngine:
    """Trips followed from the trucks' messages, on the trucks' clock; `wall` is this machine's."""

    def __init__(
        self,
        config: WasteConfig,
        feed: Feed,
        state: WasteState,
        sender: Sender,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.feed = feed
        self.state = state
        self.wall = wall
        self.history = History(feed.timezone)
        self.trackers: dict[str, TripTracker] = {}
        self.finished: set[str] = set()
        self.now_s = 0.0
        self._ticked_s = 0.0
        self.clocks = TruckClocks(config.max_skew_s)
        # Where refused messages go, with why (the service sets it to the broker connection).
        self.dead_letter: Callable[[str, bytes], object] | None = None
        self.received = 0  # every message taken, good or bad
        self.rejected: Counter[str] = Counter()
        self.bookings_refused: Counter[str] = Counter()  # booking requests refused, by reason
        self.handled: Counter[str] = Counter()
        self.fixes: Counter[str] = Counter()  # what each position did: matched, off_route, stale
        self.faults = StateFaults()
        self.held = HeldDeliveries(
            config, state, sender, state_error=self.faults, wall=wall, now_ms=self._now_ms
        )
        self.leadership = Leadership(state)
        self._ratelog = RateLimitedLog(log)
        self.route_of_truck = {r.truck: rid for rid, r in feed.routes.items()}
        self.outbox = Outbox(state, self.faults)
        self.claims = Claims(config, feed, state, outbox=self.outbox, held=self.held, state_error=self.faults)
        self.renovating = (
            None
            if feed.extras.renovation is None
            else RenovationLink(
                config, feed, state, leadership=self.leadership, held=self.held, outbox=self.outbox
            )
        )
        self.reports = TripReports(feed, self.outbox, self.faults)
        self._due = DueTrips(config, feed)
        self._places: dict[tuple[str, tuple[str, ...]], list[float]] = {}  # `_places_of`
        self._recall()

    @property
    def renovation(self) -> Renovation | None:
        """The renovation bookings, when the district's timetable has them."""
        return None if self.renovating is None else self.renovating.renovation

    @property
    def deliveries(self) -> Deliveries:
        return self.held.deliveries

    @property
    def claimed(self) -> Counter[str]:
        return self.claims.claimed

    @property
    def incidents(self) -> list[Incident]:
        return self.claims.incidents

    @property
    def state_errors(self) -> int:
        return self.faults.state_errors

    @property
    def state_bugs(self) -> int:
        return self.faults.state_bugs

    @property
    def waiting(self) -> int:
        """Notices, incidents and failed deliveries the state has not taken yet: each goes once
        it can be reached."""
        return self.claims.waiting(self.trackers.values())

    def send_waiting(self) -> None:
        """Claim and tell what waited for the state (at each tick, and every few seconds of this
        machine's time: the trucks may have nothing more to say), and record the failures."""
        self.claims.send_waiting(self.trackers.values())

    def send_orphans(self) -> int:
        """Send what a service held and never finished (`HeldDeliveries.send_orphans`)."""
        return self.held.send_orphans()

    def _now_ms(self) -> int:
        return round(self.now_s * 1000)

    def _recall(self) -> None:
        """Learn again what the predictor learned before this start (the state's steps): a
        restarted service predicts, and corrects its keepers, as the one that stopped would."""
        try:
            learned = self.state.learned()
        except DBAPIError as exc:  # predicted from the timetable until trips teach it again
            self.faults(exc, "reading what the predictor learned")
            return
        for route, day, step in learned:
            self.history.learn(route, step, service_zero(dt.date.fromisoformat(day), self.feed.timezone))

    # --- messages --------------------------------------------------------------

    def take(self, topic: str, payload: bytes) -> None:
        """One truck message (on the event loop); a bad one is counted and dead-lettered, never fatal."""
        self.received += 1
        try:
            self._take(topic, payload)
        except RefusedError as exc:
            self._refuse(exc.reason, topic, payload, exc.detail)
        except Exception as exc:
            # A bug must cost one message, never the service.
            self._refuse("internal", topic, payload, repr(exc))

    def _refuse(self, reason: str, topic: str, payload: bytes, detail: str) -> None:
        """Counted, logged at most once a minute per reason and truck, and republished with why."""
        parts = topic.split("/")
        self._reject(reason, parts[2] if len(parts) == 4 else topic, detail)
        if self.dead_letter is None:  # not connected to the broker (messages handed over in-process)
            return
        envelope = dead_letter_envelope(
            reason=reason,
            detail=detail,
            topic=topic,
            payload=payload,
            agent="waste",
            received_ms=round(self.wall() * 1000),
        )
        self.dead_letter(f"{self.config.broker.dead_letter_topic}/waste/{reason}", envelope)

    def _take(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 4 or parts[3] not in MESSAGES:
            raise RefusedError("unknown_topic", "not {topic}/{site}/{truck}/" + "|".join(MESSAGES))
        truck, kind = parts[2], parts[3]
        renovating = (
            self.renovating if self.renovating and truck in self.renovating.renovation.trucks else None
        )
        route = self.route_of_truck.get(truck)
        if route is None and renovating is None:
            raise RefusedError("unknown_truck", "runs no route of the timetable")
        message = self._parse(truck, kind, payload, route)
        t = message.ts / 1000
        self.clocks.heard(truck, t)
        self.advance(t)
        if renovating is not None:
            self.handled[kind] += 1
            try:
                renovating.message(truck, message, t)
            except BookingError as exc:
                self._reject("booking", truck, str(exc))
            except DBAPIError as exc:  # the next position or answer moves the bookings on
                self.faults(exc, "a renovation message")
            return
        tracker = self._tracker_of(route or "", t)
        if tracker is None:
            return
        self._apply(tracker, kind, message, t)

    def _parse(self, truck: str, kind: str, payload: bytes, route: str | None) -> Payload:
        """The message of `truck` (on `route`, if it runs one); RefusedError when it is too large,
        malformed, invalid, or its time is wrong."""
        message = decode(kind, payload)
        # One message from a wrong clock must not move every trip on.
        refusal = self.clocks.refusal(
            truck, message.ts / 1000, others_under_way=self._under_way_besides(route)
        )
        if refusal is not None:
            raise RefusedError("bad_time", refusal)
        return message

    def _apply(self, tracker: TripTracker, kind: str, message: Payload, t: float) -> None:
        """A truck's message to the trip it is on; what it decides is told."""
        self.handled[kind] += 1
        if t <= tracker.resumed_s:
            # Sent again by the broker after a kill, or kept for it while this service was away:
            # what it decided was told (by this service before, or by another), and applied to
            # the visits set from that, it would take the truck back along its road. The truck
            # was heard all the same: it is not silent.
            tracker.seen = True
            tracker.last_heard_s = max(tracker.last_heard_s, t)
            return
        self._catch_up(tracker, t)
        if isinstance(message, Location):
            self.fixes[str(tracker.location(message.lat, message.lon, message.speed, t))] += 1
            if message.acc is False and tracker.under_way:
                tracker.breakdown(t, "the ignition is off in the middle of the trip")
        elif isinstance(message, LiftMessage):
            tracker.lift(message.stop, message.bins, message.collected_kg, t)
        elif isinstance(message, Alarm) and message.active:
            if message.alarm == "blocked_access":
                tracker.blocked(message.stop, t)
            elif message.alarm == "breakdown":
                tracker.breakdown(t, "the driver's breakdown alarm")
        self.claims.send_new(tracker)

    def _under_way_besides(self, route: str | None) -> bool:
        """Whether a trip of another route is under way: its truck reported, it is neither done
        nor broken down. Its keepers are what a message from a wrong clock would hurt."""
        return any(
            tr.seen and not tr.broken and tr.stops.next_index() is not None and tr.trip.route_id != route
            for tr in self.trackers.values()
        )

    def _reject(self, reason: str, source: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._ratelog.log(reason, source, "waste: message from %s refused (%s): %s", source, reason, detail)

    # --- the clock and the trips --------------------------------------------------

    def clock(self) -> float:
        """Now: the trucks' time once they have spoken (a day simulated fast is a real day)."""
        return self.now_s or self.wall()

    def advance(self, t: float) -> None:
        """Move the clock to `t` (never back), ticking every trip on the way; what the ticks
        report is written at the end, in one transaction (`TripReports.write`)."""
        if t <= self.now_s:
            return
        if not self._ticked_s:
            # On the tick_s grid: services started at other times tick at the same moments,
            # so they decide the same notices.
            self._ticked_s = (t // self.config.tick_s - 1) * self.config.tick_s
        self.now_s = t
        try:
            self._ticks_until(t)
        finally:
            # The ticks' reports together: a message after the trucks were parked for hours
            # catches up hundreds of ticks, each with the renovation's status line, and wrote
            # each in its own transaction. All are still committed before the message that
            # moved the clock is acknowledged.
            self.reports.write()

    def _ticks_until(self, t: float) -> None:
        while self._ticked_s + self.config.tick_s <= t:
            self._ticked_s += self.config.tick_s
            if self.renovating is not None:
                try:
                    line = self.renovating.tick(self._ticked_s)
                except DBAPIError as exc:  # the trips tick on; the bookings at the next tick
                    self.faults(exc, "the renovation tick")
                else:
                    self.reports.lines += [line] if line is not None else []
            self._tick(self._ticked_s)

    def _tick(self, now: float) -> None:
        """One step of the clock for every trip."""
        self._open_trips(now)
        for key, tracker in list(self.trackers.items()):
            # A trip is announced only once its truck reports (parked, switched on): a keeper
            # never hears of a truck that is not there.
            if tracker.seen:
                # A trip runs on its own truck's time: a tick past it waits for the truck's next
                # message (`_catch_up`), so another truck's clock, up to `max_skew_s` ahead, moves
                # no other truck's trip. A truck quiet longer is moved on (and found silent).
                quiet_s = now - tracker.last_heard_s
                if quiet_s > self.config.max_skew_s:
                    self._catch_up(tracker, now - self.config.tick_s)
                    if quiet_s > self.config.silent_min * 60 and tracker.under_way:
                        tracker.breakdown(now, f"no message for {self.config.silent_min:.0f} min")
                    self._catch_up(tracker, now)
                self.claims.send_new(tracker)
                self.reports.report(key, tracker, now)
        if self._close_trips(now):
            # A finished trip is kept at its own tick, not at the end of a long catch-up: a
            # kill in between would open it again on restart and find it broken down.
            self.reports.write()
        if self.claims.closed:
            self.send_waiting()

    def _catch_up(self, tracker: TripTracker, upto: float) -> None:
        """Evaluate a trip at the ticks of the clock it has not been evaluated at, up to `upto`."""
        step = self.config.tick_s
        if not tracker.ticked_s:  # from its first message (or a resume) on, as the clock ticks
            tracker.ticked_s = (upto // step) * step
            return
        tick = (tracker.ticked_s // step + 1) * step
        while tick <= min(upto, self._ticked_s):
            tracker.tick(tick)
            tracker.ticked_s = tick
            tick += step

    def _open_trips(self, now: float) -> None:
        """Follow the trips due."""
        for key, trip, zero, _ in self._due(now):
            if key in self.trackers or key in self.finished:
                continue
            tracker = TripTracker(
                self.feed,
                trip,
                zero,
                self.history,
                blocked_wait_s=self.config.blocked_wait_min * 60,
                on_blocked=self.config.on_blocked,
                places=self._places_of(trip),
            )
            try:
                if self.state.trip_finished(trip.id, key.split("@")[1]):
                    # Back at the depot before a restart: reopened, it would wait there for a
                    # truck that has gone home, and be found broken down.
                    self.finished.add(key)
                    continue
                self.claims.resume(tracker, key, now)
            except DBAPIError as exc:
                if not self.faults(exc, f"resuming trip {key}"):
                    continue  # opened at a later tick
                # Followed at once all the same, or its truck's messages meanwhile would be lost
                # with the whole trip; what was told of it is read before its first claim.
                self.claims.unresumed.add(key)
            self.trackers[key] = tracker
            log.info("waste: following trip %s", key)

    def _places_of(self, trip: Trip) -> list[float]:
        """Each stop's distance along the trip's road (`stop_distances`), worked out once for
        every trip of the same road and stops: every day's trips of a route share them."""
        key = (trip.shape_id, tuple(st.stop_id for st in trip.stop_times))
        if key not in self._places:
            self._places[key] = stop_distances(self.feed, trip)
        return list(self._places[key])

    def _close_trips(self, now: float) -> int:
        """Close the trips back at the depot, or overdue; how many."""
        closed = 0
        for key, tracker in list(self.trackers.items()):
            end = tracker.zero_s + tracker.trip.stop_times[-1].arrival_s
            if tracker.stops.next_index() is None or now > end + OVERDUE_S:
                self.finished.add(key)
                del self.trackers[key]
                closed += 1
                if self.claims.waiting_of(tracker):
                    self.claims.closed[key] = tracker  # told once the state can be reached (`send_waiting`)
                self.reports.seen(key, tracker, now, finished=True)
                if tracker.seen:
                    truck = self.feed.routes[tracker.trip.route_id].truck
                    self.reports.lines += [trip_line(tracker, truck, now), *visit_lines(tracker, truck)]
        return closed

    # --- the trips, as the dispatcher's commands find them (`linli.cloud.waste.commands`) ---

    def trip_now(self, trip_id: str) -> TripTracker | None:
        """The trip of that id followed now (the newest service day's)."""
        ours = [tr for tr in self.trackers.values() if tr.trip.id == trip_id]
        return max(ours, key=lambda tr: tr.zero_s) if ours else None

    def _tracker_of(self, route: str, t: float) -> TripTracker | None:
        """The trip the truck of `route` is on at `t`: the earliest one not finished."""
        ours = [tr for tr in self.trackers.values() if tr.trip.route_id == route]
        ours.sort(key=lambda tr: tr.zero_s + tr.trip.stop_times[0].departure_s)
        return ours[0] if ours else None

    def notices(self, limit: int = 1000, day: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` notices, of one service day (ISO date) if given."""
        return self.state.notices(limit, day)

    def failures(self) -> list[dict[str, Any]]:
        return self.state.failures()
