"""No secret in a log line, an error message, `linli edge check` output or a dead letter.

A canary secret is given as every password and token; the broker and the store refuse it (or,
for the dead letters, take the broker's and refuse the store's), and everything the programs
printed or published is searched for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from brokerpeers import Peer
from linli.cloud.broker.files import read_secret
from linli.demo.servers import free_port, start_influxdb1, start_mosquitto_with
from support import http_post, linli, stop_process, wait_for

pytestmark = pytest.mark.servers  # every test here starts a server or a process

CANARY = "CANARY-7f3a9c-do-not-print"
CAMERA_TOPIC = "elevators/tower/elevator-1/detection"


def edge_config(path: Path, broker: int, influx: str) -> Path:
    path.write_text(
        f'[agent]\nname = "canary-edge"\n\n[writer]\nkind = "influxdb1"\nurl = "{influx}"\n'
        f'database = "linli"\n\n[mqtt]\nport = {broker}\n\n'
        '[[sites]]\nid = "tower"\n[[sites.devices]]\nid = "elevator-1"\nprofile = "camera"\n'
    )
    return path


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path) -> Iterator[Callable[[], str]]:
    """`linli ARGS` in the background; yields what it printed so far (stdout and stderr)."""
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "linli.cli", *args],
            stdout=sink, stderr=subprocess.STDOUT, text=True, env=env, cwd=log.parent,
        )  # fmt: skip
        try:
            yield log.read_text
        finally:
            stop_process(proc)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def test_a_canary_secret_never_appears_in_output_or_dead_letters(tmp_path: Path) -> None:
    influx = start_influxdb1(tmp_path / "influx", auth=True)
    admin = urllib.parse.urlencode({"q": "CREATE USER a WITH PASSWORD 'x' WITH ALL PRIVILEGES"})
    http_post(f"{influx.url}/query?{admin}")
    port = free_port()
    config = edge_config(tmp_path / "edge.toml", port, influx.url)
    conf = tmp_path / "broker"
    made = linli(
        "broker", "config", "--edge-config", str(config), "--out", str(conf),
        "--bind", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    broker = start_mosquitto_with(tmp_path / "mqtt", conf / "mosquitto.conf", port)
    canary = {
        **os.environ, "LINLI_STATE_DIR": str(tmp_path / "state"),
        "LINLI_MQTT_USERNAME": "edge/canary-edge", "LINLI_MQTT_PASSWORD": CANARY,
        "LINLI_INFLUX_USERNAME": "a", "LINLI_INFLUX_PASSWORD": CANARY,
        "LINLI_CLOUD_TOKEN": CANARY,
        "LINLI_CLOUD_MQTT_USERNAME": "notifier", "LINLI_CLOUD_MQTT_PASSWORD": CANARY,
    }  # fmt: skip
    run = ["edge", "run", "--config", str(config)]
    printed: list[str] = []
    dead: list[bytes] = []
    watcher = Peer(port, "operator", read_secret(conf, "operator"))
    cam = "device/tower/elevator-1"
    camera = Peer(port, cam, read_secret(conf, cam), client_id=cam)  # a device's only client id
    try:
        # 1. The broker refuses the canary: the agent says so, without it.
        with running(run, canary, tmp_path / "agent1.log") as said:
            wait_for(lambda: "refused the connection" in said(), "the broker's refusal", 30)
        printed.append(said())
        # 2. The broker takes the agent, the store refuses the canary; a bad message is dead-lettered.
        assert watcher.accepted()
        assert camera.accepted()
        watcher.subscribe("linli/deadletter/#")
        good_mqtt = {**canary, "LINLI_MQTT_PASSWORD": read_secret(conf, "edge/canary-edge")}

        def dead_lettered() -> bool:
            camera.publish(CAMERA_TOPIC, "{not json")  # again until the agent has subscribed
            while not watcher.heard.empty():
                dead.append(watcher.heard.get()[1])
            return bool(dead)

        with running(run, good_mqtt, tmp_path / "agent2.log") as said:
            wait_for(lambda: "HTTP 401" in said(), "the store's refusal", 30)
            wait_for(dead_lettered, "a dead letter", 30)
        printed.append(said())
        assert json.loads(dead[0])["reason"] == "malformed"
        # 3. linli edge check --contact, refused by both.
        checked = subprocess.run(
            [sys.executable, "-m", "linli.cli", "edge", "check", "--config", str(config), "--contact"],
            capture_output=True, text=True, timeout=60, check=False, env=canary, cwd=tmp_path,
        )  # fmt: skip
        assert checked.returncode == 1
        printed.append(checked.stdout + checked.stderr)
        # 4. The notifier: its broker refuses it; its API refuses a wrong token without echoing it.
        api = free_port()
        notifier = tmp_path / "notifier.toml"
        notifier.write_text(f'state = "{tmp_path / "n.sqlite"}"\napi_port = {api}\n[broker]\nport = {port}\n')
        with running(["cloud", "run", "--config", str(notifier)], canary, tmp_path / "notifier.log") as said:
            wait_for(lambda: "refused" in said(), "the broker's refusal", 30)
            wait_for(lambda: answers(f"http://127.0.0.1:{api}/openapi.json"), "the API", 30)
            wrong = httpx.get(
                f"http://127.0.0.1:{api}/alerts", headers={"Authorization": f"Bearer {CANARY}x"}, timeout=10
            )
            assert wrong.status_code == 401
            printed.append(wrong.text)
        printed.append(said())
    finally:
        watcher.close()
        camera.close()
        broker.stop()
        influx.stop()
    assert all(printed)
    for text in printed:
        assert CANARY not in text
    assert all(CANARY.encode() not in d for d in dead)
