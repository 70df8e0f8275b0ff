"""Every list of the waste API pages by cursor (`linli.cloud.paging`): the trips followed now,
the compounds a pickup can be booked at and the tonnage rollups, each row given once over
the pages, and the document says so for every list."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from linli.cloud.paging import DEFAULT_LIMIT, MAX_LIMIT
from linli.cloud.waste.api import app
from linli.cloud.waste.config import WasteConfig
from linli.cloud.waste.rollups import Period, Rollup
from linli.cloud.waste.service import WasteService
from linli.transit.gtfs import load_feed
from test_api_paging import TOKEN, pages
from test_waste_service import FEED

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2026, 11, 24)  # the district's timetable runs every trip of it


def service_of(tmp_path: Path) -> WasteService:
    return WasteService(WasteConfig(gtfs=FEED, state=str(tmp_path / "waste.sqlite")), TOKEN, load_feed(FEED))


def local_s(hhmm: str) -> float:
    hour, minute = (int(p) for p in hhmm.split(":"))
    return dt.datetime.combine(DAY, dt.time(hour, minute), SHANGHAI).timestamp()


def sizes(count: int, limit: int) -> list[int]:
    """The pages' lengths of a list of `count` items, `limit` a page."""
    return [limit] * (count // limit) + ([count % limit] if count % limit else [])


def walk(
    service: WasteService, url: str, between: Callable[[], None] | None = None
) -> list[list[dict[str, Any]]]:
    async def run() -> list[list[dict[str, Any]]]:
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://waste") as api:
            return await pages(api, url, between)

    return asyncio.run(run())


def test_the_trips_followed_page_by_cursor_each_once_with_one_opened_while_paging(tmp_path: Path) -> None:
    service = service_of(tmp_path)
    engine = service.engine
    engine.advance(local_s("09:00"))  # the morning's trips followed, from 45 min before each leaves
    before = {tr.trip.id for tr in engine.trackers.values()}
    assert len(before) >= 3, before

    def open_another() -> None:
        engine.advance(local_s("09:20"))  # hazardous-1000 is followed from 09:15

    found = walk(service, "/trips?limit=2", between=open_another)
    service.state.close()
    after = {tr.trip.id: tr for tr in engine.trackers.values()}
    assert set(after) - before == {"hazardous-1000"}
    assert [len(p) for p in found] == sizes(len(after), 2)
    # In the order they leave: the one opened while paging leaves last, and is given once.
    leaving = sorted(after, key=lambda t: after[t].zero_s + after[t].trip.stop_times[0].departure_s)
    assert [t["trip_id"] for p in found for t in p] == leaving


def test_the_compounds_page_by_cursor_each_once_by_id(tmp_path: Path) -> None:
    service = service_of(tmp_path)
    feed = service.engine.feed
    compounds = sorted(set(feed.stops) - set(feed.extras.depots))
    found = walk(service, "/compounds?limit=5")
    service.state.close()
    assert [len(p) for p in found] == sizes(len(compounds), 5)
    assert [c["id"] for p in found for c in p] == compounds
    assert found[0][0]["names"]["en"]  # each compound as people know it, in every language


def test_the_rollups_page_by_cursor_each_once_in_order(tmp_path: Path) -> None:
    service = service_of(tmp_path)
    start = dt.datetime.combine(DAY, dt.time(), SHANGHAI)
    rows = [
        Rollup(
            Period.DAY,
            start + dt.timedelta(days=d),
            waste,
            f"stop-{s}",
            f"{waste}-north",
            f"truck-{waste}",
            1,
            2,
            10.0,
        )
        for d in range(2)
        for waste in ("wet", "dry")
        for s in range(3)
    ]
    service.state.keep_rollups(rows, {Period.DAY: int(start.timestamp() * 1000)})
    found = walk(service, f"/rollups?period=day&from={DAY.isoformat()}&limit=5")
    # From the first day there is (schemathesis asked): every row, not a 500 for year 0.
    earliest = {p: walk(service, f"/rollups?period={p}&from=0001-01-01") for p in ("day", "week", "month")}
    service.state.close()
    assert [len(p) for p in earliest["day"]] == [len(rows)]
    assert earliest["week"] == earliest["month"] == [[]]  # kept for days only
    assert [len(p) for p in found] == sizes(len(rows), 5) == [5, 5, 2]
    keys = [(r["start"], r["waste_type"], r["stop"]) for p in found for r in p]
    assert keys == sorted((r.start.date().isoformat(), r.waste_type, r.stop) for r in rows)


def test_the_document_says_every_list_pages(tmp_path: Path) -> None:
    service = service_of(tmp_path)

    async def document() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app(service.engine, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://waste") as api:
            return dict((await api.get("/openapi.json")).json())

    paths = asyncio.run(document())["paths"]
    service.state.close()
    lists = {
        path
        for path, operations in paths.items()
        if "get" in operations
        and operations["get"]["responses"]["200"]
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
        .get("type")
        == "array"
    }
    assert {"/trips", "/compounds", "/rollups", "/notices", "/incidents", "/bookings"} <= lists
    for path in lists:
        get = paths[path]["get"]
        params = {p["name"]: p for p in get["parameters"]}
        assert params["limit"]["schema"]["maximum"] == MAX_LIMIT, path
        assert params["limit"]["schema"]["default"] == DEFAULT_LIMIT, path
        assert "cursor" in params, path
        assert "Link" in get["responses"]["200"]["headers"], path
