"""`linli sim ...`: run device simulators from the command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys

from linli.cli_support import run_until_signal
from linli.sim.clock import SimClock
from linli.sim.fleet import ChargerFleetSpec, charger_servers, run_servers
from linli.sim.modbus_server import Fault


def _fault(text: str) -> tuple[int, Fault]:
    station, _, mode = text.partition(":")
    try:
        return int(station), Fault(mode)
    except ValueError:
        modes = ", ".join(f.value for f in Fault if f is not Fault.NONE)
        raise argparse.ArgumentTypeError(f"'{text}': expected STATION:MODE, MODE one of {modes}") from None


def _start_time(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}': expected an ISO time like 2021-01-08T18:00+08:00"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"'{text}': give a UTC offset, e.g. +08:00")
    return when.timestamp()


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli sim` and its commands."""
    sim = subparsers.add_parser("sim", help="run device simulators")
    kinds = sim.add_subparsers(dest="kind", required=True, metavar="KIND")
    charger = kinds.add_parser(
        "charger",
        help="e-bike charging stations over Modbus TCP",
        description="Serve K charging stations over Modbus TCP; station i listens on PORT+i-1, unit id 1.",
    )
    charger.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    charger.add_argument("--port", type=int, default=5020, help="TCP port of station 1 (default 5020)")
    charger.add_argument("--stations", type=int, default=1, help="number of stations K (default 1)")
    charger.add_argument("--ports", type=int, default=10, choices=(10, 12), help="ports per station")
    charger.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same day")
    charger.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second; 0 freezes time (fixed values, for tests)",
    )
    charger.add_argument("--warmup", type=float, default=0.0, help="simulated seconds to run before serving")
    charger.add_argument("--start", type=_start_time, default=None, help="simulated start, ISO with offset")
    charger.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="STATION:MODE",
        help="inject a fault: exception, silent or slow (repeatable)",
    )
    charger.set_defaults(func=_run_charger)


def _run_charger(args: argparse.Namespace) -> int:
    if args.stations < 1 or not 1 <= args.port <= 65535 - args.stations + 1:
        print(
            "linli sim charger: --stations must be >= 1 and every port must fit below 65536",
            file=sys.stderr,
        )
        return 2
    if args.time_scale < 0 or args.warmup < 0:
        print("linli sim charger: --time-scale and --warmup must be >= 0", file=sys.stderr)
        return 2
    clock = SimClock(time_scale=args.time_scale)
    if args.start is not None:
        clock.start = args.start
    spec = ChargerFleetSpec(
        host=args.host,
        port=args.port,
        stations=args.stations,
        ports=args.ports,
        seed=args.seed,
        faults=tuple(args.fault),
        warmup_s=args.warmup,
    )
    servers = charger_servers(spec, clock)
    last = args.port + args.stations - 1

    async def main(stop: asyncio.Event) -> None:
        started = asyncio.Event()
        task = asyncio.create_task(run_servers(servers, stop, started=started))
        ready = asyncio.create_task(started.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task  # raises the reason it could not start, e.g. the port is taken
            return
        print(
            f"linli sim charger: {args.stations} station(s) x {args.ports} ports on "
            f"{args.host}:{args.port}-{last}, unit 1, seed {args.seed}, x{args.time_scale:g}",
            flush=True,
        )
        await task

    return run_until_signal(main)
