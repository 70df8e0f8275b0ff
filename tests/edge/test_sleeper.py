"""The pollers' sleep between ticks: woken by the agent's stop, and by nothing else."""

from __future__ import annotations

import asyncio

import pytest

from linli.edge.sleeper import Sleeper


async def _asleep(sleeper: Sleeper) -> None:
    while not sleeper.asleep:  # noqa: ASYNC110 (yields until the poller is in its sleep)
        await asyncio.sleep(0)


def test_a_sleep_runs_its_time_and_says_to_go_on() -> None:
    async def scenario() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        async with Sleeper(asyncio.Event()) as sleeper:
            started = loop.time()
            go_on = await sleeper.sleep(0.05)
            return go_on, loop.time() - started

    go_on, slept = asyncio.run(scenario())
    assert go_on
    assert slept >= 0.05


def test_stop_wakes_a_long_sleep_at_once_and_the_task_is_not_left_cancelled() -> None:
    async def scenario() -> tuple[bool, int]:
        stop = asyncio.Event()
        sleeper = Sleeper(stop)

        async def poller() -> tuple[bool, int]:
            async with sleeper:
                go_on = await sleeper.sleep(3600)
                await asyncio.sleep(0)  # a task still marked cancelled would raise here
                task = asyncio.current_task()
                assert task is not None
                return go_on, task.cancelling()

        task = asyncio.create_task(poller())
        await asyncio.wait_for(_asleep(sleeper), 5)
        stop.set()
        return await asyncio.wait_for(task, 5)

    go_on, cancelling = asyncio.run(scenario())
    assert not go_on
    assert cancelling == 0


def test_a_set_stop_ends_the_sleep_before_it_starts() -> None:
    async def scenario() -> bool:
        stop = asyncio.Event()
        stop.set()
        async with Sleeper(stop) as sleeper:
            return await asyncio.wait_for(sleeper.sleep(3600), 5)

    assert asyncio.run(scenario()) is False


def test_somebody_elses_cancellation_goes_through() -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        sleeper = Sleeper(stop)

        async def poller() -> None:
            async with sleeper:
                await sleeper.sleep(3600)

        task = asyncio.create_task(poller())
        await asyncio.wait_for(_asleep(sleeper), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not stop.is_set()

    asyncio.run(scenario())
