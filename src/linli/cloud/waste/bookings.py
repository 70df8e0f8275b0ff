"""Renovation waste booked like a ride: what a booking holds, its states, and its trail.

Property staff book a collection (a compound's pile, its volume, a time window, a contact);
a renovation truck is offered the order, its driver accepts or declines from the terminal,
the truck drives there and lifts, and the booking is closed. Every transition is kept with
who made it and when (the trail), in the waste service's state (SQLite or PostgreSQL).

    requested -> offered -> accepted -> en_route -> arrived -> collected -> closed
    requested / offered / accepted / en_route -> cancelled   (by the requester, before arrival)
    requested / offered / accepted -> expired                (no truck within the window)
    offered -> requested                                     (declined or not answered: offered again)
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from linli.cloud.db import Tables
from linli.cloud.waste.config import BookingRules
from linli.cloud.waste.requesters import Requester
from linli.transit.gtfs import Feed, metres
from linli.transit.gtfs import Stop as GtfsStop

BAG_M3 = 0.05  # one renovation-waste bag (a 50 L woven sack) [assumed]
NOTE_MAX = 500
# A pile this far outside the district's stops is not the district's.
DISTRICT_MARGIN_M = 2000.0
# A booking's phone gets the SMS: a mainland mobile number, 11 digits from 1, +86 before it or not.
MOBILE = re.compile(r"(\+?86)?1[0-9]{10}")


class State(StrEnum):
    REQUESTED = "requested"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    EN_ROUTE = "en_route"
    ARRIVED = "arrived"
    COLLECTED = "collected"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


NEXT: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.OFFERED, State.CANCELLED, State.EXPIRED}),
    State.OFFERED: frozenset({State.ACCEPTED, State.REQUESTED, State.CANCELLED, State.EXPIRED}),
    State.ACCEPTED: frozenset({State.EN_ROUTE, State.CANCELLED, State.EXPIRED, State.REQUESTED}),
    State.EN_ROUTE: frozenset({State.ARRIVED, State.CANCELLED}),
    State.ARRIVED: frozenset({State.COLLECTED}),
    State.COLLECTED: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
    State.CANCELLED: frozenset(),
    State.EXPIRED: frozenset(),
}
OPEN = frozenset({State.REQUESTED, State.OFFERED, State.ACCEPTED, State.EN_ROUTE, State.ARRIVED})


class BookingError(ValueError):
    """A booking refused, or a transition not allowed; the message says why, for people reading
    logs, and `code` what, for a page that says it in its reader's language."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class KeyConflictError(BookingError):
    """An idempotency key sent again with a different booking."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "key_conflict")


class BookingRequest(BaseModel):
    """What property staff send: `POST /bookings`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    compound: Annotated[str, Field(min_length=1, max_length=64, description="a stop id of the timetable")]
    lat: Annotated[float, Field(ge=-90, le=90)] | None = Field(
        None, description="the pile, if not at the bin room"
    )
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    volume_m3: Annotated[float, Field(gt=0, le=100)] | None = None
    bags: Annotated[int, Field(gt=0, le=2000)] | None = None
    earliest: dt.datetime = Field(description="ISO 8601 with its offset")
    latest: dt.datetime
    contact: Requester = Field(description="who to tell: a name and a phone, an email or a wecom id")
    note: Annotated[str, Field(max_length=NOTE_MAX)] = ""
    key: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] | None = Field(
        None, description="idempotency key: the same key books once"
    )

    @field_validator("contact")
    @classmethod
    def _mobile(cls, contact: Requester) -> Requester:
        if contact.phone is not None and not MOBILE.fullmatch(contact.phone):
            raise PydanticCustomError("mobile", "a mobile number: 11 digits from 1, e.g. 13800138000")
        return contact

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.volume_m3 is None) == (self.bags is None):
            raise ValueError("give the volume as volume_m3 or as bags, one of them")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon for the pile, or neither")
        for name in ("earliest", "latest"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} needs its UTC offset, e.g. 2026-12-01T09:00+08:00")
        if self.latest <= self.earliest:
            raise PydanticCustomError("window_empty", "the window is empty: latest must come after earliest")
        return self

    @property
    def m3(self) -> float:
        return self.volume_m3 if self.volume_m3 is not None else (self.bags or 0) * BAG_M3


@dataclass(frozen=True)
class Booking:
    """A booking as stored."""

    id: str
    compound: str
    lat: float
    lon: float
    m3: float
    earliest_s: float
    latest_s: float
    contact: Requester
    note: str
    state: State
    truck: str | None
    created_s: float
    collected_kg: float | None = None
    office: str | None = None  # of the booking link that made it

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "compound": self.compound,
            "lat": self.lat,
            "lon": self.lon,
            "volume_m3": round(self.m3, 3),
            "earliest_ms": round(self.earliest_s * 1000),
            "latest_ms": round(self.latest_s * 1000),
            "contact": self.contact.name,
            "note": self.note,
            "state": str(self.state),
            "truck": self.truck,
            "created_ms": round(self.created_s * 1000),
            "collected_kg": self.collected_kg,
        }


COLUMNS = (
    "id, key, compound, lat, lon, m3, earliest_s, latest_s, contact, note, state, truck, created_s, "
    "collected_kg, office"
)
EVENT = text(
    'INSERT INTO booking_event (booking, state, at_s, "by", truck, detail) '
    "VALUES (:booking, :state, :at, :by, :truck, :detail)"
)
# Every change of a booking (made, moved) adds a trail entry: the newest one numbers the bookings' version.
VERSION = "SELECT max(id) FROM booking_event"


class Bookings:
    """The bookings and their trail in the waste service's state; every method is one transaction."""

    def __init__(self, state: Tables, feed: Feed, max_m3: float, rules: BookingRules | None = None) -> None:
        self.state = state
        self.feed = feed
        self.max_m3 = max_m3
        self.rules = rules or BookingRules()
        self._open: tuple[int, list[Booking]] | None = None  # the open bookings at a version (`open`)
        xs, ys = zip(*(s.xy for s in feed.stops.values()), strict=True)
        self._box = (min(xs) - DISTRICT_MARGIN_M, min(ys) - DISTRICT_MARGIN_M,
                     max(xs) + DISTRICT_MARGIN_M, max(ys) + DISTRICT_MARGIN_M)  # fmt: skip

    def create(
        self, request: BookingRequest, now_s: float, by: str, office: str | None = None
    ) -> tuple[Booking, bool]:
        """A new booking (requested) of `office`, or the one its key made before (False: not new).

        BookingError names what is wrong: an unknown compound, a window already over, too far
        ahead or too wide, a pile outside the district, more than any truck takes, a requester
        this service cannot reach; KeyConflictError a key used before for another booking.
        """
        if request.key is not None:
            found = self._by_key(request.key)
            if found is not None:
                return self._same(found, request, office), False
        stop = self._compound(request.compound)
        lat, lon = (
            (request.lat, request.lon)
            if request.lat is not None and request.lon is not None
            else (stop.lat, stop.lon)
        )
        x, y = metres(lat, lon)
        x0, y0, x1, y1 = self._box
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            raise BookingError(
                f"the pile at {lat:.5f}, {lon:.5f} is outside the district", "outside_district"
            )
        self._check_window(request, now_s)
        if request.m3 > self.max_m3:
            raise BookingError(
                f"{request.m3:g} m³ is more than the largest truck takes ({self.max_m3:g} m³)", "too_big"
            )
        unreachable = request.contact.refused(self.rules)
        if unreachable:
            raise BookingError(f"contact: {unreachable}", "contact_unreachable")
        booking = Booking(
            id=uuid.uuid4().hex[:12],
            compound=stop.id,
            lat=lat,
            lon=lon,
            m3=request.m3,
            earliest_s=request.earliest.timestamp(),
            latest_s=request.latest.timestamp(),
            contact=request.contact,
            note=request.note,
            state=State.REQUESTED,
            truck=None,
            created_s=now_s,
            office=office,
        )
        row = {
            "id": booking.id, "key": request.key, "compound": booking.compound, "lat": lat, "lon": lon,
            "m3": booking.m3, "earliest_s": booking.earliest_s, "latest_s": booking.latest_s,
            "contact": booking.contact.model_dump_json(exclude_none=True), "note": booking.note,
            "state": str(booking.state), "truck": None, "created_s": now_s, "collected_kg": None,
            "office": office,
        }  # fmt: skip
        try:
            with self.state.engine.begin() as conn:
                conn.execute(
                    text(f"INSERT INTO booking ({COLUMNS}) VALUES ({', '.join(':' + c for c in row)})"),  # noqa: S608
                    row,
                )
                conn.execute(EVENT, {"booking": booking.id, "state": str(State.REQUESTED), "at": now_s,
                                     "by": by, "truck": None, "detail": ""})  # fmt: skip
        except IntegrityError:
            # The same key, sent twice at once: the first one won.
            found = self._by_key(request.key or "")
            if found is None:
                raise
            return self._same(found, request, office), False
        return booking, True

    def _check_window(self, request: BookingRequest, now_s: float) -> None:
        """The window is not over, not further ahead than `max_ahead_days`, not wider than `max_window_h`."""
        latest, earliest = request.latest.timestamp(), request.earliest.timestamp()
        if latest <= now_s:
            raise BookingError(f"the window ended at {request.latest.isoformat()}, before now", "window_over")
        ahead_days = (latest - now_s) / 86400
        if ahead_days > self.rules.max_ahead_days:
            raise BookingError(
                f"the window ends {ahead_days:.0f} days ahead: bookings.max_ahead_days allows "
                f"{self.rules.max_ahead_days:g}",
                "window_too_far",
            )
        wide_h = (latest - earliest) / 3600
        if wide_h > self.rules.max_window_h:
            raise BookingError(
                f"the window is {wide_h:.0f} h wide: bookings.max_window_h allows "
                f"{self.rules.max_window_h:g} h",
                "window_too_wide",
            )

    @staticmethod
    def _same(found: Booking, request: BookingRequest, office: str | None) -> Booking:
        """The booking a key made before, if this request is the same one sent again."""
        same = (
            found.office == office
            and found.compound == request.compound
            and math.isclose(found.m3, request.m3, rel_tol=1e-6)
            and math.isclose(found.earliest_s, request.earliest.timestamp(), abs_tol=1e-3)
            and math.isclose(found.latest_s, request.latest.timestamp(), abs_tol=1e-3)
            and (request.lat is None or math.isclose(found.lat, request.lat, abs_tol=1e-6))
            and (request.lon is None or math.isclose(found.lon, request.lon, abs_tol=1e-6))
            and found.contact == request.contact
            and found.note == request.note
        )
        if not same:
            raise KeyConflictError(
                f"key '{request.key}' was used for a different booking: send a new key for a new booking"
            )
        return found

    def move(
        self,
        booking_id: str,
        to: State,
        now_s: float,
        by: str,
        *,
        truck: str | None = None,
        detail: str = "",
        kg: float | None = None,
    ) -> Booking:
        """Move a booking on, checking the move is allowed from where it stands now (the row
        locked meanwhile, so that two services cannot both move it)."""
        with self.state.engine.begin() as conn:
            lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
            row = conn.execute(
                text(f"SELECT {COLUMNS} FROM booking WHERE id = :id{lock}"),  # noqa: S608 (fixed text)
                {"id": booking_id},
            ).first()
            if row is None:
                raise BookingError(f"no booking {booking_id}", "not_found")
            booking = _booking(tuple(row))
            if to not in NEXT[booking.state]:
                raise BookingError(
                    f"booking {booking_id} is {booking.state}: it cannot become {to}", "too_late"
                )
            keep = truck if truck is not None else (None if to is State.REQUESTED else booking.truck)
            conn.execute(
                text(
                    "UPDATE booking SET state = :state, truck = :truck, "
                    "collected_kg = COALESCE(:kg, collected_kg) WHERE id = :id"
                ),
                {"state": str(to), "truck": keep, "kg": kg, "id": booking_id},
            )
            conn.execute(EVENT, {"booking": booking_id, "state": str(to), "at": now_s, "by": by,
                                 "truck": keep, "detail": detail})  # fmt: skip
        moved = self.get(booking_id)
        assert moved is not None
        return moved

    def get(self, booking_id: str) -> Booking | None:
        rows = self.state.rows(f"SELECT {COLUMNS} FROM booking WHERE id = :id", {"id": booking_id})  # noqa: S608
        return _booking(rows[0]) if rows else None

    def all(self, states: frozenset[State] | None = None) -> list[Booking]:
        """Every booking, oldest first; of the given states only (the trucks ask for the open ones
        with each position, so the closed ones of past months are not read for it)."""
        query, params = f"SELECT {COLUMNS} FROM booking", dict[str, str]()  # noqa: S608
        if states is not None:
            params = {f"s{i}": str(s) for i, s in enumerate(sorted(states))}
            query += f" WHERE state IN ({', '.join(':' + k for k in params)})"  # placeholders only
        return [_booking(row) for row in self.state.rows(query + " ORDER BY created_s, id", params)]

    def open(self) -> list[Booking]:
        """The open bookings, oldest first (`all(OPEN)`). On SQLite they are read again only when
        a booking changed since, here or in another process: its write lock numbers the trail's
        entries in the order they are committed, so a newer one means a change. PostgreSQL's
        sequence numbers them as they are inserted, not committed: there they are read each time."""
        if self.state.engine.dialect.name != "sqlite":
            return self.all(OPEN)
        version = self._version()
        if self._open is None or self._open[0] != version:
            # A change committed between the two reads is read now, and again at the next call.
            self._open = (version, self.all(OPEN))
        return list(self._open[1])

    def _version(self) -> int:
        """The newest trail entry's id (SQLite), read without the write lock a transaction takes
        here (`BEGIN IMMEDIATE`): SQLite reads the newest commit all the same, at a tenth of the cost."""
        with self.state.engine.connect() as conn:
            try:
                row = conn.connection.driver_connection.execute(VERSION).fetchone()  # type: ignore[union-attr]
            except sqlite3.Error as exc:  # as any other statement's: the caller judges it
                raise OperationalError(VERSION, None, exc) from exc
        return -1 if row is None or row[0] is None else int(row[0])

    def trail(self, booking_id: str) -> list[dict[str, Any]]:
        rows = self.state.rows(
            'SELECT state, at_s, "by", truck, detail FROM booking_event WHERE booking = :id ORDER BY id',
            {"id": booking_id},
        )
        return [
            {"state": s, "at_ms": round(at * 1000), "by": by, "truck": truck, "detail": detail}
            for s, at, by, truck, detail in rows
        ]

    def _compound(self, name: str) -> GtfsStop:
        stop = self.feed.stops.get(name)
        if stop is None or name in self.feed.extras.depots:
            raise BookingError(
                f"no compound '{name}': book at one of the district's bin rooms", "unknown_compound"
            )
        return stop

    def _by_key(self, key: str) -> Booking | None:
        rows = self.state.rows(f"SELECT {COLUMNS} FROM booking WHERE key = :key", {"key": key})  # noqa: S608
        return _booking(rows[0]) if rows else None


def _booking(row: tuple[Any, ...]) -> Booking:
    (
        bid,
        _key,
        compound,
        lat,
        lon,
        m3,
        earliest,
        latest,
        contact,
        note,
        state,
        truck,
        created,
        kg,
        office,
    ) = row
    return Booking(
        bid, compound, lat, lon, m3, earliest, latest, Requester.stored(contact), note,
        State(state), truck, created, kg, office,
    )  # fmt: skip
