"""Alert latency: from the reading that crosses a threshold to the notification at a webhook.

Rescue-point cabinets (MQTT) report their AED battery; each report below the profile's
20 % is a threshold crossing. The reading carries its own time (`ts`); the notice that
reaches the local webhook carries the alert's time, which is that reading's. So the
latency is the whole path: publisher -> Mosquitto -> edge agent (receive, validate, rules,
publish) -> Mosquitto -> notifier (its own process, MQTT 5 shared subscription) -> HTTP.
Then the batteries recover and every alert must resolve, also timed. Prints p50, p99, max,
and the same up to the alert event's arrival on the broker (a subscriber to the alert topic):
the edge's share of the path, apart from the notifier's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness import Webhook, cpu_seconds
from linli.catalog.alerts import ALERT_TOPIC
from linli.demo.servers import free_port, start_mosquitto, start_victoria_metrics


def agent_config(path: Path, vm: str, broker: int, devices: int, batch_ms: int | None) -> None:
    lines = [
        '[agent]\nname = "bench-edge"\nlog_level = "warning"\n',
        f'[writer]\nkind = "influxdb2"\nurl = "{vm}"\norg = "linli"\nbucket = "linli"\n',
        f'[buffer]\npath = "{path.parent / "edge.buffer.sqlite"}"\n',
        f'[mqtt]\nport = {broker}\nclient_id = "bench-edge"\n'
        + (f"batch_ms = {batch_ms}\n" if batch_ms is not None else ""),
        '[[sites]]\nid = "bench"\n',
    ]
    lines += [f'[[sites.devices]]\nid = "rescue-{i}"\nprofile = "rescue_point"\n' for i in range(devices)]
    path.write_text("\n".join(lines))


def notifier_config(path: Path, broker: int, api: int, hook: str) -> None:
    path.write_text(
        f"""state = "{path.parent / "notifier.sqlite"}"
api_port = {api}
group_wait_s = 0
group_interval_s = 0

[delivery]
allow_private = true

[broker]
port = {broker}

[[subscriptions]]
id = "bench"
channels = [{{ kind = "webhook", url = "{hook}" }}]
group_by = ["fingerprint"]
"""
    )


def start(args: list[str], marker: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "linli.cli", *args], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while marker not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"benchmark: {' '.join(args[:2])} did not start; see {log}")
        time.sleep(0.1)
    return proc


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# The points of a firing alert's path, in order (alerttrace/sitecustomize.py marks the edge's
# and the notifier's; this script the broker's and the webhook's).
HOPS = [
    "edge_urgent",
    "edge_published",
    "broker",
    "notifier_received",
    "notifier_handle",
    "notifier_handled",
    "notifier_claimed",
    "notifier_post",
    "webhook",
]


def trace_into(folder: Path) -> None:
    """The agent and the notifier started from now on mark their points in `folder`."""
    folder.mkdir()
    os.environ["LINLI_ALERT_TRACE"] = str(folder)
    here = str(Path(__file__).parent / "alerttrace")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))


def read_traces(folder: Path) -> dict[int, dict[str, float]]:
    """reading time (ms) -> point -> when the alert of that reading first got there."""
    hops: dict[int, dict[str, float]] = {}
    for trace in folder.glob("*.trace"):
        for line in trace.read_text().splitlines():
            point, reading, at = line.split()
            if reading.isdigit():
                hops.setdefault(int(reading), {}).setdefault(point, float(at))
    return hops


def print_hops(
    hops: dict[int, dict[str, float]],
    events: list[tuple[str, str, int, float]],
    notices: list[tuple[str, str, int, float]],
) -> None:
    """Each hop's share of the firing alerts' latency: p50 and p99 of it, and of the total so far."""
    for point, seen in (("broker", events), ("webhook", notices)):
        for kind, _, alert_ms, arrived in seen:
            if kind == "firing":
                hops.setdefault(alert_ms, {}).setdefault(point, arrived)
    complete = {r: h for r, h in hops.items() if all(p in h for p in HOPS)}
    print(
        f"{len(complete)} firing alerts traced end to end, ms: each step's p50 / p99, then since the reading"
    )
    previous = None
    for point in HOPS:
        since = [h[point] * 1000 - r for r, h in complete.items()]
        step = [(h[point] - h[previous]) * 1000 for h in complete.values()] if previous else since
        print(
            f"  {point:<18} {statistics.median(step):7.1f} / {percentile(step, 99):7.1f}"
            f"   {statistics.median(since):7.1f} / {percentile(since, 99):7.1f}"
            if complete
            else f"  {point}: none"
        )
        previous = point


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=1000, help="threshold crossings (default 1000)")
    parser.add_argument("--devices", type=int, default=100, help="rescue points they are spread over")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="time between readings")
    parser.add_argument("--batch-ms", type=int, help="the agent's [mqtt] batch_ms (default: its own, 100)")
    parser.add_argument(
        "--trace", action="store_true", help="also time each hop of the firing alerts (alerttrace/)"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    # (notice kind, fingerprint, the alert's time, arrival) of every notice
    got: list[tuple[str, str, int, float]] = []
    hook = Webhook(
        lambda n, arrived: got.append(
            (n["notice"], n["alert"]["fingerprint"], n["alert"]["time_ms"], arrived)
        )
    )
    # (state, fingerprint, the alert's time, arrival) of each alert event's first copy on the
    # broker (the agent announces firing alerts again every `resend_s`)
    events: list[tuple[str, str, int, float]] = []
    seen: set[tuple[str, str, int]] = set()

    def on_event(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        arrived = time.time()
        e = json.loads(msg.payload)
        key = (e["state"], e["fingerprint"], e["time_ms"])
        if key not in seen:
            seen.add(key)
            events.append((*key, arrived))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mq")
        vm = start_victoria_metrics(work / "vm")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            notifier_config(work / "notifier.toml", broker.port, free_port(), hook.url)
            env_token = {"LINLI_CLOUD_TOKEN": "bench"}
            os.environ.update(env_token)
            if args.trace:
                trace_into(work / "trace")
            procs.append(
                start(
                    ["cloud", "run", "--config", str(work / "notifier.toml")],
                    "notifier: API on",
                    work / "notifier.log",
                )
            )
            agent_config(work / "edge.toml", vm.url, broker.port, args.devices, args.batch_ms)
            procs.append(start(["edge", "run", "--config", str(work / "edge.toml")], "", work / "edge.log"))
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            tap = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-tap")
            tap.on_message = on_event
            tap.connect("127.0.0.1", broker.port)
            tap.subscribe(f"{ALERT_TOPIC}/#", qos=1)
            tap.loop_start()

            def report(level: int, device: int) -> None:
                payload = {"ts": int(time.time() * 1000), "door_open": False, "equipment_present": True,
                           "aed_battery": level, "last_inspection": "2026-11-01"}  # fmt: skip
                client.publish(f"rescue/bench/rescue-{device}/state", json.dumps(payload), qos=1)

            # Warm-up: one alert through the whole path proves every part is up, then it is forgotten.
            deadline = time.monotonic() + 30
            while not any(k == "resolved" for k, *_ in got):
                if time.monotonic() > deadline:
                    raise SystemExit(f"benchmark: no notice reached the webhook; see {work}/*.log")
                report(10, 0)
                time.sleep(0.5)
                report(90, 0)
                time.sleep(0.5)
            got.clear()
            events.clear()
            cpu_before = [cpu_seconds(p.pid) for p in procs]  # the notifier's, the agent's
            cycles = max(1, args.alerts // args.devices)
            for _ in range(cycles):
                for level in (10, 90):  # below the limit: fires; back above it: resolves
                    for device in range(args.devices):
                        report(level, device)
                        time.sleep(args.gap_ms / 1000)
                    time.sleep(0.5)
            expected = cycles * args.devices
            deadline = time.monotonic() + 30
            while len(got) < 2 * expected and time.monotonic() < deadline:
                time.sleep(0.2)
            cpu = [cpu_seconds(p.pid) - was for p, was in zip(procs, cpu_before, strict=True)]
            client.loop_stop()
            tap.loop_stop()
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(20)
            hops = read_traces(work / "trace") if args.trace else {}
            vm.stop()
            broker.stop()
    for what, seen in (("notices", got), ("events on the broker", events)):
        for kind in ("firing", "resolved"):
            ms = [(arrived * 1000 - alert_ms) for k, _, alert_ms, arrived in seen if k == kind]
            print(
                f"{kind:>8}: {len(ms)} of {expected} {what}; latency p50 {statistics.median(ms):.1f} ms, "
                f"p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
                if ms
                else f"{kind}: no {what}"
            )
    duplicates = len(got) - len({(k, f, t) for k, f, t, _ in got})
    # Each process's CPU time over the timed part: what an alert costs it, whatever the
    # machine's load does to the latency.
    print(
        f"CPU over the run: notifier {cpu[0]:.2f} s ({cpu[0] / (2 * expected) * 1000:.2f} ms an event), "
        f"agent {cpu[1]:.2f} s"
    )
    print(f"duplicates: {duplicates}")
    if args.trace:
        print_hops(hops, events, got)
    return 0


if __name__ == "__main__":
    sys.exit(main())
