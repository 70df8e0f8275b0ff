"""The agent's live terminal view (`linli edge run --view`, `linli demo --chargers-only`)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from linli.demo import write_config
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
