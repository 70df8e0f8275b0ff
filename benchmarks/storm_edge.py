"""The alert storm through the real edge agent (`alert_storm.py --through-edge`).

One compound, "storm", simulated by a real `linli sim district` on a scenario of its own: 20
chargers over Modbus TCP, 20 rescue points over MQTT, a smoke detector behind the building's
fire gateway (Modbus). A real `linli edge run` agent reads them and announces its alerts on
Mosquitto; the real notifier (`linli cloud run`) tells the subscriptions; the robot and the bad
endpoints are `alert_storm`'s.

The storm, struck through the simulator's control (`POST /faults`) on its own timeline:
- the 20 chargers raise mains supply faults (`storm/station-N:mains`) in the first 20 %;
- 40 devices (the 20 chargers, the 20 rescue points) go silent (`storm/DEVICE:offline`)
  between 25 % and 60 %, each an alert after `SILENT_S` with no value (the edge's rule);
- the edge's uplink is lost twice (at 30 % and 70 %): the edge reaches the broker through a
  loopback TCP relay, which is cut (its connections closed, new ones refused) until the
  broker publishes the agent's will "offline", and `CUT_S` more, then restored: the edge
  reconnects and says "online" again. The edge keeps reading its devices meanwhile;
- the smoke detector alarms (`storm/smoke-1:alarm`) at a random second of the storm; its time
  is taken when the simulator has applied the fault, before the edge's next poll reads it.

Raised: the alerts the edge announced on the broker (distinct fingerprints that fired, seen by
a subscriber of the benchmark's); recorded: those of them the notifier's /alerts holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from alert_storm import SMOKE_NAME, TOKEN, Robot, api_get, config
from harness import start_notifier
from linli.catalog import simtime
from linli.catalog.alerts import ALERT_TOPIC, EDGE_OFFLINE, EDGE_ONLINE, EDGE_STATUS_TOPIC
from linli.catalog.scenario import expand, load_scenario
from linli.demo.district import linli_argv, spawn
from linli.demo.servers import (
    free_port,
    free_port_range,
    ports_listening,
    start_mosquitto,
    start_victoria_metrics,
    wait_listening,
)
from linli.sim.edgeconfig import district_edge_config
from slow_receivers import SlowServer

AGENT, SITE = "storm-edge", "storm"
CHARGERS = RESCUE = 20
SILENT_S = 20.0  # a device silent this long (real seconds) is an alert
CUT_S = 3.0  # how long the uplink stays down once the broker has said so
FLAP_GUARD_S = 60.0  # the most a flap may take on a loaded machine before the run gives up
START_S = 120.0
TIME_SCALE = 30.0  # as `linli demo` runs: a rescue point's minute report every 2 s


def group(kind: str, count: int, ident: str, *extra: str) -> str:
    """A scenario's group of `count` devices of `kind` at the site."""
    lines = [f'kind = "{kind}"', f'sites = ["{SITE}"]', f"per_site = {count}", f'id = "{ident}"', *extra]
    return "\n[[groups]]\n" + "\n".join(lines) + "\n"


SCENARIO = (
    f'name = "storm"\nseed = 35\n\n[[sites]]\nid = "{SITE}"\n'
    + 'name = "荣华居民区"\nname_en = "Ronghua compound"\n'
    + group("charger", CHARGERS, "station-{n}", "interval = 1", "options = { ports = 10 }")
    + group("rescue_point", RESCUE, "rescue-{n}", "interval = 2")
    + group(
        "fire_point",
        1,
        "smoke-{n}",
        "interval = 1",
        'gateway = "fire-gateway"',
        "options = { part_type = 1 }",
    )
)

# Device offline, as the edge sees it: no value for SILENT_S. The smoke detector is named as
# people know it, so that the robot's markdown can be searched for it.
RULES = f"""
[[rules]]
kind = "charger"
field = "voltage"
silent_for = {SILENT_S * TIME_SCALE}
title = "Charger offline"

[[rules]]
kind = "rescue_point"
field = "equipment_present"
silent_for = {SILENT_S * TIME_SCALE}
title = "Rescue point offline"
"""


class Announcements:
    """The edge's alert events and status on the broker, as a subscriber sees them."""

    def __init__(self, port: int) -> None:
        self.firing: set[str] = set()
        self.status: list[str] = []
        self.cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="storm-watch")
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(f"{ALERT_TOPIC}/#", 1), (f"{EDGE_STATUS_TOPIC}/{AGENT}", 1)]
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self.cond:
            if msg.topic.startswith(EDGE_STATUS_TOPIC):
                self.status.append(msg.payload.decode())
            else:
                event = json.loads(msg.payload)
                if event.get("state") == "firing":
                    self.firing.add(str(event["fingerprint"]))
            self.cond.notify_all()

    def wait_status(self, word: str, after: int) -> None:
        """Until the edge's status is `word` in a message after the first `after`."""
        with self.cond:
            if not self.cond.wait_for(lambda: word in self.status[after:], FLAP_GUARD_S):
                raise SystemExit(f"benchmark: the edge's status never said {word!r}: {self.status}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Uplink:
    """The edge's link to the broker: a TCP relay on loopback that can be cut (every connection
    closed, new ones refused at once) and restored, while the edge keeps reading its devices."""

    def __init__(self, broker: int) -> None:
        self.broker = broker
        self.up = True
        self.pairs: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        ).result()
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker)
        self.pairs |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.pairs -= {writer, up_writer}

    def set(self, up: bool) -> None:
        async def apply() -> None:
            self.up = up
            if not up:
                for writer in list(self.pairs):
                    writer.close()

        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(10)

    def close(self) -> None:
        self.set(False)
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def flap(uplink: Uplink, seen: Announcements) -> None:
    """The edge's uplink lost until the broker publishes its will, CUT_S more, then back until
    the edge says "online" again."""
    before = len(seen.status)
    uplink.set(False)
    try:
        seen.wait_status(EDGE_OFFLINE, before)
        time.sleep(CUT_S)  # the outage's length, part of the storm (not a synchronisation)
    finally:
        uplink.set(True)
    seen.wait_status(EDGE_ONLINE, before + 1)


def timeline(storm_s: float, smoke_at: float) -> list[tuple[float, str]]:
    """(seconds into the storm, what): a fault for the simulator, "flap" or "smoke"."""
    events = [(0.2 * storm_s * i / CHARGERS, f"{SITE}/station-{i + 1}:mains") for i in range(CHARGERS)]
    silent = [f"station-{i + 1}" for i in range(CHARGERS)] + [f"rescue-{i + 1}" for i in range(RESCUE)]
    events += [
        (storm_s * (0.25 + 0.35 * i / len(silent)), f"{SITE}/{d}:offline") for i, d in enumerate(silent)
    ]
    events += [(0.3 * storm_s, "flap"), (0.7 * storm_s, "flap"), (smoke_at, "smoke")]
    return sorted(events, key=lambda e: e[0])


def write_configs(work: Path, broker: int, store: str) -> tuple[Path, Path, range]:
    """The scenario and the edge's config; the Modbus ports."""
    scenario = work / "storm.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    ports = len({d.port for d in expand(load_scenario(scenario)) if d.port is not None})
    modbus = free_port_range(ports)
    text = district_edge_config(
        load_scenario(scenario),
        writer={"kind": "influxdb2", "url": store, "org": "linli", "bucket": "linli"},
        modbus_port=modbus,
        mqtt_port=broker,
        agent=AGENT,
        health_interval=2.0,
    )
    text = text.replace('id = "smoke-1"', f'id = "smoke-1"\nname = "{SMOKE_NAME}"')
    edge = work / "edge.toml"
    edge.write_text(text + RULES + '\n[buffer]\npath = "edge.buffer.sqlite"\n', encoding="utf-8")
    return scenario, edge, range(modbus, modbus + ports)


def strike(control: str, fault: str) -> None:
    answer = httpx.post(control, content=fault.encode(), timeout=60)
    if answer.status_code != 200:
        raise SystemExit(f"benchmark: the simulator refused {fault}: {answer.text}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """The notifier stopped as it is asked to, killed if it does not within two minutes."""
    proc.terminate()
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(name: str, work: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One storm through the edge with the notifier configured as `name` ("today", "new"); its figures."""
    work.mkdir(parents=True)
    # One clock for the simulator and the edge, as `linli demo` has (its children take it from
    # the environment): a rescue point's report each simulated minute is 2 s here. The notifier
    # keeps the real one, as a central service does: its group intervals are real seconds, and
    # so are the robot's limit and every time measured here.
    clock = {simtime.ENV: simtime.SharedClock.starting_now(TIME_SCALE).encode()}
    # Every server and process stopped at the end, whatever happens, in reverse order of start.
    with contextlib.ExitStack() as stack:
        broker = start_mosquitto(work / "mq")
        stack.callback(broker.stop)
        store = start_victoria_metrics(work / "vm")
        stack.callback(store.stop)
        robot = Robot()
        stack.callback(robot.close)
        bad = SlowServer(["hang"] * 20 + ["trickle"] * 5 if args.bad_endpoints else [])
        uplink = Uplink(broker.port)
        stack.callback(uplink.close)
        scenario, edge_cfg, modbus = write_configs(work, uplink.port, store.url)
        api = free_port()
        config(work / "notifier.toml", broker.port, api, robot.url, today=name == "today", bad=bad.urls)
        stack.callback(stop, start_notifier(work / "notifier.toml", TOKEN))
        seen = Announcements(broker.port)
        stack.callback(seen.close)
        control = free_port()
        sim = [
            "sim", "district", "--scenario", str(scenario), "--modbus-port", str(modbus.start),
            "--mqtt-port", str(broker.port), "--control-port", str(control),
        ]  # fmt: skip
        district = spawn("district", linli_argv(*sim), work / "logs", clock, control)
        stack.callback(district.stop, 60)
        wait_listening(district, START_S)
        asyncio.run(ports_listening("127.0.0.1", modbus, START_S))
        edge = spawn("edge", linli_argv("edge", "run", "--config", str(edge_cfg)), work / "logs", clock)
        stack.callback(edge.stop, 60)
        seen.wait_status(EDGE_ONLINE, 0)
        time.sleep(args.warm_s)  # the devices read for a while: every rule has its first value
        quiet = len(seen.firing)  # alerts before the storm (none expected)
        url = f"http://127.0.0.1:{control}/faults"
        smoke_at = random.Random(seed).uniform(0, args.storm_s)
        smoke_struck = 0.0
        start = time.monotonic()
        flaps: list[threading.Thread] = []
        for at, what in timeline(args.storm_s, smoke_at):
            time.sleep(max(0.0, start + at - time.monotonic()))  # the storm's own timeline
            if what == "flap":
                flaps.append(threading.Thread(target=flap, args=(uplink, seen), daemon=True))
                flaps[-1].start()
            elif what == "smoke":
                strike(url, f"{SITE}/smoke-1:alarm")
                smoke_struck = time.time()
            else:
                strike(url, what)
        for thread in flaps:
            thread.join(2 * FLAP_GUARD_S)
        # The last devices silenced become alerts SILENT_S later; then the notifier's settling.
        time.sleep(SILENT_S + args.settle_s)
        recorded = {a["fingerprint"] for a in api_get(api, "/alerts?limit=1000")}
        failed = len(api_get(api, "/failed-deliveries"))
        raised = set(seen.firing)
    return figures(robot, bad, smoke_struck, seed) | {
        "run": f"{name} through-edge",
        "alerts_before_storm": quiet,
        "alerts_raised": len(raised),
        "alerts_recorded": len(raised & recorded),
        "failed_recorded": failed,
        "edge_status": seen.status,
    }


def figures(robot: Robot, bad: SlowServer, smoke_struck: float, seed: int) -> dict[str, Any]:
    """What the robot and the bad endpoints took; the smoke alarm's time to each."""
    arrived = [t for t, text in robot.taken if SMOKE_NAME in text]
    smoke = [arrived[0] - smoke_struck if arrived else None]
    messages = [len(robot.taken)]
    smoke_name = SMOKE_NAME.encode()
    for i in range(len(bad.urls)):
        got = [(t, body) for index, t, body in list(bad.got) if index == i]
        smoke.append(
            next(
                (t - smoke_struck for t, body in got if b"fire_point.alarm" in body or smoke_name in body),
                None,
            )
        )
        messages.append(len(got))
    reached = sorted(t for t in smoke if t is not None)
    return {
        "run": "through-edge",
        "seed": seed,
        "messages_taken": len(robot.taken),
        "refused_130101": len(robot.refused),
        "most_in_a_minute": robot.most_in_a_minute(),
        "smoke_s": round(smoke[0], 2) if smoke[0] is not None else None,
        "subscriptions": len(smoke),
        "smoke_reached": len(reached),
        "smoke_p50_s": round(statistics.median(reached), 2) if reached else None,
        "smoke_max_s": round(reached[-1], 2) if len(reached) == len(smoke) else None,
        "most_per_subscription": max(messages),
        # What each message to the robot was about: its first line, with its time.
        "robot_heads": [f"{t - smoke_struck:+.1f}s {text.splitlines()[0][:60]}" for t, text in robot.taken],
    }


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`--runs` storms through the edge of each configuration in turn, each on servers of its own."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.runs):
            for name in ("today", "new"):
                runs.append(run(name, Path(tmp) / f"{name}-{seed}", args, seed))
                print(json.dumps(runs[-1], ensure_ascii=False), file=sys.stderr, flush=True)
    return runs


if __name__ == "__main__":  # the same as `alert_storm.py --through-edge`
    import alert_storm

    sys.argv.insert(1, "--through-edge")
    sys.exit(alert_storm.main())
