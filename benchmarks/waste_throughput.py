"""What one waste service spends on a truck message, on SQLite and on PostgreSQL.

Every trip of the district's timetable is driven for --days (the timetable simulator: traffic,
dwell, GPS noise), and the trucks' messages are handed, in time order and as fast as it takes
them, to a waste service in this process: map matching, prediction, notices claimed in its
state, deliveries started (to a gateway that refuses them at once, so that sending costs
little). The figures are the CPU time per message and the messages a second one core would
take, and what that makes of a city: every waste service reads every truck (services on one
state replicate the work for availability, they do not split it), so the city's truck
traffic is what each must take.

    .venv/bin/python benchmarks/waste_throughput.py [--days 2] [--state sqlite postgresql] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
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
from linli.cloud.waste.gtfs import load_feed, runs_on
from linli.cloud.waste.service import WasteService
from linli.localservers import free_port, postgresql_url, start_postgresql
from linli.sim.timetable import Traffic, drive_trip

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
FIRST = dt.date(2026, 11, 2)  # a Monday, in the past: a message from the future is refused
TRUCK_EVERY_S = 10.0  # a truck on the road sends its position this often
SUBDISTRICTS = 200
TRUCKS_PER_SUBDISTRICT = 7  # Hongqiao's


def messages(feed_dir: Path, days: int) -> list[tuple[str, bytes]]:
    """(topic, payload) of every trip's messages over `days`, in time order."""
    feed = load_feed(feed_dir)
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


def measure(feed_dir: Path, state: str, batch: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Hand every message to a fresh service on `state`; its CPU per message."""
    config = WasteConfig(gtfs=feed_dir, state=state, broker=TruckBroker(port=1), attempts=1)
    service = WasteService(config, "t", load_feed(feed_dir))

    async def run() -> tuple[float, float]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for topic, payload in batch:
            service.take(topic, payload)
            await asyncio.sleep(0)  # the deliveries started get their turn, as on the real loop
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await service.deliveries.drain(30)
        return cpu, wall

    cpu, wall = asyncio.run(run())
    claimed = sum(service.claimed.values())
    service.leadership.close()
    service.state.close()
    us = cpu / len(batch) * 1e6
    return {
        "state": state.split("://", 1)[0] if "://" in state else "sqlite",
        "messages": len(batch),
        "handled": sum(service.handled.values()),
        "rejected": dict(service.rejected),
        "claimed": claimed,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "us_per_message": round(us, 1),
        "messages_per_core_s": round(1e6 / us),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=2, help="days of the timetable driven")
    parser.add_argument(
        "--state", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--runs", type=int, default=3, help="runs on each state; the median is quoted")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    machine = f"{platform.node()} {platform.machine()}, Python {platform.python_version()}"
    print(f"machine: {machine}; {args.days} days of the district's trips", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        feed_dir = work / "gtfs"
        shutil.copytree(FEED, feed_dir)
        gateway = f"http://127.0.0.1:{free_port()}"  # nobody there: a delivery fails at once
        extras = feed_dir / "linli.toml"
        extras.write_text(extras.read_text().replace("http://sms-gateway.district.example", gateway))
        batch = messages(feed_dir, args.days)
        print(f"{len(batch)} truck messages", flush=True)
        pg = start_postgresql(work / "pg") if "postgresql" in args.state else None
        try:
            for kind in args.state:
                runs = []
                for n in range(args.runs):
                    if kind == "sqlite":
                        state = str(work / f"waste-{n}.sqlite")
                    else:
                        assert pg is not None
                        from sqlalchemy import create_engine, text

                        engine = create_engine(postgresql_url(pg), isolation_level="AUTOCOMMIT")
                        with engine.connect() as conn:
                            conn.execute(text(f"CREATE DATABASE waste_{n}"))
                        engine.dispose()
                        state = postgresql_url(pg, f"waste_{n}").replace("+psycopg", "")
                    runs.append(measure(feed_dir, state, batch))
                    r = runs[-1]
                    print(
                        f"{kind:>10} run {n + 1}: {r['us_per_message']:>7.1f} µs/message, "
                        f"{r['messages_per_core_s']:>6}/s a core, {r['claimed']} notices claimed",
                        flush=True,
                    )
                median = statistics.median(r["us_per_message"] for r in runs)
                results.append({"state": kind, "runs": runs, "median_us_per_message": median})
        finally:
            if pg is not None:
                pg.stop()
    city = SUBDISTRICTS * TRUCKS_PER_SUBDISTRICT / TRUCK_EVERY_S
    print()
    for r in results:
        share = city * r["median_us_per_message"] / 1e6
        print(
            f"{r['state']}: median {r['median_us_per_message']:.1f} µs a message; the city's "
            f"{city:.0f} truck messages/s ({SUBDISTRICTS} subdistricts x {TRUCKS_PER_SUBDISTRICT} trucks, "
            f"one each {TRUCK_EVERY_S:.0f} s) take {share:.1%} of a core in each service"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "days": args.days, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
