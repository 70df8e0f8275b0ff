"""MQTT ingest: camera and truck messages through the edge agent into VictoriaMetrics.

For each QoS and offered rate, the same load is taken twice from a fresh Mosquitto, one
consumer at a time so neither takes CPU from the other: first by a bare paho-mqtt
subscriber that only counts messages, then by the edge agent (its own process) storing
them in VictoriaMetrics. The load is half truck locations, half camera heartbeats from
100 trucks and 100 cameras, sent for --hold seconds by a raw-socket publisher that costs
a few percent of a core (see mqttload.py). Every message is counted in and every point
out, so loss is exact.

A rate is held when nothing is lost and the consumer finishes within LAG_LIMIT_S of the
publisher: a consumer that falls behind builds a backlog in the broker and ends late.

With --tls, every consumer also takes the same load over TLS (a second listener of the same
broker, with a certificate from `linli broker certs`; the publisher stays on plain TCP), so the
cost of TLS is the ratio of the highest rates held with and without it.

    .venv/bin/python benchmarks/mqtt_ingest.py --hold 60 [--tls]
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
from dataclasses import dataclass
from pathlib import Path

from harness import cpu_seconds
from linli.cloud.broker.certs import make_ca, make_leaf
from linli.cloud.broker.configs import QUEUES
from linli.localservers import LocalServer, free_port, start_mosquitto, start_victoria_metrics
from mqttload import Publisher

DEVICES = 100  # of each kind
TS0 = 1_790_000_000_000
# Finishing later than this after the publisher means the consumer built a backlog.
LAG_LIMIT_S = 2.0
# The agent writes a batch at least every second; the store then needs a moment to index it.
AGENT_FLUSH_S = 1.0
# Each run's points lie within this many seconds of its start (timestamps advance 1 ms per
# round of all 200 devices); the warm-up lies WINDOW_S before them.
WINDOW_S = 400


@dataclass(frozen=True)
class Link:
    """How a consumer reaches the broker: plain TCP, or TLS trusting `ca`."""

    port: int
    ca: Path | None = None

    @property
    def name(self) -> str:
        return "tls" if self.ca else "tcp"


def write_config(path: Path, vm_url: str, link: Link, client_id: str) -> None:
    tls = f'[mqtt.tls]\nca = "{link.ca}"\n' if link.ca else ""
    lines = [
        '[agent]\nname = "bench"\nlog_level = "warning"\n',
        f'[writer]\nkind = "influxdb2"\nurl = "{vm_url}"\norg = "linli"\nbucket = "linli"\n'
        f"batch_size = 5000\nflush_interval = {AGENT_FLUSH_S}\n",
        f'[mqtt]\nport = {link.port}\nclient_id = "{client_id}"\nhealth_interval = 5.0\n{tls}',
        '[[sites]]\nid = "bench"\n',
    ]
    for i in range(DEVICES):
        lines.append(f'[[sites.devices]]\nid = "truck-{i}"\nprofile = "truck"\n')
        lines.append(f'[[sites.devices]]\nid = "cam-{i}"\nprofile = "camera"\n')
    path.write_text("\n".join(lines))


def payloads(n: int, offset_ms: int) -> list[tuple[str, bytes]]:
    """n messages alternating truck location and camera heartbeat, every device in turn.

    Each device's messages are 1 ms apart, so every message is its own point.
    """
    out = []
    for k in range(n):
        i = (k // 2) % DEVICES
        ts = TS0 + offset_ms + k // (2 * DEVICES)
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


def publish(port: int, messages: list[tuple[str, bytes]], rate: float, qos: int, result: mp.Queue) -> None:  # type: ignore[type-arg]
    """Process target: send the messages at `rate`, report (started, finished) in monotonic time."""
    pub = Publisher(port, f"bench-pub-{os.getpid()}")
    result.put(pub.send(messages, rate, qos))
    pub.close()


def bare(  # noqa: PLR0917 (a process target takes positional arguments)
    link: Link,
    qos: int,
    expected: int,
    deadline_s: float,
    result: mp.Queue,
    ready: mp.Event,  # type: ignore[type-arg]
) -> None:
    """Process target: a plain paho subscriber that counts; reports (count, last arrival, CPU s)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    count = 0
    last = 0.0

    def on_message(*_: object) -> None:
        nonlocal count, last
        count += 1
        last = time.monotonic()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{os.getpid()}")
    if link.ca is not None:
        client.tls_set(ca_certs=str(link.ca))
    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.connect("127.0.0.1", link.port)
    client.subscribe([("trucks/#", qos), ("elevators/#", qos)])
    deadline = time.monotonic() + deadline_s
    client.loop_start()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    t = os.times()
    result.put((count, last, t.user + t.system))


def stored(vm_url: str, offset_ms: int) -> int:
    """Points of the two metrics from TS0 + `offset_ms` on (WINDOW_S), counted by VictoriaMetrics."""
    urllib.request.urlopen(f"{vm_url}/internal/force_flush").read()  # noqa: S310
    query = f'sum(count_over_time({{__name__=~"truck_lat|camera_uptime_s"}}[{WINDOW_S}s]))'
    # The window is (time - WINDOW_S, time]: it starts 1 ms before the first point.
    at = (TS0 + offset_ms - 1) / 1000 + WINDOW_S
    q = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}", "nocache": "1"})
    body = json.loads(urllib.request.urlopen(f"{vm_url}/api/v1/query?{q}").read())  # noqa: S310
    result = body["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


@dataclass
class Run:
    consumer: str
    link: str
    qos: int
    offered: int
    sent_rate: float
    got: int
    expected: int
    rate: float  # messages consumed per second, from the first send to the last arrival
    lag_s: float  # how long after the publisher's last send the consumer finished
    cpu: float  # share of one core

    @property
    def held(self) -> bool:
        return self.got == self.expected and self.lag_s <= LAG_LIMIT_S

    def row(self) -> str:
        held = "yes" if self.held else "no"
        return (
            f"{self.qos:>3} {self.link:>4} {self.offered:>9} {self.sent_rate:>8.0f} {self.consumer:>6} "
            f"{self.rate:>9.0f} "
            f"{self.expected - self.got:>8} {self.lag_s:>6.1f} {self.cpu:>6.0%} {held:>5}"
        )


def run_bare(  # noqa: PLR0917
    mq: LocalServer, link: Link, qos: int, rate: int, hold: float, offset_ms: int
) -> Run:
    messages = payloads(int(rate * hold), offset_ms)
    results: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    timing: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    ready = mp.Event()
    sub = mp.Process(target=bare, args=(link, qos, len(messages), hold + 60, results, ready))
    sub.start()
    ready.wait(10)
    pub = mp.Process(target=publish, args=(mq.port, messages, rate, qos, timing))
    pub.start()
    started, finished = timing.get()
    pub.join()
    count, last, cpu = results.get()
    sub.join()
    elapsed = max(last, finished) - started
    return Run(
        "bare",
        link.name,
        qos,
        rate,
        len(messages) / (finished - started),
        count,
        len(messages),
        count / elapsed,
        max(0.0, last - finished),
        cpu / elapsed,
    )


def run_agent(  # noqa: PLR0917
    work: Path, mq: LocalServer, link: Link, qos: int, rate: int, hold: float, offset_ms: int
) -> Run:
    vm = start_victoria_metrics(work / f"vm-{qos}-{rate}-{link.name}")
    config = work / f"agent-{qos}-{rate}-{link.name}.toml"
    write_config(config, vm.url, link, f"bench-agent-{qos}-{rate}-{link.name}")
    agent = subprocess.Popen([sys.executable, "-m", "linli.cli", "edge", "run", "--config", str(config)])
    try:
        # One message per device first: when all are stored, the agent is subscribed and
        # has met every device, and the count below starts from a known number.
        warmup_ms = offset_ms - WINDOW_S * 1000
        warmup = payloads(2 * DEVICES, warmup_ms)
        probe = Publisher(mq.port, "bench-warmup")
        deadline = time.monotonic() + 30
        while stored(vm.url, warmup_ms) < len(warmup):
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not store the warm-up messages within 30 s")
            probe.send(warmup, 1e6, 0)  # sent again until the agent has subscribed
            time.sleep(0.5)
        probe.close()
        messages = payloads(int(rate * hold), offset_ms)
        timing: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        cpu0 = cpu_seconds(agent.pid)
        pub = mp.Process(target=publish, args=(mq.port, messages, rate, qos, timing))
        pub.start()
        started, finished = timing.get()
        pub.join()
        deadline = finished + 60
        while (got := stored(vm.url, offset_ms)) < len(messages) and time.monotonic() < deadline:
            time.sleep(0.25)
        done = time.monotonic()
        cpu = cpu_seconds(agent.pid) - cpu0
    finally:
        agent.terminate()
        agent.wait(30)
        vm.stop()
    elapsed = done - started
    # The agent's last batch waits up to its flush interval by design: not a backlog.
    lag = max(0.0, done - finished - AGENT_FLUSH_S)
    return Run(
        "agent",
        link.name,
        qos,
        rate,
        len(messages) / (finished - started),
        got,
        len(messages),
        got / elapsed,
        lag,
        cpu / elapsed,
    )


def start_broker(work: Path, tls: bool) -> tuple[LocalServer, list[Link]]:
    """Mosquitto with linli's queue limits; with `tls`, a TLS listener beside the plain one."""
    extra = QUEUES
    links: list[Link] = []
    if tls:
        certs = work / "certs"
        make_ca(certs)
        make_leaf(certs, "server", "localhost", server_names=["localhost", "127.0.0.1"])
        tls_port = free_port()
        extra += (
            f"listener {tls_port} 127.0.0.1\ncafile {certs}/ca.crt\ncertfile {certs}/server.crt\n"
            f"keyfile {certs}/server.key\nrequire_certificate false\n"
        )
        links.append(Link(tls_port, certs / "ca.crt"))
    mq = start_mosquitto(work / f"mq-{len(list(work.iterdir()))}", extra_config=extra)
    return mq, [Link(mq.port), *links]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    qos0_rates = [20000, 25000, 30000, 34000, 38000, 42000, 46000]
    parser.add_argument("--rates", type=int, nargs="+", default=qos0_rates, help="QoS 0 rates offered")
    parser.add_argument(
        "--qos1-rates", type=int, nargs="+", default=[8000, 12000, 16000, 20000, 24000, 28000]
    )
    parser.add_argument("--hold", type=float, default=60.0, help="seconds each rate is held")
    parser.add_argument("--qos", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tls", action="store_true", help="also over TLS, to compare")
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; hold {args.hold:.0f} s"
    )
    print(
        f"{'qos':>3} {'link':>4} {'offered/s':>9} {'sent/s':>8} {'who':>6} {'taken/s':>9} {'lost':>8} "
        f"{'lag s':>6} {'CPU':>6} {'held':>5}",
        flush=True,
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        offset_ms = 0
        for qos in args.qos:
            mq, links = start_broker(work, args.tls)
            try:
                failed: set[tuple[str, str]] = set()
                for rate in sorted(args.rates if qos == 0 else args.qos1_rates):
                    for link in links:
                        for who in ("bare", "agent"):
                            if (who, link.name) in failed:
                                continue  # a consumer that could not hold a rate will not hold a higher one
                            offset_ms += 1_000_000
                            if who == "bare":
                                run = run_bare(mq, link, qos, rate, args.hold, offset_ms)
                            else:
                                run = run_agent(work, mq, link, qos, rate, args.hold, offset_ms)
                            runs.append(run)
                            print(run.row(), flush=True)
                            if not run.held:
                                failed.add((who, link.name))
            finally:
                mq.stop()
    print()
    for qos in args.qos:
        best = {
            (who, link): max(
                (r.offered for r in runs if r.qos == qos and r.consumer == who and r.link == link and r.held),
                default=0,
            )
            for who in ("bare", "agent")
            for link in ("tcp", "tls")
        }
        ratio = best["agent", "tcp"] / best["bare", "tcp"] if best["bare", "tcp"] else 0.0
        print(
            f"QoS {qos}: highest rate held {args.hold:.0f} s with zero loss: bare {best['bare', 'tcp']}/s, "
            f"agent {best['agent', 'tcp']}/s, ratio {ratio:.2f}"
        )
        if args.tls:
            tls_ratio = best["agent", "tls"] / best["agent", "tcp"] if best["agent", "tcp"] else 0.0
            print(
                f"QoS {qos} over TLS: bare {best['bare', 'tls']}/s, agent {best['agent', 'tls']}/s, "
                f"{tls_ratio:.2f} of the agent's rate without TLS"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
