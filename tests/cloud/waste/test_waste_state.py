"""The waste service's state: claims, and a file an earlier release made taken over with its data."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from linli.cloud.waste.bookings import Bookings, State
from linli.cloud.waste.state import DISPATCH_LOCK, Leadership, WasteState
from linli.cloud.waste.tracking import Incident, IncidentKind, KeeperNotice, NoticeKind
from linli.demo.servers import LocalServer, free_port, postgresql_url
from linli.transit.gtfs import load_feed
from support import create_database, unique, wait_for

FEED = Path(__file__).resolve().parents[3] / "deploy" / "gtfs" / "hongqiao"

# The tables as a waste service of the earlier release made them, without migrations.
EARLIER = """
CREATE TABLE notice (
    trip_id TEXT NOT NULL, day TEXT NOT NULL, stop_id TEXT NOT NULL, idx INTEGER NOT NULL,
    kind TEXT NOT NULL, time_ms INTEGER NOT NULL, predicted_ms INTEGER, bins INTEGER NOT NULL,
    kg REAL NOT NULL
);
CREATE INDEX notice_trip ON notice (trip_id, day);
CREATE TABLE failed_delivery (
    at_ms INTEGER NOT NULL, contact TEXT NOT NULL, channel TEXT NOT NULL,
    message TEXT NOT NULL, error TEXT NOT NULL
);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, line TEXT NOT NULL);
CREATE TABLE booking (
    id TEXT PRIMARY KEY, key TEXT UNIQUE, compound TEXT NOT NULL, lat REAL NOT NULL, lon REAL NOT NULL,
    m3 REAL NOT NULL, earliest_s REAL NOT NULL, latest_s REAL NOT NULL, contact TEXT NOT NULL,
    note TEXT NOT NULL, state TEXT NOT NULL, truck TEXT, created_s REAL NOT NULL, collected_kg REAL
);
CREATE TABLE booking_event (
    booking TEXT NOT NULL, state TEXT NOT NULL, at_s REAL NOT NULL, by TEXT NOT NULL,
    truck TEXT, detail TEXT NOT NULL
);
CREATE INDEX booking_event_of ON booking_event (booking);
CREATE INDEX booking_state ON booking (state);
"""
CONTACT = '{"name": "Office", "channels": [{"kind": "email", "to": ["o@x.example"]}]}'


def notice(kind: NoticeKind, index: int, t: float) -> KeeperNotice:
    return KeeperNotice(kind, "dry-south-0810", "gubei-1", index, t, predicted_s=t + 900)


def test_a_file_of_the_earlier_release_is_taken_over_with_its_rows_in_order(tmp_path: Path) -> None:
    path = tmp_path / "waste.sqlite"
    db = sqlite3.connect(path)
    db.executescript(EARLIER)
    day = "2026-11-23"
    rows = [("notice", 1000), ("correction", 2000), ("correction", 3000), ("arrived", 4000)]
    db.executemany(
        "INSERT INTO notice VALUES ('dry-south-0810', ?, 'gubei-1', 2, ?, ?, ?, 0, 0)",
        [(day, kind, t, t + 900_000) for kind, t in rows],
    )
    db.execute("INSERT INTO failed_delivery VALUES (5, 'keeper', 'webhook', '{}', 'HTTP 500')")
    db.executemany("INSERT INTO outbox (line) VALUES (?)", [("waste_trip a=1 1",), ("waste_trip a=2 2",)])
    db.execute(
        "INSERT INTO booking VALUES ('b1', 'k1', 'gubei-1', 31.2, 121.4, 2.5, 0, 10, ?, '', 'offered', "
        "'truck-a', 0, NULL)",
        (CONTACT,),
    )
    db.executemany(
        "INSERT INTO booking_event VALUES ('b1', ?, ?, 'office', ?, '')",
        [("requested", 0.0, None), ("offered", 1.0, "truck-a")],
    )
    db.commit()
    db.close()

    state = WasteState(str(path))
    try:
        assert state.told("dry-south-0810", day) == [(2, kind, t, t + 900_000) for kind, t in rows]
        # The next correction claims the third of its kind; a notice of the same stop is told already.
        assert state.claim_notice(notice(NoticeKind.CORRECTION, 2, 5.0), day, seq=2)
        assert not state.claim_notice(notice(NoticeKind.CORRECTION, 2, 5.0), day, seq=1)
        assert not state.claim_notice(notice(NoticeKind.NOTICE, 2, 6.0), day, seq=0)
        assert [f["error"] for f in state.failures()] == ["HTTP 500"]
        assert [line for _, line in state.waiting(10)] == ["waste_trip a=1 1", "waste_trip a=2 2"]
        bookings = Bookings(state, load_feed(FEED), max_m3=12.0)
        assert [(t["state"], t["truck"]) for t in bookings.trail("b1")] == [
            ("requested", None),
            ("offered", "truck-a"),
        ]
        moved = bookings.move("b1", State.ACCEPTED, 2.0, "truck-a")
        assert (moved.state, moved.truck) == (State.ACCEPTED, "truck-a")
        assert [t["state"] for t in bookings.trail("b1")][-1] == "accepted"
    finally:
        state.close()
    tables = {
        n for (n,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert "alembic_version" in tables
    assert not {t for t in tables if t.startswith("legacy_")}
    # Opened again: nothing is moved twice.
    again = WasteState(str(path))
    try:
        assert len(again.told("dry-south-0810", day)) == 5
    finally:
        again.close()


def test_a_notice_or_incident_is_claimed_once_whoever_asks(state: str) -> None:
    first, second = WasteState(state), WasteState(state)
    try:
        day = "2026-11-23"
        n = notice(NoticeKind.NOTICE, 1, 10.0)
        assert [first.claim_notice(n, day, 0), second.claim_notice(n, day, 0)] == [True, False]
        c = notice(NoticeKind.CORRECTION, 1, 20.0)
        assert [second.claim_notice(c, day, 0), first.claim_notice(c, day, 0)] == [True, False]
        assert first.claim_notice(c, day, 1)  # the second correction of that stop
        done = KeeperNotice(NoticeKind.COLLECTED, "dry-south-0810", "gubei-1", 1, 30.5, bins=3, kg=41.0)
        assert second.claim_notice(done, day, 0)
        assert second.told("dry-south-0810", day) == [
            (1, "notice", 10_000, 910_000),
            (1, "correction", 20_000, 920_000),
            (1, "correction", 20_000, 920_000),
            (1, "collected", 30_500, None),  # no prediction once it is done
        ]
        assert second.told("dry-south-0810", "2026-11-24") == []
    finally:
        first.close()
        second.close()


def test_an_incident_is_claimed_once_and_kept_as_it_was_told(state: str) -> None:
    """Its number for the first claim, None for the same incident claimed again by another
    service; a blocked gate keeps its stop, a breakdown has none; each field as recorded."""
    first, second = WasteState(state), WasteState(state)
    try:
        day = "2026-11-23"
        gate = Incident(IncidentKind.BLOCKED, "dry-south-0810", "gubei-1", 1000.25, "gate locked")
        number = first.claim_incident(gate, day, 0, "dry-south", "truck-3")
        assert isinstance(number, int)
        assert second.claim_incident(gate, day, 0, "dry-south", "truck-3") is None
        again = second.claim_incident(gate, day, 1, "dry-south", "truck-3")  # blocked a second time
        assert again is not None
        assert again != number
        broke = Incident(IncidentKind.BREAKDOWN, "dry-south-0810", None, 1200.0, "ignition off")
        down = second.claim_incident(broke, day, 0, "dry-south", "truck-3")
        assert first.claim_incident(broke, day, 0, "dry-south", "truck-3") is None
        common = {"trip": "dry-south-0810", "route": "dry-south", "truck": "truck-3", "acked_ms": None}
        assert first.incidents() == [
            {"number": number, "kind": "blocked", "stop": "gubei-1", "time_ms": 1_000_250,
             "detail": "gate locked", **common},
            {"number": again, "kind": "blocked", "stop": "gubei-1", "time_ms": 1_000_250,
             "detail": "gate locked", **common},
            {"number": down, "kind": "breakdown", "stop": None, "time_ms": 1_200_000,
             "detail": "ignition off", **common},
        ]  # fmt: skip
        assert first.incidents_of("dry-south-0810", day) == [
            ("blocked", "gubei-1", 1_000_250), ("blocked", "gubei-1", 1_000_250),
            ("breakdown", "", 1_200_000),
        ]  # fmt: skip
        assert first.incidents_of("dry-south-0810", "2026-11-24") == []
    finally:
        first.close()
        second.close()


def test_a_delivery_held_is_taken_over_only_once_its_lease_ran_out_and_by_one_service(state: str) -> None:
    """A sender holds a delivery until it releases it; a sender that died leaves it to whichever
    service finds its lease over first, leased to that one in turn; released, nobody sends it."""
    first, second = WasteState(state), WasteState(state)
    try:
        held = first.hold("Keeper 1", "sms", "the truck is 5 minutes away", "t1", lease_until=100.0)
        other = first.hold("Keeper 2", "email", "the truck has left", "t2", lease_until=300.0)
        assert second.orphans(now=99.0, lease_until=200.0) == []  # its sender still has it
        taken = second.orphans(now=101.0, lease_until=200.0)
        assert taken == [(held, "Keeper 1", "sms", "the truck is 5 minutes away", "t1")]
        assert first.orphans(now=150.0, lease_until=250.0) == []  # leased to the second until 200
        assert first.orphans(now=301.0, lease_until=400.0, limit=1) == [
            (held, "Keeper 1", "sms", "the truck is 5 minutes away", "t1")
        ]  # the oldest first, no more than asked
        first.release(held)
        assert second.orphans(now=1000.0, lease_until=1100.0) == [
            (other, "Keeper 2", "email", "the truck has left", "t2")
        ]
        second.release(other)
        assert first.orphans(now=10_000.0, lease_until=10_100.0) == []
    finally:
        first.close()
        second.close()


def test_a_sweep_takes_over_at_most_50_deliveries_and_the_rest_at_the_next(state: str) -> None:
    """A service back after an outage does not take every orphan at once: 50 a sweep, oldest first."""
    tables = WasteState(state)
    try:
        held = [
            tables.hold(f"Keeper {i}", "sms", "the truck has left", "t", lease_until=100.0) for i in range(51)
        ]
        assert [o[0] for o in tables.orphans(now=101.0, lease_until=200.0)] == held[:50]
        assert [o[0] for o in tables.orphans(now=101.0, lease_until=200.0)] == held[50:]
    finally:
        tables.close()


def test_the_store_s_lines_wait_in_order_until_it_has_them(state: str) -> None:
    tables = WasteState(state)
    try:
        tables.put([])
        assert tables.pending() == 0
        tables.put(["waste_trip a=1 1", "waste_trip a=2 2"])
        tables.put(["waste_trip a=3 3"])
        assert tables.pending() == 3
        oldest = tables.waiting(2)
        assert [line for _, line in oldest] == ["waste_trip a=1 1", "waste_trip a=2 2"]
        tables.written([])
        assert tables.pending() == 3
        tables.written([i for i, _ in oldest])
        assert tables.pending() == 1
        assert [line for _, line in tables.waiting(10)] == ["waste_trip a=3 3"]
    finally:
        tables.close()


@pytest.mark.servers
def test_a_state_that_cannot_be_reached_is_a_clear_error_without_its_password(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "waste.toml"
    config.write_text(f'gtfs = "{FEED}"\nstate = "postgresql://linli:s3cret@127.0.0.1:{port}/linli"\n')
    done = subprocess.run(
        [sys.executable, "-m", "linli.cli", "waste", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "LINLI_CLOUD_TOKEN": "t"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"linli waste run: state postgresql+psycopg://linli:***@127.0.0.1:{port}/linli" in done.stderr
    assert "s3cret" not in done.stderr


def test_one_service_dispatches_and_another_takes_over_when_its_session_ends(
    postgresql: LocalServer, tmp_path: Path
) -> None:
    name = unique("lead").replace("-", "_")
    create_database(postgresql_url(postgresql), name)
    url = postgresql_url(postgresql, name).replace("+psycopg", "")
    first, second = WasteState(url), WasteState(url)
    lead_first, lead_second = Leadership(first, recheck_s=0), Leadership(second, recheck_s=0)
    try:
        assert [lead_first.held(), lead_second.held()] == [True, False]
        assert [lead_first.held(), lead_second.held()] == [True, False]  # kept, not taken turn about
        # The first's host is gone: the database ends its session, and with it the lock.
        ended = second.rows(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = :k "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            {"k": DISPATCH_LOCK & 0xFFFFFFFF},
        )
        assert ended == [(True,)]
        # The backend ends a moment after it is told to, and with it the lock.
        wait_for(lead_second.held, "the second service leading", timeout=10)
        assert not lead_first.held()  # back, it finds the other leading
    finally:
        for lead in (lead_first, lead_second):
            lead.close()
        first.close()
        second.close()
    # On SQLite, one box: always this one.
    alone = WasteState(str(tmp_path / "waste.sqlite"))
    assert Leadership(alone).held()
    alone.close()


def test_a_service_that_lets_go_of_the_dispatch_hands_it_over(postgresql: LocalServer) -> None:
    """Closed, it no longer leads, and its lock is gone with its session: the other takes over,
    not after a dead session's keepalives gave up."""
    name = unique("lead").replace("-", "_")
    create_database(postgresql_url(postgresql), name)
    url = postgresql_url(postgresql, name).replace("+psycopg", "")
    first, second = WasteState(url), WasteState(url)
    lead_first = Leadership(first, recheck_s=3600)  # asked of the database once an hour
    lead_second = Leadership(second, recheck_s=0)
    try:
        assert [lead_first.held(), lead_second.held()] == [True, False]
        lead_first.close()
        assert lead_first.held() is False  # not asked again within the hour: it let go
        # Its session ends with its connection, a moment later: the lock with it, no timeout.
        wait_for(lead_second.held, "the second service leading", timeout=10)
    finally:
        lead_first.close()
        lead_second.close()
        first.close()
        second.close()


def test_a_service_that_cannot_reach_the_state_does_not_dispatch(tmp_path: Path) -> None:
    class Unreachable(WasteState):
        def __init__(self) -> None:  # PostgreSQL on a port nothing listens on, never migrated
            self._engine = create_engine(f"postgresql+psycopg://linli@127.0.0.1:{free_port()}/linli")

    lead = Leadership(Unreachable(), recheck_s=0)
    assert lead.held() is False
    lead.close()


def test_the_state_is_a_file_beside_the_config_or_a_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from linli.cloud.waste.config import load_waste_config

    path = tmp_path / "waste.toml"
    path.write_text(f'gtfs = "{FEED}"\nstate = "waste.sqlite"\n')
    monkeypatch.delenv("LINLI_STATE_URL", raising=False)
    assert load_waste_config(path).state == str(tmp_path / "waste.sqlite")
    monkeypatch.setenv("LINLI_STATE_URL", "postgresql://linli@db:5432/linli")
    assert load_waste_config(path).state == "postgresql://linli@db:5432/linli"


def test_a_config_still_saying_split_is_refused_naming_the_file_the_key_and_the_fix(tmp_path: Path) -> None:
    from linli.catalog.errors import ConfigError
    from linli.cloud.waste.config import load_waste_config

    path = tmp_path / "waste.toml"
    path.write_text(f'gtfs = "{FEED}"\nroutes = "split"\n')
    with pytest.raises(ConfigError) as refused:
        load_waste_config(path)
    said = str(refused.value)
    assert str(path) in said
    assert "key 'routes'" in said
    assert 'routes = "every"' in said
    assert "one feed per service" in said
    path.write_text(f'gtfs = "{FEED}"\nroutes = "every"\n')
    assert load_waste_config(path).routes == "every"
