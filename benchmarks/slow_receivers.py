"""Slow receivers: a healthy subscriber's notice delay, with and without hostile webhooks beside it.

A real notifier (`linli cloud run`, its own process) on a local Mosquitto; alerts published
straight onto its alert topic, `--gap-ms` apart. Every alert goes to every subscription. Two
runs, side by side: "slow", the healthy webhook beside `--hanging` webhooks that take the
request and never answer and `--trickling` ones that answer a byte a second; "none", the
healthy webhook beside as many that answer at once, so that both runs cost the notifier the
same bookkeeping per alert. The delay runs from publishing the alert to the healthy webhook
receiving its notice.
Then every slow delivery must be recorded in GET /failed-deliveries: none lost, none dropped.
Prints p50, p99, max per run and the counts; `--json` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness import Webhook
from linli.catalog.alerts import AlertMessage, AlertState, fingerprint
from linli.catalog.profile import Severity
from linli.cloud.notifier.config import NotifierConfig
from linli.demo.servers import free_port, start_mosquitto

TOKEN = "bench"  # noqa: S105 (a local benchmark's token)


class SlowServer:
    """Many HTTP endpoints on one asyncio loop in a thread: each reads a request, then answers
    at once ("ok"), or never finishes its answer ("hang": silent; "trickle": a byte a second).
    Keeps each request read: (the endpoint's index in `urls`, when it was read, its body)."""

    def __init__(self, modes: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.urls: list[str] = []
        self.got: list[tuple[int, float, bytes]] = []
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        for index, mode in enumerate(modes):
            port = asyncio.run_coroutine_threadsafe(self._listen(mode, index), self.loop).result()
            self.urls.append(f"http://127.0.0.1:{port}/slow")

    async def _listen(self, mode: str, index: int) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.got.append((index, time.time(), await reader.readexactly(length)))
                if mode == "ok":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    writer.close()
                    return
                if mode == "hang":
                    # Until the sender gives up: a connection kept after it would leak a descriptor.
                    await reader.read()
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    while not reader.at_eof():
                        await asyncio.sleep(1.0)
                        writer.write(b" ")
                        await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return int(server.sockets[0].getsockname()[1])


def config(path: Path, broker: int, api: int, hooks: list[str]) -> None:
    subs = "".join(
        f'\n[[subscriptions]]\nid = "s{i}"\nchannels = [{{ kind = "webhook", url = "{hook}" }}]\n'
        for i, hook in enumerate(hooks)
    )
    # The [delivery] table is this change's: the code before it knows no such key.
    delivery = (
        "\n[delivery]\nallow_private = true\ndeadline_s = 2\npause_s = 2\n"
        if "delivery" in NotifierConfig.model_fields
        else ""
    )
    path.write_text(
        f'state = "{path.with_suffix(".sqlite")}"\napi_port = {api}\ngroup_wait_s = 0\n'
        f"repeat_s = 86400\nattempts = 2\n{delivery}\n[broker]\nport = {broker}\n{subs}"
    )


def alert(device: str) -> str:
    return AlertMessage(
        fingerprint=fingerprint("charger.smoke_alarm.above", "bench", device, None),
        rule="charger.smoke_alarm.above",
        title="Smoke in the charging cabinet",
        severity=Severity.CRITICAL,
        state=AlertState.FIRING,
        kind="charger",
        site="bench",
        device=device,
        port=None,
        value=1,
        threshold=0.5,
        time_ms=int(time.time() * 1000),
        since_ms=int(time.time() * 1000),
        edge="bench-edge",
    ).model_dump_json()


def api_get(api: int, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{api}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 (a local URL)
        return json.loads(answer.read())


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(
    name: str, work: Path, broker: int, args: argparse.Namespace, others: list[str], *, slow: int
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delays: list[float] = []
    hook = Webhook(lambda n, arrived: delays.append(arrived - sent[n["alert"]["device"]]))
    api = free_port()
    config(work / f"{name}.toml", broker, api, [hook.url, *others])
    log = work / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "linli.cli", "cloud", "run", "--config", str(work / f"{name}.toml")],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=os.environ | {"LINLI_CLOUD_TOKEN": TOKEN},
    )
    try:
        deadline = time.monotonic() + 30
        while "notifier: API on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"benchmark: the notifier did not start; see {log}")
            time.sleep(0.1)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}")
        client.connect("127.0.0.1", broker)
        client.loop_start()
        for i in range(args.alerts):
            device = f"{name}-{i}"
            sent[device] = time.time()
            client.publish(f"linli/alerts/bench-edge/bench/{device}", alert(device), qos=1)
            time.sleep(args.gap_ms / 1000)
        deadline = time.monotonic() + args.wait_s
        while len(delays) < args.alerts and time.monotonic() < deadline:
            time.sleep(0.2)
        client.loop_stop()
        # Every slow delivery ends recorded as failed; wait for them, within the same bound.
        expected_failed = args.alerts * slow
        failed = 0
        while failed < expected_failed and time.monotonic() < deadline + args.wait_s:
            failed = len(api_get(api, "/failed-deliveries"))
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(120)  # recording what is still under way at a stop takes a while
        hook.close()
    ms = [d * 1000 for d in delays]
    return {
        "run": name,
        "slow_webhooks": slow,
        "healthy_arrived": len(ms),
        "alerts": args.alerts,
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "slow_failed_recorded": failed,
        "slow_deliveries": expected_failed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=100, help="alerts, each to every subscription")
    parser.add_argument("--gap-ms", type=float, default=100.0, help="time between alerts")
    parser.add_argument("--hanging", type=int, default=20, help="webhooks that never answer")
    parser.add_argument("--trickling", type=int, default=5, help="webhooks that answer a byte a second")
    parser.add_argument("--wait-s", type=float, default=90.0, help="how long to wait for what is due")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    machine = (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    slow = SlowServer(["hang"] * args.hanging + ["trickle"] * args.trickling)
    fast = SlowServer(["ok"] * (args.hanging + args.trickling))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mq")
        try:
            runs = [
                run("none", work, broker.port, args, fast.urls, slow=0),
                run("slow", work, broker.port, args, slow.urls, slow=len(slow.urls)),
            ]
        finally:
            broker.stop()
    if args.json:
        print(json.dumps({"machine": machine, "runs": runs}))
        return 0
    print(f"machine: {machine}")
    for r in runs:
        print(
            f"{r['run']:>5} ({r['slow_webhooks']} slow webhooks): healthy {r['healthy_arrived']} of "
            f"{r['alerts']} notices; delay p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms;"
            f" slow deliveries recorded as failed {r['slow_failed_recorded']} of {r['slow_deliveries']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
