"""kill -9 of the waste service invents nothing and loses nothing (issue 30).

A morning of the district's trucks (seed 1) goes through a real Mosquitto to a real
`linli waste run` process, twice on fresh states: once left alone, once killed with SIGKILL at
three moments while the trucks report, and started again each time. The trucks keep publishing
while the service is down: its persistent session makes the broker keep their messages. The
keepers, the operator and the dispatcher (one loopback HTTP receiver each run) must get the
same messages per recipient, trip, stop and kind, corrections included: none lost, none a
clean run lacks (a breakdown, a delay), and at most one extra copy per kill (a delivery under
way at the kill).
A trip broken down before a restart is not found broken down again after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from linli.cloud.waste.predict import predict
from linli.cloud.waste.service import WasteService
from linli.demo.servers import LocalServer, free_port
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import load_feed, runs_on
from peers import Inbox, Receiver
from support import unique, wait_for
from test_waste_service import FEED, MONDAY, TOKEN, TRIP, hand_over, incident_service, lift_at

SEED = 1
UNTIL_H = 11.0  # the trips leaving before this hour (Asia/Shanghai): five, ~2,200 messages
BATCH_S = 600  # the trucks' seconds published before the test waits for the service to take them
# When the service is killed (the trucks' time, hours): after the first trips are back at the
# depot (a finished trip must stay finished), and while others are under way.
KILLS_H = (7.95, 8.75, 9.85)
Key = tuple[str, str, str, str]  # recipient, trip, stop, kind


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {"clean": Receiver(), "killed": Receiver()}
    yield made
    for receiver in made.values():
        receiver.close()


def morning() -> list[tuple[int, str, bytes]]:
    """(time, topic, payload) of every truck message of the trips leaving before UNTIL_H, in order."""
    feed = load_feed(FEED)
    traffic = Traffic(seed=SEED, sd=0.3, trip_sd=0.1)
    out = []
    for trip in feed.trips.values():
        if not runs_on(feed, trip, MONDAY) or trip.stop_times[0].departure_s >= UNTIL_H * 3600:
            continue
        run = drive_trip(feed, trip, MONDAY, random.Random(f"{SEED}:{trip.id}"), traffic=traffic)
        truck = feed.routes[trip.route_id].truck
        for kind, body in run.messages:
            out.append((int(body["ts"]), f"trucks/fleet/{truck}/{kind}", json.dumps(body).encode()))
    return sorted(out, key=lambda m: m[0])


class Service:
    """`linli waste run` on its own state, started again (same config and state) after a kill."""

    def __init__(self, work: Path, broker: int, hooks: str) -> None:
        self.work = work
        gtfs = work / "gtfs"
        shutil.copytree(FEED, gtfs)
        extras = gtfs / "linli.toml"
        extras.write_text(
            extras.read_text(encoding="utf-8").replace("http://sms-gateway.district.example", hooks),
            encoding="utf-8",
        )
        self.state = work / "waste.sqlite"
        self.api = f"http://127.0.0.1:{free_port()}"
        self.config = work / "waste.toml"
        self.config.write_text(
            f'gtfs = "{gtfs}"\nstate = "{self.state}"\napi_port = {self.api.rsplit(":", 1)[1]}\n'
            # A delivery a killed service held is sent again 30 s after it was started (longer than
            # any delivery takes here, or the service would send its own again).
            "lease_s = 30\n"
            # One delivery under way at a time (every recipient is this one receiver): a kill cuts
            # at most one short, the one copy per kill a restart may send again.
            f"[broker]\nport = {broker}\n[delivery]\nallow_private = true\nper_destination = 1\n"
            + "".join(
                f'[{who}]\nname = "{who}"\nchannels = [{{ kind = "webhook", url = "{hooks}/{who}" }}]\n'
                for who in ("dispatcher", "operator")
            ),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.work / f"waste-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "linli.cli", "waste", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LINLI_CLOUD_TOKEN": TOKEN},
        )
        wait_for(lambda: self.stats() is not None, "the service's API", timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stats(self) -> dict[str, Any] | None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"the service exited: see {self.work}"
        try:
            response = httpx.get(
                f"{self.api}/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
        except httpx.HTTPError:
            return None
        return dict(response.json()) if response.status_code == 200 else None

    def clock_ms(self) -> int:
        stats = self.stats()
        return int((stats or {}).get("clock_ms") or 0)

    def held(self) -> int:
        """Deliveries held in the state: under way, or a killed service's waiting for their lease."""
        db = sqlite3.connect(self.state)
        try:
            return int(db.execute("SELECT COUNT(*) FROM waste_delivery").fetchone()[0])
        finally:
            db.close()


def run(service: Service, broker: int, messages: list[tuple[int, str, bytes]], kills: list[int]) -> int:
    """Every message through the broker, a batch at a time; SIGKILL once the service's clock
    passes each of `kills` (ms), the next batch published while it is down, then started again.
    Returns how many times it was killed."""
    trucks = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("trucks"))
    trucks.connect("127.0.0.1", broker)
    trucks.loop_start()
    service.start()

    def probe() -> bool:
        # Refused (no such truck), but counted: the service hears the trucks.
        trucks.publish("trucks/fleet/probe/location", b"{}", qos=1).wait_for_publish(10)
        return int((service.stats() or {}).get("received", 0)) > 0

    wait_for(probe, "the service's subscription", timeout=60)
    pending = sorted(kills)
    killed = 0
    i = 0
    try:
        while i < len(messages):
            edge = messages[i][0] + BATCH_S * 1000
            infos = []
            while i < len(messages) and messages[i][0] < edge:
                infos.append(trucks.publish(messages[i][1], messages[i][2], qos=1))
                i += 1
            for info in infos:
                info.wait_for_publish(30)
            last = messages[i - 1][0]
            if service.proc is None:  # this batch went while it was down: the broker keeps it
                service.start()
                if i < len(messages):
                    continue  # taken before the next batch (in order), which is waited for
            if pending and pending[0] <= last:
                at = pending.pop(0)
                wait_for(lambda at=at: service.clock_ms() >= at, "the service's clock at a kill", 120)  # type: ignore[misc]
                service.kill()
                service.proc = None
                killed += 1
                continue
            wait_for(lambda last=last: service.clock_ms() >= last, "the service taking a batch", 120)  # type: ignore[misc]
        # Every delivery done, a killed service's held ones sent once their lease ran out.
        wait_for(
            lambda: (service.stats() or {}).get("delivering", 1) == 0 and service.held() == 0,
            "every delivery done",
            90,
        )
    finally:
        service.stop()
        trucks.disconnect()
        trucks.loop_stop()
    return killed


def told(receiver: Receiver) -> Counter[Key]:
    """What each recipient was told: (recipient, trip, stop, kind), counted."""
    out: Counter[Key] = Counter()
    for path, body in list(receiver.posts):
        kind = body.get("notice") or body.get("incident") or "?"
        out[(path, str(body.get("trip")), str(body.get("stop")), str(kind))] += 1
    return out


def test_sigkill_three_times_while_trucks_report_loses_nothing_and_invents_nothing(
    mosquitto: LocalServer, receivers: dict[str, Receiver], tmp_path: Path
) -> None:
    messages = morning()
    zero = dt.datetime.combine(MONDAY, dt.time(), dt.timezone(dt.timedelta(hours=8))).timestamp()
    kills = [round((zero + h * 3600) * 1000) for h in KILLS_H]
    assert messages[0][0] < kills[0]
    assert kills[-1] < messages[-1][0]
    clean = Service(tmp_path / "clean", mosquitto.port, receivers["clean"].url)
    assert run(clean, mosquitto.port, messages, []) == 0
    killed = Service(tmp_path / "killed", mosquitto.port, receivers["killed"].url)
    assert run(killed, mosquitto.port, messages, kills) == len(KILLS_H)
    expected, got = told(receivers["clean"]), told(receivers["killed"])
    assert sum(expected.values()) > 100  # the morning told keepers plenty: a comparison worth making
    # Corrections too: the predictor's steps are kept in the state, so a restarted service
    # predicts, and corrects, as the one that was killed would have.
    corrections = [sum(n for key, n in c.items() if key[3] == "correction") for c in (expected, got)]
    print("corrections (clean, killed):", corrections)
    lost = expected - got
    invented = {key: n for key, n in got.items() if key not in expected}
    extra = sum((got - expected).values()) - sum(invented.values())
    assert not lost, f"lost: {dict(lost)}"
    assert not invented, f"invented: {invented}"
    assert extra <= len(KILLS_H), f"{extra} extra copies: {dict(got - expected)}"


def test_a_trip_broken_down_before_a_restart_is_not_found_broken_down_again(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    """The truck goes silent mid-trip and is found broken down; the service restarts while it
    is still silent: the operator and the dispatcher are not told a second time."""
    receiver, _, smtp = peers
    first, feed = incident_service(tmp_path, receiver.url, smtp)
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(7), traffic=Traffic(sd=0.0, trip_sd=0.1))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    before = messages[: lift_at(messages, trip.stop_times[3].stop_id) + 1]
    # The truck says nothing more; another truck's messages keep the clock going, for 20 minutes
    # before the restart and 20 after it.
    clock = [("location", {"ts": before[-1][1]["ts"] + k * 60_000, "lat": 31.2, "lon": 121.39})
             for k in range(1, 41)]  # fmt: skip

    async def run(service: WasteService, part: list[tuple[str, dict[str, Any]]], truck: str) -> None:
        hand_over(service, part, truck=truck)
        await service.engine.deliveries.drain(10)

    asyncio.run(run(first, before, "truck-dry-south"))
    asyncio.run(run(first, clock[:20], "truck-wet-north"))
    assert [str(i.kind) for i in first.engine.incidents] == ["breakdown"]
    told = len(receiver.at("/operator"))
    first.state.close()
    second = WasteService(first.config, TOKEN, feed)
    asyncio.run(run(second, clock[20:], "truck-wet-north"))
    assert told == 1
    assert len(receiver.at("/operator")) == told, receiver.at("/operator")
    assert len(second.state.incidents()) == 1
    second.state.close()


def test_a_restarted_service_predicts_as_the_one_it_replaces(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    """A slow truck's trip through one service up to its sixth stop; a second service started
    on its state takes the same messages again (as the broker sends them after a kill) and
    predicts every stop ahead as the first did: the trip's pace, where its truck has been and
    what the roads and dwells taught are kept in the state. (Before, the second predicted
    without them, and corrected keepers the first would not have.)"""
    receiver, _, smtp = peers
    first, feed = incident_service(tmp_path, receiver.url, smtp)
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(5), traffic=Traffic(sd=0.05, trip_sd=0.3))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    cut = lift_at(messages, trip.stop_times[6].stop_id) + 1
    now = messages[cut][1]["ts"] / 1000

    async def run(service: WasteService) -> dict[int, float]:
        hand_over(service, messages[:cut])
        await service.engine.deliveries.drain(10)
        tracker = service.engine.trip_now(TRIP)
        assert tracker is not None
        return predict(service.engine.history, tracker.state, now)

    before = asyncio.run(run(first))
    first.state.close()
    second = WasteService(first.config, TOKEN, feed)
    try:
        after = asyncio.run(run(second))
    finally:
        second.state.close()
    assert sorted(after) == sorted(before) == list(range(7, len(trip.stop_times)))
    drift = {k: round(after[k] - before[k], 1) for k in before}
    assert max(abs(d) for d in drift.values()) < 1.0, f"seconds predicted later after the restart: {drift}"
