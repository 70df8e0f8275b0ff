"""The trucks' simulator on the GTFS timetable: traffic, faults, ground truth, the district's truck."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import Point

from linli.sim.kinds.truck import FAULT_STOP, Truck
from linli.sim.timetable import STOPPED_REPORT_S, Departures, Gps, Outcome, Traffic, TripFaults, drive_trip
from linli.transit.gtfs import Feed, load_feed, metres, service_zero
from linli.transit.stops import stop_distances

FEED = Path(__file__).resolve().parents[2] / "deploy" / "gtfs" / "hongqiao"
MONDAY = dt.date(2026, 12, 7)
TRIP = "dry-south-0810"


@pytest.fixture(scope="module")
def feed() -> Feed:
    return load_feed(FEED)


def kinds(messages: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [body for k, body in messages if k == kind]


def test_each_road_segment_has_its_own_factor_the_same_every_day() -> None:
    traffic = Traffic(seed=4, sd=0.3)
    factors = [traffic.road("wet-north", k) for k in range(1, 10)]
    assert factors == [Traffic(seed=4, sd=0.3).road("wet-north", k) for k in range(1, 10)]
    assert len(set(factors)) == len(factors)
    assert factors != [Traffic(seed=5, sd=0.3).road("wet-north", k) for k in range(1, 10)]
    assert Traffic(seed=4, sd=0.0).road("wet-north", 3) == 1.0


def test_rush_hours_slow_the_trucks_unless_turned_off(feed: Feed) -> None:
    trip = feed.trips[TRIP]  # leaves at 08:10, in the morning rush (roads 1.45 times free flow)

    def took(rush: bool) -> float:
        traffic = Traffic(sd=0.0, trip_sd=0.0, rush=rush)
        arrivals = drive_trip(feed, trip, MONDAY, random.Random(1), traffic=traffic).arrivals
        return (arrivals[-1].actual_s or 0.0) - (arrivals[0].actual_s or 0.0)

    assert took(rush=True) > 1.1 * took(rush=False) > 0  # the stops' own time is not stretched


def test_a_clean_drive_serves_every_bin_room_once_in_order(feed: Feed) -> None:
    trip = feed.trips[TRIP]
    run = drive_trip(feed, trip, MONDAY, random.Random(1), traffic=Traffic(sd=0.3, trip_sd=0.1))
    rooms = [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]
    assert [lift["stop"] for lift in kinds(run.messages, "lift")] == rooms
    assert all(a.outcome is Outcome.SERVED for a in run.arrivals)
    times = [a.actual_s or 0.0 for a in run.arrivals]
    assert all(times)
    assert times == sorted(times)
    stamps = [body["ts"] for _, body in run.messages]
    assert stamps == sorted(stamps)
    # Parked and switched on half an hour before leaving, then on the road.
    assert stamps[0] <= (service_zero(MONDAY, feed.timezone) + trip.stop_times[0].departure_s - 1700) * 1000


def test_a_blocked_gate_is_alarmed_passed_and_served_on_the_way_back(feed: Feed) -> None:
    trip = feed.trips[TRIP]
    faults = TripFaults(blocked=frozenset({3}))
    run = drive_trip(feed, trip, MONDAY, random.Random(2), traffic=Traffic(sd=0.3), faults=faults)
    blocked = trip.stop_times[3].stop_id
    alarms = kinds(run.messages, "alarm")
    assert [(a["alarm"], a["active"], a["stop"]) for a in alarms] == [
        ("blocked_access", True, blocked),
        ("blocked_access", False, blocked),
    ]
    lifts = [lift["stop"] for lift in kinds(run.messages, "lift")]
    assert lifts[-1] == blocked  # after every other bin room
    truth = run.arrivals[3]
    assert truth.outcome is Outcome.BLOCKED
    assert truth.actual_s is not None
    assert truth.served_s is not None
    last_room = run.arrivals[-2].actual_s
    assert last_room is not None
    assert truth.served_s > last_room > truth.actual_s


def test_a_stop_driven_past_has_no_lift_and_a_breakdown_reaches_nothing_after(feed: Feed) -> None:
    trip = feed.trips[TRIP]
    skipped = drive_trip(feed, trip, MONDAY, random.Random(3), faults=TripFaults(skipped=frozenset({2})))
    assert trip.stop_times[2].stop_id not in {lift["stop"] for lift in kinds(skipped.messages, "lift")}
    assert skipped.arrivals[2].outcome is Outcome.SKIPPED
    broken = drive_trip(feed, trip, MONDAY, random.Random(3), faults=TripFaults(breakdown_before=4))
    assert broken.broken
    assert [a["alarm"] for a in kinds(broken.messages, "alarm")] == ["breakdown"]
    assert [a.outcome for a in broken.arrivals[4:]] == [Outcome.NOT_REACHED] * (len(trip.stop_times) - 4)
    assert all(a.actual_s is None for a in broken.arrivals[4:])
    alarm_ms = kinds(broken.messages, "alarm")[0]["ts"]
    after = [p for p in kinds(broken.messages, "location") if p["ts"] > alarm_ms]
    assert after
    assert all(p["acc"] is False and p["speed"] == 0 for p in after)


def truck(feed: Feed, name: str, faults: frozenset[str] = frozenset()) -> Truck:
    """A district truck from Monday's start of service, with traffic of seed 1."""
    start = service_zero(MONDAY, feed.timezone)
    return Truck(seed="s", start=start, feed=feed, truck=name, traffic=Traffic(seed=1), faults=faults)


def test_the_district_truck_runs_its_days_trips_and_parks_between(feed: Feed) -> None:
    start = service_zero(MONDAY, feed.timezone)
    whole, stepped = truck(feed, "truck-wet-north"), truck(feed, "truck-wet-north")
    day = whole.advance_to(start + 86400)
    pieces = [m for t in range(600, 86401, 600) for m in stepped.advance_to(start + t)]
    assert day == pieces  # the same day however the clock steps
    lifts = kinds(day, "lift")
    routes = {lift["route"] for lift in lifts}
    assert routes == {"wet-north"}
    assert len(lifts) == 2 * 8  # two trips, eight bin rooms each
    parked = [p for p in kinds(day, "location") if p["acc"] is False]
    moving = [p for p in kinds(day, "location") if p["speed"] > 0]
    assert parked
    assert moving
    assert all(p["stop"] == "depot" and p["speed"] == 0 for p in parked)
    # Never parked while a trip is driven.
    for first, last in whole.busy:
        assert not [p for p in parked if first * 1000 <= p["ts"] <= last * 1000]


def test_the_district_truck_keeps_the_holidays_and_the_swapped_working_days(feed: Feed) -> None:
    """calendar_dates.txt: no recyclables on the Spring Festival's Monday, and on the Sunday
    worked in its place."""

    def lifts_on(date: dt.date) -> int:
        start = service_zero(date, feed.timezone)
        truck = Truck(seed="s", start=start, feed=feed, truck="truck-recyclable", traffic=Traffic(seed=1))
        return len(kinds(truck.advance_to(start + 86400), "lift"))

    assert lifts_on(dt.date(2027, 2, 1)) > 0  # an ordinary Monday
    assert lifts_on(dt.date(2027, 2, 8)) == 0  # removed: a holiday
    assert lifts_on(dt.date(2027, 1, 31)) == lifts_on(dt.date(2027, 2, 1))  # added: a Sunday worked
    assert lifts_on(dt.date(2027, 2, 7)) == 0  # an ordinary Sunday


def test_the_district_truck_faults_block_its_third_bin_room_or_break_it_for_good(feed: Feed) -> None:
    start = service_zero(MONDAY, feed.timezone)
    day = truck(feed, "truck-wet-north", frozenset({"blocked"})).advance_to(start + 86400)
    stop = feed.trips["wet-north-0630"].stop_times[FAULT_STOP].stop_id
    assert [a["stop"] for a in kinds(day, "alarm") if a["active"]] == [stop, stop]  # both trips
    two_days = truck(feed, "truck-wet-north", frozenset({"breakdown"})).advance_to(start + 2 * 86400)
    assert [a["alarm"] for a in kinds(two_days, "alarm")] == ["breakdown"]
    assert len(kinds(two_days, "lift")) == FAULT_STOP - 1  # the bin rooms before it, then nothing
    idle = truck(feed, "truck-renovation").advance_to(start + 86400)
    assert len(idle) == 86400 // 30
    assert all(p["acc"] is False for _, p in idle)


def test_a_fault_struck_while_the_truck_runs_hits_the_next_bin_room_and_leaves_the_past_as_sent(
    feed: Feed,
) -> None:
    """`linli demo`'s faults on demand: struck at 08:20 on Monday, when truck-dry-south is on its
    08:10 trip, the next bin room it comes to is blocked (it is served on the way back), or the
    truck breaks down after it; what it already sent is what a truck with no fault sent."""
    start = service_zero(MONDAY, feed.timezone)
    struck_at = start + 8 * 3600 + 20 * 60
    clean = truck(feed, "truck-dry-south")
    before = clean.advance_to(struck_at)
    clean_after = clean.advance_to(start + 86400)
    first_ahead = next(lift["stop"] for lift in kinds(clean_after, "lift"))

    blocked = truck(feed, "truck-dry-south")
    assert blocked.advance_to(struck_at) == before
    blocked.strike(frozenset({"blocked"}))
    after = blocked.advance_to(start + 86400)
    assert all(body["ts"] > struck_at * 1000 for _, body in after)
    alarms = [(a["stop"], a["active"]) for a in kinds(after, "alarm")]
    assert alarms == [(first_ahead, True), (first_ahead, False)]  # that trip only, not the next day's
    # Still every bin room lifted once: the blocked one on the way back.
    assert sorted(lift["stop"] for lift in kinds(after, "lift")) == sorted(
        lift["stop"] for lift in kinds(clean_after, "lift")
    )

    broken = truck(feed, "truck-dry-south")
    broken.advance_to(struck_at)
    broken.strike(frozenset({"breakdown"}))
    after = broken.advance_to(start + 2 * 86400)
    assert [a["alarm"] for a in kinds(after, "alarm")] == ["breakdown"]
    assert [lift["stop"] for lift in kinds(after, "lift")] == [first_ahead]  # then nothing, for good
    assert all(
        p["acc"] is False for p in kinds(after, "location") if p["ts"] > kinds(after, "alarm")[0]["ts"]
    )


# --- the harder world (issue 34): each behaviour seeded, deterministic, off by default ----------


def left_late_min(feed: Feed, departures: Departures, trips: int = 200) -> list[float]:
    trip = feed.trips[TRIP]
    due = service_zero(MONDAY, feed.timezone) + trip.stop_times[0].departure_s
    return [
        (drive_trip(feed, trip, MONDAY, random.Random(n), departures=departures).left_s - due) / 60
        for n in range(trips)
    ]


@pytest.mark.slow
def test_a_share_of_trips_leave_minutes_late_and_a_few_very_late(feed: Feed) -> None:
    assert max(left_late_min(feed, Departures(), 20)) <= 1  # the kind world: within a minute
    late = left_late_min(feed, Departures(late_share=0.3, late_min=4, very_late_share=0.05))
    assert late == left_late_min(feed, Departures(late_share=0.3, late_min=4, very_late_share=0.05))
    share_late = sum(x > 1 for x in late) / len(late)
    assert 0.25 <= share_late <= 0.45
    assert 3 <= sum(x >= 15 for x in late) <= 20


def test_the_days_congestion_slows_every_road_and_a_trips_own_factor_all_its_segments(feed: Feed) -> None:
    traffic = Traffic(seed=2, sd=0.0, trip_sd=0.0, day_sd=0.3)
    days = [traffic.day(MONDAY + dt.timedelta(days=n)) for n in range(10)]
    assert days == [traffic.day(MONDAY + dt.timedelta(days=n)) for n in range(10)]
    assert max(days) > 1.15
    assert min(days) < 0.87
    assert Traffic(seed=2).day(MONDAY) == 1.0
    trip = feed.trips[TRIP]

    def arrivals(tr: Traffic, seed: int) -> tuple[float, list[float]]:
        run = drive_trip(feed, trip, MONDAY, random.Random(seed), traffic=tr)
        return run.left_s, [a.actual_s or 0.0 for a in run.arrivals]

    left, flat = arrivals(Traffic(sd=0.0, trip_sd=0.0, rush=False), 1)
    for tr, factor in (
        (Traffic(seed=2, sd=0.0, trip_sd=0.0, day_sd=0.3, rush=False), days[0]),
        (Traffic(seed=1, sd=0.0, trip_sd=0.0, run_sd=0.3, rush=False), None),
    ):
        same_left, slowed = arrivals(tr, 1)
        assert same_left == left
        # The first segment, travel alone (after the depot's last report).
        ratio = (slowed[1] - left - STOPPED_REPORT_S) / (flat[1] - left - STOPPED_REPORT_S)
        if factor is not None:
            assert ratio == pytest.approx(factor)
        assert ratio != pytest.approx(1.0, abs=0.02)
        # Every segment after it by the same factor: the lateness grows (or shrinks) stop by stop.
        behind = [s - f for s, f in zip(slowed[1:], flat[1:], strict=True)]
        assert behind == sorted(behind, reverse=ratio < 1)
    # A trip's own factor differs from drive to drive, the same for the same trip and day.
    run = Traffic(sd=0.0, trip_sd=0.0, run_sd=0.3, rush=False)
    other_day = drive_trip(feed, trip, MONDAY + dt.timedelta(days=7), random.Random(1), traffic=run)
    late = [
        arrivals(run, 1)[1][-1] - flat[-1],
        (other_day.arrivals[-1].actual_s or 0.0) - flat[-1] - 7 * 86400,
    ]
    assert late[0] != pytest.approx(late[1], abs=30)


def test_the_truck_stops_at_signals_and_crawls_in_their_queues_away_from_the_stops(feed: Feed) -> None:
    trip = feed.trips[TRIP]
    traffic = Traffic(sd=0.0, trip_sd=0.0, signals_per_km=3)
    run = drive_trip(feed, trip, MONDAY, random.Random(1), traffic=traffic)
    kind = drive_trip(feed, trip, MONDAY, random.Random(1), traffic=Traffic(sd=0.0, trip_sd=0.0))
    fixes = kinds(run.messages, "location")
    on_the_road = [p for p in fixes if "stop" not in p]
    assert sum(p["speed"] == 0 for p in on_the_road) >= 5  # standing at red lights
    assert sum(0 < p["speed"] < 5 for p in on_the_road) >= 3  # crawling in their queues
    assert not [p for p in kinds(kind.messages, "location") if "stop" not in p and p["speed"] < 5]
    # The stops are reached when they were without the signals: the time is taken from the moving.
    assert [a.actual_s for a in run.arrivals] == pytest.approx([a.actual_s for a in kind.arrivals], abs=1)


def test_gps_fixes_drop_out_come_late_out_of_order_and_twice(feed: Feed) -> None:
    trip = feed.trips[TRIP]
    gps = Gps(dropouts_per_h=3, lost_share=0.5, late_share=0.1, repeat_share=0.05)
    clean = drive_trip(feed, trip, MONDAY, random.Random(4))
    run = drive_trip(feed, trip, MONDAY, random.Random(4), gps=gps)
    again = drive_trip(feed, trip, MONDAY, random.Random(4), gps=gps)
    assert run.messages == again.messages
    assert run.arrivals == clean.arrivals  # the ground truth is the same: only the link differs
    assert clean.delivered_ms == [body["ts"] for _, body in clean.messages]
    stamps = [body["ts"] for kind, body in run.messages if kind == "location"]
    sent = [body["ts"] for kind, body in clean.messages if kind == "location"]
    assert stamps != sorted(stamps)  # out of order
    assert len(set(stamps)) < len(stamps)  # some twice
    assert len(set(stamps)) < len(sent)  # some lost
    heard = [d for d, (kind, _) in zip(run.delivered_ms, run.messages, strict=True) if kind == "location"]
    assert max(b - a for a, b in itertools.pairwise(heard)) >= 120_000  # minutes without a fix
    assert run.delivered_ms == sorted(run.delivered_ms)
    assert all(d >= body["ts"] for d, (_, body) in zip(run.delivered_ms, run.messages, strict=True))
    assert kinds(run.messages, "lift") == kinds(clean.messages, "lift")  # lifts are acknowledged


def test_a_driver_serves_a_stop_after_the_next_one_without_telling(feed: Feed) -> None:
    trip = feed.trips[TRIP]
    run = drive_trip(feed, trip, MONDAY, random.Random(5), faults=TripFaults(reordered=frozenset({2})))
    rooms = [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]
    lifts = [lift["stop"] for lift in kinds(run.messages, "lift")]
    assert lifts == [rooms[0], rooms[2], rooms[1], *rooms[3:]]
    assert run.arrivals[2].outcome is Outcome.REORDERED
    a2, a3 = run.arrivals[2].actual_s, run.arrivals[3].actual_s
    assert a2 is not None
    assert a3 is not None
    assert a2 > a3
    assert [a.index for a in run.arrivals] == list(range(len(trip.stop_times)))


def test_a_skipped_bin_room_is_crawled_past_within_its_geofence(feed: Feed) -> None:
    trip = feed.trips[TRIP]
    run = drive_trip(feed, trip, MONDAY, random.Random(3), faults=TripFaults(skipped=frozenset({2})))
    places = stop_distances(feed, trip)
    line = feed.shapes[trip.shape_id].line
    near = [
        p
        for p in kinds(run.messages, "location")
        if abs(line.project(Point(metres(p["lat"], p["lon"]))) - places[2]) < 30
    ]
    assert near
    assert all(0 < p["speed"] < 5 for p in near)  # slow, never still, no lift
