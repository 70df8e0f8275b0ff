"""The notifier's MQTT side: an MQTT 5 shared subscription, so notifiers in one group share the events."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from linli.catalog.alerts import NAME_MAX, AlertMessage
from linli.catalog.errors import validation_reason
from linli.catalog.mqttclient import make_client
from linli.cloud.notifier.config import BrokerConfig
from linli.cloud.notifier.routing import edge_status_alert

log = logging.getLogger(__name__)

# An alert event is a few hundred bytes; anything much larger is not one.
MAX_EVENT_BYTES = 65_536
# Why an event is refused, by pydantic's error type; anything else is "invalid".
REASONS = {"json_invalid": "malformed", "finite_number": "not_finite"}

# reason, source (the edge in the topic), detail: called on the event loop.
Reject = Callable[[str, str, str], None]


def classify(payload: bytes) -> tuple[AlertMessage | None, str, str]:
    """The alert in a payload, or None with the reason and a one-line detail."""
    if len(payload) > MAX_EVENT_BYTES:
        return None, "too_large", f"{len(payload)} bytes, limit {MAX_EVENT_BYTES}"
    try:
        return AlertMessage.model_validate_json(payload), "", ""
    except ValidationError as exc:
        return None, REASONS.get(exc.errors()[0]["type"], "invalid"), validation_reason(exc)


class AlertFeed:
    """Subscribes `$share/{group}/{alert_topic}/#` and the edges' status; hands alerts to the loop.

    An event is acknowledged to the broker only once the notifier has taken it (`handle` returns
    True). While the notifier's state cannot be reached, events wait here in order and are
    handed over again at each `retry`; the broker sends no more than its in-flight window
    meanwhile. Past `leave_after_s` of that, the notifier leaves the group (unsubscribes), so
    that the others get every new event, and joins again once all it holds is taken. While out
    it subscribes to every event (`watching`) and holds each once: when every notifier of the
    group is out (their database down), the broker would drop what no member subscribes to,
    and an alert that fired and resolved meanwhile would never be told. What another notifier
    told meanwhile is not told again: the claims are in the state.

    A notifier that dies takes the events it held with it on Mosquitto 2.0, which does not
    give a dead member's messages to the rest of the group (EMQX does): the edges announce
    their alerts again (`resend_s`), which tells them late rather than never.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        loop: asyncio.AbstractEventLoop,
        handle: Callable[[AlertMessage], bool],
        reject: Reject,
    ) -> None:
        self.broker = broker
        self.loop = loop
        self.handle = handle
        self.reject = reject
        self.subscribed = asyncio.Event()
        # Unique per instance: notifiers of one group must not take over each other's connection.
        client_id = f"linli-notifier-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        client = make_client(broker, client_id, protocol=paho.MQTTv5, manual_ack=True)
        # (alert, mid, qos, connection): on the loop. A mid is only acknowledged on its own connection.
        self.waiting: deque[tuple[AlertMessage, int, int, int]] = deque()
        self.connection = 0  # how many times the client connected
        self.failing_since: float | None = None  # when the state first failed an event, if it does
        self.left = False  # out of the group while the state cannot be reached
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._failing = False
        self._stopping = False
        self.client = client

    def filters(self) -> list[str]:
        b = self.broker
        return [f"$share/{b.group}/{b.alert_topic}/#", f"$share/{b.group}/{b.status_topic}/+"]

    def watching(self) -> list[str]:
        """Every event, not a share of them: subscribed while out of the group."""
        b = self.broker
        return [f"{b.alert_topic}/#", f"{b.status_topic}/+"]

    def start(self) -> None:
        log.info("notifier: connecting to the broker at %s:%d", self.broker.host, self.broker.port)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1)

    def _on_connect(
        self, client: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        if reason.is_failure:
            log.error("notifier: broker %s:%d refused: %s", self.broker.host, self.broker.port, reason)
            return
        self._failing = False
        self.connection += 1
        if self.left:
            log.info("notifier: connected; staying out of the group until the state is back")
            client.subscribe([(f, 1) for f in self.watching()])
            return
        log.info("notifier: connected; subscribing %s", ", ".join(self.filters()))
        self._join()

    def _on_connect_fail(self, _c: object, _u: object) -> None:
        if not self._failing:  # once per outage, not at every retry
            log.warning(
                "notifier: cannot reach the broker at %s:%d; retrying", self.broker.host, self.broker.port
            )
            self._failing = True

    def _on_disconnect(self, _c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if self._stopping:
            return
        log.warning("notifier: disconnected from the broker (%s); reconnecting", reason)

    def _on_subscribe(
        self, _c: object, _u: object, _m: int, reasons: list[ReasonCode], _p: Properties | None
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("notifier: subscriptions refused: %s", ", ".join(refused))
        self.loop.call_soon_threadsafe(self.subscribed.set)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            alert = self._take(msg)
        except Exception as exc:
            # paho would end its network thread on an exception: one message must not.
            self._refuse("internal", "(feed)", repr(exc))
            alert = None
        if alert is None:
            self.client.ack(msg.mid, msg.qos)  # refused: it will not be any better later
        else:
            self.loop.call_soon_threadsafe(self._deliver, alert, msg.mid, msg.qos, self.connection)

    def _take(self, msg: paho.MQTTMessage) -> AlertMessage | None:
        """The alert in a message, or None (refused, counted)."""
        topic = msg.topic
        payload = bytes(msg.payload)
        if topic.startswith(self.broker.status_topic + "/"):
            edge = topic.rsplit("/", 1)[1]
            status = payload.decode(errors="replace").strip()
            alert = None
            if len(edge) <= NAME_MAX:
                alert = edge_status_alert(edge, status, int(time.time() * 1000))
            if alert is None:
                self._refuse("invalid", edge[:NAME_MAX], f"status {status[:40]!r} on {topic[:200]}")
                return None
        else:
            alert, reason, detail = classify(payload)
            if alert is None:
                # The edge's name is the topic's third level: whose events keep failing.
                parts = topic.split("/")
                self._refuse(reason, parts[2][:NAME_MAX] if len(parts) > 2 else topic[:200], detail)
                return None
        return alert

    def _deliver(self, alert: AlertMessage, mid: int, qos: int, connection: int) -> None:
        """On the loop: hand the event over, behind any that wait, and acknowledge it once taken."""
        if self.left and any(_same(alert, w[0]) for w in self.waiting):
            # Out of the group, every event comes here, and the edges announce each again and
            # again: one copy waits, the state is unchanged by the rest.
            self.client.ack(mid, qos)
            return
        held = bool(self.waiting)  # then the state is failing: the tick's retry tries again
        self.waiting.append((alert, mid, qos, connection))
        if not held:
            self.retry()

    def retry(self) -> None:
        """On the loop: hand the waiting events over, in order, until one fails; leave the group
        when the state has failed for too long, and join again once nothing waits."""
        while self.waiting:
            alert, mid, qos, connection = self.waiting[0]
            tried = time.monotonic()
            if not self.handle(alert):
                # Failing since the first failing try began: a database cut off takes seconds to fail.
                now = time.monotonic()
                self.failing_since = self.failing_since or tried
                if not self.left and now - self.failing_since >= self.broker.leave_after_s:
                    log.warning(
                        "notifier: the state has been unreachable for %.0f s; leaving the group "
                        "with %d events held, until it is back",
                        now - self.failing_since,
                        len(self.waiting),
                    )
                    self.left = True
                    self.client.unsubscribe(self.filters())
                    self.client.subscribe([(f, 1) for f in self.watching()])
                return
            self.waiting.popleft()
            # On a later connection the mid names another message, or none: the broker sends
            # this event again, or gave it up with the old session, and the state has it now.
            if connection == self.connection:
                self.client.ack(mid, qos)
        self.failing_since = None
        if self.left:
            log.info("notifier: the state is back; joining the group again")
            self.left = False
            self.client.unsubscribe(self.watching())
            self._join()

    def _join(self) -> None:
        self.client.subscribe([(f, 1) for f in self.filters()])

    def _refuse(self, reason: str, source: str, detail: str) -> None:
        self.loop.call_soon_threadsafe(self.reject, reason, source, detail)


def _same(a: AlertMessage, b: AlertMessage) -> bool:
    """The same step of the same episode: an edge's announcement again."""
    return (a.fingerprint, a.state, a.since_ms) == (b.fingerprint, b.state, b.since_ms)
