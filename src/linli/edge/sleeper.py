"""Sleeping between polls until the agent stops, at the cost of a plain `asyncio.sleep`."""

from __future__ import annotations

import asyncio
from types import TracebackType


class Sleeper:
    """Sleeps for the task that entered it, and wakes it early once `stop` is set.

    `asyncio.wait_for(stop.wait(), delay)` does the same with a task and two futures per
    sleep, which was a tenth of a Modbus poller's CPU; here one task waits on `stop` for the
    whole run and cancels the sleep it interrupts.
    """

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self._task: asyncio.Task[object] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._asleep = False
        self._woken = False

    async def __aenter__(self) -> Sleeper:
        self._task = asyncio.current_task()
        self._watch = asyncio.create_task(self._wake_on_stop(), name="sleeper")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()

    @property
    def asleep(self) -> bool:
        return self._asleep

    async def _wake_on_stop(self) -> None:
        await self.stop.wait()
        if self._asleep and self._task is not None:
            self._woken = True
            self._task.cancel()

    async def sleep(self, delay: float) -> bool:
        """Sleep `delay` seconds; False (at once, or when woken) if `stop` is set."""
        if self.stop.is_set():
            return False
        assert self._task is not None, "enter the Sleeper with `async with` first"
        self._asleep = True
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not self._woken:
                raise  # somebody else's cancellation
            self._woken = False
            self._task.uncancel()
            return False
        finally:
            self._asleep = False
        return not self.stop.is_set()
