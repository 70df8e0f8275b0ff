"""Soak: the agent through repeated outages, watched for leaks and loss.

The agent (its own process) polls 10 simulated charging stations every second and takes
100 camera heartbeats/s over MQTT QoS 1 into VictoriaMetrics. Every cycle the broker is
stopped and restarted (sessions saved), the store is stopped for 10 s, and the stations
go silent for 5 s. At the end of each cycle the agent's threads, open files and memory
are sampled; at the end every acknowledged message must be stored.

    .venv/bin/python benchmarks/soak.py --cycles 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness import start_charger_sim
from linli.demo.servers import free_port_range, start_mosquitto, start_victoria_metrics

STATIONS = 10
CAMERAS = 20
RATE = 100  # camera messages per second
T0 = 1_790_000_000_000
CYCLE_S = 60.0


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(threads, open files, resident MB) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    threads = int(fields["Threads"])
    rss_mb = int(fields["VmRSS"].split()[0]) // 1024
    return threads, len(os.listdir(f"/proc/{pid}/fd")), rss_mb


def write_config(path: Path, vm_url: str, mqtt_port: int, first_port: int) -> None:
    lines = [
        '[agent]\nname = "soak"\nlog_level = "warning"\n',
        f'[writer]\nkind = "influxdb2"\nurl = "{vm_url}"\norg = "linli"\nbucket = "linli"\nretry_max = 5.0\n',
        f'[buffer]\npath = "{path.parent / "soak.buffer.sqlite"}"\n',
        f'[mqtt]\nport = {mqtt_port}\nclient_id = "soak-agent"\nhealth_interval = 5.0\n',
        '[[sites]]\nid = "soak"\n',
    ]
    for i in range(STATIONS):
        lines.append(f'[[sites.devices]]\nid = "station-{i}"\nprofile = "charger"\nport = {first_port + i}\n')
    for i in range(CAMERAS):
        lines.append(f'[[sites.devices]]\nid = "cam-{i}"\nprofile = "camera"\n')
    path.write_text("\n".join(lines))


class Cameras:
    """Heartbeats over QoS 1 from a persistent session; counts what the broker acknowledged."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-cameras", clean_session=False)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.acked = 0
        self.sent = 0
        self.client.on_publish = self._acked
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _acked(self, *_: object) -> None:
        self.acked += 1

    def _run(self) -> None:
        started = time.monotonic()
        k = 0
        while not self.stop.is_set():
            delay = started + k / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = {"ts": T0 + k, "uptime_s": k, "detections_today": 0, "interceptions_today": 0}
            body["door_holds_today"] = 0
            self.client.publish(f"elevators/soak/cam-{k % CAMERAS}/heartbeat", json.dumps(body), qos=1)
            k += 1
            self.sent = k


def stored(vm_url: str) -> int:
    urllib.request.urlopen(f"{vm_url}/internal/force_flush").read()  # noqa: S310
    q = urllib.parse.urlencode({"match[]": "camera_uptime_s"})
    body = urllib.request.urlopen(f"{vm_url}/api/v1/export?{q}").read()  # noqa: S310
    return len({t for line in body.splitlines() for t in json.loads(line)["timestamps"]})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=15, help=f"outage cycles of {CYCLE_S:.0f} s")
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mq = start_mosquitto(work / "mq", persistence=True)
        vm = start_victoria_metrics(work / "vm")
        first = free_port_range(STATIONS)
        stations = start_charger_sim(first, STATIONS)
        config = work / "soak.toml"
        write_config(config, vm.url, mq.port, first)
        log = (work / "agent.log").open("wb")  # the agent's warnings about each outage, out of the table
        agent = subprocess.Popen(
            [sys.executable, "-m", "linli.cli", "edge", "run", "--config", str(config)], stderr=log
        )
        cameras = Cameras(mq.port)
        try:
            time.sleep(5)  # the agent connects and subscribes before the load starts
            cameras.thread.start()
            print(
                f"{'cycle':>5} {'min':>5} {'threads':>7} {'files':>5} {'RSS MB':>6} {'sent':>7} {'stored':>7}"
            )
            started = time.monotonic()
            for cycle in range(1, args.cycles + 1):
                t0 = time.monotonic()
                time.sleep(10)
                mq.stop()  # broker away for 5 s
                time.sleep(5)
                mq = start_mosquitto(work / "mq", mq.port, persistence=True)
                time.sleep(10)
                port = vm.port
                vm.stop()  # store away for 10 s
                time.sleep(10)
                vm = start_victoria_metrics(work / "vm", port)
                time.sleep(5)
                stations.terminate()  # devices silent for 5 s
                stations.wait()
                time.sleep(5)
                stations = start_charger_sim(first, STATIONS)
                time.sleep(max(0.0, CYCLE_S - (time.monotonic() - t0)))
                threads, files, rss = proc_figures(agent.pid)
                minutes = (time.monotonic() - started) / 60
                print(
                    f"{cycle:>5} {minutes:>5.1f} {threads:>7} {files:>5} {rss:>6} {cameras.sent:>7} "
                    f"{stored(vm.url):>7}",
                    flush=True,
                )
            cameras.stop.set()
            cameras.thread.join()
            deadline = time.monotonic() + 120
            while (
                cameras.acked < cameras.sent or stored(vm.url) < cameras.acked
            ) and time.monotonic() < deadline:
                time.sleep(1)
            got = stored(vm.url)
            print(
                f"camera messages sent {cameras.sent}, acknowledged {cameras.acked}, stored {got}, "
                f"lost {cameras.acked - got}"
            )
        finally:
            cameras.client.disconnect()
            cameras.client.loop_stop()
            agent.terminate()
            agent.wait(30)
            log.close()
            stations.terminate()
            mq.stop()
            vm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
