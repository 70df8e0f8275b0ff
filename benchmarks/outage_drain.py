"""Outage drain: how fast the agent writes a store outage's backlog while live data goes on.

The agent (in this process) takes camera heartbeats over MQTT QoS 1 (20 cameras, 200
messages/s by default) into VictoriaMetrics; the store is stopped for `--outage` seconds and
started again. Printed: the backlog at the restart, how long it took to write, and its rate
against the live rate. The goal: faster than live data arrives, or an outage never ends.
`test_outages.py` checks that nothing is lost or doubled; this is the figure it prints.

    .venv/bin/python benchmarks/outage_drain.py --outage 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from linli.demo.servers import LocalServer, start_mosquitto, start_victoria_metrics
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from mqttload import Fleet, Publisher

CAMERAS = 20


def agent_config(fleet: Fleet, mqtt_port: int, vm_url: str, work: Path) -> EdgeConfig:
    """The fleet's cameras by site, written to `vm_url` through a buffer in `work`."""
    sites: dict[str, list[dict[str, str]]] = {}
    for dev in fleet.devices["camera"]:
        sites.setdefault(dev.site, []).append({"id": dev.topic.split("/")[2], "profile": "camera"})
    return EdgeConfig.model_validate(
        {
            "agent": {"name": "drain"},
            "buffer": {"path": str(work / "buffer.sqlite")},
            "writer": {"kind": "influxdb2", "url": vm_url, "org": "linli", "bucket": "linli"},
            "mqtt": {"port": mqtt_port, "subscribe": fleet.filters()},
            "sites": [{"id": site, "devices": devices} for site, devices in sites.items()],
        }
    )


async def written_by(agent: Agent, lines: int, since: float, limit_s: float) -> float:
    """When (monotonic) the writer had written `lines` of the outage's backlog."""
    while agent.writer.stats.backlog_written < lines:
        if time.monotonic() - since > limit_s:
            raise SystemExit(f"outage_drain: {agent.writer.stats.backlog_written} of {lines} lines written")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def outage(args: argparse.Namespace, work: Path, broker: LocalServer) -> dict[str, Any]:
    """Live load, a store outage, the restart; the figures of the drain."""
    vm = start_victoria_metrics(work / "vm")
    fleet = Fleet({"camera": CAMERAS}, {"camera": CAMERAS / args.rate}, CAMERAS, 1)
    agent = Agent(agent_config(fleet, broker.port, vm.url, work))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        assert agent.mqtt is not None
        await asyncio.wait_for(asyncio.to_thread(agent.mqtt.subscribed.wait), 30)
        publisher = Publisher(fleet, broker.port, "drain")
        hold_s = args.before + args.outage + args.after
        sending = asyncio.create_task(asyncio.to_thread(publisher.send, hold_s))
        await asyncio.sleep(args.before)  # steady state before the outage
        port = vm.port
        await asyncio.to_thread(vm.stop)
        await asyncio.sleep(args.outage)
        backlog = agent.buffer.stats.lines
        vm = await asyncio.to_thread(start_victoria_metrics, work / "vm", port)
        restarted = time.monotonic()
        # Timed from the restart: the writer's backoff, which decides when it tries again, included.
        resumed = await written_by(agent, 1, restarted, args.outage * 10)
        drained = await written_by(agent, backlog, restarted, args.outage * 10)
        live_throughout = not sending.done()
        await sending
        publisher.close()
    finally:
        stop.set()
        await task
        vm.stop()
    return {
        "outage_s": args.outage,
        "live_per_s": fleet.rate,
        "backlog_lines": backlog,
        "first_write_after_restart_s": round(resumed - restarted, 2),
        "drain_s": round(drained - restarted, 2),
        "drain_per_s": round(backlog / (drained - restarted)),
        "live_load_throughout_the_drain": live_throughout,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the store is down")
    parser.add_argument("--rate", type=float, default=200.0, help="live messages/s")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before the outage")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of load after the restart")
    args = parser.parse_args(argv)
    print(f"# {platform.machine()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="linli-drain-") as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mosquitto")
        try:
            figures = asyncio.run(outage(args, work, broker))
        finally:
            broker.stop()
    print(json.dumps(figures))
    faster = figures["drain_per_s"] > figures["live_per_s"]
    print(f"backlog drained {'faster' if faster else 'SLOWER'} than live data arrives")
    return 0 if faster else 1


if __name__ == "__main__":
    sys.exit(main())
