"""Alert storm: a compound loses mains power, and a smoke alarm fires in that minute.

A real notifier (`linli cloud run`, its own process) on a local Mosquitto; the storm's events
published onto its topics as an edge publishes them: the edge's uplink drops and returns twice
(its status), 40 devices go silent, 60 chargers raise supply faults, and a smoke alarm fires at a
random second of the storm. The subscription's DingTalk robot is a loopback server that takes at
most 20 messages in any minute and answers errcode 130101 past it, as DingTalk does.

Two configurations, run in turn, `--runs` times each:
- "today": grouping, inhibition and pacing off (a group per alert, no inhibition rule, no limit
  on the robot, its throttling answer a plain refusal, tried again after a back-off and then
  recorded as failed): one message per alert, as the notifier sent before issue 35;
- "new": the notifier's defaults (grouping by site and rule, the district's inhibition rules,
  the robot paced at 20 a minute, the smoke alarm first).
Reported per run: messages the robot took, answers it refused (130101), deliveries the
notifier recorded as failed by the end, the most the robot took in any minute, the smoke alarm's
time from its reading to the robot (None: it never got there), and the alerts the notifier holds
against the alerts raised. `--json` prints one JSON object.

`--through-edge` raises the storm in a simulated compound read by the real edge agent instead
(`storm_edge.py` says how); the same figures.

`--bad-endpoints` adds 20 webhook subscribers that take a request and never answer and 5 that
answer a byte a second (each alert goes to every subscription), and reports the smoke alarm's
time from its reading to each subscription (p50 / max over the 26; a bad endpoint has it when
it has read the request) and the most messages any subscription got: every request counted
(`most_per_subscription`, a message sent again after a timeout counted each time) and the
distinct ones (`most_distinct_per_subscription`).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness import machine, start_notifier
from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.profile import Severity
from linli.demo.servers import free_port, start_mosquitto
from slow_receivers import SlowServer

TOKEN = "bench"  # noqa: S105 (a local benchmark's token)
EDGE, SITE = "storm-edge", "storm"
SMOKE_NAME = "7号楼车棚烟感"  # how the smoke alarm is found in the robot's markdown


class Robot:
    """A DingTalk group robot on loopback: at most `per` messages in any `window_s`, errcode
    130101 past it. Keeps the time of each message it took and of each it refused."""

    def __init__(self, per: int = 20, window_s: float = 60.0) -> None:
        self.taken: list[tuple[float, str]] = []  # (arrived, markdown text)
        self.refused: list[float] = []
        self.lock = threading.Lock()
        recent: deque[float] = deque()
        robot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with robot.lock:
                    while recent and recent[0] <= arrived - window_s:
                        recent.popleft()
                    if len(recent) >= per:
                        robot.refused.append(arrived)
                        answer = {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
                    else:
                        recent.append(arrived)
                        robot.taken.append((arrived, body["markdown"]["text"]))
                        answer = {"errcode": 0, "errmsg": "ok"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/robot/send?access_token=bench"

    def most_in_a_minute(self) -> int:
        times = [t for t, _ in self.taken]
        return max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(path: Path, broker: int, api: int, robot: str, *, today: bool, bad: list[str]) -> None:
    # "today": each alert its own group, no inhibition, the robot's limit out of the way.
    off = (
        "group_wait_s = 0\ngroup_interval_s = 0\ninhibit = []\n"
        "\n[delivery.pace]\ndingtalk = { per = 10000, window_s = 1 }\n"
        if today
        else ""
    )
    group_by = 'group_by = ["fingerprint"]\n' if today else ""
    path.write_text(
        f'state = "{path.with_suffix(".sqlite")}"\napi_port = {api}\nrepeat_s = 86400\n{off}'
        f"\n[delivery]\nallow_private = true\n\n[broker]\nport = {broker}\n"
        f'\n[[subscriptions]]\nid = "duty"\n{group_by}'
        f'channels = [{{ kind = "dingtalk", url = "{robot}" }}]\n'
        + "".join(
            f'\n[[subscriptions]]\nid = "bad-{i}"\n{group_by}'
            f'channels = [{{ kind = "webhook", url = "{url}" }}]\n'
            for i, url in enumerate(bad)
        )
    )


def alert(rule: str, device: str, severity: Severity, now_ms: int, name: str) -> AlertMessage:
    return AlertMessage(
        fingerprint=fingerprint(rule, SITE, device, None),
        rule=rule,
        title=rule,
        severity=severity,
        state=AlertState.FIRING,
        kind="charger",
        site=SITE,
        site_name="荣华居民区",
        device=device,
        device_name=name,
        port=None,
        value=1,
        threshold=0.5,
        time_ms=now_ms,
        since_ms=now_ms,
        edge=EDGE,
    )


def storm(storm_s: float, smoke_at: float) -> list[tuple[float, str, str]]:
    """(seconds into the storm, topic, payload) of every event, in order of time; the smoke
    alarm's payload is the word "smoke" (it is written when it goes, with its time)."""
    status = f"linli/edges/{EDGE}"
    events: list[tuple[float, str, str]] = [
        (0.0, status, "offline"), (0.4 * storm_s, status, "online"),
        (0.6 * storm_s, status, "offline"), (0.8 * storm_s, status, "online"),
    ]  # fmt: skip
    for i in range(40):
        events.append((0.5 * storm_s * i / 40, f"silent:{i}", ""))
    for i in range(60):
        events.append((storm_s * (i + 0.5) / 60, f"mains:{i}", ""))
    events.append((smoke_at, "smoke", ""))
    return sorted(events, key=lambda e: e[0])


def payload(what: str) -> tuple[str, str]:
    """The topic and the alert for a storm's event."""
    now = int(time.time() * 1000)
    if what == "smoke":
        a = alert("charger.smoke_alarm.above", "smoke-7", Severity.CRITICAL, now, SMOKE_NAME)
    elif what.startswith("silent:"):
        i = what.split(":")[1]
        a = alert("charger.power_w.silent", f"station-{i}", Severity.WARNING, now, f"{i}号桩")
    else:
        i = what.split(":")[1]
        a = alert("charger.mains_fault.above", f"charger-{i}", Severity.CRITICAL, now, f"{i}号充电柜")
    return f"linli/alerts/{EDGE}/{SITE}/{a.device}", a.model_dump_json()


def api_get(api: int, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{api}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 (a local URL)
        return json.loads(answer.read())


def run(name: str, work: Path, broker: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    robot = Robot()
    bad = SlowServer(["hang"] * 20 + ["trickle"] * 5 if args.bad_endpoints else [])
    api = free_port()
    cfg = work / f"{name}-{seed}.toml"
    config(cfg, broker, api, robot.url, today=name == "today", bad=bad.urls)
    # Today's notifier knew no throttling answer: a refusal was a failed attempt, tried again
    # after a back-off and then recorded as failed. The robots' codes are forgotten for "today".
    forget = (
        "from linli.cloud.notifier import channels; channels.THROTTLED.clear(); " if name == "today" else ""
    )
    proc = start_notifier(cfg, TOKEN, before=forget)
    smoke_sent = 0.0
    try:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"storm-{name}-{seed}")
        client.connect("127.0.0.1", broker)
        client.loop_start()
        smoke_at = random.Random(seed).uniform(0, args.storm_s)
        start = time.monotonic()
        for at, topic, word in storm(args.storm_s, smoke_at):
            time.sleep(max(0.0, start + at - time.monotonic()))  # the storm's own timeline
            if topic.startswith("linli/edges/"):
                client.publish(topic, word, qos=1)
                continue
            if topic == "smoke":
                smoke_sent = time.time()
            client.publish(*payload(topic), qos=1)
        # The storm's messages: those that reach the robot within `settle_s` after it.
        end = time.monotonic() + args.settle_s
        while time.monotonic() < end:
            time.sleep(0.2)
        client.loop_stop()
        recorded = [a for a in api_get(api, f"/alerts?site={SITE}&limit=1000") if a["state"] == "firing"]
        failed = len(api_get(api, "/failed-deliveries"))
    finally:
        proc.terminate()
        proc.wait(120)
        robot.close()
    arrived = [t for t, text in robot.taken if SMOKE_NAME in text]
    # The smoke alarm's time to each subscription (None: it never got there), and their messages.
    smoke = [arrived[0] - smoke_sent if arrived else None]
    messages = [len(robot.taken)]
    distinct = [len({text for _, text in robot.taken})]  # a message sent again counted once
    for i in range(len(bad.urls)):
        got = [(t, body) for index, t, body in list(bad.got) if index == i]
        smoke.append(next((t - smoke_sent for t, body in got if b"smoke_alarm" in body), None))
        messages.append(len(got))
        distinct.append(len({body for _, body in got}))
    reached = sorted(t for t in smoke if t is not None)
    return {
        "run": name,
        "seed": seed,
        "messages_taken": len(robot.taken),
        "refused_130101": len(robot.refused),
        "failed_recorded": failed,
        "most_in_a_minute": robot.most_in_a_minute(),
        "smoke_s": round(arrived[0] - smoke_sent, 2) if arrived else None,
        "alerts_raised": 101,  # 40 silent, 60 supply faults, the smoke alarm: all still firing
        "alerts_recorded": len(recorded),
        "subscriptions": len(smoke),
        "smoke_reached": len(reached),
        "smoke_p50_s": round(statistics.median(reached), 2) if reached else None,
        "smoke_max_s": round(reached[-1], 2) if len(reached) == len(smoke) else None,
        "most_per_subscription": max(messages),
        "most_distinct_per_subscription": max(distinct),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storm-s", type=float, default=60.0, help="how long the storm lasts")
    parser.add_argument("--settle-s", type=float, default=15.0, help="messages counted this long after")
    parser.add_argument("--runs", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--bad-endpoints", action="store_true", help="20 hanging and 5 trickling webhook subscribers beside"
    )
    parser.add_argument(
        "--through-edge",
        action="store_true",
        help="the storm through a simulated compound and the real edge agent (storm_edge.py)",
    )
    parser.add_argument("--warm-s", type=float, default=10.0, help="with --through-edge: read before")
    args = parser.parse_args()
    if args.through_edge:
        import storm_edge

        edge_runs = storm_edge.main(args)
        if args.json:
            print(json.dumps({"machine": machine(), "runs": edge_runs}, ensure_ascii=False))
        else:
            print(f"machine: {machine()}")
            for r in edge_runs:
                print(json.dumps(r, ensure_ascii=False))
        return 0
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mq")
        try:
            for seed in range(args.runs):
                runs.append(run("today", work, broker.port, args, seed))
                runs.append(run("new", work, broker.port, args, seed))
        finally:
            broker.stop()
    medians = {}
    for name in ("today", "new"):
        mine = [r for r in runs if r["run"] == name]
        smoke = [r["smoke_s"] for r in mine if r["smoke_s"] is not None]
        medians[name] = {
            key: statistics.median(r[key] for r in mine)
            for key in (
                "messages_taken",
                "refused_130101",
                "failed_recorded",
                "most_in_a_minute",
                "alerts_recorded",
                "smoke_reached",
                "most_per_subscription",
                "most_distinct_per_subscription",
            )
        } | {
            "smoke_s": statistics.median(smoke) if smoke else None,
            "smoke_delivered": f"{len(smoke)} of {len(mine)}",
        }
    if args.json:
        print(json.dumps({"machine": machine(), "runs": runs, "medians": medians}))
        return 0
    print(f"machine: {machine()}")
    for r in runs:
        print(json.dumps(r))
    for name, m in medians.items():
        print(f"median {name}: {json.dumps(m)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
