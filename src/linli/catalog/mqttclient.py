"""Every linli MQTT client is made here, from one set of config keys.

The edge's connector and alert publisher, the notifier, the waste service and the simulated
devices each connect to a broker: the same keys say where and how (`MqttBroker`), and one
function makes the paho client (`make_client`). The edge imports no cloud code and the
simulator none either, so this lives in the catalog, which every part imports.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field

from linli.catalog.strict import EnvCredentials
from linli.catalog.tls import MqttTls, apply_tls

Port = Annotated[int, Field(ge=1, le=65535)]
Delay = Annotated[float, Field(gt=0, le=3600)]


class MqttBroker(EnvCredentials):
    """The keys of every table that names a broker (`[mqtt]`, `[alerts]`, `[broker]`).

    Credentials come from the environment variables the file names, never from the file.
    """

    host: str = "127.0.0.1"
    port: Port = 1883
    username_env: str = "LINLI_MQTT_USERNAME"
    password_env: str = "LINLI_MQTT_PASSWORD"  # noqa: S105 (a variable name, not a secret)
    tls: MqttTls | None = None
    # The broker takes a client for gone after 1.5 times this without a word from it.
    keepalive: Annotated[int, Field(ge=2, le=3600)] = 30
    # After a lost connection, retries wait reconnect_min, doubling up to reconnect_max.
    reconnect_min: Delay = 1.0
    reconnect_max: Delay = 60.0


@dataclass(frozen=True)
class Will:
    """What the broker publishes for a client that goes without a goodbye."""

    topic: str
    payload: str
    qos: int = 1
    retain: bool = True


def make_client(
    broker: MqttBroker,
    client_id: str,
    *,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    persistent: bool = False,
    session_expiry_s: int | None = None,
    manual_ack: bool = False,
    will: Will | None = None,
    jitter: bool = False,
    credentials: tuple[str, str] | None = None,
    cls: type[paho.Client] = paho.Client,
) -> paho.Client:
    """A paho client for `broker`, set up to connect: `loop_start()` connects in the background
    (and reconnects with backoff), `reconnect()` connects now, raising OSError if it cannot.

    `persistent` keeps the session while the client is away (MQTT 3.1.1: no clean session;
    MQTT 5: no clean start, and the session kept `session_expiry_s`), so the broker queues its
    QoS 1 messages meanwhile. `jitter` spreads the first retry over reconnect_min to twice
    that: after a broker restart, a fleet does not come back in the same second. `credentials`
    (user, password) replace the environment's (a simulated device's own identity). `cls` is
    paho's client or a subclass of it. Raises ValueError naming a TLS file that is missing or
    unreadable.

    The client comes set to connect, so paho refuses changes to its connection settings
    (`max_queued_messages`, `username`, ...) afterwards: those are made here.
    """
    v5 = protocol == MQTTProtocolVersion.MQTTv5
    client = cls(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        # MQTT 5 has no clean session: its session is asked for at connect (below).
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    username, password = credentials or (broker.username, broker.password)
    if username:
        client.username_pw_set(username, password or None)
    apply_tls(client, broker.tls)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    first = broker.reconnect_min * (random.uniform(1.0, 2.0) if jitter else 1.0)
    # (paho annotates the delays as int; it only multiplies and adds them.)
    client.reconnect_delay_set(min_delay=first, max_delay=broker.reconnect_max)  # type: ignore[arg-type]
    if v5 and persistent:
        if not session_expiry_s:
            raise ValueError("a persistent MQTT 5 session needs session_expiry_s")
        session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        session.SessionExpiryInterval = session_expiry_s
        client.connect_async(
            broker.host, broker.port, broker.keepalive, clean_start=False, properties=session
        )
    else:
        client.connect_async(broker.host, broker.port, broker.keepalive)
    return client
