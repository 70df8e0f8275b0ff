"""A charger port overheats: the edge stops it through its stop coil, alerts, and sees it cool.

Real peers: the charger simulator over Modbus TCP, Mosquitto for the alert events and the
agent's last will, VictoriaMetrics for the stored events.
"""

from __future__ import annotations

import asyncio
import json
import threading
import tomllib
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

from linli.catalog.alerts import AlertMessage
from linli.catalog.profile import get_profile
from linli.demo.servers import LocalServer, free_port
from linli.edge.agent import Agent
from linli.edge.alerting import RESOLVED_RESENDS, Alerting, Interlock
from linli.edge.config import EdgeConfig, InterlockConfig
from support import http_get, start_sim, stop_process, unique, wait_until

MANUAL = 3  # the charger profile's stop reason for a stop-coil write


# How long the edge waits for the station's answer, and so how often it polls (a timeout may not
# exceed the interval). 0.4 s was a figure of the machine: under load an answer, the stop coil's
# write among them, came later, the write counted as failed and was made again at a later poll,
# so the stop was no longer in the poll that saw the breach. An answer in time comes at once.
POLL_S = 5.0


def config(*, store: str, broker: int, charger: int, agent: str) -> EdgeConfig:
    text = f"""
[agent]
name = "{agent}"

[writer]
kind = "influxdb2"
url = "{store}"
org = "linli"
bucket = "linli"
flush_interval = 0.2
retry_max = 1

[alerts]
host = "127.0.0.1"
port = {broker}

[[interlocks]]
field = "temperature"
above = 90
hysteresis = 5

[[interlocks]]
field = "smoke_alarm"
above = 0.5

[[sites]]
id = "ronghua-1"
name = "荣华居民区"

[[sites.devices]]
id = "station-1"
name = "3号楼车棚充电桩"
profile = "charger"
port = {charger}
interval = {POLL_S}
timeout = {POLL_S}
"""
    return EdgeConfig.model_validate(tomllib.loads(text))


class Inbox:
    """Everything the broker delivers on the alert and edge-status topics."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("inbox"))
        self.client.on_connect = lambda c, *_: c.subscribe([("linli/alerts/#", 1), ("linli/edges/#", 1)])
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def alerts(self) -> list[AlertMessage]:
        with self.lock:
            return [
                AlertMessage.model_validate_json(p)
                for t, p, _ in self.messages
                if t.startswith("linli/alerts/")
            ]

    def status(self, agent: str) -> list[str]:
        with self.lock:
            return [p.decode() for t, p, _ in self.messages if t == f"linli/edges/{agent}"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def port_1(port: int) -> tuple[int, int, float]:
    """(state, stop reason, temperature) of the station's port 1, read as any Modbus client would."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=POLL_S)
    await client.connect()
    try:
        resp = await client.read_input_registers(100, count=9, device_id=1)
        regs = resp.registers
        return regs[0], regs[1], regs[8] / 10
    finally:
        client.close()


def test_an_overheating_port_is_stopped_alerted_and_resolved_as_it_cools(
    mosquitto: LocalServer, victoria: LocalServer
) -> None:
    charger = free_port()
    # Port 1 has a loose contact and a bike on it: about 15 simulated minutes to 90 degC.
    sim = start_sim("charger", "--port", str(charger), "--time-scale", "100", "--fault", "1:overheat")
    agent_name = unique("edge")
    inbox = Inbox(mosquitto.port)
    try:
        assert inbox.ready.wait(10)
        cfg = config(store=victoria.url, broker=mosquitto.port, charger=charger, agent=agent_name)

        async def scenario() -> tuple[int, int, float]:
            agent = Agent(cfg)
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                await wait_until(
                    lambda: "online" in inbox.status(agent_name), 60, "the agent's online status"
                )

                def temperature_steps() -> list[str]:
                    return [str(a.state) for a in inbox.alerts() if a.rule == "charger.temperature.above"]

                await wait_until(
                    lambda: "resolved" in temperature_steps(), 60, "the port to overheat and cool"
                )
                return await port_1(charger)
            finally:
                stop.set()
                assert await task

        state, reason, temperature = asyncio.run(scenario())
    finally:
        stop_process(sim)
        inbox.close()
    alerts = inbox.alerts()
    temp = [a for a in alerts if a.rule == "charger.temperature.above"]
    lock = [a for a in alerts if a.rule == "interlock.charger.temperature"]
    assert [(str(a.state), a.port) for a in temp] == [("firing", "1"), ("resolved", "1")]
    assert [str(a.state) for a in lock[:1]] == ["firing"]
    fired, stopped, resolved = temp[0], lock[0], temp[1]
    assert fired.value is not None
    assert fired.value > 90
    assert fired.severity == "critical"
    # The stop went out in the poll that saw the breach: the same reading, the same time.
    assert stopped.time_ms == fired.time_ms
    assert stopped.port == "1"
    assert resolved.value is not None
    assert resolved.value < 85  # 5 K of hysteresis
    assert resolved.since_ms == fired.time_ms
    # The station took the stop: port 1 idle, stopped by command, cooler than the limit.
    assert (state, reason) == (0, MANUAL)
    assert temperature < 85
    # The agent said goodbye on purpose, and its events are stored for the dashboards.
    assert inbox.status(agent_name)[-1] == "stopped"
    exported = http_get(f"{victoria.url}/api/v1/export?match[]={{__name__=~'alert_.*',device='station-1'}}")
    rules = {json.loads(line)["metric"].get("rule") for line in exported.decode().splitlines()}
    assert {"charger.temperature.above", "interlock.charger.temperature"} <= rules


def test_the_interlock_acts_with_the_uplink_down(mosquitto: LocalServer) -> None:
    """No store, no broker: the port is still stopped, in the same poll."""
    charger = free_port()
    sim = start_sim("charger", "--port", str(charger), "--time-scale", "100", "--fault", "1:overheat")
    dead = free_port()
    cfg = config(store=f"http://127.0.0.1:{dead}", broker=dead, charger=charger, agent=unique("edge"))
    try:

        async def scenario() -> tuple[int, int, float]:
            agent = Agent(cfg)
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                acted = lambda: any(e.rule.startswith("interlock.") for e in agent.alerting.events)  # noqa: E731
                await wait_until(acted, 60, "the interlock")
                return await port_1(charger)
            finally:
                stop.set()
                await task  # not everything could be written: the store is down

        state, reason, _ = asyncio.run(scenario())
    finally:
        stop_process(sim)
    assert (state, reason) == (0, MANUAL)


def test_one_stop_per_episode_so_a_technician_s_restart_is_not_fought() -> None:
    profile = get_profile("charger")
    lock = Interlock(
        InterlockConfig(field="temperature", above=90, hysteresis=5),
        profile,
        site="s",
        device="d",
        ports=10,
        edge="e",
    )
    hot: dict[int | None, dict[str, Any]] = {1: {"temperature": 93.0}, 2: {"temperature": 30.0}}
    [first] = lock.check(hot, 1000)
    assert first.coils == [100]  # port 1's stop coil only
    assert first.event.state == "firing"
    # Still hot at the next polls (a technician restarted the port to finish a charge): left alone.
    assert lock.check(hot, 2000) == []
    assert lock.check({1: {"temperature": 88.0}}, 3000) == []  # not yet 5 K below the limit
    [cleared] = lock.check({1: {"temperature": 84.0}}, 4000)
    assert (cleared.coils, cleared.event.state) == ([], "resolved")
    [again] = lock.check(hot, 5000)  # a new episode: act again
    assert again.coils == [100]
    smoke = Interlock(
        InterlockConfig(field="smoke_alarm", above=0.5), profile, site="s", device="d", ports=10, edge="e"
    )
    [all_ports] = smoke.check({None: {"smoke_alarm": 1}}, 1000)
    assert all_ports.coils == [100 + 10 * i for i in range(10)]  # smoke: every port stops


def test_the_edge_announces_firing_alerts_again_and_each_resolution_ten_times() -> None:
    """A notifier that dies holding an event loses it on Mosquitto: the edge's announcements
    tell it late rather than never. Firing alerts are announced for as long as they fire."""
    config = EdgeConfig.model_validate(
        {
            "agent": {"name": "announcing"},
            "writer": {"kind": "influxdb2", "url": "http://127.0.0.1:9", "org": "o", "bucket": "b"},
            "alerts": {"publish": False},
            "sites": [{"id": "s", "devices": [{"id": d, "profile": "rescue_point"} for d in "ab"]}],
        }
    )
    alerting = Alerting(config, lambda _lines: None)

    def battery(device: str, percent: float) -> None:
        alerting.observe("rescue_point", {"site": "s", "device": device}, {"aed_battery": percent}, 1_000)

    battery("a", 10)
    battery("b", 10)
    battery("b", 90)
    states = {e.device: str(e.state) for e, _ in alerting.standing.values()}
    assert states == {"a": "firing", "b": "resolved"}
    # a fires on, and is announced every time; b's resolution is announced ten times.
    counts = [alerting.announce() for _ in range(RESOLVED_RESENDS + 2)]
    assert counts == [2] * RESOLVED_RESENDS + [1, 1]
    assert config.alerts.resend_s == 60.0  # the default
