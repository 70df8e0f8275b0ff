"""Renovation bookings inside the waste service: dispatch, the drivers' answers, the trucks'
positions and lifts moving each booking on, and everyone told.

Each change re-plans (`dispatch.plan`): a booking a truck is given is offered to its driver on
`{topic}/{site}/{truck}/order`; the driver answers on `.../order_reply` ({"booking", "accept"}).
A declined order goes to another truck; one not answered within `accept_min` is escalated to
the operating company and offered again. The truck driving to its accepted pickup makes it en
route, stopping at the pile makes it arrived, its lift makes it collected (the kilograms from the
truck's scale), and leaving closes it. A pickup planned for later (tomorrow's window) stays
requested, with its predicted time, until it is planned within `OFFER_AHEAD_S`: the order tells
the driver when the window opens. A booking no truck reached by the end of its window expires.
The requester hears every step, with the truck and the predicted time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from linli.catalog.i18n import DEFAULT_LOCALE, Locale
from linli.catalog.lineprotocol import format_line
from linli.cloud.waste.bookings import OPEN, Booking, BookingError, BookingRequest, Bookings, State
from linli.cloud.waste.dispatch import Pickup, Plan, TruckNow
from linli.cloud.waste.messages import BookingMessage, TruckOrder
from linli.cloud.waste.planner import Planner, Problem
from linli.cloud.waste.requesters import Requester
from linli.transit.extras import Contact, RenovationTruck
from linli.transit.gtfs import Feed, metres, service_zero
from linli.transit.roads import Roads

log = logging.getLogger(__name__)

AT_PILE_M = 60.0  # a truck this close to a pile, nearly still, is there
AT_RISK_S = 3600.0  # a booking in no truck's round with less than this left is at risk
# A pickup is offered to its driver once it is planned within this of now. Offered earlier (a
# booking for tomorrow morning, planned at this evening's end of shift), the driver set off at
# once and collected it hours before the requester's window.
OFFER_AHEAD_S = 3600.0
STILL_KMH = 3.0
# Bookings no truck has come for yet: past their window, they expire.
WAITING = frozenset({State.REQUESTED, State.OFFERED, State.ACCEPTED})


# The operator is a Contact (the notifier's channels, from the config); a requester never is.
Tell = Callable[[Contact | Requester, BookingMessage], None]
Publish = Callable[[str, str], object]


class Renovation:
    """The renovation trucks and their bookings."""

    def __init__(
        self,
        feed: Feed,
        bookings: Bookings,
        trucks: list[RenovationTruck],
        tell: Tell,
        *,
        operator: Contact | None,
        topic: str = "trucks",
        site: str = "fleet",
        accept_s: float = 600.0,
        locale: Locale = DEFAULT_LOCALE,
    ) -> None:
        self.feed = feed
        self.bookings = bookings
        self.trucks = {t.id: t for t in trucks}
        self.tell = tell
        self.operator = operator
        self.topic, self.site = topic, site
        self.accept_s = accept_s
        self.locale = locale  # the drivers' terminals', unless a truck names its own
        self.publish: Publish | None = None
        self.roads = Roads(feed)
        depot = feed.stops[feed.extras.depots[0]] if feed.extras.depots else next(iter(feed.stops.values()))
        self.depot = depot.xy
        self.at: dict[str, tuple[float, float]] = {t: self.depot for t in self.trucks}
        self.load: dict[str, float] = dict.fromkeys(self.trucks, 0.0)
        self.offered_s: dict[str, float] = {}
        self.declined: dict[str, set[str]] = {}
        self.escalated: set[str] = set()
        self.predicted: dict[str, float] = {}
        self.plan = Plan()
        self.planner: Planner | None = None  # plans off the event loop; None: here, at once
        self.record: Callable[[list[str]], None] | None = None  # lines for the store
        # Of several services on one state, one dispatches (`Leadership`); the others keep the
        # trucks' places and loads, take bookings and cancellations, and change nothing else.
        self.active = True
        self._recall()

    def lead(self, active: bool, now_s: float) -> None:
        """Start or stop dispatching; a service taking over reads the trail first, as after a restart."""
        if active and not self.active:
            self.offered_s.clear()
            self.declined.clear()
            self.escalated.clear()
            self._recall()
            self.active = True
            self.dispatch(now_s)
        self.active = active

    def _recall(self) -> None:
        """After a restart: which orders wait for an answer, which drivers declined, from the trail.

        Every step is committed before it is told, so the trail knows what memory lost: an order
        offered before the restart is still escalated `accept_min` after it was offered.
        """
        for b in self.bookings.all(frozenset({State.REQUESTED, State.OFFERED})):
            offered_to = ""
            for step in self.bookings.trail(b.id):
                if step["state"] == State.OFFERED:
                    offered_to = step["truck"] or ""
                    self.offered_s[b.id] = step["at_ms"] / 1000
                elif step["detail"] in ("declined", "not answered"):
                    self.declined.setdefault(b.id, set()).add(offered_to)
                    self.offered_s.pop(b.id, None)
                    if step["detail"] == "not answered" or self.declined[b.id] >= set(self.trucks):
                        self.escalated.add(b.id)  # told once already
            if b.state is not State.OFFERED:
                self.offered_s.pop(b.id, None)

    # --- property staff -------------------------------------------------------------------

    def book(
        self, request: BookingRequest, now_s: float, by: str, office: str | None = None
    ) -> tuple[Booking, bool]:
        booking, new = self.bookings.create(request, now_s, by, office)
        if new:
            self._tell(booking, "requested", now_s)
            self.dispatch(now_s)
        return self.bookings.get(booking.id) or booking, new

    def cancel(self, booking_id: str, now_s: float, by: str) -> Booking:
        booking = self.bookings.move(booking_id, State.CANCELLED, now_s, by)
        self._tell(booking, "cancelled", now_s)
        if booking.truck and self.publish is not None:
            self._order(booking.truck, TruckOrder(booking, "cancelled", self.feed, now_s=now_s))
        self.dispatch(now_s)
        return booking

    # --- dispatch -------------------------------------------------------------------------

    def dispatch(self, now_s: float) -> Plan:
        """Plan again; offer each truck's next pickup to its driver if nobody has it yet.

        With a `planner` the plan is solved off the event loop and applied when it returns;
        the plan in force until then is returned."""
        if not self.active:
            return self.plan
        if self.planner is not None:
            self.planner.want(now_s)
            return self.plan
        problem = self.problem(now_s)
        assert problem is not None
        return self.apply(problem.solve(self.roads), now_s)

    def problem(self, now_s: float) -> Problem | None:
        """What to plan: the trucks and the open pickups now; None unless dispatching."""
        if not self.active:
            return None
        every = self.bookings.all(OPEN)
        open_ = [b for b in every if b.state not in (State.EN_ROUTE, State.ARRIVED)]
        busy = {b.truck: b for b in every if b.state in (State.EN_ROUTE, State.ARRIVED) and b.truck}
        trucks = []
        for tid, spec in self.trucks.items():
            start, end = self._shift(spec, now_s)
            current = busy.get(tid)
            at = metres(current.lat, current.lon) if current else self.at[tid]
            free = max(now_s, start, self.predicted.get(current.id, now_s) if current else now_s)
            room = spec.capacity_m3 - self.load[tid] - (current.m3 if current else 0.0)
            trucks.append(TruckNow(tid, at, free, room, end))
        pickups = [
            Pickup(
                b.id,
                metres(b.lat, b.lon),
                b.m3,
                b.earliest_s,
                b.latest_s,
                b.truck if b.state is State.ACCEPTED else None,
            )
            for b in open_
            if not (b.state is State.REQUESTED and self.declined.get(b.id, set()) >= set(self.trucks))
        ]
        return Problem(tuple(trucks), tuple(pickups), self.depot, now_s)

    def apply(self, found: Plan, now_s: float) -> Plan:
        """Put a plan in force and offer each round's first pickup nobody holds yet.

        The plan may have been solved while the bookings moved on: one no longer open (cancelled,
        expired meanwhile) is dropped from its round, and only a booking still requested is offered;
        a service no longer dispatching (`lead`) drops the plan.
        """
        if not self.active:
            return self.plan
        still = {b.id for b in self.bookings.all(OPEN)}
        firsts = {tid: rounds[0] for tid, rounds in found.rounds.items() if rounds}
        found.rounds = {tid: [(b, at) for b, at in r if b in still] for tid, r in found.rounds.items()}
        self.plan = found
        for rounds in found.rounds.values():
            for booking_id, arrival in rounds:
                self.predicted[booking_id] = arrival
        for tid, (booking_id, arrival) in firsts.items():
            booking = self.bookings.get(booking_id)
            if (
                booking is not None
                and booking.state is State.REQUESTED
                and tid not in self.declined.get(booking_id, set())
                and arrival - now_s <= OFFER_AHEAD_S  # later: offered by a later plan
            ):
                offered = self.bookings.move(booking_id, State.OFFERED, now_s, "dispatch", truck=tid)
                self.offered_s[booking_id] = now_s
                self._order(tid, TruckOrder(offered, "offered", self.feed, arrival, now_s=now_s))
                self._tell(offered, "offered", now_s)
        return found

    def reply(self, truck: str, booking_id: str, accept: bool, now_s: float) -> None:
        """The driver's answer from the truck terminal."""
        if not self.active:
            return
        booking = self.bookings.get(booking_id)
        if booking is None or booking.state is not State.OFFERED or booking.truck != truck:
            raise BookingError(f"booking {booking_id} is not offered to {truck}")
        offered = self.offered_s.pop(booking_id, now_s)
        if accept:
            accepted = self.bookings.move(booking_id, State.ACCEPTED, now_s, f"driver of {truck}")
            self._tell(accepted, "accepted", now_s, accept_min=(now_s - offered) / 60)
        else:
            self.declined.setdefault(booking_id, set()).add(truck)
            self.bookings.move(booking_id, State.REQUESTED, now_s, f"driver of {truck}", detail="declined")
            if self.declined[booking_id] >= set(self.trucks):
                self._escalate(booking_id, now_s, "every driver declined")
        self.dispatch(now_s)

    # --- the trucks -----------------------------------------------------------------------

    def location(self, truck: str, lat: float, lon: float, speed_kmh: float, now_s: float) -> None:
        self.at[truck] = metres(lat, lon)
        depot = math.dist(self.at[truck], self.depot) <= AT_PILE_M
        if depot and speed_kmh <= STILL_KMH and self.load[truck] > 0:
            self.load[truck] = 0.0  # unloaded at the transfer station
        if not self.active:
            return
        for b in self.bookings.all(
            frozenset({State.ACCEPTED, State.EN_ROUTE, State.ARRIVED, State.COLLECTED})
        ):
            if b.truck != truck:
                continue
            near = math.dist(self.at[truck], metres(b.lat, b.lon)) <= AT_PILE_M
            if b.state is State.ACCEPTED and speed_kmh > STILL_KMH and self.next_of(truck) == b.id:
                self._tell(self.bookings.move(b.id, State.EN_ROUTE, now_s, truck), "en_route", now_s)
            elif b.state is State.EN_ROUTE and near and speed_kmh <= STILL_KMH:
                self._tell(self.bookings.move(b.id, State.ARRIVED, now_s, truck), "arrived", now_s)
            elif b.state is State.COLLECTED and not near:
                self._tell(self.bookings.move(b.id, State.CLOSED, now_s, truck), "closed", now_s)

    def lift(self, truck: str, kg: float, now_s: float) -> None:
        for b in self.bookings.all(frozenset({State.ARRIVED})):
            if b.truck == truck and not self.active:
                self.load[truck] += b.m3  # what the dispatching service counts too
                return
            if b.truck == truck:
                collected = self.bookings.move(b.id, State.COLLECTED, now_s, truck, kg=kg)
                self.load[truck] += b.m3
                self._tell(collected, "collected", now_s)
                self.dispatch(now_s)
                return

    def tick(self, now_s: float) -> list[Booking] | None:
        """Orders not answered in time are escalated; bookings past their window expire. The
        open bookings after that (no query of them when none changed), None unless dispatching."""
        if not self.active:
            return None
        moved = False
        for booking_id, since in list(self.offered_s.items()):
            if now_s - since > self.accept_s:
                booking = self.bookings.get(booking_id)
                del self.offered_s[booking_id]
                if booking is None or booking.state is not State.OFFERED:
                    continue
                self.declined.setdefault(booking_id, set()).add(booking.truck or "")
                self.bookings.move(booking_id, State.REQUESTED, now_s, "dispatch", detail="not answered")
                self._escalate(booking_id, now_s, f"the driver of {booking.truck} did not answer")
                self.dispatch(now_s)
        # Read again only when a booking changed (`Bookings.open`): most minutes, none did.
        open_ = self.bookings.open()
        for b in open_:
            if b.state in WAITING and now_s > b.latest_s:
                self._tell(self.bookings.move(b.id, State.EXPIRED, now_s, "dispatch"), "expired", now_s)
                moved = True
        return self.bookings.open() if moved else open_

    # --- telling ----------------------------------------------------------------------------

    def _shift(self, spec: RenovationTruck, now_s: float) -> tuple[float, float]:
        """The truck's shift now or next: a shift ending at or before its start ends the next day."""
        today = _local_date(now_s, self.feed.timezone)
        for date in (today - dt.timedelta(days=1), today, today + dt.timedelta(days=1)):
            zero = service_zero(date, self.feed.timezone)
            start, end = zero + spec.shift_start_s, zero + spec.shift_end_s
            if end <= start:
                end += 86400
            if end > now_s:
                return start, end
        return now_s, now_s  # not reached: tomorrow's shift always ends after now

    def next_of(self, truck: str) -> str | None:
        rounds = self.plan.rounds.get(truck, [])
        return rounds[0][0] if rounds else None

    def _escalate(self, booking_id: str, now_s: float, why: str) -> None:
        booking = self.bookings.get(booking_id)
        if booking is None or booking_id in self.escalated:
            return
        self.escalated.add(booking_id)
        log.warning("waste: booking %s escalated: %s", booking_id, why)
        if self.operator is not None:
            self.tell(self.operator, BookingMessage(booking, "escalated", self.feed, detail=why, now_s=now_s))

    def _tell(self, booking: Booking, state: str, now_s: float, *, accept_min: float | None = None) -> None:
        message = BookingMessage(booking, state, self.feed, self.predicted.get(booking.id), now_s=now_s)
        self.tell(booking.contact, message)
        if self.record is not None:
            self.record([booking_line(booking, state, now_s, accept_min)])

    # --- the dispatcher's view ------------------------------------------------------------------

    def at_risk(self, now_s: float, open_: list[Booking] | None = None) -> list[str]:
        """Open bookings that may miss their window: predicted after it, or in no round with an
        hour left. `open_`: the open bookings, if the caller has just read them."""
        planned = {b for rounds in self.plan.rounds.values() for b, _ in rounds}
        out = []
        for b in self.bookings.all(OPEN) if open_ is None else open_:
            if b.state is State.ARRIVED:
                continue
            late = self.predicted.get(b.id, 0.0) > b.latest_s
            stranded = (
                b.id not in planned and b.state is not State.EN_ROUTE and b.latest_s - now_s < AT_RISK_S
            )
            if late or stranded:
                out.append(b.id)
        return out

    def status_line(self, now_s: float, open_: list[Booking] | None = None) -> str:
        """Bookings by state and the trucks driving to one, for the big screen; from `open_`, the
        open bookings if the caller has just read them (once a minute: one query, not three)."""
        if open_ is None:
            open_ = self.bookings.all(OPEN)
        counts = {str(s): 0 for s in OPEN}
        for b in open_:
            counts[str(b.state)] += 1
        fields: dict[str, str | int | float | bool] = {
            "open": sum(counts.values()),
            **counts,
            "at_risk": len(self.at_risk(now_s, open_)),
            "trucks_en_route": len({b.truck for b in open_ if b.state is State.EN_ROUTE and b.truck}),
        }
        return format_line("waste_renovation", {}, fields, round(now_s * 1000))

    def _order(self, truck: str, order: TruckOrder) -> None:
        """Show the driver the order, in the truck's language (its own, else the district's)."""
        if self.publish is not None:
            spec = self.trucks.get(truck)
            locale = (spec.locale if spec else None) or self.locale
            stamped = {"ts": round(time.time() * 1000), **dataclasses.replace(order, locale=locale).to_json()}
            self.publish(f"{self.topic}/{self.site}/{truck}/order", json.dumps(stamped))


def booking_line(booking: Booking, state: str, now_s: float, accept_min: float | None = None) -> str:
    """A booking's step for the store: `waste_booking`, tagged by state, compound and truck."""
    tags = {"state": state, "compound": booking.compound}
    if booking.truck:
        tags["truck"] = booking.truck
    fields: dict[str, str | int | float | bool] = {"booking": booking.id, "m3": round(booking.m3, 2)}
    if state == "collected":
        fields["wait_min"] = round((now_s - booking.created_s) / 60, 1)
        fields["in_window"] = int(booking.earliest_s <= now_s <= booking.latest_s)
        fields["kg"] = round(booking.collected_kg or 0.0, 1)
    if accept_min is not None:
        fields["accept_min"] = round(accept_min, 2)
    return format_line("waste_booking", tags, fields, round(now_s * 1000))


def _local_date(epoch_s: float, timezone: str) -> dt.date:
    return dt.datetime.fromtimestamp(epoch_s, ZoneInfo(timezone)).date()
