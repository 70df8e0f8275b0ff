"""Pacing: a robot never sent to faster than its limit, the most urgent message first, and a
robot's throttling answer waited out without losing the message (a real HTTP robot)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from linli.catalog.channels import ChannelKind, HttpChannel
from linli.cloud.notifier import channels
from linli.cloud.notifier.channels import Notice, Sender, escape_markdown
from linli.cloud.notifier.config import DeliveryConfig, PaceLimit, SmtpConfig
from linli.cloud.notifier.delivery import Deliveries
from linli.cloud.notifier.pacing import Pace, urgency_of
from test_notifier import alert


def test_no_window_holds_more_than_the_limit_and_the_most_urgent_goes_first() -> None:
    async def scenario() -> tuple[list[str], list[float], float, float]:
        pace = Pace("robot", PaceLimit(per=3, window_s=0.3), margin_s=0.0)
        order: list[str] = []
        times: list[float] = []

        async def send(name: str, urgency: int) -> None:
            await pace.turn(urgency)
            order.append(name)
            times.append(pace.clock())

        tasks = [asyncio.create_task(send(f"warning-{i}", 1)) for i in range(8)]
        await asyncio.sleep(0)  # the first three take the window's turns at once
        tasks.append(asyncio.create_task(send("smoke", 0)))
        await asyncio.gather(*tasks)
        paused_at = pace.clock()
        pace.pause(0.2)
        await pace.turn(2)
        return order, times, paused_at, pace.clock()

    order, times, paused_at, after = asyncio.run(scenario())
    assert order[:3] == ["warning-0", "warning-1", "warning-2"]
    assert order[3] == "smoke"  # ahead of the five warnings that came before it
    assert order[4:] == [f"warning-{i}" for i in range(3, 8)]
    # Any four sends in a row span the whole window: never four within 0.3 s.
    assert all(b - a >= 0.3 for a, b in zip(times, times[3:], strict=False))
    assert after - paused_at >= 0.2  # a throttled robot rests as long as it said


class Robot:
    """A WeCom group robot on loopback: answers errcode 45009 to its first `throttle` messages."""

    def __init__(self, throttle: int) -> None:
        self.posts: list[tuple[str, int]] = []  # (the message's subject, the errcode answered)
        robot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = 45009 if len(robot.posts) < throttle else 0
                robot.posts.append((body["markdown"]["content"].splitlines()[0], code))
                answer = json.dumps({"errcode": code, "errmsg": "api freq out of limit" if code else "ok"})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cgi-bin/webhook/send?key=k1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.slow
def test_a_throttled_robot_is_waited_out_and_nothing_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    # The robot's documented penalty (a minute) made short: the test's own time.
    monkeypatch.setitem(channels.THROTTLED, (ChannelKind.WECOM, 45009), 0.5)
    robot = Robot(throttle=2)
    # One send at a time (they reach the robot in the order the pace lets them go), and a window
    # long enough that both throttled answers are back before it lets anything else go.
    policy = DeliveryConfig(
        allow_private=True, per_destination=1, pace={ChannelKind.WECOM: PaceLimit(per=2, window_s=3.0)}
    )
    channel = HttpChannel(kind=ChannelKind.WECOM, url=robot.url)
    warnings = [
        Notice("firing", alert(severity="warning", site=f"site-{i}"), "ops", locale="en") for i in range(4)
    ]
    smoke = Notice("firing", alert(severity="critical", site="smoke"), "ops", locale="en")
    failed: list[Any] = []

    async def scenario() -> Deliveries:
        deliveries = Deliveries(Sender(SmtpConfig(), policy=policy), 3, lambda *f: failed.append(f), policy)
        for i, notice in enumerate(warnings):
            deliveries.start("ops", channel, notice, thread=str(i))
        await asyncio.sleep(0)
        deliveries.start("ops", channel, smoke, thread="smoke")
        await deliveries.drain(60)
        await deliveries.sender.close()
        return deliveries

    deliveries = asyncio.run(scenario())
    robot.server.shutdown()
    assert failed == []
    throttled = [subject for subject, code in robot.posts if code]
    taken = [subject for subject, code in robot.posts if not code]
    assert len(throttled) == 2
    subjects = [f"**{escape_markdown(n.subject)}**" for n in [*warnings, smoke]]
    assert sorted(taken) == sorted(subjects)  # each once: nothing lost, nothing twice
    assert taken[0] == subjects[-1]  # once the robot rested, the smoke alarm first
    pace = deliveries.paces.of(channel)
    assert pace is not None
    assert pace.throttled == 2
    assert deliveries.destinations.paused() == []  # the host was never taken for dead
    assert "k1" not in pace.label  # the robot's key is its credential: never in a log


def test_urgency_puts_critical_alarms_first() -> None:
    critical, warning = alert(severity="critical"), alert(severity="warning")
    assert urgency_of(Notice("firing", critical, "s")) == 0
    assert urgency_of(Notice("firing", warning, "s")) == 1
    assert urgency_of(Notice("resolved", critical, "s")) == 2
    assert urgency_of(object()) == 2


def test_a_relay_s_limit_set_keeps_the_robots_documented_ones() -> None:
    policy = DeliveryConfig.model_validate({"pace": {"email": {"per": 60}, "wecom": {"per": 10}}})
    assert policy.pace == {
        ChannelKind.WECOM: PaceLimit(per=10),
        ChannelKind.DINGTALK: PaceLimit(per=20),
        ChannelKind.FEISHU: PaceLimit(per=100),
        ChannelKind.EMAIL: PaceLimit(per=60),
    }
