"""Alert storms (issue 35), what pacing alone leaves: a grouped message cut to a robot's body
limit, several robots of one group chat used in turn, and a life-safety alert never stuck
behind a throttled or paused robot (it goes to the subscription's `fallback`).

The notifier's real state (SQLite and PostgreSQL), its real sender and strict loopback robots
(`GroupRobot`); the last test runs `linli cloud run` with its alerts through Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from alertflow import GroupRobot, Hook
from linli.catalog.alerts import AlertMessage
from linli.catalog.channels import ChannelKind, HttpChannel
from linli.cloud.notifier import channels
from linli.cloud.notifier.channels import Notice, Sender
from linli.cloud.notifier.config import DeliveryConfig, NotifierConfig, PaceLimit, SmtpConfig, Subscription
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer, free_port
from peers import SlowReceiver
from support import stop_logged, wait_for, wait_until
from test_cloud import publish
from test_grouping import offline
from test_notifier import Clock, at, run
from test_notifier_db_faults import get, notifier

# A device's name as long as the district's are: 300 of them make a body of far over 20,000 bytes.
LONG = "号楼东侧地下车库B区电动自行车集中充电桩"
SMOKE = "charger.smoke_alarm.above"


@pytest.fixture
def book(state: str) -> Iterator[Store]:
    with contextlib.closing(Store(state)) as store:
        yield store


def real(
    book: Store, subs: list[Subscription], clock: Clock, delivery: DeliveryConfig, **config: Any
) -> Notifier:
    """A notifier on `book` that delivers through the real sender."""
    for sub in subs:
        book.put_subscription(sub)
    return Notifier(
        NotifierConfig(delivery=delivery, **config), book, Sender(SmtpConfig(), policy=delivery), clock
    )


def robot(kind: Literal[ChannelKind.WECOM, ChannelKind.DINGTALK], url: str, *more: str) -> HttpChannel:
    return HttpChannel(kind=kind, url=url, robots=list(more)) if more else HttpChannel(kind=kind, url=url)


def smoke(site: str = "ronghua-1") -> AlertMessage:
    return offline(7, rule=SMOKE, site=site).model_copy(update={"device_name": "7号车棚烟感"})


def test_a_300_alert_group_is_cut_to_dingtalk_s_body_limit_and_still_names_the_count(book: Store) -> None:
    ding = GroupRobot("dingtalk")
    clock = Clock(at("10:00"))
    sub = Subscription(id="ops", channels=[robot(ChannelKind.DINGTALK, ding.url)])
    n = real(
        book, [sub], clock, DeliveryConfig(allow_private=True), group_wait_s=5, group_list=200, attempts=1
    )
    alerts = [offline(i).model_copy(update={"device_name": f"{i}{LONG}"}) for i in range(300)]
    try:
        # The send's own deadline (15 s) is its limit; the drain's is only a guard past it (its
        # 5 s default cancelled a send a loaded machine was still making).
        run(n, clock, [(0, a) for a in alerts] + [(6, None)], drain_s=60)
    finally:
        ding.close()
    assert ding.refused == []
    assert len(ding.taken) == 1, n.store.failures()  # what happened to the message if not taken
    text, size = ding.taken[0]
    assert size <= 20_000
    lines = text.splitlines()
    assert lines[0].endswith("共 300 条**")  # how many it covers
    listed = sum(LONG in line for line in lines)
    assert 50 < listed < 200  # as many as fit, fewer than the 200 asked for
    assert f"另有 {300 - listed} 条未列出" in text  # the rest counted, with the link to them
    assert "/alerts?site=ronghua\\-1&amp;rule=charger\\.offline" in lines[-1]


def test_the_robots_of_one_chat_are_used_in_turn_each_under_its_limit(book: Store) -> None:
    robots = [GroupRobot("wecom", per=2), GroupRobot("wecom", per=2)]
    clock = Clock(at("10:00"))
    sub = Subscription(id="ops", channels=[robot(ChannelKind.WECOM, robots[0].url, robots[1].url)])
    delivery = DeliveryConfig(allow_private=True, pace={ChannelKind.WECOM: PaceLimit(per=2, window_s=600)})
    n = real(book, [sub], clock, delivery, group_wait_s=0, attempts=1)
    try:
        # Four sites' alerts, four messages: twice one robot's limit, within its minute.
        run(n, clock, [(1, offline(1, site=f"site-{i}")) for i in range(4)])
    finally:
        for r in robots:
            r.close()
    assert [len(r.taken) for r in robots] == [2, 2]
    assert [r.refused for r in robots] == [[], []]
    assert n.store.failures() == []


@pytest.mark.slow
def test_a_smoke_alarm_goes_to_the_fallback_while_the_robot_is_throttled(
    book: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DingTalk's ten minutes of refusal, made the test's own time.
    monkeypatch.setitem(channels.THROTTLED, (ChannelKind.DINGTALK, 130101), 5.0)
    ding, sms = GroupRobot("dingtalk", throttle=1), Hook("127.0.0.1")
    clock = Clock(at("10:00"))
    fallback = HttpChannel(kind=ChannelKind.WEBHOOK, url=sms.url)
    sub = Subscription(id="ops", channels=[robot(ChannelKind.DINGTALK, ding.url)], fallback=[fallback])
    n = real(book, [sub], clock, DeliveryConfig(allow_private=True), group_wait_s=0)

    async def scenario() -> None:
        n.handle(offline(1))  # a storm's message: the robot answers it is throttling
        n.tick()
        pace = n.deliveries.paces.of(sub.channels[0])
        assert pace is not None
        await wait_until(lambda: pace.throttled == 1, 15, "the robot's throttling answer")
        n.handle(smoke())
        n.tick()
        await wait_until(lambda: len(sms.got) == 1, 15, "the smoke alarm at the fallback")
        await n.drain(30)  # the first message waits out the robot's rest, then goes

    try:
        asyncio.run(scenario())
    finally:
        ding.close()
        sms.close()
    assert [body["alert"]["rule"] for body, _ in sms.got] == [SMOKE]
    assert ding.refused == [130101]
    assert len(ding.taken) == 1  # the storm's, late
    assert "7号车棚烟感" not in ding.taken[0][0]
    assert n.store.failures() == []


@pytest.mark.slow
def test_a_smoke_alarm_goes_to_the_fallback_while_the_robot_is_paused_and_others_wait(book: Store) -> None:
    dead = f"http://127.0.0.1:{free_port()}/robot/send?access_token=t"  # nothing listens there
    sms = Hook("127.0.0.1")
    clock = Clock(at("10:00"))
    fallback = HttpChannel(kind=ChannelKind.WEBHOOK, url=sms.url)
    sub = Subscription(id="ops", channels=[robot(ChannelKind.DINGTALK, dead)], fallback=[fallback])
    delivery = DeliveryConfig(allow_private=True, pause_after=1, pause_s=600)
    n = real(book, [sub], clock, delivery, group_wait_s=0, attempts=1)
    try:
        # The robot's host fails once: paused. A warning is not a life-safety alert: it waits.
        run(n, clock, [(0, offline(1)), (1, smoke()), (1, offline(2, site="gubei-1"))])
    finally:
        sms.close()
    assert [body["alert"]["rule"] for body, _ in sms.got] == [SMOKE]
    # Both warnings recorded as failed (the second given up when the notifier stopped): not lost.
    failed = [f["fingerprint"] for f in n.store.failures()]
    assert failed == [offline(1).fingerprint, offline(2, site="gubei-1").fingerprint]


@pytest.mark.slow
def test_a_smoke_alarm_reaches_hanging_and_trickling_subscribers_while_their_storm_messages_hang(
    book: Store,
) -> None:
    # Each bad endpoint has one connection, taken by a storm message that never gets its whole
    # answer; one failure pauses it for ten minutes. A life-safety alert waits for neither.
    hanging, trickling = [SlowReceiver("hang") for _ in range(3)], [SlowReceiver("trickle") for _ in range(2)]
    bad = hanging + trickling
    clock = Clock(at("10:00"))
    subs = [
        Subscription(id=f"bad-{i}", channels=[HttpChannel(kind=ChannelKind.WEBHOOK, url=f"{r.url}/slow")])
        for i, r in enumerate(bad)
    ]
    delivery = DeliveryConfig(
        allow_private=True, per_destination=1, pause_after=1, pause_s=600, deadline_s=120
    )
    n = real(book, subs, clock, delivery, group_wait_s=0, attempts=1)

    async def scenario() -> tuple[list[str], int]:
        n.handle(offline(1))
        n.tick()
        await wait_until(lambda: all(len(r.posts) == 1 for r in bad), 30, "the storm's message at each")
        n.handle(smoke())
        n.tick()
        await wait_until(lambda: all(len(r.posts) == 2 for r in bad), 30, "the smoke alarm at each")
        # The trickling endpoints' storm messages are still under way (their deadline is 120 s).
        failed, under_way = [f["subscription"] for f in n.store.failures()], n.delivering
        await n.drain(0)  # the rest given up: recorded as failed
        return failed, under_way

    try:
        failed, under_way = asyncio.run(scenario())
    finally:
        for r in bad:
            r.close()
    trickled = {f"bad-{i}" for i in range(len(hanging), len(bad))}
    assert trickled.isdisjoint(failed)  # the smoke alarm overtook them: they had not ended yet
    assert under_way >= len(trickling)


@pytest.mark.slow
def test_a_hanging_endpoint_is_paused_at_its_first_timeout_not_sent_each_message_again(book: Store) -> None:
    # Three groups' messages at once to an endpoint that reads each and never answers: after the
    # first timeout, nothing more goes until the pause ends (before, each message was sent again
    # until five had failed).
    hang = SlowReceiver("hang")
    clock = Clock(at("10:00"))
    hook = HttpChannel(kind=ChannelKind.WEBHOOK, url=f"{hang.url}/slow")
    sub = Subscription(id="bad", channels=[hook])
    n = real(
        book, [sub], clock, DeliveryConfig(allow_private=True, deadline_s=2, pause_s=600), group_wait_s=0
    )

    async def scenario() -> int:
        for site in ("site-1", "site-2", "site-3"):
            n.handle(offline(1, site=site))
        n.tick()
        await wait_until(lambda: len(hang.posts) == 3, 30, "the three messages read")
        await wait_until(lambda: bool(n.deliveries.destinations.paused()), 60, "the endpoint paused")
        sent = len(hang.posts)  # none sent again: before, two were by the time it paused
        await n.drain(0)
        return sent

    try:
        assert asyncio.run(scenario()) == 3
    finally:
        hang.close()
    assert len(n.store.failures()) == 3  # not lost: recorded for an operator


def test_a_smoke_alarm_due_with_a_storm_s_alerts_is_sent_first(book: Store) -> None:
    sink = Hook("127.0.0.1")
    clock = Clock(at("10:00"))
    sub = Subscription(id="ops", channels=[HttpChannel(kind=ChannelKind.WEBHOOK, url=sink.url)])
    n = real(book, [sub], clock, DeliveryConfig(allow_private=True), group_wait_s=5)
    storm = [(0.0, offline(i, site=f"site-{i}")) for i in range(30)]
    try:
        # The storm's alerts wait their group; the smoke alarm comes as their wait ends.
        run(n, clock, [*storm, (5, smoke())])
    finally:
        sink.close()
    assert len(n.sent) == 31
    assert n.sent[0][2].alert.rule == SMOKE


def test_an_orphaned_smoke_alarm_goes_to_the_fallback_when_the_robot_keeps_failing(book: Store) -> None:
    dead = f"http://127.0.0.1:{free_port()}/robot/send?access_token=t"  # nothing listens there
    sms = Hook("127.0.0.1")
    clock = Clock(at("10:00"))
    primary = robot(ChannelKind.DINGTALK, dead)
    fallback = HttpChannel(kind=ChannelKind.WEBHOOK, url=sms.url)
    sub = Subscription(id="ops", channels=[primary], fallback=[fallback])
    n = real(book, [sub], clock, DeliveryConfig(allow_private=True), group_wait_s=0, attempts=3)
    # A notifier claimed the smoke alarm and died before sending it: its notice waits in the
    # outbox, its lease over, for another notifier to send.
    notice = json.dumps(Notice("firing", smoke(), "ops").to_json())
    book.hold("ops", primary.model_dump_json(), notice, clock.now - 1)

    async def resend() -> None:
        assert n.send_orphans() == 1
        await n.drain(30)

    with contextlib.closing(sms):
        asyncio.run(resend())
    assert [body["alert"]["rule"] for body, _ in sms.got] == [SMOKE]
    assert n.store.failures() == []


def test_through_mosquitto_a_smoke_alarm_reaches_the_fallback_while_the_robot_rests(
    tmp_path: Path, mosquitto: LocalServer
) -> None:
    ding, sms = GroupRobot("dingtalk", throttle=1), Hook("127.0.0.1")
    subscriptions = f"""
[[subscriptions]]
id = "ops"
channels = [{{ kind = "dingtalk", url = "{ding.url}" }}]
fallback = [{{ kind = "webhook", url = "HOOK/sms" }}]
"""
    try:
        with one_notifier(tmp_path, mosquitto, sms, subscriptions) as port:
            publish(mosquitto.port, "linli/alerts/e1/ronghua-1/station-1", offline(1).model_dump_json())
            # DingTalk's answer pauses the robot for its documented ten minutes.
            wait_for(lambda: ding.refused == [130101], "the robot's throttling answer", timeout=60)
            publish(mosquitto.port, "linli/alerts/e1/ronghua-1/station-7", smoke().model_dump_json())
            wait_for(lambda: len(sms.got) == 1, "the smoke alarm at the fallback", timeout=60)
            assert sms.got[0][0]["alert"]["rule"] == SMOKE
            assert sms.paths == ["/sms"]
            assert ding.taken == []  # resting: the first message still waits its turn
            assert len(get(port, "/alerts")) == 2
    finally:
        ding.close()
        sms.close()


@contextlib.contextmanager
def one_notifier(tmp: Path, mosquitto: LocalServer, hook: Hook, subscriptions: str) -> Iterator[int]:
    """`linli cloud run` on Mosquitto and an SQLite state, `HOOK` in `subscriptions` the hook's
    base URL; its API's port. Stopped (its log's end printed) on exit."""
    proc, port = notifier(
        tmp, "n1", broker=mosquitto.port, state=str(tmp / "n1.sqlite"), hook=hook.base,
        group=f"one-{tmp.name}", subscriptions=subscriptions,
    )  # fmt: skip
    try:
        yield port
    finally:
        stop_logged([proc], [tmp / "n1.log"], tail=15)
