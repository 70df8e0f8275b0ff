"""Stop visits, arrival prediction and keeper notices, on the district's timetable."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest

from linli.cloud.waste import predict as predict_module
from linli.cloud.waste.outbox import trip_line
from linli.cloud.waste.predict import RUSH_PRIOR, History, TripState, observe, predict
from linli.cloud.waste.tracking import NoticeKind, TripTracker
from linli.sim import timetable
from linli.sim.timetable import Traffic, TripFaults, drive_trip
from linli.transit.gtfs import Feed, load_feed, runs_on, service_zero
from linli.transit.stops import (
    GEOFENCE_M,
    STAND_S,
    StopEvent,
    StopTracker,
    StopVisit,
    Visit,
    stop_distances,
)

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
MONDAY = dt.date(2026, 12, 7)


@pytest.fixture(scope="module")
def feed() -> Feed:
    return load_feed(FEED)


def test_stops_lie_in_order_along_their_road(feed: Feed) -> None:
    for trip in feed.trips.values():
        places = stop_distances(feed, trip)
        assert places == sorted(places)
        assert places[0] < GEOFENCE_M  # the depot, where the road starts
        assert places[-1] > feed.shapes[trip.shape_id].line.length - GEOFENCE_M  # and ends


def test_visits_arrive_leave_skip_and_a_late_lift_serves_after_all() -> None:
    t = StopTracker([StopVisit("a", 100.0), StopVisit("b", 300.0), StopVisit("c", 600.0)])
    assert t.position(70, 20, 1) == []  # approaching a, at speed
    assert t.position(95, 0, 2) == []  # stopped: perhaps a queue
    [arrived] = t.position(96, 0, 2 + STAND_S)  # still standing there: it has arrived
    assert (arrived.stop_id, arrived.state, arrived.time_s) == ("a", Visit.ARRIVED, 2)
    [left] = t.position(150, 15, 60)
    assert (left.stop_id, left.state) == ("a", Visit.LEFT)
    [skipped] = t.position(350, 30, 70)  # through b without stopping
    assert (skipped.stop_id, skipped.state) == ("b", Visit.SKIPPED)
    assert t.next_index() == 2
    [late] = t.lift("b", 3, 150.0, 80)  # the lift at b was reported late: b was served
    assert (late.stop_id, late.state) == ("b", Visit.ARRIVED)
    assert (t.visits[1].bins, t.visits[1].kg) == (3, 150.0)


def test_crawling_past_a_bin_room_is_no_arrival_but_a_lift_or_standing_still_is() -> None:
    """The audit's truck crawled past a bin room at 3.9 km/h within 40 m, in a queue: that was
    taken for an arrival, and the stop's notice was left standing."""
    t = StopTracker([StopVisit("depot", 0.0, depot=True), StopVisit("a", 100.0), StopVisit("b", 300.0)])
    [parked] = t.position(2, 0, 0)  # at the depot, still: arrived at once (nothing is lifted)
    assert parked.state is Visit.ARRIVED
    [left] = t.position(50, 20, 10)
    assert (left.stop_id, left.state) == ("depot", Visit.LEFT)
    # 80 s through a's geofence at 3.9 km/h, a fix every 10 s: driven past, not arrived.
    events = [e for s in range(12) for e in t.position(65 + 7 * s, 3.9, 20 + 10 * s)]
    assert [(e.stop_id, e.state) for e in events] == [("a", Visit.SKIPPED)]
    # A short stop in the queue by b, then a lift there: arrived when it stopped, not at the lift.
    assert t.position(290, 0, 200) == []
    [lifted] = t.lift("b", 2, 40.0, 230)
    assert (lifted.stop_id, lifted.state, lifted.time_s) == ("b", Visit.ARRIVED, 200)


def test_history_learns_the_hour_then_the_segment_and_dwell_by_bins() -> None:
    h = History("Asia/Shanghai")
    rush = dt.datetime(2026, 12, 7, 18, 10, tzinfo=dt.UTC).timestamp() - 8 * 3600  # 18:10 in Shanghai
    assert h.hour(rush) == 18
    # Nothing learned: the timetable by the city's usual rush at 18:00, the prior.
    assert h.segment("r", 3, rush, 100.0) == pytest.approx(100.0 * RUSH_PRIOR[18])
    assert h.segment("r", 3, rush - 5 * 3600, 100.0) == 100.0  # 13:10, free flow
    for k in range(45):  # segments of other routes took 1.5 times their schedule at 18:xx
        h.add_segment("other", k % 9, rush, rush + 150, 100.0)
    assert h.segment("r", 3, rush, 100.0) == pytest.approx(150.0, abs=1)  # the prior outweighed
    for _ in range(20):
        h.add_segment("r", 3, rush, rush + 210, 100.0)
    assert h.segment("r", 3, rush, 100.0) == pytest.approx(210.0, abs=3)  # then its own
    rng = random.Random(4)
    for _ in range(200):
        bins = rng.randint(1, 10)
        h.add_dwell(bins, 45 + 22 * bins + rng.gauss(0, 5))
    assert h.dwell(4, 999.0) == pytest.approx(45 + 22 * 4, abs=3)


def test_a_roads_factor_learned_at_one_hour_carries_to_the_others() -> None:
    """A segment driven at twice its schedule every morning at 10 is slow at 14:00 too, where it
    has never been driven: the road's factor is learned at every hour, the hour's traffic on
    every route (issue 34: a late departure moves a segment to an hour with no samples)."""
    h = History("Asia/Shanghai")
    ten = dt.datetime(2026, 12, 7, 10, 10, tzinfo=dt.UTC).timestamp() - 8 * 3600
    for k in range(40):  # the other routes run to schedule at 10 and at 14
        h.add_segment("other", k % 8, ten, ten + 100, 100.0)
        h.add_segment("other", k % 8, ten + 4 * 3600, ten + 4 * 3600 + 100, 100.0)
    for _ in range(7):
        h.add_segment("r", 3, ten, ten + 200, 100.0)
    assert h.segment("r", 3, ten, 100.0) == pytest.approx(200.0, abs=15)
    assert h.segment("r", 3, ten + 4 * 3600, 100.0) == pytest.approx(200.0, abs=25)
    assert h.segment("r", 4, ten + 4 * 3600, 100.0) == pytest.approx(100.0, abs=5)  # another road


@pytest.fixture
def no_rush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traffic exactly as the timetable assumes, and the predictor told so: the notices' timing
    shows alone."""
    monkeypatch.setattr(timetable, "RUSH", {})
    monkeypatch.setattr(predict_module, "RUSH_PRIOR", {})


@pytest.mark.usefixtures("no_rush")
def test_the_prediction_adds_segments_and_dwells_from_where_the_truck_is(feed: Feed) -> None:
    trip = feed.trips["wet-north-0630"]
    zero = service_zero(MONDAY, feed.timezone)
    places = stop_distances(feed, trip)
    bins = [0] + [feed.extras.stops[st.stop_id].bins for st in trip.stop_times[1:-1]] + [0]
    state = TripState(trip, zero, places, bins)
    st = trip.stop_times
    # Before it leaves: the timetable, to the second (no history, no pace yet).
    before = predict(History(feed.timezone), state, zero + st[0].departure_s - 600)
    assert before == {k: zero + st[k].arrival_s for k in range(1, len(st))}
    # It left stop 2 three minutes late and is halfway to stop 3.
    state.arrived = {
        0: zero + st[0].arrival_s,
        1: zero + st[1].arrival_s + 180,
        2: zero + st[2].arrival_s + 180,
    }
    state.left = {
        0: zero + st[0].departure_s,
        1: zero + st[1].departure_s + 180,
        2: zero + st[2].departure_s + 180,
    }
    state.progress = (places[2] + places[3]) / 2
    now = state.left[2] + (st[3].arrival_s - st[2].departure_s) / 2
    after = predict(History(feed.timezone), state, now)
    assert after[3] == pytest.approx(zero + st[3].arrival_s + 180, abs=1)  # the delay carried forward
    assert after[len(st) - 1] == pytest.approx(zero + st[-1].arrival_s + 180, abs=1)


@pytest.mark.usefixtures("no_rush")
def test_each_keeper_hears_once_before_then_arrival_and_collection(feed: Feed) -> None:
    trip = feed.trips["dry-south-0810"]
    assert runs_on(feed, trip, MONDAY)
    drive = drive_trip(feed, trip, MONDAY, random.Random(3), traffic=Traffic(sd=0.0, trip_sd=0.0))
    zero = service_zero(MONDAY, feed.timezone)
    tracker = TripTracker(feed, trip, zero, History(feed.timezone))
    tracker.replay(drive.messages)
    actual = {a.index: a.actual_s or 0.0 for a in drive.arrivals}
    bin_rooms = [k for k, st in enumerate(trip.stop_times) if st.stop_id not in feed.extras.depots]
    by_kind = {kind: [n for n in tracker.notices if n.kind is kind] for kind in NoticeKind}
    for kind in (NoticeKind.NOTICE, NoticeKind.ARRIVED, NoticeKind.COLLECTED):
        assert sorted(n.index for n in by_kind[kind]) == bin_rooms, kind
    assert by_kind[NoticeKind.CANCELLATION] == []
    for n in by_kind[NoticeKind.NOTICE]:
        lead = (actual[n.index] - n.time_s) / 60
        assert 13 <= lead <= 18, (n.stop_id, lead)  # the window a keeper is promised
    # Every notice came before its arrival message, and collection after arrival.
    order = [(n.index, n.kind) for n in tracker.notices]
    for k in bin_rooms:
        assert (
            order.index((k, NoticeKind.NOTICE))
            < order.index((k, NoticeKind.ARRIVED))
            < order.index((k, NoticeKind.COLLECTED))
        )


@pytest.mark.usefixtures("no_rush")
def test_a_noticed_stop_driven_past_is_cancelled(feed: Feed) -> None:
    trip = feed.trips["dry-south-0810"]
    zero = service_zero(MONDAY, feed.timezone)
    drive = drive_trip(feed, trip, MONDAY, random.Random(5), traffic=Traffic(sd=0.0, trip_sd=0.0))
    skipped = trip.stop_times[2].stop_id
    # The truck drives past the second bin room: no dwell reports there, no lift.
    messages = [
        (kind, body)
        for kind, body in drive.messages
        if body.get("stop") != skipped
        and not (kind == "location" and body["speed"] == 0 and body.get("stop") == skipped)
    ]
    tracker = TripTracker(feed, trip, zero, History(feed.timezone))
    tracker.replay(messages)
    told = [n.kind for n in tracker.notices if n.stop_id == skipped]
    # Told it was coming (perhaps corrected), then that it will not: never that it arrived.
    assert told[0] is NoticeKind.NOTICE
    assert told[-1] is NoticeKind.CANCELLATION
    assert set(told[1:-1]) <= {NoticeKind.CORRECTION}


@pytest.mark.usefixtures("no_rush")
def test_a_blocked_gate_is_deferred_returned_to_and_teaches_no_dwell(feed: Feed) -> None:
    trip = feed.trips["dry-south-0810"]
    history = History(feed.timezone)
    faults = TripFaults(blocked=frozenset({3}))
    drive = drive_trip(
        feed, trip, MONDAY, random.Random(2), traffic=Traffic(sd=0.0, trip_sd=0.05), faults=faults
    )
    tracker = TripTracker(feed, trip, service_zero(MONDAY, feed.timezone), history)
    tracker.replay(drive.messages)
    told = [(n.index, n.kind) for n in tracker.notices]
    assert told.index((3, NoticeKind.DEFERRED)) < told.index((3, NoticeKind.RETURNED))
    assert (3, NoticeKind.CANCELLATION) not in told
    assert [i.kind for i in tracker.incidents] == ["blocked"]


def test_an_hour_at_a_stop_is_not_learned_as_dwell(feed: Feed) -> None:
    """A blocked gate came back to, or the last bin room while the truck drives back to one:
    the visit lasts an hour, which would make every later stop look late if learned."""
    trip = feed.trips["dry-south-0810"]
    history = History(feed.timezone)
    state = TripState(trip, 0.0, stop_distances(feed, trip), [4] * len(trip.stop_times))
    visits = [(3, 120.0), (4, 140.0), (5, 160.0), (6, 180.0), (7, 200.0), (5, 3600.0)]
    for k, (bins, stay) in enumerate(visits, start=1):
        stop, t0 = trip.stop_times[k].stop_id, 1000.0 * k
        observe(history, state, StopEvent(stop, k, Visit.ARRIVED, t0))
        observe(history, state, StopEvent(stop, k, Visit.LEFT, t0 + stay), bins=bins)
    assert history.dwell(4, 0.0) == pytest.approx(140.0)


@pytest.mark.usefixtures("no_rush")
def test_the_blocked_gates_keeper_hears_back_only_when_the_truck_is_back(feed: Feed) -> None:
    """The audit's keeper heard "cannot reach" and "back" in the same second from the truck
    still standing at the gate, and no collection followed."""
    trip = feed.trips["dry-south-0810"]
    faults = TripFaults(blocked=frozenset({3}))
    drive = drive_trip(
        feed, trip, MONDAY, random.Random(2), traffic=Traffic(sd=0.0, trip_sd=0.05), faults=faults
    )
    tracker = TripTracker(feed, trip, service_zero(MONDAY, feed.timezone), History(feed.timezone))
    tracker.replay(drive.messages)
    at_3 = [n for n in tracker.notices if n.index == 3]
    assert [n.kind for n in at_3 if n.kind not in (NoticeKind.NOTICE, NoticeKind.CORRECTION)] == [
        NoticeKind.DEFERRED,
        NoticeKind.RETURNED,
        NoticeKind.COLLECTED,
    ]
    returned = next(n for n in at_3 if n.kind is NoticeKind.RETURNED)
    served = drive.arrivals[3].served_s
    last_room = drive.arrivals[-2].actual_s
    assert served is not None
    assert last_room is not None
    assert returned.time_s >= served > last_room  # back after every other bin room, not before


@pytest.mark.usefixtures("no_rush")
def test_late_and_out_of_order_fixes_never_take_the_trip_back(feed: Feed) -> None:
    """Over the cellular network a truck's fixes drop out for minutes and come in a burst when it
    is back, while the service's clock ticks on; single fixes come behind newer ones."""
    trip = feed.trips["dry-south-0810"]
    zero = service_zero(MONDAY, feed.timezone)
    drive = drive_trip(feed, trip, MONDAY, random.Random(3), traffic=Traffic(sd=0.0, trip_sd=0.0))

    def delivered_ms(n: int, kind: str, ts: int) -> int:
        if kind != "location":
            return ts
        if ts // 60_000 % 12 < 4:  # out of reach 4 minutes in every 12: sent when back
            return (ts // 720_000) * 720_000 + 240_000
        return ts + (25_000 if n % 7 == 0 else 0)  # late behind the next ones

    order = sorted((delivered_ms(n, kind, body["ts"]), n) for n, (kind, body) in enumerate(drive.messages))
    tracker = TripTracker(feed, trip, zero, History(feed.timezone))
    clock, progress = (order[0][0] // 30_000) * 30, []
    checked = 0

    def decided_now() -> None:
        nonlocal checked
        for notice in tracker.notices[checked:]:
            if notice.kind in (NoticeKind.NOTICE, NoticeKind.CORRECTION):
                assert notice.time_s >= clock, notice  # decided now, not at a time gone by
        checked = len(tracker.notices)

    for at_ms, n in order:
        while clock + 30 <= at_ms / 1000:  # the service's clock, on the newest message heard
            clock += 30
            tracker.tick(clock)
            decided_now()
        kind, body = drive.messages[n]
        t = body["ts"] / 1000
        if kind == "location":
            tracker.location(body["lat"], body["lon"], body["speed"], t)
        elif kind == "lift":
            tracker.lift(body["stop"], body["bins"], body["collected_kg"], t)
        decided_now()
        progress.append(tracker.state.progress)
    assert progress == sorted(progress)
    told = {n.index for n in tracker.notices if n.kind is NoticeKind.NOTICE}
    assert told == {k for k, st in enumerate(trip.stop_times) if st.stop_id not in feed.extras.depots}


@pytest.mark.slow
def test_a_fresh_service_starts_from_the_timetable_and_the_hours_traffic(feed: Feed) -> None:
    """Started with no history, the service sent a correction for nearly every notice in the
    evening rush (30 notices, 30 corrections) as it moved from the timetable to what it learned."""
    notices = corrections = 0
    for seed in (1, 2):
        history = History(feed.timezone)  # fresh, for the whole day
        for trip in sorted(feed.trips.values(), key=lambda t: t.stop_times[0].departure_s):
            if not runs_on(feed, trip, MONDAY):
                continue
            drive = drive_trip(
                feed, trip, MONDAY, random.Random(f"{seed}:{trip.id}"), traffic=Traffic(seed=seed)
            )
            tracker = TripTracker(feed, trip, service_zero(MONDAY, feed.timezone), history)
            tracker.replay(drive.messages)
            notices += sum(n.kind is NoticeKind.NOTICE for n in tracker.notices)
            corrections += sum(n.kind is NoticeKind.CORRECTION for n in tracker.notices)
    assert notices > 100
    assert corrections <= 0.35 * notices  # 60 of 112 before the prior (0.54 a notice), 34 with it


def test_a_truck_still_parked_past_its_time_is_late_by_what_late_trucks_do(feed: Feed) -> None:
    trip = feed.trips["dry-south-0810"]
    zero = service_zero(MONDAY, feed.timezone)
    due = zero + trip.stop_times[0].departure_s
    places = stop_distances(feed, trip)
    state = TripState(trip, zero, places, [0, *[4] * (len(places) - 2), 0])
    fresh, seasoned = History(feed.timezone), History(feed.timezone)
    for late in [20, 40, 30, 50, 10, 25, 45, 35, 15, 55, 30, 20, 40, 30]:  # on time, mostly
        seasoned.add_departure(late)
    for late in [400, 420, 380, 410, 390, 600]:  # the late ones: about 6.5 minutes
        seasoned.add_departure(late)
    to_first = predict(fresh, state, due - 900)[1] - due
    # Before its time: on time (the history's usual departure), whichever history.
    assert predict(seasoned, state, due - 900)[1] == pytest.approx(due + to_first, abs=60)
    # Two minutes past its time and still parked: as late as the late ones, not "leaving now".
    now = due + 120
    assert predict(fresh, state, now)[1] == pytest.approx(now + to_first, abs=1)
    assert predict(seasoned, state, now)[1] == pytest.approx(due + 400 + to_first, abs=30)
    # Later than any seen: it leaves now at the earliest.
    assert predict(seasoned, state, due + 900)[1] == pytest.approx(due + 900 + to_first, abs=1)
    # The history learns it from the depot's visit.
    observe(fresh, state, StopEvent("depot", 0, Visit.LEFT, due + 75))
    assert fresh._departures == [75]


def test_todays_traffic_on_every_road_carries_to_the_next_trip(feed: Feed) -> None:
    """A day's congestion (rain, an accident on the ring road) slows every road: what the
    morning's trips found is the evening trip's prior, not the month's average."""
    trip = feed.trips["wet-north-1730"]
    zero = service_zero(MONDAY, feed.timezone)
    places = stop_distances(feed, trip)
    state = TripState(trip, zero, places, [0, *[4] * (len(places) - 2), 0])
    due = zero + trip.stop_times[0].departure_s
    usual, today = History(feed.timezone), History(feed.timezone)
    for _ in range(6):  # the morning's segments, on other routes, took 1.3 times the expected
        today.add_day(zero, 600.0, 780.0)
    today.add_day(zero - 86400, 600.0, 300.0)  # yesterday's does not count today
    assert today.day(zero) == pytest.approx((6 * 780 + 1200) / (6 * 600 + 1200))
    assert usual.day(zero) == 1.0
    last = len(places) - 1
    travel_usual = predict(usual, state, due - 900)[last] - due
    travel_today = predict(today, state, due - 900)[last] - due
    assert travel_today > 1.1 * travel_usual


def test_the_big_screen_never_shows_a_truck_due_a_negative_time(feed: Feed) -> None:
    trip = feed.trips["dry-south-0810"]
    drive = drive_trip(feed, trip, MONDAY, random.Random(3), traffic=Traffic(sd=0.0, trip_sd=0.0))
    tracker = TripTracker(feed, trip, service_zero(MONDAY, feed.timezone), History(feed.timezone))
    tracker.replay(drive.messages[: len(drive.messages) // 2])
    nxt = tracker.stops.next_index()
    assert nxt is not None
    due = tracker.predicted[nxt]
    # Read after its predicted time, before the truck says it is there: "due now", not "-5 min".
    fields = dict(f.split("=", 1) for f in trip_line(tracker, "t", due + 300).split(" ")[1].split(","))
    assert float(fields["predicted_min"]) == 0.0
    fields = dict(f.split("=", 1) for f in trip_line(tracker, "t", due - 300).split(" ")[1].split(","))
    assert float(fields["predicted_min"]) == 5.0


def test_a_keeper_is_corrected_for_a_change_that_lasts_and_at_most_twice(feed: Feed) -> None:
    """A fresh service moved one bin room 17:40 -> 17:43 -> 17:46 -> 17:49, and a red light or a
    minute of lost GPS moved a prediction for as long as it lasted."""
    trip = feed.trips["dry-south-0810"]
    zero = service_zero(MONDAY, feed.timezone)
    start = zero + trip.stop_times[0].departure_s
    told = start + 14 * 60
    # The stop's predicted arrival, minute by half minute: what the tracker is told at each tick.
    script = {
        0: told,  # within 15 minutes: the notice
        30: told + 240,  # 4 minutes off for half a minute, then back: a red light, no news
        60: told,
        90: told + 240,  # off from here on
        120: told + 240,
        150: told + 240,  # off for a minute: corrected
        180: told + 480,
        210: told + 480,
        240: told + 480,  # 4 minutes from the last told, for a minute: corrected again
        270: told + 720,
        300: told + 720,
        330: told + 720,
        360: told + 960,  # still moving, but a keeper is corrected twice at most
    }
    tracker = TripTracker(
        feed, trip, zero, History(feed.timezone), lambda _h, _s, now: {1: script[round(now - start)]}
    )
    for t in script:
        tracker.tick(start + t)
    told_at = [(n.kind, n.time_s - start, n.predicted_s) for n in tracker.notices]
    assert told_at == [
        (NoticeKind.NOTICE, 0, told),
        (NoticeKind.CORRECTION, 150, told + 240),
        (NoticeKind.CORRECTION, 240, told + 480),
    ]


def test_a_notice_goes_when_the_arrival_is_predicted_in_the_middle_of_the_promised_window(
    feed: Feed,
) -> None:
    """On time is a lead of 13 to 18 minutes: a notice sent at a predicted 15 put the
    prediction 2 minutes from the early edge and 3 from the late one, and more of the
    arrivals around it fell out early than late (issue 34)."""
    trip = feed.trips["dry-south-0810"]
    zero = service_zero(MONDAY, feed.timezone)
    start = zero + trip.stop_times[0].departure_s
    arrives = start + 1000
    tracker = TripTracker(feed, trip, zero, History(feed.timezone), lambda _h, _s, _now: {1: arrives})
    for t in range(0, 200, 10):
        tracker.tick(start + t)
    notices = [n for n in tracker.notices if n.kind is NoticeKind.NOTICE]
    assert [(arrives - n.time_s) / 60 for n in notices] == [15.5]


def test_a_parked_trucks_departure_is_aimed_at_the_middle_of_the_window(feed: Feed) -> None:
    """Of the delays past departures had, the one with the most of them within 2.5 minutes
    either side: the window a keeper's notice is aimed at."""
    trip = feed.trips["dry-south-0810"]
    zero = service_zero(MONDAY, feed.timezone)
    due = zero + trip.stop_times[0].departure_s
    history = History(feed.timezone)
    for late in [0, 0, 0, 0, 170, 170, 170, 300, 300, 300, 300]:
        history.add_departure(late)
    # 0 has 7 within 2 minutes before and 3 after, 170 has 7 within 2.5 either side.
    assert history.departure(due, due - 600) == due + 170
