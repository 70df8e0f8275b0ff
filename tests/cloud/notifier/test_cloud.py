"""The notifier against real peers: Mosquitto, an HTTP receiver, an SMTP server, and the edge itself.

A simulated charger port overheats; the edge stops it and alerts; the notifier delivers
each step to a webhook, a WeCom-style robot and an email inbox; the port cools and the
resolved messages follow. Then the API, and two notifiers sharing one subscription.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.channels import ChannelKind, EmailChannel, HttpChannel
from linli.catalog.profile import Severity
from linli.cloud.notifier.config import NotifierConfig, Subscription, load_notifier_config
from linli.cloud.notifier.service import Service
from linli.cloud.notifier.store import Store
from linli.demo.servers import LocalServer, free_port, postgresql_url, start_postgresql
from linli.edge.agent import Agent
from peers import Inbox, Receiver
from support import create_database, start_sim, stop_process, unique, wait_until
from test_interlocks import config as edge_config

TOKEN = "api-s3cret"  # noqa: S105 (the test's own)


def notifier_config(state: str, broker: int, smtp: int, hooks: str, group: str) -> NotifierConfig:
    return NotifierConfig.model_validate(
        {
            "broker": {"port": broker, "group": group},
            "smtp": {"port": smtp, "sender": "linli@district.example"},
            "state": state,
            "api_port": free_port(),
            "group_wait_s": 0.2,
            "delivery": {"allow_private": True},  # the receivers are on loopback
            "subscriptions": [
                {
                    "id": "ops",
                    "channels": [
                        {"kind": "webhook", "url": f"{hooks}/hook"},
                        {"kind": "wecom", "url": f"{hooks}/wecom?key=k"},
                        {"kind": "email", "to": ["ops@district.example"]},
                    ],
                    "kinds": ["charger"],
                    "group_by": ["fingerprint"],  # one message per alert step: each counted on its own
                }
            ],
        }
    )


def with_english_visitors(config: NotifierConfig, hooks: str) -> NotifierConfig:
    """`config` and a subscription in English: a webhook at /hook-en and an inbox of its own."""
    visitors = Subscription(
        id="visitors",
        locale="en",
        channels=[
            HttpChannel(kind=ChannelKind.WEBHOOK, url=f"{hooks}/hook-en"),
            EmailChannel(kind=ChannelKind.EMAIL, to=["visitor@district.example"]),
        ],
        kinds=["charger"],
    )
    return config.model_copy(update={"subscriptions": [*config.subscriptions, visitors]})


def test_an_overheating_charger_reaches_every_channel_then_its_resolution(
    mosquitto: LocalServer, victoria: LocalServer, peers: tuple[Receiver, Inbox, int], state: str
) -> None:
    receiver, inbox, smtp = peers
    charger = free_port()
    sim = start_sim("charger", "--port", str(charger), "--time-scale", "100", "--fault", "1:overheat")
    config = with_english_visitors(
        notifier_config(state, mosquitto.port, smtp, receiver.url, unique("group")), receiver.url
    )
    service = Service(config, TOKEN)
    edge = Agent(
        edge_config(store=victoria.url, broker=mosquitto.port, charger=charger, agent=unique("edge"))
    )

    def steps(rule: str) -> list[str]:
        return [b["notice"] for b in receiver.at("/hook") if b["alert"]["rule"] == rule]

    async def scenario() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(service.run(stop))]
        await asyncio.wait_for(service.started.wait(), 10)
        tasks.append(asyncio.create_task(edge.run(stop)))
        try:
            await wait_until(
                lambda: "resolved" in steps("charger.temperature.above"), 60, "overheat and cooling"
            )
            await wait_until(
                lambda: "resolved" in steps("interlock.charger.temperature"), 20, "the interlock's end"
            )
            await wait_until(lambda: len(inbox.messages) >= 8, 20, "four emails to each")
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    try:
        asyncio.run(scenario())
    finally:
        stop_process(sim)
    hooks = receiver.at("/hook")
    # Message by message: the limit, the stop it caused, and both clearing as the port cooled.
    sequence = [(b["notice"], b["alert"]["rule"]) for b in hooks]
    assert sequence.index(("firing", "charger.temperature.above")) < sequence.index(
        ("resolved", "charger.temperature.above")
    )
    assert sorted(sequence) == sorted(
        [
            ("firing", "charger.temperature.above"),
            ("firing", "interlock.charger.temperature"),
            ("resolved", "charger.temperature.above"),
            ("resolved", "interlock.charger.temperature"),
        ]
    )
    fired = next(
        b["alert"]
        for b in hooks
        if b["notice"] == "firing" and b["alert"]["rule"] == "charger.temperature.above"
    )
    AlertMessage.model_validate(fired)
    assert (fired["site"], fired["device"], fired["port"], fired["severity"]) == (
        "ronghua-1",
        "station-1",
        "1",
        "critical",
    )
    assert fired["value"] > 90
    # The robot got the same four, in its own format.
    robot = receiver.at("/wecom?key=k")
    assert len(robot) == 4
    assert all(b["msgtype"] == "markdown" for b in robot)
    assert sum("已恢复" in b["markdown"]["content"] for b in robot) == 2
    # And the inbox: one mail per step, subject first, in Chinese naming what people know.
    # Decoded (a UTF-8 subject is RFC 2047 encoded words) and unfolded.
    subjects = sorted(" ".join(str(make_header(decode_header(m["Subject"]))).split()) for m in inbox.messages)
    assert len(subjects) == 8
    zh = "【告警】【紧急】荣华居民区 3号楼车棚充电桩 1号端口：充电端口温度过高"
    assert sum(s == zh for s in subjects) == 1
    assert (
        sorted(m["To"] for m in inbox.messages)
        == ["ops@district.example"] * 4 + ["visitor@district.example"] * 4
    )
    # The webhook's human fields: Chinese, in Shanghai time, no internal ids; ISO times with +08:00.
    told = next(b for b in hooks if b["notice"] == "firing" and b["alert"] == fired)
    since = dt.datetime.fromtimestamp(fired["since_ms"] / 1000, ZoneInfo("Asia/Shanghai"))
    assert (told["locale"], told["title"]) == ("zh-CN", "充电端口温度过高")
    assert told["since"] == since.isoformat(timespec="seconds")
    assert told["since"].endswith("+08:00")
    assert f"开始时间 {since:%H:%M}" in told["text"]
    assert "ronghua-1" not in told["text"]
    assert "station-1" not in told["text"]
    # The subscription in English hears the same in English.
    english = [b for b in receiver.at("/hook-en") if b["alert"]["rule"] == "charger.temperature.above"]
    first = next(b for b in english if b["notice"] == "firing")
    assert (first["locale"], first["title"]) == ("en", "Port over temperature")
    assert (
        first["subject"] == "[FIRING] [critical] Port over temperature at 荣华居民区, 3号楼车棚充电桩, port 1"
    )
    assert f"since {since:%H:%M}" in first["text"]
    assert "[RESOLVED] [critical] Port over temperature" in " ".join(subjects)


def chargers(service: Service) -> list[str]:
    """The charger alerts a notifier holds (edges that stopped earlier are offline alerts too)."""
    return [a.alert.fingerprint for a in service.notifier.active() if a.alert.kind == "charger"]


def publish(port: int, topic: str, payload: str) -> None:
    """mosquitto_pub, an independent client, at QoS 1 (the payload on its stdin: it may be large)."""
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-s"],
        input=payload,
        text=True,
        check=True,
        timeout=10,
    )


def event(device: str, state: str = "firing") -> str:
    return AlertMessage(
        fingerprint=fingerprint("charger.smoke_alarm.above", "gubei-1", device, None),
        rule="charger.smoke_alarm.above",
        title="Smoke in the charging cabinet",
        severity=Severity.CRITICAL,
        state=AlertState(state),
        kind="charger",
        site="gubei-1",
        device=device,
        port=None,
        value=1,
        threshold=0.5,
        time_ms=1,
        since_ms=1,
        edge="edge-x",
    ).model_dump_json()


def test_the_api_lists_acknowledges_and_manages_subscriptions_with_a_token(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], state: str
) -> None:
    receiver, _, smtp = peers
    config = notifier_config(state, mosquitto.port, smtp, receiver.url, unique("group"))
    service = Service(config, TOKEN)
    base = f"http://127.0.0.1:{config.api_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    night_desk: list[dict[str, Any]] = []
    listener = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("desk"))
    listener.on_message = lambda _c, _u, m: night_desk.append(json.loads(m.payload))
    listener.connect("127.0.0.1", mosquitto.port)
    listener.subscribe("linli/notices/#", qos=1)
    listener.loop_start()

    async def scenario() -> dict[str, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 10)
        out: dict[str, Any] = {}
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as api:
                out["no token"] = (await api.get("/alerts")).status_code
                out["bad token"] = (
                    await api.get("/alerts", headers={"Authorization": "Bearer nope"})
                ).status_code
                await asyncio.to_thread(
                    publish, mosquitto.port, "linli/alerts/edge-x/gubei-1/station-2", event("station-2")
                )
                await asyncio.to_thread(
                    publish, mosquitto.port, "linli/alerts/edge-x/gubei-1/station-2", "{not json"
                )
                await wait_until(lambda: len(chargers(service)) == 1, 10, "the alert")
                rejected = service.notifier.rejected
                await wait_until(
                    lambda: rejected["malformed"] == 1, 10, "the malformed event refused and counted"
                )
                # (The broker also replays the last will of earlier tests' edges: alerts too.)
                [listed] = [
                    a for a in (await api.get("/alerts", headers=auth)).json() if a["kind"] == "charger"
                ]
                out["listed"] = listed
                fp = listed["fingerprint"]
                out["ack"] = (await api.post(f"/alerts/{fp}/ack", json={"by": "wang"}, headers=auth)).json()
                out["ack unknown"] = (
                    await api.post("/alerts/0000000000000000/ack", json={"by": "x"}, headers=auth)
                ).status_code
                sub = {
                    "id": "night-desk",
                    "channels": [{"kind": "mqtt", "topic": "linli/notices/night"}],
                    "min_severity": "critical",
                }
                out["put"] = (await api.put("/subscriptions/night-desk", json=sub, headers=auth)).status_code
                out["bad put"] = (await api.put("/subscriptions/x", json=sub, headers=auth)).status_code
                out["subs"] = [s["id"] for s in (await api.get("/subscriptions", headers=auth)).json()]
                # The new subscription hears of the alert already open, on its MQTT topic.
                await wait_until(
                    lambda: any(n["alert"]["kind"] == "charger" for n in night_desk),
                    10,
                    "the night desk's notice",
                )
                out["delete"] = (await api.delete("/subscriptions/night-desk", headers=auth)).status_code
                out["subs after"] = [s["id"] for s in (await api.get("/subscriptions", headers=auth)).json()]
                out["openapi"] = sorted((await api.get("/openapi.json")).json()["paths"])
        finally:
            stop.set()
            await task
        return out

    try:
        out = asyncio.run(scenario())
    finally:
        listener.loop_stop()
        listener.disconnect()
    charger_notices = [n for n in night_desk if n["alert"]["kind"] == "charger"]  # (earlier edges' wills too)
    assert [(n["subscription"], n["notice"], n["alert"]["device"]) for n in charger_notices] == [
        ("night-desk", "firing", "station-2")
    ]
    assert (out["no token"], out["bad token"]) == (401, 401)
    assert out["listed"]["device"] == "station-2"
    assert out["listed"]["acked_by"] is None
    assert out["ack"]["acked_by"] == "wang"
    assert out["ack unknown"] == 404
    assert (out["put"], out["bad put"], out["delete"]) == (200, 409, 204)
    assert out["subs"] == ["night-desk", "ops"]
    assert out["subs after"] == ["ops"]
    assert {"/alerts", "/alerts/{fingerprint}/ack", "/subscriptions", "/subscriptions/{sub_id}"} <= set(
        out["openapi"]
    )


def test_two_notifiers_in_one_group_share_the_events_and_tell_each_step_once(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], state: str
) -> None:
    receiver, _, smtp = peers
    group = unique("group")
    first = notifier_config(state, mosquitto.port, smtp, receiver.url, group)
    # The same state: a firing event and its resolution may reach different notifiers.
    second = first.model_copy(update={"api_port": free_port()})
    services = [Service(first, TOKEN), Service(second, TOKEN)]
    devices = [f"station-{i}" for i in range(20)]
    fired: list[str] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(s.run(stop)) for s in services]
        for s in services:
            await asyncio.wait_for(s.started.wait(), 10)
        try:
            for step in ("firing", "resolved"):
                for device in devices:
                    topic = f"linli/alerts/edge-x/gubei-1/{device}"
                    await asyncio.to_thread(publish, mosquitto.port, topic, event(device, step))
                await wait_until(lambda: len(receiver.at("/hook")) >= len(devices), 20, f"every {step} step")
                if step == "firing":
                    fired.extend(b["alert"]["device"] for b in receiver.at("/hook"))
                    receiver.posts.clear()
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert sorted(fired) == sorted(devices)
    resolved = [b["alert"]["device"] for b in receiver.at("/hook") if b["notice"] == "resolved"]
    assert sorted(resolved) == sorted(devices)  # each exactly once, whichever notifier took it
    taken = [s.notifier.handled["charger"] for s in services]
    assert sum(taken) == 2 * len(devices)  # each event went to one notifier
    assert min(taken) > 0  # and both took their share


def test_the_local_example_config_notifies_on_the_local_broker(
    mosquitto: LocalServer, tmp_path: Path
) -> None:
    """deploy/notifier.local.toml as the README runs it, on this test's broker and a free API port."""
    example = Path(__file__).resolve().parents[3] / "deploy" / "notifier.local.toml"
    config = load_notifier_config(example)
    assert (config.broker.host, config.broker.port) == ("127.0.0.1", 1883)
    assert config.state == str(example.parent / "notifier.sqlite")
    config = config.model_copy(
        update={
            "broker": config.broker.model_copy(update={"port": mosquitto.port, "group": unique("group")}),
            "api_port": free_port(),
            "state": tmp_path / "notifier.sqlite",
        }
    )
    service = Service(config, TOKEN)
    notices: list[dict[str, Any]] = []
    listener = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("ops"))
    listener.on_message = lambda _c, _u, m: notices.append(json.loads(m.payload))
    listener.connect("127.0.0.1", mosquitto.port)
    listener.subscribe("linli/notices/#", qos=1)
    listener.loop_start()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 10)
        try:
            await asyncio.to_thread(
                publish, mosquitto.port, "linli/alerts/edge-l/gubei-1/station-5", event("station-5")
            )
            await wait_until(
                lambda: any(n["alert"]["device"] == "station-5" for n in notices), 10, "the notice"
            )
        finally:
            stop.set()
            await task

    try:
        asyncio.run(scenario())
    finally:
        listener.loop_stop()
        listener.disconnect()
    [notice] = [n for n in notices if n["alert"]["device"] == "station-5"]
    assert (notice["subscription"], notice["notice"]) == ("ops", "firing")
    # Nothing listens on the example's webhook here: at the stop, the retries are kept, not lost.
    [failure] = Store(config.state).failures()
    assert failure["channel"] == "webhook"
    assert failure["error"].startswith("the service stopped while retrying; last error:")


def test_a_database_restart_loses_no_alert_step_and_tells_none_twice(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path, pg_folder: Path
) -> None:
    """The notifier's PostgreSQL stops with an alert in flight: the event waits, unacknowledged,
    and is told once the database is back; its resolution after it, once."""
    receiver, _, smtp = peers
    database = start_postgresql(pg_folder / "pg")  # its own: this test stops it
    create_database(postgresql_url(database), "notifier")
    state = postgresql_url(database, "notifier").replace("+psycopg", "")
    config = notifier_config(state, mosquitto.port, smtp, receiver.url, unique("group"))
    service = Service(config, TOKEN)
    topic = "linli/alerts/edge-x/gubei-1/station-1"

    async def scenario() -> None:
        nonlocal database
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.started.wait(), 10)
            database.stop()
            await asyncio.to_thread(publish, mosquitto.port, topic, event("station-1"))
            await wait_until(lambda: service.notifier.errors["state"] >= 1, 10, "the state refusing")
            await wait_until(lambda: service.notifier.errors["state"] >= 3, 10, "retries while it is down")
            assert receiver.at("/hook") == []
            database = start_postgresql(database.datadir, database.port, init=False)
            await wait_until(lambda: len(receiver.at("/hook")) == 1, 20, "the firing step, after the restart")
            await asyncio.to_thread(publish, mosquitto.port, topic, event("station-1", "resolved"))
            await wait_until(lambda: len(receiver.at("/hook")) == 2, 10, "the resolution")
        finally:
            stop.set()
            await task
            database.stop()

    asyncio.run(scenario())
    assert [(b["notice"], b["alert"]["device"]) for b in receiver.at("/hook")] == [
        ("firing", "station-1"),
        ("resolved", "station-1"),
    ]
    assert service.notifier.handled["charger"] == 2  # each event taken once, however often tried
    # How soon after the restart it is told is a figure of the machine (benchmarks/alert_latency.py).
