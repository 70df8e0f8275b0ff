"""MQTT devices' health points: written when something changed, else every `health_every`."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from linli.edge import mqtt as mqtt_module
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


def test_a_full_inbox_stops_the_receive_thread_before_any_message_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The receive thread waits for room (its socket unread) rather than decoding messages only
    to drop them; only when nobody takes any for FULL_WAIT_S are QoS 0 ones dropped, and counted."""
    monkeypatch.setattr(mqtt_module, "MAX_INBOX", 10)
    monkeypatch.setattr(mqtt_module, "FULL_WAIT_S", 0.2)
    mqtt = connector()
    first = [(b"elevators/s1/cam-1/heartbeat", b"{}", 0, False, 0)] * 10
    mqtt._on_publishes(first)  # fills it
    blocked = threading.Thread(
        target=mqtt._on_publishes, args=([(b"elevators/s1/cam-1/heartbeat", b"{}", 1, False, 7)],)
    )
    blocked.start()
    blocked.join(0.05)
    assert blocked.is_alive()  # waiting for room, the message not taken
    mqtt._drain_inbox()  # the asyncio side takes the ten
    blocked.join(5)
    assert not blocked.is_alive()
    assert (len(mqtt._inbox), mqtt.overflow) == (1, 0)
    # Nobody takes any: after FULL_WAIT_S the QoS 0 ones beyond the limit go, counted; QoS 1 stay.
    mqtt._on_publishes(first)
    assert (len(mqtt._inbox), mqtt.overflow) == (10, 1)
    mqtt._on_publishes([(b"elevators/s1/cam-1/heartbeat", b"{}", 1, False, 8)])
    assert (len(mqtt._inbox), mqtt.overflow) == (11, 1)


def test_a_batch_already_large_ends_the_wait_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load a batch is handled once FULL_BATCH messages wait, not when batch_ms is up: QoS 1
    messages must be acknowledged before the broker's in-flight window fills."""
    monkeypatch.setattr(mqtt_module, "FULL_BATCH", 10)
    mqtt = connector()
    message = (b"elevators/s1/cam-1/heartbeat", b"{}", 1, False, 7)

    async def scenario() -> None:
        mqtt._loop = asyncio.get_running_loop()
        mqtt._wake = asyncio.Event()
        nap = asyncio.create_task(mqtt._nap(mqtt_module.FULL_BATCH, 60))
        await asyncio.sleep(0)  # the nap begins
        await asyncio.to_thread(mqtt._on_publishes, [message] * 9)
        done, _ = await asyncio.wait([nap], timeout=0.2)
        assert not done  # nine do not end it
        await asyncio.to_thread(mqtt._on_publishes, [message])
        await asyncio.wait_for(nap, 10)  # the tenth does, long before its 60 s

    asyncio.run(scenario())
    assert len(mqtt._inbox) == 10
