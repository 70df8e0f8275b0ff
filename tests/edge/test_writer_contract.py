"""What the writer promises beyond one batch, against real InfluxDB 1.x: its task wakes for a full
batch and keeps writing while one waits, it outlives an outage, `drain` stops when all is written
or the deadline passes, the past and the present alternate after an outage and after a restart,
refused lines cost no good line, and the buffer is used only from the agent's database thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from linli.demo.servers import LocalServer, start_influxdb1
from linli.edge.backoff import Backoff
from linli.edge.buffer import Chunk, DurableBuffer
from linli.edge.sinks import Sink, WriteError
from linli.edge.writer import BatchWriter
from support import influx1_create_db, influx1_down, influx1_query, unique, wait_until
from test_writer import T0, points, stored_x, write_all, writer_for

DB_THREAD = "linli-test-db"
NEVER = 3600.0  # a flush interval or a backoff no test waits out: what happens comes sooner


class Recorded(DurableBuffer):
    """A buffer that remembers which threads read and changed it."""

    threads: set[str]

    def oldest(self, max_lines: int, *, after: int = 0, up_to: int | None = None) -> list[Chunk]:
        self.threads.add(threading.current_thread().name)
        return super().oldest(max_lines, up_to=up_to, after=after)

    def remove(self, chunk_ids: Sequence[int]) -> None:
        self.threads.add(threading.current_thread().name)
        super().remove(chunk_ids)


@pytest.fixture
def db() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=DB_THREAD)
    yield pool
    pool.shutdown()


def created(server: LocalServer, prefix: str) -> str:
    """A new database on `server`."""
    database = unique(prefix)
    influx1_create_db(server.url, database)
    return database


def queued(
    server: LocalServer, database: str, folder: Path, db: ThreadPoolExecutor, chunks: int = 0
) -> tuple[DurableBuffer, BatchWriter]:
    """A buffer holding `chunks` chunks of 10 lines (x from 0), and its writer to `database` in
    batches of 10."""
    buffer = DurableBuffer(folder / "b.sqlite", max_bytes=10**8)
    for k in range(chunks):
        buffer.append(points("s", 10 * k, 10))
    writer = writer_for(server, database, buffer, db)
    writer.batch_size = 10
    return buffer, writer


def fast_retries(writer: BatchWriter) -> BatchWriter:
    writer._backoff = Backoff(initial=0.05, maximum=0.1)
    return writer


async def written_in_turn(writer: BatchWriter, buffer: DurableBuffer) -> list[int]:
    """The chunk each `write_batch` wrote (one a call), until the buffer is empty."""
    order = []
    while buffer.stats.lines:
        before = {c.id for c in buffer.oldest(10**6)}
        assert await writer.write_batch() is True
        (written,) = before - {c.id for c in buffer.oldest(10**6)}
        order.append(written)
    return order


def test_the_task_writes_a_full_batch_at_once_and_keeps_on_while_one_waits(
    influx1: LocalServer, tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    database = created(influx1, "task")
    buffer = Recorded(tmp_path / "b.sqlite", max_bytes=10**8)
    buffer.threads = set()
    writer = writer_for(influx1, database, buffer, db)
    writer.batch_size, writer.flush_interval = 10, NEVER

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        try:
            buffer.append(points("s", 0, 10))  # exactly a batch: the task wakes
            writer.notify()
            await wait_until(lambda: writer.stats.written == 10, 60, "a full batch written")
            for k in range(1, 4):  # three batches on one wake: all written, not one a flush interval
                buffer.append(points("s", 10 * k, 10))
            writer.notify()
            await wait_until(lambda: writer.stats.written == 40, 60, "every full batch written")
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)  # ... and the task ends when told to

    asyncio.run(scenario())
    assert stored_x(influx1, database, "s") == list(range(40))
    assert (writer.stats.batches, buffer.stats.lines) == (4, 0)
    # The buffer is used from the agent's one database thread, never from another.
    assert {name.rsplit("_", 1)[0] for name in buffer.threads} == {DB_THREAD}
    buffer.close()


@pytest.mark.servers
def test_the_task_outlives_an_outage_and_writes_once_the_store_is_back(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    server, database = influx1_down(tmp_path / "influx", "task-outage")
    buffer, writer = queued(server, database, tmp_path, db)
    fast_retries(writer).flush_interval = NEVER

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        restarted = None
        try:
            buffer.append(points("s", 0, 10))
            writer.notify()
            await wait_until(lambda: writer.stats.failed_attempts == 1, 60, "the write refused")
            restarted = await asyncio.to_thread(start_influxdb1, server.datadir, server.port)
            writer.notify()  # the lines still make a full batch: the task, after its backoff, writes them
            await wait_until(lambda: writer.stats.written == 10, 60, "the lines written after the outage")
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
            if restarted is not None:
                await asyncio.to_thread(restarted.stop)

    asyncio.run(scenario())
    assert buffer.stats.lines == 0
    buffer.close()


def test_drain_ends_once_everything_is_written(
    influx1: LocalServer, tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    buffer, writer = queued(influx1, created(influx1, "drain"), tmp_path, db, chunks=3)
    # A deadline no test waits out: drain returns as soon as the buffer is empty.
    assert asyncio.run(asyncio.wait_for(writer.drain(NEVER), 60)) is True
    assert writer.stats.written == 30
    assert buffer.stats.lines == 0
    buffer.close()


@pytest.mark.servers
def test_drain_gives_up_at_its_deadline_and_backs_off_meanwhile(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    server, database = influx1_down(tmp_path / "influx", "drain-down")
    buffer, writer = queued(server, database, tmp_path, db, chunks=1)
    writer._backoff = Backoff(initial=NEVER, maximum=NEVER)
    # The next retry is due after the deadline: drain waits for the deadline, not for the retry.
    assert asyncio.run(asyncio.wait_for(writer.drain(2.0), 60)) is False
    assert buffer.stats.lines == 10  # kept for the next start
    # One attempt (a second only if the sleep to the deadline woke a hair early), not a busy loop.
    assert 1 <= writer.stats.failed_attempts <= 2
    buffer.close()


@pytest.mark.servers
def test_an_outage_while_running_makes_what_queued_the_backlog_and_counts_each_attempt(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    server, database = influx1_down(tmp_path / "influx", "backlog")
    buffer, writer = queued(server, database, tmp_path, db)  # an empty buffer: no backlog at start
    writer._backoff = Backoff(initial=0.2, maximum=0.2)
    for k in range(3):
        buffer.append(points("s", 10 * k, 10))

    async def scenario() -> list[int]:
        for _ in range(2):
            assert await writer.write_batch() is False
        # Each refused attempt counted, and its lines counted as retried, in /metrics' figures.
        assert (writer.stats.failed_attempts, writer.stats.retried) == (2, 20)
        assert "unreachable" in writer.stats.last_error
        assert writer._retry_delay <= 0.2  # the backoff decides: the store sent no Retry-After
        restarted = await asyncio.to_thread(start_influxdb1, server.datadir, server.port)
        try:
            assert await writer.write_batch() is True  # the oldest chunk
            for k in range(1, 4):  # live data arrives during the replay
                buffer.append(points("s", 1000 * k, 10))
            return await written_in_turn(writer, buffer)
        finally:
            await asyncio.to_thread(restarted.stop)

    order = asyncio.run(scenario())
    # Chunks 4 to 6 are live: each written right after one of the backlog, not after all of it;
    # the last once the backlog is written.
    assert order == [4, 2, 5, 3, 6]
    assert writer.stats.written == 60
    buffer.close()


def test_after_a_restart_the_present_comes_first_then_the_past_in_turn(
    influx1: LocalServer, tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    database = created(influx1, "restart")
    buffer, writer = queued(influx1, database, tmp_path, db, chunks=3)  # left by the last run
    buffer.append(points("s", 1000, 10))
    buffer.append(points("s", 2000, 10))
    order = asyncio.run(written_in_turn(writer, buffer))
    assert order == [4, 1, 5, 2, 3]
    assert len(stored_x(influx1, database, "s")) == 50
    buffer.close()


@pytest.mark.servers
def test_a_line_too_large_for_the_store_is_dead_lettered_and_the_rest_written(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    server = start_influxdb1(tmp_path / "influx", max_body_size=2000)
    try:
        database = created(server, "huge")
        buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
        huge = f'w,site=s,device=d x=99i,note="{"n" * 3000}" {T0 + 99}'
        buffer.append([huge])
        buffer.append(points("s", 0, 4))
        writer = writer_for(server, database, buffer, db)
        results = asyncio.run(write_all(writer))
        assert stored_x(server, database, "s") == list(range(4))
        [(reason, line)] = buffer.dead_letters()
        assert (line, "HTTP 413" in reason) == (huge, True)
        assert results == [
            False,
            True,
            True,
            True,
        ]  # the one 413 halved the batch; each write after says True
        assert writer._retry_delay == 0.0  # ... and that batch went again at once, smaller
        assert (writer.stats.written, writer.stats.dead_lettered, buffer.stats.lines) == (4, 1, 0)
        # Two lines that fit one by one but not together: the batch learns the store's limit.
        writer.batch_size = 5000
        big = [f'w,site=s,device=d x={i}i,note="{"n" * 1100}" {T0 + i}' for i in (4, 5)]
        buffer.append(big)
        assert asyncio.run(write_all(writer)) == [False, True, True]
        assert writer.batch_size == 1
        assert stored_x(server, database, "s") == list(range(6))
        assert (writer.stats.written, writer.stats.dead_lettered) == (6, 1)
    finally:
        server.stop()


def test_refused_lines_in_a_chunk_larger_than_a_batch_and_in_two_chunks_cost_no_good_line(
    influx1: LocalServer, tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    database = created(influx1, "parts")
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)

    def bad(i: int) -> str:
        return f'w,site=s,device=d x="text" {T0 + 100 + i}'  # x is an integer field: refused

    good = points("s", 0, 20)
    buffer.append([good[0], bad(0), *good[1:10]])  # 11 lines, in a batch of 4: written in parts
    writer = writer_for(influx1, database, buffer, db)
    writer.batch_size = 4
    results = asyncio.run(write_all(writer))
    assert stored_x(influx1, database, "s") == list(range(10))
    assert results == [True, True, True]  # the head with the bad line settled, then 4, then 2
    assert (writer.stats.written, writer.stats.dead_lettered, writer.stats.batches) == (10, 1, 2)
    # Two chunks in one batch, a refused line in each: both dead-lettered, every good line written.
    writer.batch_size = 100
    buffer.append([*good[10:13], bad(1), *good[13:15]])
    buffer.append([bad(2), *good[15:20]])
    assert asyncio.run(write_all(writer)) == [True]
    assert stored_x(influx1, database, "s") == list(range(20))
    assert (writer.stats.written, writer.stats.dead_lettered, buffer.stats.lines) == (20, 3, 0)
    assert len(buffer.dead_letters()) == 3
    # The bisection writes only whole lines: nothing the chunks did not hold reached the store.
    measurements = influx1_query(influx1.url, database, "SHOW MEASUREMENTS")
    assert [row["name"] for row in measurements] == ["w"]
    buffer.close()


class Passed:
    """A real store's sink, passed every call; a subclass does something on the way."""

    def __init__(self, sink: Sink) -> None:
        self.sink, self.target = sink, sink.target

    def write(self, body: bytes) -> None:
        self.sink.write(body)

    def check(self) -> None:
        self.sink.check()

    def close(self) -> None:
        self.sink.close()


class RefusesThenGoesAway(Passed):
    """A real store that is stopped right after it refuses a batch: the bisection finds it gone."""

    def __init__(self, server: LocalServer, sink: Sink) -> None:
        super().__init__(sink)
        self.server = server

    def write(self, body: bytes) -> None:
        try:
            self.sink.write(body)
        except WriteError as exc:
            if exc.status == 400 and self.server.proc.poll() is None:
                self.server.stop()
            raise


@pytest.mark.servers
def test_a_store_gone_while_refused_lines_are_isolated_costs_no_line(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    server = start_influxdb1(tmp_path / "influx")
    database = created(server, "gone")
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    good = points("s", 0, 6)
    bad = f'w,site=s,device=d x="text" {T0 + 100}'
    buffer.append([*good[:3], bad, *good[3:]])
    sink = writer_for(server, database, buffer, db).sink
    writer = BatchWriter(RefusesThenGoesAway(server, sink), buffer, db)
    asyncio.run(writer.write_batch())
    # Nothing dead-lettered for a store that only went away, nothing dropped from the buffer.
    assert (buffer.dead_letters(), buffer.stats.lines) == ([], 7)
    restarted = start_influxdb1(server.datadir, server.port)
    try:
        writer.sink = sink
        assert asyncio.run(write_all(writer)) == [True]
        assert sorted(stored_x(restarted, database, "s")) == list(range(6))
        assert [line for _, line in buffer.dead_letters()] == [bad]
    finally:
        restarted.stop()


class CommitWhileWriting(Passed):
    """A real store; the spool's next commit lands while the first batch is on its way to it."""

    def __init__(self, sink: Sink, commit: Callable[[], None]) -> None:
        super().__init__(sink)
        self._commit: Callable[[], None] | None = commit

    def write(self, body: bytes) -> None:
        commit, self._commit = self._commit, None
        if commit is not None:
            commit()
        self.sink.write(body)


@pytest.mark.servers
def test_lines_queued_while_a_full_buffer_drops_the_batch_being_written_are_written(
    influx1: LocalServer, tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    database = created(influx1, "dropped")
    site = unique("s")
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=1000)
    buffer.append(points(site, 0, 10))
    # 20 lines more than the bound leaves room for: every chunk before them is dropped.
    later = points(site, 100, 20)
    sink = writer_for(influx1, database, buffer, db).sink
    writer = BatchWriter(CommitWhileWriting(sink, lambda: buffer.append(later)), buffer, db)
    assert asyncio.run(write_all(writer)) == [True, True]
    # The dropped batch had reached the store; the lines queued during its write are not lost.
    assert sorted(stored_x(influx1, database, site)) == [*range(10), *range(100, 120)]
    assert (buffer.stats.dropped, buffer.stats.lines) == (10, 0)
    buffer.close()
