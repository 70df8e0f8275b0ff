"""The alert traffic of N subdistricts through 1 or 2 notifiers sharing one PostgreSQL.

A subdistrict is the Hongqiao scenario's alerting series: 50 charging stations of 10 ports,
44 fire sensors, 6 lift cameras, 28 rescue points and 7 trucks, 635 in all. Its traffic is a
bad hour: every series fires once an hour and resolves ten minutes later (0.35 steps a
second), with the 106 alerts open at any moment announced again by their edges every
minute (1.8 messages a second). Before each run the open alerts are in the book; then the
steps and announcements are published at their rates, each step with the time it was sent,
and a webhook takes the notices (one subscription hears of everything; no group wait).

For each number of subdistricts and of notifier processes it prints the steps told per
second, the latency from publishing a step to its notice (p50, p99, max), the notifiers'
and PostgreSQL's CPU (share of one core) and PostgreSQL's transactions a second.
Mosquitto, PostgreSQL, the publisher and the webhook run on the same machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from harness import Webhook, cpu_seconds
from linli.catalog.alerts import fingerprint
from linli.demo.servers import LocalServer, free_port, start_mosquitto, start_postgresql

TOKEN = "city-bench-token-0123456789abcdef"  # noqa: S105 (the benchmark's own notifiers)
SERIES = 635  # alerting series of one subdistrict
STEPS_PER_S = 2 * SERIES / 3600  # each fires once an hour and resolves
OPEN = round(SERIES * 600 / 3600)  # open at any moment: ten-minute episodes
ANNOUNCE_S = 60.0  # how often an edge announces its open alerts


class Notices:
    """What the webhook got: (fingerprint, since, notice kind) -> first arrival, and how often."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, int, str], float] = {}
        self.seen: Counter[tuple[str, int, str]] = Counter()

    def take(self, notice: dict[str, Any], arrived: float) -> None:
        key = (notice["alert"]["fingerprint"], notice["alert"]["since_ms"], notice["notice"])
        self.first.setdefault(key, arrived)
        self.seen[key] += 1

    def clear(self) -> None:
        self.first.clear()
        self.seen.clear()


class Subdistricts:
    """The alerts of N subdistricts: events for new episodes, resolutions and announcements."""

    def __init__(self, count: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.series = [(f"sd{n:03d}-site", f"device-{i}") for n in range(count) for i in range(SERIES)]
        self.free = list(range(len(self.series)))
        self.rng.shuffle(self.free)
        self.open: dict[int, int] = {}  # series -> since_ms of its open episode

    def event(self, series: int, state: str, since_ms: int, now_ms: int) -> tuple[str, bytes]:
        site, device = self.series[series]
        rule = "charger.temperature.above"
        body = {
            "fingerprint": fingerprint(rule, site, device, None), "rule": rule,
            "title": "Station over temperature", "severity": "warning", "state": state,
            "kind": "charger", "site": site, "device": device, "port": None, "value": 91.0,
            "threshold": 90.0, "time_ms": now_ms, "since_ms": since_ms, "edge": f"{site}-edge",
        }  # fmt: skip
        return f"linli/alerts/{site}-edge/{site}/{device}", json.dumps(body).encode()

    def fire(self, now_ms: int) -> tuple[str, bytes, tuple[str, int, str]]:
        series = self.free.pop()
        self.open[series] = now_ms
        topic, payload = self.event(series, "firing", now_ms, now_ms)
        return topic, payload, (json.loads(payload)["fingerprint"], now_ms, "firing")

    def resolve(self, now_ms: int) -> tuple[str, bytes, tuple[str, int, str]]:
        series = next(iter(self.open))  # the oldest episode
        since = self.open.pop(series)
        self.free.insert(0, series)
        topic, payload = self.event(series, "resolved", since, now_ms)
        return topic, payload, (json.loads(payload)["fingerprint"], since, "resolved")

    def announce(self, now_ms: int) -> tuple[str, bytes]:
        series = self.rng.choice(list(self.open)) if len(self.open) < 1000 else self._any_open()
        return self.event(series, "firing", self.open[series], now_ms)

    def _any_open(self) -> int:
        # Choosing from a list of tens of thousands each time would slow the publisher down.
        keys = list(itertools.islice(self.open, self.rng.randrange(len(self.open)), None))
        return keys[0]


def notifier_config(path: Path, state: str, broker: int, api: int, hook: str) -> None:
    # A group of its own: what an earlier run left queued at the broker is not this run's.
    group = path.stem.rsplit("-", 1)[0]
    path.write_text(
        f"""state = "{state}"
api_port = {api}
group_wait_s = 0
repeat_s = 86400

[delivery]
allow_private = true

[broker]
port = {broker}
group = "{group}"

[[subscriptions]]
id = "ops"
channels = [{{ kind = "webhook", url = "{hook}" }}]
"""
    )


def health(port: int) -> dict[str, int]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (loopback; a busy notifier)
        answer: dict[str, int] = json.loads(response.read())
        return answer


def postgres_cpu(server: LocalServer) -> float:
    """CPU seconds of the postmaster and its backends now."""
    total = cpu_seconds(server.proc.pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == server.proc.pid:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # a backend that just ended
    return total


def transactions(url: str, db: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (db,)).fetchone()
        return int(row[0]) if row else 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(
    work: Path, pg: LocalServer, broker: int, *, count: int, procs: int, seconds: float, storms: list[float]
) -> list[dict[str, Any]]:
    """Fill a fresh book for `count` subdistricts, start `procs` notifiers, measure each storm."""
    db = f"city_{count}_{procs}"
    admin = f"postgresql://linli@127.0.0.1:{pg.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    state = f"postgresql://linli@127.0.0.1:{pg.port}/{db}"
    got = Notices()
    hook = Webhook(got.take)
    notifiers: list[tuple[subprocess.Popen[bytes], int]] = []
    env = dict(os.environ, LINLI_CLOUD_TOKEN=TOKEN)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"city-{db}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", broker)
    client.loop_start()
    try:
        for i in range(procs):
            api = free_port()
            config = work / f"{db}-{i}.toml"
            notifier_config(config, state, broker, api, hook.url)
            log = (work / f"{db}-{i}.log").open("w")
            argv = [sys.executable, "-m", "linli.cli", "cloud", "run", "--config", str(config)]
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            notifiers.append((proc, api))
        for _, api in notifiers:
            _wait(lambda api=api: _up(api), 60, f"a notifier; see {work}/{db}-*.log")
        city = Subdistricts(count, seed=count)
        # The open alerts of the hour, in the book before the clock starts.
        for _ in range(OPEN * count):
            topic, payload, _ = city.fire(int(time.time() * 1000))
            client.publish(topic, payload, qos=1)
        first_api = notifiers[0][1]
        filled = OPEN * count
        _wait(lambda: health(first_api)["alerts_open"] >= filled, 900, "the open alerts in the book", 2.0)
        _wait(lambda: len(got.first) >= OPEN * count, 120, "their first notices")
        return [
            measure(client, city, notifiers, got, pg=pg, admin=admin, db=db, seconds=seconds, storm=storm)
            for storm in storms
        ]
    finally:
        client.loop_stop()
        client.disconnect()
        for proc, _ in notifiers:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"   a notifier did not stop in 30 s; killed (see {work}/{db}-*.log)")
                proc.kill()
                proc.wait()
        hook.close()


def measure(
    client: paho.Client,
    city: Subdistricts,
    notifiers: list[tuple[subprocess.Popen[bytes], int]],
    got: Notices,
    *,
    pg: LocalServer,
    admin: str,
    db: str,
    seconds: float,
    storm: float,
) -> dict[str, Any]:
    """Publish the steps (`storm` times their rate) and announcements for `seconds`; the figures."""
    got.clear()
    count = len(city.series) // SERIES
    steps_rate, announce_rate = storm * STEPS_PER_S * count, OPEN * count / ANNOUNCE_S
    print(f"   measuring for {seconds:.0f} s at {storm:g} times the steps ...", flush=True)
    sent: dict[tuple[str, int, str], float] = {}
    cpu0 = [cpu_seconds(p.pid) for p, _ in notifiers]
    pg0, tx0 = postgres_cpu(pg), transactions(admin, db)
    start = time.monotonic()
    next_step = next_announce = start
    fire_next = True
    while (now := time.monotonic()) < start + seconds:
        if now >= next_step:
            now_ms = int(time.time() * 1000)
            topic, payload, key = city.fire(now_ms) if fire_next else city.resolve(now_ms)
            fire_next = not fire_next
            client.publish(topic, payload, qos=1)
            sent[key] = now_ms / 1000
            next_step += 1 / steps_rate
        elif now >= next_announce:
            client.publish(*city.announce(int(time.time() * 1000)), qos=1)
            next_announce += 1 / announce_rate
        else:
            time.sleep(min(next_step, next_announce) - now)
    elapsed = time.monotonic() - start
    cpu = [cpu_seconds(p.pid) - c for (p, _), c in zip(notifiers, cpu0, strict=True)]
    pg_cpu, tx = postgres_cpu(pg) - pg0, transactions(admin, db) - tx0
    deadline = time.monotonic() + 30
    while not set(sent) <= set(got.first) and time.monotonic() < deadline:
        time.sleep(0.2)
    lat = [got.first[k] - t for k, t in sent.items() if k in got.first]
    return {
        "subdistricts": count,
        "notifiers": len(notifiers),
        "storm": storm,
        "steps_per_s_offered": round(steps_rate, 2),
        "announcements_per_s": round(announce_rate, 1),
        "open_alerts": OPEN * count,
        "steps_sent": len(sent),
        "steps_told": len(lat),
        "told_twice": sum(got.seen[k] > 1 for k in sent),
        "told_per_s": round(len(lat) / elapsed, 2),
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(percentile(lat, 99) * 1000, 1) if lat else None,
        "max_ms": round(max(lat) * 1000, 1) if lat else None,
        "notifier_cpu_pct": [round(100 * c / elapsed, 1) for c in cpu],
        "postgresql_cpu_pct": round(100 * pg_cpu / elapsed, 1),
        "postgresql_tx_per_s": round(tx / elapsed, 1),
    }


def _up(api: int) -> bool:
    try:
        health(api)
    except OSError:
        return False
    return True


def _wait(condition: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: timed out waiting for {what}")
        time.sleep(every)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--subdistricts", default="1,10,50,200", help="comma-separated counts (default 1,10,50,200)"
    )
    parser.add_argument("--notifiers", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time of each run (default 30)")
    parser.add_argument(
        "--storm",
        default="1",
        help="comma-separated multiples of the steps' rate, each measured in turn (default 1)",
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    args = parser.parse_args()
    machine = (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"machine: {machine}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = start_mosquitto(
            work / "mq", extra_config="max_inflight_messages 100\nmax_queued_messages 100000\n"
        )
        pg = start_postgresql(work / "pg")
        try:
            for count in (int(c) for c in args.subdistricts.split(",")):
                for procs in (int(p) for p in args.notifiers.split(",")):
                    print(f"-- {count} subdistricts, {procs} notifier(s): filling the book ...", flush=True)
                    storms = [float(x) for x in args.storm.split(",")]
                    for r in run(
                        work, pg, broker.port, count=count, procs=procs, seconds=args.seconds, storms=storms
                    ):
                        results.append(r)
                        print(
                            f"   {r['steps_told']}/{r['steps_sent']} steps told ({r['told_twice']} twice), "
                            f"{r['told_per_s']}/s (+{r['announcements_per_s']} announcements/s, "
                            f"{r['open_alerts']} open); latency p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                            f"max {r['max_ms']} ms; CPU notifiers {r['notifier_cpu_pct']} %, "
                            f"PostgreSQL {r['postgresql_cpu_pct']} % ({r['postgresql_tx_per_s']} tx/s)",
                            flush=True,
                        )
        finally:
            pg.stop()
            broker.stop()
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "runs": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
