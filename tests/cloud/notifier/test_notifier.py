"""Who hears of an alert and when: dedupe, repeats, quiet hours, escalation, resolution, retries.

A controllable clock and a sender that records (or refuses) each message; the delivery
logic and its formats are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.channels import ChannelKind, HttpChannel
from linli.catalog.profile import Severity
from linli.cloud.notifier import engine as notifier_module
from linli.cloud.notifier.channels import DeliveryError, Notice, body
from linli.cloud.notifier.config import NotifierConfig, QuietHours, Subscription
from linli.cloud.notifier.engine import Notifier
from linli.cloud.notifier.routing import edge_status_alert
from linli.cloud.notifier.store import Store
from support import wait_until

SHANGHAI = ZoneInfo("Asia/Shanghai")
SECRET_VAR = "TEST_ROBOT_SECRET"  # noqa: S105 (the name of a variable)
HOOK = HttpChannel(kind=ChannelKind.WEBHOOK, url="http://hook.invalid/x")


def at(hhmm: str) -> float:
    h, m = map(int, hhmm.split(":"))
    return datetime(2026, 11, 23, h, m, tzinfo=SHANGHAI).timestamp()


def alert(
    state: str = "firing",
    *,
    rule: str = "charger.temperature.above",
    severity: str = "critical",
    site: str = "ronghua-1",
) -> AlertMessage:
    return AlertMessage(
        fingerprint=fingerprint(rule, site, "station-1", "1"),
        rule=rule,
        title="Port over temperature",
        severity=Severity(severity),
        state=AlertState(state),
        kind="charger",
        site=site,
        device="station-1",
        port="1",
        value=93.0,
        threshold=90,
        time_ms=1,
        since_ms=1,
        edge="e1",
    )


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Takes every message; refuses the first `fail` attempts."""

    def __init__(self, fail: int = 0) -> None:
        self.got: list[tuple[str, str, str]] = []
        self.fail = fail
        self.attempts = 0

    async def send(self, channel: HttpChannel, notice: Notice) -> None:
        self.attempts += 1
        if self.attempts <= self.fail:
            raise DeliveryError("HTTP 503: busy")
        self.got.append((notice.subscription, notice.kind, str(channel.kind)))


@pytest.fixture
def store(state: str) -> Iterator[Store]:
    s = Store(state)
    yield s
    s.close()


def run(
    notifier: Notifier, clock: Clock, steps: list[tuple[float, AlertMessage | None]], drain_s: float = 5.0
) -> None:
    """At each (seconds later, event): set the clock, hand over the event, tick, deliver (a
    delivery still under way after `drain_s` is cancelled and recorded as failed)."""

    async def go() -> None:
        for later, event in steps:
            clock.now += later
            if event is not None:
                notifier.handle(event)
            notifier.tick()
            await notifier.drain(drain_s)

    asyncio.run(go())


def make(store: Store, subs: list[Subscription], clock: Clock, sender: Recorder, **config: float) -> Notifier:
    for sub in subs:
        store.put_subscription(sub)
    return Notifier(NotifierConfig(**config), store, sender, clock)  # type: ignore[arg-type]


def test_a_burst_is_one_message_repeats_wait_their_interval_and_resolved_goes_at_once(store: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    n = make(store, [Subscription(id="ops", channels=[HOOK])], clock, sender, group_wait_s=2, repeat_s=600)
    run(n, clock, [(0, alert()), (0.5, alert()), (0.5, alert()), (1.5, None), (1, alert())])
    assert sender.got == [("ops", "firing", "webhook")]  # one message for the burst, after 2 s
    run(n, clock, [(300, None), (301, None)])  # 600 s after the first message
    assert sender.got[1:] == [("ops", "repeat", "webhook")]
    run(n, clock, [(5, alert("resolved"))])  # at once, no group wait
    assert sender.got[2:] == [("ops", "resolved", "webhook")]
    assert n.active() == []


def test_an_alert_opened_a_moment_after_another_is_told_when_its_own_group_wait_ends(store: Store) -> None:
    # An overheating port fires its limit and its interlock a few milliseconds apart. The tick
    # woken for the first comes before the second is due, so the second needs a wake of its own:
    # the periodic tick may come after the port has cooled, and an alert closed before anyone
    # heard of it is told to nobody.
    sender = Recorder()
    store.put_subscription(Subscription(id="ops", channels=[HOOK]))
    n = Notifier(NotifierConfig(group_wait_s=0.2), store, sender, time.time)  # type: ignore[arg-type]

    async def go() -> None:
        n.handle(alert())
        await asyncio.sleep(0.1)  # the second alert's moment later, not a wait for the code
        n.handle(alert(rule="interlock.charger.temperature"))
        # Nothing else ticks here: without its own wake, the second alert is never told.
        await wait_until(lambda: len(sender.got) == 2, 5, "both first messages")
        await n.drain()

    asyncio.run(go())
    assert sender.got == [("ops", "firing", "webhook")] * 2


def test_events_handled_one_after_another_share_the_tick_woken_for_the_first(store: Store) -> None:
    # A burst, or a loop that fell behind: events queued behind each other are handled in one
    # go. One tick tells them all; a tick per event would read the subscriptions, the due
    # alerts and the book again for each, and find nothing left to tell.
    sender = Recorder()
    store.put_subscription(Subscription(id="ops", channels=[HOOK], group_by=["fingerprint"]))
    n = Notifier(NotifierConfig(group_wait_s=0), store, sender, time.time)  # type: ignore[arg-type]
    sites = [f"site-{i}" for i in range(5)]

    async def go() -> None:
        for site in sites:
            n.handle(alert(site=site))
        await wait_until(lambda: len(sender.got) == len(sites), 10, "every first message")
        await n.drain()
        # An event handled after that tick ran wakes one of its own.
        n.handle(alert(site="site-late"))
        await wait_until(lambda: len(sender.got) == len(sites) + 1, 10, "the late one's message")
        await n.drain()

    asyncio.run(go())
    assert sender.got == [("ops", "firing", "webhook")] * (len(sites) + 1)
    assert n.ticks == 2


def test_filters_by_site_kind_rule_and_severity(store: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    subs = [
        Subscription(id="ronghua", channels=[HOOK], sites=["ronghua-1"]),
        Subscription(id="fire-officer", channels=[HOOK], kinds=["fire_pressure", "fire_point"]),
        Subscription(id="critical-only", channels=[HOOK], min_severity=Severity.CRITICAL),
        Subscription(id="smoke", channels=[HOOK], rules=["charger.smoke_alarm.above"]),
    ]
    n = make(store, subs, clock, sender, group_wait_s=0)
    run(n, clock, [(0, alert(severity="warning")), (0, alert(site="gubei-1"))])
    assert sorted(s for s, _, _ in sender.got) == [
        "critical-only",
        "ronghua",
    ]  # warning at ronghua, critical at gubei


def test_quiet_hours_hold_a_warning_until_morning_and_let_a_critical_through(store: Store) -> None:
    clock, sender = Clock(at("23:00")), Recorder()
    night = QuietHours(start="22:00", end="07:00")
    n = make(store, [Subscription(id="manager", channels=[HOOK], quiet=night)], clock, sender, group_wait_s=0)
    run(n, clock, [(0, alert(severity="warning", rule="charger.mains_fault.above"))])
    assert sender.got == []
    clock.now = at("06:59") + 86400  # the next morning, still quiet
    run(n, clock, [(0, None)])
    assert sender.got == []
    run(n, clock, [(120, None)])  # 07:01: still firing, so now they hear of it
    assert sender.got == [("manager", "firing", "webhook")]
    clock.now = at("23:30") + 86400
    run(n, clock, [(0, alert(rule="charger.smoke_alarm.above"))])  # critical at night: passes
    assert sender.got[1:] == [("manager", "firing", "webhook")]


def test_not_acknowledged_in_time_it_escalates_once_and_an_ack_stops_repeats(store: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    subs = [
        Subscription(id="officer", channels=[HOOK], escalate_after_s=300, escalate_to=["chief"]),
        Subscription(id="chief", channels=[HOOK], sites=["nowhere"]),  # only hears escalations
    ]
    n = make(store, subs, clock, sender, group_wait_s=0, repeat_s=200)
    run(n, clock, [(0, alert()), (299, None)])
    assert sender.got == [("officer", "firing", "webhook"), ("officer", "repeat", "webhook")]
    run(n, clock, [(1, None), (100, None)])
    assert sender.got[2:] == [("chief", "escalation", "webhook")]  # once
    second = alert(rule="charger.smoke_alarm.above")
    run(n, clock, [(0, second)])
    assert n.ack(second.fingerprint, "wang") is not None
    got = len(sender.got)
    run(n, clock, [(1000, None)])  # acknowledged: neither repeated nor escalated
    # The first alert (not acknowledged) repeats to the officer; the second is silent.
    assert {(s, k) for s, k, _ in sender.got[got:]} == {("officer", "repeat")}
    [acked] = [a for a in n.active() if a.alert.fingerprint == second.fingerprint]
    assert acked.acked_by == "wang"
    assert acked.told == {"officer": clock.now - 1000}


def test_a_delivery_that_keeps_failing_is_retried_then_recorded(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr("linli.cloud.notifier.delivery.asyncio.sleep", instant)
    clock = Clock(at("10:00"))
    flaky, broken = Recorder(fail=2), Recorder(fail=99)
    n = make(store, [Subscription(id="ops", channels=[HOOK])], clock, flaky, group_wait_s=0, attempts=3)
    run(n, clock, [(0, alert())])
    assert (flaky.attempts, flaky.got) == (3, [("ops", "firing", "webhook")])
    assert store.failures() == []
    n.deliveries.sender = broken  # type: ignore[assignment]
    run(n, clock, [(0, alert("resolved"))])
    assert broken.attempts == 3
    [failure] = store.failures()
    assert (failure["subscription"], failure["notice"], failure["error"]) == (
        "ops",
        "resolved",
        "HTTP 503: busy",
    )


def test_an_edge_s_last_will_is_an_alert_like_any_other(store: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    n = make(store, [Subscription(id="ops", channels=[HOOK])], clock, sender, group_wait_s=0)
    offline, online = edge_status_alert("edge-7", "offline", 1), edge_status_alert("edge-7", "online", 2)
    assert offline is not None
    assert online is not None
    assert edge_status_alert("edge-7", "rebooting", 3) is None
    run(n, clock, [(0, offline), (1, online)])
    assert sender.got == [("ops", "firing", "webhook"), ("ops", "resolved", "webhook")]


def test_an_edge_stopped_on_purpose_pages_nobody(store: Store) -> None:
    clock, sender = Clock(at("03:00")), Recorder()
    n = make(store, [Subscription(id="fire-officer", channels=[HOOK])], clock, sender, group_wait_s=0)
    stopped = edge_status_alert("edge-7", "stopped", 1)
    assert stopped is not None
    assert stopped.state is AlertState.RESOLVED
    run(n, clock, [(0, stopped)])
    assert sender.got == []
    assert n.active() == []


def test_robot_formats_and_signatures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VAR, "SEC")
    notice = Notice("firing", alert(), "ops")
    url, wecom = body(
        HttpChannel(kind=ChannelKind.WECOM, url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"),
        notice,
        1700000000.0,
    )
    assert wecom["msgtype"] == "markdown"
    assert "充电端口温度过高" in wecom["markdown"]["content"]
    url, ding = body(
        HttpChannel(
            kind=ChannelKind.DINGTALK,
            url="https://oapi.dingtalk.com/robot/send?access_token=T",
            secret_env=SECRET_VAR,
        ),
        notice,
        1700000000.5,
    )
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    expected = base64.b64encode(hmac.new(b"SEC", b"1700000000500\nSEC", hashlib.sha256).digest()).decode()
    assert (query["timestamp"], query["sign"]) == (["1700000000500"], [expected])
    assert ding["markdown"]["title"].startswith("【告警】【紧急】")
    _, feishu = body(
        HttpChannel(
            kind=ChannelKind.FEISHU,
            url="https://open.feishu.cn/open-apis/bot/v2/hook/x",
            secret_env=SECRET_VAR,
        ),
        notice,
        1700000000.5,
    )
    assert feishu["msg_type"] == "text"
    assert feishu["timestamp"] == "1700000000"
    assert (
        feishu["sign"]
        == base64.b64encode(hmac.new(b"1700000000\nSEC", b"", hashlib.sha256).digest()).decode()
    )
    _, hook = body(HOOK, notice, 0)
    assert hook["alert"]["fingerprint"] == notice.alert.fingerprint


def test_a_tick_reads_only_the_alerts_due_and_each_says_when_it_is_next_due(store: Store) -> None:
    """At city scale tens of thousands of alerts are open: a tick must not read them all."""
    clock, sender = Clock(at("10:00")), Recorder()
    escalating = Subscription(id="ops", channels=[HOOK], escalate_after_s=900, escalate_to=["chief"])
    chief = Subscription(id="chief", channels=[HOOK], sites=["nowhere"])
    n = make(store, [escalating, chief], clock, sender, group_wait_s=2, repeat_s=3600)
    first = clock.now
    run(n, clock, [(0, alert())])
    assert store.book(due_by=first + 1.9) == []  # the group wait: due at first + 2 s
    assert len(store.book(due_by=first + 2)) == 1
    run(n, clock, [(2, None)])
    assert sender.got == [("ops", "firing", "webhook")]
    # Next due: the escalation (15 min), before the repeat (1 h); nothing to read until then.
    assert store.book(due_by=first + 899) == []
    assert len(store.book(due_by=first + 900)) == 1
    run(n, clock, [(898, None)])
    assert sender.got[1:] == [("chief", "escalation", "webhook")]
    assert store.book(due_by=first + 3599) == []  # then the repeat
    n.ack(alert().fingerprint, "duty")
    run(n, clock, [(2702, None)])  # the repeat was due 3602 s after the first
    assert sender.got[2:] == []  # acknowledged: no repeat
    assert store.book(due_by=clock.now + 86_400) == []  # and nothing more due
    # A subscription changed: every alert is looked at again.
    store.put_subscription(Subscription(id="night", channels=[HOOK]))
    run(n, clock, [(1, None)])
    assert sender.got[2:] == [("night", "firing", "webhook")]


def test_a_storm_is_told_a_batch_at_a_time(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands due at once (a storm, a restart) must not hold the loop: a batch per tick."""
    monkeypatch.setattr(notifier_module, "TICK_BATCH", 3)
    clock, sender = Clock(at("10:00")), Recorder()
    n = make(store, [Subscription(id="ops", channels=[HOOK])], clock, sender, group_wait_s=0)
    storm = [alert(site=f"site-{i}") for i in range(5)]

    async def go() -> int:
        for event in storm:
            n.handle(event)
        n.tick()
        in_one_go = len(n.sent)
        await asyncio.sleep(0)  # one turn of the loop: the next batch was queued right behind
        await n.drain()
        return in_one_go

    assert asyncio.run(go()) == 3
    assert [kind for _, kind, _ in sender.got] == ["firing"] * 5


def test_a_notice_claimed_by_a_notifier_that_died_is_sent_by_another(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first claims "firing" and dies before sending it; the second sends it once the
    first's lease runs out, and only then."""
    clock, lost, sender = Clock(at("10:00")), Recorder(), Recorder()
    subs = [Subscription(id="ops", channels=[HOOK])]
    first = make(store, subs, clock, lost, group_wait_s=0)
    monkeypatch.setattr(first, "_send", lambda *_: None)  # the host died between claim and send
    run(first, clock, [(0, alert())])
    second = Notifier(NotifierConfig(group_wait_s=0), store, sender, clock)  # type: ignore[arg-type]

    def orphans_after(seconds: float) -> int:
        async def go() -> int:
            clock.now += seconds
            sent = second.send_orphans()
            await second.drain()
            return sent

        return asyncio.run(go())

    assert orphans_after(NotifierConfig().lease_s - 1) == 0  # the first might still be sending
    assert orphans_after(2) == 1
    assert sender.got == [("ops", "firing", "webhook")]
    assert orphans_after(NotifierConfig().lease_s + 1) == 0  # sent, so out of the outbox
    assert lost.got == []


def test_each_subscription_hears_in_its_own_language_else_in_the_notifier_s(store: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    subs = [
        Subscription(id="ops", channels=[HOOK]),
        Subscription(id="visitors", channels=[HOOK], locale="en"),
        Subscription(id="office", channels=[HOOK], locale="zh-CN"),
    ]
    n = make(store, subs, clock, sender, group_wait_s=0)
    run(n, clock, [(0, alert())])
    subjects = {sub: notice.subject for sub, _, notice in n.sent}
    assert subjects["ops"].startswith("【告警】【紧急】")
    assert subjects["office"] == subjects["ops"]
    assert subjects["visitors"].startswith("[FIRING] [critical] Port over temperature at ")


def test_the_district_wide_locale_serves_subscriptions_that_name_none(store: Store) -> None:
    clock, sender = Clock(at("10:00")), Recorder()
    subs = [
        Subscription(id="ops", channels=[HOOK]),
        Subscription(id="office", channels=[HOOK], locale="zh-CN"),
    ]
    n = make(store, subs, clock, sender, group_wait_s=0, locale="en")  # type: ignore[arg-type]
    run(n, clock, [(0, alert())])
    locales = {sub: notice.locale for sub, _, notice in n.sent}
    assert locales == {"ops": "en", "office": "zh-CN"}
