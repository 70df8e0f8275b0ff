"""A bin-room keeper's SMS gateway that hangs or answers a byte a second costs only that keeper's
notices: the real waste service, on a real Mosquitto, tells every other keeper on time, and each
notice it could not deliver is a failed delivery with its reason (issue 29)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

from linli.catalog.channels import Channel
from linli.cloud.notifier.config import DeliveryConfig, SmtpConfig
from linli.cloud.waste import service as service_module
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.held import CHANNEL, Resent
from linli.cloud.waste.service import WasteService
from linli.demo.servers import LocalServer, free_port
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import load_feed
from peers import Inbox, Receiver, SlowReceiver
from support import wait_until
from test_waste_service import FEED, MONDAY, TOKEN, TRIP, hand_over, local_feed


@pytest.fixture
def gateways() -> Iterator[dict[str, SlowReceiver]]:
    slow = {"hang": SlowReceiver("hang"), "trickle": SlowReceiver("trickle")}
    yield slow
    for receiver in slow.values():
        receiver.close()


def test_a_hanging_and_a_trickling_keeper_gateway_cost_only_their_own_notices(
    mosquitto: LocalServer,
    peers: tuple[Receiver, Inbox, int],
    gateways: dict[str, SlowReceiver],
    tmp_path: Path,
) -> None:
    receiver, _, smtp = peers
    folder = local_feed(tmp_path, receiver.url)
    feed = load_feed(folder)
    trip = feed.trips[TRIP]
    rooms = [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]
    # The first two bin rooms' keepers are behind the bad gateways; the rest behind a good one.
    slow_rooms = dict(zip(gateways, rooms[:2], strict=True))
    extras = folder / "linli.toml"
    text = extras.read_text(encoding="utf-8")
    for mode, room in slow_rooms.items():
        text = text.replace(
            f"{receiver.url}/send?to=keeper-{room}", f"{gateways[mode].url}/send?to=keeper-{room}"
        )
    extras.write_text(text, encoding="utf-8")
    feed = load_feed(folder)
    keeper = {room: feed.extras.stops[room].keepers[0].name for room in rooms}
    config = WasteConfig(
        broker=TruckBroker(port=mosquitto.port),
        smtp=SmtpConfig(port=smtp, sender="waste@district.example"),
        gtfs=folder,
        state=str(tmp_path / "waste.sqlite"),
        api_port=free_port(),
        attempts=2,
        delivery=DeliveryConfig(allow_private=True, deadline_s=2.0, pause_s=2.0),
    )
    service = WasteService(config, TOKEN, feed)
    drive = drive_trip(feed, trip, MONDAY, random.Random(2), traffic=Traffic(sd=0.0, trip_sd=0.2))
    healthy = [room for room in rooms if room not in slow_rooms.values()]

    def told(room: str) -> list[str]:
        return [p["notice"] for p in receiver.at(f"/send?to=keeper-{room}") if p["notice"] != "correction"]

    def failed() -> list[dict[str, Any]]:
        return service.engine.failures()

    def failed_for(room: str) -> list[str]:
        return [json.loads(f["message"])["notice"] for f in failed() if f["contact"] == keeper[room]]

    async def scenario() -> list[dict[str, Any]]:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 10)
        try:
            hand_over(service, sorted(drive.messages, key=lambda m: m[1]["ts"]))
            await wait_until(
                lambda: all(told(room)[-1:] == ["collected"] for room in healthy),
                60,
                "every good keeper told",
            )
            await wait_until(
                lambda: all(
                    {"notice", "arrived", "collected"} <= set(failed_for(room))
                    for room in slow_rooms.values()
                ),
                90,
                "every notice to the bad gateways recorded as failed",
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.api_port}", timeout=10) as api:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                return list((await api.get("/failed-deliveries", headers=auth)).json())
        finally:
            stop.set()
            await task

    listed = asyncio.run(scenario())
    for room in healthy:
        assert told(room) == ["notice", "arrived", "collected"], (room, told(room))
    # Each bad gateway was tried, and every notice to it is on the operator's list, with why.
    for mode, room in slow_rooms.items():
        assert gateways[mode].posts, mode
        assert told(room) == [], room
    bad = [f for f in listed if f["contact"] in {keeper[r] for r in slow_rooms.values()}]
    assert len(bad) >= 2 * 3
    assert all(f["error"] for f in bad), bad
    assert {f["contact"] for f in listed} <= {keeper[r] for r in slow_rooms.values()}


@pytest.mark.slow
def test_a_delivery_waiting_its_turn_past_its_lease_is_not_sent_again_by_its_own_service(
    tmp_path: Path,
) -> None:
    """One delivery at a time to a gateway that is slow: the second waits its turn longer than
    its lease. Its own service takes the lease again rather than the delivery for an orphan of
    a dead service. (Before, it sent a second copy: a loaded run of `test_waste_kills.py` had
    keepers told "arrived" and "collected" twice, 7 to 12 times in the run without kills.)"""
    gateway = SlowReceiver("hang")
    delivery = DeliveryConfig(allow_private=True, per_destination=1, deadline_s=120)
    config = WasteConfig(
        gtfs=FEED,
        state=str(tmp_path / "waste.sqlite"),
        broker=TruckBroker(port=1),
        lease_s=5,
        delivery=delivery,
    )
    service = WasteService(config, TOKEN, load_feed(FEED))
    channel = CHANNEL.validate_python({"kind": "webhook", "url": f"{gateway.url}/send"})

    async def run() -> tuple[int, int]:
        for n in range(2):
            service.engine.held.deliver(
                "keeper", channel, Resent(f"notice {n}", f"text {n}", {"n": n}), f"stop-{n}"
            )
        await wait_until(lambda: len(gateway.posts) == 1, 30, "the first delivery at the gateway")
        leases = [float(lease) for (lease,) in service.state.rows("SELECT lease_s FROM waste_delivery")]
        await wait_until(lambda: time.time() > max(leases), 30, "both leases run out")
        return service.engine.send_orphans(), service.engine.deliveries.under_way

    try:
        sent, under_way = asyncio.run(run())
    finally:
        gateway.close()
        service.state.close()
    assert (sent, under_way) == (0, 2)  # the two, each once: none taken for an orphan


def test_a_delivery_whose_release_failed_is_released_later_not_sent_again_by_its_service(
    tmp_path: Path,
) -> None:
    """Delivered, but the state refused to let it go (a restart, a partition from the database).
    Once the state answers again, past the lease, its own service releases it rather than take
    it for a dead service's orphan. (Before, it sent it again: under stress-ng,
    `test_waste_hosts.py` had a keeper told "arrived" and "collected" twice, sent again by the
    service partitioned from PostgreSQL that had sent them, a lease after it held them.)"""
    gateway = Receiver()
    service, channel = _leasing_service(tmp_path, gateway)
    refuse = (
        "CREATE TRIGGER keep_held BEFORE DELETE ON waste_delivery BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )

    async def run() -> int:
        with service.state.engine.begin() as conn:
            conn.execute(sqlalchemy.text(refuse))
        service.engine.held.deliver("keeper", channel, Resent("notice", "text", {"n": 1}), "stop-1")
        await wait_until(lambda: service.engine.deliveries.under_way == 0, 30, "the delivery done")
        leases = [float(lease) for (lease,) in service.state.rows("SELECT lease_s FROM waste_delivery")]
        assert len(leases) == 1  # delivered, still held: its release was refused
        with service.state.engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP TRIGGER keep_held"))
        service.engine.held.wall = lambda: leases[0] + 1  # its lease ran out
        return service.engine.send_orphans()

    try:
        sent = asyncio.run(run())
        held = service.state.rows("SELECT id FROM waste_delivery")
    finally:
        gateway.close()
        service.state.close()
    assert len(gateway.at("/send")) == 1
    assert (sent, held) == (0, [])  # released, not sent again


def test_the_orphans_round_outlives_a_step_that_fails_and_sends_them_at_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead service's delivery, past its lease, is sent by the service's background round.
    The round's first sweep fails with the connection pool's own timeout (a `TimeoutError` of
    SQLAlchemy, not a `DBAPIError`): it is counted as the state out of reach, and the next
    round sends the orphan once. (Before, any error but a `DBAPIError` ended the round's task
    for good: orphans then waited for a restart.)"""
    gateway = Receiver()
    service, channel = _leasing_service(tmp_path, gateway)
    body = json.dumps({"subject": "notice", "text": "text", "json": {"n": 1}})
    # Held by a service that died: its lease ran out a minute ago.
    service.state.hold("keeper", channel.model_dump_json(), body, "stop-1", time.time() - 60)
    sweep = service.state.orphans
    sweeps: list[str] = []

    def failing_once(now: float, lease_until: float, limit: int = 50) -> list[tuple[int, str, str, str, str]]:
        sweeps.append("failed" if not sweeps else "swept")
        if sweeps == ["failed"]:
            raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached")
        return sweep(now, lease_until, limit)

    monkeypatch.setattr(service.state, "orphans", failing_once)
    monkeypatch.setattr(service_module, "ORPHANS_EVERY_S", 0.05)

    async def run() -> None:
        stop = asyncio.Event()
        rounds = asyncio.create_task(service._send_orphans_until(stop))
        try:
            await wait_until(lambda: rounds.done() or len(gateway.at("/send")) == 1, 30, "the orphan sent")
            await wait_until(
                lambda: rounds.done() or not service.state.rows("SELECT id FROM waste_delivery"),
                30,
                "the orphan released",
            )
        finally:
            stop.set()
        await rounds  # raises what ended it early

    try:
        asyncio.run(run())
    finally:
        gateway.close()
        service.state.close()
    assert sweeps[0] == "failed"
    assert "swept" in sweeps
    assert [p["n"] for p in gateway.at("/send")] == [1]
    assert (service.engine.faults.state_errors, service.engine.faults.state_bugs) == (1, 0)


def _leasing_service(tmp_path: Path, gateway: Receiver | SlowReceiver) -> tuple[WasteService, Channel]:
    """A service on an SQLite state with 5 s leases, and a webhook channel to `gateway`."""
    config = WasteConfig(
        gtfs=FEED,
        state=str(tmp_path / "waste.sqlite"),
        broker=TruckBroker(port=1),
        lease_s=5,
        delivery=DeliveryConfig(allow_private=True),
    )
    service = WasteService(config, TOKEN, load_feed(FEED))
    return service, CHANNEL.validate_python({"kind": "webhook", "url": f"{gateway.url}/send"})


def test_a_delivery_still_being_sent_keeps_its_lease_and_another_service_leaves_it(
    tmp_path: Path,
) -> None:
    """A keeper's gateway holds the delivery past its first lease. Its service renews the lease
    at its round, so another service on the same state, sweeping after the first lease would
    have run out, takes nothing. (Before, the other service took it for a dead service's orphan
    and the keeper was told twice.)"""
    gateway = SlowReceiver("hang")
    mine, channel = _leasing_service(tmp_path, gateway)
    other, _ = _leasing_service(tmp_path, gateway)
    clock = [1_000_000.0]
    for service in (mine, other):
        service.engine.held.wall = lambda: clock[0]
    lease = mine.config.lease_s

    async def run() -> tuple[int, int, list[float]]:
        mine.engine.held.deliver("keeper", channel, Resent("notice", "text", {"n": 1}), "stop-1")
        await wait_until(lambda: len(gateway.posts) == 1, 30, "the delivery at the gateway")
        clock[0] += 0.6 * lease
        renewed = mine.engine.send_orphans()  # its round, within the first lease
        clock[0] += 0.6 * lease  # past the first lease, within the renewed one
        taken = other.engine.send_orphans()
        return renewed, taken, [float(u) for (u,) in mine.state.rows("SELECT lease_s FROM waste_delivery")]

    try:
        renewed, taken, leases = asyncio.run(run())
        assert (renewed, taken) == (0, 0)
        assert leases == [1_000_000.0 + 1.6 * lease]  # renewed at the round, a lease from then
    finally:
        gateway.close()
        mine.state.close()
        other.state.close()
