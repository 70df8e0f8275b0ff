"""Inhibition (issue 35): the district's default rules keep a device's silence from being told
while its edge is offline or its site's mains supply has failed; the silenced alerts stay in
the book, shown inhibited, and those that outlive their source are told then.

A controllable clock and a sender that records each message, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from linli.catalog.alerts import AlertMessage
from linli.cloud.config import Subscription
from linli.cloud.notifier import Notifier, edge_status_alert, inhibitor
from linli.cloud.store import Store
from test_grouping import offline, standings
from test_notifier import HOOK, Clock, Recorder, at, make, run

SILENT = "charger.heartbeat.silent"


@pytest.fixture
def state_book(state: str) -> Iterator[Store]:
    with contextlib.closing(Store(state)) as store:
        yield store


def device(n: int, rule: str = SILENT, *, site: str = "ronghua-1", edge: str = "e1") -> AlertMessage:
    return offline(n, rule=rule, site=site, edge=edge)


def inhibited(n: Notifier) -> dict[str, str | None]:
    """Device -> the fingerprint of the alert inhibiting it, for each open alert."""
    book = n.active()
    return {a.alert.device: inhibitor(n.config.inhibit, a.alert, book) for a in book}


def test_an_edge_offline_inhibits_its_devices_silence_until_it_is_back(state_book: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    n = make(state_book, [Subscription(id="ops", channels=[HOOK])], clock, sender, group_wait_s=0)
    edge_down = edge_status_alert("e1", "offline", 1)
    assert edge_down is not None
    run(n, clock, [(0, edge_down), (1, device(1)), (0, device(2)), (0, device(3, site="gubei-1", edge="e2"))])
    # The edge's own alert and the device of another edge are told; e1's devices are not.
    assert sorted(notice.alert.device for _, _, notice in n.sent) == ["e1", "station-3"]
    assert inhibited(n) == {
        "e1": None, "station-1": edge_down.fingerprint, "station-2": edge_down.fingerprint, "station-3": None,
    }  # fmt: skip
    # The edge is back and its two devices are still silent: they are told now, in one message.
    edge_up = edge_status_alert("e1", "online", 2)
    assert edge_up is not None
    told = len(n.sent)
    run(n, clock, [(5, edge_up), (0, None)])
    messages = {notice.kind: notice for _, _, notice in n.sent[told:]}
    assert len(n.sent) == told + 2
    assert messages["resolved"].alert.device == "e1"
    assert standings(messages["firing"]) == [("new", "station-1"), ("new", "station-2")]
    assert inhibited(n) == {"station-1": None, "station-2": None, "station-3": None}


def test_a_site_s_mains_fault_inhibits_that_site_s_device_silence_only(state_book: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    n = make(state_book, [Subscription(id="ops", channels=[HOOK])], clock, sender, group_wait_s=0)
    mains = device(9, "charger.mains_fault.above")
    run(n, clock, [(0, mains), (1, device(1)), (0, device(2, site="gubei-1", edge="e2"))])
    assert sorted(notice.alert.device for _, _, notice in n.sent) == ["station-2", "station-9"]
    assert inhibited(n)["station-1"] == mains.fingerprint
