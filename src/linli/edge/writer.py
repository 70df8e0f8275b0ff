"""The writer: batches from the durable buffer to the store, removed only once confirmed.

Each batch follows the transaction Telegraf uses: take the oldest chunks, write them,
then accept (remove them from the buffer) or reject (leave them queued). Failures are
classified by the store's answer:

- 413, too large: the batch size is halved and the batch goes again at once;
- 400 or 422, bad lines: the batch is bisected until the offending lines are alone; they
  go to the buffer's dead-letter table with the store's reason, the rest are written
  (InfluxDB keeps the valid lines of a partial write, and writing a point twice is
  idempotent, so resending them is safe);
- 429, 5xx or no answer: the batch stays queued and is retried with exponential backoff
  and jitter, honouring Retry-After, for as long as it takes;
- 401, 403 or 404 (no such database or bucket, or no permission): the same, since the
  store is not set up for us yet; the lines are not at fault.

After an outage the backlog is replayed oldest first, in alternation with the newest
data, so the screen shows the present at once while the past fills in behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from linli.edge.backoff import Backoff
from linli.edge.buffer import Chunk, DurableBuffer
from linli.edge.sinks import Sink, WriteError

log = logging.getLogger(__name__)

T = TypeVar("T")

# While this many batches wait, a batch takes that many: each batch costs a few turns of the
# event loop (read the buffer, send, drop what was sent), and under overload the MQTT connector
# keeps that loop busy, so a writer taking one batch at a time falls behind what it is handed.
BACKLOG_BATCHES = 4


@dataclass
class WriterStats:
    """Counters since start."""

    written: int = 0
    batches: int = 0
    failed_attempts: int = 0
    retried: int = 0  # lines sent again after a failed attempt
    dead_lettered: int = 0
    backlog_written: int = 0  # lines written from the backlog of an outage
    last_error: str = ""
    last_write_s: float = 0.0


class BatchWriter:
    """Writes the buffer's contents to a sink from one asyncio task."""

    def __init__(
        self,
        sink: Sink,
        buffer: DurableBuffer,
        db: ThreadPoolExecutor,
        *,
        batch_size: int = 5000,
        flush_interval: float = 1.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.sink = sink
        self.buffer = buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.stats = WriterStats()
        self._db = db
        self._wake = asyncio.Event()
        self._backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self._failing = False
        self._disk_refused = False  # the buffer refused to drop written lines
        self._retry_delay = 0.0
        # Chunks up to this id are the backlog of an outage (or of the last run).
        self._backlog_end: int | None = buffer.last_id() or None
        self._backlog_turn = True
        # Batches grow while a backlog waits (BACKLOG_BATCHES), until the store refuses one as too large.
        self._grow = True

    @property
    def pending(self) -> int:
        """Lines in the buffer not yet confirmed by the store."""
        return self.buffer.stats.lines

    def notify(self) -> None:
        """New lines are in the buffer: write at once when a full batch is waiting."""
        if self.buffer.stats.lines >= self.batch_size:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Write until `stop` is set; what is left stays in the buffer (see `drain`)."""
        while not stop.is_set():
            await self._wait_wake_or_stop(stop)
            self._wake.clear()
            while not stop.is_set():
                done = await self.write_batch()
                if done is None:
                    break  # empty
                if not done:
                    await self._sleep_or_stop(self._retry_delay, stop)
                    break
                if self.buffer.stats.lines < self.batch_size:
                    break

    async def drain(self, deadline_s: float) -> bool:
        """Write everything pending, giving up after `deadline_s`; True when nothing is left."""
        end = time.monotonic() + deadline_s
        while self.buffer.stats.lines and time.monotonic() < end:
            if await self.write_batch() is False:
                await asyncio.sleep(min(self._retry_delay, max(0.0, end - time.monotonic())))
        if self.buffer.stats.lines:
            log.warning(
                "shutdown: %d lines stay in %s and are written at the next start",
                self.buffer.stats.lines,
                self.buffer.path,
            )
        return not self.buffer.stats.lines

    async def write_batch(self) -> bool | None:
        """Write one batch: True when it was confirmed or settled, False to retry later, None if empty."""
        chunks = await self._next_chunks()
        if not chunks:
            return None
        lines = sum(c.lines for c in chunks)
        if len(chunks) == 1 and lines > self.batch_size:
            return await self._write_part(chunks[0])
        body = b"\n".join(c.body for c in chunks)
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.sink.write, body)
        except WriteError as exc:
            return await self._failed(exc, chunks, lines)
        if not await self._settled(self.buffer.remove, [c.id for c in chunks]):
            return False
        self._succeeded(lines, chunks, time.monotonic() - started)
        return True

    async def _settled(self, change: Callable[..., object], *args: Any) -> bool:
        """Take written lines out of the buffer; False when the disk refuses (full, failing).

        The store has the lines by then. They stay in the buffer and are written again once the
        disk takes changes: a line protocol point written twice is the same point, so nothing is
        doubled, and nothing is lost. Without this the writer task died and wrote nothing more.
        """
        try:
            await self._in_db(change, *args)
        except sqlite3.Error as exc:
            self.stats.failed_attempts += 1
            self.stats.last_error = f"the buffer refused to drop written lines: {exc}"
            if not self._disk_refused:
                log.error(
                    "%s (%s); they are written again once the disk takes changes",
                    self.stats.last_error,
                    self.buffer.path,
                )
            self._disk_refused = True
            self._retry_delay = self._backoff.next_delay()  # not a busy loop of rewrites
            return False
        if self._disk_refused:
            log.info("the buffer takes changes again (%s)", self.buffer.path)
            self._disk_refused = False
        return True

    async def _next_chunks(self) -> list[Chunk]:
        end = self._backlog_end
        if end is not None:
            backlog = await self._in_db(self.buffer.oldest, self.batch_size, up_to=end)
            if not backlog:
                log.info("backlog written: %d lines", self.stats.backlog_written)
                self._backlog_end = None
            else:
                # Alternate: one batch of the past, one of the present, while both wait.
                self._backlog_turn = not self._backlog_turn
                if self._backlog_turn:
                    return backlog
                live = await self._in_db(self.buffer.oldest, self.batch_size, after=end)
                return live or backlog
        return await self._in_db(self.buffer.oldest, self._live_batch())

    def _live_batch(self) -> int:
        """Lines to take from the live end: a batch, or BACKLOG_BATCHES of them while as many wait."""
        grown = BACKLOG_BATCHES * self.batch_size
        return grown if self._grow and self.buffer.stats.lines >= grown else self.batch_size

    async def _write_part(self, chunk: Chunk) -> bool:
        # One chunk larger than a batch (after a 413 halved the batch size): write its head.
        parts = chunk.split()
        head, rest = parts[: self.batch_size], parts[self.batch_size :]
        try:
            await asyncio.to_thread(self.sink.write, b"\n".join(head))
        except WriteError as exc:
            return await self._failed(exc, [chunk], len(head), part=head)
        if not await self._settled(self.buffer.replace, chunk, rest):
            return False
        self._succeeded(len(head), [chunk], 0.0)
        return True

    def _succeeded(self, lines: int, chunks: list[Chunk], took_s: float) -> None:
        s = self.stats
        if self._failing:
            log.info("writes to %s succeed again; %d lines pending", self.sink.target, self.pending)
            self._failing = False
            # What queued during the outage is the backlog; what arrives from now on is live.
            self._backlog_end = max(self._backlog_end or 0, self.buffer.last_id(), chunks[-1].id)
        s.written += lines
        s.batches += 1
        s.last_write_s = took_s
        if self._backlog_end is not None and chunks[0].id <= self._backlog_end:
            s.backlog_written += lines
        self._backoff.reset()

    async def _failed(
        self, exc: WriteError, chunks: list[Chunk], lines: int, part: list[bytes] | None = None
    ) -> bool:
        s = self.stats
        s.failed_attempts += 1
        s.last_error = str(exc)
        if exc.status == 413 and lines > 1:
            # Halved, but never above the configured size: a grown batch refused stops the growing.
            self.batch_size = min(self.batch_size, max(1, lines // 2))
            self._grow = False
            log.warning("store refused %d lines as too large; batch size now %d", lines, self.batch_size)
            self._retry_delay = 0.0
            return False
        if not exc.retryable or exc.status == 413:  # a single line too large never fits
            await self._settle_refused(chunks, part, exc)
            return True
        if not self._failing:
            if exc.setup:
                log.error(
                    "write to %s refused: %s. The store is missing its database or bucket, or refuses "
                    "the credentials: create it or fix [writer] (check with `linli edge check --contact`). "
                    "Readings stay in the buffer and are written once it is fixed",
                    self.sink.target,
                    exc,
                )
            else:
                log.error("write to %s failed, retrying with backoff: %s", self.sink.target, exc)
            self._failing = True
        s.retried += lines
        self._retry_delay = max(self._backoff.next_delay(), exc.retry_after or 0.0)
        return False

    async def _settle_refused(self, chunks: list[Chunk], part: list[bytes] | None, exc: WriteError) -> None:
        """Find the lines the store refuses for good, dead-letter them, write the rest."""
        log.error("store refused a batch (%s); isolating the offending lines", exc)
        for chunk in chunks:
            lines = part if part is not None else chunk.split()
            refused: list[tuple[bytes, str]] = []
            if not await self._bisect(lines, refused):
                return  # the store went away meanwhile: everything stays queued
            for line, reason in refused:
                log.error("dead-lettered: %s: %.200s", reason, line.decode("utf-8", "replace"))
            by_reason: dict[str, list[bytes]] = {}
            for line, reason in refused:
                by_reason.setdefault(reason, []).append(line)
            for reason, bad in by_reason.items():
                await self._in_db(self.buffer.dead_letter, chunk, bad, reason)
            self.stats.dead_lettered += len(refused)
            self.stats.written += len(lines) - len(refused)
            if part is not None:
                rest = chunk.split()[len(part) :]
                await self._in_db(self.buffer.replace, chunk, rest)
            else:
                await self._in_db(self.buffer.remove, [chunk.id])

    async def _bisect(self, lines: list[bytes], refused: list[tuple[bytes, str]]) -> bool:
        """Write `lines`, splitting around refused ones; False if the store became unreachable."""
        try:
            await asyncio.to_thread(self.sink.write, b"\n".join(lines))
        except WriteError as exc:
            if exc.retryable and exc.status != 413:
                return False
            if len(lines) == 1:
                refused.append((lines[0], str(exc)))
                return True
            half = len(lines) // 2
            return await self._bisect(lines[:half], refused) and await self._bisect(lines[half:], refused)
        return True

    async def _in_db(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        call = partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._db, call)

    async def _wait_wake_or_stop(self, stop: asyncio.Event) -> None:
        """Until a full batch is pending, the flush interval passes, or `stop` is set."""
        waiters = {asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())}
        _, pending = await asyncio.wait(
            waiters, timeout=self.flush_interval, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()

    async def _sleep_or_stop(self, delay: float, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
