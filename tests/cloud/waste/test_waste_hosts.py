"""Two waste services on separate hosts that fail, while a truck drives its trip.

Four hosts (network namespaces on one bridge, see test_hosts.py): the broker's (this test's
own, where the truck's terminal and the keepers' SMS gateway are), PostgreSQL's, and two
waste services' (`linli waste run` processes on one state, each following every route).
While the truck's messages go out,
service 1's host is cut off the network and later killed (then started again), PostgreSQL
restarts, and service 2 is partitioned from the database while it still reaches the broker.
The keepers must hear what one service alone tells them, each notice once.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import sqlalchemy
from paho.mqtt.enums import CallbackAPIVersion

from alertflow import Hook
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.service import WasteService
from linli.demo.servers import free_port, postgresql_url
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import load_feed
from netns import Hosts
from support import LOOPBACK, create_database, wait_for
from test_hosts import fault, servers, starter
from test_waste_service import FEED, MONDAY, TOKEN, TRIP, hand_over

DRIVE_S = 45.0  # the trip's messages go out over this long
LEASE_S = 10.0  # a dead service's deliveries are sent by the other after this long
FAULTS = [  # (share of the trip's messages sent, what)
    (0.20, "cut w1"),
    (0.35, "kill w1"),
    (0.40, "start w1"),
    (0.55, "restart postgresql"),
    (0.70, "partition w2 from postgresql"),
    (0.85, "heal w2"),
]
Told = Counter[tuple[str, str]]


def feed_for(tmp: Path, hooks: str) -> Path:
    """The district's timetable with the keepers' SMS gateway on the test's host."""
    folder = tmp / "gtfs"
    shutil.copytree(FEED, folder)
    extras = folder / "linli.toml"
    extras.write_text(extras.read_text().replace("http://sms-gateway.district.example", hooks))
    return folder


def waste_config(path: Path, gtfs: Path, hosts: Hosts, name: str, *, broker: int, state: str) -> Path:
    path.write_text(
        f"""gtfs = "{gtfs}"
state = "{state}"
name = "{name}"
api_host = "{hosts.address(name)}"
api_port = 8791
attempts = 2
lease_s = {LEASE_S}

[delivery]
allow_private = true

[broker]
host = "{hosts.here}"
port = {broker}
"""
    )
    return path


def keepers(hook: Hook) -> Told:
    """(stop, notice) of every keeper notice the gateway took, corrections left out."""
    with hook.lock:
        posts = list(zip(hook.paths, [b for b, _ in hook.got], strict=True))
    return Counter(
        (str(b["stop"]), str(b["notice"]))
        for path, b in posts
        if path.startswith("/send") and b["notice"] != "correction"
    )


def held(url: str) -> int:
    """How many deliveries a service holds in the state (sending, or left to a lease running out)."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM waste_delivery")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    h = Hosts(["postgresql", "w1", "w2"])
    yield h
    h.close()


def test_each_keeper_notice_is_told_once_while_waste_hosts_fail(
    hosts: Hosts, tmp_path: Path, pg_folder: Path
) -> None:
    broker, database = servers(hosts, tmp_path, pg_folder)
    broker_port = broker.port
    hook = Hook(hosts.here)
    gtfs = feed_for(tmp_path, hook.base)
    feed = load_feed(gtfs)
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(3), traffic=Traffic(sd=0.0, trip_sd=0.2))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    try:
        expected = told_alone(tmp_path, messages)
        create_database(postgresql_url(database), "waste")
        url = postgresql_url(database, "waste").replace("+psycopg", "")
        configs = {
            n: waste_config(tmp_path / f"{n}.toml", gtfs, hosts, n, broker=broker_port, state=url)
            for n in ("w1", "w2")
        }
        start = starter(hosts, tmp_path, ["waste", "run"], configs, 8791)

        start("w1")
        start("w2")
        truck = paho.Client(CallbackAPIVersion.VERSION2, client_id="truck-dry-south")
        truck.connect(hosts.here, broker_port)
        truck.loop_start()
        began = time.time()
        faults = list(FAULTS)
        for i, (kind, body) in enumerate(messages):
            while faults and faults[0][0] <= i / len(messages):
                database = fault(faults.pop(0)[1], hosts, database, start)
            time.sleep(max(0.0, began + DRIVE_S * i / len(messages) - time.time()))
            truck.publish(f"trucks/fleet/truck-dry-south/{kind}", json.dumps(body), qos=1).wait_for_publish(
                10
            )
        truck.disconnect()
        truck.loop_stop()
        # The last deliveries: at most a lease after the end, when a dead service held them.
        wait_for(lambda: set(keepers(hook)) >= set(expected), "every notice told", timeout=LEASE_S + 20)
        time.sleep(LEASE_S + 5)  # a lease, the time anything held could be sent again
        # and proof that it had its chance: nothing is held any more, so nothing is left to send again.
        wait_for(lambda: held(postgresql_url(database, "waste")) == 0, "every delivery let go", LEASE_S + 60)
        told = keepers(hook)
        assert told == expected, f"doubled: {told - expected}; missing: {expected - told}"
        by = {
            n: (tmp_path / f"{n}.log").read_text(errors="replace").count("/send?to=keeper-")
            for n in ("w1", "w2")
        }
        print(f"keeper notices, each once: {sum(told.values())} (corrections aside), {len(messages)} truck")
        print(f"messages; the gateway's requests by service (corrections too): {by}")
    finally:
        hook.close()
        hosts.close()
        database.stop()
        broker.stop()
        for name in ("w1", "w2"):
            log = tmp_path / f"{name}.log"
            if log.exists():
                print(f"--- {name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))


def told_alone(tmp_path: Path, messages: list[tuple[str, dict[str, Any]]]) -> Told:
    """What one service alone decides to tell the keepers of this trip (its gateway is nowhere)."""
    gtfs = feed_for(tmp_path / "alone", f"http://127.0.0.1:{free_port()}")
    config = WasteConfig(
        gtfs=gtfs,
        state=str(tmp_path / "alone.sqlite"),
        broker=TruckBroker(port=1),
        attempts=1,
        delivery=LOOPBACK,
    )
    service = WasteService(config, TOKEN, load_feed(gtfs))

    async def run() -> None:
        hand_over(service, messages)
        await service.engine.deliveries.drain(10)

    asyncio.run(run())
    told = Counter((str(n["stop_id"]), str(n["kind"])) for n in service.state.notices(100_000))
    service.state.close()
    return Counter({k: n for k, n in told.items() if k[1] != "correction"})
