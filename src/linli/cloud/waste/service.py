"""The waste service: trucks' messages in, keepers told when the truck is coming.

It takes every truck's location, lift and alarm messages, follows each trip of the timetable
from `lookahead_min` before it leaves (a `TripTracker` each), and sends each keeper notice
through the notifier's channels, with retries and the failures kept. Time is the messages'
own: the clock is the newest message's time, moved on in `tick_s` steps, so a day simulated
fast runs as a real one. Each trip runs on its own truck's time, and a message too far ahead of
the service's clock is refused (`linli.cloud.waste.clocks`): one truck cannot move the others.

Several services may share one state (PostgreSQL, on several hosts). With `routes = "every"`
each follows every trip, so any of them can stop; with `routes = "split"` they share the
routes out and take over a dead one's (`linli.cloud.waste.routes`). Either way each notice and
incident is claimed in the state before anyone is told (`linli.cloud.waste.state`), so it is
told once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import uvicorn
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError

from linli.catalog.alerts import MAX_TIME_MS
from linli.catalog.deadletter import dead_letter_envelope
from linli.catalog.errors import validation_reason
from linli.catalog.mqttclient import make_client
from linli.catalog.ratelog import RateLimitedLog
from linli.cloud.db import unreachable
from linli.cloud.notifier.channels import Message, Sender
from linli.cloud.notifier.config import Channel
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.tokens import TokenBook
from linli.cloud.waste.bookings import BookingError, Bookings, State
from linli.cloud.waste.clocks import TruckClocks
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.messages import BookingMessage, IncidentMessage, WasteNotice
from linli.cloud.waste.outbox import Outbox, incident_line, trip_line, visit_lines
from linli.cloud.waste.planner import Planner
from linli.cloud.waste.predict import History
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.requesters import Requester, deliveries
from linli.cloud.waste.routes import COMMANDS, OPENED, Logged, RouteLeases
from linli.cloud.waste.state import Leadership, WasteState
from linli.cloud.waste.tracking import Incident, IncidentKind, KeeperNotice, NoticeKind, TripTracker
from linli.transit.gtfs import (
    Contact,
    Feed,
    Trip,
    load_feed,
    runs_on,
    service_day,
    service_zero,
)

log = logging.getLogger(__name__)

# How often a service looks for deliveries whose sender's lease ran out.
ORPHANS_EVERY_S = 5.0
CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)
# Told once per stop and trip: a second one of these is never sent.
ONCE = frozenset({NoticeKind.NOTICE, NoticeKind.ARRIVED, NoticeKind.CANCELLATION, NoticeKind.DELAYED})
# A trip is given up this long after its scheduled end (a truck that never came).
OVERDUE_S = 3 * 3600
REPORT_S = 60.0  # a trip under way is written to the store this often (the trucks' time)
# Lines of the routes' log kept in memory while the state cannot be reached; older ones go
# (counted): the routes' followers then replay with what the others kept.
MAX_UNLOGGED = 100_000
PRUNE_EVERY_S = 600.0  # how often (this machine's time) the routes' log is pruned
KEEP_LOG_S = 2 * 86_400.0  # the routes' log kept this long (the trucks' time): trips are shorter
SESSION_TAKEN_OVER = 0x8E  # MQTT 5's reason: another client connected with this one's id
# A truck message is a few hundred bytes; one over 128 KiB is refused before it is parsed.
MAX_PAYLOAD = 131_072


class RefusedError(Exception):
    """A truck message not taken: `reason` is what it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    ts: Annotated[int, Field(ge=0, le=MAX_TIME_MS)]


class Location(_Payload):
    lat: float
    lon: float
    speed: float = 0.0
    acc: bool | None = None  # the ignition


class LiftMessage(_Payload):
    stop: str
    bins: int
    collected_kg: float


class OrderReply(_Payload):
    """The driver's answer to an order, from the truck terminal."""

    booking: Annotated[str, Field(min_length=1, max_length=64)]
    accept: bool


class Alarm(_Payload):
    alarm: str
    active: bool
    stop: str = ""


MESSAGES: dict[str, type[_Payload]] = {
    "location": Location,
    "lift": LiftMessage,
    "alarm": Alarm,
    "order_reply": OrderReply,
}


def _row(route: str, line: Logged) -> dict[str, Any]:
    """A line of a route's log as the state's insert takes it."""
    return {
        "route": route,
        "ts_ms": line.ts_ms,
        "truck": line.truck,
        "kind": line.kind,
        "payload": line.payload,
    }


def truck_filters(topic: str) -> list[str]:
    """What the service reads: every truck's messages it understands (and the broker grants)."""
    return [f"{topic}/+/+/{kind}" for kind in MESSAGES]


@dataclass(frozen=True)
class Resent:
    """A held message sent by another service than the one that made it, as it was made."""

    subject: str
    body_text: str
    body: dict[str, Any]

    def text(self) -> str:
        return self.body_text

    def to_json(self) -> dict[str, Any]:
        return self.body


class WasteService:
    """Everything `linli waste run` starts; `started` is set once it listens and subscribed."""

    def __init__(self, config: WasteConfig, token: str, feed: Feed | None = None) -> None:  # noqa: PLR0915 (its state, an attribute a line)
        self.config = config
        self.token = token
        self.feed = feed or load_feed(config.gtfs)
        self.history = History(self.feed.timezone)
        self.trackers: dict[str, TripTracker] = {}
        self.finished: set[str] = set()
        self.now_s = 0.0
        self._ticked_s = 0.0
        self.clocks = TruckClocks(config.max_skew_s)
        # Where refused messages go, with why (`run` sets it to the broker connection).
        self.dead_letter: Callable[[str, bytes], object] | None = None
        self._told: dict[str, int] = {}  # trip -> notices already sent
        # Trips opened while the state could not be reached: what was told of them is read later.
        self._unresumed: set[str] = set()
        # Trips finished with notices or incidents not yet claimed (the state down): told still.
        self._closed: dict[str, TripTracker] = {}
        self._unrecorded: list[tuple[int, str, str, str, str]] = []  # failed deliveries, not kept yet
        # Held deliveries under way here (waiting their turn, or sending): past their lease they
        # are this service's still, not a dead one's orphans (`send_orphans`).
        self._sending: set[int] = set()
        self.received = 0  # every message taken, good or bad
        self.rejected: Counter[str] = Counter()
        self.bookings_refused: Counter[str] = Counter()  # booking requests refused, by reason
        self.incidents: list[Incident] = []  # every incident this service found
        self._incidents_told: dict[str, int] = {}
        # How many of each notice (trip, day, stop index, kind) and incident (trip, day, kind,
        # stop) were decided: the claim's `seq`, the same in every service on the same trucks.
        self._seq: Counter[tuple[str, str, int | str, str]] = Counter()
        # The newest time (ms) of each such notice and incident told before this service followed
        # the trip: decided again at that time or before, it came from a message the broker sent
        # again after a kill (acknowledged only once taken), and was told already.
        self._resumed: dict[tuple[str, str, int | str, str], int] = {}
        self.claimed: Counter[str] = Counter()  # notices and incidents this service told, by kind
        self.state_errors = 0  # claims that could not reach the state (tried again)
        self.state_bugs = 0  # steps the state refused for a bug (a constraint violated): logged
        self.handled: Counter[str] = Counter()
        self.fixes: Counter[str] = Counter()  # what each position did: matched, off_route, stale
        self.started = asyncio.Event()
        self.sender = Sender(config.smtp, policy=config.delivery)
        self.deliveries = Deliveries(self.sender, config.attempts, self._failed, config.delivery)
        self.state = WasteState(config.state)
        self.tokens = TokenBook(self.state.engine)  # the API's, beside the token from the environment
        self.leadership = Leadership(self.state)
        self._ratelog = RateLimitedLog(log)
        self._buglog = RateLimitedLog(log, level=logging.ERROR)
        self.route_of_truck = {r.truck: rid for rid, r in self.feed.routes.items()}
        self.outbox = Outbox(self.state, self._state_error)
        self.renovation = self._renovation()
        if self.renovation is not None:
            self.renovation.record = self.outbox.put
        self._reported: dict[str, float] = {}  # trip -> when its last waste_trip point was
        # A tick's reports, written together at its end: trip -> its rows, and the store's lines.
        self._trips: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        self._lines: list[str] = []
        self._days: dict[dt.date, list[tuple[str, Trip, float, float, float]]] = {}
        # Which routes this service follows: all of them, or its share (`rebalance`).
        self.split = config.routes == "split"
        self.member = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.leases = RouteLeases(self.state.engine) if self.split else None
        self.held: set[str] = set() if self.split else set(self.feed.routes)
        self._kept: dict[str, deque[Logged]] = {}  # route -> its last messages, followed elsewhere
        self._kept_logged: dict[str, int] = {}  # route -> the newest kept line written to its log
        self._unlogged: list[dict[str, Any]] = []  # lines for the routes' log, not written yet
        self.log_dropped = 0
        self._command_id = 0  # the newest dispatcher command seen in the log
        self._applied: set[tuple[int, str, str]] = set()  # commands applied here (live or replayed)
        self._replaying = False
        self._pruned_s = 0.0
        self.taken_over = 0  # routes taken over (their trips replayed)
        self.replayed = 0  # log lines replayed
        self._recall()

    def _recall(self) -> None:
        """Learn again what the predictor learned before this start (the state's steps): a
        restarted service predicts, and corrects its keepers, as the one that stopped would."""
        try:
            learned = self.state.learned()
        except DBAPIError as exc:  # predicted from the timetable until trips teach it again
            self._state_error(exc, "reading what the predictor learned")
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
            received_ms=round(time.time() * 1000),
        )
        self.dead_letter(f"{self.config.broker.dead_letter_topic}/waste/{reason}", envelope)

    def _take(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 4 or parts[3] not in MESSAGES:
            raise RefusedError("unknown_topic", "not {topic}/{site}/{truck}/" + "|".join(MESSAGES))
        truck, kind = parts[2], parts[3]
        renovation = self.renovation is not None and truck in self.renovation.trucks
        route = self.route_of_truck.get(truck)
        if route is None and not renovation:
            raise RefusedError("unknown_truck", "runs no route of the timetable")
        message = self._parse(truck, kind, payload, route)
        t = message.ts / 1000
        self.clocks.heard(truck, t)
        self.advance(t)
        if renovation:
            self._renovation_message(truck, kind, message, t)
            return
        route = route or ""
        line = Logged(message.ts, truck, kind, payload.decode(errors="replace")) if self.split else None
        if route not in self.held:
            assert line is not None  # only a split service leaves routes to others
            self._keep(route, line)
            return
        if line is not None:
            self._log(route, line)
        tracker = self._tracker_of(route, t)
        if tracker is None:
            return
        self._apply(tracker, kind, message, t)

    def _apply(self, tracker: TripTracker, kind: str, message: _Payload, t: float) -> None:
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
        self._send_new(tracker)

    def _parse(self, truck: str, kind: str, payload: bytes, route: str | None) -> _Payload:
        """The message of `truck` (on `route`, if it runs one); RefusedError when it is too large,
        malformed, invalid, or its time is wrong."""
        if len(payload) > MAX_PAYLOAD:
            raise RefusedError("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD}")
        try:
            message = MESSAGES[kind].model_validate(json.loads(payload))
        except (ValueError, ValidationError) as exc:
            detail = validation_reason(exc) if isinstance(exc, ValidationError) else str(exc)[:200]
            raise RefusedError("invalid", detail) from exc
        except RecursionError as exc:  # JSON nested deeper than the parser goes
            raise RefusedError("invalid", "nested too deep") from exc
        # One message from a wrong clock must not move every trip on.
        refusal = self.clocks.refusal(
            truck, message.ts / 1000, others_under_way=self._under_way_besides(route)
        )
        if refusal is not None:
            raise RefusedError("bad_time", refusal)
        return message

    def _under_way_besides(self, route: str | None) -> bool:
        """Whether a trip of another route is under way: its truck reported, it is neither done
        nor broken down. Its keepers are what a message from a wrong clock would hurt."""
        return any(
            tr.seen and not tr.broken and tr.stops.next_index() is not None and tr.trip.route_id != route
            for tr in self.trackers.values()
        )

    def _renovation_message(self, truck: str, kind: str, message: _Payload, t: float) -> None:
        """A renovation truck's message: its bookings move on."""
        assert self.renovation is not None
        self.handled[kind] += 1
        try:
            if isinstance(message, Location):
                self.renovation.location(truck, message.lat, message.lon, message.speed, t)
            elif isinstance(message, LiftMessage):
                self.renovation.lift(truck, message.collected_kg, t)
            elif isinstance(message, OrderReply):
                self.renovation.reply(truck, message.booking, message.accept, t)
        except BookingError as exc:
            self._reject("booking", truck, str(exc))
        except DBAPIError as exc:  # the next position or answer moves the bookings on
            self._state_error(exc, "a renovation message")

    def _renovation(self) -> Renovation | None:
        spec = self.feed.extras.renovation
        if spec is None:
            return None
        bookings = Bookings(
            self.state, self.feed, max(t.capacity_m3 for t in spec.trucks), self.config.bookings
        )
        renovation = Renovation(
            self.feed,
            bookings,
            spec.trucks,
            self._tell_booking,
            operator=self.config.operator,
            topic=self.config.broker.topic,
            accept_s=spec.accept_min * 60,
            locale=self.config.locale,
        )
        renovation.active = self.leadership.held()
        return renovation

    def _tell_booking(self, contact: Contact | Requester, message: BookingMessage) -> None:
        # A requester is told only through the operator's channels (`[bookings]`), never its own.
        message = dataclasses.replace(message, locale=contact.locale or self.config.locale)
        sends: list[tuple[Channel, Message]] = (
            deliveries(contact, message, self.config.bookings)
            if isinstance(contact, Requester)
            else [(channel, message) for channel in contact.channels]
        )
        for channel, what in sends:
            self._deliver(contact.name, channel, what, f"booking/{message.booking.id}")

    def _deliver(self, who: str, channel: Channel, message: Message, thread: str) -> None:
        """Send in the background, kept in the state until delivered or recorded as failed: if
        this service dies first, another sends it when the lease runs out (`send_orphans`)."""
        body = json.dumps({"subject": message.subject, "text": message.text(), "json": message.to_json()})
        try:
            lease = time.time() + self.config.lease_s
            held = self.state.hold(who, channel.model_dump_json(), body, thread, lease)
        except DBAPIError as exc:
            # Sent all the same, only not kept for another service.
            self._state_error(exc, "holding a delivery")
            self.deliveries.start(who, channel, message, thread=thread)
            return
        self._send(who, channel, message, thread, held)

    def _send(self, who: str, channel: Channel, message: Message, thread: str, held: int) -> None:
        """Deliver in the background; the held row goes once it is delivered or recorded as failed."""
        finished = functools.partial(self._release, held)
        self._sending.add(held)
        self.deliveries.start(who, channel, message, thread=thread, finished=finished)

    def _release(self, held: int) -> None:
        self._sending.discard(held)
        try:
            self.state.release(held)
        except DBAPIError as exc:  # left held: sent again when its lease runs out, not lost
            self._state_error(exc, "releasing a delivery")

    def send_orphans(self) -> int:
        """Send what another service (or this one, before a restart) held and never finished; how
        many. One still under way here (a backlog longer than the lease) only has its lease taken
        again: sent again, its recipient would hear it twice."""
        now = time.time()
        orphans = [o for o in self.state.orphans(now, now + self.config.lease_s) if o[0] not in self._sending]
        for held, who, channel_json, body, thread in orphans:
            try:
                channel = CHANNEL.validate_json(channel_json)
                data = json.loads(body)
                message = Resent(str(data["subject"]), str(data["text"]), dict(data["json"]))
            except (ValidationError, ValueError, KeyError, TypeError) as exc:
                log.error("waste: a held delivery %d to %s cannot be read, dropped: %s", held, who, exc)
                self.state.release(held)  # cannot be sent, now or later: logged, not retried forever
                continue
            log.warning("waste: sending to %s what a service held and never sent: %s", who, message.subject)
            self._send(who, channel, message, thread, held)
        return len(orphans)

    def _reject(self, reason: str, source: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._ratelog.log(reason, source, "waste: message from %s refused (%s): %s", source, reason, detail)

    # --- the clock and the trips --------------------------------------------------

    def clock(self) -> float:
        """Now: the trucks' time once they have spoken (a day simulated fast is a real day)."""
        return self.now_s or time.time()

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
            if self.renovation is not None:
                try:
                    self._renovation_tick(self._ticked_s)
                except DBAPIError as exc:  # the trips tick on; the bookings at the next tick
                    self._state_error(exc, "the renovation tick")
            self._tick(self._ticked_s, self.held)

    def _tick(self, now: float, routes: set[str], opened: dict[str, Logged] | None = None) -> None:
        """One step of the clock for the trips of `routes`; `opened` when replaying a log."""
        self._open_trips(now, routes, opened)
        for key, tracker in list(self.trackers.items()):
            # A trip is announced only once its truck reports (parked, switched on): a keeper
            # never hears of a truck that is not there.
            if tracker.seen and tracker.trip.route_id in routes:
                # A trip runs on its own truck's time: a tick past it waits for the truck's next
                # message (`_catch_up`), so another truck's clock, up to `max_skew_s` ahead, moves
                # no other truck's trip. A truck quiet longer is moved on (and found silent).
                quiet_s = now - tracker.last_heard_s
                if quiet_s > self.config.max_skew_s:
                    self._catch_up(tracker, now - self.config.tick_s)
                    if quiet_s > self.config.silent_min * 60 and tracker.under_way:
                        tracker.breakdown(now, f"no message for {self.config.silent_min:.0f} min")
                    self._catch_up(tracker, now)
                self._send_new(tracker)
                self._report(key, tracker, now)
        self._close_trips(now, routes)
        self._write_reports()
        if self._closed:
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

    def _renovation_tick(self, now: float) -> None:
        """The dispatching service (`Leadership`) escalates, expires and offers what others booked."""
        assert self.renovation is not None
        self.renovation.lead(self.leadership.held(), now)
        if not self.renovation.active:
            return
        # Orders not answered, bookings past their window, and bookings another service took:
        # looked for once a minute of the trucks' time, with the report (each a query of the
        # state), not at every tick.
        if now - self._reported.get("renovation", 0.0) < REPORT_S:
            return
        open_ = self.renovation.tick(now)
        if open_ is not None and any(b.state is State.REQUESTED for b in open_):
            self.renovation.dispatch(now)
            open_ = None  # moved on: read again for the report
        self._reported["renovation"] = now
        self._lines.append(self.renovation.status_line(now, open_))

    def _due(self, now: float, routes: set[str]) -> list[tuple[str, Trip, float, float]]:
        """(key, trip, zero, when it is opened) of the trips of `routes` to follow at `now`."""
        today = dt.datetime.fromtimestamp(now, ZoneInfo(self.feed.timezone)).date()
        return [
            (key, trip, zero, opens)
            for date in (today - dt.timedelta(days=1), today)
            for key, trip, zero, opens, end in self._runs(date)
            if trip.route_id in routes and opens <= now <= end + OVERDUE_S
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

    def _open_trips(self, now: float, routes: set[str], opened: dict[str, Logged] | None = None) -> None:
        """Follow the trips due; when replaying a log (`opened`), those its follower opened here."""
        for key, trip, zero, _ in self._due(now, routes):
            if key in self.trackers or key in self.finished:
                continue
            marker = None if opened is None else opened.get(key)
            if opened is not None and (
                marker is None or abs(marker.ts_ms / 1000 - now) >= self.config.tick_s / 2
            ):
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
                told = self._resume(tracker, key, now, None if marker is None else json.loads(marker.payload))
            except DBAPIError as exc:
                if opened is not None:
                    raise  # a replay is started again at the next round, not followed on half
                if not self._state_error(exc, f"resuming trip {key}") or self.split:
                    continue  # opened at a later tick (split: its log says what was told by then)
                # Followed at once all the same, or its truck's messages meanwhile would be lost
                # with the whole trip; what was told of it is read before its first claim.
                self._unresumed.add(key)
                told = {"notices": 0, "incidents": 0}
            self.trackers[key] = tracker
            if self.split and marker is None:
                # Where a route's next follower starts replaying this trip from, with what its
                # keepers had been told by then (nothing, unless it was under way).
                self._log(
                    trip.route_id, Logged(round(now * 1000), key, OPENED, json.dumps(told)), at_once=True
                )
            log.info("waste: following trip %s", key)

    def _close_trips(self, now: float, routes: set[str]) -> None:
        for key, tracker in list(self.trackers.items()):
            if tracker.trip.route_id not in routes:
                continue
            end = tracker.zero_s + tracker.trip.stop_times[-1].arrival_s
            if tracker.stops.next_index() is None or now > end + OVERDUE_S:
                self.finished.add(key)
                del self.trackers[key]
                if self._waiting(tracker):
                    self._closed[key] = tracker  # told once the state can be reached (`send_waiting`)
                self._seen(key, tracker, now, finished=True)
                if tracker.seen:
                    truck = self.feed.routes[tracker.trip.route_id].truck
                    self._lines += [trip_line(tracker, truck, now), *visit_lines(tracker, truck)]

    def _report(self, key: str, tracker: TripTracker, now: float) -> None:
        """A trip under way, once a minute of the trucks' time (written at the tick's end)."""
        if now - self._reported.get(key, 0.0) < REPORT_S:
            return
        self._reported[key] = now
        if self._replaying:  # its follower wrote it
            return
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
            if not self._state_error(exc, "writing the trips") and trips:
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
        """A dispatcher's command (`skip` or `defer` a stop, `replace` the truck): "done";
        "queued" for the service that follows the trip's route (`routes = "split"`), which
        applies it at its next round; "" when no such trip is under way here. Raises
        DBAPIError when a command for another service cannot be queued."""
        trip = self.feed.trips.get(trip_id)
        if trip is None:
            return ""
        line = Logged(round(self.now_s * 1000), arg, kind, json.dumps({"trip": trip_id}))
        if trip.route_id not in self.held:
            assert self.leases is not None
            self.leases.log([_row(trip.route_id, line)])
            return "queued"
        if not self._command(trip.route_id, line):
            return ""
        if self.split:
            self._log(trip.route_id, line)
        return "done"

    def _command(self, route: str, line: Logged) -> bool:
        """Apply a command to the trip it names; False when there is nothing to apply it to."""
        self._applied.add(line.key)
        trip_id, t = str(json.loads(line.payload)["trip"]), line.ts_ms / 1000
        tracker = self.trip_now(trip_id)
        if tracker is None:
            return False
        if line.kind == "replace":
            self.route_of_truck[line.truck] = route
            tracker.replaced(t)
            if not self._replaying:
                log.warning("waste: truck %s takes over trip %s", line.truck, trip_id)
            return True
        done = tracker.skip(line.truck, t) if line.kind == "skip" else tracker.defer(line.truck, t)
        if done:
            # Predicted without the stop's dwell at once, at the trip's own time (not the clock's).
            tracker.tick(max(tracker.ticked_s, tracker.last_heard_s))
            self._send_new(tracker)
        return done

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

    # --- routes split between services ---------------------------------------------

    def rebalance(self, now: float) -> None:
        """One round (`routes = "split"`, every third of `member_ttl_s`): the log written, this
        service's heartbeat and leases renewed, routes let go or taken over, commands applied."""
        assert self.leases is not None
        try:
            self._flush_log()
            held, orphaned = self.leases.round(
                self.member, self.feed.routes, now, now + self.config.member_ttl_s
            )
        except DBAPIError as exc:  # the routes held stay followed; their leases may run out
            self._state_error(exc, "a round of the routes")
            return
        for route in sorted(self.held - held):
            self._let_go(route)
        self._log_kept(orphaned - held)
        if not self._ticked_s:
            # No clock yet to replay a route's trips by: taken over at a round after the first
            # message (its messages meanwhile kept).
            held &= self.held
        for route in sorted(held - self.held):
            try:
                self._take_over(route)
            except DBAPIError as exc:  # still this service's: taken over at the next round
                self._state_error(exc, "taking a route over")
                self._forget(route)
                held.discard(route)
        try:
            for number, route, line in self.leases.commands(self._command_id):
                self._command_id = number
                if line.kind == "replace":  # every service routes the new truck's messages
                    self.route_of_truck[line.truck] = route
                if route in self.held and line.key not in self._applied:
                    self._command(route, line)
            if now - self._pruned_s >= PRUNE_EVERY_S and self.now_s:
                self._pruned_s = now
                self.leases.prune(round((self.now_s - KEEP_LOG_S) * 1000))
        except DBAPIError as exc:
            self._state_error(exc, "the dispatcher commands")

    def _log_kept(self, orphaned: set[str]) -> None:
        """Routes nobody follows (their follower gone): what this service kept of them goes into
        their logs, for whichever service takes one over, even one that was not there meanwhile."""
        for route in sorted(orphaned):
            kept = self._kept.get(route, ())
            newer = self._kept_logged.get(route, -1)
            self._unlogged.extend(_row(route, line) for line in kept if line.ts_ms > newer)
            if kept:
                self._kept_logged[route] = kept[-1].ts_ms
        try:
            self._flush_log()  # before another service's round takes the route
        except DBAPIError as exc:
            self._state_error(exc, "writing the log of routes left")

    def leave(self) -> None:
        """Stopping: the log written and the routes let go, for the others to take at once."""
        if self.leases is None:
            return
        try:
            self._flush_log()
            self.leases.leave(self.member)
        except DBAPIError as exc:  # the leases run out instead
            self._state_error(exc, "leaving the routes")

    def _let_go(self, route: str) -> None:
        log.info("waste: route %s is followed by another service now", route)
        self._forget(route)
        self.held.discard(route)

    def _forget(self, route: str) -> None:
        """Drop what this service knew of a route's trips: the next follower starts over."""
        trips = {t.id for t in self.feed.trips.values() if t.route_id == route}
        for key in [k for k in (*self.trackers, *self.finished) if k.split("@")[0] in trips]:
            self.trackers.pop(key, None)
            self.finished.discard(key)
            self._reported.pop(key, None)
        for told in (self._told, self._incidents_told):
            for key in [k for k in told if k.split("@")[0] in trips]:
                del told[key]
        for seq in [k for k in self._seq if k[0] in trips]:
            del self._seq[seq]
        for seq in [k for k in self._resumed if k[0] in trips]:
            del self._resumed[seq]

    def _take_over(self, route: str) -> None:
        """Follow a route from now: its trips under way replayed from its log (what its earlier
        follower wrote, and what this service kept meanwhile), from where each was opened."""
        self.held.add(route)
        # Dropped only once replayed: a takeover that fails is tried again with them.
        kept = self._kept.get(route, deque())
        due = self._due(self._ticked_s, {route}) if self._ticked_s else []
        if not due:
            self._kept.pop(route, None)
            return
        assert self.leases is not None
        logged = {line.key: line for line in self.leases.logged(route, round(min(d[3] for d in due) * 1000))}
        # What only this service kept (sent while the route was between followers) goes into the
        # log too, or the route's next follower would replay without it.
        missing = [line for line in kept if line.key not in logged]
        for line in missing:
            logged[line.key] = line
        self._unlogged.extend(_row(route, line) for line in missing)
        lines = sorted(logged.values(), key=lambda line: line.ts_ms)
        opened: dict[str, Logged] = {}
        for line in lines:
            if line.kind == OPENED:
                # The first follower's: two that overlapped (a handover) may each have opened it.
                opened.setdefault(line.truck, line)
        if not opened:
            self._kept.pop(route, None)
            return  # trips first followed now, from what their keepers were told
        self.taken_over += 1
        start = min(line.ts_ms for line in opened.values()) / 1000
        ticks = [
            start + i * self.config.tick_s
            for i in range(int((self._ticked_s - start) / self.config.tick_s + 0.5) + 1)
        ]
        self._replaying = True
        try:
            pending = iter(ticks)
            tick = next(pending, None)
            for line in lines:
                if line.kind == OPENED or line.ts_ms / 1000 < start:
                    continue
                while tick is not None and tick <= line.ts_ms / 1000:
                    self._tick(tick, {route}, opened)
                    tick = next(pending, None)
                self._replay(route, line)
            while tick is not None:
                self._tick(tick, {route}, opened)
                tick = next(pending, None)
        finally:
            self._replaying = False
        self._kept.pop(route, None)
        try:
            self._flush_log()
        except DBAPIError as exc:  # written with the next round
            self._state_error(exc, "writing the log of a route taken over")
        self.replayed += len(lines)
        log.info("waste: took route %s over, %d lines of its log replayed", route, len(lines))

    def _replay(self, route: str, line: Logged) -> None:
        try:
            if line.kind in COMMANDS:
                self._command(route, line)
                return
            message = MESSAGES[line.kind].model_validate_json(line.payload)
            tracker = self._tracker_of(route, line.ts_ms / 1000)
            if tracker is not None:
                self._apply(tracker, line.kind, message, line.ts_ms / 1000)
        except (ValidationError, ValueError, KeyError) as exc:  # a line only a hand could spoil
            self._reject("invalid", route, f"a line of the route's log: {exc!r}"[:200])

    def _keep(self, route: str, line: Logged) -> None:
        """A message of a route followed elsewhere, kept `keep_min` of the trucks' time."""
        kept = self._kept.setdefault(route, deque())
        kept.append(line)
        while kept and kept[0].ts_ms < line.ts_ms - self.config.keep_min * 60_000:
            kept.popleft()

    def _log(self, route: str, line: Logged, *, at_once: bool = False) -> None:
        """A line for the route's log: with the next round, or `at_once`."""
        self._unlogged.append(_row(route, line))
        if at_once:
            try:
                self._flush_log()
            except DBAPIError as exc:  # written with the next round
                self._state_error(exc, "writing the log of a route")
        if len(self._unlogged) > MAX_UNLOGGED:
            self.log_dropped += len(self._unlogged) - MAX_UNLOGGED
            del self._unlogged[:-MAX_UNLOGGED]
            self._ratelog.log(
                "log",
                "state",
                "waste: the routes' log cannot be written; %d oldest lines dropped",
                self.log_dropped,
            )

    def _flush_log(self) -> None:
        if self._unlogged and self.leases is not None:
            self.leases.log(self._unlogged)
            self._unlogged = []

    # --- notices -----------------------------------------------------------------

    def _resume(
        self, tracker: TripTracker, key: str, now: float, upto: dict[str, int] | None = None
    ) -> dict[str, int]:
        """A trip newly followed (after a restart, or by a second service): what its keepers
        were told already is not told again, and the next claims count on from there.

        `upto` replays a resume of the trip's earlier follower: only the notices and incidents
        it found. Returns how many were found, for the routes' log."""
        trip_id, day = key.split("@")
        rows = self.state.told(trip_id, day)
        incidents = self.state.incidents_of(trip_id, day)
        if upto is not None:
            rows, incidents = rows[: upto["notices"]], incidents[: upto["incidents"]]
        for index, kind, time_ms, predicted_ms in rows:
            predicted = None if predicted_ms is None else predicted_ms / 1000
            tracker.already_told(index, NoticeKind(kind), time_ms / 1000, predicted)
            self._seq[(trip_id, day, index, kind)] += 1
            self._resumed[(trip_id, day, index, kind)] = time_ms
            tracker.resumed_s = max(tracker.resumed_s, time_ms / 1000)
        for kind, stop, time_ms in incidents:
            self._seq[(trip_id, day, kind, stop)] += 1
            self._resumed[(trip_id, day, kind, stop)] = time_ms
            tracker.resumed_s = max(tracker.resumed_s, time_ms / 1000)
            # Broken down already: its stops ahead were told "delayed", nothing more is promised,
            # and a truck still silent is not found broken down a second time.
            tracker.broken = tracker.broken or kind == IncidentKind.BREAKDOWN
        if upto is None:
            # Where the truck has been and the trip's pace, as the predictor had them.
            tracker.restore(self.state.steps_of(trip_id, day))
        if rows:
            # Silence is counted from the restart, not from before it.
            tracker.last_heard_s = max(tracker.last_heard_s, now)
        if rows and not self._replaying:
            log.info("waste: trip %s of %s resumes after %d notices sent", trip_id, day, len(rows))
        return {"notices": len(rows), "incidents": len(incidents)}

    def _send_incidents(self, tracker: TripTracker) -> bool:
        """Claim and tell the trip's new incidents; False when the state could not be reached
        (those not claimed yet are tried again with the trip's next message or tick)."""
        key = f"{tracker.trip.id}@{tracker.zero_s}"
        truck = self.feed.routes[tracker.trip.route_id].truck
        day = service_day(tracker.zero_s, self.feed.timezone).isoformat()
        while self._incidents_told.get(key, 0) < len(tracker.incidents):
            incident = tracker.incidents[self._incidents_told.get(key, 0)]
            seq_key = (incident.trip_id, day, str(incident.kind), incident.stop_id or "")
            if round(incident.time_s * 1000) <= self._resumed.get(seq_key, -1):
                self._incidents_told[key] = self._incidents_told.get(key, 0) + 1
                continue  # found again from a message sent again after a kill: told already
            try:
                number = self.state.claim_incident(
                    incident, day, self._seq[seq_key], tracker.trip.route_id, truck
                )
            except DBAPIError as exc:
                what = f"claiming the {incident.kind} of trip {key} at {incident.stop_id}"
                if self._state_error(exc, what):
                    return False
                number = None  # a bug: logged, and the trip's next incidents go on
            self._seq[seq_key] += 1
            self._incidents_told[key] = self._incidents_told.get(key, 0) + 1
            self.incidents.append(incident)
            if number is None:
                continue  # another service has it
            self.claimed[str(incident.kind)] += 1
            self.outbox.put(
                [incident_line(incident, tracker.trip.route_id, truck, open_=True, at_s=incident.time_s)]
            )
            log.warning(
                "waste: %s of trip %s at %s: %s",
                incident.kind,
                incident.trip_id,
                incident.stop_id,
                incident.detail,
            )
            if incident.kind is IncidentKind.BLOCKED:
                stop = self.feed.extras.stops.get(incident.stop_id or "")
                contacts = [c for c in (stop.property if stop else None, self.config.dispatcher) if c]
            else:
                contacts = [c for c in (self.config.operator, self.config.dispatcher) if c]
            waste_type = self.feed.routes[tracker.trip.route_id].waste_type
            for contact in contacts:
                locale = contact.locale or self.config.locale
                message = IncidentMessage(incident, self.feed, truck, waste_type, locale)
                for channel in contact.channels:
                    self._deliver(contact.name, channel, message, f"incident/{incident.trip_id}")
        return True

    def _send_new(self, tracker: TripTracker) -> None:
        """Claim and tell the trip's new notices, in order; while the state cannot be reached
        they wait, and go with the trip's next message or tick once it can."""
        route = self.feed.routes[tracker.trip.route_id]
        day = service_day(tracker.zero_s, self.feed.timezone)
        opened = f"{tracker.trip.id}@{day.isoformat()}"
        if opened in self._unresumed and not self._resume_late(tracker, opened):
            return
        self._keep_steps(tracker, day.isoformat())
        if not self._send_incidents(tracker):
            return
        key = f"{tracker.trip.id}@{tracker.zero_s}"
        while self._told.get(key, 0) < len(tracker.notices):
            notice = tracker.notices[self._told.get(key, 0)]
            try:
                claimed = self._record(notice, day.isoformat())
            except DBAPIError as exc:
                what = f"claiming the {notice.kind} of trip {key} at {notice.stop_id}"
                if self._state_error(exc, what):
                    return
                claimed = False  # a bug: logged, and the trip's next notices go on
            self._told[key] = self._told.get(key, 0) + 1
            if not claimed:
                continue
            self.claimed[str(notice.kind)] += 1
            extras = self.feed.extras.stops[notice.stop_id]
            for keeper in extras.keepers:
                locale = keeper.locale or self.config.locale
                message = WasteNotice(notice, self.feed, route.truck, route.waste_type, locale)
                for channel in keeper.channels:
                    self._deliver(keeper.name, channel, message, f"{notice.trip_id}/{notice.index}")

    def _keep_steps(self, tracker: TripTracker, day: str) -> None:
        """What the trip taught the predictor, kept before its notices are claimed: a service
        restarted after telling them has learned it too. While the state cannot be reached the
        steps wait for the trip's next message or tick."""
        steps = tracker.state.steps
        if not steps:
            return
        try:
            self.state.keep_steps(tracker.trip.id, day, tracker.trip.route_id, steps)
        except DBAPIError as exc:
            if self._state_error(exc, f"keeping the steps of trip {tracker.trip.id} of {day}"):
                return
        steps.clear()

    def _record(self, n: KeeperNotice, day: str) -> bool:
        """Claim a notice before it is sent; False when it is claimed already (by this service
        before a restart, or by another on the same state), or is one of a kind told once.
        Raises DBAPIError, counting nothing, when the state cannot be reached."""
        key = (n.trip_id, day, n.index, str(n.kind))
        if n.kind not in ONCE and round(n.time_s * 1000) <= self._resumed.get(key, -1):
            return False  # decided again from a message sent again after a kill: told already
        claimed = self.state.claim_notice(n, day, 0 if n.kind in ONCE else self._seq[key])
        self._seq[key] += 1
        return claimed

    def _resume_late(self, tracker: TripTracker, key: str) -> bool:
        """A trip opened while the state could not be reached: what was told of it (before a
        restart) is read before its first claim. False while the state still cannot be reached."""
        if not (tracker.notices or tracker.incidents):
            try:
                self._resume(tracker, key, tracker.last_heard_s)
            except DBAPIError as exc:
                if self._state_error(exc, f"resuming trip {key}"):
                    return False
        # Else it decided its own already, as any follower does: their claims find what was
        # told (the same notices, numbered the same) and send none of it again.
        self._unresumed.discard(key)
        return True

    def _waiting(self, tracker: TripTracker) -> int:
        """A trip's notices and incidents decided and not claimed yet."""
        key = f"{tracker.trip.id}@{tracker.zero_s}"  # as `_send_new` counts them
        told = self._told.get(key, 0) + self._incidents_told.get(key, 0)
        return len(tracker.notices) + len(tracker.incidents) - told

    @property
    def waiting(self) -> int:
        """Notices, incidents and failed deliveries the state has not taken yet: each goes once
        it can be reached."""
        trips = [*self.trackers.values(), *self._closed.values()]
        return sum(self._waiting(tracker) for tracker in trips) + len(self._unrecorded)

    def send_waiting(self) -> None:
        """Claim and tell what waited for the state (at each tick, and every few seconds of this
        machine's time: the trucks may have nothing more to say), and record the failures."""
        for tracker in [*self.trackers.values(), *self._closed.values()]:
            if self._waiting(tracker) > 0:
                self._send_new(tracker)
        for key, tracker in list(self._closed.items()):
            if not self._waiting(tracker):
                del self._closed[key]
        self._record_failures()

    def _record_failures(self) -> None:
        while self._unrecorded:
            try:
                self.state.failed(*self._unrecorded[0])
            except DBAPIError as exc:
                if self._state_error(exc, "recording a failed delivery"):
                    return
                log.error("waste: a failed delivery not kept: %s", self._unrecorded[0])
            del self._unrecorded[0]

    def _state_error(self, exc: DBAPIError, what: str) -> bool:
        """A step the state refused; True when it cannot be reached (down, restarting, a
        connection dropped): an outage, what the step was for waits and is tried again. False
        for a bug (a constraint violated, a statement refused), which trying again does not mend:
        logged at ERROR with `what` it was, and counted in `state_bugs`."""
        if unreachable(exc):
            self.state_errors += 1
            self._ratelog.log(
                "state",
                "state",
                "waste: the state cannot be reached, notices wait: %s",
                str(exc).splitlines()[0],
            )
            return True
        self.state_bugs += 1
        self._buglog.log(what, "state", "waste: %s failed, a bug to report: %r", what, exc)
        return False

    def _failed(self, who: str, channel: Channel, message: Any, error: str) -> None:
        """A delivery given up: recorded in the state (`GET /failed-deliveries`), kept here
        while the state cannot be reached."""
        self._unrecorded.append(
            (round(self.now_s * 1000), who, str(channel.kind), json.dumps(message.to_json()), error)
        )
        self._record_failures()

    def notices(self, limit: int = 1000, day: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` notices, of one service day (ISO date) if given."""
        return self.state.notices(limit, day)

    def failures(self) -> list[dict[str, Any]]:
        return self.state.failures()

    # --- running -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        from linli.cloud.waste.api import app

        # What the service holds from its start (the modules, the timetable, the roads) is left
        # out of the collector's full passes, which took 0.2-0.5 s of the event loop in a flood
        # of bookings; and the planning process forked next shares it without copying it.
        gc.freeze()
        if self.renovation is not None:  # its worker forked first, before any thread starts
            self.renovation.planner = Planner(self.renovation)
        loop = asyncio.get_running_loop()
        subscribed = threading.Event()
        client = self._client(loop, subscribed)
        # Keepers and offices on MQTT channels are told through the same broker connection,
        # and renovation orders go to the trucks' terminals on it.
        self.sender.publish = lambda topic, payload: client.publish(topic, payload, qos=1)
        self.dead_letter = lambda topic, payload: client.publish(topic, payload, qos=1)
        if self.renovation is not None:
            self.renovation.publish = lambda topic, payload: client.publish(topic, payload, qos=1)
        server = uvicorn.Server(
            uvicorn.Config(
                app(self, self.token),
                host=self.config.api_host,
                port=self.config.api_port,
                log_level="warning",
                lifespan="off",
            )
        )
        api = asyncio.create_task(server.serve())
        client.loop_start()
        try:
            while not (server.started and subscribed.is_set()):
                if api.done():
                    return 1
                await asyncio.sleep(0.05)
            log.info(
                "waste: API on %s:%d; %d trips in the timetable",
                self.config.api_host,
                self.config.api_port,
                len(self.feed.trips),
            )
            self.started.set()
            orphans = asyncio.create_task(self._send_orphans_until(stop))
            rounds = asyncio.create_task(self._rebalance_until(stop)) if self.split else None
            await self._flush_until(stop)
            await orphans
            if rounds is not None:
                await rounds
        finally:
            self.leave()
            client.disconnect()
            client.loop_stop()
            server.should_exit = True
            await api
            if self.renovation is not None and self.renovation.planner is not None:
                await self.renovation.planner.close()  # before the deliveries are drained
            await self.deliveries.drain()
            await self.sender.close()
            # What an operator pressing Ctrl-C wants to know: what it did, and what is left.
            log.info(
                "waste: stopped; %d truck messages taken, %d notices claimed, %d waiting for the "
                "state, %d deliveries recorded as failed, %d store lines kept for the next start",
                self.received,
                sum(self.claimed.values()),
                self.waiting,
                sum(self.deliveries.gave_up.values()),
                self.outbox.pending(),
            )
            self.leadership.close()
            self.state.close()
        return 0

    async def _send_orphans_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ORPHANS_EVERY_S)
            self.send_waiting()
            try:
                self.send_orphans()
            except DBAPIError as exc:
                self._state_error(exc, "sending orphaned deliveries")

    async def _rebalance_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.rebalance(time.time())
            except Exception:  # a bug costs a round, never the rounds to come
                log.exception("waste: a round of the routes failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.member_ttl_s / 3)

    async def _flush_until(self, stop: asyncio.Event) -> None:
        """Write the outbox to the store every `flush_s`, and once more at the stop."""
        store = self.config.store
        if store is None:
            await stop.wait()
            return
        token = os.environ.get(store.token_env) or None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), store.flush_s)
            await asyncio.to_thread(self.outbox.flush, store, token)

    def _client(self, loop: asyncio.AbstractEventLoop, subscribed: threading.Event) -> paho.Client:
        """The trucks' feed: a persistent session (`WasteConfig.client_id`), so the broker keeps
        what the trucks send while this service is away, and each message acknowledged only once
        it is taken: one a kill cuts short comes again after the restart."""
        b = self.config.broker
        client = make_client(
            b,
            self.config.client_id(),
            protocol=paho.MQTTv5,
            persistent=True,
            session_expiry_s=b.session_expiry_s,
            manual_ack=True,
        )
        # Not a shared subscription: every service follows every truck (see the module's doc).
        filters = [(t, 1) for t in truck_filters(b.topic)]
        connection = [0]  # a message is acknowledged on the connection it came by, or not at all

        def on_connect(c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            if reason.is_failure:
                log.error("waste: broker %s:%d refused: %s", b.host, b.port, reason)
                return
            connection[0] += 1
            c.subscribe(filters)

        def on_disconnect(_c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            if reason.value == SESSION_TAKEN_OVER:
                self._ratelog.log(
                    "session",
                    "broker",
                    "waste: another service connected as %s and took this one's session; give each "
                    "service on this broker and state its own `name` in its config",
                    self.config.client_id(),
                )

        def take(c: paho.Client, msg: paho.MQTTMessage, on: int) -> None:
            # On the event loop: once taken, what the message decided is claimed and held in
            # the state, and the broker may forget it.
            self.take(msg.topic, bytes(msg.payload))
            if on == connection[0]:
                c.ack(msg.mid, msg.qos)

        def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed at the stop
                loop.call_soon_threadsafe(take, c, msg, connection[0])

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = on_message
        return client
