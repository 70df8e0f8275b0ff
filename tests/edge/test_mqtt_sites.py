"""Many agents on one broker, and what the MQTT connector counts.

Each agent subscribes only to its own sites, so a stopped agent's persistent session does
not fill with other sites' traffic that it would then dead-letter; every reason a message
is refused reaches the agent's health point; retained garbage is counted once, not at
every start; and the log names each bad source without a line per message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from linli.demo.servers import LocalServer
from linli.edge.buffer import DurableBuffer
from linli.edge.config import EdgeConfig
from linli.edge.mqtt import PAIR, MqttConnector
from support import influx1_create_db, influx1_query, running, unique, wait_until
from test_mqtt_rejects import Watcher, camera_config, detection, mosquitto_pub


def publisher(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(client: paho.Client, topic: str, count: int, start_ms: int) -> None:
    infos = [client.publish(topic, detection(start_ms + i), qos=1) for i in range(count)]
    for info in infos:
        info.wait_for_publish(10)


def test_agents_of_different_sites_on_one_broker_never_see_each_other(
    mosquitto: LocalServer, influx1: LocalServer
) -> None:
    db = unique("sites")
    influx1_create_db(influx1.url, db)
    site_a, site_b = unique("site-a"), unique("site-b")
    a = camera_config(influx1, db, mosquitto.port, site_a)
    b = camera_config(influx1, db, mosquitto.port, site_b)
    assert a.mqtt is not None
    # Agent A as an older version left its session: subscribed to the whole root.
    legacy = paho.Client(CallbackAPIVersion.VERSION2, client_id=a.mqtt_client_id, clean_session=False)
    legacy.connect("127.0.0.1", mosquitto.port)
    legacy.loop_start()
    subscribed = threading.Event()
    legacy.on_subscribe = lambda *_: subscribed.set()
    legacy.subscribe("elevators/#", qos=1)
    assert subscribed.wait(10)
    legacy.disconnect()
    legacy.loop_stop()
    watcher = Watcher(mosquitto.port, "linli/deadletter/#")
    assert watcher.ready.wait(10)
    pub = publisher(mosquitto.port)
    now = int(time.time() * 1000)
    out: dict[str, Any] = {}

    async def scenario() -> None:
        async with running(a) as agent_a:
            assert agent_a.mqtt is not None
            out["a filters"] = sorted(agent_a.mqtt.filters)
        # A is away; B takes its site's traffic, which A's session must not queue.
        async with running(b) as agent_b:
            assert agent_b.mqtt is not None
            await asyncio.to_thread(publish_all, pub, f"elevators/{site_b}/cam-1/detection", 300, now)
            await wait_until(lambda: agent_b.mqtt is not None and agent_b.mqtt.stored >= 300, 20, "B's 300")
        async with running(a) as agent_a:
            mqtt = agent_a.mqtt
            assert mqtt is not None
            await asyncio.to_thread(publish_all, pub, f"elevators/{site_a}/cam-1/detection", 5, now)
            await wait_until(lambda: mqtt.stored >= 5, 20, "A's own 5")
            out["a received"] = mqtt.received
            out["a rejected"] = dict(mqtt.dead_letters)

    try:
        asyncio.run(scenario())
    finally:
        pub.loop_stop()
        pub.disconnect()
        watcher.close()
    assert out["a filters"] == [f"elevators/{site_a}/#"]
    assert out["a received"] == 5  # its own five, none of B's 300
    assert out["a rejected"] == {}
    assert [e for e in watcher.envelopes if site_a in e["topic"] or site_b in e["topic"]] == []
    rows = influx1_query(influx1.url, db, 'SELECT count("confidence") FROM camera GROUP BY site')
    assert {r["site"]: r["count"] for r in rows} == {site_a: 5, site_b: 300}


def agent_health(influx: LocalServer, db: str, agent: str) -> dict[str, Any]:
    rows = influx1_query(
        influx.url, db, f"SELECT * FROM health WHERE device = '{agent}' ORDER BY time DESC LIMIT 1"
    )
    return rows[0] if rows else {}


def test_every_refusal_reaches_the_health_point_and_retained_garbage_counts_once(
    mosquitto: LocalServer, influx1: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    db = unique("counts")
    influx1_create_db(influx1.url, db)
    site = unique("site")
    config = camera_config(influx1, db, mosquitto.port, site)
    port = mosquitto.port
    # Retained garbage on a configured camera's status topic, there before the agent starts.
    mosquitto_pub(port, f"elevators/{site}/cam-1/status", message="garbage", retain=True)
    caplog.set_level(logging.WARNING, logger="linli.edge.mqtt")

    async def run_once(extra: bool) -> dict[str, Any]:
        async with running(config) as agent:
            mqtt = agent.mqtt
            assert mqtt is not None
            if extra:
                for i in range(50):  # one misconfigured camera, flooding
                    await asyncio.to_thread(
                        mosquitto_pub, port, f"elevators/{site}/cam-9/detection", message=detection(i)
                    )
                await asyncio.to_thread(
                    mosquitto_pub, port, f"elevators/{site}/cam-8/detection", message=detection(1)
                )
                await asyncio.to_thread(mosquitto_pub, port, f"elevators/{site}/cam-1/odd", message="{}")
                await wait_until(lambda: mqtt.dead_letters.total() >= 53, 20, "the refusals")
            else:
                await wait_until(lambda: mqtt.ignored_retained >= 1, 20, "the replayed garbage, seen before")
        return {"health": agent_health(influx1, db, config.agent.name), "errors": dict(mqtt.dead_letters)}

    first = asyncio.run(run_once(extra=True))
    second = asyncio.run(run_once(extra=False))
    # The first start: the retained garbage counted once, with everything else, on the health point.
    h = first["health"]
    assert (h["rejected_invalid"], h["rejected_unknown_device"], h["rejected_unknown_topic"]) == (1, 51, 1)
    assert h["rejected"] == 53
    # The second start: the broker replays the same garbage; it is not counted again.
    assert second["errors"] == {}
    assert second["health"]["ignored_retained"] == 1
    assert second["health"]["rejected"] == 0
    # The log names both unknown cameras, and not once per message.
    refused = [r.getMessage() for r in caplog.records if "rejected (unknown_device)" in r.getMessage()]
    assert len(refused) == 2
    assert any("cam-9" in m for m in refused)
    assert any("cam-8" in m for m in refused)
    mosquitto_pub(port, f"elevators/{site}/cam-1/status", message="", retain=True)  # clear it


def test_the_filters_follow_the_sites_or_the_config() -> None:
    def config(**mqtt: Any) -> EdgeConfig:
        return EdgeConfig.model_validate(
            {
                "agent": {"name": "edge-1"},
                "writer": {"kind": "influxdb1", "url": "http://127.0.0.1:9", "database": "x"},
                "mqtt": mqtt,
                "sites": [
                    {
                        "id": "s1",
                        "devices": [{"id": "c", "profile": "camera"}, {"id": "t", "profile": "truck"}],
                    },
                    {"id": "s2", "devices": [{"id": "c", "profile": "camera"}]},
                ],
            }
        )

    def nothing(_lines: list[str], _done: object, _delivered: bytes) -> None:
        pass

    assert sorted(MqttConnector(config(), nothing).filters) == [
        "elevators/s1/#",
        "elevators/s2/#",
        "trucks/s1/#",
    ]
    chosen = MqttConnector(config(subscribe=["district/+/cams/#"]), nothing)
    assert list(chosen.filters) == ["district/+/cams/#"]


def readings(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("camera,")]


def test_a_qos1_message_the_broker_sends_again_after_a_crash_is_stored_once(tmp_path: Path) -> None:
    """The crash window: a message's line committed, its PUBACK not yet sent. The broker sends
    it again after the restart with the same packet id; the buffer's record of that id says
    it is stored already."""
    config = EdgeConfig.model_validate(
        {
            "agent": {"name": "edge-1"},
            "writer": {"kind": "influxdb1", "url": "http://127.0.0.1:9", "database": "x"},
            "mqtt": {},
            "sites": [{"id": "s1", "devices": [{"id": "cam-1", "profile": "camera"}]}],
        }
    )
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    emitted: list[tuple[list[str], bytes]] = []

    def emit(lines: list[str], _done: object, delivered: bytes) -> None:
        emitted.append((lines, delivered))
        buffer.append(lines, delivered=delivered)

    topic = "elevators/s1/cam-1/detection"
    first = MqttConnector(config, emit, delivered=buffer.delivered())
    first._on_publishes([(topic.encode(), detection(1_790_000_000_000).encode(), 1, False, 7)])
    first._drain_inbox()
    [(lines, delivered)] = emitted
    assert len(readings(lines)) == 1
    assert [mid for mid, _ in PAIR.iter_unpack(delivered)] == [7]
    buffer.close()

    # The restart: a new buffer object on the same file, and the broker's second copy.
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    second = MqttConnector(config, emit, delivered=buffer.delivered())
    again = detection(1_790_000_000_000).encode()
    later = detection(1_790_000_000_500).encode()  # packet id 7 reused for a new message
    second._on_publishes([(topic.encode(), again, 1, False, 7), (topic.encode(), later, 1, False, 7)])
    second._drain_inbox()
    assert second.redelivered == 1
    assert [len(readings(lines)) for lines, _ in emitted] == [1, 1]
    assert readings(emitted[1][0])[0].endswith(" 1790000000500")
    buffer.close()
