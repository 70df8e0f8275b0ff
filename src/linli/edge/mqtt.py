"""The MQTT connector: subscribes per device kind, validates every payload, emits lines.

paho-mqtt's network thread only receives: it stamps each message and queues it, waking the
asyncio side when that side sleeps for want of messages, when a batch is already large, or
for a message that raises or clears an alarm (see urgency). That side takes the queue at most
every `[mqtt] batch_ms` and, in one pass, routes each message by topic, validates its raw
bytes and formats one line of line protocol. Handling messages in batches keeps the receive
thread short and the handling code hot, and a wake-up per message would cost more than the
message; all device state lives on the asyncio side.

A message that cannot be stored is counted per device and reason, logged once, and
republished with its reason to the dead-letter topic, where an operator can watch it;
nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import struct
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from linli.catalog.confirm import Confirmer
from linli.catalog.deadletter import dead_letter_envelope
from linli.catalog.lineprotocol import series_key
from linli.catalog.mqttclient import make_client
from linli.catalog.payloads import CompiledMessage, PayloadError
from linli.catalog.profile import Profile, get_profile
from linli.catalog.ratelog import RateLimitedLog
from linli.catalog.wording import plural
from linli.edge.alerting import configured_rules
from linli.edge.buffer import DELIVERED_WINDOW
from linli.edge.config import EdgeConfig, MqttConfig
from linli.edge.health import HealthReport, health_key, health_line
from linli.edge.mqttsocket import BufferedClient, Publish, topic_bytes
from linli.edge.topics import Route, TopicRouter
from linli.edge.urgency import Urgency

log = logging.getLogger(__name__)

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


# kind, tags, field values, time (ms), port: for the alert rules.
Observe = Callable[[str, Mapping[str, str], Mapping[str, Any], int, str | None], None]
# topic, payload, retained, received (ms since the epoch), packet id, QoS, connection number
Received = tuple[str, bytes, bool, int, int, int, int]

# A device is offline once it missed this many heartbeats.
MISSED_HEARTBEATS = 3
# Rejected retained payloads remembered across restarts (one per topic), so a broker's
# replay of the same garbage is not counted again at every start.
MAX_RETAINED_REJECTS = 10_000
RETAINED_KEY = "retained_reject:"
FILTERS_KEY = "mqtt_filters"
# What the agent subscribed to before this code subscribed per site: left behind in the
# broker's persistent session unless unsubscribed.
LEGACY_FILTERS = ("elevators/#", "trucks/#", "rescue/#")
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
# Topics resolved to a device are remembered; more than this and the memory starts afresh.
MAX_CACHED_TOPICS = 100_000
# An agent that watches for alarms (see urgency) reads a stream of small messages at least this
# often, not every batch_ms: an alarm waits this long at most in the socket, and for no batch.
URGENT_WAIT_S = 0.02


@dataclass
class MqttDevice:
    """What the agent knows about one MQTT device."""

    site: str
    device: str
    profile: Profile
    heartbeat_s: float
    tags: dict[str, str]
    online: bool = False
    status: str = ""
    last_seen_mono: float = 0.0
    last_seen_ms: int = 0
    messages: int = 0
    latency_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    confirmers: dict[str, Confirmer] = field(default_factory=dict)
    series: dict[tuple[str, ...], str] = field(default_factory=dict)
    health_series: str = ""
    # What its last health point said (online, errors), and when it was written.
    reported: HealthReport = field(default_factory=HealthReport)

    @property
    def name(self) -> str:
        return f"{self.site}/{self.device}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one topic's messages go: resolved once per topic, then looked up."""

    route: Route
    dev: MqttDevice
    extra: dict[str, str]  # topic levels that become tags, besides site and device
    compiled: CompiledMessage | None  # None for the status topic
    series: str | None  # the series key, when no payload field is a tag


def subscription_filters(config: EdgeConfig) -> dict[str, int]:
    """What an agent subscribes to, with the QoS: `[mqtt] subscribe`, or its own sites' subtrees.

    The broker's ACL for the agent (`linli broker config`) grants exactly these.
    """
    if config.mqtt is not None and config.mqtt.subscribe:
        return dict.fromkeys(config.mqtt.subscribe, 1)
    kinds: dict[str, Profile] = {}
    owned: dict[str, set[str]] = {}
    for site, device in config.devices():
        profile = get_profile(device.profile)
        if profile.mqtt is not None:
            kinds[profile.kind] = profile
            owned.setdefault(profile.kind, set()).add(site.id)
    return TopicRouter(list(kinds.values())).filters(owned)


class MqttConnector:
    """Receives every configured MQTT device's messages and emits their lines."""

    _loop: asyncio.AbstractEventLoop | None = None  # the one `run` runs in
    # Set in `run`: set (from the receive thread) when messages arrive in an empty inbox.
    _wake: asyncio.Event
    _shedding = 0  # messages shed in the current episode (logged at its start and end)

    def __init__(  # noqa: PLR0915 (its state, an attribute a line)
        self,
        config: EdgeConfig,
        emit: Emit,
        backpressure: Callable[[], bool] = lambda: False,
        commit: Callable[[], Awaitable[object]] | None = None,
        *,
        memory: Mapping[str, str] | None = None,
        remember: Callable[[str, str], None] | None = None,
        delivered: Iterable[bytes] = (),
    ) -> None:
        """`backpressure` says when to stop taking messages; `commit` puts emitted lines on disk now.

        `memory` is what `remember` kept in earlier runs: the filters subscribed, and the
        retained payloads already rejected. `delivered` is the buffer's window of the last
        commits' QoS 1 messages (see `_once`).
        """
        if config.mqtt is None:
            raise ValueError("the config has no [mqtt] table")
        self.settings: MqttConfig = config.mqtt
        self.agent = config.agent.name
        self.client_id = config.mqtt_client_id
        self.emit = emit
        self._max_ahead_ms = int(self.settings.max_clock_ahead * 1000)
        self.backpressure = backpressure
        self.commit = commit
        self.devices: dict[tuple[str, str, str], MqttDevice] = {}
        kinds: dict[str, Profile] = {}
        for site, device in config.devices():
            profile = get_profile(device.profile)
            if profile.mqtt is None:
                continue
            kinds[profile.kind] = profile
            self.devices[(profile.kind, site.id, device.id)] = MqttDevice(
                site=site.id,
                device=device.id,
                profile=profile,
                heartbeat_s=device.heartbeat or profile.mqtt.heartbeat_s,
                tags={"site": site.id, "device": device.id, **device.tags},
                health_series=health_key({"site": site.id, "device": device.id, "kind": profile.kind}),
            )
        self.router = TopicRouter(list(kinds.values()))
        self.filters = subscription_filters(config)
        memory = memory or {}
        self._remember = remember or (lambda _k, _v: None)
        before = memory.get(FILTERS_KEY)
        self._previous_filters = before.split("\n") if before else list(LEGACY_FILTERS)
        # The last commits' QoS 1 messages, as the buffer keeps them; after each (re)connection
        # they are what the broker may send again, looked up once each (see `_once`).
        self._recent: deque[bytes] = deque(delivered, maxlen=DELIVERED_WINDOW)
        self._again: dict[int, int] = {}
        self._again_connection = -1
        self.redelivered = 0  # QoS 1 messages the broker sent again after they were stored
        self._retained_rejects = {
            k.removeprefix(RETAINED_KEY): v for k, v in memory.items() if k.startswith(RETAINED_KEY)
        }
        self.compiled = {
            (p.kind, m.name): CompiledMessage(m)
            for p in kinds.values()
            for m in (p.mqtt.messages if p.mqtt else [])
        }
        self.connected = False
        # Set once the broker acknowledged the subscriptions (after every reconnect).
        self.subscribed = threading.Event()
        self._gone = threading.Event()  # set when the connection closed
        self._stopping = False
        self.received = 0
        self.by_paho = 0  # of them, decoded one by one by paho, not in batches (see mqttsocket)
        self.stored = 0
        self.dead_letters: Counter[str] = Counter()
        self.ignored_retained = 0
        # QoS 0 messages shed past a full inbox, by reason: `inbox_full` and `behind` (more
        # arrives than the agent handles), `buffer_full` (backpressure: the buffer is behind).
        self.shed: Counter[str] = Counter()
        self.paused = False
        # Incremented on every connection: a packet id means something only on its own.
        self._connection = 0
        self._ratelog = RateLimitedLog(log)
        self._inbox: list[Received] = []
        self._lines: list[str] = []
        self._room = threading.Lock()  # the inbox's
        self._wake_at = NEVER  # queued messages at which the receive thread wakes the asyncio side
        self._targets: dict[str, Target] = {}
        # The receive thread's judge of which messages carry an alarm, and how many did.
        tags = {key: dev.tags for key, dev in self.devices.items()}
        self.urgency = Urgency(configured_rules(config), self.router, tags, self.settings.max_payload)
        self.urgent = 0  # messages that woke the asyncio side at once for an alarm
        self._client: paho.Client | None = None
        # The alert rules see the messages of these kinds (set by the agent).
        self.observe: Observe | None = None
        self.observed_kinds: set[str] = set()

    @property
    def overflow(self) -> int:
        """QoS 0 messages shed past a full inbox, whatever the reason."""
        return self.shed.total()

    @property
    def queued(self) -> int:
        """Messages received and not yet handled."""
        return len(self._inbox)

    # --- asyncio side -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying with backoff), receive until `stop`, then hand over what is left."""
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        client = self._make_client()
        self._client = client
        s = self.settings
        log.info(
            "mqtt: %s via %s:%d as '%s'", plural(len(self.devices), "device"), s.host, s.port, self.client_id
        )
        client.loop_start()
        next_health = time.monotonic() + s.health_interval
        relay = asyncio.create_task(self._wake_on(stop))
        try:
            while not stop.is_set():
                # Asleep while nothing is queued, until the receive thread wakes us or health is
                # due: an idle agent does not poll.
                await self._nap(1, max(0.0, next_health - time.monotonic()))
                self._drain_inbox()
                if time.monotonic() >= next_health:
                    next_health += s.health_interval
                    self.emit(self.health_lines(int(time.time() * 1000)), None, b"")
                if not stop.is_set():
                    # What arrives meanwhile is handled in one batch, batch_ms later at most;
                    # while backpressure holds, look again only then, however much waits.
                    await self._nap(NEVER if self.paused else FULL_BATCH, s.batch_ms / 1000)
        finally:
            relay.cancel()
            self._stopping = True
            # What was received goes to disk and is acknowledged before the goodbye; whatever
            # arrives after this the broker delivers again at the next start.
            self._drain_inbox(force=True)
            # The last counts, so the store agrees with the agent's final state.
            self.emit(self.health_lines(int(time.time() * 1000), every=True), None, b"")
            if self.commit is not None:
                await self.commit()
            # The acknowledgements just queued go out before DISCONNECT; wait until it went,
            # or the network thread may stop with them unsent and the broker sends them again.
            self._gone.clear()
            if self.connected and client.disconnect() == paho.MQTT_ERR_SUCCESS:
                await asyncio.to_thread(self._gone.wait, 5.0)
            await asyncio.to_thread(client.loop_stop)

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

    def health_lines(self, time_ms: int, *, every: bool = False) -> list[str]:
        """Health points of the devices whose state changed since their last one, marking silent
        devices offline first, and of those whose last one is `health_every` old; with `every`, of all.

        A point of every device at every check would be most of what a large agent writes:
        20,000 devices checked every 5 s make 4,000 points/s, twice what they send at one
        message per 10 s.
        """
        now = time.monotonic()
        every_s = self.settings.health_every
        lines = []
        # Every device, every check: kept to a few attribute reads for the usual healthy one.
        for dev in self.devices.values():
            seen = dev.last_seen_mono
            if dev.online and (seen == 0.0 or now - seen > MISSED_HEARTBEATS * dev.heartbeat_s):
                dev.online = False
                log.warning(
                    "%s: offline: no message for %.0fs (%d heartbeats)",
                    dev.name,
                    now - dev.last_seen_mono,
                    MISSED_HEARTBEATS,
                )
            errors = dev.errors.total() if dev.errors else 0
            if every or dev.reported.due(dev.online, errors, now, every_s):
                lines.append(self.health_line(dev, time_ms))
        return lines

    def health_line(self, dev: MqttDevice, time_ms: int) -> str:
        """The device's health point now; remembered as its last."""
        dev.reported.mark(dev.online, dev.errors.total(), time.monotonic())
        return health_line(
            dev.health_series,
            time_ms,
            online=dev.online,
            errors=dev.errors,
            latency_s=dev.latency_s,
            last_seen_ms=dev.last_seen_ms,
            messages=dev.messages,
        )

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

    # --- paho's network thread ------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self.settings
        # MQTT 3.1.1 with a persistent session: the broker queues QoS 1 messages while the
        # agent is away and delivers them on reconnect. Buffered reads: see mqttsocket.
        # Jitter: after a broker restart, a fleet of agents does not reconnect in the same second.
        # Acknowledged only once stored: see _acknowledge.
        client = make_client(
            s, self.client_id, persistent=True, manual_ack=True, jitter=True, cls=BufferedClient
        )
        assert isinstance(client, BufferedClient)
        # The receive thread's batches match the asyncio side's, but alarms wait for no batch.
        client.coalesce_s = s.batch_ms / 1000
        if self.urgency.watching:
            client.coalesce_s = min(client.coalesce_s, URGENT_WAIT_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publishes = self._on_publishes
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        if reason.is_failure:
            log.error(
                "mqtt: broker %s:%d refused the connection: %s",
                self.settings.host,
                self.settings.port,
                reason,
            )
            return
        self.connected = True
        self._connection += 1
        log.info("mqtt: connected (session present: %s)", flags.session_present)
        stale = [f for f in self._previous_filters if f not in self.filters]
        if stale and flags.session_present:
            # The persistent session keeps what an earlier config subscribed to.
            log.info("mqtt: unsubscribing what this config no longer owns: %s", ", ".join(stale))
            client.unsubscribe(stale)
        client.subscribe(list(self.filters.items()))

    def _on_subscribe(
        self, _client: paho.Client, _userdata: object, _mid: int, reasons: list[ReasonCode], _props: object
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("mqtt: broker refused subscriptions: %s", ", ".join(refused))
        elif self._previous_filters != list(self.filters):
            self._previous_filters = list(self.filters)
            self._remember(FILTERS_KEY, "\n".join(self.filters))
        self.subscribed.set()

    def _on_disconnect(
        self, _client: paho.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object
    ) -> None:
        if self.connected and not self._stopping:
            log.warning("mqtt: disconnected (%s); reconnecting with backoff", reason)
        self.connected = False
        self.subscribed.clear()
        self._gone.set()

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        self.by_paho += 1
        self._on_publishes([(topic_bytes(msg), bytes(msg.payload), msg.qos, msg.retain, msg.mid)])

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

    def handle(self, topic: str, payload: bytes, received_ms: int, *, retained: bool = False) -> str | None:
        """The line for one message, or None when it was a status update or rejected."""
        self.received += 1
        target = self._targets.get(topic)
        if target is None:
            target = self._resolve(topic, payload, received_ms, retained=retained)
            if target is None:
                return None
        dev = target.dev
        if len(payload) > self.settings.max_payload:
            detail = f"{len(payload)} bytes, limit {self.settings.max_payload}"
            self._reject("too_large", detail, topic, payload, dev, received_ms, retained=retained)
            return None
        compiled = target.compiled
        if compiled is None:
            self._status(dev, target.route, topic, payload, received_ms, retained=retained)
            return None
        try:
            values = compiled.validate(payload)
        except PayloadError as exc:
            self._reject(exc.reason, str(exc), topic, payload, dev, received_ms, retained=retained)
            return None
        time_ms = compiled.time_ms(values) or received_ms
        if time_ms > received_ms + self._max_ahead_ms:
            ahead, limit = (time_ms - received_ms) / 1000, self._max_ahead_ms // 1000
            detail = f"device time is {ahead:.0f}s ahead of the agent's clock (limit {limit}s)"
            self._reject("bad_time", detail, topic, payload, dev, received_ms, retained=retained)
            return None
        kind = dev.profile.kind
        if self.observe is not None and kind in self.observed_kinds:
            self.observe(kind, dev.tags, compiled.fields(values), time_ms, None)
        confirm = compiled.spec.confirm
        if confirm is None:
            field_set = compiled.field_set_of(values)
        else:
            fields = compiled.fields(values)
            confirmer = dev.confirmers.get(compiled.spec.name)
            if confirmer is None:
                confirmer = dev.confirmers[compiled.spec.name] = Confirmer(confirm)
            confirmed, started = confirmer.observe(time_ms / 1000, fields)
            fields[confirm.confirmed_field] = confirmed
            fields[confirm.count_field] = started
            field_set = compiled.field_set(fields)
        self._seen(dev, received_ms, time_ms)
        key = target.series
        if key is None:
            tags = compiled.tags(values)
            key_parts = (topic, *tags.values())
            key = dev.series.get(key_parts)
            if key is None:
                tagset = {**dev.tags, **target.extra, **tags}
                key = dev.series[key_parts] = series_key(dev.profile.measurement, tagset)
        self.stored += 1
        return f"{key} {field_set} {time_ms}"

    def _resolve(self, topic: str, payload: bytes, received_ms: int, *, retained: bool) -> Target | None:
        """The target of a topic not seen before; None (after rejecting it) when there is none."""
        matched = self.router.match(topic)
        if matched is None:
            detail = "no device kind publishes on this topic"
            self._reject("unknown_topic", detail, topic, payload, None, received_ms, retained=retained)
            return None
        route, levels = matched
        dev = self.devices.get((route.profile.kind, levels["site"], levels["device"]))
        if dev is None and retained:
            # The broker replays retained messages (the status of devices removed from the
            # config long ago, or of another agent's devices) on every subscribe: counted, not
            # dead-lettered at each start.
            self.ignored_retained += 1
            return None
        if dev is None:
            detail = (
                f"{route.profile.kind} '{levels['site']}/{levels['device']}' is not in the agent's config"
            )
            self._reject("unknown_device", detail, topic, payload, None, received_ms)
            return None
        message = route.message
        compiled = self.compiled[(route.profile.kind, message.name)] if message is not None else None
        extra = {k: v for k, v in levels.items() if k not in ("site", "device")}
        series = None
        if compiled is not None and not compiled.has_tags:
            series = series_key(dev.profile.measurement, {**dev.tags, **extra})
        if len(self._targets) >= MAX_CACHED_TOPICS:
            self._targets.clear()
        target = self._targets[topic] = Target(route, dev, extra, compiled, series)
        return target

    def _seen_retained(self, topic: str, payload: bytes) -> bool:
        """True if this retained payload was rejected before; else remember it was."""
        digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
        if self._retained_rejects.get(topic) == digest:
            return True
        if topic in self._retained_rejects or len(self._retained_rejects) < MAX_RETAINED_REJECTS:
            self._retained_rejects[topic] = digest
            self._remember(RETAINED_KEY + topic, digest)
        return False

    def _seen(self, dev: MqttDevice, received_ms: int, time_ms: int) -> None:
        dev.messages += 1
        dev.last_seen_mono = time.monotonic()
        dev.last_seen_ms = received_ms
        dev.latency_s = max(0, received_ms - time_ms) / 1000
        if not dev.online:
            log.info("%s: online", dev.name)
            dev.online = True
            # A state change is written at once, not at the next health tick: the screen
            # shows when it happened.
            self._lines.append(self.health_line(dev, received_ms))

    def _status(
        self, dev: MqttDevice, route: Route, topic: str, payload: bytes, received_ms: int, *, retained: bool
    ) -> None:
        spec = route.profile.mqtt
        assert spec is not None
        text = payload.decode("utf-8", errors="replace").strip()
        if not text:
            return  # an empty retained message only clears the broker's copy
        if text == spec.offline:
            if dev.online or dev.status != spec.offline:
                log.warning("%s: offline: the device's last will says '%s'", dev.name, text)
            dev.status = text
            if dev.online:
                dev.online = False
                self._lines.append(self.health_line(dev, received_ms))
        elif text == spec.online:
            dev.status = text
            self._seen(dev, received_ms, received_ms)
        else:
            detail = f"status must be '{spec.online}' or '{spec.offline}'"
            self._reject("invalid", detail, topic, payload, dev, received_ms, retained=retained)

    def _reject(  # noqa: PLR0917 (internal, called in one place per reason)
        self,
        reason: str,
        detail: str,
        topic: str,
        payload: bytes,
        dev: MqttDevice | None,
        received_ms: int,
        *,
        retained: bool = False,
    ) -> None:
        if retained and self._seen_retained(topic, payload):
            # The broker replays the same retained garbage at every start: counted once.
            self.ignored_retained += 1
            return
        self.dead_letters[reason] += 1
        if dev is not None:
            dev.errors[reason] += 1
        # The source a technician can act on: the device, or the topic down to its device level.
        who = dev.name if dev is not None else "/".join(topic.split("/")[:3])
        self._ratelog.log(
            reason, who, "mqtt: %s: message on %s rejected (%s): %s", who, topic, reason, detail
        )
        envelope = dead_letter_envelope(
            reason=reason,
            detail=detail,
            topic=topic,
            payload=payload,
            agent=self.agent,
            received_ms=received_ms,
        )
        if self._client is not None:
            self._client.publish(f"{self.settings.dead_letter_topic}/{self.agent}/{reason}", envelope, qos=1)


def broker_refusal(settings: MqttConfig, timeout: float = 5.0) -> str | None:
    """Connect once with a throwaway client id and the configured credentials and TLS; why not, or None."""
    answer: list[str] = []
    done = threading.Event()

    def on_connect(_c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        answer.append(str(reason) if reason.is_failure else "")
        done.set()

    try:
        client = make_client(settings, f"linli-check-{random.randrange(1 << 32):08x}")
        client.on_connect = on_connect
        client.reconnect()
    except (OSError, ValueError) as exc:
        return f"cannot connect ({exc})"
    client.loop_start()
    try:
        if not done.wait(timeout):
            return f"no answer within {timeout:g}s"
        return answer[0] or None
    finally:
        client.disconnect()
        client.loop_stop()
