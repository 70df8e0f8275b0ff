"""Renovation plans solved off the event loop, in a worker process.

The event loop that plans also takes every truck's message. A plan takes 0.1 to 2.5 s (the
road matrix, networkx in Python, and VROOM), and neither releases the GIL: solved in a thread, it
still holds the loop up for tens of milliseconds at a time. So plans are solved in one worker
process, forked when the service starts, before any thread runs: it has the roads already.

One solve at a time. What the loop reads (the bookings open, where the trucks are) and what it
does with a plan (offers, predictions) stay on the loop, so no state is shared. Whatever changes
while a plan is solved (bookings, cancellations, drivers' answers) asks for one more plan, made
from the state as it is once the solve returns: a flood of bookings costs a plan per solve, not
a plan per booking. A plan's result is checked against the state when it is applied (see
`Renovation.apply`): a booking cancelled meanwhile is not offered, nor kept in a round.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from linli.catalog.ratelog import RateLimitedLog
from linli.cloud.waste import dispatch
from linli.cloud.waste.dispatch import Pickup, Plan, TruckNow
from linli.transit.roads import Roads

log = logging.getLogger(__name__)

NICE = 10  # the worker's niceness, added to the service's
PR_SET_PDEATHSIG = 1  # Linux prctl: a signal for this process when its parent dies


@dataclass(frozen=True)
class Problem:
    """What a plan is made of: the trucks and open pickups as they were, at `now_s`."""

    trucks: tuple[TruckNow, ...]
    pickups: tuple[Pickup, ...]
    depot: tuple[float, float]
    now_s: float

    def solve(self, roads: Roads) -> Plan:
        return dispatch.plan(roads, self.trucks, self.pickups, self.depot, self.now_s)


_roads: Roads | None = None  # the worker's, inherited at the fork


def die_with_parent(parent: int) -> None:
    """In a forked worker: go when the process that forked it goes, even killed with SIGKILL,
    which leaves no time to stop a pool (a worker's queue never reads an end of file: the
    worker holds the queue's other end itself). Linux only; elsewhere, nothing."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the prctl above took effect
        os._exit(0)


def _keep(roads: Roads, parent: int) -> None:
    global _roads  # noqa: PLW0603 (one per worker process)
    _roads = roads
    die_with_parent(parent)
    # Where the worker and the event loop want the same core, the loop (the trucks' messages,
    # the API) goes first: a plan is a background job.
    os.nice(NICE)


def _ready() -> None:
    """Nothing: submitted at the start so that the worker is forked then."""


def _solve(problem: Problem) -> Plan:
    assert _roads is not None, "the worker was started without roads"
    return problem.solve(_roads)


class Plannable(Protocol):
    """What the planner reads of a `Renovation` (which owns the planner: it imports this module)."""

    @property
    def roads(self) -> Roads: ...
    def problem(self, now_s: float) -> Problem | None: ...
    def apply(self, found: Plan, now_s: float) -> Plan: ...


class Planner:
    """Plans a `Renovation`'s rounds in a worker process; call `close` when done."""

    def __init__(self, renovation: Plannable) -> None:
        self.renovation = renovation
        self.solved = 0  # plans solved and applied
        self.errors = 0  # plans that failed (logged): the next change plans again
        self._wanted: float | None = None  # the newest time a plan was asked for
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._ratelog = RateLimitedLog(log)
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # Forked, not spawned: the worker starts at once with the roads built here, nothing to
        # pickle or load. The service makes its Planner before it starts any thread.
        pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_keep,
            initargs=(self.renovation.roads, os.getpid()),
        )
        pool.submit(_ready)  # forks the worker now, not in the middle of the first booking
        return pool

    def want(self, now_s: float) -> None:
        """Plan again, soon (on the event loop): after the solve under way, if there is one."""
        if self._closed:
            return  # the service is stopping: its state is planned again at the next start
        self._wanted = now_s if self._wanted is None else max(self._wanted, now_s)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._plans())

    async def idle(self) -> None:
        """Return once every plan asked for is solved and applied."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _plans(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wanted is not None:
            now_s, self._wanted = self._wanted, None
            size = 0
            try:
                problem = self.renovation.problem(now_s)
                if problem is None:  # no longer the dispatching service
                    continue
                size = len(problem.pickups)
                found = await loop.run_in_executor(self._pool, _solve, problem)
                self.renovation.apply(found, now_s)
                self.solved += 1
            except DBAPIError as exc:  # planned again with the next change, or the next minute
                self.errors += 1
                self._ratelog.log(
                    "state", "planner", "waste: no plan, the state cannot be reached: %s", str(exc)[:200]
                )
            except BrokenProcessPool:  # killed (out of memory, by hand): the next one is
                # forked while this process runs threads; it only solves, taking no lock of theirs
                self.errors += 1
                log.error("waste: the planning process died (%d pickups); starting another", size)
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start()
            except Exception:  # a bug costs a plan, never the service
                self.errors += 1
                log.exception("waste: a plan of %d pickups failed", size)

    async def close(self) -> None:
        """Stop planning: a plan under way is not applied; the worker ends once it is solved."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)
