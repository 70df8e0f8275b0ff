"""The waste service's domain: trucks' messages in, trips followed, keepers told.

It takes every truck's location, lift and alarm messages, follows each trip of the timetable
from `lookahead_min` before it leaves (a `TripTracker` each), and tells each keeper notice and
incident once (`linli.cloud.waste.claims`) through held deliveries (`linli.cloud.waste.held`).
Time is the messages' own: the clock is the newest message's time, moved on in `tick_s` steps,
so a day simulated fast runs as a real one; this machine's clock (`wall`, injected) only
stamps dead letters and leases. Each trip runs on its own truck's time, and a message too far
ahead of the service's clock is refused (`linli.cloud.waste.clocks`): one truck cannot move
the others. Nothing here touches the network: the feed (`linli.cloud.waste.feed`) hands the
messages in, and `linli.cloud.waste.service` wires the engine to it and to the API.

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
from zoneinfo import ZoneInfo

from sqlalchemy.exc import DBAPIError

from linli.catalog.deadletter import dead_letter_envelope
from linli.catalog.ratelog import RateLimitedLog
from linli.cloud.notifier.channels import Sender
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.waste.bookings import BookingError
from linli.cloud.waste.claims import Claims
from linli.cloud.waste.clocks import TruckClocks
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.faults import StateFaults
from linli.cloud.waste.held import HeldDeliveries
from linli.cloud.waste.outbox import Outbox, incident_line, trip_line, visit_lines
from linli.cloud.waste.payloads import MESSAGES, Alarm, LiftMessage, Location, Payload, RefusedError, decode
from linli.cloud.waste.predict import History
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.renovation_link import RenovationLink
from linli.cloud.waste.state import Leadership, WasteState
from linli.cloud.waste.tracking import Incident, IncidentKind, TripTracker
from linli.transit.gtfs import Feed, Trip, runs_on, service_zero

log = logging.getLogger(__name__)

# A trip is given up this long after its scheduled end (a truck that never came).
OVERDUE_S = 3 * 3600
REPORT_S = 60.0  # a trip under way is written to the store this often (the trucks' time)


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
        self._reported: dict[str, float] = {}  # trip -> when its last waste_trip point was
        # A tick's reports, written together at its end: trip -> its rows, and the store's lines.
        self._trips: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        self._lines: list[str] = []
        self._days: dict[dt.date, list[tuple[str, Trip, float, float, float]]] = {}
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
        """Move the clock to `t` (never back), ticking every trip on the way."""
        if t <= self.now_s:
            return
        if not self._ticked_s:
            # On the tick_s grid: services started at other times tick at the same moments,
            # so they decide the same notices.
            self._ticked_s = (t // self.config.tick_s - 1) * self.config.tick_s
        self.now_s = t
        while self._ticked_s + self.config.tick_s <= t:
            self._ticked_s += self.config.tick_s
            if self.renovating is not None:
                try:
                    line = self.renovating.tick(self._ticked_s)
                except DBAPIError as exc:  # the trips tick on; the bookings at the next tick
                    self.faults(exc, "the renovation tick")
                else:
                    self._lines += [line] if line is not None else []
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
                self._report(key, tracker, now)
        self._close_trips(now)
        self._write_reports()
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

    def _due(self, now: float) -> list[tuple[str, Trip, float, float]]:
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

    def _close_trips(self, now: float) -> None:
        for key, tracker in list(self.trackers.items()):
            end = tracker.zero_s + tracker.trip.stop_times[-1].arrival_s
            if tracker.stops.next_index() is None or now > end + OVERDUE_S:
                self.finished.add(key)
                del self.trackers[key]
                if self.claims.waiting_of(tracker):
                    self.claims.closed[key] = tracker  # told once the state can be reached (`send_waiting`)
                self._seen(key, tracker, now, finished=True)
                if tracker.seen:
                    truck = self.feed.routes[tracker.trip.route_id].truck
                    self._lines += [trip_line(tracker, truck, now), *visit_lines(tracker, truck)]

    def _report(self, key: str, tracker: TripTracker, now: float) -> None:
        """A trip under way, once a minute of the trucks' time (written at the tick's end)."""
        if now - self._reported.get(key, 0.0) < REPORT_S:
            return
        self._reported[key] = now
        self._seen(key, tracker, now)
        self._lines.append(trip_line(tracker, self.feed.routes[tracker.trip.route_id].truck, now))

    def _seen(self, key: str, tracker: TripTracker, now: float, *, finished: bool = False) -> None:
        """Where a trip stands, for the state (any service answers for every trip from it),
        written with the tick's other reports (`_write_reports`)."""
        self._trips[key] = self.snapshot(key, tracker, now, finished=finished)

    def _write_reports(self) -> None:
        """What a tick found, in one transaction: where its trips stand, and the store's lines.
        Before the message that moved the clock is acknowledged, as each report was before."""
        if not (self._trips or self._lines):
            return
        trips, self._trips = list(self._trips.values()), {}
        lines, self._lines = self._lines, []
        try:
            self.outbox.put(lines, trips)
        except DBAPIError as exc:  # the lines held by the outbox; the trips written with their next report
            if not self.faults(exc, "writing the trips") and trips:
                self.outbox.put([])  # a trip the state refuses (a bug) holds up no line

    def snapshot(
        self, key: str, tracker: TripTracker, now: float, *, finished: bool = False
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A trip followed here as the state keeps it: the trip's row, and its stops' rows."""
        trip, route = tracker.trip, self.feed.routes[tracker.trip.route_id]
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

    # --- the dispatcher ------------------------------------------------------------

    def trip_now(self, trip_id: str) -> TripTracker | None:
        """The trip of that id followed now (the newest service day's)."""
        ours = [tr for tr in self.trackers.values() if tr.trip.id == trip_id]
        return max(ours, key=lambda tr: tr.zero_s) if ours else None

    def skip(self, trip_id: str, stop_id: str) -> str:
        """Take a stop off a trip under way; its keeper hears it is cancelled. See `command`."""
        return self.command("skip", trip_id, stop_id)

    def defer(self, trip_id: str, stop_id: str) -> str:
        """Move a stop to the end of a trip under way (the dispatcher's call): its keeper hears
        it is deferred, the stops after it are predicted without it. See `command`."""
        return self.command("defer", trip_id, stop_id)

    def command(self, kind: str, trip_id: str, arg: str) -> str:
        """A dispatcher's command (`skip` or `defer` the stop `arg`, `replace` the truck by
        `arg`): "done"; "" when no such trip is under way here."""
        trip = self.feed.trips.get(trip_id)
        tracker = self.trip_now(trip_id)
        if trip is None or tracker is None:
            return ""
        t = round(self.now_s * 1000) / 1000  # to the millisecond, as every clock of the state
        if kind == "replace":
            self.route_of_truck[arg] = trip.route_id
            tracker.replaced(t)
            log.warning("waste: truck %s takes over trip %s", arg, trip_id)
            return "done"
        done = tracker.skip(arg, t) if kind == "skip" else tracker.defer(arg, t)
        if done:
            # Predicted without the stop's dwell at once, at the trip's own time (not the clock's).
            tracker.tick(max(tracker.ticked_s, tracker.last_heard_s))
            self.claims.send_new(tracker)
        return "done" if done else ""

    def acknowledge(self, number: int) -> dict[str, Any] | None:
        """The dispatcher has seen incident `number` (GET /incidents): it is closed."""
        row = self.state.acknowledge(number, round(self.now_s * 1000))
        if row is not None and row["newly"]:
            incident = Incident(
                IncidentKind(row["kind"]), row["trip"], row["stop"], row["time_ms"] / 1000, row["detail"]
            )
            self.outbox.put(
                [incident_line(incident, row["route"], row["truck"], open_=False, at_s=self.now_s)]
            )
        return row

    def replace(self, trip_id: str, truck: str) -> str:
        """Another truck takes a trip over: its messages drive the trip from now on. See `command`."""
        return self.command("replace", trip_id, truck)

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
