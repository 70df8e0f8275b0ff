"""`linli demo`: the district on local servers (`linli.demo.district`), or with --chargers-only,
simulated stations -> edge agent -> a local VictoriaMetrics, with a live view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from linli.catalog.commands import iso_time, run_until_signal, setup_logging
from linli.demo.servers import (
    free_port_range,
    ports_listening,
    start_store,
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli demo`."""
    demo = subparsers.add_parser(
        "demo",
        help="the whole district on local servers, with an inbox and a live view",
        description=(
            "Start the whole simulated district on servers of its own on free loopback ports: a "
            "Mosquitto with an identity per device and service, a VictoriaMetrics, the notifier and "
            "the waste service (SQLite), the devices and the trucks on their timetable, and the edge "
            "agent; every keeper's, office's, requester's and subscriber's message goes to a local "
            "inbox page. Every part runs on one clock that starts now and runs --time-scale times "
            "faster. With --chargers-only: the charging stations and the agent only. Ctrl-C stops "
            "everything, flushed, and says how to look at the data again."
        ),
    )
    demo.add_argument(
        "--chargers-only",
        action="store_true",
        help="only the charging stations (--stations), the agent and the store",
    )
    demo.add_argument(
        "--stations", type=int, default=10, help="with --chargers-only: simulated stations (default 10)"
    )
    demo.add_argument(
        "--time-scale", type=float, default=60.0, help="simulated seconds per second (default 60)"
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of the stations' random behaviour: same seed, same day (default 1)",
    )
    demo.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="with --chargers-only: poll interval in seconds (default 1)",
    )
    demo.add_argument(
        "--start",
        type=iso_time,
        default=None,
        help="the district's clock starts at this time (ISO with offset; default now)",
    )
    demo.add_argument(
        "--fault", action="append", default=[], metavar="TARGET:NAME",
        help="a fault in the district from the start, as `linli sim district --fault` "
        "(e.g. ronghua-1/station-1:smoke; repeatable)",
    )  # fmt: skip
    demo.add_argument(
        "--datadir",
        type=Path,
        default=Path(".linli-demo"),
        help="where the store keeps its data, kept after the demo (default .linli-demo)",
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )
    demo.set_defaults(func=_demo)


def write_config(
    path: Path,
    *,
    store_url: str,
    first_port: int,
    stations: int,
    interval: float,
    every_poll: bool = False,
    metrics: str = "",
) -> None:
    """The agent config the demo runs, kept beside the data for people to read and reuse.

    `every_poll` stores every point at every poll rather than by exception; `metrics` is the
    HOST:PORT of the agent's /metrics, if any."""
    devices = "".join(
        f"""
[[sites.devices]]
id = "charger-{i:02d}"
profile = "charger"
host = "127.0.0.1"
port = {first_port + i - 1}
interval = {interval}
timeout = {min(0.5, interval)}
{"report_by_exception = false" if every_poll else ""}"""
        for i in range(1, stations + 1)
    )
    path.write_text(
        f"""# Written by `linli demo`.
[agent]
name = "demo-edge"
log_level = "warning"
{f'metrics = "{metrics}"' if metrics else ""}

[writer]
kind = "influxdb2"
url = "{store_url}"
org = "linli"
bucket = "linli"
batch_size = 5000
flush_interval = 1.0

[[sites]]
id = "hongqiao-demo"
name = "虹桥 demo compound"
{devices}""",
        encoding="utf-8",
    )


def _demo(args: argparse.Namespace) -> int:
    if args.time_scale <= 0:
        print("linli demo: --time-scale must be > 0", file=sys.stderr)
        return 2
    if not args.chargers_only:
        from linli.demo.district import run_district_demo

        return run_district_demo(args)
    return _chargers(args)


def _chargers(args: argparse.Namespace) -> int:
    from linli.catalog.errors import ConfigError
    from linli.edge.agent import Agent
    from linli.edge.config import load_config
    from linli.edge.view import run_view
    from linli.sim.clock import SimClock
    from linli.sim.fleet import ChargerFleetSpec, charger_servers, run_servers

    setup_logging("warning")
    datadir: Path = args.datadir.resolve()
    store = start_store(datadir)
    if store is None:
        return 1
    try:
        first_port = free_port_range(args.stations)
        config_path = datadir / "edge.toml"
        write_config(
            config_path,
            store_url=store.url,
            first_port=first_port,
            stations=args.stations,
            interval=args.interval,
        )
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            print(f"linli demo: {exc}", file=sys.stderr)
            return 2
        clock = SimClock(time_scale=args.time_scale)
        spec = ChargerFleetSpec(port=first_port, stations=args.stations, seed=args.seed, warmup_s=3 * 3600)
        servers = charger_servers(spec, clock)
        # The demo's buffer lives with its data, not in the current folder.
        config = config.model_copy(
            update={"buffer": config.buffer.model_copy(update={"path": datadir / "edge.buffer.sqlite"})}
        )
        agent = Agent(config)
        print(f"store: {store.url} (VictoriaMetrics; UI at {store.url}/vmui)  agent config: {config_path}")

        async def main(stop: asyncio.Event) -> int:
            if args.duration is not None:
                asyncio.get_running_loop().call_later(args.duration, stop.set)
            listening = asyncio.Event()
            sim = asyncio.create_task(run_servers(servers, stop, started=listening))
            # The agent starts once every station listens: none is shown refused at the start.
            await asyncio.wait_for(listening.wait(), 60)
            await ports_listening("127.0.0.1", range(first_port, first_port + args.stations), 30)
            view = asyncio.create_task(run_view(agent, stop))
            # Ctrl-C stops the stations and the agent; the agent flushes to the store, which
            # runs in a session of its own and is stopped only after that (below).
            complete = await agent.run(stop)
            await view
            await sim
            return 0 if complete else 1

        code = run_until_signal(main)
        written, left = agent.writer.stats.written, agent.writer.pending
        print(f"\ndemo stopped: {written:,} lines written to VictoriaMetrics, {left:,} left in the buffer.")
        print(f"The data stays in {store.datadir}. To look at it again:")
        print(
            f"  victoria-metrics -storageDataPath {store.datadir / 'data'} -httpListenAddr 127.0.0.1:8428 &"
        )
        # -g: without it curl takes the braces and brackets for its own globs.
        print("  curl -g 'http://127.0.0.1:8428/api/v1/export?match[]={__name__=~\"charger_.*\"}' | head")
        return code
    finally:
        with contextlib.suppress(Exception):
            store.stop()
