"""A config too large for one agent is refused, at start and on SIGHUP (the running one stays),
and a reload's config is read off the event loop: the devices are polled while it is built."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from linli.edge.agent import Agent, Reload
from linli.edge.cli import _load as load_checked
from linli.edge.config import MAX_DEVICES, EdgeConfig, load_config
from linli.localservers import LocalServer
from support import influx1_create_db, linli, unique, wait_until
from test_faults import BrokenGateway, _frame


def edge_toml(influx: LocalServer, db: str, port: int, devices: int) -> str:
    """`devices` pressure gauges behind one Modbus gateway on `port`, polled every 0.1 s."""
    head = (
        f'[agent]\nname = "limits"\n[writer]\nkind = "influxdb1"\nurl = "{influx.url}"\ndatabase = "{db}"\n'
        '[[sites]]\nid = "site"\n'
    )
    device = (
        '[[sites.devices]]\nid = "p{}"\nprofile = "fire_pressure"\nport = {}\ninterval = 0.1\ntimeout = 0.1\n'
    )
    return head + "".join(device.format(i, port) for i in range(devices))


def test_a_config_over_the_device_cap_is_refused_at_start(influx1: LocalServer, tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(edge_toml(influx1, "unused", 502, MAX_DEVICES + 1))
    done = linli("edge", "run", "--config", str(path))
    assert done.returncode == 2, done.stderr
    # The file, the count, the cap and the fix.
    assert str(path) in done.stderr
    assert f"{MAX_DEVICES + 1} devices, more than the {MAX_DEVICES}" in done.stderr
    assert "split the sites over several agents" in done.stderr


def test_a_reload_is_read_while_polling_goes_on_and_one_over_the_cap_is_refused(
    influx1: LocalServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.ERROR, logger="linli.edge.agent")
    db = unique("limits")
    influx1_create_db(influx1.url, db)
    gateway = BrokenGateway("answers well", answer=_frame)
    path = tmp_path / "edge.toml"
    reading = threading.Event()  # set when a reload started reading the config
    go_on = threading.Event()  # the test lets it finish once it saw the polls go on
    polled_meanwhile: list[bool] = []

    def load() -> EdgeConfig | None:
        reading.set()
        polled_meanwhile.append(go_on.wait(10))
        return load_checked(path)

    async def scenario() -> list[int]:
        await gateway.start()
        path.write_text(edge_toml(influx1, db, gateway.port, 1))
        agent = Agent(load_config(path))
        stop = asyncio.Event()
        reload = Reload(load)
        task = asyncio.create_task(agent.run(stop, reload=reload))
        try:
            first = agent.pollers[0]
            await wait_until(lambda: first.health.polls >= 1, 10, "the first poll")
            # 1. A valid config: while it is read, the running one polls on.
            path.write_text(edge_toml(influx1, db, gateway.port, 2))
            reload.wanted.set()
            await wait_until(reading.is_set, 10, "the reload to start reading")
            polls = first.health.polls
            await wait_until(lambda: first.health.polls >= polls + 2, 10, "polls during the reading")
            go_on.set()
            await wait_until(lambda: len(agent.pollers) == 2, 10, "the new config")
            # 2. Over the cap: refused, and the running config stays.
            path.write_text(edge_toml(influx1, db, gateway.port, MAX_DEVICES + 1))
            reload.wanted.set()
            await wait_until(lambda: "the new config is refused" in caplog.text, 30, "the refusal")
            running = [len(agent.pollers), agent.pollers[1].health.polls]
            await wait_until(lambda: agent.pollers[1].health.polls > running[1], 10, "polls after it")
            return running
        finally:
            stop.set()
            await task
            gateway.close()

    running = asyncio.run(scenario())
    assert polled_meanwhile == [True, True]
    assert running[0] == 2
    assert f"{MAX_DEVICES + 1} devices, more than the {MAX_DEVICES}" in capsys.readouterr().err
