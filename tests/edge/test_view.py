"""The agent's live terminal view (`linli edge run --view`, `linli demo --chargers-only`)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from linli.demo.chargers import write_config
from linli.edge.agent import Agent
from linli.edge.config import load_config
from linli.edge.view import run_view


class Terminal(io.StringIO):
    """A terminal's screen that ends the view once it has drawn one."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__()
        self.stop = stop

    def isatty(self) -> bool:
        return True

    def flush(self) -> None:
        self.stop.set()


def test_a_wide_terminal_shows_each_device_s_last_values_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a 160-column terminal a charging station's row is not cut at 100 characters."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "160")
    write_config(
        tmp_path / "edge.toml", store_url="http://127.0.0.1:9", first_port=9, stations=1, interval=1.0
    )
    agent = Agent(load_config(tmp_path / "edge.toml"))
    try:
        [station] = agent.pollers
        station.last = {
            None: {"total_power": 12345.6, "temperature": 31.25, "cabinet_temp": 29.75},
            **{port: {"state": 1} for port in range(1, 11)},
        }

        async def draw() -> str:
            stop = asyncio.Event()
            screen = Terminal(stop)
            await run_view(agent, stop, interval=0.01, out=screen)
            return screen.getvalue()

        [row] = [line for line in asyncio.run(draw()).splitlines() if line.startswith(station.name)]
    finally:
        agent.buffer.close()
    assert row.endswith("charging 10/10"), row
    assert len(row) > 100


def test_the_district_demo_s_view_shows_devices_readings_trucks_notices_bookings_and_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`linli demo`'s screen: devices online, readings/s, each truck on a trip with its next stop
    (as people name them) and predicted time, notices by role, bookings by state, open alerts,
    and the faults typed in."""
    from linli.demo.inbox import Inbox, Person
    from linli.demo.view import Services, render

    monkeypatch.chdir(tmp_path)
    write_config(
        tmp_path / "edge.toml", store_url="http://127.0.0.1:9", first_port=9, stations=2, interval=1.0
    )
    agent = Agent(load_config(tmp_path / "edge.toml"))
    inbox = Inbox()
    inbox.register("keeper-hongxu-1", Person("虹许小区垃圾房保洁员", "keeper", "短信 SMS"))
    for _ in range(3):
        inbox.take("keeper-hongxu-1", {"title": "t", "text": "x"})
    services = Services(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "token",
        trips=[
            {
                "truck": "truck-wet-north",
                "trip_id": "wet-north-1730",
                "next_stop": "hongxu-1",
                "predicted": "2026-12-07T17:31:00+08:00",
                "delay_min": 1.0,
            }
        ],
        stop_names={"hongxu-1": "虹许小区垃圾房"},
        truck_names={"truck-wet-north": "07号 沪D·F3021"},
        struck=["ronghua-1/station-2:smoke on ronghua-1/station-2"],
    )
    services.bookings.update({"accepted": 1, "requested": 2})
    services.open_alerts = 2
    try:
        screen = render(agent, services, inbox, 123.0)
    finally:
        agent.buffer.close()
    assert "devices online 0/2" in screen
    assert "readings/s 123" in screen
    assert "notices sent: keepers 3," in screen
    assert "open alerts 2" in screen
    assert "bookings: accepted 1, requested 2" in screen
    assert "ronghua-1/station-2:smoke on ronghua-1/station-2" in screen
    [truck] = [line for line in screen.splitlines() if line.startswith("07号")]
    assert "虹许小区垃圾房" in truck
    assert "17:31" in truck
    assert "+1 min" in truck
