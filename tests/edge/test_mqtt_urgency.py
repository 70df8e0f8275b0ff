"""Alarms skip the batching (issue 36): a message that raises or clears an alarm, judged from its
payload as the alert rules judge it, is handled as it arrives; a device's periodic healthy state
waits for the batch like the rest of the traffic."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from linli.demo.servers import LocalServer
from linli.edge.config import EdgeConfig
from linli.edge.mqtt import MqttConnector
from support import influx1_create_db, running, unique, wait_until
from test_mqtt_health import heartbeat
from test_mqtt_rejects import Watcher, mosquitto_pub


def rescue_state(aed_battery: int) -> bytes:
    """A rescue point's state as its cabinet reports it every minute; the AED's limit is 20 %."""
    body = {
        "ts": int(time.time() * 1000),
        "door_open": False,
        "equipment_present": True,
        "aed_battery": aed_battery,
        "last_inspection": "2026-11-01",
    }
    return json.dumps(body).encode()


def truck_alarm(*, active: bool, alarm: str = "sos") -> bytes:
    body = {"ts": int(time.time() * 1000), "alarm": alarm, "active": active, "stop": "gate 2"}
    return json.dumps(body).encode()


def truck_location(speed: int = 20) -> bytes:
    body = {
        "ts": int(time.time() * 1000),
        "waste_type": "wet",
        "route": "r-1",
        "lat": 31.2,
        "lon": 121.4,
        "speed": speed,
        "heading": 90,
        "acc": True,
        "alarm_flags": 1,
    }
    return json.dumps(body).encode()


def edge_config(
    port: int, *, store: str = "http://127.0.0.1:9", rules: list[dict[str, Any]] | None = None, **extra: Any
) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "agent": {"name": unique("edge")},
            "writer": {"kind": "influxdb1", "url": store, "database": "urgency"},
            "mqtt": {"port": port, "health_interval": 3600},
            "rules": rules or [],
            "sites": [
                {
                    "id": "s1",
                    "devices": [
                        {"id": "cam-1", "profile": "camera"},
                        {"id": "rp-1", "profile": "rescue_point"},
                        {"id": "rp-2", "profile": "rescue_point"},
                        {"id": "truck-1", "profile": "truck"},
                    ],
                },
                {"id": "s2", "devices": [{"id": "rp-1", "profile": "rescue_point"}]},
            ],
            **extra,
        }
    )


def test_an_alarm_or_its_clearing_is_urgent_and_a_healthy_state_is_not() -> None:
    config = edge_config(
        1883,
        rules=[
            # rp-2's AED rule switched off; site s2's limit raised to 30 %, cleared above 35.
            {"kind": "rescue_point", "field": "aed_battery", "device": "rp-2", "below": 20, "enabled": False},
            {"kind": "rescue_point", "field": "aed_battery", "site": "s2", "below": 30, "hysteresis": 5},
            {"kind": "truck", "field": "speed", "above": 60, "hysteresis": 10},
        ],
    )
    urgency = MqttConnector(config, lambda *_: None).urgency
    assert urgency.watching

    def judged(topic: str, payloads: list[bytes]) -> list[bool]:
        return [urgency.urgent(topic.encode(), topic, p) for p in payloads]

    rp1 = "rescue/s1/rp-1/state"
    # The periodic healthy state, again and again: never urgent. The battery low: urgent each
    # time it says so; back above the limit: urgent once (the alarm cleared), then healthy again.
    levels = [80, 80, 10, 10, 21, 80, 80]
    assert judged(rp1, [rescue_state(n) for n in levels]) == [False, False, True, True, True, False, False]
    # As the rules see it: no rule for rp-2's battery, and 25 % is low at site s2 only, where
    # it clears past 35 % (33 % is neither); the same for a limit above.
    assert judged("rescue/s1/rp-2/state", [rescue_state(10)]) == [False]
    s2 = [rescue_state(n) for n in (25, 33, 36, 33)]
    assert judged("rescue/s2/rp-1/state", s2) == [True, False, True, False]
    assert judged(rp1, [rescue_state(25)]) == [False]
    speeds = [truck_location(n) for n in (20, 70, 55, 45, 55)]
    assert judged("trucks/s1/truck-1/location", speeds) == [False, True, False, True, False]
    # A driver's alarm button (an alarm field): pressed, cleared, then nothing new.
    alarms = [truck_alarm(active=True), truck_alarm(active=False), truck_alarm(active=False)]
    assert judged("trucks/s1/truck-1/alarm", alarms) == [True, True, False]
    # Nothing to judge in a heartbeat; nor in a payload that is not JSON (the asyncio side
    # rejects it), a value that is not a number, or a device not in the config.
    assert judged("elevators/s1/cam-1/heartbeat", [heartbeat(int(time.time() * 1000))]) == [False]
    assert judged(rp1, [b'{"aed_battery": 5', b"[5]", b'{"aed_battery": "5"}']) == [False] * 3
    assert judged("rescue/s1/rp-9/state", [rescue_state(5)]) == [False]


def test_an_alarm_is_judged_whatever_else_its_payload_holds() -> None:
    """The receive thread reads only the watched keys (msgspec); a payload that reader refuses
    but the validation downstream takes (NaN in a key it ignores) is judged from a whole parse."""
    config = edge_config(1883, rules=[{"kind": "truck", "field": "speed", "above": 60}])
    mqtt = MqttConnector(config, lambda *_: None)
    urgency, now = mqtt.urgency, int(time.time() * 1000)
    alarm_topic = "trucks/s1/truck-1/alarm"
    alarm = truck_alarm(active=True).replace(b'"stop"', b'"x": NaN, "stop"')
    assert urgency.urgent(alarm_topic.encode(), alarm_topic, alarm)
    assert mqtt.handle(alarm_topic, alarm, now) is not None  # stored, so the alarm is raised
    topic = "trucks/s1/truck-1/location"
    assert urgency.urgent(topic.encode(), topic, truck_location(70))


def test_a_payload_nested_past_the_parsers_depth_is_not_urgent_and_does_not_raise() -> None:
    """msgspec raises RecursionError, not its own error, for a ~2 KB payload nested a thousand
    deep: raised in the receive thread, it ended paho's loop and with it every message after."""
    config = edge_config(1883, rules=[{"kind": "truck", "field": "speed", "above": 60}])
    urgency = MqttConnector(config, lambda *_: None).urgency
    topic = "trucks/s1/truck-1/location"

    def nested(depth: int) -> bytes:
        return b'{"x":' + b"[" * depth + b"]" * depth + b',"speed":70}'

    # Nested within reach, the unwatched key is skipped, as the asyncio side's reader does.
    assert urgency.urgent(topic.encode(), topic, nested(100))
    for depth in (1_000, 5_000):
        assert urgency.urgent(topic.encode(), topic, nested(depth)) is False
    assert urgency.urgent(topic.encode(), topic, truck_location(70))  # the next is judged


def test_an_agent_without_alarms_to_watch_keeps_its_batches() -> None:
    """A camera's messages carry nothing to judge: its agent reads every batch_ms, as before."""
    config = EdgeConfig.model_validate(
        {
            "agent": {"name": unique("edge")},
            "writer": {"kind": "influxdb1", "url": "http://127.0.0.1:9", "database": "x"},
            "mqtt": {"port": 1883},
            "sites": [{"id": "s1", "devices": [{"id": "cam-1", "profile": "camera"}]}],
        }
    )
    assert not MqttConnector(config, lambda *_: None).urgency.watching


def test_an_alarm_reaches_the_alert_topic_at_once_while_a_healthy_state_waits_for_the_batch(
    mosquitto: LocalServer, influx1: LocalServer, tmp_path: Path
) -> None:
    influx1_create_db(influx1.url, "urgency")
    buffer = {"path": str(tmp_path / "edge.buffer.sqlite")}
    config = edge_config(mosquitto.port, store=influx1.url, buffer=buffer)
    assert config.mqtt is not None
    # A minute's batches, beyond what a config may say: "never" for this test's waits (20 s).
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"batch_ms": 60_000})})
    events = Watcher(mosquitto.port, f"{config.alerts.topic}/#")

    async def publish(topic: str, payload: bytes) -> None:
        await asyncio.to_thread(mosquitto_pub, mosquitto.port, topic, message=payload.decode())

    def told(state: str) -> bool:
        return any(e["state"] == state and e["device"] == "rp-1" for e in events.envelopes)

    async def scenario() -> None:
        async with running(config) as agent:
            mqtt = agent.mqtt
            assert mqtt is not None
            await wait_until(events.ready.is_set, 10, "the alert topic's subscriber")
            # The first message after quiet wakes the idle agent at once; it then waits a batch.
            await publish("elevators/s1/cam-1/heartbeat", heartbeat(int(time.time() * 1000)))
            await wait_until(lambda: mqtt.stored == 1, 30, "the first heartbeat")
            # The rescue point's periodic healthy state is queued, and nothing wakes the agent.
            await publish("rescue/s1/rp-1/state", rescue_state(80))
            await wait_until(lambda: len(mqtt._inbox) == 1, 30, "the healthy state queued")
            assert (mqtt.urgent, mqtt.stored) == (0, 1)
            # The AED battery below its limit: only the alarm's own wake-up brings it in, with
            # the state queued before it, in a minute's batch.
            await publish("rescue/s1/rp-1/state", rescue_state(10))
            await wait_until(lambda: told("firing"), 20, "the alarm's event on the alert topic")
            assert (mqtt.urgent, mqtt.stored) == (1, 3)
            # Back above the limit: the alarm cleared, told at once too.
            await publish("rescue/s1/rp-1/state", rescue_state(90))
            await wait_until(lambda: told("resolved"), 20, "the clearing's event on the alert topic")
            assert (mqtt.urgent, mqtt.stored) == (2, 4)

    try:
        asyncio.run(scenario())
    finally:
        events.close()
