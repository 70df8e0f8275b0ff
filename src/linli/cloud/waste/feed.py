"""The trucks' feed: the waste service's MQTT connection, messages in and publishes out.

A persistent session (`WasteConfig.client_id`), so the broker keeps what the trucks send while
the service is away, and each message acknowledged only once it is taken: one a kill cuts
short comes again after the restart. Not a shared subscription: every service follows every
truck (`linli.cloud.waste.service`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from linli.catalog.mqttclient import make_client
from linli.catalog.ratelog import RateLimitedLog
from linli.cloud.waste.config import TruckBroker
from linli.cloud.waste.payloads import truck_filters

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 0x8E  # MQTT 5's reason: another client connected with this one's id


class TruckFeed:
    """Hands each truck message to `take(topic, payload)` on `loop`; `subscribed` once it reads."""

    def __init__(
        self,
        broker: TruckBroker,
        client_id: str,
        loop: asyncio.AbstractEventLoop,
        take: Callable[[str, bytes], None],
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.subscribed = threading.Event()
        self._ratelog = RateLimitedLog(log)
        self.client = self._client(loop, take)

    def publish(self, topic: str, payload: bytes | str) -> object:
        """Keepers' MQTT channels, dead letters and renovation orders go on this connection."""
        return self.client.publish(topic, payload, qos=1)

    def start(self) -> None:
        self.client.loop_start()  # connects in the background, and reconnects with backoff

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _client(self, loop: asyncio.AbstractEventLoop, take: Callable[[str, bytes], None]) -> paho.Client:
        # A persistent session (`WasteConfig.client_id`): the broker keeps what the trucks send
        # while this service is away; each message acknowledged only once it is taken.
        b = self.broker
        client = make_client(
            b,
            self.client_id,
            protocol=paho.MQTTv5,
            persistent=True,
            session_expiry_s=b.session_expiry_s,
            manual_ack=True,
        )
        filters = [(t, 1) for t in truck_filters(b.topic)]
        connection = [0]  # a message is acknowledged on the connection it came by, or not at all

        def on_connect(c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            if reason.is_failure:
                log.error("waste: broker %s:%d refused: %s", b.host, b.port, reason)
                return
            connection[0] += 1
            c.subscribe(filters)

        def on_disconnect(_c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            if reason.value == SESSION_TAKEN_OVER:
                self._ratelog.log(
                    "session",
                    "broker",
                    "waste: another service connected as %s and took this one's session; give each "
                    "service on this broker and state its own `name` in its config",
                    self.client_id,
                )

        def taken(c: paho.Client, msg: paho.MQTTMessage, on: int) -> None:
            # On the event loop: once taken, what the message decided is claimed and held in
            # the state, and the broker may forget it.
            take(msg.topic, bytes(msg.payload))
            if on == connection[0]:
                c.ack(msg.mid, msg.qos)

        def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed at the stop
                loop.call_soon_threadsafe(taken, c, msg, connection[0])

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = on_message
        return client
