"""The waste service's outbox: lines wait in the state until the store has them, through a
store that is down and through a PostgreSQL that stops under it (real servers both)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from linli.cloud.db import unreachable
from linli.cloud.waste.outbox import BATCH, Outbox, VisitStore
from linli.cloud.waste.state import WasteState
from linli.demo.servers import LocalServer, free_port, postgresql_url, start_postgresql
from support import create_database, influx1_create_db, influx1_query, unique

T0_MS = 1_790_000_000_000


def lines(first: int, n: int) -> list[str]:
    return [f"outbox_test,k=v x={i}i {T0_MS + i}" for i in range(first, first + n)]


@pytest.fixture
def store(influx1: LocalServer) -> VisitStore:
    """A database of its own on the test InfluxDB."""
    db = unique("outbox")
    influx1_create_db(influx1.url, db)
    return VisitStore(url=influx1.url, database=db)


def outage(exc: DBAPIError, what: str) -> bool:
    """The service's judgement of a refused step, without its counters: an outage or a bug."""
    return unreachable(exc)


def stored(influx: LocalServer, db: str) -> list[int]:
    return [row["x"] for row in influx1_query(influx.url, db, "SELECT x FROM outbox_test")]


def test_lines_wait_for_a_store_that_is_down_and_go_in_batches_once_it_is_back(
    influx1: LocalServer, store: VisitStore, tmp_path: Path
) -> None:
    down = VisitStore(url=f"http://127.0.0.1:{free_port()}", database=store.database)
    outbox = Outbox(WasteState(str(tmp_path / "waste.sqlite")), outage)
    assert (outbox.pending(), outbox.written, outbox.failures) == (0, 0, 0)
    assert outbox.flush(store, None) == 0  # nothing waits: nothing written, nothing failed
    outbox.put(lines(0, BATCH))
    outbox.put(lines(BATCH, 2))
    assert outbox.pending() == BATCH + 2
    assert outbox.flush(down, None) == 0
    assert outbox.flush(down, None) == 0
    assert (outbox.pending(), outbox.written, outbox.failures) == (BATCH + 2, 0, 2)
    assert outbox.flush(store, None) == BATCH + 2  # a full batch, then the rest
    assert (outbox.pending(), outbox.written, outbox.failures) == (0, BATCH + 2, 2)
    outbox.put(lines(BATCH + 2, 1))
    assert outbox.flush(store, None) == 1
    assert (outbox.pending(), outbox.written, outbox.failures) == (0, BATCH + 3, 2)
    assert stored(influx1, store.database) == list(range(BATCH + 3))


def test_lines_put_while_the_state_is_down_are_held_and_none_is_lost(
    influx1: LocalServer, store: VisitStore, pg_folder: Path
) -> None:
    server = start_postgresql(pg_folder / "pg")
    try:
        name = unique("outbox").replace("-", "_")
        create_database(postgresql_url(server), name)
        outbox = Outbox(WasteState(postgresql_url(server, name).replace("+psycopg", "")), outage)
        outbox.put(lines(0, 2))
        server.stop()
        # The state cannot be reached: the lines wait in memory, in order, and count as pending.
        outbox.put(lines(2, 1))
        outbox.put(lines(3, 2))
        assert outbox.pending() == 3
        assert outbox.flush(store, None) == 0
        assert outbox.failures == 0  # the store did not refuse anything: it was not asked
        server = start_postgresql(server.datadir, server.port, init=False)
        # Back: what was held goes to the state first, then everything to the store.
        assert outbox.pending() == 2 + 3
        assert outbox.flush(store, None) == 5
        assert (outbox.pending(), outbox.written) == (0, 5)
        outbox.put(lines(5, 1))  # and the next line goes straight to the state
        assert outbox.state.pending() == 1
    finally:
        server.stop()
    assert stored(influx1, store.database) == list(range(5))
