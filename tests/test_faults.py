"""Dead, slow and failing devices: each is reported with its reason, and none delays the others."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from linli.localservers import LocalServer, free_port, free_port_range
from support import start_sim, stop_process, unique, wait_until

INTERVAL = 0.25
TIMEOUT = 0.2


def test_bad_devices_do_not_delay_good_ones(victoria: LocalServer, caplog: pytest.LogCaptureFixture) -> None:
    first = free_port_range(5)
    # Stations 1 and 5 are healthy; 2 never answers, 3 answers after 2 s, 4 answers with exception 4.
    sim = start_sim(
        "charger",
        "--port",
        str(first),
        "--stations",
        "5",
        "--fault",
        "2:silent",
        "--fault",
        "3:slow",
        "--fault",
        "4:exception",
    )
    refused_port = free_port()  # nothing listens here
    names = {1: "healthy-a", 2: "silent", 3: "slow", 4: "exception", 5: "healthy-b"}
    devices = [
        {"id": name, "profile": "charger", "port": first + i - 1, "interval": INTERVAL, "timeout": TIMEOUT}
        for i, name in names.items()
    ]
    devices.append(
        {
            "id": "refused",
            "profile": "charger",
            "port": refused_port,
            "interval": INTERVAL,
            "timeout": TIMEOUT,
        }
    )
    config = EdgeConfig.model_validate(
        {
            "writer": {"kind": "influxdb2", "url": victoria.url, "org": "linli", "bucket": "linli"},
            "sites": [{"id": unique("faults"), "devices": devices}],
        }
    )
    agent = Agent(config)
    by_name = {p.device.id: p for p in agent.pollers}

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        started = time.monotonic()
        await wait_until(
            lambda: (
                by_name["silent"].health.errors["timeout"] >= 4
                and by_name["exception"].health.errors["exception_4"] >= 4
                and by_name["healthy-a"].health.polls >= 12
            ),
            30,
            "faults to show",
        )
        elapsed = time.monotonic() - started
        stop.set()
        assert await task
        return elapsed

    with caplog.at_level(logging.WARNING, logger="linli.edge.modbus"):
        elapsed = asyncio.run(scenario())
    assert stop_process(sim) == 0

    for name in ("healthy-a", "healthy-b"):
        health = by_name[name].health
        assert health.online
        assert not health.errors
        # Every tick on time: the others' timeouts never held this device back.
        assert health.max_lag_s < INTERVAL / 2, (name, health.max_lag_s)
        assert health.polls >= int(elapsed / INTERVAL) - 1, (name, health.polls, elapsed)

    expected_reasons = {
        "silent": "timeout",
        "slow": "timeout",
        "exception": "exception_4",
        "refused": "refused",
    }
    for name, reason in expected_reasons.items():
        health = by_name[name].health
        assert not health.online, name
        assert health.errors[reason] >= 2, (name, dict(health.errors))
        assert set(health.errors) == {reason}, (name, dict(health.errors))

    # Each logged once when it went offline, not once per failed poll.
    for name in expected_reasons:
        logs = [r.getMessage() for r in caplog.records if f"/{name}: offline" in r.getMessage()]
        assert len(logs) == 1, (name, logs)
    [exception_log] = [r.getMessage() for r in caplog.records if "/exception: offline" in r.getMessage()]
    assert "Modbus exception 4 (device failure)" in exception_log


def test_a_device_that_stops_answering_goes_offline_and_comes_back_by_itself(victoria: LocalServer) -> None:
    port = free_port()
    sim = start_sim("charger", "--port", str(port), "--stations", "1")
    config = EdgeConfig.model_validate(
        {
            "writer": {"kind": "influxdb2", "url": victoria.url, "org": "linli", "bucket": "linli"},
            "sites": [
                {
                    "id": unique("comeback"),
                    "devices": [
                        {
                            "id": "st",
                            "profile": "charger",
                            "port": port,
                            "interval": INTERVAL,
                            "timeout": TIMEOUT,
                        }
                    ],
                }
            ],
        }
    )
    agent = Agent(config)
    [poller] = agent.pollers

    async def scenario() -> tuple[float, float]:
        nonlocal sim
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await wait_until(lambda: poller.health.online, 10, "the station online")
        stop_process(sim)
        gone = time.monotonic()
        await wait_until(lambda: not poller.health.online, 10, "the station offline")
        offline_after = time.monotonic() - gone
        sim = await asyncio.to_thread(start_sim, "charger", "--port", str(port), "--stations", "1")
        back = time.monotonic()
        polls = poller.health.polls
        await wait_until(lambda: poller.health.online and poller.health.polls > polls, 30, "the station back")
        online_after = time.monotonic() - back
        stop.set()
        assert await task
        return offline_after, online_after

    try:
        offline_after, online_after = asyncio.run(scenario())
    finally:
        stop_process(sim)
    assert offline_after <= 3 * INTERVAL + TIMEOUT  # within three poll periods
    # Back without a manual step, within the reconnect backoff (which doubles from the interval).
    assert online_after < 10
