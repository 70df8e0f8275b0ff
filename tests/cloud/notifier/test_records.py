"""The notifier's records beside the alert book, on SQLite and PostgreSQL: silences and
subscriptions kept, changed and forgotten, each change making every open alert due at once (a
silence ended or a subscription added may mean someone is to be told now)."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from linli.catalog.channels import ChannelKind, HttpChannel
from linli.cloud.db import database_url
from linli.cloud.notifier.config import Silence, Subscription
from linli.cloud.notifier.store import Store

FP = "00000000000000d0"
HOOK = HttpChannel(kind=ChannelKind.WEBHOOK, url="http://hook.invalid/x")


def due_now(store: Store) -> bool:
    """Whether the open alert was made due at once since the last look (and not due again)."""
    due = [e[0] for e in store.book(due_by=0.0)] == [FP]
    store.set_due(FP, None)
    return due


def silence(sid: str, ends_s: float, comment: str = "lift repair") -> Silence:
    return Silence(
        id=sid, matchers={"site": "gubei-1"}, starts_s=0.0, ends_s=ends_s, author="ops", comment=comment
    )


def test_silences_are_kept_replaced_and_forgotten_each_change_making_the_alerts_due(state: str) -> None:
    store = Store(state)
    store.open_alert(FP, 1000, "{}", 1.0)
    store.set_due(FP, None)
    assert not due_now(store)
    a, b, c = (
        silence("00000000000000a1", 200.0),
        silence("00000000000000a2", 100.0),
        silence("00000000000000a3", 200.0),
    )
    store.put_silence(a)
    assert due_now(store)
    store.put_silence(b)
    store.put_silence(c)
    due_now(store)
    # Soonest ending first, then by id; those ending after the time asked, not at it.
    assert store.silences() == [b, a, c]
    assert store.silences(ending_after=99.0) == [b, a, c]
    assert store.silences(ending_after=100.0) == [a, c]
    longer = silence(a.id, 300.0, "lift repair, the part is late")
    store.put_silence(longer)  # the same id again: replaced, its end and its body
    assert due_now(store)
    assert store.silences(ending_after=200.0) == [longer]
    assert store.delete_silence(a.id) == longer
    assert due_now(store)
    assert store.silences() == [b, c]
    assert store.delete_silence(a.id) is None  # gone already: nothing changed
    assert not due_now(store)
    store.close()


def test_subscriptions_seeded_changed_and_deleted_each_change_making_the_alerts_due(state: str) -> None:
    store = Store(state)
    store.open_alert(FP, 1000, "{}", 1.0)
    store.set_due(FP, None)
    ops, keeper = Subscription(id="ops", channels=[HOOK]), Subscription(id="keeper", channels=[HOOK])
    store.seed([ops, keeper])
    assert due_now(store)
    assert store.subscriptions() == [keeper, ops]  # by id
    renamed = Subscription(id="ops", name="Ops room", channels=[HOOK])
    store.put_subscription(renamed)
    assert due_now(store)
    assert store.subscriptions() == [keeper, renamed]
    # The config's subscriptions again: what the API changed stands, a new one is added.
    lifts = Subscription(id="lifts", channels=[HOOK])
    store.seed([ops, lifts])
    assert due_now(store)
    assert store.subscriptions() == [keeper, lifts, renamed]
    assert store.delete_subscription("keeper") is True
    assert due_now(store)
    assert store.delete_subscription("keeper") is False
    assert store.subscriptions() == [lifts, renamed]
    store.close()


def test_a_subscription_that_no_longer_reads_back_is_quarantined_and_the_others_kept(state: str) -> None:
    store = Store(state)
    store.put_subscription(Subscription(id="ops", channels=[HOOK]))
    engine = create_engine(database_url(state))
    with engine.begin() as conn:  # as an older version, or a hand, left it
        conn.execute(text("INSERT INTO subscription (id, body) VALUES ('old', '{\"id\": \"old\"}')"))
    engine.dispose()
    assert [s.id for s in store.subscriptions()] == ["ops"]
    [kept] = store.quarantined()
    assert (kept["source"], kept["key"], kept["body"]) == ("subscription", "old", '{"id": "old"}')
    assert kept["reason"] == "channels: Field required"
    assert [s.id for s in store.subscriptions()] == ["ops"]  # taken out, not met again
    assert len(store.quarantined()) == 1
    store.close()
