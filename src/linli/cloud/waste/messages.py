"""What the waste service tells people, rendered from the `waste` message catalog.

Keeper notices, incidents for the property office and the operating company, and renovation
bookings' steps. Each has a `subject` (the title: an e-mail subject, a card's heading), a
`text()` (the title, then the message), an `sms()` (the message alone, one SMS: at most
70 characters in Chinese) and `to_json()`: the machine fields plus the rendered `title`,
`text` (the SMS, so a gateway sends it as it is), `locale` and ISO 8601 times with the offset.

People read names they know: the bin room's `stop_name`, the truck's fleet number and plate
(`[trucks]` of the feed's `linli.toml`), the waste type as the district's signs say it; the
ids stay in the machine fields. Times are the district's, written as people write them there
(`17:30` on the day, `12月7日 17:30` on another).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from linli.catalog.i18n import DEFAULT_LOCALE, Locale, clock, iso, text
from linli.cloud.waste.bookings import Booking, State
from linli.cloud.waste.tracking import Incident, KeeperNotice
from linli.transit.gtfs import Feed
from linli.transit.names import stop_name, truck_name

BOOKING_STEPS = frozenset({str(state) for state in State})
SMS_CHARS = 70  # one SMS in Chinese (UCS-2): longer ones are split and may arrive out of order


def waste_name(waste_type: str, locale: Locale) -> str:
    return text(f"waste.type.{waste_type}", locale)


def _when(at_s: float | None, now_s: float, feed: Feed, locale: Locale) -> str:
    if at_s is None:
        return text("waste.time.unknown", locale)
    return clock(at_s, locale, now=now_s, zone=feed.timezone)


def _iso(at_s: float | None, feed: Feed) -> str | None:
    return None if at_s is None else iso(at_s, feed.timezone)


class _Catalogued:
    """A message whose title and SMS are two catalog templates filled with the same values."""

    locale: Locale

    def _keys(self) -> tuple[str, str]:
        raise NotImplementedError

    def _values(self) -> dict[str, object]:
        raise NotImplementedError

    @cached_property
    def _filled(self) -> dict[str, object]:
        """`_values`, worked out once: a delivery renders the title three times and the SMS
        twice (`text`, `to_json`), and the names and times in them are most of its cost."""
        return self._values()

    @property
    def subject(self) -> str:
        return text(self._keys()[0], self.locale, **self._filled)

    def sms(self) -> str:
        return text(self._keys()[1], self.locale, **self._filled)

    def text(self) -> str:
        return f"{self.subject}\n{self.sms()}"

    def _people(self) -> dict[str, Any]:
        """The fields a gateway shows a person as they are."""
        return {"title": self.subject, "text": self.sms(), "locale": self.locale}


@dataclass(frozen=True)
class WasteNotice(_Catalogued):
    """A keeper notice, in the keeper's language."""

    notice: KeeperNotice
    feed: Feed
    truck: str  # the truck's id
    waste_type: str
    locale: Locale = DEFAULT_LOCALE

    def _values(self) -> dict[str, object]:
        n, locale = self.notice, self.locale
        return {
            "stop": stop_name(self.feed, n.stop_id, locale),
            "truck": truck_name(self.feed, self.truck, locale),
            "waste": waste_name(self.waste_type, locale),
            # The predicted arrival for what is coming; the moment itself for what happened.
            "time": _when(
                n.predicted_s if n.predicted_s is not None else n.time_s, n.time_s, self.feed, locale
            ),
            "bins": n.bins,
            "kg": f"{n.kg:.0f}",
        }

    def _keys(self) -> tuple[str, str]:
        return f"waste.keeper.{self.notice.kind}.title", f"waste.keeper.{self.notice.kind}.text"

    def to_json(self) -> dict[str, Any]:
        n, truck = self.notice, self.feed.extras.trucks.get(self.truck)
        return {
            "notice": str(n.kind),
            "trip": n.trip_id,
            "stop": n.stop_id,
            "stop_name": stop_name(self.feed, n.stop_id, self.locale),
            "truck": self.truck,
            "truck_name": truck_name(self.feed, self.truck, self.locale),
            "plate": truck.plate if truck else None,
            "waste_type": self.waste_type,
            "time": _iso(n.time_s, self.feed),
            "predicted": _iso(n.predicted_s, self.feed),
            "time_ms": round(n.time_s * 1000),
            "predicted_ms": None if n.predicted_s is None else round(n.predicted_s * 1000),
            "bins": n.bins,
            "kg": n.kg,
            **self._people(),
        }


@dataclass(frozen=True)
class IncidentMessage(_Catalogued):
    """A blocked gate (for the property office and the dispatcher) or a breakdown (for the
    operating company and the dispatcher), with what each is asked to do."""

    incident: Incident
    feed: Feed
    truck: str  # the truck's id
    waste_type: str
    locale: Locale = DEFAULT_LOCALE

    def _values(self) -> dict[str, object]:
        i, locale = self.incident, self.locale
        return {
            "stop": stop_name(self.feed, i.stop_id, locale),
            "truck": truck_name(self.feed, self.truck, locale),
            "waste": waste_name(self.waste_type, locale),
            "time": _when(i.time_s, i.time_s, self.feed, locale),
        }

    def _keys(self) -> tuple[str, str]:
        return f"waste.incident.{self.incident.kind}.title", f"waste.incident.{self.incident.kind}.text"

    def to_json(self) -> dict[str, Any]:
        i = self.incident
        return {
            "incident": str(i.kind),
            "trip": i.trip_id,
            "stop": i.stop_id,
            "stop_name": stop_name(self.feed, i.stop_id, self.locale) if i.stop_id else None,
            "truck": self.truck,
            "truck_name": truck_name(self.feed, self.truck, self.locale),
            "time": _iso(i.time_s, self.feed),
            "time_ms": round(i.time_s * 1000),
            "detail": i.detail,  # the service's own words, for the dispatcher's log
            **self._people(),
        }


@dataclass(frozen=True)
class BookingMessage(_Catalogued):
    """A renovation booking's step, for its requester (or the operating company, when escalated)."""

    booking: Booking
    state: str
    feed: Feed
    predicted_s: float | None = None
    detail: str = ""  # the service's own words (why it was escalated), for machines
    now_s: float | None = None  # when it is told: a time on that day is shown without its date
    locale: Locale = DEFAULT_LOCALE

    def _values(self) -> dict[str, object]:
        b, locale = self.booking, self.locale
        now = self.now_s if self.now_s is not None else b.created_s
        earliest = clock(b.earliest_s, locale, now=now, zone=self.feed.timezone)
        latest = clock(b.latest_s, locale, now=b.earliest_s, zone=self.feed.timezone)
        return {
            "place": stop_name(self.feed, b.compound, locale),
            "truck": truck_name(self.feed, b.truck, locale),
            "time": _when(self.predicted_s, now, self.feed, locale),
            "kg": f"{b.collected_kg or 0:.0f}",
            "window": f"{earliest}–{latest}",
        }

    def _keys(self) -> tuple[str, str]:
        if self.state == "escalated":  # for the operating company, not the requester
            return "waste.booking.escalated.title", "waste.booking.escalated.text"
        step = self.state if self.state in BOOKING_STEPS else "other"
        return "waste.booking.title", f"waste.booking.{step}.text"

    def to_json(self) -> dict[str, Any]:
        b = self.booking
        return {
            "booking": b.id,
            "state": self.state,
            "compound": b.compound,
            "truck": b.truck,
            "predicted": _iso(self.predicted_s, self.feed),
            "predicted_ms": None if self.predicted_s is None else round(self.predicted_s * 1000),
            "detail": self.detail,
            **self._people(),
        }


@dataclass(frozen=True)
class TruckOrder(BookingMessage):
    """A renovation pickup as the truck terminal shows it to the driver (`state` "offered"), or
    its cancellation (`state` "cancelled"): the place by name, how much, the window and when."""

    def _values(self) -> dict[str, object]:
        note = self.booking.note.strip()
        return super()._values() | {
            "m3": f"{self.booking.m3:g}",
            "note": text("waste.order.note", self.locale, note=note) if note else "",
        }

    def _keys(self) -> tuple[str, str]:
        if self.state == "cancelled":
            return "waste.order.cancelled.title", "waste.order.cancelled.text"
        return "waste.order.title", "waste.order.text"

    def sms(self) -> str:
        return super().sms().strip()  # without a note, nothing follows the last sentence

    def to_json(self) -> dict[str, Any]:
        b = self.booking
        if self.state == "cancelled":
            return {"booking": b.id, "cancelled": True, **self._people()}
        return {
            "booking": b.id,
            "compound": b.compound,
            "compound_name": stop_name(self.feed, b.compound, self.locale),
            "lat": b.lat,
            "lon": b.lon,
            "volume_m3": b.m3,
            "earliest_ms": round(b.earliest_s * 1000),
            "latest_ms": round(b.latest_s * 1000),
            "predicted_ms": None if self.predicted_s is None else round(self.predicted_s * 1000),
            "note": b.note,
            **self._people(),
        }
