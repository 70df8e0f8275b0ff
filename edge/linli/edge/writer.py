"""The batched writer: lines in from connectors, batches out to a sink.

Batches leave when `batch_size` lines are pending or `flush_interval` has passed.
A batch the store did not confirm stays at the head of the queue and is retried with
backoff; a 413 splits it; a 400/422 is rejected with its reason (InfluxDB has already
stored the valid lines of a partial write). Pending lines are bounded: past
`max_pending` the oldest are dropped and counted, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from linli.edge.backoff import Backoff
from linli.edge.sinks import Sink, WriteError

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    """Counters since start."""

    written: int = 0
    batches: int = 0
    failed_attempts: int = 0
    rejected: int = 0
    dropped: int = 0
    last_error: str = ""
    last_write_s: float = 0.0


class BatchWriter:
    """Collects lines and writes them in batches from one asyncio task."""

    def __init__(
        self,
        sink: Sink,
        *,
        batch_size: int = 5000,
        flush_interval: float = 1.0,
        max_pending: int = 1_000_000,
        backoff: Backoff | None = None,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.stats = WriterStats()
        self._pending: deque[str] = deque()
        self._wake = asyncio.Event()
        self._backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self._failing = False
        self._retry_delay = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, lines: Iterable[str]) -> None:
        """Queue lines for writing; never blocks the caller."""
        self._pending.extend(lines)
        overflow = len(self._pending) - self.max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            if self.stats.dropped == 0:
                log.error(
                    "writer queue full (%d lines): dropping the oldest; store %s is not keeping up",
                    self.max_pending,
                    self.sink.target,
                )
            self.stats.dropped += overflow
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Write until `stop` is set, then flush what is pending (see `drain`)."""
        while not stop.is_set():
            await self._wait_wake_or_stop(stop)
            self._wake.clear()
            while self._pending and not stop.is_set():
                if not await self._write_one_batch():
                    await self._sleep_or_stop(self._retry_delay, stop)
                    break
                if len(self._pending) < self.batch_size:
                    break

    async def _wait_wake_or_stop(self, stop: asyncio.Event) -> None:
        """Until a full batch is pending, the flush interval passes, or `stop` is set."""
        waiters = {asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())}
        _, pending = await asyncio.wait(
            waiters, timeout=self.flush_interval, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()

    async def drain(self, deadline_s: float) -> bool:
        """Write everything pending, giving up after `deadline_s`; True when nothing is left."""
        end = time.monotonic() + deadline_s
        while self._pending and time.monotonic() < end:
            if not await self._write_one_batch():
                await asyncio.sleep(min(self._retry_delay, max(0.0, end - time.monotonic())))
        if self._pending:
            log.error(
                "shutdown: %d lines could not be written to %s",
                len(self._pending),
                self.sink.target,
            )
        return not self._pending

    async def _sleep_or_stop(self, delay: float, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _write_one_batch(self) -> bool:
        n = min(self.batch_size, len(self._pending))
        batch = [self._pending[i] for i in range(n)]
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.sink.write, batch)
        except WriteError as exc:
            return self._failed(exc, batch)
        for _ in range(n):
            self._pending.popleft()
        self.stats.written += n
        self.stats.batches += 1
        self.stats.last_write_s = time.monotonic() - started
        if self._failing:
            log.info("writes to %s succeed again", self.sink.target)
            self._failing = False
        self._backoff.reset()
        return True

    def _failed(self, exc: WriteError, batch: list[str]) -> bool:
        self.stats.failed_attempts += 1
        self.stats.last_error = str(exc)
        if exc.status == 413 and len(batch) > 1:
            # Too large for the store: halve the batch size and go again at once.
            self.batch_size = max(1, len(batch) // 2)
            log.warning(
                "store rejected %d lines as too large; batch size now %d",
                len(batch),
                self.batch_size,
            )
            self._retry_delay = 0.0
            return False
        if not exc.retryable:
            for _ in range(len(batch)):
                self._pending.popleft()
            self.stats.rejected += len(batch)
            log.error("store rejected a batch of %d lines: %s", len(batch), exc)
            return True
        if not self._failing:
            log.error("write to %s failed, will retry with backoff: %s", self.sink.target, exc)
            self._failing = True
        delay = self._backoff.next_delay()
        self._retry_delay = max(delay, exc.retry_after or 0.0)
        return False
