"""The writer's batches against real InfluxDB 1.x: several chunks go as one body, a chunk of
exactly a batch goes whole, and each write's time is what it took."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from linli.demo.servers import LocalServer
from linli.edge.buffer import DurableBuffer
from support import influx1_create_db, unique
from test_writer import db, points, stored_x, writer_for  # noqa: F401 (db: a fixture)


def test_chunks_go_together_and_a_chunk_of_exactly_a_batch_goes_whole(
    influx1: LocalServer,
    tmp_path: Path,
    db: ThreadPoolExecutor,  # noqa: F811 (the fixture imported above)
) -> None:
    database = unique("batches")
    influx1_create_db(influx1.url, database)
    buffer = DurableBuffer(tmp_path / "b.sqlite", max_bytes=10**8)
    writer = writer_for(influx1, database, buffer, db)
    writer.batch_size = 10
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
