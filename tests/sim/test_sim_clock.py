"""The simulator's clock starts when the simulator is ready, not while the district is built."""

from __future__ import annotations

import asyncio
import time

from linli.sim.clock import SimClock
from linli.sim.district import District, run_district

START = 1_700_000_000.0
SCALE = 120.0
BUILD_S = 3600.0  # as though building the district had taken an hour (a loaded machine, magnified)


def test_simulated_time_is_at_its_start_when_the_district_says_it_is_ready() -> None:
    # The clock is made before the district is built; the build's time must not be simulated,
    # or whoever paces on the ready signal (the dashboards' recording) finds the devices ahead.
    clock = SimClock(start=START, time_scale=SCALE, _wall0=time.monotonic() - BUILD_S)

    async def scenario() -> float:
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_district(District([], []), None, clock, stop, started=started))
        await started.wait()
        at_ready = clock.now()
        stop.set()
        await task
        return at_ready

    at_ready = asyncio.run(scenario())
    # Before the fix: START + BUILD_S * SCALE (five days ahead). After it: START plus the instant
    # between the ready signal and the read, however slow the machine (an hour would be needed).
    assert START <= at_ready < START + BUILD_S * SCALE / 2


def test_a_district_simulated_fast_from_the_past_stops_at_the_present_and_keeps_pace() -> None:
    # Whoever waits on the district for an event (the dashboards' recording, on a loaded
    # machine) may wait past the stretch it asked for: the devices' clocks must not then run
    # ahead of the edge's, which refuses them as bad_time.
    clock = SimClock.behind_wall(SCALE, hours=1 / 3600)  # a second of running before the present
    clock._wall0 -= 60  # a minute gone: two hours at this speed, uncapped
    before = time.time()
    now = clock.now()
    assert before - 1 <= now <= time.time()
    explicit = SimClock(start=before - 60, time_scale=SCALE, _wall0=time.monotonic() - 60, capped=True)
    assert explicit.now() <= time.time()
    # A clock asked for no cap (the charger simulator's, from now) runs on as fast as asked.
    assert SimClock(start=before, time_scale=SCALE, _wall0=time.monotonic() - 60).now() > before + 3600
