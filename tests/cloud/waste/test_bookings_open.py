"""The renovation's minute: the open bookings read from the state only when one changed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import event

from linli.cloud.waste.bookings import BookingRequest, Bookings, State
from linli.cloud.waste.messages import BookingMessage
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.requesters import Requester
from linli.cloud.waste.state import WasteState
from linli.transit.extras import Contact, RenovationTruck
from linli.transit.gtfs import load_feed

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
ZONE = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=ZONE).timestamp()


def test_a_quiet_minute_reads_no_bookings_and_a_booking_made_elsewhere_is_read(tmp_path: Path) -> None:
    feed = load_feed(FEED)
    path = str(tmp_path / "state.sqlite")
    ours = WasteState(path)
    reads: list[str] = []

    @event.listens_for(ours.engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM booking " in statement:
            reads.append(statement)

    told: list[str] = []

    def tell(contact: Contact | Requester, message: BookingMessage) -> None:
        told.append(message.state)

    trucks = [RenovationTruck(id="a", capacity_m3=12)]
    renovation = Renovation(feed, Bookings(ours, feed, max_m3=12.0), trucks, tell, operator=None)
    assert renovation.tick(NOW) == []
    reads.clear()
    for minute in range(1, 4):  # nothing changed: no query of the bookings
        assert renovation.tick(NOW + 60 * minute) == []
    assert reads == []

    # Another process on the same file (the booking page of another service) books: read at
    # the next minute, and expired there once its window is over.
    other = WasteState(path)
    request = BookingRequest.model_validate(
        {
            "compound": "gubei-1",
            "volume_m3": 2.5,
            "earliest": "2026-12-01T09:00:00+08:00",
            "latest": "2026-12-01T12:00:00+08:00",
            "contact": {"name": "Property office, gubei-1", "email": "p@x.example"},
        }
    )
    booked, _ = Bookings(other, feed, max_m3=12.0).create(request, NOW, "office")
    other.close()
    assert [(b.id, b.state) for b in renovation.tick(NOW + 240) or []] == [(booked.id, State.REQUESTED)]
    assert reads
    reads.clear()
    assert [b.id for b in renovation.tick(NOW + 300) or []] == [booked.id]
    assert reads == []  # read once, kept until the next change
    after = request.latest.timestamp() + 60
    assert renovation.tick(after) == []  # expired here: a change of its own, read again
    assert told == ["expired"]
    assert renovation.bookings.get(booked.id).state is State.EXPIRED  # type: ignore[union-attr]
    ours.close()
