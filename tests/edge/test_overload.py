"""An agent offered more than it can store: it keeps storing, sheds only the QoS 0 excess,
counted by reason, and recovers by itself. Real Mosquitto, real VictoriaMetrics.

The inbox is made small so that a publisher on the same machine overloads the agent for sure;
every step waits for the counters, never for time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from linli.demo.servers import LocalServer, free_port
from linli.edge import mqtt as mqtt_module
from linli.edge import mqttinbox
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from support import http_get, running, unique, vm_series_settled, wait_until

CAMERAS = 20
BURST = 2000  # messages in one write to the broker
MAX_BURSTS = 500  # the overload's bound: a million messages at most
HEARTBEAT = b'{"ts":%d,"uptime_s":%d,"detections_today":0,"interceptions_today":0,"door_holds_today":0}'
# A truck driver's SOS, at QoS 0 like the flood: a life-safety message, never shed.
SOS = b'{"ts":%d,"alarm":"sos","active":true,"stop":"gate %d"}'
ALARM_EVERY = 50  # one SOS in this many messages of a flood with alarms


def publish_packet(topic: str, payload: bytes, qos: int = 0, mid: int = 0) -> bytes:
    """One MQTT 3.1.1 PUBLISH packet."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"") + payload
    length, size = b"", len(body)
    while True:
        size, byte = divmod(size, 128)
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([0x30 | qos << 1]) + length + body


class Flood:
    """A publisher writing bursts of QoS 0 heartbeats as fast as the socket takes them, until
    stopped; each camera's messages a millisecond apart in time, so each is its own point."""

    def __init__(self, port: int, site: str, *, alarm_every: int = 0) -> None:
        """With `alarm_every`, every that many messages is a truck's SOS instead of a heartbeat."""
        self.alarm_every = alarm_every
        self.alarms = 0
        self.alarm_topic = f"trucks/{site}/truck-1/alarm"
        self.sock = socket.create_connection(("127.0.0.1", port))
        client_id = unique("flood").encode()
        connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
        self.sock.sendall(bytes([0x10, len(connect)]) + connect)
        assert self.sock.recv(4)[:2] == b"\x20\x02"
        self.topics = [f"elevators/{site}/cam-{i}/heartbeat" for i in range(CAMERAS)]
        self.base_ms = int(time.time() * 1000) - 3_600_000  # in the past: never ahead of the clock
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def burst(self, n: int) -> bytes:
        packets = []
        for k in range(self.sent, self.sent + n):
            ts = self.base_ms + k // CAMERAS
            if self.alarm_every and k % self.alarm_every == 0:
                packets.append(publish_packet(self.alarm_topic, SOS % (ts, k)))
                self.alarms += 1
            else:
                packets.append(publish_packet(self.topics[k % CAMERAS], HEARTBEAT % (ts, k)))
        self.sent += n
        return b"".join(packets)

    def _run(self) -> None:
        for _ in range(MAX_BURSTS):
            if self.stop.is_set():
                return
            self.sock.sendall(self.burst(BURST))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def metric(text: str, name: str) -> float:
    """One sample of a /metrics page (0 when absent)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def flooded_config(
    mosquitto: LocalServer, victoria: LocalServer, tmp_path: Path, metrics_port: int, sites: list[Any]
) -> EdgeConfig:
    """An agent of these sites, its metrics on `metrics_port`, writing small batches to `victoria`."""
    return EdgeConfig.model_validate(
        {
            "agent": {"name": unique("agent"), "metrics": f"127.0.0.1:{metrics_port}"},
            "buffer": {"path": str(tmp_path / "buffer.sqlite")},
            "writer": {
                "kind": "influxdb2", "url": victoria.url, "org": "linli", "bucket": "linli",
                "flush_interval": 0.2, "batch_size": 1000,
            },
            "mqtt": {"port": mosquitto.port},
            "sites": sites,
        }
    )  # fmt: skip


def test_an_overloaded_agent_keeps_storing_sheds_the_excess_by_reason_and_recovers(
    mosquitto: LocalServer, victoria: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The asyncio side takes a batch (MAX_DRAIN) each batch_ms, not as soon as one is queued: at
    # most 5,000 messages/s, so that the flood, written from the agent's own process, overloads it
    # whatever the machine (since issue 36 the agent kept up with it). A full inbox is then 0.4 s
    # of its pace, well short of MAX_BEHIND_MS: what is shed is shed for a full inbox.
    monkeypatch.setattr(mqttinbox, "MAX_INBOX", BURST)
    monkeypatch.setattr(mqtt_module, "FULL_BATCH", mqttinbox.NEVER)
    site, port = unique("site"), free_port()
    sites = [
        {"id": site, "devices": [{"id": f"cam-{i}", "profile": "camera"} for i in range(CAMERAS)]},
        {"id": f"{site}-q1", "devices": [{"id": "cam-0", "profile": "camera"}]},
    ]
    config = flooded_config(mosquitto, victoria, tmp_path, port, sites)
    flood = Flood(mosquitto.port, site)

    async def scenario() -> None:
        async with running(config) as agent:
            mqtt = agent.mqtt
            assert mqtt is not None
            flood.thread.start()
            try:
                # Overloaded: messages are shed, and all the while the agent keeps storing.
                await wait_until(lambda: mqtt.overflow > 0, 60, "the first message shed")
                for _ in range(3):
                    await more_stored_while_more_shed(agent)
                # A device at QoS 1 meanwhile: the broker keeps what the agent has not acknowledged,
                # and none of it is shed.
                await asyncio.to_thread(qos1_messages, mosquitto.port, f"{site}-q1", flood.base_ms)
            finally:
                flood.stop.set()
                await asyncio.to_thread(flood.thread.join)
            # Every message the agent took is handled or shed, then stored: it catches up alone.
            await wait_until(lambda: mqtt.received + mqtt.overflow == flood.sent + 10, 120, "all accounted")
            await wait_until(
                lambda: agent.buffer.stats.lines == 0 and not mqtt.queued, 120, "the buffer drained"
            )
            assert mqtt.shed.keys() == {"inbox_full"}, mqtt.shed
            page = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")).decode()
            assert metric(page, 'linli_mqtt_shed_total{reason="inbox_full"}') == mqtt.overflow > 0
            assert metric(page, "linli_mqtt_queued") == 0
            # Recovered: a normal load is stored whole, nothing more shed.
            shed, stored = mqtt.overflow, mqtt.stored
            await asyncio.to_thread(flood.send, flood.burst(BURST // 2))
            await wait_until(lambda: mqtt.stored == stored + BURST // 2, 60, "the normal load handled")
            await wait_until(lambda: agent.buffer.stats.lines == agent.spool.staged == 0, 60, "it stored")
            assert mqtt.overflow == shed
            await asyncio.to_thread(assert_stored, agent, site)

    try:
        asyncio.run(scenario())
    finally:
        flood.close()


def test_a_flooded_agent_sheds_readings_but_stores_every_alarm(
    mosquitto: LocalServer, victoria: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqttinbox, "MAX_INBOX", 3 * BURST)
    # Behind as soon as a message waits 20 ms, a fifth of a batch: shedding whatever the agent's
    # speed (since issue 36 it keeps up with this flood, written from its own process).
    monkeypatch.setattr(mqttinbox, "MAX_BEHIND_MS", 20)
    site, port = unique("site"), free_port()
    cameras = [{"id": f"cam-{i}", "profile": "camera"} for i in range(CAMERAS)]
    sites = [{"id": site, "devices": [*cameras, {"id": "truck-1", "profile": "truck"}]}]
    config = flooded_config(mosquitto, victoria, tmp_path, port, sites)
    flood = Flood(mosquitto.port, site, alarm_every=ALARM_EVERY)

    async def scenario() -> None:
        async with running(config) as agent:
            mqtt = agent.mqtt
            assert mqtt is not None
            async with flooding(flood):
                # Shedding for a while: some hundred alarms arrive while readings are shed.
                await wait_until(lambda: mqtt.overflow > 20 * BURST, 90, "readings shed")
            await wait_until(lambda: mqtt.received + mqtt.overflow == flood.sent, 120, "all accounted")
            await wait_until(
                lambda: agent.buffer.stats.lines == agent.spool.staged == 0 and not mqtt.queued,
                120,
                "the buffer drained",
            )
            # Every SOS stored, each its own point, though readings were shed all around them.
            sos = await asyncio.to_thread(vm_series_settled, victoria.url, "truck_active", site, flood.alarms)
            assert sum(len(s["timestamps"]) for s in sos) == flood.alarms
            # Counted apart: alarms kept while QoS 0 was being shed, in /metrics too.
            assert 0 < mqtt.alarms_kept <= flood.alarms
            assert mqtt.stored + mqtt.overflow == flood.sent  # each message stored or shed
            page = (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")).decode()
            assert metric(page, "linli_mqtt_alarms_kept_total") == mqtt.alarms_kept

    try:
        asyncio.run(scenario())
    finally:
        flood.close()


@contextlib.asynccontextmanager
async def flooding(flood: Flood) -> AsyncIterator[None]:
    """The flood running in its thread; stopped and joined on the way out."""
    flood.thread.start()
    try:
        yield
    finally:
        flood.stop.set()
        await asyncio.to_thread(flood.thread.join)


async def more_stored_while_more_shed(agent: Agent) -> None:
    """Until the store confirmed more lines and more messages were shed since the call."""
    mqtt = agent.mqtt
    assert mqtt is not None
    stored, shed = agent.writer.stats.written, mqtt.overflow
    await wait_until(
        lambda: agent.writer.stats.written > stored and mqtt.overflow > shed,
        60,
        "more stored while more is shed",
    )


def qos1_messages(port: int, site: str, base_ms: int) -> None:
    """Ten QoS 1 heartbeats, each acknowledged by the broker."""
    sock = socket.create_connection(("127.0.0.1", port))
    client_id = unique("q1").encode()
    connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(bytes([0x10, len(connect)]) + connect)
    assert sock.recv(4)[:2] == b"\x20\x02"
    topic = f"elevators/{site}/cam-0/heartbeat"
    sock.sendall(b"".join(publish_packet(topic, HEARTBEAT % (base_ms + k, k), 1, k + 1) for k in range(10)))
    acks = b""
    while len(acks) < 40:
        acks += sock.recv(40 - len(acks))
    sock.sendall(b"\xe0\x00")
    sock.close()


def assert_stored(agent: Agent, site: str) -> None:
    """The store holds exactly what the agent says it stored, the QoS 1 device's ten included."""
    assert agent.mqtt is not None
    url, stored = agent.config.writer.url, agent.mqtt.stored
    q1 = vm_series_settled(url, "camera_uptime_s", f"{site}-q1", 10)
    assert sum(len(s["timestamps"]) for s in q1) == 10
    flooded = vm_series_settled(url, "camera_uptime_s", site, stored - 10, timeout=60)
    assert sum(len(s["timestamps"]) for s in flooded) == stored - 10
