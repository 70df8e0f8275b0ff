"""`linli demo`: the whole district on servers the demo starts itself, with an inbox and a view.

A Mosquitto with the identities and ACL of `linli broker config`, a VictoriaMetrics, the
notifier and the waste service (on SQLite), the simulated district (`linli sim district`:
chargers, fire sensors, lift cameras, rescue points, the trucks on their GTFS timetable), and
the edge agent in this process. Everything runs on one clock that starts now (or at --start)
and runs --time-scale times faster (`linli.catalog.simtime`). What the keepers, property offices,
requesters and alert subscribers are told goes to the demo's inbox (`linli.demo.inbox`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from linli.catalog import simtime
from linli.demo.files import DemoFiles, district_feed, env_file, write_demo_configs
from linli.demo.inbox import Inbox, InboxServer
from linli.demo.servers import (
    LocalServer,
    free_port,
    free_port_range,
    ports_listening,
    start_mosquitto_with,
    start_store,
    wait_listening,
)
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from linli.transit.gtfs import Feed, load_feed, runs_on, service_zero

AGENT = "hongqiao-edge"  # the edge identity `linli broker config` derives from the edge config
ZONE = ZoneInfo("Asia/Shanghai")
STOP_S = 60.0  # a child that has not flushed and exited by then is killed
STARTUP_S = 120.0  # a loaded machine takes its time to import the services


def linli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "linli.cli", *args]


def spawn(name: str, argv: list[str], logs: Path, env: dict[str, str], port: int = 0) -> LocalServer:
    """Run `argv` in a session of its own: the terminal's Ctrl-C reaches only the demo, which
    stops its children in order (the simulator first, the services last), with SIGINT, on
    which each flushes."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
        )
    return LocalServer(name, proc, port, logs, log, stop_signal=signal.SIGINT)


def run_checked(argv: list[str], what: str) -> str:
    """A short command's output; RuntimeError with its own words when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass
class District:
    """The district's servers and programs, as started."""

    files: DemoFiles
    broker: LocalServer
    inbox: InboxServer
    children: list[LocalServer]
    book_token: str
    admin_token: str
    notifier_url: str
    waste_url: str
    clock: simtime.SharedClock
    control_url: str

    def stop(self) -> dict[str, int]:
        """Every child in reverse order of start, each flushing; their exit codes."""
        codes: dict[str, int] = {}
        for child in reversed(self.children):
            child.stop(STOP_S)
            codes[child.name] = child.proc.returncode
        self.broker.stop()
        return codes


def start_district(
    datadir: Path, *, store_url: str, time_scale: float, start: float | None, faults: list[str]
) -> District:
    """Write the configs and identities, then start the broker, the services and the simulator."""
    scenario_path, feed = district_feed()
    services = datadir / "services"
    # A previous run's service state is on another day's clock: begin afresh (the store keeps its data).
    shutil.rmtree(services, ignore_errors=True)
    inbox = InboxServer(Inbox())
    inbox.start()
    mqtt_port = free_port()
    files = write_demo_configs(
        services,
        scenario_path=scenario_path,
        feed=feed,
        inbox=inbox,
        store_url=store_url,
        mqtt_port=mqtt_port,
        notifier_port=free_port(),
        waste_port=free_port(),
        agent=AGENT,
    )
    modbus_port = free_port_range(files.modbus_ports)
    files.write_edge_config(modbus_port)
    run_checked(
        linli_argv(
            "broker", "config", "--edge-config", str(files.edge), "--notifier-config", str(files.notifier),
            "--waste-config", str(files.waste), "--out", str(files.broker), "--bind", "127.0.0.1",
            "--port", str(mqtt_port),
        ),
        "linli broker config",
    )  # fmt: skip
    broker = start_mosquitto_with(services / "mosquitto", files.broker / "mosquitto.conf", mqtt_port)
    try:
        return _start_programs(
            files, broker, inbox, datadir, time_scale=time_scale, start=start, faults=faults
        )
    except BaseException:
        broker.stop()
        raise


def _start_programs(
    files: DemoFiles,
    broker: LocalServer,
    inbox: InboxServer,
    datadir: Path,
    *,
    time_scale: float,
    start: float | None,
    faults: list[str],
) -> District:
    """The booking token, then the services and the simulator on the demo's clock."""
    admin = secrets.token_urlsafe(24)
    book = run_checked(
        linli_argv(
            "waste", "token", "create", "--scope", "book",
            "--name", f"demo booking link {files.book_compound}", "--office", files.book_office,
            "--compound", files.book_compound, "--config", str(files.waste),
        ),
        "linli waste token create",
    ).strip()  # fmt: skip
    logs = datadir / "logs"
    # The clock starts as late as it can: at x240, each second of set-up is 4 minutes gone.
    clock = install_clock(time_scale, start)
    children: list[LocalServer] = []
    try:
        vault = files.broker / "secrets"
        token = {"LINLI_CLOUD_TOKEN": admin}
        for name, command, config, port in (
            ("notifier", "cloud", files.notifier, files.notifier_port),
            ("waste", "waste", files.waste, files.waste_port),
        ):
            argv = linli_argv(command, "run", "--config", str(config), "--log-level", "warning")
            children.append(spawn(name, argv, logs, {**env_file(vault / f"{name}.env"), **token}, port))
        control = free_port()
        sim = [
            "sim", "district", "--scenario", str(files.scenario), "--gtfs", str(files.gtfs),
            "--modbus-port", str(files.modbus_port), "--mqtt-port", str(files.mqtt_port),
            "--mqtt-identities", str(vault / "identities.json"), "--time-scale", f"{time_scale:g}",
            "--control-port", str(control),
        ]  # fmt: skip
        for fault in faults:
            sim += ["--fault", fault]
        children.append(spawn("district", linli_argv(*sim), logs, token, control))
        os.environ.update(env_file(vault / f"edge-{AGENT}.env"))  # the agent runs in this process
        for child in children:
            if child.port:  # the links printed next work when they are
                wait_listening(child, STARTUP_S)
    except BaseException:
        for child in reversed(children):
            child.stop(STOP_S)
        raise
    return District(
        files,
        broker,
        inbox,
        children,
        book,
        admin,
        f"http://127.0.0.1:{files.notifier_port}",
        f"http://127.0.0.1:{files.waste_port}",
        clock,
        f"http://127.0.0.1:{control}/faults",
    )


def strike(url: str, text: str) -> str:
    """One fault for the running district, through the simulator's control; what it answered."""
    import httpx

    try:
        answer = httpx.post(url, content=text.encode(), timeout=60)
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"{text}: the simulator did not answer ({exc})"
    if answer.status_code != 200:
        return f"{text}: {body.get('error')}"
    return f"{text} on {', '.join(body['devices'])}"


def read_faults(url: str, lines: Iterable[str], struck: list[str]) -> None:
    """Each line typed in the demo's terminal is a fault (TARGET:NAME), struck at once."""
    for line in lines:
        if line.strip():
            struck.append(strike(url, line.strip()))
            print(f"linli demo: fault {struck[-1]}; what people are told is in the inbox", flush=True)


LEAD_S = 20 * 60  # before the next trip leaves: its first keepers are told within minutes


def truck_time(feed: Feed, now: float) -> float:
    """`now` when a truck is on a trip or leaves within the hour; else 20 minutes before the next
    trip leaves, so that a newcomer sees trucks move and keepers told within minutes of starting
    rather than hours (between the morning's and the evening's rounds no truck runs)."""
    zone = ZoneInfo(feed.timezone)
    today = dt.datetime.fromtimestamp(now, zone).date()
    spans = []
    for days in range(-1, 3):
        date = today + dt.timedelta(days=days)
        zero = service_zero(date, feed.timezone)
        spans += [
            (zero + trip.stop_times[0].departure_s, zero + trip.stop_times[-1].arrival_s)
            for trip in feed.trips.values()
            if runs_on(feed, trip, date)
        ]
    if not spans or any(leaves - 3600 <= now <= back for leaves, back in spans):
        return now
    return min(leaves for leaves, _ in spans if leaves > now) - LEAD_S


def install_clock(time_scale: float, start: float | None) -> simtime.SharedClock:
    """The demo's clock, shared with every process it starts."""
    now = time.time()
    clock = simtime.SharedClock(start if start is not None else now, now, time_scale)
    simtime.install(clock)
    return clock


async def wait_children(district: District, stop: asyncio.Event) -> None:
    """Set `stop` when a child exits by itself: the demo is then broken, and says so."""
    while not stop.is_set():
        for child in district.children:
            if child.proc.poll() is not None:
                print(
                    f"\nlinli demo: {child.name} exited with {child.proc.returncode}; see {child.log_path}",
                    file=sys.stderr,
                )
                stop.set()
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def log_to(path: Path) -> None:
    """The screen is the view's: the agent's warnings go to its log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level="WARNING", format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", filename=path, force=True
    )


def run_district_demo(args: argparse.Namespace) -> int:
    """`linli demo` without --chargers-only."""
    from linli.demo.servers import ServerMissingError, ServerStartError

    datadir: Path = args.datadir.resolve()
    log_to(datadir / "logs" / "edge.log")
    start = args.start
    if start is None:
        start = truck_time(load_feed(district_feed()[1]), time.time())
        if start > time.time():
            at = dt.datetime.fromtimestamp(start, ZONE)
            print(f"linli demo: no truck runs now; the district's clock starts at {at:%H:%M}, 20 minutes "
                  "before the next trip leaves (--start chooses another time)", flush=True)  # fmt: skip
    store = start_store(datadir)
    if store is None:
        return 1
    try:
        try:
            district = start_district(
                datadir, store_url=store.url, time_scale=args.time_scale, start=start, faults=args.fault
            )
        except (ServerMissingError, ServerStartError, RuntimeError) as exc:
            print(f"linli demo: {exc}", file=sys.stderr)
            return 1
        agent: Agent | None = None
        try:
            code, agent = _run(args, district, store, datadir)
        except KeyboardInterrupt:
            code = 130  # Ctrl-C before the agent ran: nothing to flush
        finally:
            # Whatever happened, the children (in sessions of their own) must not outlive the demo.
            codes = district.stop()
            district.inbox.stop()
            district.inbox.inbox.save(datadir / "inbox.json")
        if agent is None:
            return code
        failed = {name: c for name, c in codes.items() if c != 0}
        written, left = agent.writer.stats.written, agent.writer.pending
        told = district.inbox.inbox.counts()
        print(
            f"\ndemo stopped: {written:,} lines written to VictoriaMetrics, {left:,} left in the edge "
            f"buffer; {sum(told.values())} messages reached the inbox"
            + (f"; exited with errors: {failed} (logs in {datadir / 'logs'})" if failed else ".")
        )
        print_again(store, datadir, district)
        return code if not failed else 1
    finally:
        store.stop()


def _run(
    args: argparse.Namespace, district: District, store: LocalServer, datadir: Path
) -> tuple[int, Agent | None]:
    """The agent and the view until Ctrl-C; the exit code and the agent, None if it never ran."""
    from linli.catalog.commands import run_until_signal
    from linli.catalog.errors import ConfigError
    from linli.demo.view import Services, run_view
    from linli.edge.config import load_config

    try:
        config = load_config(district.files.edge)
    except ConfigError as exc:
        print(f"linli demo: {exc}", file=sys.stderr)
        return 2, None
    agent = Agent(scaled_health(config, args.time_scale))
    services = Services(
        district.notifier_url,
        district.waste_url,
        district.admin_token,
        stop_names=district.files.stop_names(),
        truck_names=district.files.truck_names(),
    )
    print_started(district, store, district.clock, datadir)
    typed = threading.Thread(
        target=read_faults, args=(district.control_url, sys.stdin, services.struck), daemon=True
    )
    typed.start()  # daemon: a terminal's pending read must not hold the demo's exit

    async def main(stop: asyncio.Event) -> int:
        if args.duration is not None:
            asyncio.get_running_loop().call_later(args.duration, stop.set)
        watch = asyncio.create_task(wait_children(district, stop))
        # The agent starts once every device listens: none is shown refused at the start.
        first = district.files.modbus_port
        await ports_listening("127.0.0.1", range(first, first + district.files.modbus_ports), 120)
        view = asyncio.create_task(run_view(agent, services, district.inbox.inbox, stop))
        # Ctrl-C: the agent stops polling and flushes to the store, which is stopped last.
        complete = await agent.run(stop)
        await view
        await watch
        return 0 if complete else 1

    return run_until_signal(main), agent


HEALTH_SIM_S = 150.0  # the screen counts devices online over the last 5 simulated minutes


def scaled_health(config: EdgeConfig, time_scale: float) -> EdgeConfig:
    """Each device's health point at least every 2.5 simulated minutes: the agent counts its
    heartbeats on the real clock, and at x60 its minute would be an hour of the demo's, leaving
    the big screen's "devices online" (the last 5 minutes) mostly empty."""
    every = max(1.0, HEALTH_SIM_S / time_scale)
    sites = [
        site.model_copy(
            update={
                "devices": [
                    d.model_copy(update={"health_every": min(d.health_every, every)}) for d in site.devices
                ]
            }
        )
        for site in config.sites
    ]
    mqtt = config.mqtt
    if mqtt is not None:
        mqtt = mqtt.model_copy(
            update={
                "health_every": min(mqtt.health_every, every),
                "health_interval": min(mqtt.health_interval, every),
            }
        )
    return config.model_copy(update={"sites": sites, "mqtt": mqtt})


def print_started(district: District, store: LocalServer, clock: simtime.SharedClock, datadir: Path) -> None:
    """Where everything is, and the admin token in a file (never on the screen)."""
    token = district.files.folder / "admin-token"
    token.touch(0o600)
    token.write_text(district.admin_token + "\n", encoding="utf-8")
    started = dt.datetime.fromtimestamp(clock.start, ZONE)
    print(
        f"linli demo: the district from {started:%Y-%m-%d %H:%M} Asia/Shanghai, x{clock.scale:g}\n"
        f"  store      {store.url} (VictoriaMetrics; UI at {store.url}/vmui)\n"
        f"  inbox      {district.inbox.url}/  (what each keeper, office, requester and subscriber got)\n"
        f"  booking    {district.waste_url}/book#token={district.book_token}  "
        f"({district.files.book_office}, {district.files.book_compound})\n"
        f"  notifier   {district.notifier_url}/alerts   waste {district.waste_url}/trips  "
        f"(token: the demo's admin token in {district.files.folder / 'admin-token'})\n"
        f"  faults     type one here, TARGET:NAME and Enter: ronghua-1/station-2:smoke (or overheat),\n"
        "             fleet/truck-wet-north:blocked (or breakdown), ronghua-2:offline; or from another\n"
        f"             terminal: curl --data ronghua-1/station-2:smoke {district.control_url}\n"
        f"  configs    {district.files.folder}   logs {datadir / 'logs'}\n"
        f"  big screen linli dashboards picture --victoria-metrics {store.url} --out big-screen.png",
        flush=True,
    )


def print_again(store: LocalServer, datadir: Path, district: District) -> None:
    """Where the data is and commands that work as printed (curl's -g: `{}` are not globs; the
    data is on the demo's clock, ahead of the wall's when it ran faster: hence `end`)."""
    port = 8428
    query = '{__name__=~"(charger|fire|camera|rescue|truck|waste).*"}'
    print(f"The data stays in {store.datadir}; the services' state in {district.files.folder}. Again:")
    print(f"  victoria-metrics -storageDataPath {store.datadir / 'data'} -httpListenAddr 127.0.0.1:{port} &")
    print(
        f"  curl -g 'http://127.0.0.1:{port}/api/v1/export?match[]={query}"
        "&start=0&end=2100-01-01T00:00:00Z' | head"
    )
    print(f"  python3 -m json.tool {datadir / 'inbox.json'} | head -40     # what each person was told")
    print(f"  linli dashboards picture --victoria-metrics http://127.0.0.1:{port} --out big-screen.png")
    print(f"  sqlite3 {district.files.folder / 'waste.sqlite'} .tables")
