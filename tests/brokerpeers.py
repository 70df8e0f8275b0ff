"""MQTT 5 clients under a given identity, for the broker's ACL and TLS tests."""

from __future__ import annotations

import queue
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from support import unique


class Peer:
    """One connection as one identity; what it hears, and what the broker answered it."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None,
        *,
        tls: tuple[Path, Path | None, Path | None] | None = None,
        will: tuple[str, str] | None = None,
        client_id: str | None = None,
        session_s: int = 0,
    ) -> None:
        """`session_s`: keep the session (its subscriptions and queued messages) that long after
        a disconnect, and resume the one the broker has for `client_id`."""
        self.heard: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.connected = threading.Event()
        self.reason: ReasonCode | None = None
        self.granted: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.acks: dict[int, ReasonCode] = {}
        self.acked = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or unique("peer"), protocol=paho.MQTTv5
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(
                ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None
            )
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.heard.put((m.topic, bytes(m.payload), m.retain))
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.granted.put(list(codes))
        self.client.on_publish = self._on_publish
        # Turned away before a CONNACK (a TLS handshake refused): no reason, not accepted.
        self.client.on_disconnect = lambda *_: self.connected.set()
        self.error: Exception | None = None
        try:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = session_s
            self.client.connect("127.0.0.1", port, keepalive=30, clean_start=not session_s, properties=props)
        except (OSError, ssl.SSLError) as exc:
            self.error = exc
            return
        self.client.loop_start()

    def _on_connect(self, _c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        self.reason = reason
        self.connected.set()

    def _on_publish(self, _c: object, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        with self.acked:
            self.acks[mid] = reason
            self.acked.notify_all()

    def accepted(self, timeout: float = 10) -> bool:
        """Whether the broker took the connection (False when refused or the handshake failed)."""
        if self.error is not None:
            return False
        self.connected.wait(timeout)
        return self.reason is not None and not self.reason.is_failure

    def subscribe(self, topic: str) -> list[ReasonCode]:
        self.client.subscribe(topic, qos=1)
        return self.granted.get(timeout=10)

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> ReasonCode:
        """QoS 1: the broker's PUBACK reason (MQTT 5 says 'Not authorized' for a denied topic)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self.acked:
            self.acked.wait_for(lambda: info.mid in self.acks, timeout=10)
            return self.acks[info.mid]

    def next(self, timeout: float = 10) -> tuple[str, bytes, bool]:
        return self.heard.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def can_connect(port: int, user: str | None, password: str | None, **kw: Any) -> bool:
    """Whether the broker takes this identity; the connection is closed either way (a refused
    client left running would retry for the rest of the session, in its own thread)."""
    peer = Peer(port, user, password, **kw)
    try:
        return peer.accepted()
    finally:
        peer.close()
