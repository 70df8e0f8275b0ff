"""What a tick of the waste service's clock costs the state: where every trip under way stands
and the store's lines in one transaction, the renovation bookings read when one changed."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import random
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event

from linli.cloud.waste import engine as engine_module
from linli.cloud.waste import tracking
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.service import WasteService
from linli.cloud.waste.tracking import TripTracker
from linli.demo.servers import free_port
from linli.sim.timetable import Traffic, drive_trip
from linli.transit import stops
from linli.transit.gtfs import Feed, Trip, load_feed, runs_on
from linli.transit.stops import stop_distances
from support import LOOPBACK
from test_waste_service import FEED, MONDAY, local_feed


@pytest.mark.slow
def test_a_tick_writes_its_trips_and_lines_in_one_transaction_and_reads_the_bookings_once(
    tmp_path: Path,
) -> None:
    # Nobody at the keepers' gateway: a delivery fails at once.
    folder = local_feed(tmp_path, f"http://127.0.0.1:{free_port()}")
    feed = load_feed(folder)
    settings = {"gtfs": folder, "state": str(tmp_path / "waste.sqlite"), "broker": {"port": 1}}
    config = WasteConfig.model_validate({**settings, "attempts": 1, "delivery": LOOPBACK})
    service = WasteService(config, "t", feed)
    stamped: list[tuple[int, str, bytes]] = []
    for trip in feed.trips.values():
        if runs_on(feed, trip, MONDAY):
            truck = feed.routes[trip.route_id].truck
            drive = drive_trip(feed, trip, MONDAY, random.Random(trip.id), traffic=Traffic(sd=0.2))
            stamped += [
                (b["ts"], f"trucks/fleet/{truck}/{kind}", json.dumps(b).encode())
                for kind, b in drive.messages
            ]
    stamped.sort(key=lambda m: m[0])

    transactions: list[list[str]] = []  # the statements of each transaction committed, once a row
    current: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        current.extend([statement] * (len(params) if many else 1))  # executemany: once a row

    def committed(_conn: Any) -> None:
        transactions.append(current.copy())
        current.clear()

    event.listen(service.state.engine, "before_cursor_execute", executed)
    event.listen(service.state.engine, "commit", committed)

    async def run() -> None:
        for _, topic, payload in stamped:
            service.engine.take(topic, payload)
            await asyncio.sleep(0)
        await service.engine.deliveries.drain(30)

    try:
        asyncio.run(run())
        status_lines = len(
            service.state.rows("SELECT line FROM waste_outbox WHERE line LIKE 'waste_renovation %'")
        )
    finally:
        service.engine.leadership.close()
        service.state.close()
    assert service.engine.rejected == {}
    trips = [t for t in transactions if any(s.startswith("INSERT INTO waste_trip ") for s in t)]
    upserts = sum(s.startswith("INSERT INTO waste_trip ") for t in trips for s in t)
    # Several trips under way at once were written together, each time with the store's lines.
    assert upserts > len(trips) > 0, (upserts, len(trips))
    assert all(any(s.startswith("INSERT INTO waste_outbox") for s in t) for t in trips)
    # The renovation's minute: a status line each, the bookings read at the first only (none
    # changed since: `Bookings.open`), not once a minute, nor five times.
    bookings = sum(" FROM booking" in s for t in transactions for s in t)
    assert status_lines > 1
    assert bookings == 1, (bookings, status_lines)


def test_a_message_after_a_quiet_spell_writes_every_tick_it_catches_up_in_one_transaction(
    tmp_path: Path,
) -> None:
    """The trucks parked, a message an hour later moves the clock over 120 ticks: their reports
    (a renovation status line a minute) are committed together before `take` returns, each
    line as it was, not one transaction a tick."""
    folder = local_feed(tmp_path, f"http://127.0.0.1:{free_port()}")
    settings = {"gtfs": folder, "state": str(tmp_path / "waste.sqlite"), "broker": {"port": 1}}
    service = WasteService(WasteConfig.model_validate(settings), "t", load_feed(folder))
    zone = ZoneInfo("Asia/Shanghai")
    night = dt.datetime.combine(MONDAY, dt.time(2, 0, 10), zone).timestamp()  # no trip due
    parked = {"lat": 31.19, "lon": 121.40, "speed": 0.0}

    def park(t: float) -> None:
        body = {"ts": round(t * 1000), **parked}
        service.engine.take("trucks/fleet/truck-dry-south/location", json.dumps(body).encode())

    transactions: list[list[str]] = []  # the statements of each transaction committed
    current: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        current.append(statement)  # an executemany once

    def committed(_conn: Any) -> None:
        transactions.append(current.copy())
        current.clear()

    event.listen(service.state.engine, "before_cursor_execute", executed)
    event.listen(service.state.engine, "commit", committed)
    try:
        park(night)
        before, lines_before = len(transactions), status_lines(service)
        park(night + 3600)
        lines = status_lines(service)
    finally:
        service.engine.leadership.close()
        service.state.close()
    assert service.engine.rejected == {}
    assert lines[: len(lines_before)] == lines_before
    # A line each minute of the hour caught up, stamped with its own minute.
    stamps = [int(line.rsplit(" ", 1)[1]) for line in lines[len(lines_before) :]]
    assert len(stamps) == 60, stamps
    assert {b - a for a, b in itertools.pairwise(stamps)} == {60_000}, stamps
    writes = [t for t in transactions[before:] if any(s.startswith("INSERT INTO waste_outbox") for s in t)]
    assert len(writes) == 1, len(writes)


def test_a_trip_that_finishes_during_a_catch_up_is_kept_at_its_own_tick(tmp_path: Path) -> None:
    """The reports of a catch-up are written together, but not a finished trip's: kept only at
    the end of a long catch-up, a kill before it would leave the trip unfinished in the state,
    and a restarted service would open it again and find it broken down."""
    folder = local_feed(tmp_path, f"http://127.0.0.1:{free_port()}")
    feed = load_feed(folder)
    settings = {"gtfs": folder, "state": str(tmp_path / "waste.sqlite"), "broker": {"port": 1}}
    service = WasteService(WasteConfig.model_validate(settings), "t", feed)
    trip = feed.trips["dry-south-0810"]
    drive = drive_trip(feed, trip, MONDAY, random.Random(1), traffic=Traffic(sd=0.0, trip_sd=0.0))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    end_s = messages[-1][1]["ts"] / 1000
    finished: list[int] = []  # the transactions (by number) that kept the trip finished
    count = [0]

    def executed(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        rows = parameters if isinstance(parameters, list) else [parameters]
        mine = [r for r in rows if isinstance(r, dict) and r.get("trip_id") == trip.id]
        if statement.startswith("INSERT INTO waste_trip (") and any(r["finished"] for r in mine):
            finished.append(count[0])

    def committed(_conn: Any) -> None:
        count[0] += 1

    async def scenario() -> int:
        # In a running loop, as the service takes messages: the keepers' notices are started
        # (to a gateway nobody listens at) and drained at the end.
        for kind, body in messages:
            service.engine.take(f"trucks/fleet/truck-dry-south/{kind}", json.dumps(body).encode())
        assert f"{trip.id}@{MONDAY}" not in service.engine.finished  # closed at the next tick
        event.listen(service.state.engine, "before_cursor_execute", executed)
        event.listen(service.state.engine, "commit", committed)
        service.engine.advance(end_s + 3 * 3600)  # the clock moves on, 360 ticks in one go
        last = count[0]
        await service.engine.deliveries.drain(0)
        return last

    try:
        last = asyncio.run(scenario())
    finally:
        service.engine.leadership.close()
        service.state.close()
    assert service.engine.rejected == {}
    assert f"{trip.id}@{MONDAY}" in service.engine.finished
    assert finished, "the finished trip was never written"
    assert finished[0] < last - 1, (finished, last)  # not only in the catch-up's last transaction


def status_lines(service: WasteService) -> list[str]:
    """The renovation's status lines kept for the store, in order."""
    rows = service.state.rows(
        "SELECT line FROM waste_outbox WHERE line LIKE 'waste_renovation %' ORDER BY id"
    )
    return [str(line) for (line,) in rows]


def test_the_trips_of_one_road_share_their_stops_places_worked_out_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stop's distance along the road (`stop_distances`, shapely's substrings: slow) is
    worked out once for every trip of the same road and stops, not twice a trip, and every
    trip followed has them exactly as `stop_distances` gives them."""
    feed = load_feed(FEED)
    calls: list[str] = []

    def counted(feed_: Feed, trip: Trip) -> list[float]:
        calls.append(trip.id)
        return stop_distances(feed_, trip)

    monkeypatch.setattr(stops, "stop_distances", counted)
    monkeypatch.setattr(engine_module, "stop_distances", counted, raising=False)
    monkeypatch.setattr(tracking, "stop_distances", counted, raising=False)
    service = WasteService(WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite")), "t", feed)
    opened: list[TripTracker] = []
    zone = ZoneInfo(feed.timezone)
    try:
        service.engine.advance(dt.datetime.combine(MONDAY, dt.time(5, 0), zone).timestamp())
        for hour in range(6, 20):  # an hour at a time: every trip of the day is followed
            service.engine.advance(dt.datetime.combine(MONDAY, dt.time(hour, 0), zone).timestamp())
            opened += [tr for tr in service.engine.trackers.values() if tr not in opened]
    finally:
        service.engine.leadership.close()
        service.state.close()
    day = [trip for trip in feed.trips.values() if runs_on(feed, trip, MONDAY)]
    assert sorted(tr.trip.id for tr in opened) == sorted(trip.id for trip in day)
    roads = {(trip.shape_id, tuple(st.stop_id for st in trip.stop_times)) for trip in day}
    assert len(roads) < len(day)  # some routes run twice a day
    assert len(calls) == len(roads), calls
    for tracker in opened:
        places = stop_distances(feed, tracker.trip)
        assert tracker.state.places == places  # bit for bit
        assert [visit.at_m for visit in tracker.stops.visits] == places
