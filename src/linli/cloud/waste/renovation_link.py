"""The renovation bookings inside the waste service: its trucks' messages, its tick, and the
requesters and offices told through the service's held deliveries.

One service at a time dispatches (`Leadership`: on PostgreSQL the holder of an advisory lock);
the others take bookings and their trucks' messages all the same.
"""

from __future__ import annotations

import dataclasses

from linli.catalog.channels import Channel
from linli.cloud.notifier.channels import Message
from linli.cloud.waste.bookings import Bookings, State
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.held import HeldDeliveries
from linli.cloud.waste.messages import BookingMessage
from linli.cloud.waste.outbox import Outbox
from linli.cloud.waste.payloads import LiftMessage, Location, OrderReply, Payload
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.requesters import Requester, deliveries
from linli.cloud.waste.state import Leadership, WasteState
from linli.transit.extras import Contact
from linli.transit.gtfs import Feed

REPORT_S = 60.0  # the bookings are looked at, and reported to the store, this often (the trucks' time)


class RenovationLink:
    """Builds the district's `Renovation` (`renovation`), if its timetable has one."""

    def __init__(
        self,
        config: WasteConfig,
        feed: Feed,
        state: WasteState,
        *,
        leadership: Leadership,
        held: HeldDeliveries,
        outbox: Outbox,
    ) -> None:
        self.config = config
        self.leadership = leadership
        self.held = held
        self._reported_s = 0.0
        spec = feed.extras.renovation
        assert spec is not None
        bookings = Bookings(state, feed, max(t.capacity_m3 for t in spec.trucks), config.bookings)
        self.renovation = Renovation(
            feed,
            bookings,
            spec.trucks,
            self._tell,
            operator=config.operator,
            topic=config.broker.topic,
            accept_s=spec.accept_min * 60,
            locale=config.locale,
        )
        self.renovation.active = leadership.held()
        self.renovation.record = outbox.put

    def _tell(self, contact: Contact | Requester, message: BookingMessage) -> None:
        # A requester is told only through the operator's channels (`[bookings]`), never its own.
        message = dataclasses.replace(message, locale=contact.locale or self.config.locale)
        sends: list[tuple[Channel, Message]] = (
            deliveries(contact, message, self.config.bookings)
            if isinstance(contact, Requester)
            else [(channel, message) for channel in contact.channels]
        )
        for channel, what in sends:
            self.held.deliver(contact.name, channel, what, f"booking/{message.booking.id}")

    def message(self, truck: str, message: Payload, t: float) -> None:
        """A renovation truck's message: its bookings move on. Raises BookingError for an
        answer that fits no booking, DBAPIError when the state cannot be reached (the next
        position or answer moves the bookings on)."""
        if isinstance(message, Location):
            self.renovation.location(truck, message.lat, message.lon, message.speed, t)
        elif isinstance(message, LiftMessage):
            self.renovation.lift(truck, message.collected_kg, t)
        elif isinstance(message, OrderReply):
            self.renovation.reply(truck, message.booking, message.accept, t)

    def tick(self, now: float) -> str | None:
        """The dispatching service (`Leadership`) escalates, expires and offers what others
        booked; the bookings' line for the store, once a minute of the trucks' time."""
        self.renovation.lead(self.leadership.held(), now)
        if not self.renovation.active:
            return None
        # Orders not answered, bookings past their window, and bookings another service took:
        # looked for once a minute of the trucks' time, with the report, not at every tick (the
        # bookings read again only when one changed: `Bookings.open`).
        if now - self._reported_s < REPORT_S:
            return None
        open_ = self.renovation.tick(now)
        if open_ is not None and any(b.state is State.REQUESTED for b in open_):
            self.renovation.dispatch(now)
            open_ = None  # moved on: read again for the report
        self._reported_s = now
        return self.renovation.status_line(now, open_)
