"""The whole district from one scenario: Modbus servers and MQTT devices, moving together.

Modbus devices are served on consecutive TCP ports from a base port (gateways share
one port, a unit id per sensor); MQTT devices each hold their own broker connection
with a last-will on their status topic, as real ones do. Every MQTT message can be
journaled to a file, so a test knows exactly what went over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from linli.catalog.mqttclient import MqttBroker, Will, make_client
from linli.catalog.mqttspec import MqttMessage
from linli.catalog.scenario import PlacedDevice, Scenario, builtin_scenario_path, expand
from linli.catalog.tls import apply_tls
from linli.sim.bookings import BookingAgent
from linli.sim.clock import SimClock
from linli.sim.context import DeviceContext, MqttBehaviour, kind_faults, kind_module
from linli.sim.fleet import run_servers
from linli.sim.modbus_server import DeviceServer, Fault, Served, SimulatedDevice
from linli.sim.timetable import Traffic
from linli.transit.gtfs import Feed, GtfsError, load_feed

log = logging.getLogger(__name__)

OFFLINE = "offline"


@dataclass(frozen=True)
class FaultSpec:
    """`name` injected into the devices `target` names: a site, or site/device."""

    target: str
    name: str

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        target, sep, name = text.rpartition(":")
        if not sep or not target or not name:
            raise ValueError(
                f"fault '{text}': expected TARGET:NAME, e.g. ronghua-1:offline or hongxu-tower:leak"
            )
        return cls(target, name)

    def matches(self, device: PlacedDevice) -> bool:
        return self.target in (device.site, f"{device.site}/{device.device}")


def resolve_faults(
    devices: list[PlacedDevice], faults: Iterable[FaultSpec]
) -> dict[tuple[str, str], frozenset[str]]:
    """Faults per device; ValueError when a fault matches no device that understands it."""
    out: dict[tuple[str, str], set[str]] = {}
    for fault in faults:
        hit = [d for d in devices if fault.matches(d)]
        if not hit:
            raise ValueError(f"fault '{fault.target}:{fault.name}': no site or site/device '{fault.target}'")
        able = [d for d in hit if fault.name == OFFLINE or fault.name in kind_faults(d.kind)]
        if not able:
            known = sorted({n for d in hit for n in kind_faults(d.kind)} | {OFFLINE})
            raise ValueError(
                f"fault '{fault.name}' does not apply to '{fault.target}'; it knows: {', '.join(known)}"
            )
        for d in able:
            out.setdefault((d.site, d.device), set()).add(fault.name)
    return {k: frozenset(v) for k, v in out.items()}


def context(
    scenario: Scenario,
    device: PlacedDevice,
    start: float,
    faults: frozenset[str],
    *,
    timetable: Feed | None = None,
    traffic: Traffic | None = None,
) -> DeviceContext:
    """The device's context; trucks need the `timetable` they run."""
    return DeviceContext(
        site=device.site,
        device=device.device,
        index=device.index,
        seed=f"{scenario.seed}:{device.site}:{device.device}",
        start=start,
        faults=faults - {OFFLINE},
        options=device.group.options,
        timetable=timetable,
        traffic=traffic or Traffic(seed=scenario.seed),
    )


@dataclass
class MqttSimDevice:
    """One MQTT device model and its own broker connection."""

    placed: PlacedDevice
    behaviour: MqttBehaviour
    client: paho.Client | None = None
    pending: list[paho.MQTTMessageInfo] = field(default_factory=list)

    def topic(self, template: str) -> str:
        return template.format(site=self.placed.site, device=self.placed.device)


@dataclass
class Placed:
    """One device as started: where it is, its model, and how it is served (None: powered off)."""

    placed: PlacedDevice
    model: Any
    served: Served | MqttSimDevice | None


@dataclass
class District:
    """Everything the scenario starts."""

    servers: list[DeviceServer]
    mqtt_devices: list[MqttSimDevice]
    silent_mqtt: int = 0
    devices: list[Placed] = field(default_factory=list)

    def strike(self, fault: FaultSpec, publisher: MqttPublisher | None) -> list[str]:
        """`fault` from now on, while the district runs (in its event loop); the devices it hit
        as site/device. ValueError, as for a fault from the start, when it hits none."""
        hit = resolve_faults([d.placed for d in self.devices], [fault])
        out = []
        for d in self.devices:
            if (d.placed.site, d.placed.device) not in hit:
                continue
            out.append(f"{d.placed.site}/{d.placed.device}")
            if fault.name == OFFLINE:
                if isinstance(d.served, Served):
                    d.served.fault = Fault.SILENT
                elif isinstance(d.served, MqttSimDevice) and publisher is not None:
                    publisher.silence(d.served)
                continue
            names = frozenset({fault.name})
            if callable(getattr(d.model, "strike", None)):
                d.model.strike(names)  # a truck: its trips are driven again
            elif callable(getattr(d.model, "inject", None)):
                d.model.inject(d.model.faults | names)
            else:
                d.model.faults = d.model.faults | names  # read at every step
            if isinstance(d.served, Served):
                d.served.invalidate()
        return out


def load_timetable(scenario: Scenario, override: Path | None = None) -> Feed | None:
    """The GTFS timetable the scenario's trucks run, None if it has no trucks.

    ValueError says which file or key is wrong and what to do about it.
    """
    if not any(g.kind == "truck" for g in scenario.groups):
        return None
    folder = override or (Path(scenario.timetable) if scenario.timetable else None)
    where = "--gtfs" if override else f"scenario '{scenario.name}', key timetable"
    if folder is None:
        raise ValueError(
            f"scenario '{scenario.name}' has trucks but no timetable: set timetable = \"DIR\" "
            "(a GTFS folder) or pass --gtfs DIR"
        )
    if not folder.is_dir() and override is None and not folder.is_absolute():
        # Installed, not cloned: the built-in timetables ship beside the built-in scenarios.
        shipped = builtin_scenario_path().parent / "gtfs" / folder.name
        folder = shipped if shipped.is_dir() else folder
    if not folder.is_dir():
        raise ValueError(f"{where}: {folder} is not a folder (from {Path.cwd()}); pass --gtfs DIR")
    try:
        return load_feed(folder)
    except GtfsError as exc:
        raise ValueError(f"{where}: {exc}") from None


def build_district(
    scenario: Scenario,
    *,
    clock: SimClock,
    host: str,
    modbus_port: int,
    faults: Iterable[FaultSpec] = (),
    timetable: Feed | None = None,
    traffic: Traffic | None = None,
) -> District:
    """Instantiate every device at `clock.start`; nothing listens or connects yet."""
    devices = expand(scenario)
    fault_map = resolve_faults(devices, faults)
    by_port: dict[int, list[Served]] = {}
    mqtt_devices: list[MqttSimDevice] = []
    started: list[Placed] = []
    silent = 0
    for placed in devices:
        injected = fault_map.get((placed.site, placed.device), frozenset())
        model = kind_module(placed.kind).make(
            context(scenario, placed, clock.start, injected, timetable=timetable, traffic=traffic)
        )
        if placed.port is not None:
            assert placed.unit is not None
            fault = Fault.SILENT if OFFLINE in injected else Fault.NONE
            device: SimulatedDevice = model
            served = Served(device, unit=placed.unit, fault=fault)
            by_port.setdefault(placed.port, []).append(served)
            started.append(Placed(placed, model, served))
        elif OFFLINE in injected:
            silent += 1  # powered off: never connects
            started.append(Placed(placed, model, None))
        else:
            mqtt_devices.append(MqttSimDevice(placed, model))
            started.append(Placed(placed, model, mqtt_devices[-1]))
    servers = [
        DeviceServer(host, modbus_port + offset, served, clock) for offset, served in sorted(by_port.items())
    ]
    return District(servers, mqtt_devices, silent, started)


def _user(dev: MqttSimDevice) -> str:
    """The device's broker identity (see `linli.cloud.broker.identities.device`)."""
    return f"device/{dev.placed.site}/{dev.placed.device}"


class MqttPublisher:
    """Connects the MQTT devices and publishes what they say, journaling every message."""

    def __init__(
        self,
        devices: list[MqttSimDevice],
        broker: MqttBroker,
        *,
        identities: dict[str, str] | None = None,
        journal: IO[str] | None = None,
    ) -> None:
        """`identities` (from `linli broker config`) gives each device its own user name and
        password; without them, every device connects with the broker's (from its environment)."""
        self.devices = devices
        self.broker = broker
        self.identities = identities
        if identities is not None:
            missing = [_user(d) for d in devices if _user(d) not in identities]
            if missing:
                raise ValueError(
                    f"no broker identity for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: "
                    "run `linli broker config` with the edge config that lists these devices"
                )
        if broker.tls is not None:
            apply_tls(paho.Client(CallbackAPIVersion.VERSION2), broker.tls)  # a missing file is named now
        self.journal = journal
        self.published = 0
        # Message specs by name, per device, looked up on every publish.
        self._messages: list[dict[str, MqttMessage]] = []
        for dev in devices:
            spec = dev.behaviour.profile.mqtt
            assert spec is not None, f"{dev.placed.kind} is not an MQTT device"
            self._messages.append({m.name: m for m in spec.messages})

    def connect(self) -> None:
        """Connect every device; ConnectionError names the broker when it cannot be reached."""
        for dev in self.devices:
            spec = dev.behaviour.profile.mqtt
            assert spec is not None
            # A device with an identity may connect only with it as its client id (docs/security.md).
            own = _user(dev) if self.identities is not None else f"sim-{dev.placed.site}-{dev.placed.device}"
            identity = (_user(dev), self.identities[_user(dev)]) if self.identities is not None else None
            will = Will(dev.topic(spec.status_topic), spec.offline) if spec.status_topic else None
            client = make_client(self.broker, own, will=will, credentials=identity)
            try:
                client.reconnect()
            except OSError as exc:
                b = self.broker
                raise ConnectionError(f"cannot reach the MQTT broker at {b.host}:{b.port}: {exc}") from exc
            on_order = getattr(dev.behaviour, "on_order", None)
            if on_order is not None:
                # A truck on call hears the platform's orders on its own topic.
                client.on_message = lambda _c, _u, m, take=on_order: take(json.loads(m.payload))
                client.subscribe(dev.topic("trucks/{site}/{device}/order"), qos=1)
            client.loop_start()
            if spec.status_topic:
                client.publish(dev.topic(spec.status_topic), spec.online, qos=1, retain=True)
            dev.client = client

    def silence(self, dev: MqttSimDevice) -> None:
        """The device loses power: its status goes offline (as its last will would say, which a
        clean disconnect does not send) and it publishes nothing more."""
        spec = dev.behaviour.profile.mqtt
        if dev.client is None or spec is None:
            return
        if spec.status_topic:
            dev.client.publish(
                dev.topic(spec.status_topic), spec.offline, qos=1, retain=True
            ).wait_for_publish(10)
        dev.client.disconnect()
        dev.client.loop_stop()
        dev.client = None

    def publish_until(self, t: float) -> int:
        """Advance every device to simulated time t and publish its messages; returns how many."""
        n = 0
        for dev, messages in zip(self.devices, self._messages, strict=True):
            if dev.client is None:
                continue  # powered off while running
            dev.pending = [info for info in dev.pending if not info.is_published()]
            for name, payload in dev.behaviour.advance_to(t):
                message = messages[name]
                self.send(dev, dev.topic(message.topic), payload, message.qos)
                n += 1
        self.published += n
        return n

    def send(self, dev: MqttSimDevice, topic: str, payload: dict[str, Any], qos: int) -> None:
        assert dev.client is not None
        body = json.dumps(payload, separators=(",", ":"))
        info = dev.client.publish(topic, body, qos=qos)
        if qos:
            dev.pending.append(info)
        if self.journal is not None:
            self.journal.write(json.dumps({"topic": topic, "qos": qos, "payload": payload}) + "\n")

    def close(self, timeout: float = 10.0) -> None:
        """Wait for unacknowledged QoS 1 messages, then disconnect cleanly."""
        for dev in self.devices:
            for info in dev.pending:
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout)
            if dev.client is not None:
                dev.client.disconnect()
                dev.client.loop_stop()
        if self.journal is not None:
            self.journal.flush()


async def run_district(
    district: District,
    publisher: MqttPublisher | None,
    clock: SimClock,
    stop: asyncio.Event,
    *,
    tick_s: float = 1.0,
    started: asyncio.Event | None = None,
    bookings: BookingAgent | None = None,
) -> None:
    """Serve and publish until `stop`; every tick moves all devices to the present."""
    if publisher is None:
        await run_servers(district.servers, stop, tick_s, started, clock=clock)
        return
    await asyncio.to_thread(publisher.connect)
    loop = asyncio.get_running_loop()

    def tick() -> None:
        now = clock.now()
        publisher.publish_until(now)
        if bookings is not None:
            # The service's API answers in its own time: never in the devices' tick.
            loop.run_in_executor(None, bookings.step, now)

    try:
        await run_servers(district.servers, stop, tick_s, started, on_tick=tick, clock=clock)
    finally:
        await asyncio.to_thread(publisher.close)


def open_journal(path: Path | None) -> IO[str] | None:
    return path.open("a", encoding="utf-8") if path is not None else None
