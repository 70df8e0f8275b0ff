"""Two waste services on one state, as on two hosts: both follow every truck, each notice and
incident is told once, and when one goes the other carries on without a gap.

The services take the same truck messages in the same order (each subscribes to every truck);
the first to claim a notice in the shared state sends it. What the keepers, property offices
and dispatcher hear is compared with one service alone on a state of its own.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from linli.cloud.waste.service import WasteService
from peers import Inbox, Receiver
from test_waste_service import TOKEN, TRIP, blocked_trip, hand_over, incident_service

Told = Counter[tuple[str, str, str]]


def told_since(receiver: Receiver, start: int) -> Told:
    """What was posted since `start`: (where, which notice or incident, which stop)."""
    return Counter(
        (path, str(body.get("notice") or body.get("incident")), str(body.get("stop")))
        for path, body in list(receiver.posts)[start:]
    )


def test_two_services_on_one_state_tell_each_notice_once_and_survive_one_going(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    receiver, _, smtp = peers
    alone, feed = incident_service(tmp_path / "alone", receiver.url, smtp)
    messages, _ = blocked_trip(feed)

    async def reference() -> None:
        hand_over(alone, messages)
        await alone.deliveries.drain(10)

    start = len(receiver.posts)
    asyncio.run(reference())
    expected = told_since(receiver, start)

    first, _ = incident_service(tmp_path / "pair", receiver.url, smtp, state=state)
    second = WasteService(first.config, TOKEN, feed)
    # The first service's host goes after the blocked gate, halfway through the trip.
    gone = len(messages) * 2 // 3

    async def pair() -> None:
        for i, message in enumerate(messages):
            if i < gone:
                hand_over(first, [message])
            hand_over(second, [message])
        await first.deliveries.drain(10)
        await second.deliveries.drain(10)

    start = len(receiver.posts)
    asyncio.run(pair())
    heard = told_since(receiver, start)
    assert heard == expected
    trip = feed.trips[TRIP]
    for room in [st.stop_id for st in trip.stop_times if st.stop_id not in feed.extras.depots]:
        at_room = {kind for path, kind, _ in heard if path == f"/send?to=keeper-{room}"}
        assert {"notice", "arrived", "collected"} <= at_room, room
    # Everything was decided by both; what each told is its own share, none of it twice.
    assert "/dispatcher" in {path for path, _, _ in expected}
    kinds = {kind for _, kind, _ in heard}
    assert {"notice", "arrived", "collected", "deferred", "returned", "blocked"} <= kinds
    both = len(first.incidents) + len(second.incidents)
    assert (both, len(first.state.incidents())) == (2, 1)
    rows = first.state.notices(10_000)
    assert len(rows) == len({(r["trip_id"], r["day"], r["idx"], r["kind"], r["time_ms"]) for r in rows})
    # Each told its share: the first until it went, the second the rest (and what the first
    # had not claimed yet).
    assert first.claimed["notice"] > 0
    assert second.claimed["notice"] > 0
    assert first.claimed.total() + second.claimed.total() == len(rows) + 1  # and the incident
    first.state.close()
    second.state.close()
    alone.state.close()
