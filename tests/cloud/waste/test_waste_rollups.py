"""Tonnage rollups by day, ISO week and calendar month in Asia/Shanghai, with late lifts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from linli.cloud.waste.rollups import Lift, Period, period_start, rollups
from linli.demo.servers import LocalServer
from support import influx1_create_db, influx1_query, unique

SHANGHAI = ZoneInfo("Asia/Shanghai")


def ms(year: int, month: int, day: int, hour: int, minute: int) -> int:
    """Epoch ms of a local Shanghai time."""
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).timestamp() * 1000)


def lift(time_ms: int, kg: float, waste: str = "wet", stop: str = "hongxu-1") -> Lift:
    return Lift(time_ms, waste, stop, f"{waste}-north", f"truck-{waste}-north", 2, kg)


def test_periods_begin_at_local_midnight_on_monday_and_on_the_first() -> None:
    # 23:30 on Sunday 2026-11-29 in Shanghai is 15:30 UTC the same day; 00:30 on Monday is
    # 16:30 UTC on Sunday: UTC would put both on Sunday.
    sunday_night, monday_morning = ms(2026, 11, 29, 23, 30), ms(2026, 11, 30, 0, 30)
    assert period_start(sunday_night, Period.DAY).date() == dt.date(2026, 11, 29)
    assert period_start(monday_morning, Period.DAY).date() == dt.date(2026, 11, 30)
    assert period_start(sunday_night, Period.WEEK).date() == dt.date(2026, 11, 23)  # ISO week: from Monday
    assert period_start(monday_morning, Period.WEEK).date() == dt.date(2026, 11, 30)
    assert period_start(sunday_night, Period.MONTH).date() == dt.date(2026, 11, 1)
    assert period_start(ms(2026, 12, 1, 0, 5), Period.MONTH).date() == dt.date(2026, 12, 1)
    assert period_start(monday_morning, Period.DAY).utcoffset() == dt.timedelta(hours=8)


def test_rollups_sum_by_group_and_period() -> None:
    lifts = [
        lift(ms(2026, 11, 29, 23, 30), 100.0),
        lift(ms(2026, 11, 30, 0, 30), 40.0),
        lift(ms(2026, 11, 30, 9, 0), 60.0),
        lift(ms(2026, 11, 30, 9, 5), 25.0, waste="dry"),
    ]
    days = {
        (r.start.date().isoformat(), r.waste_type): (r.lifts, r.bins, r.kg)
        for r in rollups(lifts, Period.DAY)
    }
    assert days == {
        ("2026-11-29", "wet"): (1, 2, 100.0),
        ("2026-11-30", "wet"): (2, 4, 100.0),
        ("2026-11-30", "dry"): (1, 2, 25.0),
    }
    months = {r.waste_type: r.kg for r in rollups(lifts, Period.MONTH)}
    assert months == {"wet": 200.0, "dry": 25.0}
    [line] = [r.line() for r in rollups(lifts[:1], Period.WEEK)]
    assert line.startswith(
        "waste_rollup,period=week,route=wet-north,stop=hongxu-1,truck=truck-wet-north,waste_type=wet "
    )
    assert line.endswith(f" {ms(2026, 11, 23, 0, 0)}")


def stats(influx: LocalServer, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "linli.cli.main",
            "waste",
            "stats",
            "--url",
            influx.url,
            "--database",
            db,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_waste_stats_reads_the_lifts_writes_rollups_and_counts_a_late_lift(influx1: LocalServer) -> None:
    db = unique("waste")
    influx1_create_db(influx1.url, db)

    def store(*lines: str) -> None:
        from linli.cloud.waste.store import write_lines

        write_lines(influx1.url, db, list(lines))

    # Lifts as the edge stores them: tags site, device, waste_type, route; fields stop, bins, kg.
    def lift_line(time_ms: int, kg: float, waste: str = "wet") -> str:
        return (
            f"truck,device=truck-{waste}-north,route={waste}-north,site=fleet,waste_type={waste} "
            f'stop="hongxu-1",bins=2i,collected_kg={kg} {time_ms}'
        )

    store(lift_line(ms(2026, 11, 29, 23, 30), 100.0), lift_line(ms(2026, 11, 30, 9, 0), 60.0))
    store(
        f"truck,device=truck-wet-north,site=fleet lat=31.2,lon=121.39 {ms(2026, 11, 30, 9, 1)}"
    )  # a position
    window = ("--from", "2026-11-29", "--to", "2026-11-30")
    first = stats(influx1, db, "--period", "day", "--csv", "--write", *window)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "period_start,waste_type,lifts,bins,kg",
        "2026-11-29,wet,1,2,100.0",
        "2026-11-30,wet,1,2,60.0",
    ]
    # A lift of Monday morning that reached the store late: the day is recomputed, not added to.
    store(lift_line(ms(2026, 11, 30, 8, 0), 15.0))
    again = stats(influx1, db, "--period", "day", "--csv", "--write", *window)
    assert again.stdout.splitlines()[-1] == "2026-11-30,wet,2,4,75.0"
    stored = influx1_query(influx1.url, db, "SELECT kg, lifts FROM waste_rollup WHERE period = 'day'")
    assert [(r["lifts"], r["kg"]) for r in stored] == [(1, 100.0), (2, 75.0)]  # replaced, not doubled
    # --json holds the CSV's rows, as numbers, and what was read.
    as_json = json.loads(stats(influx1, db, "--period", "day", "--json", *window).stdout)
    assert [list(r.values()) for r in as_json["rows"]] == [
        ["2026-11-29", "wet", 1, 2, 100.0],
        ["2026-11-30", "wet", 2, 4, 75.0],
    ]
    assert list(as_json["rows"][0]) == again.stdout.splitlines()[0].split(",")
    assert (as_json["lifts"], as_json["from"], as_json["to"], as_json["written"]) == (3, *window[1::2], None)
    week = stats(influx1, db, "--period", "week", *window)
    assert "2026-11-23  wet" in week.stdout
    assert "2026-11-30  wet" in week.stdout
    bad = stats(influx1, "no_such_db", "--period", "month", *window)
    assert bad.returncode == 1
    assert "database not found" in bad.stderr


def test_waste_rollup_keeps_the_tonnage_in_the_state_where_any_service_serves_it(
    influx1: LocalServer, tmp_path: Path, state: str
) -> None:
    """`linli waste rollup --state`: the periods it recomputes replace their rows in the
    central state (SQLite or PostgreSQL), and a waste service's GET /rollups reads them."""
    from linli.cloud.waste.api import app
    from linli.cloud.waste.store import write_lines
    from test_waste_service import TOKEN, incident_service

    db = unique("waste")
    influx1_create_db(influx1.url, db)
    today = dt.datetime.now(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    at = [int((today + dt.timedelta(hours=h)).timestamp() * 1000) for h in (1, 2, 3)]

    def lift_line(time_ms: int, kg: float, waste: str) -> str:
        return (
            f"truck,device=truck-{waste}-north,route={waste}-north,site=fleet,waste_type={waste} "
            f'stop="hongxu-1",bins=2i,collected_kg={kg} {time_ms}'
        )

    def rollup() -> subprocess.CompletedProcess[str]:
        command = ["waste", "rollup", "--url", influx1.url, "--database", db, "--days", "1", "--state", state]
        return subprocess.run(
            [sys.executable, "-m", "linli.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    write_lines(influx1.url, db, [lift_line(at[0], 100.0, "wet"), lift_line(at[1], 40.0, "dry")])
    first = rollup()
    assert first.returncode == 0, first.stderr
    assert "wrote 6 tonnage rollups" in first.stdout  # 2 waste types x day, week, month
    write_lines(influx1.url, db, [lift_line(at[2], 25.0, "wet")])  # a late lift: replaced, not added
    again = rollup()
    assert again.returncode == 0, again.stderr
    service, _ = incident_service(tmp_path, "http://127.0.0.1:1", 1, state=state)

    async def read() -> dict[str, list[dict[str, Any]]]:
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://waste") as api:
            return {
                period: (
                    await api.get(
                        "/rollups", params={"period": period, "from": today.date().isoformat()}, headers=auth
                    )
                ).json()
                for period in ("day", "week", "month")
            }

    got = asyncio.run(read())
    service.state.close()
    for period, rows in got.items():
        assert {(r["waste_type"], r["lifts"], r["kg"]) for r in rows} == {
            ("wet", 2, 125.0),
            ("dry", 1, 40.0),
        }, period
    assert {r["start"] for r in got["day"]} == {today.date().isoformat()}
    assert {r["start"] for r in got["month"]} == {today.date().replace(day=1).isoformat()}
    bad = subprocess.run(
        [sys.executable, "-m", "linli.cli", "waste", "rollup", "--url", influx1.url, "--database", db,
         "--state", "postgresql://nobody@127.0.0.1:1/none"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "cannot be opened" in bad.stderr
