"""The writer's batches against real InfluxDB 1.x: several chunks go as one body, a chunk of
exactly a batch goes whole, and each write's time is what it took."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from linli.demo.servers import LocalServer, start_influxdb1
from linli.edge.buffer import DurableBuffer
from linli.edge.writer import BatchWriter
from support import influx1_create_db, unique
from test_writer import db, points, stored_x, write_all, writer_for  # noqa: F401 (db: a fixture)


def batches_of_ten(
    server: LocalServer, prefix: str, tmp_path: Path, pool: ThreadPoolExecutor
) -> tuple[str, DurableBuffer, BatchWriter]:
    """A new database on `server`, an empty buffer, and a writer of 10-line batches."""
    database = unique(prefix)
    influx1_create_db(server.url, database)
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    writer = writer_for(server, database, buffer, pool)
    writer.batch_size = 10
    return database, buffer, writer


def test_chunks_go_together_and_a_chunk_of_exactly_a_batch_goes_whole(
    influx1: LocalServer,
    tmp_path: Path,
    db: ThreadPoolExecutor,  # noqa: F811 (the fixture imported above)
) -> None:
    database, buffer, writer = batches_of_ten(influx1, "batches", tmp_path, db)
    buffer.append(points("s", 0, 10))  # exactly one batch
    buffer.append(points("s", 10, 3))
    buffer.append(points("s", 13, 3))
    took: list[tuple[float, float]] = []

    async def scenario() -> None:
        for _ in range(2):
            started = time.monotonic()
            assert await writer.write_batch() is True
            took.append((writer.stats.last_write_s, time.monotonic() - started))
        assert await writer.write_batch() is None

    asyncio.run(scenario())
    assert stored_x(influx1, database, "s") == list(range(16))
    assert (writer.stats.batches, writer.stats.written, buffer.stats.lines) == (2, 16, 0)
    # Each write's time is measured, and within the call that made it.
    assert all(0 < measured <= outside for measured, outside in took)
    buffer.close()


def test_a_backlog_goes_in_larger_batches(influx1: LocalServer, tmp_path: Path) -> None:
    sizes = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The writer made before the lines are appended: live ones, not an outage's backlog.
        database, buffer, writer = batches_of_ten(influx1, "backlog", tmp_path, pool)
        for k in range(9):
            buffer.append(points("s", 10 * k, 10))

        # 90 lines wait, BACKLOG_BATCHES (4) batches' worth and more: 40 go at once, twice; then 10.
        async def scenario() -> None:
            while (written := writer.stats.written) < 90:
                assert await writer.write_batch() is True
                sizes.append(writer.stats.written - written)

        asyncio.run(scenario())
    assert sizes == [40, 40, 10]
    assert stored_x(influx1, database, "s") == list(range(90))


@pytest.mark.servers
def test_a_grown_batch_refused_as_too_large_stops_the_growing(
    tmp_path: Path,
    db: ThreadPoolExecutor,  # noqa: F811 (the fixture imported above)
) -> None:
    # 10 lines (about 420 bytes) fit in a request, 40 do not.
    server = start_influxdb1(tmp_path / "influx", max_body_size=1000)
    try:
        database, buffer, writer = batches_of_ten(server, "refused", tmp_path, db)
        for k in range(8):
            buffer.append(points("s", 10 * k, 10))
        # The 40 lines of a grown batch are refused; the writer goes back to its own size (not
        # half the 40) and stays there.
        assert asyncio.run(write_all(writer)) == [False] + [True] * 8
        assert writer.batch_size == 10
        assert stored_x(server, database, "s") == list(range(80))
    finally:
        server.stop()
