"""The waste service end to end: a trip's truck messages through Mosquitto, the keepers' notices
to a real HTTP receiver and SMTP server, the API, and hostile truck messages."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
import shutil
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from linli.catalog.i18n import Locale
from linli.cloud.notifier.config import SmtpConfig
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.service import WasteService
from linli.demo.servers import LocalServer, free_port
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import load_feed
from peers import Inbox, Receiver
from support import LOOPBACK, unique, wait_until

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
TOKEN = "waste-s3cret"  # noqa: S105 (the test's own)
MONDAY = dt.date(2026, 11, 23)  # in the past: a message from the future is refused
TRIP = "dry-south-0810"
EMAILED = "gubei-1"  # its keeper also has an e-mail address
ENGLISH = "hongqiao-1"  # its keeper reads English (the contact's locale)
CJK = re.compile(r"[\u4e00-\u9fff]")


def local_feed(tmp: Path, hooks: str) -> Path:
    """The district's timetable with the keepers' SMS gateway pointed at the test's receiver."""
    folder = tmp / "gtfs"
    shutil.copytree(FEED, folder)
    extras = folder / "linli.toml"
    text = extras.read_text(encoding="utf-8").replace("http://sms-gateway.district.example", hooks)
    text = text.replace(
        f'channels = [{{ kind = "webhook", url = "{hooks}/send?to=keeper-{EMAILED}" }}]',
        f'channels = [{{ kind = "webhook", url = "{hooks}/send?to=keeper-{EMAILED}" }}, '
        f'{{ kind = "email", to = ["keeper.{EMAILED}@district.example"] }}]',
    )
    text = text.replace(f'keeper-{ENGLISH}" }}] }}]', f'keeper-{ENGLISH}" }}], locale = "en" }}]')
    extras.write_text(text, encoding="utf-8")
    return folder


def hand_over(
    service: WasteService, messages: list[tuple[str, dict[str, Any]]], truck: str = "truck-dry-south"
) -> None:
    """A truck's messages to the service, in-process, as its MQTT feed would hand them over."""
    for kind, body in messages:
        service.engine.take(f"trucks/fleet/{truck}/{kind}", json.dumps(body).encode())


def lift_at(messages: list[tuple[str, dict[str, Any]]], stop_id: str) -> int:
    """The position of the lift at a stop in a trip's messages."""
    return next(i for i, (kind, body) in enumerate(messages) if kind == "lift" and body["stop"] == stop_id)


def publish_all(port: int, messages: list[tuple[str, dict[str, Any]]], raw: list[tuple[str, bytes]]) -> None:
    """The truck's messages in time order at QoS 1, then the raw ones, as a terminal gateway would."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("truck"))
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [
        client.publish(f"trucks/fleet/truck-dry-south/{kind}", json.dumps(body), qos=1)
        for kind, body in sorted(messages, key=lambda m: m[1]["ts"])
    ]
    infos += [client.publish(topic, payload, qos=1) for topic, payload in raw]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_keepers_hear_before_the_truck_comes_then_arrival_and_collection(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    receiver, inbox, smtp = peers
    feed = load_feed(local_feed(tmp_path, receiver.url))
    config = WasteConfig(
        broker=TruckBroker(port=mosquitto.port),
        smtp=SmtpConfig(port=smtp, sender="waste@district.example"),
        gtfs=tmp_path / "gtfs",
        state=str(tmp_path / "waste.sqlite"),
        api_port=free_port(),
        delivery=LOOPBACK,
    )
    service = WasteService(config, TOKEN, feed)
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(2), traffic=Traffic(sd=0.0, trip_sd=0.2))
    actual = {a.stop_id: a.actual_s for a in drive.arrivals}
    bin_rooms = [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]
    first_ts = min(body["ts"] for _, body in drive.messages)
    hostile = [
        ("trucks/fleet/truck-dry-south/location", b"{not json"),
        ("trucks/fleet/truck-dry-south/location", b'{"ts": 1, "lat": NaN, "lon": 121.4}'),
        (
            "trucks/fleet/truck-nobody/location",
            json.dumps({"ts": first_ts, "lat": 31.2, "lon": 121.4}).encode(),
        ),
        (
            "trucks/fleet/truck-dry-south/lift",
            json.dumps({"ts": first_ts - 7_200_000, "stop": "x", "bins": 1, "collected_kg": 1}).encode(),
        ),
        (
            "trucks/fleet/truck-dry-south/location",
            json.dumps({"ts": 4_102_444_800_000, "lat": 45.0, "lon": 10.0}).encode(),
        ),
    ]
    teleport = ("trucks/fleet/truck-dry-south/location", {"lat": 45.0, "lon": 10.0})  # Italy, on time
    base = f"http://127.0.0.1:{config.api_port}"

    def keeper_posts(stop: str) -> list[dict[str, Any]]:
        return receiver.at(f"/send?to=keeper-{stop}")

    async def scenario() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 10)
        try:
            mid = sorted(body["ts"] for _, body in drive.messages)[len(drive.messages) // 2]
            messages = [*drive.messages, ("location", {**teleport[1], "ts": mid + 1})]
            await asyncio.to_thread(publish_all, mosquitto.port, messages, hostile)
            await wait_until(
                lambda: all(any(p["notice"] == "collected" for p in keeper_posts(s)) for s in bin_rooms),
                30,
                "every bin room's collection",
            )
            await wait_until(
                lambda: service.engine.rejected.total() >= len(hostile), 10, "the hostile messages counted"
            )
            async with httpx.AsyncClient(base_url=base, timeout=10) as api:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                return {
                    "stats": (await api.get("/stats", headers=auth)).json(),
                    "notices": (await api.get("/notices", headers=auth)).json(),
                    "no token": (await api.get("/trips")).status_code,
                }
        finally:
            stop.set()
            await task

    out = asyncio.run(scenario())
    for stop_id in bin_rooms:
        kinds = [p["notice"] for p in keeper_posts(stop_id) if p["notice"] != "correction"]
        assert kinds == ["notice", "arrived", "collected"], (stop_id, kinds)
        [notice] = [p for p in keeper_posts(stop_id) if p["notice"] == "notice"]
        assert (notice["truck"], notice["waste_type"], notice["trip"]) == ("truck-dry-south", "dry", TRIP)
        lead = actual[stop_id] - notice["time_ms"] / 1000
        assert 5 * 60 <= lead <= 25 * 60, (stop_id, lead / 60)
        [collected] = [p for p in keeper_posts(stop_id) if p["notice"] == "collected"]
        assert collected["bins"] >= 1
        assert collected["kg"] > 0
    # Every text in the keeper's language, naming the bin room and the truck as people know
    # them, with the Shanghai time; the ids only in the machine fields.
    truck = feed.extras.trucks["truck-dry-south"]
    for stop_id in bin_rooms:
        # An English reader gets the bin room's English name (the feed's translations.txt).
        room = feed.stops[stop_id].name_in("en" if stop_id == ENGLISH else "zh-CN")
        for post in keeper_posts(stop_id):
            said = post["text"]
            assert room in post["title"], post
            assert room in said, post
            assert truck.plate in said, post
            assert stop_id not in said, said
            assert "truck-" not in said, said
            assert TRIP not in said, said
            shown = post["predicted"] if post["notice"] in ("notice", "correction") else post["time"]
            assert shown.endswith("+08:00"), (shown, said)
            assert shown[11:16] in said, (shown, said)
            if stop_id == ENGLISH:
                assert post["locale"] == "en", said
                assert f"no. {truck.fleet}" in said, said
                assert not CJK.search(said.replace(truck.plate, "")), said
            else:
                assert post["locale"] == "zh-CN", said
                assert f"干垃圾清运车{truck.fleet}号" in said, said
                assert len(said) <= 70, said
    # The keeper with an e-mail address got the same three by mail, in Chinese, subject first.
    room = feed.stops[EMAILED].name
    subjects = [str(make_header(decode_header(m["Subject"]))) for m in inbox.messages]
    assert f"{room}：干垃圾清运预告" in subjects, subjects
    assert f"{room}：清运车已到达" in subjects, subjects
    letters = [bytes(m.get_payload(decode=True)).decode() for m in inbox.messages]
    assert any(f"清运车{truck.fleet}号（{truck.plate}）已于" in letter for letter in letters), letters
    # Hostile messages were counted by reason and changed nothing.
    assert out["stats"]["rejected"] == {"invalid": 2, "unknown_truck": 1, "bad_time": 2}
    assert out["stats"]["fixes"]["off_route"] >= 1  # the position in Italy
    assert out["no token"] == 401
    assert {n["kind"] for n in out["notices"]} >= {"notice", "arrived", "collected"}


def test_a_restart_mid_trip_tells_no_keeper_twice(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    """The service stops halfway through a trip and starts again on the same state: each keeper
    still hears once that the truck is coming, and once that it arrived."""
    receiver, _, smtp = peers
    feed = load_feed(local_feed(tmp_path, receiver.url))
    config = WasteConfig(
        broker=TruckBroker(port=1),  # not used: the messages are handed over directly
        smtp=SmtpConfig(port=smtp),
        gtfs=tmp_path / "gtfs",
        state=state,
        api_port=free_port(),
        delivery=LOOPBACK,
    )
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(9), traffic=Traffic(sd=0.0, trip_sd=0.2))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    half = len(messages) // 2

    async def run(part: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
        service = WasteService(config, TOKEN, feed)
        hand_over(service, part)
        await service.engine.deliveries.drain(10)
        return dict(service.engine.fixes)

    asyncio.run(run(messages[:half]))
    told_before = len(receiver.posts)
    fixes = asyncio.run(run(messages[half:]))
    # Back on the road where it had arrived last: its positions match, not "off the route".
    assert fixes.get("matched", 0) > 10 * fixes.get("first_off", 0) + 10 * fixes.get("off_route", 0)
    assert len(receiver.posts) > told_before  # the second half was told too
    bin_rooms = [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]
    for stop_id in bin_rooms:
        kinds = [p["notice"] for p in receiver.at(f"/send?to=keeper-{stop_id}")]
        assert kinds.count("notice") == 1, (stop_id, kinds)
        assert kinds.count("arrived") == 1, (stop_id, kinds)


def test_the_gtfs_realtime_feed_parses_back_with_the_trip_and_the_truck(tmp_path: Path) -> None:
    from google.transit import gtfs_realtime_pb2 as rt

    from linli.cloud.waste.api import app

    feed = load_feed(FEED)
    config = WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite"))
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(4), traffic=Traffic(sd=0.0, trip_sd=0.2))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    half = messages[: len(messages) // 2]

    async def scenario() -> tuple[int, bytes, int]:
        service = WasteService(config, TOKEN, feed)
        hand_over(service, half)
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://waste") as api:
            denied = (await api.get("/gtfs-rt")).status_code
            answer = await api.get("/gtfs-rt", headers={"Authorization": f"Bearer {TOKEN}"})
        await service.engine.deliveries.drain(0)
        return denied, answer.content, answer.status_code

    denied, body, status = asyncio.run(scenario())
    assert (denied, status) == (401, 200)
    message = rt.FeedMessage()
    message.ParseFromString(body)
    assert message.header.gtfs_realtime_version == "2.0"
    updates = [e.trip_update for e in message.entity if e.HasField("trip_update")]
    vehicles = [e.vehicle for e in message.entity if e.HasField("vehicle")]
    [update] = [u for u in updates if u.trip.trip_id == TRIP]
    assert (update.trip.route_id, update.trip.start_date, update.vehicle.id) == (
        "dry-south",
        "20261123",
        "truck-dry-south",
    )
    ahead = list(update.stop_time_update)
    assert ahead  # halfway: the stops still to come
    times = [s.arrival.time for s in ahead]
    assert times == sorted(times)
    assert ahead[-1].stop_id == "depot"
    [truck] = [v for v in vehicles if v.vehicle.id == "truck-dry-south"]
    last = half[-1][1] if half[-1][0] == "location" else None
    assert 31.1 < truck.position.latitude < 31.3
    assert 121.3 < truck.position.longitude < 121.5
    if last is not None:
        assert truck.timestamp == last["ts"] // 1000


def incident_service(
    tmp_path: Path, hooks: str, smtp: int, state: str | None = None, locale: Locale = "zh-CN"
) -> tuple[WasteService, Any]:
    """An in-process service whose keepers, property offices, dispatcher and operator post to `hooks`."""
    from linli.transit.extras import Contact

    path = local_feed(tmp_path, hooks) / "linli.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    # Property offices by webhook too, so the test's receiver hears them.
    for i, line in enumerate(lines):
        if line.startswith("property = "):
            name = line.split('name = "')[1].split('"')[0]
            stop = line.split("property.")[1].split("@")[0]
            hook = f'{{ kind = "webhook", url = "{hooks}/property?p={stop}" }}'
            lines[i] = f'property = {{ name = "{name}", channels = [{hook}] }}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    feed = load_feed(tmp_path / "gtfs")

    def contact(name: str) -> Contact:
        return Contact.model_validate(
            {"name": name, "channels": [{"kind": "webhook", "url": f"{hooks}/{name}"}]}
        )

    config = WasteConfig(
        gtfs=tmp_path / "gtfs",
        state=state or str(tmp_path / "waste.sqlite"),
        smtp=SmtpConfig(port=smtp),
        dispatcher=contact("dispatcher"),
        operator=contact("operator"),
        delivery=LOOPBACK,
        locale=locale,
    )
    return WasteService(config, TOKEN, feed), feed


def blocked_trip(feed: Any) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """A trip whose third bin room's gate is blocked, in time order, and that bin room: the
    driver finds the gate blocked (alarm, no lift there), goes on, then comes back after the
    last bin room and lifts."""
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(6), traffic=Traffic(sd=0.0, trip_sd=0.1))
    blocked = trip.stop_times[2].stop_id
    lifts = [m for m in drive.messages if m[0] == "lift" and m[1]["stop"] == blocked]
    arrived = next(body["ts"] for kind, body in sorted(drive.messages, key=lambda m: m[1]["ts"])
                   if kind == "location" and body.get("stop") == blocked)  # fmt: skip
    last_lift = max(body["ts"] for kind, body in drive.messages if kind == "lift")
    messages = [m for m in drive.messages if m not in lifts]
    messages.append(
        ("alarm", {"ts": arrived + 5_000, "alarm": "blocked_access", "active": True, "stop": blocked})
    )
    messages.append(("lift", {**lifts[0][1], "ts": last_lift + 120_000}))
    return sorted(messages, key=lambda m: m[1]["ts"]), blocked


def test_a_blocked_gate_tells_the_property_and_the_dispatcher_and_the_stop_is_served_on_the_way_back(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    receiver, _, smtp = peers
    service, feed = incident_service(tmp_path, receiver.url, smtp)
    messages, blocked = blocked_trip(feed)

    async def run() -> list[dict[str, Any]]:
        hand_over(service, messages)
        await service.engine.deliveries.drain(10)
        return [{"kind": str(i.kind), "stop": i.stop_id} for i in service.engine.incidents]

    incidents = asyncio.run(run())
    assert incidents == [{"kind": "blocked", "stop": blocked}]
    [office] = receiver.at(f"/property?p={blocked}")
    [dispatcher] = receiver.at("/dispatcher")
    assert office == dispatcher
    assert (office["incident"], office["stop"], office["truck"]) == ("blocked", blocked, "truck-dry-south")
    # The property office is asked, in Chinese, to clear the access to the bin room it knows.
    assert f"无法进入{feed.stops[blocked].name}，请物业尽快疏通通道" in office["text"], office
    kinds = [p["notice"] for p in receiver.at(f"/send?to=keeper-{blocked}") if p["notice"] != "correction"]
    # The alarm came 5 s after the truck stopped: not yet "arrived" (it might have been a queue),
    # so its keeper hears it cannot reach, then that it is back once it is.
    assert kinds == ["notice", "deferred", "returned", "collected"]
    assert receiver.at("/operator") == []  # a blocked gate is not a breakdown


def test_the_district_default_locale_is_used_for_contacts_without_their_own(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    receiver, _, smtp = peers
    service, feed = incident_service(tmp_path, receiver.url, smtp, locale="en")
    messages, blocked = blocked_trip(feed)

    async def run() -> None:
        hand_over(service, messages)
        await service.engine.deliveries.drain(10)

    asyncio.run(run())
    [office] = receiver.at(f"/property?p={blocked}")
    keeper = receiver.at(f"/send?to=keeper-{blocked}")
    plate = feed.extras.trucks["truck-dry-south"].plate
    for post in [office, *keeper]:
        assert post["locale"] == "en", post
        assert not CJK.search(post["text"].replace(plate, "")), post
    assert "Please clear the access" in office["text"], office


def test_a_truck_gone_silent_mid_trip_is_a_breakdown_and_the_stops_ahead_are_told(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    receiver, _, smtp = peers
    service, feed = incident_service(tmp_path, receiver.url, smtp)
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(7), traffic=Traffic(sd=0.0, trip_sd=0.1))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    reached = trip.stop_times[3].stop_id
    cut = lift_at(messages, reached)
    before = messages[: cut + 1]
    # The truck says nothing more; other trucks' messages keep the clock going.
    clock = [("location", {"ts": before[-1][1]["ts"] + k * 60_000, "lat": 31.2, "lon": 121.39})
             for k in range(1, 20)]  # fmt: skip

    async def run() -> None:
        hand_over(service, before)
        hand_over(service, clock, truck="truck-wet-north")
        await service.engine.deliveries.drain(10)

    asyncio.run(run())
    assert [(str(i.kind), i.detail) for i in service.engine.incidents] == [
        ("breakdown", "no message for 10 min")
    ]
    [operator] = receiver.at("/operator")
    assert operator["incident"] == "breakdown"
    assert operator["text"].endswith("请作业公司紧急增派车辆。"), operator
    assert receiver.at("/dispatcher") == [operator]
    ahead = [st.stop_id for st in trip.stop_times[4:] if st.stop_id not in feed.extras.depots]
    for stop_id in ahead:
        assert "delayed" in [p["notice"] for p in receiver.at(f"/send?to=keeper-{stop_id}")], stop_id
    assert "delayed" not in [p["notice"] for p in receiver.at(f"/send?to=keeper-{reached}")]


def dispatched_trip(feed: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[str], int]:
    """The trip the dispatcher's tests change: its messages in time order, its stops, and the
    index of the lift at its third stop, where the dispatcher steps in."""
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(8), traffic=Traffic(sd=0.0, trip_sd=0.1))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    stops = [st.stop_id for st in trip.stop_times]
    return messages, stops, lift_at(messages, stops[2])


@pytest.mark.slow
def test_the_dispatcher_skips_a_stop_and_sends_a_replacement_truck_through_the_api(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    from linli.cloud.waste.api import app

    receiver, _, smtp = peers
    service, feed = incident_service(tmp_path, receiver.url, smtp)
    messages, stops, cut = dispatched_trip(feed)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def run() -> dict[str, Any]:
        hand_over(service, messages[: cut + 1])
        service.engine.take(
            "trucks/fleet/truck-dry-south/alarm",
            json.dumps({"ts": messages[cut][1]["ts"] + 1000, "alarm": "breakdown", "active": True}).encode(),
        )
        out: dict[str, Any] = {}
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://waste") as api:
            out["skip"] = (await api.post(f"/trips/{TRIP}/stops/{stops[5]}/skip", headers=auth)).status_code
            out["skip again"] = (
                await api.post(f"/trips/{TRIP}/stops/{stops[5]}/skip", headers=auth)
            ).status_code
            replace = await api.post(
                f"/trips/{TRIP}/replacement", json={"truck": "truck-spare-1"}, headers=auth
            )
            out["replace"] = replace.status_code
            out["unknown trip"] = (
                await api.post("/trips/nope/replacement", json={"truck": "truck-spare-1"}, headers=auth)
            ).status_code
            out["bad truck"] = (
                await api.post(f"/trips/{TRIP}/replacement", json={"truck": "a b"}, headers=auth)
            ).status_code
        # The spare truck drives the rest of the trip, past the skipped stop without lifting.
        rest = [(k, b) for k, b in messages[cut + 1 :] if not (k == "lift" and b["stop"] == stops[5])]
        hand_over(service, rest, truck="truck-spare-1")
        await service.engine.deliveries.drain(10)
        out["incidents"] = [str(i.kind) for i in service.engine.incidents]
        return out

    out = asyncio.run(run())
    assert (out["skip"], out["skip again"], out["replace"], out["unknown trip"], out["bad truck"]) == (
        200, 404, 200, 404, 422,
    )  # fmt: skip
    assert out["incidents"] == ["breakdown"]
    # The skipped stop hears nothing more after "delayed"; the stops after it are served by the spare.
    skipped = [p["notice"] for p in receiver.at(f"/send?to=keeper-{stops[5]}")]
    assert "collected" not in skipped
    for stop_id in stops[3:5] + stops[6:-1]:
        kinds = [p["notice"] for p in receiver.at(f"/send?to=keeper-{stop_id}")]
        assert kinds[-1] == "collected", (stop_id, kinds)
        assert "delayed" in kinds, (stop_id, kinds)
