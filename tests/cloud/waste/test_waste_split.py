"""Waste services that split the routes (`routes = "split"`): each route followed by one of
them, a dead one's routes taken over with their trips replayed from the routes' log, and the
dispatcher's commands reaching whichever service follows the trip.

The services run in this process and take every truck message, as each subscription of theirs
would; their rounds (heartbeat, leases) are called with a clock of the test's own, so a death
is a service that stops taking messages and rounds, and its lease running out is the clock
moved past `member_ttl_s`.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from linli.cloud.waste.routes import share
from linli.cloud.waste.service import WasteService
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.stops import Visit
from peers import Inbox, Receiver
from test_waste_replicas import told_alone, told_since
from test_waste_service import MONDAY, TOKEN, TRIP, dispatched_trip, hand_over, incident_service

TTL_S = 15.0


def split_pair(tmp_path: Path, hooks: str, smtp: int, state: str) -> tuple[WasteService, WasteService]:
    """Two services on one state that split the routes."""
    base, feed = incident_service(tmp_path, hooks, smtp, state=state)
    base.state.close()
    # Minutes of the trucks' time pass in a second here: keep the whole trip of other routes.
    config = base.config.model_copy(update={"routes": "split", "member_ttl_s": TTL_S, "keep_min": 240.0})
    return WasteService(config, TOKEN, feed), WasteService(config, TOKEN, feed)


def follower(services: tuple[WasteService, ...], route: str) -> WasteService:
    [one] = [s for s in services if route in s.held]
    return one


def close(*services: WasteService) -> None:
    for service in services:
        service.leave()
        service.leadership.close()
        service.state.close()


def test_the_service_taking_over_a_dead_ones_route_replays_its_trip_and_tells_only_the_rest(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    """One truck's blocked-gate trip: its follower dies two thirds of the way; the other service
    takes the route over once the lease runs out, replays the trip from the log and tells the
    keepers, property office and dispatcher exactly what one service alone tells them."""
    receiver, _, smtp = peers
    feed, messages, expected = told_alone(receiver, smtp, tmp_path)
    pair = split_pair(tmp_path / "split", receiver.url, smtp, state)
    route = feed.trips[TRIP].route_id
    gone = len(messages) * 2 // 3
    clock = 1000.0

    async def run() -> WasteService:
        nonlocal clock
        hand_over(pair[0], messages[:1])
        hand_over(pair[1], messages[:1])
        for _ in range(2):  # the first round of the first service finds it alone
            clock += 1.0
            for service in pair:
                service.rebalance(clock)
        first = follower(pair, route)
        second = pair[1] if first is pair[0] else pair[0]
        assert second.held
        assert route not in second.held
        for i, message in enumerate(messages[1:], start=1):
            if i < gone:
                hand_over(first, [message])
            hand_over(second, [message])
            if i % 40 == 0:  # rounds every 40 messages, a second of this machine's time each
                clock += 1.0
                if i < gone:
                    first.rebalance(clock)
                second.rebalance(clock)
                if i >= gone:
                    clock += TTL_S / 3  # the first is silent: its lease runs out
        await first.deliveries.drain(10)
        await second.deliveries.drain(10)
        return first

    start = len(receiver.posts)
    first = asyncio.run(run())
    second = pair[1] if first is pair[0] else pair[0]
    assert route in second.held
    assert second.taken_over >= 1
    assert second.replayed > 0
    assert told_since(receiver, start) == expected
    # The first told the first two thirds; the second only what came after, not one twice.
    assert first.claimed["notice"] > 0
    assert second.claimed.total() > 0
    opened = second.state.rows("SELECT truck FROM waste_message WHERE kind = 'opened'")
    assert (f"{TRIP}@{MONDAY.isoformat()}",) in opened
    close(*pair)


def test_a_second_takeover_replays_what_only_the_first_taker_kept(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    """The follower dies a third of the way, between two of its rounds: the messages since its
    last round are only in the others' memory. A third service, started after that gap, takes
    the route over and must find the gap's messages in the route's log, written there by the
    second while the route had no follower."""
    receiver, _, smtp = peers
    feed, messages, expected = told_alone(receiver, smtp, tmp_path)
    a, b = split_pair(tmp_path / "split", receiver.url, smtp, state)
    route = feed.trips[TRIP].route_id
    third, two_thirds = len(messages) // 3, len(messages) * 2 // 3
    clock = 1000.0

    async def run() -> tuple[WasteService, WasteService, WasteService]:
        nonlocal clock
        alive = [a, b]
        for service in alive:
            hand_over(service, messages[:1])
        for _ in range(2):
            clock += 1.0
            for service in alive:
                service.rebalance(clock)
        first = follower((a, b), route)
        second = b if first is a else a
        alive = [first, second]
        late = WasteService(first.config, TOKEN, feed)
        # The route goes to the third once the first is gone: the second, which kept the gap,
        # never follows it, and must have written the gap to the log while nobody did.
        names = (f"late-{n}" for n in range(1000))
        while share(feed.routes, [second.member, late.member])[route] != late.member:
            late.member = next(names)
        for i, message in enumerate(messages[1:], start=1):
            if i == third + 20:  # the first went at `third`, 20 messages after its last round
                alive.remove(first)
            if i == third + 60:  # the third starts once the second has taken over
                alive.append(late)
            if i == two_thirds:
                alive.remove(second)
            for service in alive:
                hand_over(service, [message])
            if i % 40 == 0 or i == third + 61:
                clock += TTL_S / 3 if i > third else 1.0
                for service in alive:
                    service.rebalance(clock)
        for service in (first, second, late):
            await service.deliveries.drain(10)
        return first, second, late

    start = len(receiver.posts)
    first, second, late = asyncio.run(run())
    assert late.taken_over >= 1
    assert route in late.held
    assert told_since(receiver, start) == expected
    close(first, second, late)


def test_a_spoiled_line_of_a_routes_log_is_counted_and_the_takeover_goes_on(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    receiver, _, smtp = peers
    pair = split_pair(tmp_path, receiver.url, smtp, state)
    messages, _, cut = dispatched_trip(pair[0].feed)
    route = pair[0].feed.trips[TRIP].route_id

    async def run() -> tuple[WasteService, WasteService]:
        for service in pair:
            hand_over(service, messages[:1])
        for clock in (1000.0, 1001.0):
            for service in pair:
                service.rebalance(clock)
        for service in pair:
            hand_over(service, messages[1:cut])
        first = follower(pair, route)
        other = pair[1] if first is pair[0] else pair[0]
        first.rebalance(1002.0)  # its log written
        with first.state.engine.begin() as conn:  # a hand spoils a line of it
            conn.execute(
                text(
                    'UPDATE waste_message SET payload = \'{"ts": "soon"}\' WHERE id = '
                    "(SELECT MAX(id) FROM waste_message WHERE kind = 'location')"
                )
            )
        first.leave()  # stopping: its routes go at once
        other.rebalance(1003.0)
        await other.deliveries.drain(10)
        return first, other

    first, other = asyncio.run(run())
    assert route in other.held
    assert other.taken_over >= 1
    assert other.rejected["invalid"] == 1
    close(first, other)


def test_a_command_sent_to_the_service_not_following_the_trip_is_applied_by_the_one_that_does(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    from linli.cloud.waste.api import app

    receiver, _, smtp = peers
    pair = split_pair(tmp_path, receiver.url, smtp, state)
    feed = pair[0].feed
    trip = feed.trips[TRIP]
    messages, stops, cut = dispatched_trip(feed)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def run() -> dict[str, Any]:
        for service in pair:
            hand_over(service, messages[:1])
        for clock in (1000.0, 1001.0):  # the first round of the first service finds it alone
            for service in pair:
                service.rebalance(clock)
        for service in pair:
            hand_over(service, messages[1 : cut + 1])
        first = follower(pair, trip.route_id)
        other = pair[1] if first is pair[0] else pair[0]
        out: dict[str, Any] = {}
        for name, service in (("other", other), ("first", first)):
            transport = httpx.ASGITransport(app=app(service, TOKEN))
            async with httpx.AsyncClient(transport=transport, base_url="http://waste") as api:
                stop = stops[5] if name == "other" else stops[6]
                answer = await api.post(f"/trips/{TRIP}/stops/{stop}/skip", headers=auth)
                out[name] = (answer.status_code, answer.json().get("status"))
                if name == "other":  # it answers for the trip too, as its follower last wrote it
                    trips = (await api.get("/trips", headers=auth)).json()
                    out["trips elsewhere"] = [
                        (t["trip_id"], t["as_of"] is not None, len(t["stops"])) for t in trips
                    ]
        visits = first.trip_now(TRIP).stops.visits  # type: ignore[union-attr]
        out["before the round"] = str(visits[5].state)
        first.rebalance(1003.0)
        out["after the round"] = str(visits[5].state)
        out["next stop"] = str(visits[6].state)
        return out

    out = asyncio.run(run())
    assert (TRIP, True, len(stops)) in out["trips elsewhere"]
    assert out["other"] == (200, "queued")
    assert out["first"] == (200, "done")
    assert (out["before the round"], out["after the round"]) == (str(Visit.AHEAD), str(Visit.SKIPPED))
    assert out["next stop"] == str(Visit.SKIPPED)
    # Both are in the route's log, for a service that takes the route over.
    logged = pair[0].state.rows("SELECT kind, truck FROM waste_message WHERE kind = 'skip' ORDER BY truck")
    assert logged == sorted([("skip", stops[5]), ("skip", stops[6])], key=lambda r: r[1])
    close(*pair)


def district_day(feed: Any) -> list[tuple[str, bytes]]:
    """(topic, payload) of every trip of the district's Monday, in time order."""
    out: list[tuple[int, str, bytes]] = []
    for trip in feed.trips.values():
        truck = feed.routes[trip.route_id].truck
        run = drive_trip(feed, trip, MONDAY, random.Random(trip.id), traffic=Traffic(sd=0.2))
        for kind, body in run.messages:
            out.append((body["ts"], f"trucks/fleet/{truck}/{kind}", json.dumps(body).encode()))
    out.sort(key=lambda m: m[0])
    return [(topic, payload) for _, topic, payload in out]


def decided(service: WasteService) -> Counter[tuple[str, int, str]]:
    """Every notice claimed in the state but corrections: (trip, stop index, kind)."""
    rows = service.state.rows("SELECT trip_id, idx, kind FROM waste_notice WHERE kind != 'correction'")
    return Counter((str(t), int(i), str(k)) for t, i, k in rows)


def test_services_splitting_the_district_decide_what_one_does_and_each_does_its_share(
    peers: tuple[Receiver, Inbox, int], tmp_path: Path, state: str
) -> None:
    """A day of every route: two services split them, one dies halfway through the day, and the
    keepers are told of every stop what one service alone tells them (corrections aside: each
    service learns the hour's traffic from the routes it follows)."""
    receiver, _, smtp = peers
    alone, feed = incident_service(tmp_path / "alone", receiver.url, smtp)
    day = district_day(feed)
    pair = split_pair(tmp_path / "split", receiver.url, smtp, state)
    gone = len(day) // 2
    shares: list[set[str]] = []

    async def run() -> None:
        for topic, payload in day:
            alone.take(topic, payload)
        clock = 1000.0
        for i, (topic, payload) in enumerate(day):
            for n, service in enumerate(pair):
                if n == 1 or i < gone:
                    service.take(topic, payload)
            if i % 100 == 0:
                # After the first's death its lease runs out in five rounds, 500 messages: nearly
                # an hour of the trucks' time, about 9 lifts, kept by the second meanwhile.
                clock += 1.0 if i < gone else TTL_S / 5
                for n, service in enumerate(pair):
                    if n == 1 or i < gone:
                        service.rebalance(clock)
                if i == 100:  # the first round of the first service found it alone
                    shares.extend(set(s.held) for s in pair)
            await asyncio.sleep(0)  # the deliveries started get their turn
        for service in (alone, *pair):
            await service.deliveries.drain(30)

    asyncio.run(run())
    expected = decided(alone)
    close(alone)
    assert shares[0]
    assert shares[1]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(feed.routes)
    first, second = pair
    assert second.held == set(feed.routes)
    assert second.taken_over >= 1
    assert decided(second) == expected
    # The work was split: until it died the first applied messages of its routes only.
    assert 0 < sum(first.handled.values()) < len(day) / 2
    close(*pair)


def test_routes_are_shared_evenly_the_same_way_by_every_member_and_few_move() -> None:
    from linli.cloud.waste.routes import share

    routes = [f"route-{i}" for i in range(30)]
    two = share(routes, ["host-a", "host-b"])
    assert set(two) == set(routes)
    assert sorted(Counter(two.values()).values()) == [15, 15]
    assert share(reversed(routes), ["host-b", "host-a", "host-b"]) == two  # the order seen does not matter
    three = share(routes, ["host-a", "host-b", "host-c"])
    assert sorted(Counter(three.values()).values()) == [10, 10, 10]
    moved = [r for r in routes if two[r] != three[r]]
    assert len(moved) <= 14  # the newcomer's 10 must move; the bound moves a few between the others
    assert share(routes, ["host-b"]) == dict.fromkeys(routes, "host-b")
    assert share(routes, []) == {}
