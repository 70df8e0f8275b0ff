"""The writer against real InfluxDB 1.x: refused lines isolated, 413 split, outages replayed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from linli.demo.servers import LocalServer, start_influxdb1
from linli.edge.buffer import DurableBuffer
from linli.edge.config import WriterConfig, WriterKind
from linli.edge.sinks import WriteError, make_sink, parse_retry_after
from linli.edge.writer import BatchWriter
from support import influx1_create_db, influx1_down, influx1_query, unique

T0 = 1_790_000_000_000


def points(site: str, first: int, n: int) -> list[str]:
    return [f"w,site={site},device=d x={i}i {T0 + i}" for i in range(first, first + n)]


@pytest.fixture
def db() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown()


def writer_for(
    server: LocalServer, database: str, buffer: DurableBuffer, db: ThreadPoolExecutor
) -> BatchWriter:
    config = WriterConfig(kind=WriterKind.INFLUXDB1, url=server.url, database=database, timeout=2.0)
    return BatchWriter(make_sink(config), buffer, db, batch_size=5000)


async def write_all(writer: BatchWriter) -> list[bool | None]:
    results: list[bool | None] = []
    while (done := await writer.write_batch()) is not None:
        results.append(done)
        assert len(results) < 1000, "the writer does not converge"
    return results


def stored_x(server: LocalServer, database: str, site: str) -> list[int]:
    rows = influx1_query(server.url, database, f"SELECT x FROM w WHERE site = '{site}'")
    return [row["x"] for row in rows]


def test_refused_lines_are_dead_lettered_and_the_rest_written(
    influx1: LocalServer, tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    database = unique("refused")
    influx1_create_db(influx1.url, database)
    site = unique("s")
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    good = points(site, 0, 9)
    bad = f'w,site={site},device=d x="text" {T0 + 100}'  # x is an integer field: a type conflict
    buffer.append([*good[:4], bad, *good[4:]])
    writer = writer_for(influx1, database, buffer, db)
    assert asyncio.run(write_all(writer)) == [True]
    assert stored_x(influx1, database, site) == list(range(9))
    [(reason, line)] = buffer.dead_letters()
    assert line == bad
    assert "HTTP 400" in reason
    assert "conflict" in reason
    assert (buffer.stats.lines, writer.stats.dead_lettered, writer.stats.written) == (0, 1, 9)


@pytest.mark.servers
def test_a_413_halves_the_batch_until_it_fits(tmp_path: Path, db: ThreadPoolExecutor) -> None:
    server = start_influxdb1(tmp_path / "influx", max_body_size=2000)
    try:
        database = unique("small")
        influx1_create_db(server.url, database)
        buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
        lines = points("s", 0, 200)
        buffer.append(lines)  # about 8 KB in one chunk
        writer = writer_for(server, database, buffer, db)
        results = asyncio.run(write_all(writer))
        assert stored_x(server, database, "s") == list(range(200))
        assert False in results  # refused as too large at least once
        # ... and halved until a batch fits the limit, not further.
        longest = max(len(x) + 1 for x in lines)
        assert writer.batch_size * longest <= 2000 < 2 * writer.batch_size * longest
        assert buffer.stats.lines == 0
    finally:
        server.stop()


@pytest.mark.servers
def test_an_outage_keeps_everything_queued_then_replays_past_and_present_in_turn(
    tmp_path: Path, db: ThreadPoolExecutor
) -> None:
    server, database = influx1_down(tmp_path / "influx", "outage")
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    for k in range(5):
        buffer.append(points("s", 10 * k, 10))
    writer = writer_for(server, database, buffer, db)
    writer.batch_size = 10  # one chunk a batch, to see the order

    async def scenario() -> list[int]:
        assert await writer.write_batch() is False  # unreachable: kept, retried later
        assert buffer.stats.lines == 50
        restarted = await asyncio.to_thread(start_influxdb1, server.datadir, server.port)
        try:
            assert await writer.write_batch() is True  # the oldest chunk
            buffer.append(points("s", 1000, 10))  # live data arrives during the replay
            order = []
            while buffer.stats.lines:
                before = {c.id for c in buffer.oldest(1000)}
                assert await writer.write_batch() is True
                (written,) = before - {c.id for c in buffer.oldest(1000)}
                order.append(written)
            return order
        finally:
            await asyncio.to_thread(restarted.stop)

    order = asyncio.run(scenario())
    # Chunk 6 is the live one: written right after the first of the backlog, not after all of it.
    assert order == [6, 2, 3, 4, 5]
    assert writer.stats.failed_attempts == 1
    assert writer.stats.retried == 10
    assert writer.stats.backlog_written == 50
    again = start_influxdb1(server.datadir, server.port)
    try:
        assert sorted(stored_x(again, database, "s")) == [*range(50), *range(1000, 1010)]
    finally:
        again.stop()


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:10 GMT", now=1_792_567_680.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (None, True),
        (429, True),
        (500, True),
        (503, True),
        (413, True),
        (400, False),
        (401, True),  # not set up for us yet: an outage, not bad data
        (403, True),
        (404, True),
        (422, False),
    ],
)
def test_store_answers_are_classified(status: int | None, retryable: bool) -> None:
    assert WriteError("x", status=status).retryable is retryable


class Throttling:
    """A store that answers 429 with Retry-After (no server here answers 429 on demand)."""

    target = "throttling store"

    def write(self, body: bytes) -> None:
        raise WriteError("HTTP 429 slow down", status=429, retry_after=7.0)

    def check(self) -> None:
        self.write(b"")

    def close(self) -> None:
        pass


def test_a_429_keeps_the_batch_and_waits_at_least_retry_after(tmp_path: Path, db: ThreadPoolExecutor) -> None:
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    buffer.append(points("s", 0, 10))
    writer = BatchWriter(Throttling(), buffer, db)
    assert asyncio.run(writer.write_batch()) is False
    assert writer._retry_delay >= 7.0
    assert (buffer.stats.lines, writer.stats.retried, writer.stats.failed_attempts) == (10, 10, 1)
