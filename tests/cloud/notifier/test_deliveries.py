"""One slow receiver must not stop every delivery (issue 29), on real Mosquitto, HTTP receivers
and an SMTP server: receivers that trickle their answer a byte a second or never answer cost
only their own deliveries, each of which is recorded as failed with its reason; e-mail headers
and robot markdown take whatever an alert's fields hold; private addresses need the config's
consent, also when a name resolves to one only at send time.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.channels import ChannelKind, EmailChannel, HttpChannel
from linli.catalog.errors import ConfigError
from linli.catalog.profile import Severity
from linli.cloud.notifier.channels import DeliveryError, Notice, Sender, body
from linli.cloud.notifier.config import DeliveryConfig, NotifierConfig, SmtpConfig, load_notifier_config
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.notifier.service import Service
from linli.cloud.waste.config import load_waste_config
from linli.demo.servers import LocalServer, free_port
from peers import LATE_S, Inbox, Receiver, SlowReceiver
from support import unique, wait_until
from test_cloud import TOKEN, event, publish

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRICKLING, HANGING = 4, 2


@pytest.fixture
def slow() -> Iterator[list[SlowReceiver]]:
    receivers = [SlowReceiver("trickle") for _ in range(TRICKLING)] + [
        SlowReceiver("hang") for _ in range(HANGING)
    ]
    yield receivers
    for r in receivers:
        r.close()


def alert(**fields: Any) -> AlertMessage:
    base: dict[str, Any] = {
        "rule": "charger.smoke_alarm.above",
        "title": "Smoke in the charging cabinet",
        "severity": Severity.CRITICAL,
        "state": AlertState.FIRING,
        "kind": "charger",
        "site": "gubei-1",
        "device": "station-1",
        "port": None,
        "value": 1,
        "threshold": 0.5,
        "time_ms": 1,
        "since_ms": 1,
        "edge": "e1",
    } | fields
    return AlertMessage(fingerprint=fingerprint(base["rule"], base["site"], base["device"], None), **base)


def test_trickling_and_hanging_receivers_cost_only_their_own_deliveries(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], slow: list[SlowReceiver], tmp_path: Path
) -> None:
    receiver, _, smtp = peers
    bad = {f"slow-{i}": r for i, r in enumerate(slow)}
    subs: list[dict[str, Any]] = [
        {"id": sub, "channels": [{"kind": "webhook", "url": f"{r.url}/slow"}], "group_by": ["fingerprint"]}
        for sub, r in bad.items()
    ]
    # Listed last: it is told of each alert after every slow one is. One message per alert (not
    # one per group): each delivery is counted on its own.
    subs.append(
        {
            "id": "healthy",
            "channels": [{"kind": "webhook", "url": f"{receiver.url}/hook"}],
            "group_by": ["fingerprint"],
        }
    )
    config = NotifierConfig.model_validate(
        {
            "broker": {"port": mosquitto.port, "group": unique("group")},
            "smtp": {"port": smtp},
            "state": str(tmp_path / "notifier.sqlite"),
            "api_port": free_port(),
            "group_wait_s": 0.1,
            "attempts": 2,
            "delivery": {
                "deadline_s": 1,
                "per_destination": 4,
                "pause_after": 3,
                "pause_s": 2,
                "allow_private": True,
            },
            "subscriptions": subs,
        }
    )
    service = Service(config, TOKEN)
    first, second = [f"station-{i}" for i in range(8)], [f"station-{i}" for i in range(8, 12)]
    every = len(first) + len(second)
    base = f"http://127.0.0.1:{config.api_port}"

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 10)
        try:
            for device in first:
                await asyncio.to_thread(
                    publish, mosquitto.port, f"linli/alerts/e/gubei-1/{device}", event(device)
                )
            # The slow receivers hold deliveries now (the 32 sends of the old shared pool, all of them).
            trickled = slow[:TRICKLING]
            await wait_until(lambda: sum(len(r.posts) for r in trickled) >= 16, 20, "the slow ones busy")
            for device in second:
                await asyncio.to_thread(
                    publish, mosquitto.port, f"linli/alerts/e/gubei-1/{device}", event(device)
                )
            await wait_until(lambda: len(receiver.at("/hook")) == every, 30, "every healthy notice")
            async with httpx.AsyncClient(base_url=base, timeout=10) as api:
                paused: list[dict[str, Any]] = []
                while not paused:  # the slow ones get paused: /stats says so while they are
                    paused = (await api.get("/stats", headers=AUTH)).json()["paused"]
                failed = service.store.failures
                await wait_until(
                    lambda: len(failed()) == every * len(bad), 60, "every slow delivery recorded"
                )
                stats = (await api.get("/stats", headers=AUTH)).json()
                return (await api.get("/failed-deliveries", headers=AUTH)).json(), stats, paused
        finally:
            stop.set()
            await task

    failures, stats, paused = asyncio.run(scenario())
    assert sorted(b["alert"]["device"] for b in receiver.at("/hook")) == sorted(first + second)
    assert {f["subscription"] for f in failures} == set(bad)
    for f in failures:
        assert "deadline" in f["error"] or "paused after" in f["error"], f
    assert stats["failed_deliveries"] == {"webhook": every * len(bad)}
    assert {p["destination"] for p in paused} <= {r.url for r in slow}
    # Paused at the first send that ran out of time (not after `pause_after` of them).
    assert all(p["failures"] >= 1 and "deadline" in p["last_error"] for p in paused)


def test_a_webhook_on_a_private_address_needs_the_config_s_consent(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text(
        '[[subscriptions]]\nid = "ops"\n'
        'channels = [{ kind = "webhook", url = "http://10.1.2.3:9000/alerts" }]\n'
    )
    with pytest.raises(ConfigError) as refused:
        load_notifier_config(path)
    message = str(refused.value)
    assert str(path) in message
    assert "subscriptions[0].channels[0].url" in message
    assert "10.1.2.3 is a private address" in message
    assert "allow_private = true" in message
    path.write_text("[delivery]\nallow_private = true\n" + path.read_text())
    assert load_notifier_config(path).delivery.allow_private


def test_the_booking_gateways_on_a_private_address_need_the_config_s_consent(tmp_path: Path) -> None:
    path = tmp_path / "waste.toml"
    path.write_text('gtfs = "gtfs"\n[bookings]\nsms = { url = "http://192.168.5.5/sms" }\n')
    with pytest.raises(ConfigError) as refused:
        load_waste_config(path)
    message = str(refused.value)
    assert str(path) in message
    assert "bookings.sms.url" in message
    assert "192.168.5.5 is a private address" in message
    assert "allow_private = true" in message
    path.write_text(path.read_text().replace("[bookings]", "[delivery]\nallow_private = true\n[bookings]"))
    assert load_waste_config(path).bookings.sms is not None


@pytest.mark.slow
def test_an_answer_late_but_within_the_deadline_is_a_delivery() -> None:
    """`deadline_s` is the one limit on a send (docs/alerts.md): httpx's own 5 s per connect
    and read cut a 15 s deadline short, and a loaded robot service's answer after 5 s was
    recorded as a failed delivery."""
    late = SlowReceiver("late")
    hook = HttpChannel(kind=ChannelKind.WEBHOOK, url=f"{late.url}/hook")

    async def send() -> None:
        sender = Sender(SmtpConfig(), policy=DeliveryConfig(allow_private=True, deadline_s=10 * LATE_S))
        try:
            await sender.send(hook, Notice("firing", alert(), "ops"))
        finally:
            await sender.close()

    try:
        asyncio.run(send())  # raised DeadlineError("ReadTimeout: ") after 5 s
    finally:
        late.close()
    assert late.posts == ["/hook"]


def test_a_name_that_resolves_to_loopback_is_refused_when_it_is_sent_to(
    peers: tuple[Receiver, Inbox, int],
) -> None:
    receiver, _, _ = peers
    port = receiver.url.rsplit(":", 1)[1]
    # A name, not an address: only resolving it at send time shows where it goes.
    hook = HttpChannel(kind=ChannelKind.WEBHOOK, url=f"http://vm:{port}/hook")

    async def send(allow: bool) -> None:
        sender = Sender(SmtpConfig(), policy=DeliveryConfig(allow_private=allow))
        try:
            await sender.send(hook, Notice("firing", alert(), "ops"))
        finally:
            await sender.close()

    with pytest.raises(DeliveryError, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        asyncio.run(send(allow=False))
    assert receiver.at("/hook") == []
    asyncio.run(send(allow=True))
    assert len(receiver.at("/hook")) == 1


# A rule the catalog does not know (a site's own) shows the title its config gave.
OWN_RULE = "charger.door_open.above"
HEADER_BREAKERS = {
    "title": {"rule": OWN_RULE, "title": "Smoke\r\nBcc: everyone@district.example"},
    "site": {"site": "gubei-1\nX-Injected: 1"},
    "device": {"device": "station-1\r\n\r\nbody"},
    "names": {"site_name": "古北\r\nX-Injected: 1", "device_name": "1号桩\n\nbody"},
    "all three": {"rule": OWN_RULE, "title": "a\rb", "site": "c\nd", "device": "e\r\nf"},
}


def test_line_breaks_in_an_alert_s_fields_still_make_one_line_subjects(
    peers: tuple[Receiver, Inbox, int],
) -> None:
    _, inbox, smtp = peers
    mail = EmailChannel(kind=ChannelKind.EMAIL, to=["ops@district.example"])

    async def send_all() -> None:
        sender = Sender(SmtpConfig(port=smtp, sender="linli@district.example"))
        try:
            for fields in HEADER_BREAKERS.values():
                await sender.send(mail, Notice("firing", alert(**fields), "ops"))
        finally:
            await sender.close()

    asyncio.run(send_all())
    assert len(inbox.messages) == len(HEADER_BREAKERS)
    for message in inbox.messages:
        subject = re.sub(r"\r?\n(?=[ \t])", "", str(message["Subject"]))  # unfolded: a long header is folded
        assert "\n" not in subject
        assert "\r" not in subject
        assert message["Bcc"] is None
        assert message["X-Injected"] is None
    assert "Bcc: everyone@district.example" in str(inbox.messages[0]["Subject"])


def test_a_message_that_cannot_be_built_is_recorded_as_failed_not_dropped() -> None:
    recorded: list[tuple[str, str]] = []

    class Broken:
        async def send(self, _channel: object, _message: object) -> None:
            raise ValueError("a header held a line break")

    async def run() -> None:
        deliveries = Deliveries(Broken(), 3, lambda who, _c, _m, error: recorded.append((who, error)))  # type: ignore[arg-type]
        deliveries.start(
            "ops",
            HttpChannel(kind=ChannelKind.WEBHOOK, url="http://hook.invalid/x"),
            Notice("firing", alert(), "ops"),
        )
        await deliveries.drain()

    asyncio.run(run())
    assert recorded == [("ops", "could not be sent: ValueError: a header held a line break")]


@pytest.mark.parametrize("kind", [ChannelKind.WECOM, ChannelKind.DINGTALK])
def test_robot_markdown_shows_an_alert_s_fields_literally(
    kind: Literal[ChannelKind.WECOM, ChannelKind.DINGTALK],
) -> None:
    hostile = alert(
        rule=OWN_RULE,
        title="[pay here](http://evil.example) **urgent**",
        site_name="古北\n@all",
        device="<font color=red>station</font>",
    )
    _, payload = body(
        HttpChannel(kind=kind, url="https://robot.example/send"), Notice("firing", hostile, "ops"), 0
    )
    text = payload["markdown"]["content" if kind is ChannelKind.WECOM else "text"]
    assert "[pay here](" not in text
    assert "\\[pay here\\]\\(http://evil\\.example\\)" in text
    assert "**urgent**" not in text
    assert text.startswith("**")
    assert text.count("**") == 2
    assert "@all" not in text
    assert "<font" not in text
    assert "&lt;font color=red&gt;" in text
