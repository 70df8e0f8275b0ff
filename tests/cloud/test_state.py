"""The central services' state on SQLite and PostgreSQL: migrations, and claims under contention."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import create_engine, text

from linli.cloud.db import database_url, describe, migrate
from linli.cloud.notifier.store import Keep, Pending, Store
from linli.cloud.scope import Scope
from linli.cloud.tokens import TokenBook

# The notifier's tables as a release before migrations made them in its SQLite file.
PREVIOUS = """
CREATE TABLE subscription (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE alert (
    fingerprint TEXT PRIMARY KEY, body TEXT NOT NULL, first_s REAL NOT NULL, acked_by TEXT, acked_s REAL
);
CREATE TABLE told (
    fingerprint TEXT NOT NULL, subscription TEXT NOT NULL, last_s REAL NOT NULL,
    PRIMARY KEY (fingerprint, subscription)
);
CREATE TABLE escalated (
    fingerprint TEXT NOT NULL, subscription TEXT NOT NULL, PRIMARY KEY (fingerprint, subscription)
);
CREATE TABLE quarantine (
    at_ms INTEGER NOT NULL, source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE failed_delivery (
    at_ms INTEGER NOT NULL, subscription TEXT NOT NULL, channel TEXT NOT NULL,
    fingerprint TEXT NOT NULL, notice TEXT NOT NULL, error TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE api_token (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, hash BLOB NOT NULL,
    created_ms INTEGER NOT NULL, revoked_ms INTEGER
);
CREATE TABLE audit (
    at_ms INTEGER NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""
# The same minute for every entry: only the order they were written in tells them apart.
AUDIT = [(1_790_000_000_000, "ops", f"action-{i}", "ops", "") for i in range(5)]


HEAD = "0013"  # the newest migration


def test_a_previous_release_s_state_file_is_taken_over_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "notifier.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS)
        db.execute("INSERT INTO alert VALUES ('00000000000000aa', '{}', 12.5, 'duty', 13.0)")
        db.execute("INSERT INTO told VALUES ('00000000000000aa', 'ops', 12.5)")
        db.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?)", AUDIT)
        db.execute("INSERT INTO quarantine VALUES (1, 'alert', 'k', 'bad', '{')")
    db.close()
    store, book = Store(path), TokenBook(path)
    assert store.book() == [("00000000000000aa", "{}", 12.5, "duty", {"ops": 12.5})]
    assert [e["action"] for e in book.audit_log()] == [f"action-{i}" for i in reversed(range(5))]
    book.audit("ops", "action-5", "ops")
    assert book.audit_log(limit=1)[0]["action"] == "action-5"  # new entries after the old ones
    assert [q["key"] for q in store.quarantined()] == ["k"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_migrations_run_up_from_empty_and_from_the_first_revision_with_data(state: str) -> None:
    engine = create_engine(database_url(state))
    try:
        migrate(engine, "0001")
        with engine.begin() as db:
            for row in AUDIT:
                db.execute(
                    text("INSERT INTO audit VALUES (:at, :who, :action, :target, :detail)"),
                    dict(zip(("at", "who", "action", "target", "detail"), row, strict=True)),
                )
        migrate(engine)
        migrate(engine)  # again: nothing to do
        with engine.begin() as db:
            assert db.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    finally:
        engine.dispose()
    book = TokenBook(state)
    assert [e["action"] for e in book.audit_log()] == [f"action-{i}" for i in reversed(range(5))]
    token = book.create("screen", Scope.READ)
    assert book.holder(token.encode()) is not None
    book.close()


def test_the_retired_split_mode_s_tables_are_dropped_and_the_trips_kept(state: str) -> None:
    """A state a `routes = "split"` service used: its leases, heartbeats and route log go; the
    trips it saw stay (a restarted service reads which finished)."""
    engine = create_engine(database_url(state))
    try:
        migrate(engine, "0012")
        with engine.begin() as db:
            db.execute(text("INSERT INTO waste_route VALUES ('r1', 'w1', 1.0)"))
            db.execute(text("INSERT INTO waste_member VALUES ('w1', 1.0)"))
            db.execute(
                text("INSERT INTO waste_trip VALUES ('t1', '2026-11-30', 'r1', 'k1', 'wet', NULL, 0, :f, 1)"),
                {"f": True},
            )
        migrate(engine)
        tables = set(sqlalchemy.inspect(engine).get_table_names())
        assert not tables & {"waste_member", "waste_route", "waste_message"}
        with engine.begin() as db:
            assert db.execute(text("SELECT trip_id FROM waste_trip")).scalars().all() == ["t1"]
    finally:
        engine.dispose()


def test_each_claim_is_won_once_by_notifiers_racing_for_it(state: str) -> None:
    """Four notifiers (each its own connection pool) claim the same 50 alerts at once."""
    stores = [Store(state) for _ in range(4)]
    keys = [f"{i:016x}" for i in range(50)]
    won: list[list[str]] = [[] for _ in stores]
    closed: list[list[str]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def notifier(n: int) -> None:
        store = stores[n]
        start.wait()
        for fp in keys:
            store.open_alert(fp, 1000, "{}", 1.0)
            if store.claim_first(fp, "ops", 1.0) is not None:
                won[n].append(fp)
        start.wait()  # every firing step handled, then every resolution
        for fp in keys:
            if store.close_alert(fp, 1000, 2.0) is not None:
                closed[n].append(fp)

    threads = [threading.Thread(target=notifier, args=(n,)) for n in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(fp for w in won for fp in w) == keys  # each told once, by one of them
    assert sorted(fp for c in closed for fp in c) == keys  # each closed once
    assert stores[0].book() == []
    for s in stores:
        s.close()


def test_an_episode_closed_stays_closed_whatever_order_its_events_come_in(state: str) -> None:
    """Edges announce their alerts again, and two notifiers may take the firing event and the
    resolution in either order: the episode (fingerprint, since) decides, not the arrival."""
    store = Store(state)
    fp = "00000000000000ee"
    assert store.open_alert(fp, 1000, "{}", 1.0) == "new"
    assert store.open_alert(fp, 1000, "{}", 2.0) == "open"  # announced again: a refresh
    store.claim_first(fp, "ops", 2.0)
    assert store.close_alert(fp, 1000, 3.0) == (["ops"], [])
    assert store.open_alert(fp, 1000, "{}", 4.0) == "late"  # the firing event, late
    assert store.book() == []
    assert store.close_alert(fp, 1000, 5.0) is None  # the resolution again: nobody told twice
    # A resolution that arrives before its firing event: the firing event is then late.
    assert store.close_alert(fp, 2000, 6.0) is None
    assert store.open_alert(fp, 2000, "{}", 7.0) == "late"
    # A late resolution of an older episode does not close a newer one.
    assert store.open_alert(fp, 3000, "{}", 8.0) == "new"
    assert store.close_alert(fp, 2500, 9.0) is None
    assert [a[0] for a in store.book()] == [fp]
    # Closed episodes are forgotten after a day.
    store.close_alert(fp, 3000, 10.0 + 86_400 * 2)
    assert store.open_alert(fp, 1000, "{}", 10.0 + 86_400 * 2) == "new"
    store.close()


def test_firing_and_resolution_racing_on_two_notifiers_leave_nothing_open(state: str) -> None:
    """For 100 alerts, one notifier takes each firing event while another takes its
    resolution at the same moment; whichever wins, no alert is left open."""
    stores = [Store(state) for _ in range(2)]
    keys = [f"{i:016x}" for i in range(100)]
    start = threading.Barrier(2)

    def firing() -> None:
        start.wait()
        for fp in keys:
            stores[0].open_alert(fp, 1000, "{}", 1.0)

    def resolving() -> None:
        start.wait()
        for fp in reversed(keys):  # they meet in the middle, and cross
            stores[1].close_alert(fp, 1000, 1.0)

    threads = [threading.Thread(target=firing), threading.Thread(target=resolving)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert stores[0].book() == []
    for s in stores:
        s.close()


def test_a_resolution_keeps_the_all_clear_for_those_who_heard_in_its_own_transaction(state: str) -> None:
    """The all-clear notices are in the outbox when the alert is closed, each to whoever heard of
    the alert: a notifier dying right after the close leaves them to another (`orphans`)."""
    store = Store(state)
    fp = "00000000000000ac"
    store.open_alert(fp, 1000, "{}", 1.0)
    store.claim_first(fp, "ops", 1.0)
    store.claim_first(fp, "keeper", 1.0)

    def keep(told: list[str]) -> Keep:
        return Keep([(sub, "{}", f"all clear for {sub}") for sub in told], lease_until=100.0)

    closed = store.close_alert(fp, 1000, 2.0, keep=keep)
    assert closed is not None
    assert closed.told == ["keeper", "ops"]
    assert [(i, sub, notice) for i, sub, _, notice in store.orphans(now=101.0, lease_until=200.0)] == [
        (closed.held[0], "keeper", "all clear for keeper"),
        (closed.held[1], "ops", "all clear for ops"),
    ]
    store.close()


def test_the_alert_book_keeps_the_newest_episode_when_it_is_due_and_who_acknowledged_first(
    state: str,
) -> None:
    store = Store(state)
    fp, later = "00000000000000b0", "00000000000000b1"
    assert store.open_alert(fp, 1000, "first", 1.0) == "new"
    assert store.open_alert(later, 1000, "{}", 2.0, due=50.0) == "new"
    # Due when opened unless told otherwise: looked at from `now`, or from `due`.
    assert [e[0] for e in store.book(due_by=1.0)] == [fp]
    assert [e[0] for e in store.book(due_by=49.0)] == [fp]
    assert [e[0] for e in store.book(due_by=50.0)] == [fp, later]
    assert store.open_alert(fp, 1000, "again", 3.0) == "open"  # the episode announced again
    assert store.entry(fp) == (fp, "again", 1.0, None, {})
    # A newer episode of an alert still open takes its place; an older one's event does not.
    assert store.open_alert(fp, 2000, "newer", 4.0) == "open"
    assert store.open_alert(fp, 1500, "older", 5.0) == "open"
    assert store.entry(fp) == (fp, "newer", 1.0, None, {})
    assert store.close_alert(fp, 2000, 6.0) is not None  # the newer episode is the one open
    assert store.entry(fp) is None
    # The first acknowledgement stands; an alert not open has nobody's.
    assert store.ack(later, "alice", 7.0) == "alice"
    assert store.ack(later, "bob", 8.0) == "alice"
    entry = store.entry(later)
    assert entry is not None
    assert entry[3] == "alice"
    assert store.ack(fp, "carol", 9.0) is None
    store.close()


def test_a_group_is_told_by_one_caller_once_its_gap_is_over_with_what_changed(state: str) -> None:
    store = Store(state)
    a, b, gone = "00000000000000c0", "00000000000000c1", "00000000000000c2"
    for fp in (a, b, gone):
        store.open_alert(fp, 1000, "{}", 1.0)
    store.close_alert(gone, 1000, 2.0, pending=lambda _told: Pending([("ops", "lifts")], "gone resolved"))
    kept: list[tuple[list[str], list[str]]] = []

    def keep(firing: list[str], resolved: list[str]) -> Keep:
        kept.append((firing, resolved))
        return Keep([("ops", "{}", f"{len(firing)} firing, {len(resolved)} resolved")], lease_until=100.0)

    claimed = store.claim_group("ops", "lifts", 10.0, ready=10.0, members=[b, gone, a], keep=keep)
    assert claimed is not None
    # The members still open are told, in one order; the resolution kept for the group is taken.
    assert (claimed.firing, claimed.resolved) == ([a, b], ["gone resolved"])
    assert kept == [([a, b], ["gone resolved"])]
    assert [o[3] for o in store.orphans(now=101.0, lease_until=200.0)] == ["2 firing, 1 resolved"]
    assert store.group_told("ops", "lifts") == 10.0
    assert [(e[0], e[4]) for e in store.book()] == [(a, {"ops": 10.0}), (b, {"ops": 10.0})]
    # Told at 10: a caller that may tell it only if it was told by 9 gets nothing.
    assert store.claim_group("ops", "lifts", 11.0, ready=9.0, members=[a], keep=keep) is None
    assert store.group_told("ops", "lifts") == 10.0
    again = store.claim_group("ops", "lifts", 20.0, ready=10.0, members=[a], keep=keep)
    assert again is not None
    assert (again.firing, again.resolved) == ([a], [])  # the resolution was taken once
    assert store.group_told("ops", "lifts") == 20.0
    store.close()


def test_a_sweep_takes_over_at_most_50_notices_and_the_rest_at_the_next(state: str) -> None:
    """A notifier back after an outage does not take every orphan at once: 50 a sweep, oldest first."""
    store = Store(state)
    held = [store.hold("ops", "{}", f"notice-{i}", lease_until=100.0) for i in range(51)]
    assert [o[0] for o in store.orphans(now=101.0, lease_until=200.0)] == held[:50]
    assert [o[0] for o in store.orphans(now=101.0, lease_until=200.0)] == held[50:]
    store.close()


def test_a_notice_whose_sender_died_is_taken_once_its_lease_runs_out(state: str) -> None:
    stores = [Store(state) for _ in range(3)]
    held = [stores[0].hold("ops", "{}", f"notice-{i}", lease_until=100.0) for i in range(30)]
    assert stores[1].orphans(now=99.0, lease_until=399.0) == []  # its sender may still be at it
    stores[0].release(held[0])  # this one went out
    taken: list[list[int]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def take(n: int) -> None:
        start.wait()
        while batch := stores[n].orphans(now=101.0, lease_until=401.0, limit=4):
            taken[n] += [i for i, *_ in batch]

    threads = [threading.Thread(target=take, args=(n,)) for n in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(i for t in taken for i in t) == held[1:]  # each orphan to one taker, once
    assert stores[0].orphans(now=402.0, lease_until=700.0)[0][3] == "notice-1"  # the lease ran out again
    for s in stores:
        s.close()


def test_a_database_url_never_shows_its_password() -> None:
    shown = describe("postgresql://linli:s3cret@db.example:5432/linli")
    assert "s3cret" not in shown
    assert "db.example:5432/linli" in shown
    assert database_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert database_url("/var/lib/linli/n.sqlite") == "sqlite:////var/lib/linli/n.sqlite"


@pytest.mark.servers
@pytest.mark.parametrize("state", ["postgresql://linli@127.0.0.1:9/nowhere"])
def test_an_unreachable_database_is_a_clear_error(state: str, tmp_path: Path) -> None:
    from support import linli

    config = tmp_path / "notifier.toml"
    config.write_text(f'state = "{state}"\n')
    result = linli("cloud", "token", "list", "--config", str(config))
    assert result.returncode == 1
    assert "linli cloud token: state postgresql+psycopg://linli@127.0.0.1:9/nowhere" in result.stderr
    assert "Traceback" not in result.stderr
