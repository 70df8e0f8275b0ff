"""The benchmarks' load generator: a fleet of devices, each with its own topic, values and clock."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from linli.catalog.payloads import CompiledMessage
from linli.catalog.profile import get_profile
from linli.demo.servers import LocalServer
from support import unique

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from mqttload import KINDS, Fleet, Publisher, parse_every, raise_open_files

MESSAGE = {"truck": "location", "camera": "heartbeat", "rescue_point": "state"}


@contextmanager
def subscribed(
    mosquitto: LocalServer, fleet: Fleet, on_message: Callable[[object, object, paho.MQTTMessage], None]
) -> Iterator[None]:
    """A paho client subscribed at QoS 1 to every message of the fleet, until the block ends."""
    done = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("sub"))
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: done.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe([(f, 1) for f in fleet.filters()])
    sub.loop_start()
    try:
        assert done.wait(10)
        yield
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_devices_are_spread_over_connections_at_most_n_each() -> None:
    fleet = Fleet({"truck": 20, "camera": 20, "rescue_point": 20}, dict.fromkeys(KINDS, 10.0), 7, 0)
    assert fleet.connections == 9
    per = Counter(d.connection for devices in fleet.devices.values() for d in devices)
    assert max(per.values()) == 7
    assert sum(per.values()) == 60
    assert fleet.rate == pytest.approx(6.0)
    # Every device sends once in one interval, twice in two.
    assert fleet.messages(10.0) == 60
    assert fleet.messages(20.0) == 120


def test_intervals_by_kind_and_their_errors() -> None:
    assert parse_every(["camera=30"], ["truck", "camera"], 10.0) == {"truck": 10.0, "camera": 30.0}
    with pytest.raises(ValueError, match="KIND=SECONDS"):
        parse_every(["lift=3"], ["truck"], 10.0)
    with pytest.raises(ValueError, match="not a number"):
        parse_every(["truck=soon"], ["truck"], 10.0)
    with pytest.raises(SystemExit, match="--per-connection"):
        raise_open_files(10**9)


def test_every_message_arrives_valid_with_the_current_clock(mosquitto: LocalServer) -> None:
    fleet = Fleet({"truck": 20, "camera": 20, "rescue_point": 20}, dict.fromkeys(KINDS, 0.2), 7, 1)
    hold = 1.0
    expected = fleet.messages(hold)
    got: list[tuple[str, bytes, int]] = []
    arrived = threading.Condition()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            return  # another test's retained status, replayed by the shared broker
        with arrived:
            got.append((msg.topic, bytes(msg.payload), int(time.time() * 1000)))
            arrived.notify()

    with subscribed(mosquitto, fleet, on_message):
        pub = Publisher(fleet, mosquitto.port, unique("pub"))
        before_ms = int(time.time() * 1000)
        _, _, start_ms = pub.send(hold)
        pub.close()
        assert pub.acked == expected  # QoS 1: the broker acknowledged every one
        with arrived:
            assert arrived.wait_for(lambda: len(got) >= expected, 10), f"{len(got)} of {expected} arrived"
    assert len(got) == expected == pub.sent
    compiled = {
        k: CompiledMessage(next(m for m in get_profile(k).mqtt.messages if m.name == n))  # type: ignore[union-attr]
        for k, n in MESSAGE.items()
    }
    kind_of = {d.topic: k for k, devices in fleet.devices.items() for d in devices}
    stamps: dict[str, list[int]] = defaultdict(list)
    values: dict[str, set[str]] = defaultdict(set)
    for topic, payload, arrived_ms in got:
        body = compiled[kind_of[topic]].validate(payload)  # raises on anything the agent would refuse
        ts = json.loads(payload)["ts"]
        assert start_ms <= ts < start_ms + hold * 1000
        # The current clock, not a fixed date: stamped after the test began, before it arrived.
        assert before_ms <= start_ms <= ts <= arrived_ms
        stamps[topic].append(ts)
        values[kind_of[topic]].add(compiled[kind_of[topic]].field_set_of(body))
    assert len(stamps) == 60  # every device on its own topic
    assert all(len(set(s)) == len(s) for s in stamps.values())  # each message its own point
    assert all(len(v) > 20 for v in values.values())  # values differ by device and message


@pytest.mark.servers
def test_publishers_in_parts_send_every_device_s_messages_once_between_them(mosquitto: LocalServer) -> None:
    fleet = Fleet({"truck": 10, "camera": 10, "rescue_point": 10}, dict.fromkeys(KINDS, 0.25), 4, 1)
    hold, parts = 1.0, 3
    expected = fleet.messages(hold)
    got: Counter[str] = Counter()
    arrived = threading.Condition()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if not msg.retain:
            with arrived:
                got[msg.topic] += 1
                arrived.notify()

    with subscribed(mosquitto, fleet, on_message):
        pubs = [Publisher(fleet, mosquitto.port, unique(f"pub{k}"), part=(k, parts)) for k in range(parts)]
        senders = [threading.Thread(target=pub.send, args=(hold,)) for pub in pubs]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        for pub in pubs:
            pub.close()
        with arrived:
            assert arrived.wait_for(lambda: got.total() >= expected, 10), f"{got.total()} of {expected}"
    # The parts share the connections, and so the devices, without overlap.
    assert sorted(c for pub in pubs for c in pub.socks) == list(range(fleet.connections))
    assert [pub.sent for pub in pubs] == [pub.messages(hold) for pub in pubs]
    assert all(pub.acked == pub.sent > 0 for pub in pubs)
    assert sum(pub.sent for pub in pubs) == got.total() == expected
    devices = [d for devices in fleet.devices.values() for d in devices]
    assert got == Counter({d.topic: fleet.messages(hold) // len(devices) for d in devices})
