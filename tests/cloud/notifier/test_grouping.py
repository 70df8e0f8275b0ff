"""Grouping (issue 35): one message per subscription and group of alerts (by default the site
and the rule), its changes after the group interval, the all-clear at once, and a life-safety
alert never waiting for its group.

The first tests use a controllable clock and a sender that records each message; the last runs
an edge's alerts through Mosquitto to two `linli cloud run` replicas on one PostgreSQL and a
real HTTP receiver.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from alertflow import Edge, Hook
from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.profile import Severity
from linli.cloud.notifier.channels import GroupNotice, Notice
from linli.cloud.notifier.config import Subscription
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer, postgresql_url
from support import create_database, stop_logged, unique, wait_for
from test_notifier import HOOK, Clock, Recorder, at, make, run
from test_notifier_db_faults import get, notifier


@pytest.fixture
def book(state: str) -> Iterator[Store]:
    """The notifier's state, fresh: on SQLite and on PostgreSQL."""
    with contextlib.closing(Store(state)) as store:
        yield store


def offline(
    device: int,
    state: str = "firing",
    *,
    rule: str = "charger.offline",
    site: str = "ronghua-1",
    edge: str = "e1",
) -> AlertMessage:
    return AlertMessage(
        fingerprint=fingerprint(rule, site, f"station-{device}", None),
        rule=rule,
        title="Charger offline",
        severity=Severity.CRITICAL,
        state=AlertState(state),
        kind="charger",
        site=site,
        site_name="荣华居民区",
        device=f"station-{device}",
        device_name=f"{device}号车棚充电桩",
        port=None,
        value=None,
        threshold=0,
        time_ms=1,
        since_ms=1,
        edge=edge,
    )


def standings(notice: Notice | GroupNotice) -> list[tuple[str, str]]:
    """(how it stands, device) of each alert a message covers."""
    if isinstance(notice, Notice):
        return [({"firing": "new", "repeat": "firing"}.get(notice.kind, notice.kind), notice.alert.device)]
    return [(standing, a.device) for standing, a in notice.listed]


def test_a_group_is_one_message_its_changes_wait_the_interval_and_the_all_clear_goes_at_once(
    book: Store,
) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    n = make(
        book, [Subscription(id="ops", channels=[HOOK])], clock, sender,
        group_wait_s=2, group_interval_s=60, repeat_s=3600, group_list=2,
    )  # fmt: skip
    # Three chargers of one site go offline in a second: one message after the group wait.
    run(n, clock, [(0, offline(1)), (0.5, offline(2)), (0.5, offline(3)), (1, None)])
    assert len(n.sent) == 1
    first = n.sent[0][2]
    assert isinstance(first, GroupNotice)
    assert first.kind == "firing"
    assert standings(first) == [("new", "station-1"), ("new", "station-2"), ("new", "station-3")]
    lines = first.text().splitlines()
    assert lines[0] == "【告警】【紧急】荣华居民区：Charger offline，共 3 条"
    assert (
        "另有 1 条未列出，完整列表：http://127.0.0.1:8080/alerts?site=ronghua-1&rule=charger.offline" in lines
    )
    # A fourth joins 8 s later: told with the group's next message, 60 s after the first.
    run(n, clock, [(8, offline(4)), (2, None), (49, None)])
    assert len(n.sent) == 1
    run(n, clock, [(1, None)])
    assert len(n.sent) == 2
    assert n.sent[1][2].kind == "firing"
    assert standings(n.sent[1][2]) == [
        ("new", "station-4"), ("firing", "station-1"), ("firing", "station-2"), ("firing", "station-3"),
    ]  # fmt: skip
    # One resolves: kept for the group's next message, three still firing.
    run(n, clock, [(10, offline(1, "resolved"))])
    assert len(n.sent) == 2
    # The rest resolve: the last one is the all-clear, told at once with every resolution.
    run(n, clock, [(5, offline(2, "resolved")), (1, offline(3, "resolved")), (1, offline(4, "resolved"))])
    assert len(n.sent) == 3
    assert n.sent[2][2].kind == "resolved"
    assert sorted(standings(n.sent[2][2])) == [("resolved", f"station-{i}") for i in range(1, 5)]
    run(n, clock, [(120, None)])
    assert len(n.sent) == 3  # nothing told twice
    assert sender.got == [("ops", kind, "webhook") for kind in ("firing", "firing", "resolved")]


def test_a_life_safety_alarm_waits_for_neither_the_group_wait_nor_the_interval(book: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    n = make(
        book, [Subscription(id="ops", channels=[HOOK])], clock, sender,
        group_wait_s=30, group_interval_s=300,
    )  # fmt: skip
    smoke = "charger.smoke_alarm.above"
    run(n, clock, [(0, offline(1)), (0, offline(1, rule=smoke))])
    assert [(s, notice.alert.rule) for s, _, notice in n.sent] == [
        ("ops", smoke)
    ]  # at once; the offline waits
    # A second cabinet's smoke at the same site, 5 s later: its group was just told, it goes anyway.
    run(n, clock, [(5, offline(2, rule=smoke))])
    assert len(n.sent) == 2
    assert standings(n.sent[1][2]) == [("new", "station-2"), ("firing", "station-1")]
    run(n, clock, [(25, None)])  # the group wait of the offline charger is over
    assert [notice.alert.rule for _, _, notice in n.sent[2:]] == ["charger.offline"]


DEVICES = 12
RESEND_S = 2.0  # the edge announces its alerts again this often
SITE = "grouping"


SETTINGS = "group_wait_s = 3\ngroup_interval_s = 600\ngroup_list = 5\nrepeat_s = 3600"
OPS = """
[[subscriptions]]
id = "ops"
channels = [{ kind = "webhook", url = "HOOK/ops" }]
"""


def replicas(
    tmp: Path,
    mosquitto: LocalServer,
    postgresql: LocalServer,
    hook: Hook,
    *,
    settings: str,
    procs: list[Popen[bytes]],
) -> list[int]:
    """Two `linli cloud run` replicas of one group on a fresh PostgreSQL database, telling OPS at
    `hook`; each process goes in `procs` as it starts (for the caller to stop); their API ports."""
    name = unique("replicas").replace("-", "_")
    create_database(postgresql_url(postgresql), name)
    state = postgresql_url(postgresql, name).replace("+psycopg", "")
    group = unique("replicas")
    ports = []
    for n in ("n1", "n2"):
        proc, port = notifier(
            tmp, n, broker=mosquitto.port, state=state, hook=hook.base, group=group,
            settings=settings, subscriptions=OPS,
        )  # fmt: skip
        procs.append(proc)
        ports.append(port)
    return ports


def test_two_replicas_tell_a_site_s_alerts_once_in_one_message_and_the_all_clear_in_one(
    tmp_path: Path, mosquitto: LocalServer, postgresql: LocalServer
) -> None:
    hook = Hook("127.0.0.1")
    procs: list[Popen[bytes]] = []
    edge: Edge | None = None
    try:
        ports = replicas(tmp_path, mosquitto, postgresql, hook, settings=SETTINGS, procs=procs)
        edge = Edge(mosquitto.port, devices=DEVICES, resend_s=RESEND_S, site=SITE)
        for device in range(DEVICES):
            edge.battery(device, 10.0)
        wait_for(lambda: len(hook.got) >= 1, "the group's first message", timeout=60)
        first: dict[str, Any] = hook.got[0][0]
        assert (first["notice"], first["count"]) == ("firing", DEVICES)
        assert {a["standing"] for a in first["alerts"]} == {"new"}
        assert len({a["fingerprint"] for a in first["alerts"]}) == DEVICES
        assert first["subject"].endswith(f"共 {DEVICES} 条")
        assert f"另有 {DEVICES - 5} 条未列出" in first["text"]
        # Grouping hides nothing from the record: the link lists every alert, on either replica.
        link = urllib.parse.urlsplit(first["link"])  # the replica that told it
        path = f"{link.path}?{link.query}"
        assert path == f"/alerts?site={SITE}&rule=rescue_point.aed_battery.below"
        assert len(get(ports[1], path)) == DEVICES
        for device in range(DEVICES):
            edge.battery(device, 90.0)
        # The last resolution empties the group: the all-clear at once, every resolution in it.
        wait_for(lambda: len(hook.got) >= 2, "the all-clear", timeout=60)
        last = hook.got[1][0]
        assert (last["notice"], last["count"]) == ("resolved", DEVICES)
        assert {a["standing"] for a in last["alerts"]} == {"resolved"}
        # A round of the edge's announcements (each resolution again) reaches the replicas and
        # tells nobody anything.
        before = taken(ports)
        wait_for(lambda: taken(ports) >= before + DEVICES, "a round of announcements taken", timeout=60)
        assert len(hook.got) == 2
        assert all(get(port, "/failed-deliveries") == [] for port in ports)
    finally:
        if edge is not None:
            edge.close()
        hook.close()
        stop_logged(procs, [tmp_path / f"{n}.log" for n in ("n1", "n2")], tail=15)


def taken(ports: list[int]) -> int:
    """Alert events the replicas have taken, together."""
    return sum(get(port, "/health")["events"] for port in ports)
