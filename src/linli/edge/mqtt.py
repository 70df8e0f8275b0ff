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

This module holds the connector's session (connect, subscribe, reconnect, the paho callbacks);
`mqttinbox` the queue between the two sides and the acknowledgements, `mqttingest` what each
message becomes, and `mqttsocket` the receive thread's batched PUBLISH decoder.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from linli.catalog.mqttclient import make_client
from linli.catalog.profile import Profile, get_profile
from linli.catalog.wording import plural
from linli.edge.config import EdgeConfig, MqttConfig
from linli.edge.mqttinbox import (
    FULL_BATCH,
    MAX_BEHIND_MS,
    MAX_DRAIN,
    MAX_INBOX,
    NEVER,
    PAIR,
    Done,
    Emit,
    MqttInbox,
    Received,
    delivered_pairs,
)
from linli.edge.mqttingest import (
    MAX_RETAINED_REJECTS,
    MISSED_HEARTBEATS,
    RETAINED_KEY,
    MqttDevice,
    Observe,
    Target,
    log,
)
from linli.edge.mqttsocket import BufferedClient, topic_bytes
from linli.edge.topics import TopicRouter

__all__ = [
    "FULL_BATCH",
    "MAX_BEHIND_MS",
    "MAX_DRAIN",
    "MAX_INBOX",
    "MAX_RETAINED_REJECTS",
    "MISSED_HEARTBEATS",
    "NEVER",
    "PAIR",
    "RETAINED_KEY",
    "Done",
    "Emit",
    "MqttConnector",
    "MqttDevice",
    "Observe",
    "Received",
    "Target",
    "broker_refusal",
    "delivered_pairs",
    "subscription_filters",
]

FILTERS_KEY = "mqtt_filters"
# What the agent subscribed to before this code subscribed per site: left behind in the
# broker's persistent session unless unsubscribed.
LEGACY_FILTERS = ("elevators/#", "trucks/#", "rescue/#")
# An agent that watches for alarms (see urgency) reads a stream of small messages at least this
# often, not every batch_ms: an alarm waits this long at most in the socket, and for no batch.
URGENT_WAIT_S = 0.02


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


class MqttConnector(MqttInbox):
    """Receives every configured MQTT device's messages and emits their lines."""

    def __init__(
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
        memory = memory or {}
        super().__init__(config, emit, backpressure, memory=memory, remember=remember, delivered=delivered)
        self.client_id = config.mqtt_client_id
        self.commit = commit
        self.filters = subscription_filters(config)
        before = memory.get(FILTERS_KEY)
        self._previous_filters = before.split("\n") if before else list(LEGACY_FILTERS)
        self.connected = False
        # Set once the broker acknowledged the subscriptions (after every reconnect).
        self.subscribed = threading.Event()
        self._gone = threading.Event()  # set when the connection closed
        self.by_paho = 0  # messages received, decoded one by one by paho, not in batches (see mqttsocket)

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
