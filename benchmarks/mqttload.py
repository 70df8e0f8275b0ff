"""A load shaped like a deployment: many devices, each on its own topic, over many connections.

Each device has a kind (truck location, camera heartbeat, rescue-point state), its own topic,
series and payload values, and sends one message every `interval` seconds at a phase of its
own. Devices are spread over publisher connections, `per_connection` on each (down to one).
Every message carries the current clock as its timestamp: its due time in the schedule, which
the publisher keeps to within a tick.

The publisher speaks MQTT 3.1.1 over plain sockets: a Python MQTT client spends ~50 µs of CPU
per publish and would measure itself. Each device's packet is encoded once with fixed-width
slots for the timestamp and one changing value, so a message costs one bytes formatting.
"""

from __future__ import annotations

import math
import random
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Pacing granularity: messages due within one tick go out together, one send per connection.
TICK_S = 0.005


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str) -> bytes:
    # Clean session, no keepalive: the generator never idles long enough to need pings.
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


@dataclass(frozen=True)
class Kind:
    """A device kind: its topic, and how its payload (see TEMPLATES) changes from message to message."""

    name: str
    topic: str
    value: Callable[[int, int], int]  # (device index, message number) -> the changing value
    metric: str  # one field of every message, as VictoriaMetrics names it (counts the points)
    filter: str  # the subscription that takes every message of this kind


def _truck(i: int) -> bytes:
    wastes = ("wet", "dry", "recyclable", "hazardous", "renovation")
    body = (
        f'{{"ts":%13d,"waste_type":"{wastes[i % 5]}","route":"r-{i % 97}","lat":{31.1 + i * 1e-5:.5f},'
        f'"lon":{121.3 + i * 1e-5:.5f},"speed":%5d,"heading":{i % 360},"acc":true,"alarm_flags":0,'
        f'"load_kg":{i % 8000}.5}}'
    )
    return body.encode()


def _camera(i: int) -> bytes:
    body = (
        '{"ts":%13d,"uptime_s":%10d,'
        f'"detections_today":{i % 40},"interceptions_today":{i % 7},"door_holds_today":{i % 3}}}'
    )
    return body.encode()


def _rescue(i: int) -> bytes:
    body = (
        '{"ts":%13d,"aed_battery":%3d,'
        f'"door_open":false,"equipment_present":true,"last_inspection":"2026-{1 + i % 12:02d}-15"}}'
    )
    return body.encode()


KINDS = {
    "truck": Kind(
        "truck",
        "trucks/{site}/truck-{i}/location",
        lambda i, n: (i * 7 + n * 13) % 120,
        "truck_lat",
        "trucks/#",
    ),
    "camera": Kind(
        "camera",
        "elevators/{site}/cam-{i}/heartbeat",
        lambda i, n: 1000 + n,
        "camera_uptime_s",
        "elevators/#",
    ),
    "rescue_point": Kind(
        "rescue_point",
        "rescue/{site}/rp-{i}/state",
        lambda i, n: 100 - (i + n) % 80,
        "rescue_point_aed_battery",
        "rescue/#",
    ),
}
TEMPLATES: dict[str, Callable[[int], bytes]] = {"truck": _truck, "camera": _camera, "rescue_point": _rescue}
DEVICES_PER_SITE = 100


@dataclass
class Device:
    kind: Kind
    index: int  # within its kind
    site: str
    topic: str
    prefix: bytes  # the PUBLISH fixed header and topic, for this device's fixed packet length
    template: bytes
    phase_s: float
    connection: int


@dataclass
class Fleet:
    """Devices of several kinds, each sending every `intervals[kind]` seconds."""

    counts: dict[str, int]
    intervals: dict[str, float]
    per_connection: int
    qos: int
    seed: int = 1
    devices: dict[str, list[Device]] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.devices = {}
        everyone = []
        for name, count in self.counts.items():
            kind = KINDS[name]
            interval = self.intervals[name]
            if interval < 0.001:
                raise ValueError(f"{name}: one message every {interval * 1000:.2f} ms; timestamps are in ms")
            devices = []
            for i in range(count):
                site = f"site-{i // DEVICES_PER_SITE:03d}"
                topic = kind.topic.format(site=site, i=i)
                template = TEMPLATES[name](i)
                length = len(template % (0, 0)) + 2 + len(topic.encode()) + (2 if self.qos else 0)
                prefix = bytes([0x30 | (self.qos << 1)]) + _varint(length) + _utf8(topic)
                devices.append(Device(kind, i, site, topic, prefix, template, rng.random() * interval, 0))
            devices.sort(key=lambda d: d.phase_s)
            self.devices[name] = devices
            everyone.extend(devices)
        # Neighbours in time go on different connections, as unrelated devices would.
        rng.shuffle(everyone)
        for k, dev in enumerate(everyone):
            dev.connection = k // self.per_connection

    @property
    def size(self) -> int:
        return sum(self.counts.values())

    @property
    def connections(self) -> int:
        return math.ceil(self.size / self.per_connection)

    @property
    def rate(self) -> float:
        """Messages per second offered."""
        return sum(n / self.intervals[k] for k, n in self.counts.items())

    def messages(self, hold_s: float) -> int:
        """How many messages a hold of `hold_s` seconds sends (those due before its end)."""
        total = 0
        for name, devices in self.devices.items():
            interval = self.intervals[name]
            total += sum(math.ceil((hold_s - d.phase_s) / interval) for d in devices if d.phase_s < hold_s)
        return total

    def filters(self) -> list[str]:
        return [KINDS[k].filter for k in self.counts]

    def metrics(self) -> list[str]:
        return [KINDS[k].metric for k in self.counts]


def raise_open_files(needed: int) -> None:
    """Raise this process's open-file limit to its hard limit; fail clearly when `needed` is more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if needed > hard:
        raise SystemExit(
            f"mqttload: {needed} connections need {needed} open files, this machine allows {hard} "
            "(ulimit -Hn); put more devices on each connection (--per-connection)"
        )


class Publisher:
    """The fleet's connections; `send` paces its schedule and waits for QoS 1 acknowledgements.

    With `part=(k, n)` it is one of n publishers, each its own process, that share the fleet by
    connection (k, k + n, ...): one Python process cannot offer more than about 20,000
    messages/s on a busy machine, half of what one agent holds.
    """

    def __init__(
        self, fleet: Fleet, port: int, name: str, host: str = "127.0.0.1", part: tuple[int, int] = (0, 1)
    ) -> None:
        self.fleet = fleet
        k, n = part
        if not 0 <= k < n:
            raise ValueError(f"part {k} of {n}")
        mine = [c for c in range(fleet.connections) if c % n == k]
        if not mine:
            raise ValueError(f"part {k} of {n}: the fleet has {fleet.connections} connections")
        # This part's devices, in each kind's phase order, and its connections.
        self.devices = {
            kind: [d for d in devices if d.connection % n == k] for kind, devices in fleet.devices.items()
        }
        raise_open_files(len(mine) + 64)
        self.socks: dict[int, socket.socket] = {}
        for c in mine:
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(connect_packet(f"{name}-{c}"))
            self.socks[c] = sock
        for sock in self.socks.values():
            connack = _read_exact(sock, 4)
            if connack[0] != 0x20 or connack[3] != 0:
                raise ConnectionError(f"broker refused the connection: {connack!r}")
        self.acked = 0
        self.sent = 0

    def messages(self, hold_s: float) -> int:
        """How many messages this publisher's share of a hold of `hold_s` seconds sends."""
        return sum(
            math.ceil((hold_s - d.phase_s) / self.fleet.intervals[kind])
            for kind, devices in self.devices.items()
            for d in devices
            if d.phase_s < hold_s
        )

    def _count_pubacks(self, expected: int, deadline: float) -> None:
        # PUBACK is 4 bytes (0x40 0x02 id id); nothing else arrives on a publish-only link.
        with selectors.DefaultSelector() as sel:
            for sock in self.socks.values():
                sel.register(sock, selectors.EVENT_READ)
            received = 0
            while self.acked < expected and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.5):
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    received += len(chunk)
                self.acked = received // 4

    def send(self, hold_s: float, ack_wait_s: float = 120.0) -> tuple[float, float, int]:
        """Send the schedule for `hold_s` seconds from now.

        Returns (start, end) in monotonic time, end once all is acknowledged for QoS 1, and the
        wall-clock start in ms (every timestamp is that plus the message's due time).
        """
        fleet, qos = self.fleet, self.fleet.qos
        kinds = [(devs, fleet.intervals[k], KINDS[k].value) for k, devs in self.devices.items() if devs]
        cursors = [0] * len(kinds)
        expected = self.messages(hold_s)
        reader = None
        if qos:
            deadline = time.monotonic() + hold_s + ack_wait_s
            reader = threading.Thread(target=self._count_pubacks, args=(expected, deadline), daemon=True)
            reader.start()
        pids = dict.fromkeys(self.socks, 0)
        start_ms = int(time.time() * 1000)
        started = time.monotonic()
        tick = 0
        while True:
            now = min(time.monotonic() - started, hold_s)
            out: dict[int, list[bytes]] = {}
            for k, (devices, interval, value) in enumerate(kinds):
                n = len(devices)
                j = cursors[k]
                while True:
                    cycle, slot = divmod(j, n)
                    dev = devices[slot]
                    due = cycle * interval + dev.phase_s
                    if due > now or due >= hold_s:
                        break
                    packet = dev.template % (start_ms + int(due * 1000), value(dev.index, cycle))
                    if qos:
                        pid = pids[dev.connection] = pids[dev.connection] % 65535 + 1
                        packet = struct.pack("!H", pid) + packet
                    out.setdefault(dev.connection, []).append(dev.prefix + packet)
                    j += 1
                cursors[k] = j
            for c, packets in out.items():
                self.socks[c].sendall(b"".join(packets))
                self.sent += len(packets)
            if now >= hold_s:
                break
            tick += 1
            delay = started + tick * TICK_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if reader is not None:
            reader.join()
        return started, time.monotonic(), start_ms

    def close(self) -> None:
        for sock in self.socks.values():
            try:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            finally:
                sock.close()


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def parse_every(items: Sequence[str], kinds: Sequence[str], default: float) -> dict[str, float]:
    """`KIND=SECONDS` items as intervals per kind; kinds not named get `default`."""
    intervals = dict.fromkeys(kinds, default)
    for item in items:
        name, sep, seconds = item.partition("=")
        if not sep or name not in intervals:
            raise ValueError(f"--every {item!r}: expected KIND=SECONDS with KIND one of {', '.join(kinds)}")
        try:
            intervals[name] = float(seconds)
        except ValueError:
            raise ValueError(f"--every {item!r}: {seconds!r} is not a number of seconds") from None
        if intervals[name] <= 0:
            raise ValueError(f"--every {item!r}: the interval must be more than 0 s")
    return intervals
