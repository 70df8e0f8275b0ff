"""The simulator's renovation truck: it answers the platform's orders, drives the roads to the
pile, lifts it and goes home; and, with `linli sim district` and the waste service on one
Mosquitto, a booking goes from requested to closed with nobody scripting the truck."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from linli.cloud.tokens import ENV_TOKEN
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.service import WasteService
from linli.demo.recording import on_shift_all_day
from linli.demo.servers import LocalServer, free_port
from linli.sim.kinds.truck import Truck
from linli.sim.timetable import Traffic
from linli.transit.gtfs import Feed, load_feed, metres
from support import LOOPBACK, start_sim, stop_process, wait_until

FEED = Path(__file__).resolve().parents[2] / "deploy" / "gtfs" / "hongqiao"
TOKEN = "sim-s3cret"  # noqa: S105 (the test's own)
ZONE = dt.timezone(dt.timedelta(hours=8))
MONDAY_NOON = dt.datetime(2026, 12, 7, 12, 0, tzinfo=ZONE).timestamp()


def on_call_feed(tmp: Path) -> Path:
    """The district's timetable, its renovation truck on shift around the clock from an hour ago."""
    folder = tmp / "gtfs"
    shutil.copytree(FEED, folder)
    on_shift_all_day(folder, time.time() - 3600)
    return folder


def test_the_truck_on_call_answers_drives_the_roads_lifts_the_pile_and_goes_home() -> None:
    feed: Feed = load_feed(FEED)
    pile = feed.stops["hongmei-1"]
    for seed in ("a", "b", "c"):  # a driver declines one order in ten: find one that takes it
        truck = Truck(seed=seed, start=MONDAY_NOON, feed=feed, truck="truck-renovation", traffic=Traffic())
        truck.advance_to(MONDAY_NOON + 60)
        order = {"booking": "b1", "compound": pile.id, "lat": pile.lat, "lon": pile.lon, "volume_m3": 2.0}
        truck.on_order(order)
        # Stepped as the district steps it: each step answers and plans what was heard.
        messages = [m for step in range(90, 3 * 3600, 30) for m in truck.advance_to(MONDAY_NOON + step)]
        [reply] = [body for kind, body in messages if kind == "order_reply"]
        if reply["accept"]:
            break
    assert reply == {"ts": reply["ts"], "booking": "b1", "accept": True}
    positions = [body for kind, body in messages if kind == "location" and body["acc"] is True]
    moving = [p for p in positions if p["speed"] > 0]
    at_pile = [p for p in positions if p.get("stop") == pile.id]
    [lift] = [body for kind, body in messages if kind == "lift"]
    assert (lift["stop"], lift["waste_type"]) == (pile.id, "renovation")
    assert 350 <= lift["collected_kg"] <= 650  # 2 m³ of rubble
    assert moving[0]["ts"] < at_pile[0]["ts"] <= lift["ts"] < moving[-1]["ts"]
    # On the roads: each 10 s report within a road's reach of the last, none off the district.
    xs = [metres(p["lat"], p["lon"]) for p in moving]
    assert all(math.dist(a, b) < 120 for a, b in itertools.pairwise(xs))
    home = feed.stops["depot"].xy
    assert math.dist(metres(moving[-1]["lat"], moving[-1]["lon"]), home) < 150  # back at the depot
    # Not "parked at the depot" while it is out on the job.
    parked = [body["ts"] for kind, body in messages if kind == "location" and body["acc"] is False]
    assert not [t for t in parked if moving[0]["ts"] <= t <= moving[-1]["ts"]]


def test_the_driver_does_not_collect_before_the_requester_s_window_opens() -> None:
    feed: Feed = load_feed(FEED)
    pile = feed.stops["hongmei-1"]
    opens = MONDAY_NOON + 2 * 3600  # offered at noon for a window from 14:00
    for seed in ("a", "b", "c"):
        truck = Truck(seed=seed, start=MONDAY_NOON, feed=feed, truck="truck-renovation", traffic=Traffic())
        truck.advance_to(MONDAY_NOON + 60)
        truck.on_order(
            {"booking": "b1", "compound": pile.id, "lat": pile.lat, "lon": pile.lon, "volume_m3": 1.0,
             "earliest_ms": round(opens * 1000)}
        )  # fmt: skip
        messages = [m for step in range(90, 5 * 3600, 30) for m in truck.advance_to(MONDAY_NOON + step)]
        [reply] = [body for kind, body in messages if kind == "order_reply"]
        if reply["accept"]:
            break
    assert reply["accept"]
    at_pile = [body["ts"] for kind, body in messages if kind == "location" and body.get("stop") == pile.id]
    moving = [body["ts"] for kind, body in messages if kind == "location" and body["speed"] > 0]
    [lift] = [body for kind, body in messages if kind == "lift"]
    assert opens * 1000 <= at_pile[0] <= lift["ts"]  # there when the window opens, not before
    assert moving[0] > MONDAY_NOON * 1000 + 3600 * 1000  # waited at the depot rather than drove off
    assert at_pile[0] - opens * 1000 < 15 * 60 * 1000  # and no later than the drive takes


def test_simulated_staff_book_and_the_simulated_truck_collects_through_mosquitto(
    mosquitto: LocalServer, tmp_path: Path
) -> None:
    """`linli sim district --bookings-per-day`: staff book at the service, its driver answers the
    orders, drives and lifts; the service's clock is the trucks' (a past morning, 30x)."""
    folder = on_call_feed(tmp_path)
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        f'name = "oncall"\ntimetable = "{folder}"\n\n[[sites]]\nid = "fleet"\n\n'
        '[[groups]]\nkind = "truck"\nsites = ["fleet"]\nid = "truck-renovation"\n',
        encoding="utf-8",
    )
    api_port = free_port()
    config = WasteConfig(
        broker=TruckBroker(port=mosquitto.port),
        gtfs=folder,
        state=str(tmp_path / "waste.sqlite"),
        api_port=api_port,
        attempts=1,
        delivery=LOOPBACK,
    )
    journal = tmp_path / "bookings.jsonl"
    morning = (dt.datetime.now(ZONE) - dt.timedelta(days=1)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )

    async def scenario_run() -> dict[str, Any]:
        service = WasteService(config, TOKEN, load_feed(folder))
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 15)
        args = [
            "--scenario", str(scenario), "--mqtt-port", str(mosquitto.port), "--time-scale", "30",
            "--start", morning.isoformat(), "--bookings-per-day", "120",
            "--bookings-url", f"http://127.0.0.1:{api_port}", "--bookings-journal", str(journal),
        ]  # fmt: skip
        sim = await asyncio.to_thread(start_sim, "district", *args, env={"LINLI_CLOUD_TOKEN": TOKEN})

        def closed() -> list[str]:
            r = service.engine.renovation
            return [] if r is None else [b.id for b in r.bookings.all() if b.state == "closed"]

        try:
            await wait_until(lambda: bool(closed()), 240, "a booking closed by the simulated truck")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", headers=headers) as api:
                return dict((await api.get(f"/bookings/{closed()[0]}")).json())
        finally:
            assert await asyncio.to_thread(stop_process, sim) == 0
            stop.set()
            await task

    booking = asyncio.run(scenario_run())
    assert [t["state"] for t in booking["trail"]] == [
        "requested", "offered", "accepted", "en_route", "arrived", "collected", "closed",
    ]  # fmt: skip
    assert booking["trail"][0]["by"] == ENV_TOKEN  # booked with the token from the environment
    assert booking["trail"][2]["by"] == "driver of truck-renovation"
    assert booking["collected_kg"] > 50
    # The staff's bookings, as asked and as answered: the ground truth.
    asked = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert asked
    assert {a["outcome"] for a in asked} == {"booked"}
    assert booking["id"] in {a["answer"]["id"] for a in asked}
