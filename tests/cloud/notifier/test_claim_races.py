"""The notifier's claims on PostgreSQL, each race driven step by step rather than hoped for.

A third connection holds a row lock (or an uncommitted row) that one transaction must wait
for, so that the other side of the race runs while that transaction is open between its
statements. `pg_stat_activity` says when a backend is waiting on a lock: that, not a sleep,
is when the test moves on.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, Engine, text

from linli.catalog.alerts import AlertMessage
from linli.cloud.notifier.config import Subscription
from linli.cloud.notifier.store import NOTHING, Store
from races import Call, blocked_or_done, waiting
from support import wait_for
from test_notifier import HOOK, Clock, Recorder, alert, at, make

FP = "00000000000000cc"


def hold_told_row(conn: Connection, sub: str) -> None:
    """Lock one `told` row until the connection's transaction ends."""
    conn.execute(
        text("SELECT 1 FROM told WHERE fingerprint = :fp AND subscription = :sub FOR UPDATE"),
        {"fp": FP, "sub": sub},
    )


def told_firing(store: Store, kind: str) -> bool:
    """Whether `store` claimed telling "duty" the alert fires: its first message, the escalation
    (which the resolution's deletes reach only after `told`), or a group's message with the alert
    among its members."""
    if kind == "first":
        return store.claim_first(FP, "duty", 2.0) is not None
    if kind == "escalation":
        return store.claim_escalation(FP, "duty") is not None
    group = store.claim_group("duty", "lifts", 2.0, ready=2.0, members=[FP], keep=lambda *_: NOTHING)
    return group is not None and FP in group.firing


@pytest.mark.parametrize("kind", ["first", "escalation", "group"])
def test_a_claim_waits_for_a_resolution_half_done_and_then_finds_the_alert_closed(
    pg_database: tuple[str, Engine], kind: str
) -> None:
    """The resolution has deleted the alert but not yet read who heard of it; a notifier claims
    a message meanwhile. Either the claim leaves the alert out, or the resolution lists its
    subscriber: never a firing message that no resolution follows."""
    url, engine = pg_database
    closer, claimer = Store(url), Store(url)
    try:
        closer.open_alert(FP, 1000, "{}", 1.0)
        assert closer.claim_first(FP, "ops", 1.0) == []
        with engine.connect() as third:
            third.begin()
            hold_told_row(third, "ops")  # the resolution stops at `DELETE FROM told`, its alert deleted
            close = Call(lambda: closer.close_alert(FP, 1000, 2.0))
            blocked_or_done(engine, [], 1)
            assert close.is_alive()
            claim = Call(lambda: told_firing(claimer, kind))
            blocked_or_done(engine, [claim], 2)
            third.rollback()
        closed, claimed = close.outcome(), claim.outcome()
        # Without the alert's lock the claim wins on the alert it still sees, and the resolution,
        # which read who heard of it before that, never tells "duty" it is over.
        assert (closed.told, claimed) == (["ops"], False)
        assert closer.rows("SELECT * FROM told") == []  # nothing left of the closed alert
        assert closer.rows("SELECT * FROM escalated") == []
    finally:
        closer.close()
        claimer.close()


def test_of_two_notifiers_claiming_the_first_message_at_once_exactly_one_wins(
    pg_database: tuple[str, Engine],
) -> None:
    """Both claims reach the conflicting insert while a third transaction holds the same row
    uncommitted; it rolls back, and both go on at once."""
    url, engine = pg_database
    stores = [Store(url), Store(url)]
    try:
        stores[0].open_alert(FP, 1000, "{}", 1.0)
        with engine.connect() as third:
            third.begin()
            third.execute(text("INSERT INTO told VALUES (:fp, 'ops', 0)"), {"fp": FP})
            claims = [Call(lambda s=s: s.claim_first(FP, "ops", 2.0)) for s in stores]  # type: ignore[misc]
            blocked_or_done(engine, claims, 2)
            third.rollback()
        assert sorted(c.outcome() is not None for c in claims) == [False, True]
        assert stores[0].rows("SELECT subscription, last_s FROM told") == [("ops", 2.0)]
    finally:
        for s in stores:
            s.close()


def test_of_two_notifiers_claiming_a_repeat_at_once_exactly_one_wins(pg_database: tuple[str, Engine]) -> None:
    """Both repeats wait on the `told` row a third transaction locks, then run at once."""
    url, engine = pg_database
    stores = [Store(url), Store(url)]
    try:
        stores[0].open_alert(FP, 1000, "{}", 1.0)
        assert stores[0].claim_first(FP, "ops", 1.0) == []
        with engine.connect() as third:
            third.begin()
            hold_told_row(third, "ops")
            claims = [Call(lambda s=s: s.claim_repeat(FP, "ops", 100.0, 60.0)) for s in stores]  # type: ignore[misc]
            blocked_or_done(engine, claims, 2)
            third.rollback()
        assert sorted(c.outcome() is not None for c in claims) == [False, True]
    finally:
        for s in stores:
            s.close()


def test_a_notice_is_sent_when_the_database_fails_between_its_claim_and_its_outbox_entry(
    pg_database: tuple[str, Engine],
) -> None:
    """A third connection locks the outbox, so the notice's entry waits after its claim; that
    connection is then terminated, as a restart would. The firing message and the resolution
    are each still told once, after the feed hands the event over again and the next tick."""
    url, engine = pg_database
    store, clock, sender = Store(url), Clock(at("10:00")), Recorder()
    notifier = make(store, [Subscription(id="ops", channels=[HOOK])], clock, sender, group_wait_s=0)

    def terminate_the_waiter() -> int:
        wait_for(lambda: waiting(engine) == 1, "the outbox entry to wait")
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
            )

    async def step(event: AlertMessage) -> None:
        with engine.connect() as third:
            third.begin()
            third.execute(text("LOCK TABLE outbox IN EXCLUSIVE MODE"))
            killer = Call(terminate_the_waiter)
            taken = notifier.handle(event)
            notifier.tick()
            assert killer.outcome() == 1
            third.rollback()
        if not taken:
            assert notifier.handle(event)  # the feed hands it over again at its next retry
        clock.now += 1
        notifier.tick()
        await notifier.drain()

    try:
        asyncio.run(step(alert()))
        assert sender.got == [("ops", "firing", "webhook")]
        asyncio.run(step(alert("resolved")))
        assert sender.got == [("ops", "firing", "webhook"), ("ops", "resolved", "webhook")]
        assert store.rows("SELECT * FROM outbox") == []  # each sent, then released
        assert notifier.errors["state"] + notifier.errors["tick"] == 2  # each failure counted
    finally:
        store.close()
