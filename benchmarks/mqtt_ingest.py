"""MQTT ingest: camera and truck messages through the edge agent into VictoriaMetrics.

For each offered rate and QoS, a publisher process sends truck locations and camera
heartbeats for --hold seconds; the agent (its own process) stores them; a bare paho
subscriber in a third process only counts the same messages. Every message is counted
in and every point out, so loss is exact. Prints achieved rates, loss, the agent's CPU
and the ratio to the bare subscriber.

    .venv/bin/python benchmarks/mqtt_ingest.py --rates 2000 5000 10000 --hold 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from linli.localservers import start_mosquitto, start_victoria_metrics

DEVICES = 100  # of each kind
TS0 = 1_790_000_000_000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queue_settings() -> str:
    conf = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf"
    return "".join(
        f"{x}\n" for x in conf.read_text().splitlines() if x.startswith(("max_queued", "max_inflight"))
    )


def write_config(path: Path, vm_url: str, mqtt_port: int) -> None:
    lines = [
        '[agent]\nname = "bench"\nlog_level = "warning"\n',
        f'[writer]\nkind = "influxdb2"\nurl = "{vm_url}"\norg = "linli"\nbucket = "linli"\n'
        "batch_size = 5000\n",
        f'[mqtt]\nport = {mqtt_port}\nclient_id = "bench-agent"\nhealth_interval = 5.0\n',
        '[[sites]]\nid = "bench"\n',
    ]
    for i in range(DEVICES):
        lines.append(f'[[sites.devices]]\nid = "truck-{i}"\nprofile = "truck"\n')
        lines.append(f'[[sites.devices]]\nid = "cam-{i}"\nprofile = "camera"\n')
    path.write_text("\n".join(lines))


def payloads(n: int, offset: int) -> list[tuple[str, bytes]]:
    """n messages, half truck locations and half camera heartbeats, each with its own timestamp."""
    out = []
    for k in range(n):
        i = k % DEVICES
        ts = TS0 + offset + k // DEVICES
        if k % 2:
            body = {
                "ts": ts,
                "waste_type": "wet",
                "route": "wet-north",
                "lat": 31.2 + i / 1e4,
                "lon": 121.4,
                "speed": 23.5,
                "heading": 90,
                "acc": True,
                "alarm_flags": 0,
                "load_kg": 812.5,
            }
            out.append((f"trucks/bench/truck-{i}/location", json.dumps(body).encode()))
        else:
            body = {
                "ts": ts,
                "uptime_s": k,
                "detections_today": 3,
                "interceptions_today": 1,
                "door_holds_today": 1,
            }
            out.append((f"elevators/bench/cam-{i}/heartbeat", json.dumps(body).encode()))
    return out


def publisher(  # noqa: PLR0917 (a process target takes positional arguments)
    port: int, rate: int, hold: float, qos: int, offset: int, result: mp.Queue
) -> None:  # type: ignore[type-arg]
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{offset}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    messages = payloads(int(rate * hold), offset)
    started = time.monotonic()
    infos = []
    for k, (topic, body) in enumerate(messages):
        due = started + k / rate
        delay = due - time.monotonic()
        if delay > 0.002:
            time.sleep(delay)
        infos.append(client.publish(topic, body, qos=qos))
    for info in infos[-1000:]:
        info.wait_for_publish(30)
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    result.put((len(messages), elapsed))


def bare(port: int, qos: int, expected: int, result: mp.Queue, ready: mp.Event) -> None:  # type: ignore[type-arg]
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    count = 0
    first = last = 0.0

    def on_message(*_: object) -> None:
        nonlocal count, first, last
        count += 1
        last = time.monotonic()
        if count == 1:
            first = last

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=True)
    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe([("trucks/#", qos), ("elevators/#", qos)])
    deadline = time.monotonic() + 300
    client.loop_start()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    client.loop_stop()
    result.put((count, last - first if count > 1 else 0.0))


def stored(vm_url: str) -> int:
    urllib.request.urlopen(f"{vm_url}/internal/force_flush").read()  # noqa: S310
    total = 0
    for metric in ("truck_lat", "camera_uptime_s"):
        q = urllib.parse.urlencode({"match[]": metric})
        for line in urllib.request.urlopen(f"{vm_url}/api/v1/export?{q}").read().splitlines():  # noqa: S310
            total += len(json.loads(line)["timestamps"])
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--hold", type=float, default=20.0, help="seconds each rate is held")
    parser.add_argument("--qos", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(
        f"{'qos':>3} {'offered/s':>9} {'sent/s':>8} {'bare/s':>8} {'agent/s':>8} {'lost':>6} "
        f"{'agent CPU':>9} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        offset = 0
        for qos in args.qos:
            for rate in args.rates:
                vm = start_victoria_metrics(work / f"vm-{qos}-{rate}")
                mq = start_mosquitto(work / f"mq-{qos}-{rate}", extra_config=queue_settings())
                config = work / "bench.toml"
                write_config(config, vm.url, mq.port)
                agent = subprocess.Popen(
                    [sys.executable, "-m", "linli.cli", "edge", "run", "--config", str(config)]
                )
                try:
                    time.sleep(3)  # the agent connects and subscribes (the points counted below are exact)
                    n = int(rate * args.hold)
                    results: mp.Queue = mp.Queue()  # type: ignore[type-arg]
                    ready = mp.Event()
                    sub = mp.Process(target=bare, args=(mq.port, qos, n, results, ready))
                    sub.start()
                    ready.wait(10)
                    cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
                    pub = mp.Process(target=publisher, args=(mq.port, rate, args.hold, qos, offset, results))
                    pub.start()
                    pub.join()
                    sub.join()
                    got = [results.get(), results.get()]
                    sent, sent_s = max(got, key=lambda r: r[0] if r[1] > 0 else -1)
                    bare_n, bare_s = min(got, key=lambda r: r[0])
                    deadline = time.monotonic() + 60
                    while stored(vm.url) < sent and time.monotonic() < deadline:
                        time.sleep(0.5)
                    agent_s = time.monotonic() - t0
                    cpu = (cpu_seconds(agent.pid) - cpu0) / agent_s
                    points = stored(vm.url)
                finally:
                    agent.terminate()
                    agent.wait(30)
                    mq.stop()
                    vm.stop()
                offset += 10_000_000
                bare_rate = bare_n / bare_s if bare_s else 0.0
                agent_rate = points / agent_s
                print(
                    f"{qos:>3} {rate:>9} {sent / sent_s:>8.0f} {bare_rate:>8.0f} {agent_rate:>8.0f} "
                    f"{sent - points:>6} {cpu:>8.0%} {points / max(bare_n, 1):>6.2f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
