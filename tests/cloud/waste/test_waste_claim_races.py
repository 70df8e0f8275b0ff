"""Two waste services on one PostgreSQL writing the same rows, each race driven step by step.

Both services follow the same truck and decide the same notices; whichever claims a notice
first in the state sends it. A trigger on a table makes every insert into it wait for an
advisory lock the test holds, so both services are inside the same write at once
(`pg_stat_activity` says so, no sleep); then the lock goes and they race. Each notice reaches
its keeper once, and the trip both write is written by one, then the other.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from alertflow import Hook
from linli.cloud.waste.service import WasteService
from linli.cloud.waste.state import WasteState
from races import Call, waiting
from support import wait_for
from test_waste_db_faults import one_trip, told
from test_waste_service import MONDAY, TOKEN, TRIP, hand_over

GATE = 0x6761746500  # the advisory lock every claim waits for while the test holds it


def gate(engine: Engine, table: str) -> None:
    """Every insert into `table` waits, inside its transaction, for the test's lock `GATE`."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_advisory_xact_lock_shared({GATE}); RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(f"CREATE TRIGGER gate BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION gate()")
        )


class OnItsLoop:
    """A service taking messages on an event loop of its own, in a thread: a host of its own."""

    def __init__(self, service: WasteService) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def take(self, messages: list[tuple[str, dict[str, Any]]]) -> Future[None]:
        async def take() -> None:
            hand_over(self.service, messages)

        return asyncio.run_coroutine_threadsafe(take(), self.loop)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.engine.deliveries.drain(10), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)
        self.service.state.close()


def test_two_waste_services_claiming_one_notice_at_once_send_it_once(
    tmp_path: Path, pg_database: tuple[str, Engine]
) -> None:
    url, engine = pg_database
    hook = Hook("127.0.0.1")
    config, feed, messages = one_trip(tmp_path, url, hook.base)
    services = [OnItsLoop(WasteService(config, TOKEN, feed)) for _ in range(2)]
    try:
        gate(engine, "waste_notice")
        with engine.connect() as held:
            held.execute(text("SELECT pg_advisory_lock(:k)"), {"k": GATE})
            taking = [s.take(messages) for s in services]
            # Both services have decided the trip's first notice and are inside its claim.
            wait_for(lambda: waiting(engine) == 2, "both services to claim the first notice")
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM waste_notice")).scalar_one() == 0
            held.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": GATE})
            held.commit()
        for took in taking:
            took.result(60)
        with engine.connect() as conn:
            notices = conn.execute(
                text("SELECT count(DISTINCT (trip_id, day, idx, kind, seq)) FROM waste_notice")
            ).scalar_one()
    finally:
        for s in services:
            s.close()
        hook.close()
    heard = told(hook)
    claimed = [s.service.engine.claimed for s in services]
    print(f"keeper messages: {sum(heard.values())}; claimed by each service: {claimed}")
    assert heard, "the trip told its keepers nothing"
    assert {"notice", "arrived", "collected"} <= {k[3] for k in heard}, heard
    assert set(heard.values()) == {1}, f"told more than once: {[k for k, n in heard.items() if n > 1]}"
    # Each notice in the state was claimed by one service alone: the claims add up to the notices.
    assert sum(sum(c.values()) for c in claimed) == notices, (claimed, notices)


def test_two_services_writing_one_trip_at_once_take_turns_without_violating_its_key(
    pg_database: tuple[str, Engine],
) -> None:
    """Both services following a trip write where it stands (`trip_seen`). Both inside the write
    at once, before either has inserted the trip's row: the second waits for the first and
    replaces its row. (A delete then an insert let both find no row and the second violate
    `waste_trip_pkey`, which the services took for the state being down, 100 times a minute.)"""
    url, engine = pg_database
    states = [WasteState(url) for _ in range(2)]
    trip = {
        **{"trip_id": TRIP, "day": MONDAY.isoformat(), "route": "dry-south", "truck": "truck-dry-south"},
        **{"waste_type": "dry", "next_idx": 1, "progress_m": 10.0, "finished": False},
    }
    stops = [
        {"idx": i, "stop_id": f"s{i}", "state": "ahead", "scheduled_ms": i, "predicted_ms": None}
        for i in range(3)
    ]
    try:
        gate(engine, "waste_trip")
        with engine.connect() as held:
            held.execute(text("SELECT pg_advisory_lock(:k)"), {"k": GATE})
            writes = [
                Call(functools.partial(s.trip_seen, {**trip, "updated_ms": n}, stops))
                for n, s in enumerate(states)
            ]
            wait_for(lambda: waiting(engine) == 2, "both services inside the trip's write")
            held.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": GATE})
            held.commit()
        for write in writes:
            write.outcome()  # neither violated the trip's key
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT updated_ms FROM waste_trip")).scalars().all()
            kept = conn.execute(text("SELECT count(*) FROM waste_trip_stop")).scalar_one()
        assert len(rows) == 1, rows
        assert rows[0] in (0, 1), rows
        assert kept == len(stops)
    finally:
        for s in states:
            s.close()
