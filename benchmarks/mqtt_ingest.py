"""MQTT ingest: a city's devices through the agent, beside the ceilings, offered the same load.

The load (mqttload.py) is a fleet of devices, each on its own topic with its own series and
values, spread over many publisher connections, every message stamped with the current clock.
By default 20,000 devices send one message each every 10 s (2,000/s): a third trucks, a third
elevator cameras, a third rescue points, 100 devices per connection. `--rate` makes the stress
case instead: every device sends as often as needed to offer that rate.

Each consumer takes the same load from the same Mosquitto in turn, alone on the machine:

- `mosquitto_sub` (C) writing to /dev/null: the physical ceiling;
- a bare paho-mqtt subscriber that only counts;
- the agent (its own process) through its durable buffer into VictoriaMetrics;
- with `--peers`, Node-RED's batched flow into the same VictoriaMetrics (peers/nodered.py).

Every message is counted in and every point out, so loss is exact. A load is *held* when
nothing is lost and the consumer is done within the lag allowance (`--lag`, 2 s) of the
publisher's last message: the subscribers when the last message arrived, the agent and
Node-RED when the last point can be read back from the store (so their allowance includes
their batch interval of 1 s). A consumer that fell behind is not offered more.

    .venv/bin/python benchmarks/mqtt_ingest.py                       # 20,000 devices, 2,000/s
    .venv/bin/python benchmarks/mqtt_ingest.py --devices 200 --rate 20000 40000 --hold 30

Overload (`--then RATE`): each --rate is offered for --hold seconds, then RATE for `--after`
seconds, and the agent's own figures (/health) are read every second: what it stored each
second, what it shed and why, and what waits, so that a collapse shows as it happens. It is
*caught up* once no more than two seconds of the normal load wait in it (the lag allowance).
`--before DIR` runs the agent from another checkout's source roots beside this one, in turn,
`--repeat` times:

    .venv/bin/python benchmarks/mqtt_ingest.py --devices 200 --rate 40000 --then 10000 \
        --consumers agent --hold 30 --before /path/to/old/checkout --repeat 3

`--agent-cpu F` holds the agent to F of one core (a control group's quota; needs root), a
smaller edge box: on a quiet machine the agent stores more than the publishers can offer on
the same cores, and twice its held rate can then be offered (`cpucap.py`):

    .venv/bin/python benchmarks/mqtt_ingest.py --devices 200 --per-connection 25 --publishers 4 \
        --agent-cpu 0.25 --rate 12000 24000 --held 12000 --then 3000 --consumers agent --hold 30
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path

from cpucap import CapError, CpuCap
from harness import cpu_seconds
from linli.cloud.broker.certs import make_ca, make_leaf
from linli.cloud.broker.configs import QUEUES
from linli.demo.servers import LocalServer, free_port, require_binary, start_mosquitto, start_victoria_metrics
from mqttload import KINDS, Device, Fleet, Publisher, parse_every

# How long after the allowance a consumer that fell behind is waited for, to say by how much.
BEHIND_WAIT_S = 30.0
# The agent's batches go out at least this often.
AGENT_FLUSH_S = 1.0
# Overload runs: the lowest stored rate is averaged over this long (the writer confirms in batches).
WINDOW_S = 5.0
# The warm-up offers every device once at this rate, before the clock starts. At 5,000/s a loaded
# machine's agent (meeting 20,000 topics for the first time) fell 2 s behind and shed some of it,
# and the run was void.
WARMUP_RATE = 2000.0
CONSUMERS = ("mosquitto_sub", "paho", "agent", "node-red", "agent-before")
# A consumer's process, its MQTT client id and the filters it subscribes to.
Started = tuple[subprocess.Popen[bytes], str, list[str]]


def warmup(fleet: Fleet) -> tuple[Fleet, float]:
    """The same devices, each sending once at WARMUP_RATE in all, and how long that takes."""
    every = max(1.0, fleet.size / WARMUP_RATE)
    intervals = dict.fromkeys(fleet.counts, every)
    return Fleet(fleet.counts, intervals, fleet.per_connection, fleet.qos, fleet.seed + 1), every


@dataclass(frozen=True)
class Link:
    """How a consumer reaches the broker: plain TCP, or TLS trusting `ca`."""

    port: int
    ca: Path | None = None

    @property
    def name(self) -> str:
        return "tls" if self.ca else "tcp"


@dataclass
class Sent:
    started: float  # monotonic
    finished: float
    start_ms: int  # wall clock of the schedule's start
    sent: int
    cpu_s: float


@dataclass
class Second:
    """The agent's own figures at one moment of an overload run (from its /health)."""

    t: float  # seconds since the first send (while sampling: the monotonic clock)
    written: int  # lines the store confirmed, in all
    shed: dict[str, int]  # QoS 0 messages shed, by reason, in all
    waiting: int  # messages and lines taken and not yet stored: the inbox and the buffer


def read_health(port: int) -> tuple[int, dict[str, int], int] | None:
    """(written, shed by reason, waiting) from an agent's /health; None when it does not answer."""
    try:
        body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
    except (OSError, ValueError):
        return None
    # An agent from before shedding was counted by reason said only `overflow`.
    shed = body.get("shed", {"overflow": body["mqtt"].get("overflow", 0)})
    return body["writer"]["written"], shed, body.get("queued", 0) + body["buffer"]["lines"]


class Sampler:
    """Reads the agents' /health once a second, in a thread, from `start` (monotonic) on."""

    def __init__(self, ports: list[int], start: float) -> None:
        self.ports = ports
        self.start = start
        self.seconds: list[Second] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(max(0.0, self.start + tick - time.monotonic())):
            tick += 1
            read = [read_health(port) for port in self.ports]
            if any(r is None for r in read):
                continue  # busy past the scrape's timeout: that second is missing, not zero
            shed: dict[str, int] = {}
            for _, by_reason, _ in read:  # type: ignore[misc]
                for reason, n in by_reason.items():
                    shed[reason] = shed.get(reason, 0) + n
            written = sum(r[0] for r in read)  # type: ignore[index]
            waiting = sum(r[2] for r in read)  # type: ignore[index]
            self.seconds.append(Second(time.monotonic(), written, shed, waiting))

    def stop(self) -> list[Second]:
        self._stop.set()
        self._thread.join()
        return self.seconds


@dataclass
class Took:
    """What a consumer did with a load: done when (monotonic), how many, its CPU and the broker's."""

    done: float
    got: int | None  # None: not known (mosquitto_sub killed before the end)
    cpu_s: float
    broker_s: float


@dataclass
class Run:
    consumer: str
    link: str
    qos: int
    devices: int
    connections: int
    offered: float  # messages/s
    sent_rate: float
    expected: int
    got: int | None  # None: mosquitto_sub did not finish, so its count is unknown
    rate: float  # messages taken per second, from the first send to done
    lag_s: float  # done this long after the publisher's last send
    cpu: float  # the consumer's share of one core
    broker_cpu: float
    publisher_cpu: float
    lag_allowance_s: float
    # Overload runs of the agent: its figures each second from the first send (see Seconds).
    seconds: list[Second] | None = None

    @property
    def held(self) -> bool:
        return self.got == self.expected and self.lag_s <= self.lag_allowance_s

    def row(self) -> str:
        lost = "?" if self.got is None else str(self.expected - self.got)
        return (
            f"{self.qos:>3} {self.link:>4} {self.devices:>7} {self.connections:>5} {self.offered:>9.0f} "
            f"{self.sent_rate:>8.0f} {self.consumer:>13} {self.rate:>9.0f} {lost:>7} {self.lag_s:>6.1f} "
            f"{self.cpu:>6.1%} {self.broker_cpu:>6.1%} {'yes' if self.held else 'no':>5}"
        )


HEADER = (
    f"{'qos':>3} {'link':>4} {'devices':>7} {'conns':>5} {'offered/s':>9} {'sent/s':>8} {'consumer':>13} "
    f"{'taken/s':>9} {'lost':>7} {'lag s':>6} {'CPU':>6} {'broker':>6} {'held':>5}"
)


def publish(  # noqa: PLR0917 (a process target takes positional arguments)
    fleet: Fleet,
    port: int,
    hold: float,
    part: tuple[int, int],
    ready: Barrier,
    result: mp.Queue,  # type: ignore[type-arg]
) -> None:
    """Process target: offer this part of the fleet's messages for `hold` seconds; report a Sent."""
    pub = Publisher(fleet, port, f"bench-pub-{os.getpid()}", part=part)
    ready.wait()  # every part connected: the schedules start together
    cpu0 = os.times()
    started, finished, start_ms = pub.send(hold)
    cpu1 = os.times()
    result.put(Sent(started, finished, start_ms, pub.sent, cpu1.user + cpu1.system - cpu0.user - cpu0.system))
    pub.close()


def offer(fleet: Fleet, port: int, hold: float, publishers: int = 1) -> Sent:
    """The fleet's messages for `hold` seconds from `publishers` processes, each its share of
    the connections; what they sent together."""
    n = max(1, min(publishers, fleet.connections))
    results: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    ready = mp.Barrier(n)
    # Forked, the publishers inherit the fleet: nothing to pickle or build again.
    procs = [mp.Process(target=publish, args=(fleet, port, hold, (k, n), ready, results)) for k in range(n)]
    for proc in procs:
        proc.start()
    parts: list[Sent] = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return Sent(
        min(p.started for p in parts),
        max(p.finished for p in parts),
        min(p.start_ms for p in parts),
        sum(p.sent for p in parts),
        sum(p.cpu_s for p in parts),
    )


def wait_subscribed(broker: LocalServer, client_id: str, filters: list[str], timeout: float = 60.0) -> None:
    """Until the broker's log shows `client_id` subscribed to every filter (log_type subscribe).

    Mosquitto logs a subscription as it adds it, on its one thread: a message published after
    the line appeared reaches the subscriber.
    """
    wanted = {f"{client_id} {q} {f}" for f in filters for q in (0, 1, 2)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = {line.split(": ", 1)[-1] for line in broker.log_path.read_text(errors="replace").splitlines()}
        if sum(1 for f in filters if any(f"{client_id} {q} {f}" in lines for q in (0, 1, 2))) == len(filters):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{client_id} did not subscribe to {filters} within {timeout:.0f} s ({wanted})")


@dataclass
class Bench:
    """One broker and what every run shares."""

    work: Path
    broker: LocalServer
    hold: float
    lag: float
    profile: Path | None = None
    agents: int = 1  # agent processes, each with its share of the devices
    batch_ms: int | None = None  # the agent's [mqtt] batch_ms; None: its default
    then: float | None = None  # overload runs: after the hold, this rate (msg/s) ...
    after: float = 20.0  # ... for this long
    before: Path | None = None  # a checkout whose agent runs as "agent-before"
    publishers: int = 1  # publisher processes offering each load together
    cap: CpuCap | None = None  # the agents' CPU cap, all of them together

    def _profile(self, pid: int, tag: str) -> subprocess.Popen[bytes] | None:
        """py-spy sampling `pid` for the hold, its collapsed stacks in the --profile folder."""
        if self.profile is None:
            return None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            raise SystemExit("mqtt_ingest: --profile needs py-spy: .venv/bin/pip install py-spy")
        self.profile.mkdir(parents=True, exist_ok=True)
        out = self.profile / f"{tag}.txt"
        argv = [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(round(self.hold)),
            "--format",
            "raw",
            "--rate",
            "250",
            "--threads",
            "--nonblocking",
            "--output",
            str(out),
        ]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _run(
        self, consumer: str, link: Link, fleet: Fleet, *, sent: Sent, took: Took, expected: int | None = None
    ) -> Run:
        elapsed = max(took.done - sent.started, 1e-9)
        return Run(
            consumer=consumer,
            link=link.name,
            qos=fleet.qos,
            devices=fleet.size,
            connections=fleet.connections,
            offered=fleet.rate,
            sent_rate=sent.sent / (sent.finished - sent.started),
            expected=expected if expected is not None else fleet.messages(self.hold),
            got=took.got,
            rate=(took.got or 0) / elapsed,
            lag_s=max(0.0, took.done - sent.finished),
            cpu=took.cpu_s / elapsed,
            broker_cpu=took.broker_s / elapsed,
            publisher_cpu=sent.cpu_s / (sent.finished - sent.started),
            lag_allowance_s=self.lag,
        )

    def mosquitto_sub(self, link: Link, fleet: Fleet) -> Run:
        """The C client, its output to /dev/null; done when it exits after the expected count."""
        expected = fleet.messages(self.hold)
        client_id = f"bench-c-{time.monotonic_ns()}"
        argv = [require_binary("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(link.port), "-i", client_id]
        argv += ["-q", str(fleet.qos), "-C", str(expected)]
        for f in fleet.filters():
            argv += ["-t", f]
        if link.ca is not None:
            argv += ["--cafile", str(link.ca)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        exited: list[tuple[float, float]] = []

        def reap() -> None:
            _, _, usage = os.wait4(proc.pid, 0)
            exited.append((time.monotonic(), usage.ru_utime + usage.ru_stime))

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        wait_subscribed(self.broker, client_id, fleet.filters())
        broker0 = cpu_seconds(self.broker.proc.pid)
        sent = offer(fleet, self.broker.port, self.hold, self.publishers)
        reaper.join(timeout=max(0.0, sent.finished + self.lag + BEHIND_WAIT_S - time.monotonic()))
        broker_s = cpu_seconds(self.broker.proc.pid) - broker0
        killed = not exited
        if killed:
            proc.kill()
            reaper.join()
        done, cpu_s = exited[0]
        # Killed at the deadline: how many it had taken is unknown, only that it was not all.
        got = None if killed else expected
        return self._run("mosquitto_sub", link, fleet, sent=sent, took=Took(done, got, cpu_s, broker_s))

    def paho(self, link: Link, fleet: Fleet) -> Run:
        """A paho subscriber that only counts; done at the last arrival."""
        expected = fleet.messages(self.hold)
        client_id = f"bench-paho-{time.monotonic_ns()}"
        results: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        deadline_s = self.hold + self.lag + BEHIND_WAIT_S + 60
        sub = mp.Process(
            target=count_with_paho,
            args=(link, client_id, fleet.filters(), fleet.qos, expected, deadline_s, results),
        )
        sub.start()
        wait_subscribed(self.broker, client_id, fleet.filters())
        broker0 = cpu_seconds(self.broker.proc.pid)
        sent = offer(fleet, self.broker.port, self.hold, self.publishers)
        count, last, cpu_s = results.get()
        broker_s = cpu_seconds(self.broker.proc.pid) - broker0
        sub.join()
        return self._run(
            "paho", link, fleet, sent=sent, took=Took(max(last, sent.finished), count, cpu_s, broker_s)
        )

    def into_store(
        self,
        name: str,
        link: Link,
        fleet: Fleet,
        start: Callable[[Path, str, str], list[Started]],
        health_ports: list[int] | None = None,
    ) -> Run:
        """A consumer that writes to VictoriaMetrics: done when every point can be read back.

        `start(workdir, store_url, client_id)` starts its processes. Every device is offered
        once first, so that the store knows every series and the consumer has met every device.
        With `then` set, the load drops to that rate for `after` seconds after the hold, and
        `health_ports` (the agents' /health, filled in by `start`) are read every second.
        """
        tag = f"{name}-{fleet.qos}-{link.name}-{fleet.size}-{round(fleet.rate)}-{time.monotonic_ns()}"
        vm = start_victoria_metrics(self.work / f"vm-{tag}")
        started = start(self.work / tag, vm.url, f"bench-{tag}")
        procs = [proc for proc, _, _ in started]
        try:
            for _, client_id, filters in started:
                wait_subscribed(self.broker, client_id, filters)
            metrics = fleet.metrics()
            warm_fleet, warm_s = warmup(fleet)
            warm = offer(warm_fleet, self.broker.port, warm_s, self.publishers)
            deadline = time.monotonic() + 60
            while (base := stored(vm.url, metrics, warm.start_ms)) < warm.sent:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} stored {base} of {warm.sent} warm-up messages within 60 s")
                time.sleep(0.25)
            expected = fleet.messages(self.hold)
            cpu0, broker0 = sum(cpu_seconds(p.pid) for p in procs), cpu_seconds(self.broker.proc.pid)
            spy = self._profile(procs[0].pid, tag) if name == "agent" else None
            sampler = Sampler(health_ports, time.monotonic()) if self.then and health_ports else None
            sent = offer(fleet, self.broker.port, self.hold, self.publishers)
            if self.then:
                normal = rated(fleet, self.then)
                expected += normal.messages(self.after)
                then = offer(normal, self.broker.port, self.after, self.publishers)
                sent.finished, sent.sent = then.finished, sent.sent + then.sent
            if spy is not None:
                spy.wait()
            broker_s = cpu_seconds(self.broker.proc.pid) - broker0
            # Overloaded on purpose, it never has them all: what it sheds is counted by the agent.
            deadline = sent.finished + self.lag + (0 if self.then else BEHIND_WAIT_S)
            while (got := stored(vm.url, metrics, warm.start_ms) - base) < expected:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            done = time.monotonic()
            cpu_s = sum(cpu_seconds(p.pid) for p in procs) - cpu0
            seconds = sampler.stop() if sampler is not None else None
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            vm.stop()
        run = self._run(
            name, link, fleet, sent=sent, took=Took(done, got, cpu_s, broker_s), expected=expected
        )
        if seconds is not None:
            run.seconds = [
                Second(round(x.t - sent.started, 2), x.written, x.shed, x.waiting) for x in seconds
            ]
        return run

    def agent_before(self, link: Link, fleet: Fleet) -> Run:
        """The agent of the `before` checkout (its source roots first on PYTHONPATH)."""
        assert self.before is not None
        # src/ since the one-tree layout; the roots of the checkouts from before it.
        roots = ("src", "catalog", "edge", "cloud", "dashboards", "firmware-sim")
        paths = [str(self.before / r) for r in roots if (self.before / r).is_dir()]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        return self.agent(link, fleet, env=env, name="agent-before")

    def agent(self, link: Link, fleet: Fleet, env: dict[str, str] | None = None, name: str = "agent") -> Run:
        """The agent; with `agents` > 1, that many processes, each owning its share of the
        devices and subscribing to their topics only (the split a deployment makes by site)."""

        def start(work: Path, vm_url: str, client_id: str) -> list[Started]:
            work.mkdir(parents=True)
            devices = [dev for devs in fleet.devices.values() for dev in devs]
            shares = [devices[i :: self.agents] for i in range(self.agents)]
            started = []
            ports.clear()
            for i, share in enumerate(shares):
                config = work / f"agent-{i}.toml"
                cid = client_id if self.agents == 1 else f"{client_id}-{i}"
                filters = fleet.filters() if self.agents == 1 else [d.topic for d in share]
                ports.append(free_port())
                write_agent_config(
                    config,
                    share,
                    filters,
                    vm_url,
                    link,
                    cid,
                    work / f"buffer-{i}.sqlite",
                    self.batch_ms,
                    ports[-1],
                )
                argv = [sys.executable, "-m", "linli.cli", "edge", "run", "--config", str(config)]
                proc = subprocess.Popen(argv, env=env)
                if self.cap is not None:
                    self.cap.add(proc.pid)
                started.append((proc, cid, filters))
            return started

        ports: list[int] = []
        return self.into_store(
            name if self.agents == 1 else f"{name} x{self.agents}", link, fleet, start, ports
        )

    def node_red(self, link: Link, fleet: Fleet) -> Run:
        from peers import nodered

        def start(work: Path, vm_url: str, client_id: str) -> list[Started]:
            proc = nodered.start(work, link.port, link.ca, vm_url, client_id, fleet.filters(), fleet.qos)
            return [(proc, client_id, fleet.filters())]

        return self.into_store("node-red", link, fleet, start)


def count_with_paho(  # noqa: PLR0917 (a process target takes positional arguments)
    link: Link,
    client_id: str,
    filters: list[str],
    qos: int,
    expected: int,
    deadline_s: float,
    result: mp.Queue,  # type: ignore[type-arg]
) -> None:
    """Process target: count messages until `expected`; report (count, last arrival, CPU s)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    count = 0
    last = 0.0

    def on_message(*_: object) -> None:
        nonlocal count, last
        count += 1
        last = time.monotonic()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if link.ca is not None:
        client.tls_set(ca_certs=str(link.ca))
    client.on_message = on_message
    client.connect("127.0.0.1", link.port)
    client.subscribe([(f, qos) for f in filters])
    deadline = time.monotonic() + deadline_s
    client.loop_start()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    t = os.times()
    result.put((count, last or time.monotonic(), t.user + t.system))


def write_agent_config(  # noqa: PLR0917
    path: Path,
    devices: list[Device],
    filters: list[str],
    vm_url: str,
    link: Link,
    client_id: str,
    buffer: Path,
    batch_ms: int | None = None,
    metrics: int | None = None,
) -> None:
    """The agent's config: these devices, by site, subscribing to `filters`; the agent's
    defaults otherwise."""
    tls = f'[mqtt.tls]\nca = "{link.ca}"\n' if link.ca else ""
    batch = f"batch_ms = {batch_ms}\n" if batch_ms is not None else ""
    serve = f'metrics = "127.0.0.1:{metrics}"\n' if metrics is not None else ""
    # QoS 1 subscriptions, so that a QoS 1 load is delivered at QoS 1 (as to the other consumers).
    listed = ", ".join(f'"{f}"' for f in filters)
    lines = [
        f'[agent]\nname = "bench"\nlog_level = "warning"\n{serve}\n[buffer]\npath = "{buffer}"\n',
        f'[writer]\nkind = "influxdb2"\nurl = "{vm_url}"\norg = "linli"\nbucket = "linli"\n'
        f"flush_interval = {AGENT_FLUSH_S}\n",
        f'[mqtt]\nport = {link.port}\nclient_id = "{client_id}"\nsubscribe = [{listed}]\n{batch}{tls}',
    ]
    sites: dict[str, list[str]] = {}
    for dev in devices:
        sites.setdefault(dev.site, []).append(
            f'[[sites.devices]]\nid = "{dev.topic.split("/")[2]}"\nprofile = "{dev.kind.name}"\n'
        )
    for site, entries in sites.items():
        lines.append(f'[[sites]]\nid = "{site}"\n')
        lines.extend(entries)
    path.write_text("\n".join(lines))


def stored(vm_url: str, metrics: list[str], since_ms: int) -> int:
    """Points of `metrics` from `since_ms` until now, counted by VictoriaMetrics."""
    urllib.request.urlopen(f"{vm_url}/internal/force_flush").read()  # noqa: S310
    now = time.time() + 60  # the schedule's last timestamps may be a tick ahead of this clock
    window = int(now - since_ms / 1000) + 1
    query = f'sum(count_over_time({{__name__=~"{"|".join(metrics)}"}}[{window}s]))'
    q = urllib.parse.urlencode({"query": query, "time": f"{now:.3f}", "nocache": "1"})
    body = json.loads(urllib.request.urlopen(f"{vm_url}/api/v1/query?{q}").read())  # noqa: S310
    result = body["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def start_broker(work: Path, tls: bool) -> tuple[LocalServer, list[Link]]:
    """Mosquitto with linli's queue limits, logging subscriptions; with `tls`, a TLS listener too."""
    extra = QUEUES + "".join(f"log_type {t}\n" for t in ("error", "warning", "notice", "subscribe"))
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
    mq = start_mosquitto(work / f"mq-{time.monotonic_ns()}", extra_config=extra)
    return mq, [Link(mq.port), *links]


def fleets(args: argparse.Namespace, qos: int) -> Iterator[Fleet]:
    """The loads offered in turn: one per --rate (stress), else one per --devices."""
    kinds = args.kinds
    if args.rate:
        devices = args.devices[0]
        for rate in sorted(args.rate):
            intervals = dict.fromkeys(kinds, devices / rate)
            yield Fleet(split(devices, kinds), intervals, args.per_connection, qos)
    else:
        intervals = parse_every(args.every, kinds, 10.0)
        for n in sorted(args.devices):
            yield Fleet(split(n, kinds), intervals, args.per_connection, qos)


def rated(fleet: Fleet, rate: float) -> Fleet:
    """The same devices offering `rate` messages/s in all."""
    intervals = dict.fromkeys(fleet.counts, fleet.size / rate)
    return Fleet(fleet.counts, intervals, fleet.per_connection, fleet.qos, fleet.seed + 2)


def split(devices: int, kinds: list[str]) -> dict[str, int]:
    """`devices` in equal shares by kind, the remainder to the first kinds."""
    share, extra = divmod(devices, len(kinds))
    return {k: share + (1 if i < extra else 0) for i, k in enumerate(kinds)}


# Overload runs: (flag, type, metavar, help).
OVERLOAD_OPTIONS: tuple[tuple[str, type, str, str], ...] = (
    (
        "--then",
        float,
        "RATE",
        "overload: after each --rate, offer RATE for --after s; read the agent each second",
    ),
    (
        "--held",
        float,
        "RATE",
        "overload: the agent's highest held rate, to compare with (default: half --rate)",
    ),
    ("--before", Path, "CHECKOUT", "also run the agent of another checkout (its source roots), in turn"),
    ("--agent-cpu", float, "F", "hold the agent to F of one core (a cgroup's quota; needs root)"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--devices", type=int, nargs="+", default=[20000], help="devices offered (each a run)"
    )
    parser.add_argument(
        "--kinds",
        type=lambda s: s.split(","),
        default=list(KINDS),
        help=f"device kinds, comma-separated, equal shares (default {','.join(KINDS)})",
    )
    parser.add_argument(
        "--every",
        nargs="*",
        default=[],
        metavar="KIND=S",
        help="seconds between a device's messages, by kind (default 10 each)",
    )
    parser.add_argument("--rate", type=float, nargs="+", help="stress: offer these rates (msg/s) in turn")
    parser.add_argument(
        "--per-connection", type=int, default=100, help="devices on each publisher connection"
    )
    parser.add_argument("--hold", type=float, default=60.0, help="seconds each load is offered")
    parser.add_argument(
        "--publishers", type=int, default=1,
        help="publisher processes sharing the connections (one offers ~20,000/s on a busy machine)",
    )  # fmt: skip
    parser.add_argument("--qos", type=int, nargs="+", default=[0], choices=[0, 1])
    parser.add_argument("--tls", action="store_true", help="every consumer also takes the load over TLS")
    parser.add_argument(
        "--consumers",
        type=lambda s: s.split(","),
        default=list(CONSUMERS[:3]),
        help=f"comma-separated, of {','.join(CONSUMERS)} (default: all but node-red)",
    )
    parser.add_argument("--peers", action="store_true", help="add Node-RED (needs npm; see peers/nodered.py)")
    parser.add_argument("--lag", type=float, default=2.0, help="lag allowance in seconds, the same for all")
    parser.add_argument(
        "--agents", type=int, default=1,
        help="the agent as this many processes, each with its share of the devices (as by site)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-ms", type=int,
        help="the agent's [mqtt] batch_ms (default: the agent's own, 100)",
    )  # fmt: skip
    for flag, kind, metavar, text in OVERLOAD_OPTIONS:
        parser.add_argument(flag, type=kind, metavar=metavar, help=text)
    parser.add_argument("--after", type=float, default=20.0, help="seconds of --then's rate (default 20)")
    parser.add_argument("--repeat", type=int, default=1, help="offer every load this many times")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the agent with py-spy during each hold; collapsed stacks in DIR",
    )
    args = parser.parse_args(argv)
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"--kinds: unknown {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    wrong = set(args.consumers) - set(CONSUMERS)
    if wrong:
        parser.error(f"--consumers: unknown {', '.join(sorted(wrong))}; known: {', '.join(CONSUMERS)}")
    if args.per_connection < 1:
        parser.error("--per-connection must be at least 1")
    if args.publishers < 1:
        parser.error("--publishers must be at least 1")
    if args.before and "agent-before" not in args.consumers:
        args.consumers.insert(0, "agent-before")
    if args.peers and "node-red" not in args.consumers:
        args.consumers.append("node-red")
    try:
        parse_every(args.every, args.kinds, 10.0)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "node-red" in args.consumers:
        from peers import nodered

        missing = nodered.missing()
        if missing:
            print(f"node-red: skipped: {missing}", flush=True)
            args.consumers.remove("node-red")
        else:
            nodered.install(progress=print)
    machine = (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"machine: {machine}; hold {args.hold:.0f} s; lag allowance {args.lag:.1f} s for every consumer")
    try:
        cap = CpuCap(args.agent_cpu, f"linli-bench-{os.getpid()}") if args.agent_cpu else None
    except (CapError, ValueError) as exc:
        print(f"mqtt_ingest: --agent-cpu: {exc}", file=sys.stderr)
        return 2
    if cap is not None:
        print(f"the agent held to {cap.fraction:g} of one core (a cgroup's CPU quota)")
    print(HEADER, flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [run for qos in args.qos for run in offer_in_turn(args, Path(tmp), qos, cap)]
    finally:
        if cap is not None:
            cap.close()
    print()
    for line in summary(runs):
        print(line)
    if args.json:
        payload = {
            "machine": machine,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "runs": [{**asdict(r), "held": r.held, **overload_figures(r, args)} for r in runs],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def overload_figures(run: Run, args: argparse.Namespace) -> dict[str, object]:
    """An overload run's figures for the JSON (stored per second, shed, caught up)."""
    if run.seconds is None:
        return {}
    return {"overload": asdict(overload(run.seconds, args.hold, args.then))}


def offer_in_turn(args: argparse.Namespace, work: Path, qos: int, cap: CpuCap | None = None) -> list[Run]:
    """Every load to every consumer in turn, from one broker; a consumer that fell behind is
    not offered more."""
    runs: list[Run] = []
    mq, links = start_broker(work, args.tls)
    bench = Bench(
        work,
        mq,
        args.hold,
        args.lag,
        args.profile,
        args.agents,
        args.batch_ms,
        args.then,
        args.after,
        args.before,
        args.publishers,
        cap,
    )
    behind: set[tuple[str, str]] = set()
    try:
        for fleet in [f for f in fleets(args, qos) for _ in range(args.repeat)]:
            for link in links:
                for consumer in args.consumers:
                    if (consumer, link.name) in behind:
                        continue
                    try:
                        run = getattr(bench, consumer.replace("-", "_"))(link, fleet)
                    except RuntimeError as exc:  # it never took the load: say why, go on
                        print(f"{consumer} over {link.name}: failed: {exc}", flush=True)
                        if args.repeat == 1:  # else the same load's next repeat is another try
                            behind.add((consumer, link.name))
                        continue
                    runs.append(run)
                    print(run.row(), flush=True)
                    if run.seconds is not None:
                        for line in overload_lines(
                            run, args.held or fleet.rate / 2, args.hold, bench.then or 0
                        ):
                            print(f"    {line}", flush=True)
                    # Overloaded on purpose, or the same load again: offered again.
                    if not run.held and not args.then and args.repeat == 1:
                        behind.add((consumer, link.name))
    finally:
        mq.stop()
    return runs


@dataclass
class Overload:
    """What an overload run shows: stored per second, shed, and how soon it caught up."""

    stored_per_s: list[tuple[float, float]]  # (seconds since the first send, lines stored per second)
    median: float  # stored per second during the overload, past its first second
    lowest: float  # the lowest average over WINDOW_S during it: the writer confirms in batches
    shed: dict[str, int]
    caught_up_s: float | None  # after the load returned to normal; None: not within the run


def overload(seconds: list[Second], hold: float, normal: float) -> Overload:
    """The figures of an overload run from its samples; caught up once no more than two seconds
    of the normal load wait in the agent."""
    rates = [
        (b.t, (b.written - a.written) / (b.t - a.t)) for a, b in itertools.pairwise(seconds) if b.t > a.t
    ]
    during = sorted(r for t, r in rates if 1.0 < t <= hold)
    windows = []
    for i, a in enumerate(seconds):
        later = [b for b in seconds[i + 1 :] if b.t >= a.t + WINDOW_S]
        if a.t >= 1.0 and a.t + WINDOW_S <= hold and later:
            windows.append((later[0].written - a.written) / (later[0].t - a.t))
    caught = [x.t - hold for x in seconds if x.t >= hold and x.waiting <= 2 * normal]
    return Overload(
        stored_per_s=[(round(t, 1), round(r)) for t, r in rates],
        median=during[len(during) // 2] if during else 0.0,
        lowest=min(windows, default=0.0),
        shed=seconds[-1].shed if seconds else {},
        caught_up_s=round(caught[0], 1) if caught else None,
    )


def overload_lines(run: Run, held: float, hold: float, normal: float) -> list[str]:
    """The run's stored rate second by second, and what it comes to beside the held rate."""
    o = overload(run.seconds or [], hold, normal)
    series = " ".join(f"{r / 1000:.1f}" for _, r in o.stored_per_s)
    shed = ", ".join(f"{k} {v:,}" for k, v in sorted(o.shed.items())) or "none"
    caught = f"{o.caught_up_s:.1f} s" if o.caught_up_s is not None else "not within the run"
    return [
        f"stored per second (thousands): {series}",
        f"overloaded {hold:.0f} s: median {o.median:,.0f}/s ({o.median / held:.0%} of {held:,.0f}), "
        f"lowest over {WINDOW_S:.0f} s {o.lowest:,.0f}/s ({o.lowest / held:.0%}); shed {shed}; "
        f"caught up {caught} after the load returned to {normal:,.0f}/s",
    ]


def summary(runs: list[Run]) -> list[str]:
    """The highest load each consumer held, by QoS and link, beside the C ceiling."""
    lines = []
    for qos, link in sorted({(r.qos, r.link) for r in runs}):
        best = {}
        for consumer in CONSUMERS:
            held = [r for r in runs if (r.qos, r.link, r.consumer) == (qos, link, consumer) and r.held]
            if held:
                top = max(held, key=lambda r: r.offered)
                best[consumer] = f"{top.offered:,.0f}/s at {top.cpu:.1%} CPU"
            elif any((r.qos, r.link, r.consumer) == (qos, link, consumer) for r in runs):
                best[consumer] = "none held"
        text = "; ".join(f"{c} {v}" for c, v in best.items())
        lines.append(f"QoS {qos} {link}: highest load held: {text}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
