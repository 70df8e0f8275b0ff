"""Renovation bookings: what is refused and why, the lifecycle and its trail, the solver's plans."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from linli.cloud.waste.bookings import BookingError, BookingRequest, Bookings, KeyConflictError, State
from linli.cloud.waste.dispatch import RELOADS, Pickup, TruckNow, plan
from linli.cloud.waste.messages import BookingMessage
from linli.cloud.waste.planner import Planner
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.requesters import Requester
from linli.cloud.waste.state import WasteState
from linli.transit.extras import Contact, RenovationTruck
from linli.transit.gtfs import Feed, load_feed
from linli.transit.roads import Roads

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
ZONE = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=ZONE).timestamp()


@pytest.fixture(scope="module")
def feed() -> Feed:
    return load_feed(FEED)


@pytest.fixture
def book(feed: Feed, state: str) -> Iterator[Bookings]:
    """Bookings on a fresh state: an SQLite file, or a PostgreSQL database."""
    tables = WasteState(state)
    yield Bookings(tables, feed, max_m3=12.0)
    tables.close()


def request(**changes: Any) -> BookingRequest:
    body: dict[str, Any] = {
        "compound": "gubei-1",
        "volume_m3": 2.5,
        "earliest": "2026-12-01T09:00:00+08:00",
        "latest": "2026-12-01T12:00:00+08:00",
        "contact": {"name": "Property office, gubei-1", "email": "p@x.example"},
        "note": "bags by the east gate",
    }
    return BookingRequest.model_validate(body | changes)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"latest": "2026-12-01T09:00:00+08:00"}, "the window is empty"),
        ({"earliest": "2026-12-01T09:00:00"}, "needs its UTC offset"),
        ({"bags": 20}, "one of them"),
        ({"note": "x" * 10_000}, "at most 500 characters"),
        ({"lat": 31.2}, "both lat and lon"),
        ({"volume_m3": float("nan")}, "finite number"),
        ({"lat": float("nan"), "lon": 121.4}, "finite number"),
        ({"contact": {"name": "x"}}, "give a phone, an email or a wecom user id"),
        ({"contact": {"name": "x", "channels": [{"kind": "webhook", "url": "http://127.0.0.1/x"}]}}, "Extra"),
        ({"contact": {"name": "x", "email": "x@y.example", "topic": "linli/notices/ops"}}, "Extra"),
        ({"contact": {"name": "x", "phone": "http://127.0.0.1/x"}}, "String should match pattern"),
    ],
)
def test_malformed_bookings_are_refused_with_the_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        request(**changes)


@pytest.mark.parametrize(
    ("changes", "reason", "code"),
    [
        ({"compound": "nowhere-9"}, "no compound 'nowhere-9'", "unknown_compound"),
        ({"compound": "depot"}, "no compound 'depot'", "unknown_compound"),
        (
            {"latest": "2026-12-01T07:59:00+08:00", "earliest": "2026-12-01T07:00:00+08:00"},
            "before now",
            "window_over",
        ),
        ({"volume_m3": 40.0}, "^40 m³ is more than the largest truck takes [(]12 m³[)]$", "too_big"),
        ({"lat": 39.9, "lon": 116.4}, "^the pile at 39.90000, 116.40000 is outside", "outside_district"),
        # Due east and due north of a bin room: outside on one axis is outside.
        ({"lat": 31.184316, "lon": 121.9}, "outside the district", "outside_district"),
        ({"lat": 31.6, "lon": 121.415124}, "outside the district", "outside_district"),
        # No SMS gateway is set ([bookings.sms]): a phone is a contact it cannot reach.
        (
            {"contact": {"name": "Property office", "phone": "13800138000"}},
            "^contact: this service sends no SMS",
            "contact_unreachable",
        ),
    ],
)
def test_bookings_the_district_cannot_serve_are_refused_with_the_reason(
    book: Bookings, changes: dict[str, Any], reason: str, code: str
) -> None:
    """Each refusal with its code, for the page to say in its reader's language."""
    with pytest.raises(BookingError, match=reason) as refused:
        book.create(request(**changes), NOW, "staff")
    assert refused.value.code == code
    assert book.all() == []


def test_a_volume_of_exactly_the_largest_truck_s_room_is_booked(book: Bookings) -> None:
    made, new = book.create(request(volume_m3=12.0), NOW, "staff")
    assert (new, made.m3, made.state) == (True, 12.0, State.REQUESTED)


@pytest.mark.parametrize("pile", [{}, {"lat": 31.1853, "lon": 121.4161}], ids=["bin-room", "own-pile"])
def test_the_same_key_books_once(book: Bookings, pile: dict[str, float]) -> None:
    first, new = book.create(request(key="gubei-1:2026-12-01:a", **pile), NOW, "staff")
    again, new_again = book.create(request(key="gubei-1:2026-12-01:a", **pile), NOW + 5, "staff")
    assert (new, new_again) == (True, False)
    assert again.id == first.id
    assert len(book.all()) == 1


def test_a_key_sent_again_after_its_window_is_over_still_gets_its_booking(book: Bookings) -> None:
    """The client's retry that comes late is answered with what its first try made, not judged
    again as a new booking (it would be refused: the window is over)."""
    first, _ = book.create(request(key="late"), NOW, "staff")
    again, new = book.create(request(key="late"), NOW + 6 * 3600, "staff")  # 14:00, the window ended at 12:00
    assert (again.id, new) == (first.id, False)


@pytest.mark.parametrize(
    ("changes", "office"),
    [
        ({"volume_m3": 9.0}, None),
        ({"note": "other"}, None),
        ({"contact": {"name": "someone else", "email": "e@x.example"}}, None),
        ({}, "another office"),  # another office's key is not a way to its booking
        ({"compound": "yili-1"}, None),
        ({"earliest": "2026-12-01T10:00:00+08:00"}, None),
        ({"latest": "2026-12-01T11:00:00+08:00"}, None),
        ({"lat": 31.1853, "lon": 121.415124}, None),  # a pile 100 m north of the bin room
        ({"lat": 31.184316, "lon": 121.4161}, None),  # and 100 m east
    ],
    ids=["volume", "note", "contact", "office", "compound", "earliest", "latest", "lat", "lon"],
)
def test_the_same_key_for_another_booking_is_a_conflict_naming_the_key(
    book: Bookings, changes: dict[str, Any], office: str | None
) -> None:
    first, _ = book.create(request(key="k-7"), NOW, "staff")
    with pytest.raises(KeyConflictError, match="key 'k-7' was used for a different booking") as refused:
        book.create(request(key="k-7", **changes), NOW + 5, "staff", office)
    assert refused.value.code == "key_conflict"
    assert [b.id for b in book.all()] == [first.id]
    assert book.all()[0].m3 == 2.5  # the first one stands


def test_a_booking_as_the_api_shows_it(book: Bookings, feed: Feed) -> None:
    """Times in milliseconds, the volume of its bags to the litre, who to tell by name only."""
    made, _ = book.create(request(bags=7, volume_m3=None), NOW, "staff")
    pile = feed.stops["gubei-1"]
    shown = {
        "id": made.id, "compound": "gubei-1", "lat": pile.lat, "lon": pile.lon, "volume_m3": 0.35,
        "earliest_ms": 1_796_086_800_000, "latest_ms": 1_796_097_600_000,
        "contact": "Property office, gubei-1", "note": "bags by the east gate", "state": "requested",
        "truck": None, "created_ms": round(NOW * 1000), "collected_kg": None,
    }  # fmt: skip
    assert made.to_json() == shown
    odd, _ = book.create(request(volume_m3=2.3456, key="odd"), NOW, "staff", office="gubei office")
    assert odd.to_json()["volume_m3"] == 2.346  # to the litre
    assert odd.office == "gubei office"  # as made, and as read back
    stored = book.get(odd.id)
    assert stored is not None
    assert stored.office == "gubei office"  # read back: the link that made it still sees it
    for step in (State.OFFERED, State.ACCEPTED, State.EN_ROUTE, State.ARRIVED):
        book.move(made.id, step, NOW + 60, "driver", truck="truck-renovation")
    collected = book.move(made.id, State.COLLECTED, NOW + 61.5, "driver", kg=212.5)
    assert collected.to_json() == shown | {
        "state": "collected", "truck": "truck-renovation", "collected_kg": 212.5,
    }  # fmt: skip
    assert [t["detail"] for t in book.trail(made.id)] == [""] * 6  # no step said more


def test_a_booking_that_does_not_exist_cannot_move_and_an_order_not_offered_cannot_be_answered(
    book: Bookings, feed: Feed
) -> None:
    with pytest.raises(BookingError, match="no booking nope") as missing:
        book.move("nope", State.CANCELLED, NOW, "requester")
    assert missing.value.code == "not_found"
    trucks = [RenovationTruck(id="a", capacity_m3=12), RenovationTruck(id="b", capacity_m3=12)]
    renovation = Renovation(feed, book, trucks, lambda _c, _m: None, operator=None)
    made, _ = renovation.book(request(), NOW, "office")
    offered = book.get(made.id)
    assert offered is not None
    assert offered.state is State.OFFERED
    other = "b" if offered.truck == "a" else "a"
    with pytest.raises(BookingError, match=f"booking {made.id} is not offered to {other}") as refused:
        renovation.reply(other, made.id, accept=True, now_s=NOW + 60)
    assert refused.value.code == "refused"
    assert book.get(made.id) == offered  # nothing moved
    assert book.get("nope") is None
    # Not answered: offered again, to no truck in particular.
    back = book.move(made.id, State.REQUESTED, NOW + 120, "dispatch", detail="not answered")
    assert back.truck is None


def test_a_window_is_refused_from_the_second_it_is_over_or_too_far_ahead(book: Bookings) -> None:
    """Each refusal with its code, for the page to say in its reader's language."""
    ahead_s = book.rules.max_ahead_days * 86400

    wide_s = book.rules.max_window_h * 3600

    def window(latest_s: float, wide_s: float = 3600) -> BookingRequest:
        latest = dt.datetime.fromtimestamp(latest_s, ZONE)
        earliest = latest - dt.timedelta(seconds=wide_s)
        return request(earliest=earliest.isoformat(), latest=latest.isoformat())

    for asked, code, says in (
        (window(NOW), "window_over", "the window ended at 2026-12-01T08:00:00[+]08:00, before now"),
        (window(NOW + ahead_s + 1), "window_too_far", "30 days ahead: bookings.max_ahead_days allows 30$"),
        (window(NOW + 86400, wide_s + 1), "window_too_wide", "72 h wide: bookings.max_window_h allows 72 h$"),
    ):
        with pytest.raises(BookingError, match=says) as refused:
            book.create(asked, NOW, "staff")
        assert refused.value.code == code
    made, _ = book.create(window(NOW + ahead_s), NOW, "staff")  # as far ahead as allowed
    assert made.latest_s == NOW + ahead_s
    wide, _ = book.create(window(NOW + 86400, wide_s), NOW, "staff")  # as wide as allowed
    assert wide.latest_s - wide.earliest_s == wide_s


def test_a_booking_goes_through_its_life_and_every_step_is_kept(book: Bookings) -> None:
    made, _ = book.create(request(bags=30, volume_m3=None), NOW, "staff")
    assert made.m3 == pytest.approx(1.5)  # 30 bags of 0.05 m³
    steps = [
        (State.OFFERED, "dispatch", "truck-renovation"),
        (State.ACCEPTED, "driver", None),
        (State.EN_ROUTE, "truck-renovation", None),
        (State.ARRIVED, "truck-renovation", None),
        (State.COLLECTED, "truck-renovation", None),
        (State.CLOSED, "truck-renovation", None),
    ]
    for n, (state, by, truck) in enumerate(steps, start=1):
        moved = book.move(
            made.id, state, NOW + 60 * n, by, truck=truck, kg=310.0 if state is State.COLLECTED else None
        )
        assert moved.state is state
        assert moved.truck == "truck-renovation"
    assert book.get(made.id).collected_kg == 310.0  # type: ignore[union-attr]
    trail = book.trail(made.id)
    assert [t["state"] for t in trail] == ["requested"] + [str(s) for s, _, _ in steps]
    assert [t["by"] for t in trail][:3] == ["staff", "dispatch", "driver"]
    assert [t["at_ms"] for t in trail] == sorted(t["at_ms"] for t in trail)
    with pytest.raises(BookingError, match="closed: it cannot become cancelled"):
        book.move(made.id, State.CANCELLED, NOW + 999, "requester")


def test_a_cancellation_racing_the_truck_s_arrival_loses_cleanly(book: Bookings) -> None:
    made, _ = book.create(request(), NOW, "staff")
    for state in (State.OFFERED, State.ACCEPTED, State.EN_ROUTE):
        book.move(made.id, state, NOW, "x", truck="truck-renovation")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(state: State, by: str) -> None:
        barrier.wait()
        try:
            book.move(made.id, state, NOW + 1, by)
            outcomes.append(str(state))
        except BookingError:
            outcomes.append("refused")

    threads = [
        threading.Thread(target=attempt, args=(State.ARRIVED, "truck")),
        threading.Thread(target=attempt, args=(State.CANCELLED, "requester")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) in (["arrived", "refused"], ["cancelled", "refused"])
    final = book.get(made.id)
    assert final is not None
    assert str(final.state) in outcomes
    assert [t["state"] for t in book.trail(made.id)][-1] == str(final.state)  # one winner in the trail


def test_the_solver_respects_room_and_windows(feed: Feed) -> None:
    roads = Roads(feed)
    depot = feed.stops["depot"].xy
    end = NOW + 10 * 3600
    # 2 m³ of room in each, 2 m³ when emptied: each round may hold 2 + RELOADS x 2 m³.
    trucks = [TruckNow("a", depot, NOW, 2.0, end, 2.0), TruckNow("b", depot, NOW, 2.0, end, 2.0)]
    room = 2.0 + RELOADS * 2.0
    rooms = ["gubei-1", "hongmei-1", "yili-1", "jinhui-1", "xianxia-1"]
    pickups = [Pickup(f"p{i}", feed.stops[s].xy, 2.0, NOW, NOW + 6 * 3600) for i, s in enumerate(rooms)]
    late = Pickup("late", feed.stops["ronghua-1"].xy, 1.0, NOW + 3 * 3600, NOW + 4 * 3600)
    gone = Pickup("gone", feed.stops["ronghua-2"].xy, 1.0, NOW - 7200, NOW - 60)
    found = plan(roads, trucks, [*pickups, late, gone], depot, NOW)
    volume = {p.booking: p.m3 for p in [*pickups, late]}
    for truck, rounds in found.rounds.items():
        assert sum(volume[b] for b, _ in rounds) <= room, truck  # room respected
    placed = {b: t for rounds in found.rounds.values() for b, t in rounds}
    if "late" in placed:
        assert late.earliest_s <= placed["late"] <= late.latest_s  # waits for its window
    assert "gone" in found.unassigned  # its window is over
    # 11 m³ for 8 m³ of planned room: some piles wait for a truck to unload.
    assert sum(volume[b] for b in placed) <= 2 * room
    assert len(found.unassigned) >= 2
    # A full truck is still given a pile: it unloads on the way (one reload planned ahead).
    small = Pickup("due", feed.stops["gubei-1"].xy, 1.9, NOW, NOW + 3600)
    assert plan(roads, [TruckNow("a", depot, NOW, 0.0, end, 2.0)], [small], depot, NOW).rounds["a"]
    # A pile a driver accepted stays with that truck; a pile in its window is reached in it.
    kept = plan(roads, trucks, [Pickup("p0", pickups[0].at, 2.0, NOW, NOW + 6 * 3600, truck="b")], depot, NOW)
    assert [b for b, _ in kept.rounds.get("b", [])] == ["p0"]
    timed = plan(roads, trucks, [late], depot, NOW)
    [(_, at)] = [r[0] for r in timed.rounds.values() if r]
    assert late.earliest_s <= at <= late.latest_s
    assert kept.metres > 0
    assert roads.fallbacks == 0  # every pair joined by road


def test_booking_figures_per_compound_and_period_count_each_step_in_its_own_period() -> None:
    from linli.cloud.waste.booking_stats import BookingStep, booking_figures
    from linli.cloud.waste.rollups import Period

    def at(day: int, hour: int) -> int:
        return int(dt.datetime(2026, 11, day, hour, 0, tzinfo=ZONE).timestamp() * 1000)

    steps = [
        BookingStep(at(30, 9), "requested", "gubei-1"),
        BookingStep(at(30, 11), "collected", "gubei-1", wait_min=120.0, in_window=1, kg=400.0),
        BookingStep(at(30, 10), "requested", "gubei-1"),
        BookingStep(at(30, 16), "collected", "gubei-1", wait_min=360.0, in_window=0, kg=250.0),
        BookingStep(at(30, 20), "requested", "gubei-1"),
        BookingStep(at(30, 21), "cancelled", "gubei-1"),
        BookingStep(at(30, 23), "requested", "yili-1"),  # 23:00 on the 30th
        BookingStep(at(30, 23) + 3_600_000 * 2, "expired", "yili-1"),  # 01:00 on 1 December
    ]
    days = {(f.start.date().isoformat(), f.compound): f for f in booking_figures(steps, Period.DAY)}
    gubei = days[("2026-11-30", "gubei-1")]
    assert (gubei.requested, gubei.collected, gubei.cancelled, gubei.expired) == (3, 2, 1, 0)
    assert gubei.in_window == 0.5
    assert gubei.wait_mean_min == 240.0
    assert gubei.kg == 650.0
    assert days[("2026-12-01", "yili-1")].expired == 1  # counted when it expired, in its own day
    months = {(f.start.date().isoformat(), f.compound) for f in booking_figures(steps, Period.MONTH)}
    assert months == {("2026-11-01", "gubei-1"), ("2026-11-01", "yili-1"), ("2026-12-01", "yili-1")}
    line = gubei.line()
    assert line.startswith("waste_booking_rollup,compound=gubei-1,period=day ")
    assert "in_window=0.5" in line


def test_a_free_truck_takes_a_pile_now_rather_than_saving_it_for_a_later_trip(feed: Feed) -> None:
    """The first pass fills the next hours; one pass over the day would put the pile off."""
    roads = Roads(feed)
    depot = feed.stops["depot"].xy
    names = sorted(s for s in feed.stops if s != "depot")
    xy = {n: feed.stops[n].xy for n in names}
    m = roads.matrix([depot, *xy.values()])
    d = {(a, b): m[i][j] for i, a in enumerate(["depot", *names]) for j, b in enumerate(["depot", *names])}
    # `on` lies on the way to `far`: passing it first saves the drive back.
    on, far = max(
        ((a, b) for a in names for b in names if a != b),
        key=lambda ab: (d["depot", ab[1]] + d[ab[1], ab[0]]) - (d["depot", ab[0]] + d[ab[0], ab[1]]),
    )
    assert d["depot", far] + d[far, on] > d["depot", on] + d[on, far] + 500
    truck = [TruckNow("a", depot, NOW, 12.0, NOW + 10 * 3600, 12.0)]
    anytime = Pickup("anytime", xy[far], 1.0, NOW, NOW + 8 * 3600)
    later = Pickup("later", xy[on], 1.0, NOW + 3 * 3600, NOW + 4 * 3600)
    one_pass = plan(roads, truck, [anytime, later], depot, NOW, horizon_s=None)
    assert [b for b, _ in one_pass.rounds["a"]] == ["later", "anytime"]  # kilometres first
    rolling = plan(roads, truck, [anytime, later], depot, NOW)
    (first, at), (second, then) = rolling.rounds["a"]
    assert (first, second) == ("anytime", "later")
    assert at < NOW + 3600
    assert later.earliest_s <= then <= later.latest_s


def test_a_restart_remembers_the_orders_waiting_and_the_drivers_who_declined(feed: Feed, state: str) -> None:
    """Killed between steps: the next start reads the trail, escalates on time, offers elsewhere."""
    trucks = [RenovationTruck(id="a", capacity_m3=12), RenovationTruck(id="b", capacity_m3=12)]
    operator = Contact.model_validate(
        {"name": "operator", "channels": [{"kind": "email", "to": ["o@x.example"]}]}
    )
    told: list[tuple[str, str, str]] = []

    def tell(contact: Contact | Requester, message: BookingMessage) -> None:
        told.append((contact.name, message.state, message.booking.id))

    def start() -> Renovation:
        # Each start opens the file anew, as a process started after a kill would.
        bookings = Bookings(WasteState(state), feed, max_m3=12.0)
        return Renovation(feed, bookings, trucks, tell, operator=operator, accept_s=600)

    first = start()
    one, _ = first.book(request(key="one"), NOW, "office")
    two, _ = first.book(request(key="two", compound="yili-1"), NOW, "office")
    offered = {b.id: b.truck for b in first.bookings.all(frozenset({State.OFFERED}))}
    assert set(offered) == {one.id, two.id}
    first.reply(offered[two.id] or "", two.id, accept=False, now_s=NOW + 60)
    declined_by = offered[two.id]
    del first  # no goodbye: what it kept in memory is gone

    second = start()
    # The driver who declined is not asked again; the other truck is, once it is free.
    assert declined_by in second.declined[two.id]
    second.tick(NOW + 590)
    assert ("operator", "escalated", one.id) not in told
    second.tick(NOW + 660)  # the first order, offered at NOW, not answered within 10 minutes
    assert told.count(("operator", "escalated", one.id)) == 1
    assert second.bookings.trail(one.id)[-1]["detail"] == "not answered"
    third = start()
    assert third.declined[one.id] == {offered[one.id]}
    third.tick(NOW + 1300)
    assert told.count(("operator", "escalated", one.id)) == 1  # told once, whatever restarts follow
    for b in third.bookings.all(frozenset({State.OFFERED})):
        assert b.truck not in third.declined.get(b.id, set())


def test_a_plan_solved_in_the_worker_process_is_the_plan_solved_in_place(feed: Feed, tmp_path: Path) -> None:
    """The same bookings and trucks, planned by the service's worker process and in place."""
    trucks = [RenovationTruck(id="a", capacity_m3=6), RenovationTruck(id="b", capacity_m3=6)]
    compounds = ["gubei-1", "hongmei-1", "yili-1", "jinhui-1", "xianxia-1", "ronghua-1"]

    def renovation(name: str) -> Renovation:
        bookings = Bookings(WasteState(str(tmp_path / f"{name}.sqlite")), feed, max_m3=6.0)
        for n, compound in enumerate(compounds):
            bookings.create(request(compound=compound, volume_m3=1.0 + n / 2), NOW, "office")
        return Renovation(feed, bookings, trucks, lambda *_: None, operator=None)

    def rounds(r: Renovation) -> dict[str, list[tuple[str, float]]]:
        by_id = {b.id: b.compound for b in r.bookings.all()}
        return {t: [(by_id[b], at) for b, at in rs] for t, rs in r.plan.rounds.items()}

    in_place = renovation("in-place")
    in_place.dispatch(NOW)

    async def in_worker() -> Renovation:
        r = renovation("worker")
        planner = r.planner = Planner(r)
        try:
            r.dispatch(NOW)
            assert r.plan.rounds == {}  # not solved yet: the event loop did not wait for it
            await planner.idle()
        finally:
            await planner.close()
        assert (planner.solved, planner.errors) == (1, 0)
        return r

    worker = asyncio.run(in_worker())
    assert rounds(worker) == rounds(in_place)
    assert sorted(rounds(worker)) == ["a", "b"]

    def offered(r: Renovation) -> set[tuple[str, str | None]]:
        return {(b.compound, b.truck) for b in r.bookings.all(frozenset({State.OFFERED}))}

    assert offered(worker) == offered(in_place)
    assert len(offered(worker)) == 2  # each truck's first
