"""A load generator that speaks MQTT 3.1.1 over a plain socket, for benchmarks.

A Python MQTT client spends ~50 µs of CPU per publish, so at 20,000 messages/s it needs a
core of its own and the figures measure the publisher. Here every PUBLISH packet is
encoded before the clock starts and sent in paced chunks: the publisher costs a few
percent of a core, and the agent, broker and bare subscriber share the rest.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence


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


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int) -> bytes:
    body = _utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


class Publisher:
    """One connection; `send` paces pre-encoded messages and waits for QoS 1 acknowledgements."""

    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id))
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {connack!r}")
        self.acked = 0
        self._reader: threading.Thread | None = None

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def _count_pubacks(self, expected: int) -> None:
        # PUBACK is 4 bytes (0x40 0x02 id id); nothing else arrives on a publish-only link.
        buffered = 0
        while self.acked < expected:
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            buffered += len(chunk)
            self.acked = buffered // 4

    def send(self, messages: Sequence[tuple[str, bytes]], rate: float, qos: int) -> tuple[float, float]:
        """Send every message at `rate` per second: (start, end) in monotonic time, end once acked for QoS 1.

        The packets are encoded before the start.
        """
        packets = [
            publish_packet(topic, body, qos, k % 65535 + 1) for k, (topic, body) in enumerate(messages)
        ]
        if qos:
            self._reader = threading.Thread(target=self._count_pubacks, args=(len(packets),), daemon=True)
            self._reader.start()
        tick = 0.005
        per_tick = max(1, round(rate * tick))
        started = time.monotonic()
        for i in range(0, len(packets), per_tick):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sock.sendall(b"".join(packets[i : i + per_tick]))
        if self._reader is not None:
            self._reader.join(timeout=120)
        return started, time.monotonic()

    def close(self) -> None:
        self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()
