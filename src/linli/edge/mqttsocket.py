"""A paho-mqtt client that reads its socket through a buffer and takes PUBLISH packets in batches.

paho reads every packet with at least three recv() calls (the command byte, each byte of
the remaining length, then the body), so at 20,000 messages/s the receive thread makes
60,000 system calls a second and gives up the GIL at each, waiting to get it back from
the agent's other threads. Reading 256 KiB at a time and serving paho's small reads from
memory removes nearly all of them. paho already supports socket wrappers that hold data
of their own (TLS sockets do): when `pending()` is non-zero it reads instead of waiting
in select(), so no buffered message is ever left waiting for more bytes to arrive. A TLS
socket is buffered the same way: it hands over one TLS record (16 KiB at most) per read, so
each refill reads records until none is waiting or the buffer is full.

Then paho spends some 20 µs on each PUBLISH: a dict of read state, a packet object, a
message object, a debug log call and a callback lookup. When a batch hook is set, whole
MQTT 3.1.1 PUBLISH packets (QoS 0 and 1) already in the buffer are decoded here instead,
in about 1 µs each, and handed over as one list. Everything else (acknowledgements,
QoS 2, packets cut off at the end of a read, MQTT 5) goes through paho unchanged.

At light load every message would wake the receive thread on its own: 2,000 devices' messages
a second, each a TCP segment of its own, cost paho's loop 2,000 turns a second, and each turn
costs a few hundred microseconds of CPU, far more than the message. After a read that found
little, the next one comes `coalesce_s` after it at the soonest (the agent's `[mqtt] batch_ms`,
as long as its asyncio side waits between batches anyway; 20 ms where it watches for alarms,
see urgency), so the thread reads at most that often and each message waits at most that long
more. The time is counted from the end of the last read's handling (`handled`), not from the
socket's wakeup: a message that comes `coalesce_s` or more after it (an alarm at 10 a second,
or after a quiet spell) is read at once, and a stream is read as often as when each read waited
`coalesce_s` after the wakeup. A large read is followed at once by the next: under load nothing
waits.

All this reads and overrides names private to paho-mqtt (`_sock`, `_in_packet`, ...), as
paho-mqtt 2.2 has them; pyproject pins that minor version. A client checks them when it is
made: if one is missing (another paho), it logs a warning once and leaves every packet to paho's
own reading and decoding, slower but correct.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import paho.mqtt.client as paho
import paho.mqtt.enums as paho_enums
from paho.mqtt.enums import MQTTErrorCode

log = logging.getLogger(__name__)

READ_SIZE = 262_144
# A read of less than this (a few dozen messages) means light load: the next read comes
# `coalesce_s` after it at the soonest.
COALESCE_BELOW = 16_384
# Packets handled per loop_read() at most, so that a flood still leaves paho time to send
# acknowledgements and keepalives.
MAX_PACKETS_PER_READ = 1000

# The names of paho-mqtt 2.2 this module reads or overrides on its client, and on its messages
# (`topic_bytes`); checked when a client is made (`missing_paho_names`).
CLIENT_NAMES = (
    "_sock",
    "_in_packet",
    "_protocol",
    "_state",
    "_last_bytes_received",
    "_create_socket",
    "_sock_close",
)
MESSAGE_NAMES = ("_topic",)
_DISCONNECTING = getattr(getattr(paho_enums, "_ConnectionState", None), "MQTT_CS_DISCONNECTING", None)
# The sets of missing names already warned about: once each per process.
_warned: set[tuple[str, ...]] = set()

# topic (raw bytes), payload, QoS, retained, packet id (0 at QoS 0)
Publish = tuple[bytes, bytes, int, bool, int]
PublishBatch = Callable[[list[Publish]], None]


class BufferedSocket:
    """A plain TCP socket whose reads are served from a buffer; everything else passes through."""

    def __init__(self, sock: socket.socket, coalesce_s: float = 0.0) -> None:
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._buf = b""
        self._pos = 0
        self._coalesce_s = coalesce_s
        self._last_read = READ_SIZE
        self._last_at = float("-inf")  # when the last read was refilled, or handled (time.monotonic)
        self._scratch = bytearray(READ_SIZE)
        self._view = memoryview(self._scratch)
        # The end of the stream (b"") or an error an early read (`refill`) met, for paho's next
        # recv: it hears it at once, not after another wait and read.
        self._met: bytes | OSError | None = None

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes; one system call refills the buffer only when it is empty."""
        if self._pos >= len(self._buf):
            if self._met is not None:
                met, self._met = self._met, None
                if isinstance(met, OSError):
                    raise met
                return met
            if self._coalesce_s and self._last_read < COALESCE_BELOW:
                # Light load: one read a coalesce_s at most; what waited in select has waited.
                wait = self._last_at + self._coalesce_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            self._last_at = time.monotonic()
            # BlockingIOError (SSLWantReadError under TLS) passes to paho.
            data = self._read(max(bufsize, READ_SIZE))
            if self._tls and data:
                data = self._more_records(data)
            self._last_read = len(data)
            if len(data) <= bufsize:
                return data  # also b"" at end of stream: paho sees the connection lost
            self._buf, self._pos = data, 0
        start = self._pos
        self._pos = min(start + bufsize, len(self._buf))
        return self._buf[start : self._pos]

    def refill(self) -> None:
        """Read now what paho's next recv would, waiting as it would, and keep it all buffered.
        The end of the stream or an error met is kept for that recv (see `_met`).
        BlockingIOError (SSLWantReadError under TLS) passes: nothing had come after all."""
        if self._pos < len(self._buf) or self._met is not None:
            return
        try:
            self.recv(0)  # what it read stays buffered
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except OSError as exc:
            self._met = exc
            return
        if self._pos >= len(self._buf):  # nothing buffered after a read: the end of the stream
            self._met = b""

    def handled(self) -> None:
        """What the last read brought is handled: a wait before the next one counts from now,
        so that a stream is read no more often than when each read waited after its wakeup."""
        self._last_at = time.monotonic()

    def _read(self, size: int) -> bytes:
        """One read of up to `size` bytes, into memory kept from read to read.

        socket.recv(256 KiB) makes a new 256 KiB object at every call, about 50 µs even when
        a few hundred bytes came: at light load, more than the messages cost.
        """
        if size > len(self._scratch):
            return self._sock.recv(size)
        n = self._sock.recv_into(self._scratch, size)
        return bytes(self._view[:n])

    def _more_records(self, data: bytes) -> bytes:
        """The TLS records already arrived after the first, without waiting for more."""
        chunks, size = [data], len(data)
        while size < READ_SIZE:
            try:
                more = self._sock.recv(READ_SIZE - size)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except OSError as exc:  # paho hears it once it has the records that came before
                self._met = exc
                break
            if not more:
                self._met = b""  # the end of the stream, likewise
                break
            chunks.append(more)
            size += len(more)
        return b"".join(chunks)

    def pending(self) -> int:
        """Bytes already read from the socket (or decrypted by TLS) and not yet handed to paho;
        1 more for an end or an error kept for paho's next recv (`_met`), so that paho reads it
        rather than wait in select() on a socket that may have nothing more to say (TLS)."""
        ours = len(self._buf) - self._pos + (self._met is not None)
        return ours + self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else ours

    def take_publishes(self, limit: int) -> list[Publish]:
        """Decode the whole QoS 0/1 PUBLISH packets at the front of the buffer, `limit` at most.

        Stops at the first packet of another kind, one not wholly buffered, or one that
        breaks the protocol, and leaves it for paho, which handles or reports it.
        """
        buf, pos, end = self._buf, self._pos, len(self._buf)
        out: list[Publish] = []
        while len(out) < limit and pos + 2 <= end:
            header = buf[pos]
            if header >> 4 != 3 or header & 0x06 > 0x02:  # not a PUBLISH, or QoS 2 (or 3)
                break
            # The remaining length: 1 to 4 bytes of 7 bits each; a message of the usual few
            # hundred bytes has two, read without the loop (this runs for every message).
            byte = buf[pos + 1]
            if byte < 0x80:
                length, i = byte, pos + 2
            elif pos + 2 < end and buf[pos + 2] < 0x80:
                length, i = (byte & 0x7F) | buf[pos + 2] << 7, pos + 3
            else:
                length, shift, i = 0, 0, pos + 1
                while True:
                    if i >= end or i - pos > 4:
                        return self._taken(out, pos)
                    byte = buf[i]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not byte & 0x80:
                        break
            body_end = i + length
            if body_end > end or length < 2:
                break  # not wholly here, or too short for a topic: paho reads or reports it
            qos = (header >> 1) & 0x03
            topic_end = i + 2 + (buf[i] << 8 | buf[i + 1])
            payload_start = topic_end + 2 if qos else topic_end
            if topic_end == i + 2 or payload_start > body_end:
                break  # an empty topic or a short packet: paho reports it
            mid = buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0
            out.append((buf[i + 2 : topic_end], buf[payload_start:body_end], qos, bool(header & 1), mid))
            pos = body_end
        return self._taken(out, pos)

    def _taken(self, out: list[Publish], pos: int) -> list[Publish]:
        self._pos = pos
        return out

    def __getattr__(self, name: str) -> Any:
        # send, fileno, setblocking, close, ...: the socket's own.
        return getattr(self._sock, name)


def missing_paho_names(client: paho.Client) -> list[str]:
    """The private names of paho this module relies on that `client` (and its messages) lack."""
    missing = [name for name in CLIENT_NAMES if not hasattr(client, name)]
    packet = getattr(client, "_in_packet", None)
    if isinstance(packet, dict) and "command" not in packet:
        missing.append("_in_packet['command']")
    message = paho.MQTTMessage()
    missing += [f"MQTTMessage.{name}" for name in MESSAGE_NAMES if not hasattr(message, name)]
    if _DISCONNECTING is None:
        missing.append("enums._ConnectionState.MQTT_CS_DISCONNECTING")
    return missing


def topic_bytes(msg: paho.MQTTMessage) -> bytes:
    """A message's topic as it came: paho's `topic` raises on invalid UTF-8, its `_topic` does not."""
    raw = getattr(msg, "_topic", None)
    if isinstance(raw, bytes):
        return raw
    try:
        return msg.topic.encode()
    except UnicodeDecodeError:
        return b"\xff"  # not UTF-8 either way: the receiver takes it for an invalid topic


# How long a graceful close waits for the broker to close its side.
CLOSE_WAIT_S = 2.0


class BufferedClient(paho.Client):
    """paho's client with a buffered TCP or TLS socket (websockets are left as they are).

    `on_publishes`, when set, receives the PUBLISH packets decoded from the buffer in
    batches; `on_message` still receives the ones paho decodes itself, and every one when
    this paho lacks a name the buffering needs (`fast` is then False).
    """

    on_publishes: PublishBatch | None = None
    # The least time from a small read to the next (see the module's doc); 0: no wait at all.
    coalesce_s = 0.1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = tuple(missing_paho_names(self))
        self.fast = not missing
        if missing and missing not in _warned:
            _warned.add(missing)
            log.warning(
                "mqtt: paho-mqtt %s lacks %s, which linli's fast MQTT reads need (written for "
                "paho-mqtt 2.2): paho reads and decodes every message itself, some 15 times the CPU",
                version("paho-mqtt"),
                ", ".join(missing),
            )

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every packet already buffered, not one per select() as paho does for QoS 0."""
        sock = self._sock
        if not self.fast or not isinstance(sock, BufferedSocket):
            return super().loop_read(max_packets)
        return self._read_buffered(sock, max_packets)

    def _read_buffered(self, sock: BufferedSocket, max_packets: int) -> MQTTErrorCode:
        if not sock.pending() and self._batching():
            # Refill here, not in paho's read of a packet's first byte, so that the first PUBLISH
            # of a read is decoded with the rest: paho's path and a callback of its own for one
            # message cost more than the rest of a light load's read. The same recv, and wait.
            try:
                sock.refill()
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return MQTTErrorCode.MQTT_ERR_SUCCESS  # nothing after all: as paho's own read
        if not sock.pending():
            # The end of the stream or an error the refill met: paho's first recv hears it.
            return super().loop_read(max_packets)
        rc, handled = MQTTErrorCode.MQTT_ERR_SUCCESS, 0
        while handled < MAX_PACKETS_PER_READ:
            hook = self.on_publishes
            # Between packets only: paho may hold the front of one cut off at a refill.
            if hook is not None and self._batching():
                batch = sock.take_publishes(MAX_PACKETS_PER_READ - handled)
                if batch:
                    handled += len(batch)
                    # What paho's keepalive check reads: the broker is talking.
                    self._last_bytes_received = time.monotonic()
                    hook(batch)
            if not sock.pending() or handled >= MAX_PACKETS_PER_READ:
                break
            rc = super().loop_read(max_packets)
            handled += 1
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is not sock:
                break
        sock.handled()
        return rc

    def _batching(self) -> bool:
        """Whether buffered PUBLISH packets go to `on_publishes`: set, between packets, not MQTT 5."""
        return (
            self.on_publishes is not None
            and self._in_packet["command"] == 0
            and self._protocol != paho.MQTTv5
        )

    def _sock_close(self) -> None:
        """After our DISCONNECT, close gracefully: half-close, then read to the broker's EOF.

        Closing a socket with unread bytes in it (a PUBACK for a dead letter, a message that
        was on its way) makes the kernel send a reset, and the broker's kernel then drops
        what it had not yet read from us: the last PUBACKs and the DISCONNECT. The broker
        would send those messages again at the next start.
        """
        sock = self._sock
        if isinstance(sock, BufferedSocket) and self._state == _DISCONNECTING:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + CLOSE_WAIT_S
                while (left := deadline - time.monotonic()) > 0:
                    if select.select([sock], [], [], left)[0] and not sock.recv(READ_SIZE):
                        break
        super()._sock_close()

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if not self.fast:
            return sock
        if type(sock) is socket.socket or isinstance(sock, ssl.SSLSocket):
            return BufferedSocket(sock, self.coalesce_s)
        return sock
