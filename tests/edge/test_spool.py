"""The spool's group commit on a real disk, and on a real full one (a tmpfs of its own).

What the MQTT connector's acknowledgements rest on: a callback runs only once its lines and
their deliveries are committed, a refused commit keeps everything in order for the next try
and runs nothing, and the tries back off from 0.1 s to at most 10 s.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from linli.edge.buffer import DurableBuffer
from linli.edge.spool import Spool
from support import wait_until
from test_full_disk import (
    SmallDisk,
    small_disk,  # noqa: F401 (a fixture: a 1 MB tmpfs)
)

DB_THREAD = "linli-test-db"


class Recorded(DurableBuffer):
    """A buffer that remembers which threads appended to it."""

    threads: set[str]

    def append(self, lines: Sequence[str], now_ms: int | None = None, delivered: bytes = b"") -> None:
        self.threads.add(threading.current_thread().name)
        super().append(lines, now_ms, delivered)


def buffer_in(folder: Path) -> Recorded:
    buffer = Recorded(folder / "buffer.sqlite", max_bytes=100_000)
    buffer.threads = set()
    return buffer


@pytest.fixture
def db() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=DB_THREAD)
    yield pool
    pool.shutdown()


@pytest.fixture
def on_full_disk(
    small_disk: SmallDisk,  # noqa: F811 (the fixture imported above)
) -> tuple[Recorded, SmallDisk]:
    """A buffer on a 1 MB tmpfs, and the tmpfs to fill."""
    return buffer_in(small_disk.folder), small_disk


def bodies(buffer: DurableBuffer) -> list[bytes]:
    return [chunk.body for chunk in buffer.oldest(1000)]


def test_a_commit_puts_lines_and_deliveries_on_disk_before_anyone_is_acknowledged(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    buffer = buffer_in(tmp_path)
    told: list[str] = []
    seen: dict[str, object] = {}

    def acknowledge(what: str) -> None:
        # What the MQTT connector acknowledges must be on disk when it does.
        told.append(what)
        seen[what] = (bodies(buffer), buffer.delivered())

    async def scenario() -> None:
        spool = Spool(buffer, db, lambda: told.append("committed"))
        # A fresh spool owes no retry: the first commit somebody waits for goes within COMMIT_S.
        assert (spool.commits, spool.failures, spool.staged, spool._retry_delay) == (0, 0, 0, 0.0)
        assert await spool.commit() is True  # nothing staged: no transaction
        assert spool.commits == 0
        assert told == []
        spool.submit(["m a=1i 1"], lambda: acknowledge("first"), b"\x01\x02")
        spool.submit(["m a=2i 2", "m a=3i 3"], delivered=b"\x03")
        spool.submit([], lambda: acknowledge("second"))
        assert spool.staged == 3
        assert await spool.commit() is True
        assert (spool.commits, spool.failures, spool.staged) == (1, 0, 0)
        assert await spool.commit() is True
        assert spool.commits == 1  # nothing new: nothing committed, nobody told again
        # A callback with no lines of its own (its lines came in an earlier commit) still runs.
        spool.submit([], lambda: acknowledge("third"))
        assert await spool.commit() is True
        assert spool.commits == 2

    asyncio.run(scenario())
    committed = ([b"m a=1i 1\nm a=2i 2\nm a=3i 3"], [b"\x01\x02\x03"])
    assert told == ["first", "second", "committed", "third", "committed"]
    assert seen == {"first": committed, "second": committed, "third": committed}
    # The buffer is used from the agent's one database thread, never from another.
    assert {name.rsplit("_", 1)[0] for name in buffer.threads} == {DB_THREAD}
    buffer.close()


@pytest.mark.servers
def test_a_refused_commit_keeps_everything_in_order_and_acknowledges_nothing(
    on_full_disk: tuple[Recorded, SmallDisk], db: ThreadPoolExecutor
) -> None:
    buffer, disk = on_full_disk
    told: list[str] = []
    out: dict[str, tuple[int, int, int, float]] = {}  # commits, failures, staged, retry delay
    full: dict[str, object] = {}

    def counts(spool: Spool) -> tuple[int, int, int, float]:
        return spool.commits, spool.failures, spool.staged, spool._retry_delay

    async def scenario() -> None:
        spool = Spool(buffer, db, lambda: told.append("committed"))
        disk.fill()
        spool.submit(["m a=1i 1"], lambda: told.append("first"), b"\x01")
        assert await spool.commit() is False
        out["after one"] = counts(spool)
        # Lines staged while the refused commit is on the disk's thread come after its own.
        refused = asyncio.create_task(spool.commit())
        await asyncio.sleep(0)  # one turn of the loop: the task is now waiting on the disk
        spool.submit(["m a=2i 2"], lambda: told.append("second"), b"\x02")
        assert await refused is False
        out["after two"] = counts(spool)
        full["told"] = list(told)
        full["on disk"] = buffer.stats.lines
        disk.free()
        assert await spool.commit() is True
        out["after the disk came back"] = counts(spool)
        # The backoff starts again from 0.1 s after a commit went through.
        disk.fill()
        spool.submit(["m a=3i 3"])
        assert await spool.commit() is False
        out["refused again"] = counts(spool)
        disk.free()

    asyncio.run(scenario())
    commits, failures, staged, delay = out["after one"]
    assert (commits, failures, staged) == (0, 1, 1)
    assert 0.05 <= delay <= 0.1
    commits, failures, staged, delay = out["after two"]
    assert (commits, failures, staged) == (0, 2, 2)
    assert 0.1 <= delay <= 0.2
    assert full == {"told": [], "on disk": 0}
    assert out["after the disk came back"] == (1, 2, 0, 0.0)
    assert 0.05 <= out["refused again"][3] <= 0.1
    # Kept in order, the earlier lines and deliveries first, and each told once.
    assert bodies(buffer) == [b"m a=1i 1\nm a=2i 2"]
    assert buffer.delivered() == [b"\x01\x02"]
    assert told == ["first", "second", "committed"]
    buffer.close()


@pytest.mark.servers
def test_a_disk_that_stays_full_is_tried_again_at_most_every_10_s(
    on_full_disk: tuple[Recorded, SmallDisk], db: ThreadPoolExecutor
) -> None:
    buffer, disk = on_full_disk
    delays: list[float] = []

    async def scenario() -> None:
        spool = Spool(buffer, db, lambda: None)
        disk.fill()
        spool.submit(["m a=1i 1"])
        for _ in range(40):
            assert await spool.commit() is False
            delays.append(spool._retry_delay)
        disk.free()

    asyncio.run(scenario())
    # 0.1 s doubling: from the 8th refusal on the delay is capped, drawn in [5, 10] s.
    assert all(0.05 * 2**i <= d <= 0.1 * 2**i for i, d in enumerate(delays[:7]))
    assert all(5.0 <= d <= 10.0 for d in delays[7:])
    buffer.close()


def test_running_commits_what_nobody_waits_for_and_what_is_left_at_stop(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    buffer = buffer_in(tmp_path)
    told: list[str] = []

    async def scenario() -> None:
        spool = Spool(buffer, db, lambda: told.append("committed"))
        stop = asyncio.Event()
        task = asyncio.create_task(spool.run(stop))
        spool.submit(["m a=1i 1"])  # a polled reading: nobody waits for it, it goes lazily
        await wait_until(lambda: buffer.stats.lines == 1, 10, "the lazy commit")
        spool.submit(["m a=2i 2"], lambda: told.append("acknowledged"))
        await wait_until(lambda: "acknowledged" in told, 10, "the commit somebody waits for")
        # Staged and stopped at once: the last commit on the way out takes it.
        spool.submit(["m a=3i 3"])
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert bodies(buffer) == [b"m a=1i 1", b"m a=2i 2", b"m a=3i 3"]
    assert told == ["committed", "acknowledged", "committed", "committed"]
    buffer.close()
