"""Group commit: the connectors' lines reach the durable buffer together.

A connector submits lines with an optional `done` callback; the callback runs only once
those lines are committed to disk, which is when the MQTT connector acknowledges the
messages they came from. One commit serves every connector, so the buffer's cost is a
transaction per commit, not per reading. Lines somebody waits for (a broker owed an
acknowledgement) are committed within COMMIT_S; polled readings, which nobody waits for,
within LAZY_COMMIT_S, so that a Modbus-only agent fsyncs a few times a second, not fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from linli.edge.backoff import Backoff
from linli.edge.buffer import DurableBuffer

log = logging.getLogger(__name__)

COMMIT_S = 0.02
LAZY_COMMIT_S = 0.25

Done = Callable[[], None]


class Spool:
    """Stages lines in memory for at most COMMIT_S, then commits them in one transaction."""

    def __init__(self, buffer: DurableBuffer, db: ThreadPoolExecutor, on_commit: Callable[[], None]) -> None:
        self.buffer = buffer
        self.on_commit = on_commit
        self.commits = 0
        self.failures = 0
        self._db = db
        self._lines: list[str] = []
        self._done: list[Done] = []
        self._delivered = bytearray()
        self._backoff = Backoff(initial=0.1, maximum=10.0)
        self._retry_delay = 0.0
        # One commit at a time: a caller that commits "now" (the MQTT connector before it
        # says goodbye) must not return while an earlier commit's callbacks are still owed.
        self._committing = asyncio.Lock()
        self._waited_for = asyncio.Event()  # set when lines with a callback are staged

    @property
    def staged(self) -> int:
        """Lines waiting for the next commit."""
        return len(self._lines)

    def submit(self, lines: Sequence[str], done: Done | None = None, delivered: bytes = b"") -> None:
        """Stage lines; `done` runs once they are on disk, with `delivered` in the same commit."""
        self._lines.extend(lines)
        self._delivered += delivered
        if done is not None:
            self._done.append(done)
            self._waited_for.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Commit until `stop`, then once more for what is left: within COMMIT_S what somebody
        waits for, within LAZY_COMMIT_S the rest."""
        while not stop.is_set():
            if not self._done:
                # Nobody waits: sleep until the lazy deadline, or until somebody does.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._waited_for.wait(), timeout=LAZY_COMMIT_S)
            if stop.is_set():
                break
            # Gather for COMMIT_S what arrives with it, as before.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(COMMIT_S, self._retry_delay))
            self._waited_for.clear()
            await self.commit()
        await self.commit()

    async def commit(self) -> bool:
        """Commit what is staged; False (and everything kept staged) when the disk refused.

        On return, every line submitted before the call is on disk and its callback has run.
        """
        async with self._committing:
            return await self._commit()

    async def _commit(self) -> bool:
        if not self._lines and not self._done:
            return True
        lines, done, delivered = self._lines, self._done, self._delivered
        self._lines, self._done, self._delivered = [], [], bytearray()
        append = partial(self.buffer.append, lines, delivered=bytes(delivered))
        try:
            await asyncio.get_running_loop().run_in_executor(self._db, append)
        except sqlite3.Error as exc:
            # A full or failing disk: keep everything staged and acknowledge nothing.
            self._lines[:0] = lines
            self._done[:0] = done
            self._delivered[:0] = delivered
            self.failures += 1
            self._retry_delay = self._backoff.next_delay()
            log.error(
                "buffer %s: commit failed (%s); %d lines kept in memory", self.buffer.path, exc, len(lines)
            )
            return False
        self._retry_delay = 0.0
        self._backoff.reset()
        self.commits += 1
        for callback in done:
            callback()
        self.on_commit()
        return True
