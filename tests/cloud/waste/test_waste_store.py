"""What the waste service writes for the dashboards, in a real InfluxDB 1.x: trips under way,
each bin room's visit, incidents opened and acknowledged; and `linli waste stats --of service`."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import httpx

from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.outbox import VisitStore
from linli.cloud.waste.service import WasteService
from linli.demo.servers import LocalServer, free_port
from linli.sim.timetable import Traffic, TripFaults, drive_trip
from linli.transit.gtfs import load_feed
from support import influx1_create_db, influx1_query, unique

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
TOKEN = "waste-s3cret"  # noqa: S105 (the test's own)
MONDAY = dt.date(2026, 11, 23)
TRIP = "dry-south-0810"


def test_trips_visits_and_incidents_reach_the_store_and_the_service_figures_add_up(
    influx1: LocalServer, tmp_path: Path
) -> None:
    from linli.cloud.waste.api import app

    db = unique("waste")
    influx1_create_db(influx1.url, db)
    feed = load_feed(FEED)
    store = VisitStore(url=influx1.url, database=db)
    config = WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite"), store=store)
    trip = feed.trips[TRIP]
    faults = TripFaults(blocked=frozenset({3}), skipped=frozenset({5}))
    drive = drive_trip(
        feed, trip, MONDAY, random.Random(1), traffic=Traffic(sd=0.0, trip_sd=0.1), faults=faults
    )
    blocked, skipped = trip.stop_times[3].stop_id, trip.stop_times[5].stop_id
    end_ms = max(body["ts"] for _, body in drive.messages)

    async def scenario() -> tuple[int, int, int, list[dict[str, object]]]:
        service = WasteService(config, TOKEN, feed)
        for kind, body in sorted(drive.messages, key=lambda m: m[1]["ts"]):
            service.engine.take(f"trucks/fleet/truck-dry-south/{kind}", json.dumps(body).encode())
        service.engine.advance(end_ms / 1000 + 120)  # the clock moves on: the trip is over
        assert f"{TRIP}@{MONDAY}" in service.engine.finished
        # The store is down at first: nothing is lost, the lines wait.
        dead = VisitStore(url=f"http://127.0.0.1:{free_port()}", database=db)
        waiting = service.engine.outbox.pending()
        assert await asyncio.to_thread(service.engine.outbox.flush, dead, None) == 0
        assert service.engine.outbox.pending() == waiting > 0
        written = await asyncio.to_thread(service.engine.outbox.flush, store, None)
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://waste", headers=headers) as api:
            incidents = (await api.get("/incidents")).json()
            number = incidents[0]["number"]
            missing = (await api.post(f"/incidents/{number + 7}/ack")).status_code
            acked = (await api.post(f"/incidents/{number}/ack")).json()
            again = (await api.get("/incidents")).json()
        assert acked == {"incident": number, "kind": "blocked", "acknowledged": True}
        assert [i["acknowledged"] for i in again] == [True]
        await asyncio.to_thread(service.engine.outbox.flush, store, None)
        await service.engine.deliveries.drain(0)
        return waiting, written, missing, incidents

    waiting, written, missing, incidents = asyncio.run(scenario())
    assert written == waiting
    assert missing == 404
    assert [(i["kind"], i["stop"], i["acknowledged"]) for i in incidents] == [("blocked", blocked, False)]

    visits = influx1_query(influx1.url, db, 'SELECT * FROM "waste_visit"')
    outcomes = {row["stop"]: row["outcome"] for row in visits}
    rooms = [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]
    assert sorted(outcomes) == sorted(rooms)
    assert outcomes[blocked] == "revisited"
    assert outcomes[skipped] == "skipped"
    assert {outcomes[s] for s in rooms if s not in (blocked, skipped)} == {"served"}
    served = [row for row in visits if row["outcome"] == "served"]
    assert all(row["on_time"] in (0, 1) and row["delay_min"] is not None for row in served)
    assert all(row["noticed"] == 1 and 10 <= row["lead_min"] <= 20 for row in served)
    [skip_row] = [row for row in visits if row["outcome"] == "skipped"]
    assert skip_row["uncancelled"] == 0  # its keeper heard it is cancelled

    opened = influx1_query(influx1.url, db, 'SELECT "open", "change", "trip" FROM "waste_incident"')
    assert [(row["open"], row["change"], row["trip"]) for row in opened] == [(1, 1, TRIP), (0, -1, TRIP)]
    progress = influx1_query(
        influx1.url, db, 'SELECT "progress", "served", "scheduled", "next_stop" FROM "waste_trip"'
    )
    assert len(progress) > 30  # once a minute of the trip
    assert [row["progress"] for row in progress] == sorted(row["progress"] for row in progress)
    assert (progress[-1]["served"], progress[-1]["scheduled"]) == (len(rooms) - 1, len(rooms))

    span = ["--from", "2026-11-23", "--to", "2026-11-29", "--period", "week"]
    result = subprocess.run(
        [sys.executable, "-m", "linli.cli", "waste", "stats", "--of", "service", "--url", influx1.url,
         "--database", db, *span, "--csv", "--write"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [row] = list(csv.DictReader(io.StringIO(result.stdout.split("wrote")[0])))
    assert (row["period_start"], row["route"], row["stops"]) == ("2026-11-23", "dry-south", str(len(rooms)))
    assert (row["served"], row["revisited"], row["skipped"], row["missed"]) == (
        str(len(rooms) - 2),
        "1",
        "1",
        "0",
    )
    assert row["uncancelled"] == "0"
    rollup = influx1_query(influx1.url, db, 'SELECT * FROM "waste_performance"')
    assert [(r["period"], r["route"], r["stops"], r["skipped"]) for r in rollup] == [
        ("week", "dry-south", len(rooms), 1)
    ]
    as_json = subprocess.run(
        [sys.executable, "-m", "linli.cli", "waste", "stats", "--of", "service", "--url", influx1.url,
         "--database", db, *span, "--json"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    [facts] = json.loads(as_json.stdout)["rows"]
    assert list(facts) == list(row)  # the CSV's columns; numbers where the CSV has text
    assert (facts["route"], facts["stops"], facts["skipped"]) == ("dry-south", len(rooms), 1)
    assert f"{facts['on_time']:.1%}" == row["on_time"]

    # The compose stack's job: every period the last days touch, each kind, in one run.
    result = subprocess.run(
        [sys.executable, "-m", "linli.cli", "waste", "rollup", "--url", influx1.url, "--database", db,
         "--days", "40"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # No lifts stored (no edge here) and no bookings: only the service's figures.
    assert "wrote 0 tonnage rollups, 3 service rollups and 0 booking rollups" in result.stdout
    rollup = influx1_query(influx1.url, db, 'SELECT "stops", "period" FROM "waste_performance"')
    assert sorted(r["period"] for r in rollup) == ["day", "month", "week"]
    assert {r["stops"] for r in rollup} == {len(rooms)}


def test_the_dispatcher_defers_a_stop_its_keeper_hears_and_the_stops_after_come_sooner(
    tmp_path: Path,
) -> None:
    from linli.cloud.waste.api import app

    feed = load_feed(FEED)
    config = WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite"))
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(3), traffic=Traffic(sd=0.0, trip_sd=0.05))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    # Hand over up to the truck leaving its second bin room; defer the fourth (index 4).
    cut = next(
        i
        for i, (kind, body) in enumerate(messages)
        if kind == "lift" and body["stop"] == trip.stop_times[2].stop_id
    )
    deferred, after = trip.stop_times[4].stop_id, 5

    async def scenario() -> tuple[float, float, list[int], list[str]]:
        service = WasteService(config, TOKEN, feed)
        for kind, body in messages[: cut + 1]:
            service.engine.take(f"trucks/fleet/truck-dry-south/{kind}", json.dumps(body).encode())
        tracker = service.engine.trip_now(TRIP)
        assert tracker is not None
        before = tracker.predicted[after]
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://waste", headers=headers) as api:
            codes = [
                (await api.post(f"/trips/{TRIP}/stops/{deferred}/defer")).status_code,
                (await api.post(f"/trips/{TRIP}/stops/{deferred}/defer")).status_code,  # already
                (await api.post(f"/trips/{TRIP}/stops/nowhere/defer")).status_code,
            ]
        service.engine.advance(messages[cut][1]["ts"] / 1000 + 30)
        sooner = tracker.predicted[after]
        # The truck still comes by in its old order and lifts there: the keeper hears it is back.
        for kind, body in messages[cut + 1 :]:
            service.engine.take(f"trucks/fleet/truck-dry-south/{kind}", json.dumps(body).encode())
        told = [n["kind"] for n in reversed(service.engine.notices()) if n["stop_id"] == deferred]
        await service.engine.deliveries.drain(0)
        return before, sooner, codes, told

    before, sooner, codes, told = asyncio.run(scenario())
    assert codes == [200, 404, 404]
    assert sooner < before - 60  # its dwell is no longer on the way
    assert told[told.index("deferred") :] == ["deferred", "returned", "collected"]
