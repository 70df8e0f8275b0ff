"""One truck's clock must not move any other truck's trips (issue 29), and truck payloads too
large or nested too deep are refused, counted and dead-lettered.

The attack: the renovation truck, parked and reporting as the simulator's trucks do, sends one
location 59 minutes ahead of the trucks' time while trip dry-south-0810 is under way. Every
keeper must hear exactly what they hear in the same run without it.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from linli.cloud.broker.files import read_secret
from linli.cloud.notifier.config import SmtpConfig
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.payloads import MAX_PAYLOAD
from linli.cloud.waste.service import WasteService
from linli.demo.servers import LocalServer, free_port
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import Feed, load_feed, runs_on
from peers import Inbox, Receiver
from support import LOOPBACK, wait_until
from test_broker_acl import broker, peer  # noqa: F401 (the broker `linli broker config` writes)
from test_waste_service import MONDAY, TOKEN, TRIP, hand_over, local_feed

RENOVATION = "truck-renovation"
DRY_SOUTH = "truck-dry-south"
Message = tuple[str, str, dict[str, Any]]  # truck, kind, body


def trip_and_parked(feed: Feed) -> list[Message]:
    """Trip dry-south-0810 and the renovation truck parked at the depot meanwhile, reporting every
    30 s with its ignition off, as the simulator's trucks do; in time order."""
    drive = drive_trip(feed, feed.trips[TRIP], MONDAY, random.Random(2), traffic=Traffic(sd=0.0, trip_sd=0.2))
    times = [body["ts"] for _, body in drive.messages]
    depot = feed.stops[feed.extras.depots[0]]
    parked = [
        (RENOVATION, "location", {"ts": ts, "lat": depot.lat, "lon": depot.lon, "speed": 0.0, "acc": False})
        for ts in range(min(times) + 7_000, max(times), 30_000)
    ]
    ours = [(DRY_SOUTH, kind, body) for kind, body in drive.messages]
    return sorted([*ours, *parked], key=lambda m: m[2]["ts"])


def with_a_lie(messages: list[Message], ahead_s: float) -> tuple[list[Message], dict[str, Any]]:
    """The same messages with one renovation location `ahead_s` ahead, sent mid-trip."""
    mid = len(messages) // 2
    lie = {**messages[mid][2], "ts": messages[mid][2]["ts"] + round(ahead_s * 1000)}
    lie = {k: v for k, v in lie.items() if k in ("ts", "lat", "lon")}
    return [*messages[:mid], (RENOVATION, "location", lie), *messages[mid:]], lie


def told(receiver: Receiver, prefix: str) -> dict[str, Counter[tuple[Any, ...]]]:
    """What each keeper heard under `prefix`: trip, stop, kind, when it was decided, the time promised."""
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    for path, body in list(receiver.posts):
        if path.startswith(f"{prefix}/send?to="):
            keeper = path.split("to=")[1]
            key = (body["trip"], body["stop"], body["notice"], body["time_ms"], body["predicted_ms"])
            out.setdefault(keeper, Counter())[key] += 1
    return out


@pytest.mark.slow
def test_a_truck_59_minutes_ahead_is_refused_and_every_keeper_hears_what_they_would_have(
    broker: tuple[LocalServer, Path],  # noqa: F811 (the fixture imported above)
    peers: tuple[Receiver, Inbox, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, conf = broker
    receiver, _, smtp = peers
    monkeypatch.setenv("LINLI_CLOUD_MQTT_USERNAME", "waste")
    monkeypatch.setenv("LINLI_CLOUD_MQTT_PASSWORD", read_secret(conf, "waste"))
    trucks = {t: peer(broker, f"device/fleet/{t}") for t in (DRY_SOUTH, RENOVATION)}
    watcher = peer(broker, "operator")
    watcher.subscribe("linli/deadletter/#")

    def service_for(name: str) -> WasteService:
        feed = load_feed(local_feed(tmp_path / name, f"{receiver.url}/{name}"))
        config = WasteConfig(
            broker=TruckBroker(port=server.port),
            smtp=SmtpConfig(port=smtp),
            gtfs=tmp_path / name / "gtfs",
            state=str(tmp_path / name / "waste.sqlite"),
            api_port=free_port(),
            delivery=LOOPBACK,
        )
        return WasteService(config, TOKEN, feed)

    def publish(messages: list[Message]) -> None:
        # Each waits for its PUBACK: the service hears them in this order, whichever truck sent.
        for truck, kind, body in messages:
            assert trucks[truck].publish(f"trucks/fleet/{truck}/{kind}", json.dumps(body)).value == 0

    async def run(service: WasteService, messages: list[Message]) -> dict[str, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 10)
        try:
            await asyncio.to_thread(publish, messages)
            await wait_until(lambda: service.engine.received >= len(messages), 30, "every message taken")
        finally:
            stop.set()
            await task  # its deliveries drained
        return dict(service.engine.rejected)

    clean = service_for("clean")
    messages = trip_and_parked(clean.engine.feed)
    attacked, lie = with_a_lie(messages, 59 * 60)
    try:
        assert asyncio.run(run(clean, messages)) == {}
        assert asyncio.run(run(service_for("attacked"), attacked)) == {"bad_time": 1}
        topic, envelope, _ = watcher.next()
    finally:
        for p in (*trucks.values(), watcher):
            p.close()

    expected = told(receiver, "/clean")
    assert len(expected) == 8  # every bin room of the trip heard the truck coming, then collected
    assert not any(key[2] == "delayed" for keys in expected.values() for key in keys)
    assert told(receiver, "/attacked") == expected
    # Dead-lettered with why, where an operator watching the broker sees it.
    dead = json.loads(envelope)
    assert topic == "linli/deadletter/waste/bad_time"
    assert (dead["reason"], dead["topic"], json.loads(dead["payload"])) == (
        "bad_time",
        f"trucks/fleet/{RENOVATION}/location",
        lie,
    )
    assert "ahead of the service's clock" in dead["detail"]


@pytest.mark.slow
def test_a_truck_a_few_minutes_ahead_is_taken_and_moves_no_other_trucks_trip(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    """Within the skew bound the message is the renovation truck's own business: the trip of
    another truck runs on that truck's time, and its keepers hear the same, at the same times."""
    receiver, _, smtp = peers

    def run(name: str, messages: list[Message]) -> dict[str, int]:
        feed = load_feed(local_feed(tmp_path / name, f"{receiver.url}/{name}"))
        config = WasteConfig(
            smtp=SmtpConfig(port=smtp),
            gtfs=tmp_path / name / "gtfs",
            state=str(tmp_path / name / "w.sqlite"),
            delivery=LOOPBACK,
        )
        service = WasteService(config, TOKEN, feed)

        async def go() -> None:
            for truck, kind, body in messages:
                hand_over(service, [(kind, body)], truck=truck)
            await service.engine.deliveries.drain(10)

        asyncio.run(go())
        return dict(service.engine.rejected)

    messages = trip_and_parked(load_feed(local_feed(tmp_path / "feed", receiver.url)))
    attacked, _ = with_a_lie(messages, 4 * 60)
    assert run("clean", messages) == {}
    assert run("ahead", attacked) == {}  # within max_skew_s (5 min): taken
    expected = told(receiver, "/clean")
    assert len(expected) == 8
    assert told(receiver, "/ahead") == expected


def test_a_payload_too_large_or_nested_too_deep_is_refused_counted_and_dead_lettered(tmp_path: Path) -> None:
    import httpx

    from linli.cloud.waste.api import app

    feed = load_feed(local_feed(tmp_path, "http://127.0.0.1:9"))
    service = WasteService(WasteConfig(gtfs=tmp_path / "gtfs", state=str(tmp_path / "w.sqlite")), TOKEN, feed)
    dead: list[tuple[str, dict[str, Any]]] = []
    service.engine.dead_letter = lambda topic, payload: dead.append((topic, json.loads(payload)))
    huge = b'{"ts": 1, "lat": 31.2, "lon": 121.4, "pad": "' + b"x" * (8 << 20) + b'"}'
    deep = b'{"ts": 1, "lat": 31.2, "lon": 121.4, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    service.engine.take(f"trucks/fleet/{DRY_SOUTH}/location", huge)
    service.engine.take(f"trucks/fleet/{DRY_SOUTH}/location", deep)

    async def stats() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://waste") as api:
            answer = await api.get("/stats", headers={"Authorization": f"Bearer {TOKEN}"})
            return dict(answer.json())

    assert asyncio.run(stats())["rejected"] == {"too_large": 1, "invalid": 1}
    assert [(topic, body["reason"], body["size"], body["truncated"]) for topic, body in dead] == [
        ("linli/deadletter/waste/too_large", "too_large", len(huge), True),
        ("linli/deadletter/waste/invalid", "invalid", len(deep), True),
    ]
    assert dead[0][1]["detail"] == f"{len(huge)} bytes, limit {MAX_PAYLOAD}"
    assert dead[1][1]["detail"] == "nested too deep"


def test_a_skew_bound_not_below_the_silence_is_a_config_error_naming_the_file_and_the_key(
    tmp_path: Path,
) -> None:
    from linli.catalog.errors import ConfigError
    from linli.cloud.waste.config import load_waste_config

    path = tmp_path / "waste.toml"
    path.write_text('gtfs = "gtfs"\nsilent_min = 5\nmax_skew_s = 300\n', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_waste_config(path)
    text = str(raised.value)
    assert str(path) in text
    assert "key 'max_skew_s'" in text
    assert "must be less than silent_min (5 min = 300 s)" in text
    assert "lower max_skew_s" in text


@pytest.mark.slow
def test_a_day_replayed_with_nobody_reporting_between_trips_is_taken_whole(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    """A compressed replay of the trips of a day, without the parked reports between them: the
    first message after hours of silence is a truck coming back, not a clock gone wrong, as no
    other trip is under way then (the last one done, not yet closed, is not). Every message is
    taken and every trip is followed to its end."""
    from test_waste_service import incident_service

    receiver, _, smtp = peers
    service, feed = incident_service(tmp_path, receiver.url, smtp)
    monday = [t for t in feed.trips.values() if runs_on(feed, t, MONDAY)]
    day: list[tuple[int, str, bytes]] = []
    for trip in monday:
        drive = drive_trip(feed, trip, MONDAY, random.Random(trip.id), traffic=Traffic(sd=0.2))
        topic = f"trucks/fleet/{feed.routes[trip.route_id].truck}"
        day += [(body["ts"], f"{topic}/{kind}", json.dumps(body).encode()) for kind, body in drive.messages]

    async def run() -> None:
        for _, topic, payload in sorted(day, key=lambda m: m[0]):
            service.engine.take(topic, payload)
        await service.engine.deliveries.drain(30)

    asyncio.run(run())
    assert service.engine.rejected == {}
    done = [
        *service.engine.finished,
        *(k for k, tr in service.engine.trackers.items() if tr.stops.next_index() is None),
    ]
    assert {key.split("@")[0] for key in done} == {t.id for t in monday}
