"""Each keeper notice and incident a trip decides, claimed in the state and told once.

A notice or incident is claimed by inserting it under a unique key (trip and day, stop, kind,
and the how-many-th of that kind for that stop: `seq`) before anyone is told; the service whose
insert lands tells it, any other on the same state finds it there and says nothing. While the
state cannot be reached, what is decided waits here and goes with the trip's next message or
tick once it can.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from sqlalchemy.exc import DBAPIError

from linli.catalog.channels import Channel
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.held import HeldDeliveries, StateError
from linli.cloud.waste.messages import IncidentMessage, WasteNotice
from linli.cloud.waste.outbox import Outbox, incident_line
from linli.cloud.waste.state import WasteState
from linli.cloud.waste.tracking import Incident, IncidentKind, KeeperNotice, NoticeKind, TripTracker
from linli.transit.extras import Contact
from linli.transit.gtfs import Feed, service_day

log = logging.getLogger(__name__)

# Told once per stop and trip: a second one of these is never sent.
ONCE = frozenset({NoticeKind.NOTICE, NoticeKind.ARRIVED, NoticeKind.CANCELLATION, NoticeKind.DELAYED})


class Claims:
    """What the trips followed here decided, claimed and told; `claimed` counts what this
    service told, by kind, and `incidents` every incident it found."""

    def __init__(
        self,
        config: WasteConfig,
        feed: Feed,
        state: WasteState,
        *,
        outbox: Outbox,
        held: HeldDeliveries,
        state_error: StateError,
    ) -> None:
        self.config = config
        self.feed = feed
        self.state = state
        self.outbox = outbox
        self.held = held
        self.state_error = state_error
        self._told: dict[str, int] = {}  # trip -> notices already sent
        self._incidents_told: dict[str, int] = {}
        # Trips opened while the state could not be reached: what was told of them is read later.
        self.unresumed: set[str] = set()
        # Trips finished with notices or incidents not yet claimed (the state down): told still.
        self.closed: dict[str, TripTracker] = {}
        # How many of each notice (trip, day, stop index, kind) and incident (trip, day, kind,
        # stop) were decided: the claim's `seq`, the same in every service on the same trucks.
        self._seq: Counter[tuple[str, str, int | str, str]] = Counter()
        # The newest time (ms) of each such notice and incident told before this service followed
        # the trip: decided again at that time or before, it came from a message the broker sent
        # again after a kill (acknowledged only once taken), and was told already.
        self._resumed: dict[tuple[str, str, int | str, str], int] = {}
        self.claimed: Counter[str] = Counter()  # notices and incidents this service told, by kind
        self.incidents: list[Incident] = []  # every incident this service found

    def resume(self, tracker: TripTracker, key: str, now: float) -> None:
        """A trip newly followed (after a restart, or by a second service): what its keepers
        were told already is not told again, and the next claims count on from there."""
        trip_id, day = key.split("@")
        rows = self.state.told(trip_id, day)
        incidents = self.state.incidents_of(trip_id, day)
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
        # Where the truck has been and the trip's pace, as the predictor had them.
        tracker.restore(self.state.steps_of(trip_id, day))
        if rows:
            # Silence is counted from the restart, not from before it.
            tracker.last_heard_s = max(tracker.last_heard_s, now)
            log.info("waste: trip %s of %s resumes after %d notices sent", trip_id, day, len(rows))

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
            contacts = self._told_of(incident)
            waste_type = self.feed.routes[tracker.trip.route_id].waste_type
            deliveries = [
                (contact.name, channel, IncidentMessage(incident, self.feed, truck, waste_type, locale))
                for contact in contacts
                for locale in [contact.locale or self.config.locale]
                for channel in contact.channels
            ]
            thread = f"incident/{incident.trip_id}"
            holds = [self.held.holding(who, channel, message, thread) for who, channel, message in deliveries]
            try:
                # Claimed with its deliveries held, in one transaction: a state failing between
                # the two cannot leave it recorded as told and never sent.
                claimed = self.state.claim_incident_and_hold(
                    incident, day, self._seq[seq_key], tracker.trip.route_id, truck, holds=holds
                )
            except DBAPIError as exc:
                what = f"claiming the {incident.kind} of trip {key} at {incident.stop_id}"
                if self.state_error(exc, what):
                    return False
                claimed = None  # a bug: logged, and the trip's next incidents go on
            self._seq[seq_key] += 1
            self._incidents_told[key] = self._incidents_told.get(key, 0) + 1
            self.incidents.append(incident)
            if claimed is None:
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
            for (who, channel, message), row in zip(deliveries, claimed[1], strict=True):
                self.held.start(who, channel, message, thread, row)
        return True

    def _told_of(self, incident: Incident) -> list[Contact]:
        """Who hears of an incident: a blocked gate's property office (else the operator), and
        the dispatcher."""
        if incident.kind is IncidentKind.BLOCKED:
            stop = self.feed.extras.stops.get(incident.stop_id or "")
            return [c for c in (stop.property if stop else None, self.config.dispatcher) if c]
        return [c for c in (self.config.operator, self.config.dispatcher) if c]

    def send_new(self, tracker: TripTracker) -> None:
        """Claim and tell the trip's new notices, in order; while the state cannot be reached
        they wait, and go with the trip's next message or tick once it can."""
        if not (tracker.state.steps or self.unresumed or self.waiting_of(tracker)):
            return  # most calls (a parked truck's ticks, most fixes): nothing to keep or claim
        route = self.feed.routes[tracker.trip.route_id]
        day = service_day(tracker.zero_s, self.feed.timezone)
        opened = f"{tracker.trip.id}@{day.isoformat()}"
        if opened in self.unresumed and not self._resume_late(tracker, opened):
            return
        self._keep_steps(tracker, day.isoformat())
        if not self._send_incidents(tracker):
            return
        key = f"{tracker.trip.id}@{tracker.zero_s}"
        while self._told.get(key, 0) < len(tracker.notices):
            notice = tracker.notices[self._told.get(key, 0)]
            thread = f"{notice.trip_id}/{notice.index}"
            deliveries = [
                (keeper.name, channel, WasteNotice(notice, self.feed, route.truck, route.waste_type, locale))
                for keeper in self.feed.extras.stops[notice.stop_id].keepers
                for locale in [keeper.locale or self.config.locale]
                for channel in keeper.channels
            ]
            try:
                held = self._record(notice, day.isoformat(), deliveries, thread)
            except DBAPIError as exc:
                what = f"claiming the {notice.kind} of trip {key} at {notice.stop_id}"
                if self.state_error(exc, what):
                    return
                held = None  # a bug: logged, and the trip's next notices go on
            self._told[key] = self._told.get(key, 0) + 1
            if held is None:
                continue
            self.claimed[str(notice.kind)] += 1
            for (who, channel, message), row in zip(deliveries, held, strict=True):
                self.held.start(who, channel, message, thread, row)

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
            if self.state_error(exc, f"keeping the steps of trip {tracker.trip.id} of {day}"):
                return
        steps.clear()

    def _record(
        self, n: KeeperNotice, day: str, deliveries: list[tuple[str, Channel, WasteNotice]], thread: str
    ) -> list[int] | None:
        """Claim a notice before it is sent, its deliveries held in the same transaction: their
        holds, or None when it is claimed already (by this service before a restart, or by
        another on the same state), or is one of a kind told once. Raises DBAPIError, counting
        nothing, when the state cannot be reached."""
        key = (n.trip_id, day, n.index, str(n.kind))
        if n.kind not in ONCE and round(n.time_s * 1000) <= self._resumed.get(key, -1):
            return None  # decided again from a message sent again after a kill: told already
        holds = [self.held.holding(who, channel, message, thread) for who, channel, message in deliveries]
        held = self.state.claim_and_hold(n, day, 0 if n.kind in ONCE else self._seq[key], holds)
        self._seq[key] += 1
        return held

    def _resume_late(self, tracker: TripTracker, key: str) -> bool:
        """A trip opened while the state could not be reached: what was told of it (before a
        restart) is read before its first claim. False while the state still cannot be reached."""
        if not (tracker.notices or tracker.incidents):
            try:
                self.resume(tracker, key, tracker.last_heard_s)
            except DBAPIError as exc:
                if self.state_error(exc, f"resuming trip {key}"):
                    return False
        # Else it decided its own already, as any follower does: their claims find what was
        # told (the same notices, numbered the same) and send none of it again.
        self.unresumed.discard(key)
        return True

    def waiting_of(self, tracker: TripTracker) -> int:
        """A trip's notices and incidents decided and not claimed yet."""
        key = f"{tracker.trip.id}@{tracker.zero_s}"  # as `send_new` counts them
        told = self._told.get(key, 0) + self._incidents_told.get(key, 0)
        return len(tracker.notices) + len(tracker.incidents) - told

    def waiting(self, followed: Iterable[TripTracker]) -> int:
        """Notices, incidents and failed deliveries the state has not taken yet, of the trips
        `followed` and those finished: each goes once it can be reached."""
        trips = [*followed, *self.closed.values()]
        return sum(self.waiting_of(tracker) for tracker in trips) + len(self.held.unrecorded)

    def send_waiting(self, followed: Iterable[TripTracker]) -> None:
        """Claim and tell what waited for the state, of the trips `followed` and those
        finished, and record the failures."""
        for tracker in [*followed, *self.closed.values()]:
            if self.waiting_of(tracker) > 0:
                self.send_new(tracker)
        for key, tracker in list(self.closed.items()):
            if not self.waiting_of(tracker):
                del self.closed[key]
        self.held.record_failures()
