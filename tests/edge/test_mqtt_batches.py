"""How the MQTT connector gathers messages: a stream in batches of `[mqtt] batch_ms`, a lone
message after quiet at once. Against a real Mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from linli.demo.servers import LocalServer
from linli.edge.config import EdgeConfig
from linli.edge.mqtt import MqttConnector
from support import unique, wait_until
from test_mqtt_health import heartbeat

TOPIC = "elevators/s1/cam-1/heartbeat"


def test_a_stream_is_handled_in_batches_of_batch_ms_and_a_lone_message_at_once(
    mosquitto: LocalServer,
) -> None:
    config = EdgeConfig.model_validate(
        {
            "agent": {"name": unique("edge")},
            "writer": {"kind": "influxdb1", "url": "http://127.0.0.1:9", "database": "x"},
            # No health check comes to wake the connector: only the receive thread can.
            "mqtt": {"port": mosquitto.port, "batch_ms": 500, "health_interval": 3600},
            "sites": [{"id": "s1", "devices": [{"id": "cam-1", "profile": "camera"}]}],
        }
    )
    batches: list[tuple[float, int]] = []  # when, and how many readings

    def emit(lines: list[str], _done: object, _delivered: bytes) -> None:
        readings = sum(not line.startswith("health,") for line in lines)
        if readings:
            batches.append((time.monotonic(), readings))

    mqtt = MqttConnector(config, emit)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(mqtt.run(stop))
        try:
            await wait_until(mqtt.subscribed.is_set, 10, "the subscription")
            # A lone message after a quiet spell: the sleeping connector is woken for it at once.
            await asyncio.sleep(0.5)  # a quiet spell of batch_ms, not a wait for the code
            pub.publish(TOPIC, heartbeat(int(time.time() * 1000)), qos=0).wait_for_publish(5)
            # Nothing is queued and the health check is an hour away: only the receive thread's
            # wake-up can bring it in, so its arrival at all is the proof (however slow the machine).
            await wait_until(lambda: len(batches) == 1, 30, "the lone message")
            # A stream: 100 messages, one every 10 ms, for a second or so.
            start = time.monotonic()
            for _ in range(100):
                pub.publish(TOPIC, heartbeat(int(time.time() * 1000)), qos=0)
                await asyncio.sleep(0.01)  # the devices' pace, not a wait for the code
            streamed = time.monotonic() - start
            await wait_until(lambda: sum(n for _, n in batches) == 101, 10, "the stream")
            return streamed
        finally:
            stop.set()
            await task

    try:
        streamed = asyncio.run(scenario())
    finally:
        pub.loop_stop()
        pub.disconnect()
    stream = batches[1:]
    # At most one batch per 500 ms over the stream, and the first and last may be partial:
    # handled per message or per 20 ms, it would take dozens.
    assert 1 <= len(stream) <= streamed / 0.5 + 2, stream
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(stream)]
    assert all(gap >= 0.45 for gap in gaps), gaps
