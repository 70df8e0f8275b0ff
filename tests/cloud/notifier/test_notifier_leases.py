"""A notifier never sends again what it sent itself (issue 30).

A claimed notice waits in the outbox under its sender's lease until it is delivered and
released; once the lease runs out, any notifier takes it for a dead sender's. Its own sender
must not: while it is still sending it, or once it delivered it and the state refused the
release (restarting, a connection lost). The clock of the leases is the test's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from linli.catalog.channels import HttpChannel
from linli.cloud.notifier.channels import Notice
from linli.cloud.notifier.config import NotifierConfig, Subscription
from linli.cloud.notifier.service import Service
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer, postgresql_url
from support import unique
from test_notifier import HOOK, Clock, Recorder, alert, at, make, run
from test_notifier_db_faults import Database

LEASE_S = NotifierConfig().lease_s
OPS = [Subscription(id="ops", channels=[HOOK])]
FIRING = ("ops", "firing", "webhook")


def refuse_releases(engine: Engine) -> None:
    """The outbox's delete refused, as a database shutting down refuses it, until the trigger
    `keep_held` is dropped."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION keep_held() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'lost by the test' USING ERRCODE = 'admin_shutdown'; END $$"
            )
        )
        conn.execute(
            text("CREATE TRIGGER keep_held BEFORE DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION keep_held()")
        )


def test_a_notice_whose_release_failed_is_released_later_not_sent_again_by_its_notifier(
    postgresql: LocalServer,
) -> None:
    """Delivered, but the database refused to let it go (a trigger answering as a database
    shutting down does). Once it answers again, past the lease, its notifier releases it rather
    than take it for a dead notifier's; another notifier then finds nothing to send. (Before,
    its own notifier sent it again: one extra copy per fault in `test_notifier_db_faults.py`.)"""
    database = Database(postgresql, unique("release").replace("-", "_"))
    store, other_store, clock, sender = (
        Store(database.url),
        Store(database.url),
        Clock(at("10:00")),
        Recorder(),
    )
    notifier = make(store, OPS, clock, sender, group_wait_s=0)
    other = make(other_store, [], clock, sender, group_wait_s=0)
    engine = create_engine(postgresql_url(postgresql, database.name))

    async def orphans() -> tuple[int, int]:
        taken = (notifier.send_orphans(), other.send_orphans())
        await notifier.drain()
        await other.drain()
        return taken

    try:
        refuse_releases(engine)
        run(notifier, clock, [(0, alert())])
        assert sender.got == [FIRING]
        assert database.held() == 1  # delivered, still in the outbox: its release was refused
        assert notifier.errors["outbox"] >= 1, notifier.errors
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER keep_held ON outbox"))
        clock.now += LEASE_S + 1  # its lease ran out
        assert asyncio.run(orphans()) == (0, 0)
        assert database.held() == 0  # released by its own notifier
        assert sender.got == [FIRING]
    finally:
        store.close()
        other_store.close()
        engine.dispose()


def test_a_notifier_stopping_releases_what_the_database_refused_to_before(postgresql: LocalServer) -> None:
    """The database refused a delivered notice's release, and answers again as the notifier
    stops: its last drain releases it, so that no other notifier sends it again after its
    lease. (Before, it was left in the outbox.)"""
    database = Database(postgresql, unique("stopping").replace("-", "_"))
    store, clock, sender = Store(database.url), Clock(at("10:00")), Recorder()
    notifier = make(store, OPS, clock, sender, group_wait_s=0)
    engine = create_engine(postgresql_url(postgresql, database.name))
    try:
        refuse_releases(engine)
        run(notifier, clock, [(0, alert())])
        assert (sender.got, database.held()) == ([FIRING], 1)
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER keep_held ON outbox"))
        asyncio.run(notifier.drain())  # as `linli cloud run` does when it stops
        assert database.held() == 0
    finally:
        store.close()
        engine.dispose()


class Gate(Recorder):
    """Holds every message at the door until `open` is set; `reached` once one is there."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.open = asyncio.Event()

    async def send(self, channel: HttpChannel, notice: Notice) -> None:
        self.reached.set()
        await self.open.wait()
        await super().send(channel, notice)


def test_a_notice_still_being_sent_past_its_lease_is_not_sent_again_by_its_notifier(state: str) -> None:
    """The receiver holds the delivery longer than its lease: its notifier only takes the lease
    again, and the notice is told once. (Before, it sent it a second time.)"""
    store, clock, sender = Store(state), Clock(at("10:00")), Gate()
    notifier = make(store, OPS, clock, sender, group_wait_s=0)

    async def go() -> int:
        assert notifier.handle(alert())
        notifier.tick()
        await asyncio.wait_for(sender.reached.wait(), 30)
        clock.now += LEASE_S + 1
        taken = notifier.send_orphans()
        sender.open.set()
        await notifier.drain(30)
        return taken

    try:
        assert asyncio.run(go()) == 0
        assert sender.got == [FIRING]
        assert store.orphans(clock.now + LEASE_S + 1, clock.now + 2 * LEASE_S) == []  # released
    finally:
        store.close()


def test_a_notice_still_being_sent_keeps_its_lease_and_another_notifier_leaves_it(state: str) -> None:
    """The receiver holds the delivery past its first lease. Its notifier renews the lease at
    its round, so another notifier on the same state, sweeping after the first lease would have
    run out, takes nothing: the notice is told once. (Before, the other notifier took it for a
    dead sender's and told it a second time.)"""
    store, other_store, clock, sender = Store(state), Store(state), Clock(at("10:00")), Gate()
    notifier = make(store, OPS, clock, sender, group_wait_s=0)
    other = make(other_store, OPS, clock, sender, group_wait_s=0)

    async def go() -> tuple[int, int]:
        assert notifier.handle(alert())
        notifier.tick()
        await asyncio.wait_for(sender.reached.wait(), 30)
        clock.now += 0.6 * LEASE_S
        mine = notifier.send_orphans()  # its round, within the first lease: renewed
        clock.now += 0.6 * LEASE_S  # past the first lease, within the renewed one
        theirs = other.send_orphans()
        sender.open.set()
        await notifier.drain(30)
        await other.drain(30)
        return mine, theirs

    try:
        assert asyncio.run(go()) == (0, 0)
        assert sender.got == [FIRING]
    finally:
        store.close()
        other_store.close()


def test_a_tick_that_keeps_failing_does_not_stop_the_orphans_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`linli cloud run`'s tick: the notifier's tick failing (counted) still leaves the orphans'
    round its turn, which renews the leases of what is being sent. (Before, one `try` held
    both: a tick failing at every turn stopped the renewals, and the leases ran out.)"""
    service = Service(NotifierConfig(state=str(tmp_path / "notifier.sqlite")), "token")
    rounds: list[str] = []

    def failing_tick() -> None:
        raise RuntimeError("a tick that fails")

    def orphans() -> int:
        rounds.append("orphans")
        return 0

    monkeypatch.setattr(service.notifier, "tick", failing_tick)
    monkeypatch.setattr(service.notifier, "send_orphans", orphans)
    try:
        service.tick()
        service.tick()
    finally:
        service.store.close()
    assert rounds == ["orphans", "orphans"]
    assert service.notifier.errors["tick"] == 2
