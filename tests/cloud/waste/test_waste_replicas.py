"""Two waste services on one state, as on two hosts: both follow every truck, each notice and
incident is told once, and when one goes the other carries on without a gap.

The services take the same truck messages in the same order (each subscribes to every truck);
the first to claim a notice in the shared state sends it. What the keepers, property offices
and dispatcher hear is compared with one service alone on a state of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from linli.cloud.waste.service import WasteService
from linli.demo.servers import postgresql_url, start_postgresql
from peers import Inbox, Receiver
from support import create_database
from test_waste_service import TOKEN, TRIP, blocked_trip, hand_over, incident_service

Told = Counter[tuple[str, str, str]]
Message = tuple[str, dict[str, Any]]


def told_since(receiver: Receiver, start: int) -> Told:
    """What was posted since `start`: (where, which notice or incident, which stop)."""
    return Counter(
        (path, str(body.get("notice") or body.get("incident")), str(body.get("stop")))
        for path, body in list(receiver.posts)[start:]
    )


def told_alone(receiver: Receiver, smtp: int, tmp_path: Path) -> tuple[Any, list[Message], Told]:
    """The blocked-gate trip through one service alone on a state of its own: what it tells."""
    alone, feed = incident_service(tmp_path / "alone", receiver.url, smtp)
    messages, _ = blocked_trip(feed)

    async def run() -> None:
        hand_over(alone, messages)
        await alone.engine.deliveries.drain(10)

    start = len(receiver.posts)
    asyncio.run(run())
    alone.state.close()
    return feed, messages, told_since(receiver, start)


@pytest.mark.slow
def test_two_services_on_one_state_tell_each_notice_once_and_survive_one_going(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    receiver, _, smtp = peers
    feed, messages, expected = told_alone(receiver, smtp, tmp_path)

    first, _ = incident_service(tmp_path / "pair", receiver.url, smtp, state=state)
    second = WasteService(first.config, TOKEN, feed)
    # The first service's host goes after the blocked gate, halfway through the trip.
    gone = len(messages) * 2 // 3

    async def pair() -> None:
        for i, message in enumerate(messages):
            if i < gone:
                hand_over(first, [message])
            hand_over(second, [message])
        await first.engine.deliveries.drain(10)
        await second.engine.deliveries.drain(10)

    start = len(receiver.posts)
    asyncio.run(pair())
    heard = told_since(receiver, start)
    assert heard == expected
    trip = feed.trips[TRIP]
    blocked = trip.stop_times[2].stop_id  # blocked_trip's: the alarm 5 s after it stopped there
    for room in [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]:
        at_room = {kind for path, kind, _ in heard if path == f"/send?to=keeper-{room}"}
        # The blocked room's keeper hears it cannot be reached, then that the truck is back.
        told = (
            {"notice", "deferred", "returned", "collected"}
            if room == blocked
            else {"notice", "arrived", "collected"}
        )
        assert told <= at_room, room
    # Everything was decided by both; what each told is its own share, none of it twice.
    assert "/dispatcher" in {path for path, _, _ in expected}
    kinds = {kind for _, kind, _ in heard}
    assert {"notice", "arrived", "collected", "deferred", "returned", "blocked"} <= kinds
    both = len(first.engine.incidents) + len(second.engine.incidents)
    assert (both, len(first.state.incidents())) == (2, 1)
    rows = first.state.notices(10_000)
    assert len(rows) == len({(r["trip_id"], r["day"], r["idx"], r["kind"], r["time_ms"]) for r in rows})
    # Each told its share: the first until it went, the second the rest (and what the first
    # had not claimed yet).
    assert first.engine.claimed["notice"] > 0
    assert second.engine.claimed["notice"] > 0
    assert first.engine.claimed.total() + second.engine.claimed.total() == len(rows) + 1  # and the incident
    # Every delivery finished, none left held for another service to send again.
    assert first.state.rows("SELECT COUNT(*) FROM waste_delivery") == [(0,)]
    for service in (first, second):
        service.engine.leadership.close()
        service.state.close()


def test_a_database_outage_mid_trip_delays_notices_and_loses_none(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, pg_folder: Path
) -> None:
    """The state's PostgreSQL stops for a third of the trip: what was decided meanwhile waits,
    and is told once it is back; nothing twice, nothing dropped, the store's lines kept."""
    receiver, _, smtp = peers
    _, messages, expected = told_alone(receiver, smtp, tmp_path)

    database = start_postgresql(pg_folder / "pg")  # its own: this test stops it
    create_database(postgresql_url(database), "waste")
    service, _ = incident_service(
        tmp_path / "pg", receiver.url, smtp, state=postgresql_url(database, "waste").replace("+psycopg", "")
    )
    third = len(messages) // 3

    async def outage() -> int:
        nonlocal database
        hand_over(service, messages[:third])
        await service.engine.deliveries.drain(10)
        told_before = len(receiver.posts)
        database.stop()
        hand_over(service, messages[third : 2 * third])
        await service.engine.deliveries.drain(10)
        assert len(receiver.posts) == told_before  # nothing claimed, nothing told
        database = start_postgresql(database.datadir, database.port, init=False)
        hand_over(service, messages[2 * third :])
        await service.engine.deliveries.drain(10)
        return service.engine.outbox.pending()

    start = len(receiver.posts)
    try:
        pending = asyncio.run(outage())
    finally:
        database.stop()
    assert service.engine.state_errors > 0
    assert "internal" not in service.engine.rejected
    assert told_since(receiver, start) == expected
    assert pending > 0  # the store's lines from the outage are kept too


def test_what_a_dead_service_held_is_sent_once_by_another(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    """A service claimed notices and died before sending them: its deliveries stay held in the
    state under its lease; once the lease has run out another service sends each, once."""
    from linli.catalog.channels import ChannelKind, HttpChannel

    receiver, _, smtp = peers
    first, feed = incident_service(tmp_path / "pair", receiver.url, smtp, state=state)
    second = WasteService(first.config, TOKEN, feed)
    channel = HttpChannel(kind=ChannelKind.WEBHOOK, url=f"{receiver.url}/orphan")
    for n in range(20):
        body = {"subject": f"notice {n}", "text": f"notice {n}\ntrip t", "json": {"notice": "notice", "n": n}}
        # As the dead service left them: its lease ran out a second ago.
        first.state.hold(
            f"keeper-{n}", channel.model_dump_json(), json.dumps(body), f"t/{n}", time.time() - 1
        )
    live = first.state.hold("keeper-live", channel.model_dump_json(), "{}", "t/live", time.time() + 300)

    async def sweep() -> tuple[int, int, int]:
        taken = (first.engine.send_orphans(), second.engine.send_orphans())
        again = first.engine.send_orphans() + second.engine.send_orphans()
        await first.engine.deliveries.drain(10)
        await second.engine.deliveries.drain(10)
        return taken[0] + taken[1], again, len(first.state.rows("SELECT id FROM waste_delivery"))

    taken, again, left = asyncio.run(sweep())
    assert (taken, again, left) == (20, 0, 1)  # the live one is its sender's to send
    assert sorted(b["n"] for b in receiver.at("/orphan")) == list(range(20))
    first.state.release(live)
    for service in (first, second):
        service.engine.leadership.close()
        service.state.close()


def test_a_held_delivery_that_cannot_be_read_is_dropped_with_a_log_not_retried_forever(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    from linli.catalog.channels import ChannelKind, HttpChannel

    receiver, _, smtp = peers
    service, _ = incident_service(tmp_path / "one", receiver.url, smtp, state=state)
    good = HttpChannel(kind=ChannelKind.WEBHOOK, url=f"{receiver.url}/hostile").model_dump_json()
    body = json.dumps({"subject": "s", "text": "t", "json": {"n": 1}})
    hostile = [
        (good, "not json"),  # edited by hand, or written by another version
        (good, json.dumps({"text": "no subject", "json": {}})),
        (good, json.dumps({"subject": "s", "text": "t", "json": [1, "a list"]})),
        ('{"kind": "carrier-pigeon"}', body),
        ("\\x00", body),
    ]
    for channel, message in hostile:
        service.state.hold("keeper", channel, message, "t", time.time() - 1)

    async def sweep() -> int:
        taken = service.engine.send_orphans()
        await service.engine.deliveries.drain(10)
        return taken

    with caplog.at_level("ERROR"):
        assert asyncio.run(sweep()) == len(hostile)
    assert service.state.rows("SELECT COUNT(*) FROM waste_delivery") == [(0,)]
    assert receiver.at("/hostile") == []
    assert sum("cannot be read, dropped" in r.message for r in caplog.records) == len(hostile)
    service.engine.leadership.close()
    service.state.close()
