"""Hostile and broken MQTT input, sent by an independent client (mosquitto_pub): each bad
message reaches the dead-letter topic with its reason, good messages around it are
stored, and the agent keeps going. Liveness: a last-will and silence both mark a
camera offline; it comes back by itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from linli.demo.servers import LocalServer, require_binary
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from support import influx1_create_db, influx1_query, running, unique, wait_until

TS = 1_790_000_000_000


def camera_config(
    influx: LocalServer, db: str, mqtt_port: int, site: str, heartbeat: float = 30.0
) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "agent": {"name": unique("agent")},
            "writer": {"kind": "influxdb1", "url": influx.url, "database": db, "flush_interval": 0.1},
            "mqtt": {"port": mqtt_port, "health_interval": 0.1},
            "sites": [
                {"id": site, "devices": [{"id": "cam-1", "profile": "camera", "heartbeat": heartbeat}]}
            ],
        }
    )


def mosquitto_pub(
    port: int, topic: str, *, message: str | None = None, file: Path | None = None, retain: bool = False
) -> None:
    argv = [require_binary("mosquitto_pub"), "-p", str(port), "-q", "1", "-t", topic]
    argv += ["-f", str(file)] if file is not None else ["-m", message or ""]
    if retain:
        argv.append("-r")
    subprocess.run(argv, check=True, timeout=10)


def detection(ts: int, **changes: Any) -> str:
    payload: dict[str, Any] = {"ts": ts, "object": "ebike", "confidence": 0.8, "floor": 1, "action": "none"}
    payload.update(changes)
    return json.dumps(payload)


class Watcher:
    """A plain subscriber to the dead-letter topic, collecting envelopes."""

    def __init__(self, port: int, topic: str) -> None:
        self.envelopes: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("watcher"))
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda _c, _u, m: self.envelopes.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pub(port: int, topic: str, **kw: Any) -> Callable[[], None]:
    return lambda: mosquitto_pub(port, topic, **kw)


def test_bad_messages_go_to_the_dead_letter_topic_with_their_reason(
    mosquitto: LocalServer, influx1: LocalServer, tmp_path: Path
) -> None:
    db = unique("rejects")
    influx1_create_db(influx1.url, db)
    site = unique("tower")
    config = camera_config(influx1, db, mosquitto.port, site)
    assert config.mqtt is not None
    topic = f"elevators/{site}/cam-1/detection"
    huge = tmp_path / "huge.json"
    huge.write_text(detection(TS, action="x" * 1_000_000))
    bad: list[tuple[str, dict[str, Any], str]] = [
        (topic, {"message": '{"ts": 1790000000000, "object": "eb'}, "malformed"),
        (topic, {"message": detection(TS + 2, confidence="high")}, "invalid"),
        (topic, {"message": detection(TS + 3, floor=2.5)}, "invalid"),
        (topic, {"message": detection(TS + 4, confidence=7.0)}, "out_of_range"),
        (topic, {"file": huge}, "too_large"),
        (f"elevators/{site}/cam-1/firmware", {"message": "{}"}, "unknown_topic"),
        (f"elevators/{site}/cam-9/detection", {"message": detection(TS + 5)}, "unknown_device"),
        (topic, {"message": detection(5)}, "bad_time"),
        # A device clock a year ahead: the timestamp is valid, the clock is not.
        (topic, {"message": detection(int(time.time() * 1000) + 365 * 86_400_000)}, "bad_time"),
        (topic, {"message": detection(TS + 6, confidence=float("nan"))}, "not_finite"),
    ]
    watcher = Watcher(mosquitto.port, f"{config.mqtt.dead_letter_topic}/#")

    async def scenario() -> Agent:
        async with running(config) as agent:
            assert agent.mqtt is not None
            await wait_until(watcher.ready.is_set, 10, "the dead-letter watcher")
            mosquitto_pub(mosquitto.port, topic, message=detection(TS))
            for t, kw, _ in bad:
                await asyncio.to_thread(mosquitto_pub, mosquitto.port, t, **kw)
            mosquitto_pub(mosquitto.port, topic, message=detection(TS + 10))
            await wait_until(lambda: len(watcher.envelopes) >= len(bad), 20, "every dead letter")
            await wait_until(
                lambda: agent.mqtt is not None and agent.mqtt.stored == 2, 10, "both good messages"
            )
        return agent

    try:
        agent = asyncio.run(scenario())
    finally:
        watcher.close()
    assert agent.mqtt is not None
    assert [e["reason"] for e in watcher.envelopes] == [reason for _, _, reason in bad]
    for envelope, (t, _, _) in zip(watcher.envelopes, bad, strict=True):
        assert envelope["topic"] == t
        assert envelope["agent"] == config.agent.name
        assert envelope["detail"]
    big = watcher.envelopes[4]
    assert big["size"] > 1_000_000
    assert big["truncated"] is True
    assert len(big["payload"]) == 4096
    assert "confidence" in watcher.envelopes[1]["detail"]
    rows = influx1_query(influx1.url, db, "SELECT confidence FROM camera")
    assert [r["time"] for r in rows] == [TS, TS + 10]
    # Counted per device and reason in health; unknown topics and devices count for the agent.
    dev = agent.mqtt.devices[("camera", site, "cam-1")]
    assert dev.errors == {
        "malformed": 1,
        "invalid": 2,
        "out_of_range": 1,
        "too_large": 1,
        "bad_time": 2,
        "not_finite": 1,
    }
    assert agent.mqtt.dead_letters["unknown_topic"] == 1
    assert agent.mqtt.dead_letters["unknown_device"] == 1
    health = influx1_query(influx1.url, db, "SELECT last(errors_invalid), last(errors) FROM health")
    assert (health[0]["last"], health[0]["last_1"]) == (2, 8)


def test_a_last_will_or_silence_marks_a_camera_offline_until_it_speaks_again(
    mosquitto: LocalServer, influx1: LocalServer
) -> None:
    db = unique("liveness")
    influx1_create_db(influx1.url, db)
    site = unique("tower")
    config = camera_config(influx1, db, mosquitto.port, site, heartbeat=0.5)
    status = f"elevators/{site}/cam-1/status"
    heartbeat = f"elevators/{site}/cam-1/heartbeat"
    beat = json.dumps(
        {"ts": TS, "uptime_s": 5, "detections_today": 0, "interceptions_today": 0, "door_holds_today": 0}
    )

    async def scenario() -> None:
        async with running(config) as agent:
            assert agent.mqtt is not None
            cam = agent.mqtt.devices[("camera", site, "cam-1")]
            # A camera process with a last-will, as the device holds one: mosquitto_sub stands in.
            camera = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block; waiting is bounded)
                [
                    require_binary("mosquitto_sub"),
                    "-p",
                    str(mosquitto.port),
                    "-t",
                    "nothing",
                    "-i",
                    unique("cam"),
                    "--will-topic",
                    status,
                    "--will-payload",
                    "offline",
                    "--will-qos",
                    "1",
                    "--will-retain",
                ],
            )
            try:
                mosquitto_pub(mosquitto.port, status, message="online", retain=True)
                await wait_until(lambda: cam.online, 10, "online after the status message")
                camera.kill()  # the connection drops without a DISCONNECT: the broker sends the will
            finally:
                camera.wait()
            await wait_until(lambda: not cam.online, 10, "offline from the last will")
            assert cam.status == "offline"
            mosquitto_pub(mosquitto.port, heartbeat, message=beat)
            await wait_until(lambda: cam.online, 10, "online again after a heartbeat")
            # Silence: three missed heartbeats (1.5 s) and the health check marks it offline.
            await wait_until(lambda: not cam.online, 5, "offline after three missed heartbeats")
            await asyncio.sleep(0)
            mosquitto_pub(mosquitto.port, status, message="", retain=True)  # clear the retained status

    asyncio.run(scenario())
    rows = influx1_query(influx1.url, db, "SELECT online FROM health WHERE device = 'cam-1'")
    states = [r["online"] for r in rows]
    # online, offline (will), online (heartbeat), offline (silence), in that order, no flapping.
    changes = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert changes[-4:] == [1, 0, 1, 0], states
