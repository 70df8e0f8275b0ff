"""The GTFS-realtime feed through an outside validator (`gtfs-rt-validator`, from PyPI): every
truck of the district on a simulated morning, the feed read every two minutes of the trucks'
time, each read validated with the validator's clock pinned to it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.realtime import feed_message
from linli.cloud.waste.service import WasteService
from linli.sim.kinds.truck import Truck
from linli.sim.timetable import Traffic
from linli.transit.gtfs import load_feed, service_zero

pytestmark = pytest.mark.servers  # every test here starts a server or a process

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"
MONDAY = dt.date(2026, 11, 23)  # in the past: a message from the future is refused
EVERY_S = 120
MORNING = (6 * 3600, 11 * 3600)  # the wet trips at 06:30, dry at 08:00, recyclables at 09:30


def morning_reads(out: Path) -> int:
    """The feed as the API serves it, every EVERY_S of the trucks' morning, one file a read with
    its modification time the read's own (the validator's clock when replaying by date)."""
    feed = load_feed(FEED)
    zero = service_zero(MONDAY, feed.timezone)
    messages: list[tuple[int, str, str, dict[str, Any]]] = []
    for truck in sorted({route.truck for route in feed.routes.values()}):
        driven = Truck(seed="rt", start=zero, feed=feed, truck=truck, traffic=Traffic(seed=1))
        messages += [(body["ts"], truck, kind, body) for kind, body in driven.advance_to(zero + MORNING[1])]
    messages.sort(key=lambda m: m[0])
    trucks = {rid: route.truck for rid, route in feed.routes.items()}

    async def replay() -> int:
        service = WasteService(WasteConfig(gtfs=FEED, state=str(out / "waste.sqlite")), "token", feed)
        reads = 0
        due = zero + MORNING[0]
        for ts, truck, kind, body in messages:
            while ts / 1000 > due:
                path = out / "rt" / f"{reads:04d}.pb"
                path.write_bytes(
                    feed_message(
                        service.engine.trackers.values(), service.engine.now_s, trucks, feed.timezone
                    )
                )
                os.utime(path, (service.engine.now_s, service.engine.now_s))
                reads, due = reads + 1, due + EVERY_S
            service.engine.take(f"trucks/fleet/{truck}/{kind}", json.dumps(body).encode())
        await service.engine.deliveries.drain(0)
        return reads

    (out / "rt").mkdir()
    return asyncio.run(replay())


def test_the_realtime_feed_of_a_morning_has_no_error_for_an_outside_validator(tmp_path: Path) -> None:
    binary = Path(sys.executable).parent / "gtfs-rt-validator"
    if not binary.exists():
        pytest.fail("gtfs-rt-validator is not installed: scripts/setup (pip install gtfs-rt-validator)")
    reads = morning_reads(tmp_path)
    assert reads >= (MORNING[1] - MORNING[0]) // EVERY_S - 2
    static = tmp_path / "feed.zip"
    with zipfile.ZipFile(static, "w") as z:
        for path in sorted(FEED.glob("*.txt")):
            z.write(path, path.name)
    done = subprocess.run(
        [str(binary), "-gtfs", str(static), "-rt", str(tmp_path / "rt"), "--sort", "date",
         "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["summary"]["messagesValidated"] == reads
    found = {n["code"]: n["totalNotices"] for n in report["notices"]}
    assert {code: n for code, n in found.items() if code.startswith("E") or code.startswith("S")} == {}
    # Reads two minutes apart are the test's sampling (W007); every other warning is a finding.
    assert set(found) <= {"W007"}, found
