"""How long a truck's message waits in the waste service while renovation bookings flood in.

A real Mosquitto and the real waste service (`WasteService.run`, in a process of its own, on
SQLite, the district's timetable with its renovation truck on shift). The renovation truck
sends its position --rate times a second all along; for the first --idle seconds nothing
else happens, then for --flood seconds --clients property offices book --bookings pickups a
second in all through the API (a random compound, 0.5 to 4 m³, wanted from 15 to 90 minutes
on for 2 to 4 hours), each office one after another: a slow answer slows it down. Every
booking asks for the truck's round to be planned again (VROOM).

A message's wait is from its publishing to the service having handled it (the service's
`take` returned), both on this machine's clock. Each run is made twice, with the code before
(--before, a git revision: its files from `git archive`) and this checkout's, each with
`PYTHONPATH` pointing at its own sources; --runs runs, medians at the end. Also how long
each call that plans holds the event loop (`planning_on_loop`): the longest a message can
wait for a plan.

    .venv/bin/python benchmarks/booking_flood.py [--runs 3] [--idle 10] [--flood 40] [--bookings 4]
        [--before main] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness import Webhook
from linli.demo.servers import free_port, start_mosquitto
from linli.transit.gtfs import load_feed

ROOT = Path(__file__).resolve().parents[1]
FEED = ROOT / "deploy" / "gtfs" / "hongqiao"
SOURCES = ("src",)  # linli's source tree
TOKEN = "flood-token"  # noqa: S105 (the benchmark's own)
TRUCK = "truck-renovation"
ZONE = dt.timezone(dt.timedelta(hours=8))


# --- the service, in its own process (--serve) ------------------------------------------------


def serve(broker: int, api: int, folder: Path, sms: str) -> None:
    """The waste service until a line on stdin; then each truck message's (sent, wait), and
    how long each call planning on the event loop took, as JSON."""
    from linli.cloud.waste.config import BookingRules, SmsGateway, TruckBroker, WasteConfig
    from linli.cloud.waste.service import WasteService
    from linli.demo.recording import on_shift_all_day

    shutil.copytree(FEED, folder / "gtfs")
    on_shift_all_day(folder / "gtfs", time.time() - 3600)
    config = WasteConfig(
        broker=TruckBroker(port=broker),
        bookings=BookingRules(sms=SmsGateway(url=sms)),  # the requesters told, by SMS
        gtfs=folder / "gtfs",
        state=str(folder / "waste.sqlite"),
        api_port=api,
    )
    waits: list[tuple[float, float]] = []
    planning: list[float] = []

    async def run() -> None:
        service = WasteService(config, TOKEN)
        take = service.engine.take

        def timed(topic: str, payload: bytes) -> None:
            take(topic, payload)
            sent = json.loads(payload)["sent"]
            waits.append((sent, time.time() - sent))

        service.engine.take = timed  # type: ignore[method-assign]
        renovation = service.engine.renovation
        assert renovation is not None
        for name in PLANNING:  # those this code has
            if hasattr(renovation, name):
                setattr(renovation, name, clocked(getattr(renovation, name), planning))
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await service.started.wait()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        stop.set()
        await task

    asyncio.run(run())
    print(json.dumps({"waits": waits, "planning": planning}), flush=True)


# What plans on the event loop: before, `dispatch` solved there; after, it asks the planner,
# and only `problem` (what to plan) and `apply` (the plan returned) run on the loop.
PLANNING = ("dispatch", "problem", "apply")


def clocked(call: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - started)

    return timed


# --- the load, from this process --------------------------------------------------------------


def trucks(port: int, rate: float, where: tuple[float, float], stop: threading.Event) -> None:
    """The renovation truck's positions, `rate` a second, each stamped when sent."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="flood-truck")
    client.connect("127.0.0.1", port)
    client.loop_start()
    lat, lon = where
    while not stop.wait(1 / rate):
        now = time.time()
        body = {"ts": round(now * 1000), "lat": lat, "lon": lon, "speed": 0.0, "sent": now}
        client.publish(f"trucks/fleet/{TRUCK}/location", json.dumps(body), qos=1)
    client.disconnect()
    client.loop_stop()


def office(
    base: str, rooms: list[str], seed: int, *, every_s: float, until: float, took: list[float]
) -> None:
    """A booking every `every_s` (or once the one before is answered, if later) until `until`;
    how long each took to be answered."""
    rng = random.Random(seed)
    due = time.time()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as api:
        while (now_s := time.time()) < until:
            if now_s < due:
                time.sleep(due - now_s)  # the office's pace
            due = max(due + every_s, time.time())
            now = dt.datetime.now(ZONE)
            earliest = now + dt.timedelta(minutes=rng.uniform(15, 90))
            body = {
                "compound": rng.choice(rooms),
                "volume_m3": round(rng.uniform(0.5, 4.0), 1),
                "earliest": earliest.isoformat(),
                "latest": (earliest + dt.timedelta(hours=rng.uniform(2, 4))).isoformat(),
                "contact": {"name": "office", "phone": "+8613800000001"},
            }
            started = time.perf_counter()
            api.post("/bookings", json=body).raise_for_status()
            took.append(time.perf_counter() - started)


def sources(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(tree / s) for s in SOURCES)}


def one_run(tree: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One run of the service from `tree`: the waits idle and in the flood, the bookings made."""
    feed = load_feed(FEED)
    rooms = sorted(s for s in feed.stops if s not in feed.extras.depots)
    depot = feed.stops[feed.extras.depots[0]]
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        broker = start_mosquitto(Path(tmp) / "mqtt")
        hook = Webhook(lambda _body, _at: None)  # the SMS gateway
        api = free_port()
        service = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(broker.port), str(api), tmp, hook.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=sources(tree),
        )  # fmt: skip
        assert service.stdin is not None
        assert service.stdout is not None
        try:
            if service.stdout.readline().strip() != "ready":
                raise SystemExit("benchmark: the waste service did not start; see its error above")
            stop = threading.Event()
            truck = threading.Thread(
                target=trucks, args=(broker.port, args.rate, (depot.lat, depot.lon), stop)
            )
            truck.start()
            time.sleep(args.idle)  # the load's own pace: only trucks' messages
            flood_s = time.time()
            took: list[float] = []
            offices = [
                threading.Thread(
                    target=office,
                    args=(f"http://127.0.0.1:{api}", rooms, seed * 100 + i),
                    kwargs={
                        "every_s": args.clients / args.bookings,
                        "until": flood_s + args.flood,
                        "took": took,
                    },
                )
                for i in range(args.clients)
            ]
            for o in offices:
                o.start()
            for o in offices:
                o.join()
            stop.set()
            truck.join()
            service.stdin.write("stop\n")
            service.stdin.flush()
            served = json.loads(service.stdout.readline())
            service.wait(60)
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()
            hook.close()
            broker.stop()
    idle = [w for sent, w in served["waits"] if sent < flood_s]
    flood = [w for sent, w in served["waits"] if sent >= flood_s]
    return {
        "idle": figures(idle),
        "flood": figures(flood),
        "planning_on_loop": figures(served["planning"], "calls"),
        "bookings": len(took),
        "booking_p50_ms": round(statistics.median(took) * 1000, 1) if took else None,
        "booking_max_ms": round(max(took) * 1000, 1) if took else None,
    }


def figures(waits: list[float], what: str = "messages") -> dict[str, Any]:
    """p50, p99 and max of the waits, in ms."""
    if not waits:
        return {what: 0}
    ordered = sorted(waits)
    return {
        what: len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def before_tree(revision: str, into: Path) -> Path:
    """The sources of `revision` (git archive), to run the code before beside this checkout's."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Each figure's median over the runs."""
    out: dict[str, float | None] = {}
    for phase in ("idle", "flood", "planning_on_loop"):
        for key in ("p50_ms", "p99_ms", "max_ms"):
            values = [r[phase][key] for r in runs if key in r[phase]]
            out[f"{phase}_{key}"] = round(statistics.median(values), 1) if values else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", nargs=4, metavar=("BROKER", "API", "DIR", "SMS"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of trucks' messages alone (10)")
    parser.add_argument("--flood", type=float, default=40.0, help="seconds of bookings (40)")
    parser.add_argument("--bookings", type=float, default=4.0, help="bookings a second, in all (4)")
    parser.add_argument("--clients", type=int, default=2, help="offices booking at once (2)")
    parser.add_argument("--rate", type=float, default=20.0, help="truck messages a second (20)")
    parser.add_argument("--before", default="main", help="the git revision to compare with (main)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), Path(args.serve[2]), args.serve[3])
        return
    if not (1 <= args.runs <= 10 and 0 < args.idle <= 60 and 0 < args.flood <= 90 and 1 <= args.clients <= 8):
        parser.error("--runs 1-10, --idle up to 60 s, --flood up to 90 s, --clients 1-8: a run stays short")
    with tempfile.TemporaryDirectory(prefix="flood-before-") as tmp:
        trees = {"before": before_tree(args.before, Path(tmp)), "after": ROOT}
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for n in range(1, args.runs + 1):
            for name, tree in trees.items():
                runs[name].append(one_run(tree, args, n))
                print(f"run {n} {name}: {json.dumps(runs[name][-1])}", flush=True)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "before": args.before, "idle_s": args.idle, "flood_s": args.flood, "clients": args.clients,
        "rate": args.rate, "runs": runs,
        "medians": {name: medians(rs) for name, rs in runs.items()},
    }  # fmt: skip
    print("median of runs   " + "  ".join(f"{k:>14}" for k in result["medians"]["after"]))
    for name, row in result["medians"].items():
        print(f"{name:<16} " + "  ".join(f"{v!s:>14}" for v in row.values()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
