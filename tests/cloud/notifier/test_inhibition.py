"""Inhibition (issue 35): the district's default rules keep a device's silence from being told
while its edge is offline or its site's mains supply has failed; the silenced alerts stay in
the book, shown inhibited, and those that outlive their source are told then.

A controllable clock and a sender that records each message, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from alertflow import Hook
from linli.catalog.alerts import AlertMessage
from linli.cloud.notifier.config import Subscription
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.routing import edge_status_alert, inhibitor
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer
from support import stop_logged, wait_for
from test_cloud import publish
from test_grouping import offline, replicas, standings
from test_notifier import HOOK, Clock, Recorder, at, make, run
from test_notifier_db_faults import get
from test_silences import told

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


def test_through_mosquitto_an_edge_offline_keeps_its_devices_silence_untold_by_either_replica(
    tmp_path: Path, mosquitto: LocalServer, postgresql: LocalServer
) -> None:
    hook = Hook("127.0.0.1")
    procs: list[Popen[bytes]] = []
    try:
        settings = "group_wait_s = 1\ngroup_interval_s = 1\nrepeat_s = 3600"
        ports = replicas(tmp_path, mosquitto, postgresql, hook, settings=settings, procs=procs)
        publish(mosquitto.port, "linli/edges/e1", "offline")  # its last will, as the broker sends it
        wait_for(lambda: "e1" in told(hook), "the edge offline told", timeout=60)
        for station in (1, 2):
            topic = f"linli/alerts/e1/ronghua-1/station-{station}"
            publish(mosquitto.port, topic, device(station).model_dump_json())
        wait_for(lambda: len(get(ports[1], "/alerts") or []) == 3, "the silent devices recorded", timeout=60)
        # Another edge's silent device, told after their group wait: theirs was over before.
        other = device(3, site="gubei-1", edge="e2")
        publish(mosquitto.port, "linli/alerts/e2/gubei-1/station-3", other.model_dump_json())
        wait_for(lambda: "station-3" in told(hook), "the other edge's device told", timeout=60)
        assert told(hook) == {"e1", "station-3"}
        edge_fp = edge_status_alert("e1", "offline", 1)
        assert edge_fp is not None
        shown = {a["device"]: a["inhibited_by"] for a in get(ports[0], "/alerts")}
        inhibitor_fp = edge_fp.fingerprint
        assert shown == {"e1": None, "station-1": inhibitor_fp, "station-2": inhibitor_fp, "station-3": None}
        # The edge is back, its devices still silent: told now.
        publish(mosquitto.port, "linli/edges/e1", "online")
        wait_for(
            lambda: {"station-1", "station-2"} <= told(hook), "the devices that outlived it told", timeout=60
        )
        assert all(get(port, "/failed-deliveries") == [] for port in ports)
    finally:
        hook.close()
        stop_logged(procs, [tmp_path / f"{n}.log" for n in ("n1", "n2")], tail=15)
