"""MQTT devices' health points: written when something changed, else every `health_every`."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from linli.edge import mqttinbox
from linli.edge.config import EdgeConfig
from linli.edge.mqtt import MqttConnector


def connector() -> MqttConnector:
    config = EdgeConfig.model_validate(
        {
            "agent": {"name": "edge-1"},
            "writer": {"kind": "influxdb1", "url": "http://127.0.0.1:9", "database": "x"},
            "mqtt": {"health_interval": 5, "health_every": 60},
            "sites": [
                {
                    "id": "s1",
                    "devices": [{"id": "cam-1", "profile": "camera"}, {"id": "cam-2", "profile": "camera"}],
                }
            ],
        }
    )
    return MqttConnector(config, lambda _lines, _done, _delivered: None)


def heartbeat(ts: int) -> bytes:
    body = {"ts": ts, "uptime_s": 5, "detections_today": 0, "interceptions_today": 0, "door_holds_today": 0}
    return json.dumps(body).encode()


def devices(lines: list[str]) -> dict[str, str]:
    """Device -> its health point's fields."""
    out = {}
    for line in lines:
        series, fields, _ = line.split(" ")
        assert series.startswith("health,")
        tags = dict(t.split("=") for t in series.split(",")[1:])
        out[tags["device"]] = fields
    return out


def test_a_device_s_health_is_written_when_it_changes_and_every_health_every() -> None:
    mqtt = connector()
    now = int(time.time() * 1000)
    # Never written: both, offline.
    first = devices(mqtt.health_lines(now))
    assert set(first) == {"cam-1", "cam-2"}
    assert all(f.startswith("online=0i,") for f in first.values())
    assert mqtt.health_lines(now) == []  # nothing changed
    # Going online is written at once, with the message's line; not again at the next check.
    assert mqtt.handle("elevators/s1/cam-1/heartbeat", heartbeat(now), now) is not None
    online = devices(mqtt._lines)
    assert online["cam-1"].startswith("online=1i,")
    assert mqtt.health_lines(now) == []
    # A new error is written at the next check.
    assert mqtt.handle("elevators/s1/cam-2/heartbeat", b"{not json", now) is None
    errors = devices(mqtt.health_lines(now))
    assert list(errors) == ["cam-2"]
    assert "errors=1i" in errors["cam-2"]
    assert mqtt.health_lines(now) == []
    # A point health_every old is written again, changed or not.
    mqtt.devices[("camera", "s1", "cam-1")].reported.at -= 61
    assert list(devices(mqtt.health_lines(now))) == ["cam-1"]
    # On the way out, every device's last counts.
    assert set(devices(mqtt.health_lines(now, every=True))) == {"cam-1", "cam-2"}


def test_past_a_full_inbox_qos_0_messages_are_shed_at_once_and_counted_by_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receive thread never waits for room (the broker would hold or drop the messages
    uncounted, and the agent take them in bursts): past MAX_INBOX, QoS 0 messages are shed at
    once, by reason; QoS 1 ones stay (the broker's in-flight limit bounds them)."""
    monkeypatch.setattr(mqttinbox, "MAX_INBOX", 10)
    mqtt = connector()
    qos0 = (b"elevators/s1/cam-1/heartbeat", b"{}", 0, False, 0)
    mqtt._on_publishes([qos0] * 8)
    mqtt._on_publishes([qos0] * 3 + [(b"elevators/s1/cam-1/heartbeat", b"{}", 1, False, 7)])
    assert (mqtt.queued, mqtt.shed) == (11, {"inbox_full": 1})
    # Backpressure holds the inbox: what is shed then is for the buffer's sake.
    mqtt.paused = True
    mqtt._on_publishes([qos0] * 2)
    assert (mqtt.queued, mqtt.shed, mqtt.overflow) == (11, {"inbox_full": 1, "buffer_full": 2}, 3)
    # With room, but the oldest waiting for longer than MAX_BEHIND_MS: the agent is behind.
    mqtt.paused = False
    mqtt._inbox = mqtt._inbox[:1]
    mqtt._on_publishes([qos0])
    assert mqtt.queued == 2
    topic, payload, retained, received_ms, mid, qos, connection = mqtt._inbox[0]
    long_ago = received_ms - mqttinbox.MAX_BEHIND_MS - 1
    mqtt._inbox[0] = (topic, payload, retained, long_ago, mid, qos, connection)
    mqtt._on_publishes([qos0] * 2)
    assert (mqtt.queued, mqtt.shed["behind"]) == (2, 2)


def test_a_turn_handles_at_most_max_drain_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full inbox is handled in turns, so the commits and the writer get theirs in between;
    on the way out, all of it at once."""
    monkeypatch.setattr(mqttinbox, "MAX_DRAIN", 4)
    mqtt = connector()
    now = int(time.time() * 1000)
    mqtt._on_publishes([(b"elevators/s1/cam-1/heartbeat", heartbeat(now), 0, False, 0)] * 10)
    mqtt._drain_inbox()
    assert (mqtt.received, mqtt.queued) == (4, 6)
    mqtt._drain_inbox(force=True)
    assert (mqtt.received, mqtt.queued) == (10, 0)


def test_a_batch_already_large_ends_the_wait_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load a batch is handled once FULL_BATCH messages wait, not when batch_ms is up: QoS 1
    messages must be acknowledged before the broker's in-flight window fills."""
    monkeypatch.setattr(mqttinbox, "FULL_BATCH", 10)
    mqtt = connector()
    message = (b"elevators/s1/cam-1/heartbeat", b"{}", 1, False, 7)

    async def scenario() -> None:
        mqtt._loop = asyncio.get_running_loop()
        mqtt._wake = asyncio.Event()
        nap = asyncio.create_task(mqtt._nap(mqttinbox.FULL_BATCH, 60))
        await asyncio.sleep(0)  # the nap begins
        await asyncio.to_thread(mqtt._on_publishes, [message] * 9)
        done, _ = await asyncio.wait([nap], timeout=0.2)
        assert not done  # nine do not end it
        await asyncio.to_thread(mqtt._on_publishes, [message])
        await asyncio.wait_for(nap, 10)  # the tenth does, long before its 60 s

    asyncio.run(scenario())
    assert len(mqtt._inbox) == 10
