"""The trucks' simulator on the GTFS timetable: traffic, faults, ground truth, the district's truck."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from linli.cloud.waste.gtfs import Feed, load_feed, service_zero
from linli.sim.kinds.truck import FAULT_STOP, Truck
from linli.sim.timetable import Outcome, Traffic, TripFaults, drive_trip

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
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
