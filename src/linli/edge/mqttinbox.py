"""The MQTT connector's inbox: what paho's receive thread queues and the asyncio side drains.

The receive thread stamps each message and queues it, waking the asyncio side only when it
sleeps for want of messages, when a batch is already large, or for an alarm (see urgency);
past a full inbox, QoS 0 messages are shed and counted by reason. The asyncio side handles a
batch at a time, emits its lines and acknowledges its QoS 1 messages once they are on disk,
each stored once however often the broker sends it (`_once`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial

from linli.edge.alerting import configured_rules
from linli.edge.buffer import DELIVERED_WINDOW
from linli.edge.config import EdgeConfig
from linli.edge.mqttingest import MqttIngest, log
from linli.edge.mqttsocket import Publish
from linli.edge.urgency import Urgency

Done = Callable[[], None]
# Lines, what to call once they are on disk (acknowledging the messages they came from),
# and the QoS 1 messages they came from (`delivered_pairs`), kept with them in the same commit.
Emit = Callable[[list[str], Done | None, bytes], None]
# One QoS 1 message stored: its packet id and the CRC-32 of its line.
PAIR = struct.Struct(">HI")


def delivered_pairs(blobs: Iterable[bytes]) -> dict[int, int]:
    """Packet id -> line CRC of the messages in `blobs`, the later ones winning."""
    out: dict[int, int] = {}
    for blob in blobs:
        for mid, crc in PAIR.iter_unpack(blob):
            out[mid] = crc
    return out


# topic, payload, retained, received (ms since the epoch), packet id, QoS, connection number
Received = tuple[str, bytes, bool, int, int, int, int]

# Queued messages that end the asyncio side's wait for a batch early: under load a batch is
# handled when it is this large, so that QoS 1 messages are acknowledged well before the
# broker's in-flight window (1,000 in linli's broker config) fills and it stops sending.
FULL_BATCH = 500
NEVER = 1 << 62
# Messages queued from the receive thread at most; past it, QoS 0 messages are shed at once and
# counted by reason (QoS 1 ones are bounded by the broker's in-flight limit). Stopping the receive
# thread instead left the broker to drop them uncounted, and the agent taking in bursts.
MAX_INBOX = 100_000
# ... or once the oldest waiting message came this long ago (reason `behind`): the inbox then
# holds at most this much of the agent's own pace, so that it is caught up a few seconds after
# an overload ends, however fast it is (100,000 messages took 25 s to work off on a busy machine).
MAX_BEHIND_MS = 2000
# Messages handled in one turn at most. The writer needs a few turns of the event loop per batch
# (read the buffer, send, drop what was sent), and under load each turn is one of these: a whole
# full inbox in one go held the loop for seconds, and 5,000 still let the writer store only a
# batch a second while the inbox overflowed (docs/benchmarks.md, "Overload").
MAX_DRAIN = FULL_BATCH
# Stands for a topic that is not UTF-8; it matches no route, so the message is dead-lettered.
INVALID_TOPIC = "(invalid UTF-8)"


class MqttInbox(MqttIngest):
    """The queue between paho's receive thread and the asyncio side, and the acknowledgements."""

    _loop: asyncio.AbstractEventLoop | None = None  # the one `run` runs in
    # Set in `run`: set (from the receive thread) when messages arrive in an empty inbox.
    _wake: asyncio.Event
    _shedding = 0  # messages shed in the current episode (logged at its start and end)

    def __init__(
        self,
        config: EdgeConfig,
        emit: Emit,
        backpressure: Callable[[], bool],
        *,
        memory: Mapping[str, str],
        remember: Callable[[str, str], None] | None,
        delivered: Iterable[bytes],
    ) -> None:
        super().__init__(config, memory, remember)
        self.emit = emit
        self.backpressure = backpressure
        # The last commits' QoS 1 messages, as the buffer keeps them; after each (re)connection
        # they are what the broker may send again, looked up once each (see `_once`).
        self._recent: deque[bytes] = deque(delivered, maxlen=DELIVERED_WINDOW)
        self._again: dict[int, int] = {}
        self._again_connection = -1
        self.redelivered = 0  # QoS 1 messages the broker sent again after they were stored
        self._stopping = False
        # QoS 0 messages shed past a full inbox, by reason: `inbox_full` and `behind` (more
        # arrives than the agent handles), `buffer_full` (backpressure: the buffer is behind).
        self.shed: Counter[str] = Counter()
        self.paused = False
        # Incremented on every connection: a packet id means something only on its own.
        self._connection = 0
        self._inbox: list[Received] = []
        self._room = threading.Lock()  # the inbox's
        self._wake_at = NEVER  # queued messages at which the receive thread wakes the asyncio side
        # The receive thread's judge of which messages carry an alarm, and how many did.
        tags = {key: dev.tags for key, dev in self.devices.items()}
        self.urgency = Urgency(configured_rules(config), self.router, tags, self.settings.max_payload)
        self.urgent = 0  # messages that woke the asyncio side at once for an alarm

    @property
    def overflow(self) -> int:
        """QoS 0 messages shed past a full inbox, whatever the reason."""
        return self.shed.total()

    @property
    def queued(self) -> int:
        """Messages received and not yet handled."""
        return len(self._inbox)

    def _on_publishes(self, batch: list[Publish]) -> None:
        """Stamp and queue what the receive thread decoded; nothing else happens on that thread."""
        now_ms = int(time.time() * 1000)
        connection = self._connection
        received: list[Received] = []
        urgency = self.urgency if self.urgency.watching else None
        urgent = 0
        for raw_topic, payload, qos, retain, mid in batch:
            try:
                topic = raw_topic.decode()
            except UnicodeDecodeError:
                # MQTT requires UTF-8 topics and Mosquitto enforces it; another broker may not.
                topic = INVALID_TOPIC
            received.append((topic, payload, retain, now_ms, mid, qos, connection))
            if urgency is not None and urgency.urgent(raw_topic, topic, payload):
                urgent += 1
        with self._room:
            inbox = self._inbox
            behind = bool(inbox) and now_ms - inbox[0][3] > MAX_BEHIND_MS
            if (behind or len(inbox) + len(received) > MAX_INBOX) and not self._stopping:
                received = self._shed_excess(received, 0 if behind else MAX_INBOX - len(inbox), behind)
            elif self._shedding and len(inbox) < FULL_BATCH:
                self._ratelog.log("shed", "over", "mqtt: caught up; %d QoS 0 messages shed", self._shedding)
                self._shedding = 0
            self.urgent += urgent
            if (urgent or len(inbox) + len(received) >= self._wake_at) and self._loop is not None:
                # The asyncio side sleeps until this many are queued: the first message after
                # a quiet spell, or a batch already full; an alarm, at once. Otherwise it looks
                # at the inbox when its batch_ms is up: a wake-up per read, a write and a read
                # of the loop's self-pipe, would cost more than the messages.
                self._wake_at = NEVER
                self._loop.call_soon_threadsafe(self._wake.set)
            inbox.extend(received)

    def _shed_excess(self, received: list[Received], room: int, behind: bool) -> list[Received]:
        """What of `received` goes in the inbox: its QoS 1 messages (the broker's in-flight limit
        bounds them) and the QoS 0 ones that fit in `room`; the rest are counted as shed."""
        kept = []
        for message in received:
            if message[5] or room > 0:
                kept.append(message)
                room -= not message[5]
        shed = len(received) - len(kept)
        if not shed:
            return received
        reason = "buffer_full" if self.paused else "behind" if behind else "inbox_full"
        if not self._shedding:
            why = "the buffer is behind" if self.paused else "more arrives than the agent can handle"
            self._ratelog.log(
                "shed",
                reason,
                "mqtt: %s: %d messages wait, the oldest for %.1f s; shedding QoS 0 messages until it "
                "catches up (counted in linli_mqtt_shed_total{reason=%s})",
                why,
                len(self._inbox),
                (time.time() * 1000 - self._inbox[0][3]) / 1000 if self._inbox else 0.0,
                reason,
            )
        self._shedding += shed
        self.shed[reason] += shed
        return kept

    async def _nap(self, wake_at: int, seconds: float) -> None:
        """Sleep `seconds`, unless `wake_at` messages are queued (now, or when the receive
        thread queues them) or the connector stops."""
        with self._room:
            queued = len(self._inbox) >= wake_at
            if not queued:
                self._wake_at = wake_at
        if queued:
            await asyncio.sleep(0)  # under load too, the commits and the writer get their turn
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()
        with self._room:
            self._wake_at = NEVER

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    def _drain_inbox(self, *, force: bool = False) -> None:
        """Handle every queued message and emit the lines, in arrival order.

        While backpressure holds, messages stay queued unacknowledged, so the broker stops
        sending QoS 1 messages at its in-flight limit and keeps the rest.
        """
        if self.backpressure() and not force:
            if not self.paused:
                log.warning("mqtt: the buffer is nearly full; no new messages are taken until it drains")
                self.paused = True
            return
        if self.paused:
            log.info("mqtt: the buffer has room again; taking messages")
            self.paused = False
        with self._room:
            inbox = self._inbox
            take = len(inbox) if force else MAX_DRAIN
            batch, self._inbox = inbox[:take], inbox[take:]
        lines = self._lines
        acks: list[tuple[int, int]] = []
        delivered = bytearray()
        for topic, payload, retained, received_ms, mid, qos, connection in batch:
            if qos:
                acks.append((mid, connection))
                if connection != self._again_connection:
                    # A new connection: the broker first sends again what it holds unacknowledged.
                    self._again_connection = connection
                    self._again = delivered_pairs(self._recent)
            try:
                line = self.handle(topic, payload, received_ms, retained=retained)
            except Exception:
                # A bug must cost one message, never the connector.
                log.exception("mqtt: message on %s could not be handled", topic)
                self._reject("internal", "internal error", topic, payload, None, received_ms)
                continue
            if line is None:
                continue
            if qos and not self._once(mid, line, delivered):
                continue
            lines.append(line)
        if lines or acks:
            self._lines = []
            if delivered:
                self._recent.append(bytes(delivered))
            self.emit(lines, partial(self._acknowledge, acks) if acks else None, bytes(delivered))

    def _once(self, mid: int, line: str, delivered: bytearray) -> bool:
        """False for a QoS 1 message stored before: the same packet id and the same line.

        A crash (or a lost connection) between the commit of a message's line and its PUBACK
        leaves the broker owing it: it sends it again, with the same packet id, on the next
        connection. Each commit keeps its messages' packet ids and line CRCs, and the buffer
        the last DELIVERED_WINDOW commits' worth; after a (re)connection each id in that window
        is looked up once, so that copy is acknowledged and not stored twice. A new message
        that reuses the id differs in its line (at least its time).
        """
        crc = zlib.crc32(line.encode())
        if self._again and self._again.pop(mid, None) == crc:
            self.redelivered += 1
            return False
        delivered += PAIR.pack(mid, crc)
        return True

    def _acknowledge(self, acks: list[tuple[int, int]]) -> None:
        """PUBACK the messages whose lines are on disk (rejected ones are kept on the dead-letter topic)."""
        client = self._client
        if client is None:
            return
        for mid, connection in acks:
            # After a reconnect the broker sends unacknowledged messages again with ids of the
            # new connection: acknowledging an old id could confirm a different message.
            if connection == self._connection:
                client.ack(mid, 1)
