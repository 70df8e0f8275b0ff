"""The broker's identities and ACL, as `linli broker config` writes them, on a real Mosquitto.

Each spoof a camera's credential could do with the old shared config is tried and refused; each
identity can still do its job. "Sees nothing" is checked by order: after the refused message,
the rightful one is sent, and it must be the first thing the subscriber hears (Mosquitto
handles one client's messages in order and queues them to a subscriber in that order).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.reasoncodes import ReasonCode

from brokerpeers import Peer, can_connect
from linli.cloud.broker.files import read_secret
from linli.demo.servers import LocalServer, free_port, start_mosquitto_with
from support import linli, outside_pytest_tmp, wait_for

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
CAM = "device/changhong-tower-1/elevator-1"
OTHER_CAM = "device/changhong-tower-2/elevator-1"
EDGE = "edge/hongqiao-edge"
TRUCK = "device/fleet/truck-renovation"
NOT_AUTHORIZED = 0x87
GROUP = "$share/linli-notifier"  # the notifier's shared subscription group


def broker_config(
    out: Path, *extra: str, waste: Path = DEPLOY / "waste.local.toml"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linli.cli", "broker", "config",
         "--edge-config", str(DEPLOY / "district.toml"),
         "--notifier-config", str(DEPLOY / "notifier.local.toml"), "--waste-config",
         str(waste), "--out", str(out),
         "--bind", "127.0.0.1", *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, Path]]:
    out = tmp_path_factory.mktemp("broker")
    port = free_port()
    done = broker_config(out / "conf", "--port", str(port))
    assert done.returncode == 0, done.stderr
    server = start_mosquitto_with(out / "data", out / "conf" / "mosquitto.conf", port)
    yield server, out / "conf"
    server.stop()


def peer(broker: tuple[LocalServer, Path], identity: str, **kw: object) -> Peer:
    server, conf = broker
    if identity.startswith("device/"):
        kw.setdefault("client_id", identity)  # the only client id a device may use
    p = Peer(server.port, identity, read_secret(conf, identity), **kw)  # type: ignore[arg-type]
    if not p.accepted():
        p.close()
        raise AssertionError(f"{identity} refused: {p.reason}")
    return p


def heard_until(p: Peer, topic: str) -> list[str]:
    heard = [p.next()[0]]
    while heard[-1] != topic:
        heard.append(p.next()[0])
    return heard


def refused(code: ReasonCode) -> bool:
    return code.value == NOT_AUTHORIZED


@pytest.mark.servers
def test_the_secrets_are_private_and_no_password_is_printed(
    broker: tuple[LocalServer, Path], tmp_path: Path
) -> None:
    _, conf = broker
    vault = conf / "secrets"
    assert vault.stat().st_mode & 0o777 == 0o700
    assert {f.stat().st_mode & 0o777 for f in vault.iterdir()} == {0o600}
    done = broker_config(tmp_path / "again")
    passwords = json.loads((tmp_path / "again" / "secrets" / "identities.json").read_text())
    assert not any(pw in done.stdout + done.stderr for pw in passwords.values())
    assert "$7$1000$" in (tmp_path / "again" / "passwd").read_text()
    assert "password" not in (tmp_path / "again" / "dynsec.json").read_text().lower()


@pytest.mark.slow
def test_a_camera_cannot_spoof_another_camera(broker: tuple[LocalServer, Path]) -> None:
    cam, other, edge = peer(broker, CAM), peer(broker, OTHER_CAM), peer(broker, EDGE)
    try:
        target = "elevators/changhong-tower-2/elevator-1/detection"
        assert edge.subscribe("elevators/changhong-tower-2/#")[0].value < 0x80
        assert refused(cam.publish(target, '{"spoofed": true}'))
        assert not refused(other.publish(target, '{"own": true}'))
        assert edge.next() == (target, b'{"own": true}', False)  # the spoof never arrived
        # Its own topics, and its last will on its own status, are its to write.
        assert not refused(cam.publish("elevators/changhong-tower-1/elevator-1/heartbeat", "{}"))
    finally:
        for p in (cam, other, edge):
            p.close()


@pytest.mark.slow
def test_a_camera_cannot_raise_an_alert_or_say_an_edge_is_offline(broker: tuple[LocalServer, Path]) -> None:
    cam, edge, notifier = peer(broker, CAM), peer(broker, EDGE), peer(broker, "notifier")
    try:
        assert [c.value for c in notifier.subscribe(f"{GROUP}/linli/alerts/#")] == [1]
        alert = "linli/alerts/hongqiao-edge/changhong-tower-1/elevator-1"
        assert refused(cam.publish(alert, '{"title": "SPOOFED: evacuate building 3"}'))
        assert not refused(edge.publish(alert, '{"title": "real"}'))
        assert notifier.next() == (alert, b'{"title": "real"}', False)

        assert [c.value for c in notifier.subscribe(f"{GROUP}/linli/edges/+")] == [1]
        status = "linli/edges/hongqiao-edge"
        assert refused(cam.publish(status, "offline", retain=True))
        assert not refused(edge.publish(status, "online", retain=True))
        assert notifier.next() == (status, b"online", False)
        # Nor may one edge speak for another.
        assert refused(edge.publish("linli/alerts/another-edge/x/y", "{}"))
    finally:
        for p in (cam, edge, notifier):
            p.close()


def test_nobody_but_the_operator_reads_everything(broker: tuple[LocalServer, Path]) -> None:
    """A subscription beyond an identity's rights is refused, and nothing it may not read arrives."""
    truck, notifier, operator = peer(broker, TRUCK), peer(broker, "notifier"), peer(broker, "operator")
    cam, edge, waste = peer(broker, CAM), peer(broker, EDGE), peer(broker, "waste")
    try:
        for who in (truck, notifier, operator):
            granted = [who.subscribe("#")[0], who.subscribe("$SYS/#")[0]]
            assert [refused(c) for c in granted] == [who is not operator] * 2
        assert not refused(truck.subscribe("trucks/fleet/truck-renovation/order")[0])
        assert not refused(notifier.subscribe(f"{GROUP}/linli/alerts/#")[0])
        heartbeat = "elevators/changhong-tower-1/elevator-1/heartbeat"
        assert not refused(cam.publish(heartbeat, "{}"))
        order = "trucks/fleet/truck-renovation/order"
        assert not refused(waste.publish(order, '{"booking": "b1"}'))
        alert = "linli/alerts/hongqiao-edge/changhong-tower-1/elevator-1"
        assert not refused(edge.publish(alert, "{}"))
        # Retained messages first ($SYS and others), then the three: the operator reads everything.
        heard = heard_until(operator, alert)
        assert any(t.startswith("$SYS/") for t in heard)
        assert [t for t in heard if t in (heartbeat, order, alert)] == [heartbeat, order, alert]
        # Up to the message each may read, nothing it may not (retained status included).
        assert heard_until(truck, order) == [order]
        assert {t.split("/")[1] for t in heard_until(notifier, alert)} <= {"alerts", "edges"}
    finally:
        for p in (truck, notifier, operator, cam, edge, waste):
            p.close()


def test_no_identity_but_the_notifier_joins_its_group_and_it_gets_every_alert(
    broker: tuple[LocalServer, Path],
) -> None:
    """A member of the group gets its turn of the alerts; one that may not read them would have
    them dropped. Three devices try to join (the attack), and the others who are not the notifier."""
    notifier, edge = peer(broker, "notifier"), peer(broker, EDGE)
    others = [peer(broker, who) for who in (CAM, OTHER_CAM, TRUCK, EDGE, "waste", "operator")]
    try:
        filters = [f"{GROUP}/linli/alerts/#", f"{GROUP}/linli/edges/+", "$share/other/linli/alerts/#"]
        codes = {(who.client._username, f): who.subscribe(f)[0] for who in others for f in filters}
        assert [c.value for f in filters[:2] for c in notifier.subscribe(f)] == [1, 1]
        alerts = [f"linli/alerts/hongqiao-edge/changhong-tower-1/elevator-{i}" for i in range(1000)]
        for topic in alerts:
            assert not refused(edge.publish(topic, "{}"))
        assert not refused(edge.publish("linli/edges/hongqiao-edge", "online"))
        heard: list[str] = []
        while len(heard) <= len(alerts):
            topic, _, retained = notifier.next()
            heard += [] if retained else [topic]  # an earlier test's retained status comes first
        assert heard == [*alerts, "linli/edges/hongqiao-edge"]
        assert {w: c.value for w, c in codes.items() if not refused(c)} == {}
    finally:
        for p in (notifier, edge, *others):
            p.close()


def test_a_device_cannot_take_over_the_edges_connection_or_its_session(
    broker: tuple[LocalServer, Path],
) -> None:
    """The edge's client id is in every edge config; a device that connects with it is refused,
    and the edge's session (its subscription and the messages queued while it was away) stays."""
    server, conf = broker
    edge_id = "linli-hongqiao-edge"
    edge = peer(broker, EDGE, client_id=edge_id, session_s=600)
    heartbeat = "elevators/changhong-tower-1/elevator-1/heartbeat"
    assert not refused(edge.subscribe("elevators/changhong-tower-1/#")[0])
    edge.close()
    cam = peer(broker, CAM)
    try:
        for i in range(50):
            assert not refused(cam.publish(heartbeat, str(i)))
        for thief in (OTHER_CAM, TRUCK):
            assert not can_connect(server.port, thief, read_secret(conf, thief), client_id=edge_id)
        assert not can_connect(server.port, CAM, read_secret(conf, CAM))  # any id but its own
        edge = peer(broker, EDGE, client_id=edge_id, session_s=600)
        assert [edge.next()[1] for _ in range(50)] == [str(i).encode() for i in range(50)]
    finally:
        for p in (edge, cam):
            p.close()


@pytest.mark.slow
def test_the_waste_service_writes_only_its_trucks_orders_and_its_contacts(
    broker: tuple[LocalServer, Path],
) -> None:
    waste = peer(broker, "waste")
    try:
        assert not refused(waste.publish("trucks/fleet/truck-renovation/order", '{"booking": "b2"}'))
        # Not the notifier's channels, nor another truck's orders, nor anything it has no use for.
        for topic in (
            "linli/notices/ops",
            "linli/notices/anything",
            "trucks/fleet/truck-wet-north/order",
            "trucks/fleet/truck-renovation/location",
            "linli/bookings/b2",
        ):
            assert refused(waste.publish(topic, "{}")), topic
    finally:
        waste.close()


@pytest.mark.servers
def test_a_waste_contact_on_a_topic_the_notifier_writes_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A keeper's MQTT channel is the waste service's to write, exactly that topic; one the
    notifier writes would let it pass notices off as the notifier's."""
    gtfs = tmp_path / "gtfs"
    shutil.copytree(DEPLOY / "gtfs" / "hongqiao", gtfs)
    webhook = '{ kind = "webhook", url = "http://sms-gateway.district.example/send?to=keeper-anlong-1" }'
    extras = (gtfs / "linli.toml").read_text()
    assert webhook in extras
    waste = tmp_path / "waste.toml"
    waste.write_text(f'gtfs = "{gtfs}"\nstate = "w.sqlite"\n')
    for topic, ok in (("linli/notices/ops", False), ("linli/waste/notices/anlong-1", True)):
        (gtfs / "linli.toml").write_text(extras.replace(webhook, f'{{ kind = "mqtt", topic = "{topic}" }}'))
        done = broker_config(tmp_path / "conf", waste=waste)
        assert (done.returncode == 0) is ok, done.stderr
        if not ok:
            assert f"{gtfs}/linli.toml" in done.stderr
            assert "linli/notices/ops is the notifier's to write" in done.stderr
            continue
        rights = json.loads((tmp_path / "conf" / "dynsec.json").read_text())
        acls = next(r["acls"] for r in rights["roles"] if r["rolename"] == "waste")
        sends = {a["topic"] for a in acls if a["acltype"] == "publishClientSend" and a["allow"]}
        # Its orders, its contacts' topic and its own dead letters, nothing more.
        assert sends == {"trucks/fleet/truck-renovation/order", topic, "linli/deadletter/waste/#"}


@pytest.mark.servers
def test_the_written_files_work_for_mosquitto_started_as_root(tmp_path: Path) -> None:
    """As docs/security.md runs it: `mosquitto -c OUT/mosquitto.conf` as root, which drops to
    the user mosquitto before it reads the password file and the rights."""
    if os.geteuid() != 0:
        # Never skip: the case under test (dropping to the user mosquitto) needs root.
        pytest.fail("Mosquitto drops privileges only when started as root: run the tests as root, as CI does")
    port, tls = free_port(), free_port()
    with outside_pytest_tmp("linli-broker-") as out:
        out.chmod(0o755)  # as /etc/mosquitto is: the broker's user must get through to its files
        made = linli("broker", "certs", "--out", str(out / "certs"))
        assert made.returncode == 0, made.stderr
        done = broker_config(
            out / "conf", "--port", str(port), "--certs", str(out / "certs"), "--tls-port", str(tls)
        )
        assert done.returncode == 0, done.stderr
        server = start_mosquitto_with(
            tmp_path / "data", out / "conf" / "mosquitto.conf", port, as_written=True
        )
        try:
            password = read_secret(out / "conf", CAM)
            assert can_connect(port, CAM, password, client_id=CAM)
            assert can_connect(tls, CAM, password, client_id=CAM, tls=(out / "certs" / "ca.crt", None, None))
            status = Path(f"/proc/{server.proc.pid}/status").read_text()
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            assert int(uid) == pwd.getpwnam("mosquitto").pw_uid  # not root: it did drop to its user
        finally:
            server.stop()


@pytest.mark.slow
def test_strangers_and_wrong_passwords_are_turned_away(broker: tuple[LocalServer, Path]) -> None:
    server, _ = broker
    for user, password in ((None, None), (CAM, "guess"), ("nobody", "x")):
        assert not can_connect(server.port, user, password, client_id=user), user


@pytest.mark.servers
def test_a_rerun_keeps_passwords_and_rotation_takes_effect_on_sighup(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "conf"
    assert broker_config(conf, "--port", str(port)).returncode == 0
    before = json.loads((conf / "secrets" / "identities.json").read_text())
    server = start_mosquitto_with(tmp_path / "data", conf / "mosquitto.conf", port)
    try:
        again = broker_config(conf, "--port", str(port), "--rotate", CAM)
        assert again.returncode == 0, again.stderr
        assert f"rotated: {CAM}" in again.stdout
        after = json.loads((conf / "secrets" / "identities.json").read_text())
        assert {k for k in before if before[k] != after[k]} == {CAM}
        env = (conf / "secrets" / "device-changhong-tower-1-elevator-1.env").read_text()
        assert f"LINLI_MQTT_PASSWORD={after[CAM]}" in env
        assert can_connect(port, CAM, before[CAM], client_id=CAM)  # the running broker has the old file
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: can_connect(port, CAM, after[CAM], client_id=CAM), "the rotated password")
        assert not can_connect(port, CAM, before[CAM], client_id=CAM)
        assert can_connect(port, OTHER_CAM, before[OTHER_CAM], client_id=OTHER_CAM)  # the others keep theirs
    finally:
        server.stop()


@pytest.mark.servers
def test_bad_inputs_get_a_clear_error(tmp_path: Path) -> None:
    unknown = broker_config(tmp_path / "x", "--rotate", "device/nowhere/nothing")
    assert unknown.returncode == 2
    assert "--rotate names no identity: device/nowhere/nothing" in unknown.stderr
    no_certs = broker_config(tmp_path / "y", "--certs", str(tmp_path / "none"))
    assert no_certs.returncode == 2
    assert "linli broker certs --out" in no_certs.stderr


@pytest.mark.servers
def test_tls_with_and_without_a_client_certificate_and_a_wrong_ca_refused(tmp_path: Path) -> None:
    certs, other = tmp_path / "certs", tmp_path / "other"
    made = linli("broker", "certs", "--out", str(certs), "--client", CAM)
    assert made.returncode == 0, made.stderr
    assert linli("broker", "certs", "--out", str(other)).returncode == 0  # another CA altogether
    assert (certs / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (certs / "device-changhong-tower-1-elevator-1.key").stat().st_mode & 0o777 == 0o600
    plain, tls = free_port(), free_port()
    conf = tmp_path / "conf"
    done = broker_config(conf, "--port", str(plain), "--certs", str(certs), "--tls-port", str(tls))
    assert done.returncode == 0, done.stderr
    server = start_mosquitto_with(tmp_path / "data", conf / "mosquitto.conf", plain)
    password = read_secret(conf, CAM)
    client_cert = (
        certs / "ca.crt",
        certs / "device-changhong-tower-1-elevator-1.crt",
        certs / "device-changhong-tower-1-elevator-1.key",
    )
    try:
        bare = Peer(tls, CAM, password, tls=(certs / "ca.crt", None, None), client_id=CAM)
        assert bare.accepted(), bare.reason
        with_cert = Peer(tls, CAM, password, tls=client_cert, client_id=CAM)
        assert with_cert.accepted(), with_cert.reason
        assert not with_cert.publish("elevators/changhong-tower-1/elevator-1/heartbeat", "{}").is_failure
        ca, wrong_ca = (certs / "ca.crt", None, None), (other / "ca.crt", None, None)
        assert not can_connect(tls, CAM, password, tls=wrong_ca, client_id=CAM)
        assert not can_connect(tls, CAM, "wrong", tls=ca, client_id=CAM)
        assert not can_connect(tls, CAM, password, client_id=CAM)  # plain MQTT on the TLS port
        for p in (bare, with_cert):
            p.close()
    finally:
        server.stop()


@pytest.mark.servers
def test_a_missing_tls_file_is_a_config_error_naming_its_key(tmp_path: Path) -> None:
    edge = tmp_path / "edge.toml"
    edge.write_text(
        '[writer]\nkind = "influxdb1"\nurl = "http://127.0.0.1:9"\ndatabase = "d"\n'
        '[mqtt]\nport = 8883\n[mqtt.tls]\nca = "certs/ca.crt"\n'
        '[[sites]]\nid = "s"\n[[sites.devices]]\nid = "c"\nprofile = "camera"\n'
    )
    checked = linli("edge", "check", "--config", str(edge))
    assert checked.returncode == 2
    assert f"mqtt.tls.ca: no file {tmp_path}/certs/ca.crt" in checked.stderr  # from the config's folder
    notifier = tmp_path / "notifier.toml"
    notifier.write_text(f'state = "{tmp_path}/n.sqlite"\n[broker.tls]\nca = "nope.crt"\n')
    run = linli("cloud", "run", "--config", str(notifier))
    assert run.returncode == 2
    assert f"broker.tls.ca: no file {tmp_path}/nope.crt" in run.stderr
    sim = linli("sim", "district", "--mqtt-ca", str(tmp_path / "nope.crt"))
    assert sim.returncode == 2
    assert "nope.crt does not exist" in sim.stderr
