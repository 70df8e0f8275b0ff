"""A keeper notice's claim and its deliveries' holds are one transaction (issue 36).

Claimed, then held in a second transaction, a notice was lost to the state failing between
the two: recorded as told, sent without a hold, and never sent again if the service died
before the delivery finished."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.service import WasteService
from linli.demo.servers import free_port
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import load_feed
from support import LOOPBACK
from test_waste_service import MONDAY, TOKEN, TRIP, hand_over, incident_service, local_feed


def count(state: Path, table: str) -> int:
    db = sqlite3.connect(state)
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def rename(state: Path, table: str, to: str) -> None:
    db = sqlite3.connect(state)
    try:
        db.execute(f"ALTER TABLE {table} RENAME TO {to}")
        db.commit()
    finally:
        db.close()


@pytest.mark.slow
def test_a_notice_whose_deliveries_cannot_be_held_is_not_claimed_and_goes_once_they_can(
    tmp_path: Path,
) -> None:
    """The deliveries' table gone (the state refuses their holds as it would when down): no
    notice is claimed, each waits; back, every notice is claimed with a hold for each of its
    keepers' channels, in the state before anything is sent."""
    feed = load_feed(local_feed(tmp_path, f"http://127.0.0.1:{free_port()}"))  # nobody there
    state = tmp_path / "waste.sqlite"
    config = WasteConfig(
        broker=TruckBroker(port=1),  # not used: the messages are handed over directly
        gtfs=tmp_path / "gtfs",
        state=str(state),
        delivery=LOOPBACK,
    )
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(9), traffic=Traffic(sd=0.0, trip_sd=0.2))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    channels = {
        st.stop_id: sum(len(k.channels) for k in feed.extras.stops[st.stop_id].keepers)
        for st in trip.stop_times
        if st.stop_id not in feed.extras.depots
    }

    async def run() -> None:
        service = WasteService(config, TOKEN, feed)
        rename(state, "waste_delivery", "waste_delivery_away")
        taken = 0
        while (
            service.engine.waiting == 0 and not service.engine.claimed
        ):  # until the trip decides its first notices
            hand_over(service, messages[taken : taken + 1])
            taken += 1
        waiting = service.engine.waiting
        assert count(state, "waste_notice") == 0, "claimed while its deliveries could not be held"
        assert sum(service.engine.claimed.values()) == 0
        rename(state, "waste_delivery_away", "waste_delivery")
        hand_over(service, messages[taken : taken + 1])  # the trip's next message claims them
        claimed = sum(service.engine.claimed.values())
        assert claimed >= waiting
        db = sqlite3.connect(state)
        notices = db.execute("SELECT stop_id FROM waste_notice").fetchall()
        holds = db.execute("SELECT thread FROM waste_delivery").fetchall()
        db.close()
        assert len(notices) == claimed
        # Nothing sent yet (no await since): every claimed notice's deliveries are held.
        assert len(holds) == sum(channels[stop] for (stop,) in notices) > 0
        await service.engine.deliveries.drain(10)
        service.state.close()

    asyncio.run(run())


@pytest.mark.slow
def test_an_incident_whose_deliveries_cannot_be_held_is_not_claimed_and_goes_once_they_can(
    tmp_path: Path,
) -> None:
    """As a notice: a breakdown whose operator's and dispatcher's deliveries cannot be held is
    not claimed (claimed first, it was recorded as told and sent without a hold); back, it is
    claimed with a hold for each of their channels, before anything is sent."""
    service, feed = incident_service(tmp_path, f"http://127.0.0.1:{free_port()}", free_port())
    state = tmp_path / "waste.sqlite"
    trip = feed.trips[TRIP]
    drive = drive_trip(feed, trip, MONDAY, random.Random(9), traffic=Traffic(sd=0.0, trip_sd=0.2))
    messages = sorted(drive.messages, key=lambda m: m[1]["ts"])
    cut = len(messages) // 3  # under way

    async def run() -> None:
        hand_over(service, messages[:cut])
        rename(state, "waste_delivery", "waste_delivery_away")
        alarm = {"ts": messages[cut - 1][1]["ts"] + 1000, "alarm": "breakdown", "active": True}
        hand_over(service, [("alarm", alarm)])
        assert [str(i.kind) for i in service.engine.incidents] == []
        assert count(state, "waste_incident") == 0, "claimed while its deliveries could not be held"
        assert service.engine.waiting > 0
        rename(state, "waste_delivery_away", "waste_delivery")
        after = next(body for kind, body in messages[cut:] if kind == "location")
        hand_over(service, [("location", {**after, "ts": alarm["ts"] + 1000})])
        assert [str(i.kind) for i in service.engine.incidents] == ["breakdown"]
        assert count(state, "waste_incident") == 1
        db = sqlite3.connect(state)
        holds = db.execute("SELECT contact FROM waste_delivery WHERE thread = ?", (f"incident/{TRIP}",))
        held = sorted(who for (who,) in holds)
        db.close()
        # Nothing sent yet (no await since): the operator's and the dispatcher's webhooks held.
        assert held == ["dispatcher", "operator"]
        await service.engine.deliveries.drain(10)
        service.state.close()

    asyncio.run(run())
