"""What a waste service spends on a truck message, on SQLite and on PostgreSQL, alone and as one
of two replicas on one state.

Every trip of the district's timetable is driven for --days (the timetable simulator: traffic,
dwell, GPS noise), and the trucks' messages are handed, in time order and as fast as they are
taken, to the waste services of a layout in this process, each taking every message as its
subscription would: map matching, prediction, notices claimed in the state, deliveries
started (to a gateway that refuses them at once, so that sending costs little). Layouts:

- `every:1`, one service following every route;
- `every:2`, two replicas on one state, each following every route (for availability: they
  repeat the same work, and race for each claim). A deployment outgrowing one service
  partitions by subdistrict, one feed per service (docs/scale.md): each is an `every:1`.

The figures are each service's CPU time per message of the whole stream (its thread's time in
its own calls), and what that makes of a city's truck traffic.

    .venv/bin/python benchmarks/waste_throughput.py [--days 2] [--state sqlite postgresql]
        [--layouts every:1 every:2] [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.service import WasteService
from linli.demo.servers import free_port, postgresql_url, start_postgresql
from linli.sim.timetable import Traffic, drive_trip
from linli.transit.gtfs import Feed, load_feed, runs_on

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
FIRST = dt.date(2026, 11, 2)  # a Monday, in the past: a message from the future is refused
TRUCK_EVERY_S = 10.0  # a truck on the road sends its position this often
SUBDISTRICTS = 200
TRUCKS_PER_SUBDISTRICT = 7  # Hongqiao's


def replicated(feed: Feed, subdistricts: int) -> Feed:
    """The district's timetable `subdistricts` times over: every route, trip and truck again
    under new ids (`~k`), on the same roads and bin rooms; the renovation fleet once."""
    if subdistricts == 1:
        return feed
    routes = {
        f"{rid}~{k}": route.model_copy(update={"truck": f"{route.truck}~{k}"})
        for k in range(subdistricts)
        for rid, route in feed.routes.items()
    }
    trips = {
        f"{tid}~{k}": dataclasses.replace(trip, id=f"{tid}~{k}", route_id=f"{trip.route_id}~{k}")
        for k in range(subdistricts)
        for tid, trip in feed.trips.items()
    }
    extras = feed.extras.model_copy(update={"routes": routes})
    return dataclasses.replace(feed, routes=routes, trips=trips, extras=extras)


def messages(feed: Feed, days: int) -> list[tuple[str, bytes]]:
    """(topic, payload) of every trip's messages over `days`, in time order."""
    out: list[tuple[int, str, bytes]] = []
    for n in range(days):
        date = FIRST + dt.timedelta(days=n)
        for trip in feed.trips.values():
            if not runs_on(feed, trip, date):
                continue
            truck = feed.routes[trip.route_id].truck
            run = drive_trip(feed, trip, date, random.Random(f"{trip.id}:{date}"), traffic=Traffic(sd=0.2))
            for kind, body in run.messages:
                out.append((body["ts"], f"trucks/fleet/{truck}/{kind}", json.dumps(body).encode()))
    out.sort(key=lambda m: m[0])
    return [(topic, payload) for _, topic, payload in out]


def measure(
    feed_dir: Path, feed: Feed, state: str, batch: list[tuple[str, bytes]], layout: str
) -> dict[str, Any]:
    """Hand every message to each service of a fresh `layout` on `state`; their CPU per message."""
    _, count = layout.split(":")
    config = WasteConfig.model_validate(
        {
            "gtfs": feed_dir,
            "state": state,
            "broker": TruckBroker(port=1),
            "attempts": 1,
            "delivery": {"allow_private": True},
        }
    )
    # Each service's engine takes the messages, as its feed hands them over on the event loop.
    engines = [WasteService(config, "t", feed).engine for _ in range(int(count))]
    cpu = [0.0] * len(engines)

    async def run() -> float:
        wall0 = time.perf_counter()
        for topic, payload in batch:
            for n, engine in enumerate(engines):
                cpu0 = time.thread_time()
                engine.take(topic, payload)
                cpu[n] += time.thread_time() - cpu0
            await asyncio.sleep(0)  # the deliveries started get their turn, as on the real loop
        wall = time.perf_counter() - wall0
        for engine in engines:
            await engine.deliveries.drain(30)
        return wall

    wall = asyncio.run(run())
    out: dict[str, Any] = {
        "state": state.split("://", 1)[0] if "://" in state else "sqlite",
        "layout": layout,
        "messages": len(batch),
        "wall_s": round(wall, 2),
        "services": [
            {
                "routes": len(engine.feed.routes),
                "handled": sum(engine.handled.values()),
                "claimed": sum(engine.claimed.values()),
                "rejected": dict(engine.rejected),
                "cpu_s": round(cpu[n], 2),
                "us_per_message": round(cpu[n] / len(batch) * 1e6, 1),
            }
            for n, engine in enumerate(engines)
        ],
    }
    for engine in engines:
        engine.leadership.close()
        engine.state.close()
    out["us_per_message"] = max(s["us_per_message"] for s in out["services"])  # the busiest's
    out["claimed"] = sum(s["claimed"] for s in out["services"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=2, help="days of the timetable driven")
    parser.add_argument(
        "--subdistricts", type=int, default=1, help="the district's routes and trucks this many times over"
    )
    parser.add_argument(
        "--state", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=["every:1", "every:2"],
        choices=["every:1", "every:2"],
        help="services on one state (default: both)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the median is quoted")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    machine = f"{platform.node()} {platform.machine()}, Python {platform.python_version()}"
    print(f"machine: {machine}; {args.days} days of {args.subdistricts} subdistricts' trips", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        feed_dir = work / "gtfs"
        shutil.copytree(FEED, feed_dir)
        gateway = f"http://127.0.0.1:{free_port()}"  # nobody there: a delivery fails at once
        extras = feed_dir / "linli.toml"
        extras.write_text(extras.read_text().replace("http://sms-gateway.district.example", gateway))
        feed = replicated(load_feed(feed_dir), args.subdistricts)
        batch = messages(feed, args.days)
        print(f"{len(batch)} truck messages, {len(feed.routes)} routes", flush=True)
        pg = start_postgresql(work / "pg") if "postgresql" in args.state else None
        try:
            for kind, layout in [(k, lay) for k in args.state for lay in args.layouts]:
                runs = []
                for n in range(args.runs):
                    if kind != "sqlite":
                        assert pg is not None
                        from sqlalchemy import create_engine, text

                        engine = create_engine(postgresql_url(pg), isolation_level="AUTOCOMMIT")
                        name = f"waste_{layout.replace(':', '_')}_{n}"
                        with engine.connect() as conn:
                            conn.execute(text(f"CREATE DATABASE {name}"))
                        engine.dispose()
                        state = postgresql_url(pg, name).replace("+psycopg", "")
                    if kind == "sqlite":
                        state = str(work / f"waste-{layout.replace(':', '-')}-{n}.sqlite")
                    runs.append(measure(feed_dir, feed, state, batch, layout))
                    r = runs[-1]
                    each = " + ".join(
                        f"{s['us_per_message']:.1f} ({s['routes']} routes)" for s in r["services"]
                    )
                    print(
                        f"{kind:>10} {layout:>7} run {n + 1}: µs of CPU a message, each service: {each}; "
                        f"{r['claimed']} notices claimed",
                        flush=True,
                    )
                median = statistics.median(r["us_per_message"] for r in runs)
                results.append(
                    {"state": kind, "layout": layout, "runs": runs, "median_us_per_message": median}
                )
        finally:
            if pg is not None:
                pg.stop()
    city = SUBDISTRICTS * TRUCKS_PER_SUBDISTRICT / TRUCK_EVERY_S
    print()
    print(
        f"the city's {city:.0f} truck messages/s: {SUBDISTRICTS} subdistricts x {TRUCKS_PER_SUBDISTRICT} "
        f"trucks, one message each {TRUCK_EVERY_S:.0f} s"
    )
    for r in results:
        share = city * r["median_us_per_message"] / 1e6
        alone = next(a for a in results if a["state"] == r["state"] and a["layout"] == results[0]["layout"])
        print(
            f"{r['state']:>10} {r['layout']:>7}: median {r['median_us_per_message']:7.1f} µs a message "
            f"in the busiest service, {alone['median_us_per_message'] / r['median_us_per_message']:.2f}x "
            f"{results[0]['layout']}; the city takes {share:.1%} of a core in it"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "days": args.days,
                    "subdistricts": args.subdistricts,
                    "results": results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
