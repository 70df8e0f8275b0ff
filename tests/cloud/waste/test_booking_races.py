"""A renovation booking's cancellation racing the truck's arrival on PostgreSQL, driven step by
step: two services on one state, the requester's cancel on one, the truck's position at the
pile on the other, both held at the booking's row until a third connection lets them go."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from linli.cloud.waste.bookings import BookingError, BookingRequest, Bookings, State
from linli.cloud.waste.messages import BookingMessage
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.requesters import Requester
from linli.cloud.waste.state import WasteState
from linli.transit.extras import Contact, RenovationTruck
from linli.transit.gtfs import load_feed
from races import Call, blocked_or_done

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
TRUCK = "truck-renovation"
NOW = 1_796_083_200.0  # 2026-12-01 08:00 in Shanghai


def test_a_cancellation_racing_the_truck_s_arrival_has_one_winner_and_the_requester_hears_it_alone(
    pg_database: tuple[str, Engine],
) -> None:
    """Both read the booking en route only after the other has moved it or not at all: one wins,
    the other is refused as too late, the trail and the requester have that one outcome."""
    url, engine = pg_database
    feed = load_feed(FEED)
    told: list[str] = []

    def tell(_contact: Contact | Requester, message: BookingMessage) -> None:
        told.append(message.state)

    def service(active: bool) -> Renovation:
        renovation = Renovation(
            feed,
            Bookings(WasteState(url), feed, max_m3=12.0),
            [RenovationTruck(id=TRUCK, capacity_m3=12)],
            tell,
            operator=None,
        )
        renovation.active = active  # the leader moves the bookings on; the other takes cancellations
        return renovation

    leader, other = service(True), service(False)
    booking, _ = leader.bookings.create(
        BookingRequest.model_validate(
            {
                "compound": "gubei-1",
                "volume_m3": 2.5,
                "earliest": "2026-12-01T09:00:00+08:00",
                "latest": "2026-12-01T12:00:00+08:00",
                "contact": {"name": "Property office, gubei-1", "email": "p@x.example"},
            }
        ),
        NOW,
        "staff",
    )
    for step in (State.OFFERED, State.ACCEPTED, State.EN_ROUTE):
        leader.bookings.move(booking.id, step, NOW, "dispatch", truck=TRUCK)
    try:
        with engine.connect() as third:
            third.begin()
            third.execute(text("SELECT 1 FROM booking WHERE id = :id FOR UPDATE"), {"id": booking.id})
            cancel = Call(lambda: other.cancel(booking.id, NOW + 60, "requester"))
            arrive = Call(lambda: leader.location(TRUCK, booking.lat, booking.lon, 0.0, NOW + 60))
            # Each waits on the row: to read it (locked as it should be), or, read unlocked, to change it.
            blocked_or_done(engine, [cancel, arrive], 2)
            third.rollback()
        refused = []
        for call in (cancel, arrive):
            try:
                call.outcome()
            except BookingError as exc:
                refused.append(exc.code)
        assert refused == ["too_late"]  # exactly one lost, and was told why
        final = leader.bookings.get(booking.id)
        assert final is not None
        assert final.state in (State.CANCELLED, State.ARRIVED)
        trail = [t["state"] for t in leader.bookings.trail(booking.id)]
        assert trail == ["requested", "offered", "accepted", "en_route", str(final.state)]
        assert told == [str(final.state)]  # the requester hears one outcome, the true one
    finally:
        leader.bookings.state.close()
        other.bookings.state.close()


def test_the_same_key_sent_twice_at_once_books_once_and_both_get_that_booking(
    pg_database: tuple[str, Engine],
) -> None:
    """A client's retry that overtakes its first try (two services, one state): the second finds
    no booking for the key, and its insert waits on the first's; once the first commits, the
    second is answered with the first's booking, not an error and not a second booking."""
    url, engine = pg_database
    feed = load_feed(FEED)
    books = [Bookings(WasteState(url), feed, max_m3=12.0) for _ in range(2)]
    asked = BookingRequest.model_validate(
        {
            "key": "gubei-1:2026-12-01:retry",
            "compound": "gubei-1",
            "volume_m3": 2.5,
            "earliest": "2026-12-01T09:00:00+08:00",
            "latest": "2026-12-01T12:00:00+08:00",
            "contact": {"name": "Property office, gubei-1", "email": "p@x.example"},
        }
    )
    try:
        with engine.connect() as third:
            third.begin()
            # The first try's booking row is in, uncommitted, while its trail event waits here.
            third.execute(text("LOCK TABLE booking_event IN EXCLUSIVE MODE"))
            first = Call(lambda: books[0].create(asked, NOW, "staff", "gubei office"))
            blocked_or_done(engine, [first], 1)
            retry = Call(lambda: books[1].create(asked, NOW + 1, "staff", "gubei office"))
            blocked_or_done(engine, [first, retry], 2)  # its insert waits on the first's key
            third.rollback()
        made, new = first.outcome()
        again, new_again = retry.outcome()
        assert (new, new_again) == (True, False)
        assert (again.id, again.office, again.state) == (made.id, "gubei office", State.REQUESTED)
        assert [b.id for b in books[1].all()] == [made.id]
        assert [t["state"] for t in books[1].trail(made.id)] == ["requested"]
    finally:
        for b in books:
            b.state.close()
