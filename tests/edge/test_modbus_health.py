"""A Modbus device's health point: on a change of state and as a heartbeat when it reports by
exception, at every poll when it does not; against the charger simulator over TCP."""

from __future__ import annotations

import asyncio
import random

import pytest

from linli.catalog.profile import get_profile
from linli.demo.servers import free_port
from linli.edge.config import DeviceConfig
from linli.edge.modbus import SPREAD_STEPS, DevicePoller, Endpoint, first_poll
from support import start_sim, stop_process


class Clock:
    """The poller's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health_lines(batches: list[list[str]]) -> list[int]:
    """How many health points each poll wrote."""
    return [sum(line.startswith("health,") for line in batch) for batch in batches]


@pytest.mark.servers
@pytest.mark.parametrize("by_exception", [True, False])
def test_health_is_written_on_a_change_and_as_a_heartbeat(
    by_exception: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    port = free_port()
    sim = start_sim("charger", "--port", str(port), "--stations", "1")
    batches: list[list[str]] = []
    device = DeviceConfig(
        id="station-1", profile="charger", port=port, interval=1.0, timeout=0.5,
        report_by_exception=by_exception, health_every=60,
    )  # fmt: skip
    poller = DevicePoller(
        site="s", device=device, profile=get_profile("charger"), endpoint=Endpoint("127.0.0.1", port, 0.5),
        emit=batches.append, clock=clock,
    )  # fmt: skip

    async def polls(n: int) -> None:
        for _ in range(n):
            await poller.poll_and_emit()
            clock.now += 1.0

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        try:
            await polls(10)
            healthy = health_lines(batches)
            clock.now += 60.0
            await polls(1)
            heartbeat = health_lines(batches[-1:])
        finally:
            await asyncio.to_thread(stop_process, sim)
        batches.clear()
        clock.now += 60.0
        await polls(4)  # the device is gone: every failed poll is a new error
        return healthy, heartbeat, health_lines(batches)

    healthy, heartbeat, gone = asyncio.run(scenario())
    if by_exception:
        assert healthy == [1] + [0] * 9  # online, then nothing new
        assert heartbeat == [1]  # a minute on, written again unchanged
    else:
        assert healthy == [1] * 10
        assert heartbeat == [1]
    assert sum(gone) >= 1
    assert poller.health.errors.total() >= 1
    assert batches[0][-1].startswith("health,")


def test_first_polls_fall_on_a_grid_spread_over_the_interval() -> None:
    rng = random.Random(3)
    interval, now = 2.0, 12345.678
    step = interval / SPREAD_STEPS
    firsts = [first_poll(now, interval, rng) for _ in range(400)]
    assert all(now < t <= now + interval + step for t in firsts)
    # Devices due in one step share an instant: the event loop wakes once for them.
    assert all(abs(t / step - round(t / step)) < 1e-9 for t in firsts)
    assert len(set(firsts)) == SPREAD_STEPS  # and every step of the interval is used
