"""`linli sim ...`: run device simulators from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from linli.catalog.commands import iso_time, run_until_signal

# The parser is built for every `linli` command, `--help` included: the simulators, their
# Modbus and MQTT libraries and the road graph are imported by the command that runs.
if TYPE_CHECKING:
    from linli.catalog.scenario import Scenario
    from linli.catalog.tls import MqttTls
    from linli.sim.bookings import BookingAgent
    from linli.sim.clock import SimClock
    from linli.sim.district import District, FaultSpec, MqttPublisher
    from linli.transit.gtfs import Feed

# A compressed run that is not given --start begins this many hours of running in the past,
# so that its device clocks reach the present only then: until that the edge takes them.
RUN_BEHIND_H = 12


def _fault(text: str) -> tuple[int, str]:
    from linli.sim.charger import FAULTS as CHARGER_FAULTS
    from linli.sim.modbus_server import Fault

    station, _, mode = text.partition(":")
    modes = [f.value for f in Fault if f is not Fault.NONE] + sorted(CHARGER_FAULTS)
    if not station.isdigit() or mode not in modes:
        raise argparse.ArgumentTypeError(f"'{text}': expected STATION:MODE, MODE one of {', '.join(modes)}")
    return int(station), mode


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
    charger.add_argument("--start", type=iso_time, default=None, help="simulated start, ISO with offset")
    charger.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="STATION:MODE",
        help="inject a fault: exception, silent or slow (the link); overheat, smoke or mains (repeatable)",
    )
    charger.set_defaults(func=_run_charger)
    _add_district(kinds)


def _add_district(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    district = kinds.add_parser(
        "district",
        help="the whole district from a scenario file (Modbus and MQTT devices)",
        description=(
            "Start every device of a scenario: Modbus devices on consecutive TCP ports from "
            "--modbus-port (a building's fire sensors share one gateway port, one unit id each), "
            "MQTT devices publishing to the broker at --mqtt-host:--mqtt-port. With --edge-config, "
            "write the matching edge agent config instead and exit."
        ),
    )
    district.add_argument(
        "--scenario", type=Path, default=None, help="scenario TOML (default: the built-in hongqiao)"
    )
    district.add_argument("--host", default="127.0.0.1", help="address the Modbus devices listen on")
    district.add_argument(
        "--modbus-port", type=int, default=15020, help="first Modbus TCP port (default 15020)"
    )
    district.add_argument("--mqtt-host", default="127.0.0.1", help="MQTT broker host (default 127.0.0.1)")
    district.add_argument("--mqtt-port", type=int, default=1883, help="MQTT broker port (default 1883)")
    district.add_argument(
        "--mqtt-identities",
        type=Path,
        metavar="FILE",
        help=(
            "each device connects as itself (device/SITE/DEVICE) with its password from this file "
            "(`linli broker config`'s secrets/identities.json); else all as $LINLI_MQTT_USERNAME"
        ),
    )
    district.add_argument("--mqtt-ca", type=Path, metavar="FILE", help="connect with TLS, trusting this CA")
    district.add_argument(
        "--mqtt-cert", type=Path, metavar="FILE", help="TLS client certificate (with --mqtt-key)"
    )
    district.add_argument("--mqtt-key", type=Path, metavar="FILE", help="TLS client key")
    district.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    district.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help=(
            "simulated seconds per real second (default 1); faster than real time, simulated time "
            f"starts in the past and reaches the present after {RUN_BEHIND_H} h of running"
        ),
    )
    district.add_argument(
        "--start",
        type=iso_time,
        default=None,
        help="simulated start, ISO with offset (default: see above)",
    )
    district.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="TARGET:NAME",
        help="inject a fault into a site or site/device, e.g. hongxu-tower:leak (repeatable)",
    )
    district.add_argument("--offline", action="append", default=[], metavar="SITE", help="a site loses power")
    district.add_argument(
        "--leak", action="append", default=[], metavar="BUILDING", help="a building's pipes leak"
    )
    district.add_argument(
        "--blocked", action="append", default=[], metavar="TRUCK", help="a truck finds its third stop blocked"
    )
    district.add_argument(
        "--gtfs",
        type=Path,
        default=None,
        help="the trucks' GTFS timetable (default: the scenario's timetable)",
    )
    district.add_argument(
        "--traffic-sd",
        type=float,
        default=0.3,
        help="how far each road segment's real time is from the timetable's, log-normal sd (default 0.3)",
    )
    district.add_argument(
        "--trip-sd", type=float, default=0.1, help="each drive of a segment, log-normal sd (default 0.1)"
    )
    district.add_argument(
        "--no-rush",
        action="store_true",
        help="roads at free flow at every hour (by default slower at 7-9 and 17-19 local time)",
    )
    district.add_argument(
        "--bookings-per-day",
        type=float,
        default=0.0,
        help="property staff book this many renovation pickups a day at --bookings-url (default 0)",
    )
    district.add_argument(
        "--bookings-url",
        default="http://127.0.0.1:8081",
        help="the waste service's API (token: LINLI_CLOUD_TOKEN)",
    )
    district.add_argument(
        "--bookings-journal", type=Path, default=None, help="append each booking asked and answered here"
    )
    district.add_argument(
        "--journal", type=Path, default=None, help="append every MQTT message sent to this file"
    )
    district.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="faults on demand while it runs: POST TARGET:NAME to http://127.0.0.1:PORT/faults",
    )
    district.add_argument(
        "--edge-config", type=Path, default=None, help="write the matching edge config and exit"
    )
    district.add_argument(
        "--writer",
        default="influxdb2",
        choices=("influxdb2", "influxdb1"),
        help="write API of the store, for --edge-config",
    )
    district.add_argument("--store-url", default="http://127.0.0.1:8086", help="store URL, for --edge-config")
    district.add_argument(
        "--database", default="linli", help="InfluxDB 1.x database / 2.x bucket, for --edge-config"
    )
    district.add_argument("--org", default="linli", help="InfluxDB 2.x organisation, for --edge-config")
    district.set_defaults(func=_run_district)


def _district_faults(args: argparse.Namespace) -> list[FaultSpec]:
    from linli.sim.district import FaultSpec

    faults = [FaultSpec.parse(text) for text in args.fault]
    faults += [FaultSpec(site, "offline") for site in args.offline]
    faults += [FaultSpec(site, "leak") for site in args.leak]
    faults += [
        FaultSpec(f"fleet/{truck}" if "/" not in truck else truck, "blocked") for truck in args.blocked
    ]
    return faults


def _booking_agent(args: argparse.Namespace, seed: int, timetable: Feed | None) -> BookingAgent | None:
    """Property staff booking pickups, if asked for; ValueError when the timetable cannot take them."""
    from linli.sim.bookings import BookingAgent

    if args.bookings_per_day <= 0:
        return None
    if timetable is None or timetable.extras.renovation is None:
        raise ValueError("--bookings-per-day needs a timetable with [renovation] trucks")
    token = os.environ.get("LINLI_CLOUD_TOKEN", "")
    return BookingAgent(
        timetable,
        args.bookings_url,
        token=token,
        per_day=args.bookings_per_day,
        seed=seed,
        journal=args.bookings_journal,
    )


def _write_edge_config(args: argparse.Namespace, scenario: Scenario) -> int:
    from linli.sim.district import load_timetable
    from linli.sim.edgeconfig import district_edge_config

    writer: dict[str, object] = {"kind": args.writer, "url": args.store_url}
    if args.writer == "influxdb2":
        writer.update(org=args.org, bucket=args.database)
    else:
        writer["database"] = args.database
    try:
        timetable = load_timetable(scenario, args.gtfs)  # the trucks' names people know
    except ValueError as exc:
        print(f"linli sim district: {exc}", file=sys.stderr)
        return 2
    text = district_edge_config(
        scenario,
        writer=writer,
        modbus_host=args.host,
        modbus_port=args.modbus_port,
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        timetable=timetable,
    )
    args.edge_config.write_text(text, encoding="utf-8")
    print(f"linli sim district: wrote {args.edge_config}")
    return 0


def _district_clock(args: argparse.Namespace) -> SimClock:
    """The clock the district's devices run on."""
    from linli.catalog import simtime
    from linli.sim.clock import SimClock

    shared = simtime.installed()
    if shared is not None:
        # The demo's clock, which its edge and services read too (`linli.catalog.simtime`).
        return SimClock.following(shared.now, shared.scale)
    if args.start is not None:
        # A start in the past catches up with the present and then keeps pace with it.
        return SimClock(start=args.start, time_scale=args.time_scale, capped=args.start <= time.time())
    # Faster than real time, the devices' clocks would run ahead of every edge's.
    return SimClock.behind_wall(args.time_scale, RUN_BEHIND_H)


def _run_district(args: argparse.Namespace) -> int:
    from linli.catalog.errors import ConfigError
    from linli.catalog.mqttclient import MqttBroker
    from linli.catalog.scenario import builtin_scenario_path, load_scenario
    from linli.sim.district import MqttPublisher, build_district, load_timetable, open_journal, run_district
    from linli.sim.timetable import Traffic

    try:
        scenario = load_scenario(args.scenario or builtin_scenario_path())
    except ConfigError as exc:
        print(f"linli sim district: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})
    if args.edge_config is not None:
        return _write_edge_config(args, scenario)
    if args.time_scale < 0:
        print("linli sim district: --time-scale must be >= 0", file=sys.stderr)
        return 2
    clock = _district_clock(args)
    try:
        timetable = load_timetable(scenario, args.gtfs)
        district = build_district(
            scenario,
            clock=clock,
            host=args.host,
            modbus_port=args.modbus_port,
            faults=_district_faults(args),
            timetable=timetable,
            traffic=Traffic(
                seed=scenario.seed, sd=args.traffic_sd, trip_sd=args.trip_sd, rush=not args.no_rush
            ),
        )
    except (ValueError, KeyError) as exc:
        print(f"linli sim district: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    try:
        bookings = _booking_agent(args, scenario.seed, timetable)
        publisher = MqttPublisher(
            district.mqtt_devices,
            MqttBroker(host=args.mqtt_host, port=args.mqtt_port, tls=_tls(args)),
            identities=_identities(args.mqtt_identities),
        )
    except (ValueError, OSError) as exc:
        print(f"linli sim district: {exc}", file=sys.stderr)
        return 2
    journal = publisher.journal = open_journal(args.journal)

    async def main(stop: asyncio.Event) -> None:
        with control_on(args.control_port, district, publisher):
            await _serve(asyncio.Event(), stop)

    async def _serve(started: asyncio.Event, stop: asyncio.Event) -> None:
        task = asyncio.create_task(
            run_district(district, publisher, clock, stop, started=started, bookings=bookings)
        )
        ready = asyncio.create_task(started.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task
            return
        ports = [s.port for s in district.servers]
        span = f"{min(ports)}-{max(ports)}" if ports else "none"
        print(
            f"linli sim district: '{scenario.name}': {sum(len(s.devices) for s in district.servers)} Modbus "
            f"devices on {args.host}:{span}, {len(district.mqtt_devices)} MQTT devices on "
            f"{args.mqtt_host}:{args.mqtt_port}, seed {scenario.seed}, x{args.time_scale:g}, "
            f"simulated time from {dt.datetime.fromtimestamp(clock.start, dt.UTC):%Y-%m-%d %H:%M} UTC",
            flush=True,
        )
        await task

    try:
        return run_until_signal(main)
    finally:
        if journal is not None:
            journal.close()


@contextlib.contextmanager
def control_on(port: int | None, district: District, publisher: MqttPublisher) -> Iterator[None]:
    """The district's fault control on `port` while it runs (in the running event loop), if asked."""
    from linli.sim.control import FaultControl

    if port is None:
        yield
        return
    control = FaultControl(district, publisher, asyncio.get_running_loop(), port)
    control.start()
    try:
        yield
    finally:
        control.stop()


def _run_charger(args: argparse.Namespace) -> int:
    from linli.sim.charger import FAULTS as CHARGER_FAULTS
    from linli.sim.clock import SimClock
    from linli.sim.fleet import ChargerFleetSpec, charger_servers, run_servers
    from linli.sim.modbus_server import Fault

    if args.stations < 1 or not 1 <= args.port <= 65535 - args.stations + 1:
        print(
            "linli sim charger: --stations must be >= 1 and every port must fit below 65536",
            file=sys.stderr,
        )
        return 2
    if args.time_scale < 0 or args.warmup < 0:
        print("linli sim charger: --time-scale and --warmup must be >= 0", file=sys.stderr)
        return 2
    missing = sorted({n for n, _ in args.fault if not 1 <= n <= args.stations})
    if missing:
        print(
            f"linli sim charger: --fault names station {', '.join(map(str, missing))}, "
            f"but there are stations 1 to {args.stations} (see --stations)",
            file=sys.stderr,
        )
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
        faults=tuple((n, Fault(mode)) for n, mode in args.fault if mode not in CHARGER_FAULTS),
        station_faults=tuple((n, mode) for n, mode in args.fault if mode in CHARGER_FAULTS),
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


def _identities(path: Path | None) -> dict[str, str] | None:
    """The broker identities file: {identity: password}."""
    if path is None:
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--mqtt-identities {path}: {exc}") from exc
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ValueError(
            f"--mqtt-identities {path}: not the {{identity: password}} file of `linli broker config`"
        )
    return found


def _tls(args: argparse.Namespace) -> MqttTls | None:
    from pydantic import ValidationError

    from linli.catalog.tls import MqttTls

    if args.mqtt_ca is None:
        if args.mqtt_cert or args.mqtt_key:
            raise ValueError("--mqtt-cert and --mqtt-key need --mqtt-ca")
        return None
    try:
        return MqttTls(ca=args.mqtt_ca, cert=args.mqtt_cert, key=args.mqtt_key)
    except ValidationError as exc:
        raise ValueError(f"--mqtt-cert/--mqtt-key: {exc.errors()[0]['msg']}") from exc
