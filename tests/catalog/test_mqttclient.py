"""The one MQTT client factory: the same keys in every broker table, sessions and last wills kept."""

from __future__ import annotations

import socket
import threading
import tomllib
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from linli.catalog.errors import ConfigError
from linli.catalog.mqttclient import MqttBroker, Will, make_client
from linli.cloud.notifier.config import BrokerConfig, load_notifier_config
from linli.cloud.waste.config import TruckBroker
from linli.demo.servers import LocalServer
from linli.edge.config import AlertsConfig, EdgeConfig, MqttConfig
from support import unique

# Every key of the one set, as an operator writes them in any broker table.
KEYS = """
host = "broker.hongqiao.example"
port = 8883
username_env = "MY_USER"
password_env = "MY_PASSWORD"
keepalive = 20
reconnect_min = 2.0
reconnect_max = 30.0
tls = { ca = "ca.crt", cert = "edge.crt", key = "edge.key" }
"""


@pytest.mark.parametrize("table", [MqttConfig, AlertsConfig, BrokerConfig, TruckBroker])
def test_every_broker_table_reads_the_same_keys(table: type[MqttBroker]) -> None:
    broker = table.model_validate(tomllib.loads(KEYS))
    assert isinstance(broker, MqttBroker)
    assert (broker.host, broker.port, broker.keepalive) == ("broker.hongqiao.example", 8883, 20)
    assert (broker.reconnect_min, broker.reconnect_max) == (2.0, 30.0)
    assert (broker.username_env, broker.password_env) == ("MY_USER", "MY_PASSWORD")
    assert broker.tls is not None
    assert (str(broker.tls.ca), str(broker.tls.cert), str(broker.tls.key)) == (
        "ca.crt",
        "edge.crt",
        "edge.key",
    )


def test_the_notifier_refuses_keepalive_s_its_key_before_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text("[broker]\nkeepalive_s = 2\n")
    with pytest.raises(ConfigError) as refused:
        load_notifier_config(path)
    assert refused.value.path == str(path)
    assert refused.value.problems == [
        "key 'broker.keepalive_s': renamed: use 'keepalive' (the same value) instead"
    ]
    path.write_text("[broker]\nkeepalive = 5\n")
    assert load_notifier_config(path).broker.keepalive == 5


def _edge(**tables: Any) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "writer": {"kind": "influxdb2", "url": "http://127.0.0.1:1", "org": "o", "bucket": "b"},
            "sites": [],
            **tables,
        }
    )


def test_alert_events_go_to_the_mqtt_broker_unless_alerts_names_its_own() -> None:
    mqtt = {"host": "10.0.0.5", "port": 1884, "keepalive": 40}
    assert _edge(mqtt=mqtt).alerts_broker() == _edge(mqtt=mqtt).mqtt
    own = _edge(mqtt=mqtt, alerts={"host": "central.example", "port": 8883}).alerts_broker()
    assert own is not None
    assert (own.host, own.port, own.username_env) == ("central.example", 8883, "LINLI_ALERTS_USERNAME")
    assert _edge().alerts_broker() is None  # nowhere to publish: the publisher is off


def test_credentials_come_from_the_variables_the_table_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_USER", "edge/hongqiao-edge")
    monkeypatch.setenv("MY_PASSWORD", "s3cret")
    broker = MqttBroker(username_env="MY_USER", password_env="MY_PASSWORD")  # noqa: S106 (names)
    client = make_client(broker, unique("c"))
    assert (client.username, client.password) == ("edge/hongqiao-edge", "s3cret")
    # A simulated device's own identity replaces them.
    device = make_client(broker, unique("d"), credentials=("device/s/d", "pw"))
    assert (device.username, device.password) == ("device/s/d", "pw")


def _listen(port: int, topic: str) -> tuple[paho.Client, list[bytes], threading.Event]:
    heard: list[bytes] = []
    came = threading.Event()
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("watcher"))
    subscribed = threading.Event()
    watcher.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        heard.append(bytes(msg.payload))
        came.set()

    watcher.on_message = on_message
    watcher.connect("127.0.0.1", port)
    watcher.subscribe(topic, qos=1)
    watcher.loop_start()
    assert subscribed.wait(10)
    return watcher, heard, came


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5])
def test_a_persistent_client_gets_what_was_sent_while_it_was_away(
    mosquitto: LocalServer, protocol: MQTTProtocolVersion
) -> None:
    """The edge's session (MQTT 3.1.1) and the waste service's (MQTT 5, with an expiry)."""
    broker = MqttBroker(port=mosquitto.port)
    client_id, topic = unique("away"), unique("trucks") + "/s/t/location"

    def session() -> paho.Client:
        return make_client(broker, client_id, protocol=protocol, persistent=True, session_expiry_s=600)

    subscribed = threading.Event()
    first = session()
    first.on_subscribe = lambda *_: subscribed.set()
    first.reconnect()
    first.subscribe(topic, qos=1)
    first.loop_start()
    assert subscribed.wait(10)
    first.disconnect()
    first.loop_stop()
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("truck"))
    sender.connect("127.0.0.1", mosquitto.port)
    sender.loop_start()
    sender.publish(topic, b"while away", qos=1).wait_for_publish(10)
    sender.disconnect()
    sender.loop_stop()
    heard: list[bytes] = []
    came = threading.Event()
    again = session()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        heard.append(bytes(msg.payload))
        came.set()

    again.on_message = on_message
    again.loop_start()  # connects in the background, as the services do; no subscribe: the session has it
    try:
        assert came.wait(15), "the broker kept nothing for the persistent session"
    finally:
        again.disconnect()
        again.loop_stop()
    assert heard == [b"while away"]


def test_the_last_will_is_said_when_the_client_goes_without_a_goodbye(mosquitto: LocalServer) -> None:
    topic = unique("edges") + "/status/hongqiao-edge"
    watcher, heard, came = _listen(mosquitto.port, topic)
    client = make_client(MqttBroker(port=mosquitto.port), unique("edge"), will=Will(topic, "offline"))
    client.reconnect()
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    try:
        assert not came.is_set()
        sock.shutdown(socket.SHUT_RDWR)  # the connection dies: no DISCONNECT reaches the broker
        assert came.wait(15), "no last will"
        assert heard == [b"offline"]
    finally:
        sock.close()
        watcher.disconnect()
        watcher.loop_stop()


def test_a_persistent_mqtt_5_session_needs_an_expiry() -> None:
    with pytest.raises(ValueError, match="session_expiry_s"):
        make_client(MqttBroker(), unique("x"), protocol=MQTTProtocolVersion.MQTTv5, persistent=True)
