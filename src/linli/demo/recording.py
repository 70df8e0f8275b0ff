"""A recording of the district: the simulator through the edge agent into InfluxDB 1.x.

The dashboards' tests run every query against one, and the picture of the big screen in
the docs is drawn from one. The simulator starts `simulated_s` in the past and runs
`time_scale` times faster than real time, so its MQTT devices (which carry their own
clocks) fill the whole simulated stretch up to now; Modbus devices have no clock and are
stamped by the edge at each poll, so theirs covers the real minutes the run took.

The district runs normally for the first half; then the simulator restarts with the
faults injected, so the second half shows trouble starting (alarms raised, a site
going dark), as annotations and alerts do in operation. The trucks run a copy of the
timetable whose trips leave 25 minutes before the trouble starts, whatever the hour, and
the waste service follows them into the store (trips, bin-room visits, a blocked gate);
at the end the tonnage and the service's figures are rolled up, as `linli waste stats
--write` does.

Modbus points are stored by exception, as the agent stores them in operation. Given
`every_poll`, the agent stores every poll there instead, and the recording's database is
made from it by the agent's own deadband filter (`thin`): the dashboards' queries can then
be held against both.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import re
import select
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from linli.catalog.lineprotocol import format_fields, series_key
from linli.catalog.profile import builtin_profiles
from linli.catalog.registers import Value
from linli.catalog.scenario import builtin_scenario_path, expand, load_scenario
from linli.cloud.waste.bookings import BookingRequest
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.outbox import VisitStore
from linli.cloud.waste.rollups import ZONE
from linli.cloud.waste.service import WasteService
from linli.cloud.waste.store import write_lines, write_rollups
from linli.dashboards.influxql import ident
from linli.dashboards.influxv1 import run as run_query
from linli.demo.servers import free_port, free_port_range
from linli.edge.agent import Agent
from linli.edge.config import EdgeConfig
from linli.edge.deadband import Reporter, deadbands
from linli.edge.rules import State
from linli.sim.edgeconfig import district_edge_config
from linli.sim.modbus_server import Fault
from linli.transit.gtfs import load_feed
from linli.transit.times import gtfs_seconds

log = logging.getLogger(__name__)

# Something in trouble for every kind of panel, so that no panel of the screen is empty.
FAULTS = (
    "changhong-1/station-1:overheat",
    "hongxu-1/station-1:smoke",
    "gubei-1/station-1:mains",
    "hongxu-tower:leak",
    "ronghua-tower/sprinkler-1:sensor_fault",
    "changhong-tower-2/pump-1:pump_fault",
    "changhong-tower-1/smoke-2:alarm",
    "ronghua-tower/door-1:fault",
    "yili-1/rescue-1:aed_low",
    "fleet/truck-dry-north:blocked",
)
OFFLINE_SITE = "zunyi-1"
# How long the simulator may take to build the district and say it is ready before the recording
# gives up: seconds on a quiet machine, over 30 s with every core busy (a deadline, not a pace).
READY_TIMEOUT_S = 180.0
# The trucks leave this long before the trouble starts: their trips take an hour or more.
LEAVE_BEFORE_S = 1500.0
# How long the second half may run on, past its stretch, until its trouble is in: a guard for
# a pipeline that never records it, not a pace (the events end the wait).
RECORDED_TIMEOUT_S = 300.0
# How long the renovation planner (a worker process) may take to offer a pickup: a guard.
OFFER_TIMEOUT_S = 60.0
# How long the simulator may take to exit once told to stop: a guard (its exit ends the wait).
# Under stress-ng it took longer than the 10 s the recording once allowed it.
DISTRICT_STOP_TIMEOUT_S = 120.0
# How long the stopped agent may take to write what it holds to the store: a guard for a store
# that never answers, not a pace (its drain ends once the buffer is empty). The agent's own
# default, 10 s, left the last lines in its buffer on a loaded machine.
STORED_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Recording:
    """Where the recording is and the stretch of time it covers (ms since the epoch)."""

    url: str
    database: str
    start_ms: int
    end_ms: int


async def record(
    *,
    url: str,
    database: str,
    mqtt_port: int,
    workdir: Path,
    modbus_port: int | None = None,
    simulated_s: float = 7200.0,
    time_scale: float = 60.0,
    faults: tuple[str, ...] = FAULTS,
    poll_s: float = 1.0,
    timetable: Path = Path("deploy/gtfs/hongqiao"),
    every_poll: str | None = None,
) -> Recording:
    """Run the district for `simulated_s` of simulated time into `database`, which must exist.

    Modbus devices listen on consecutive ports from `modbus_port` (free ones when not given).
    With `every_poll` (another existing database), every poll is stored there and `database`
    is thinned from it.
    """
    scenario = load_scenario(builtin_scenario_path())
    if modbus_port is None:
        ports = 1 + max(d.port for d in expand(scenario) if d.port is not None)
        modbus_port = free_port_range(ports)
    text = district_edge_config(
        scenario,
        writer={"kind": "influxdb1", "url": url, "database": every_poll or database, "flush_interval": 0.5},
        modbus_port=modbus_port,
        mqtt_port=mqtt_port,
        agent="recording-edge",
        health_interval=2.0,
        # Time runs fast: Modbus devices are polled every `poll_s` real seconds so that a short
        # episode (a port overheating until it is stopped) falls between no two polls.
        poll_s=poll_s,
        every_poll=every_poll is not None,
    )
    # The agent's durable buffer lives with the rest of the run.
    text += f"\n[buffer]\npath = {json.dumps(str(workdir / 'edge.buffer.sqlite'))}\n"
    config = EdgeConfig.model_validate(tomllib.loads(text))
    agent = Agent(config)
    stop = asyncio.Event()
    task = write_all(agent, stop)
    start_s = time.time() - simulated_s
    half = simulated_s / 2
    # The truck whose gate is found blocked leaves just after the trouble starts, so that its
    # third bin room falls in the second half whatever the traffic at this hour.
    blocked_route = "dry-north"
    # The others are back (their visits written) a quarter of an hour before the stretch ends:
    # time for a simulator that runs late on a loaded machine.
    leave_s = start_s + half - LEAVE_BEFORE_S
    gtfs = shifted_timetable(
        timetable, workdir / "gtfs", leave_s, later={blocked_route: LEAVE_BEFORE_S + 60.0}
    )
    _quiet_and_on_shift(gtfs, start_s)
    waste = WasteService(
        WasteConfig(
            gtfs=gtfs,
            state=str(workdir / "waste.sqlite"),
            broker=TruckBroker(port=mqtt_port),
            api_port=free_port(),
            attempts=1,
            store=VisitStore(url=url, database=database, flush_s=1.0),
        ),
        token="recording",  # noqa: S106 (its API answers on loopback for the run only)
    )
    waste_task = asyncio.create_task(waste.run(stop))
    try:
        assert agent.mqtt is not None
        deadline = time.monotonic() + 30
        while not (agent.mqtt.subscribed.is_set() and waste.started.is_set()):
            if time.monotonic() > deadline or waste_task.done():
                raise RuntimeError(f"the agent or the waste service did not subscribe on port {mqtt_port}")
            await asyncio.sleep(0.05)
        for offset, trouble in ((0.0, False), (half, True)):
            args = [
                "--modbus-port",
                str(modbus_port),
                "--mqtt-port",
                str(mqtt_port),
                "--time-scale",
                str(time_scale),
                "--start",
                datetime.fromtimestamp(start_s + offset, UTC).isoformat(),
                "--gtfs",
                str(gtfs),
                # Whatever the hour the recording is made at: in a rush hour trucks that leave at
                # its half would not finish their trips (and write their visits) before its end.
                "--no-rush",
            ]
            if trouble:
                args += ["--offline", OFFLINE_SITE, *(a for fault in faults for a in ("--fault", fault))]
            sim = _start_district(args, workdir)
            # Simulated time is `start_s + offset` now.
            ready, ready_ms = time.monotonic(), int(time.time() * 1000)
            try:
                if trouble:
                    await _renovation_day(waste)
                    await _until_recorded(agent, waste, faults, ready + half / time_scale, ready_ms)
                    # Ended while the district still runs: its devices are not seen going dark
                    # as the simulator stops, which the screen's "now" would show.
                    end_ms = await stop_writing(stop, task, url, waste_task)
                else:
                    await asyncio.sleep(half / time_scale)  # this half of the stretch, in real time
            finally:
                await stop_district(sim)
    finally:
        if not stop.is_set():  # the recording failed: what runs stops, and the failure is said
            stop.set()
            await asyncio.gather(task, waste_task, return_exceptions=True)
    # As `linli waste rollup` does in operation: the periods the recording touches, whole.
    since = datetime.fromtimestamp(start_s, ZoneInfo(ZONE))
    if every_poll is not None:
        await asyncio.to_thread(thin, url, every_poll, database)
    await asyncio.to_thread(
        write_rollups, url, database, since, datetime.now(ZoneInfo(ZONE)) + timedelta(days=1)
    )
    return Recording(url, database, int(start_s * 1000), end_ms)


async def stop_district(sim: subprocess.Popen[str]) -> None:
    """Stop the simulator and wait until it has exited, so that the next half's can listen on
    its Modbus ports: in a thread, so that the agent and the waste service run on meanwhile.
    Killed if it is still there after `DISTRICT_STOP_TIMEOUT_S` (a guard)."""
    sim.terminate()
    try:
        await asyncio.to_thread(sim.wait, DISTRICT_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("the district simulator did not stop within %g s; killed", DISTRICT_STOP_TIMEOUT_S)
        sim.kill()
        await asyncio.to_thread(sim.wait)


def write_all(agent: Agent, stop: asyncio.Event) -> asyncio.Task[bool]:
    """The agent running until `stop`, then writing everything it holds, however long the store
    takes (`STORED_TIMEOUT_S` a guard); True once it has."""
    return asyncio.create_task(agent.run(stop, drain_deadline_s=STORED_TIMEOUT_S))


async def stop_writing(
    stop: asyncio.Event, agent: asyncio.Task[bool], url: str, *others: asyncio.Task[int]
) -> int:
    """Stop the `agent` running with `stop` (and the `others`), once it has written everything
    it holds to the store at `url`; when it was stopped (ms since the epoch), the recording's end.

    Its last lines are the recording's last moments (an alert resolving, each site's latest
    values): a recording whose agent gave up on them after its default 10 s drain showed a
    screen without them. The end is the moment the district stopped, not when the lines were
    written or the recording post-processed: the screen's "now" panels look five minutes back
    from it, and a site's values unchanged are stored every two minutes only."""
    end_ms = int(time.time() * 1000)
    stop.set()
    stored = await agent
    for task in others:
        await task
    if not stored:
        raise RuntimeError(
            f"the agent could not write everything it recorded to {url}; the rest is in its buffer"
        )
    return end_ms


async def _until_recorded(
    agent: Agent, waste: WasteService, faults: tuple[str, ...], paced: float, since_ms: int
) -> None:
    """Run the second half until `paced` (monotonic: its stretch of simulated time), and on until
    its trouble is in: a trip over (its bin-room visits written, which the service's figures are
    read from), every overheating port's alert fired and resolved (stopped by the edge's
    interlock, and cooled), every faulted device read since the half began (`since_ms`: a
    starved simulator answered a station's poll with its smoke too late, and the screen had no
    smoke alarm), and every station outside the dark site online. A loaded machine
    runs the simulator and the edge late: a recording paced by the wall clock alone ended
    before any trip did, with the overheating station's answers all too late, or with stations
    the starved simulator answered late shown offline. The simulator's clock stops at the
    present (then keeps pace with it), so waiting longer puts no device ahead of the edge."""
    hot = {f.removesuffix(":overheat") for f in faults if f.endswith(":overheat")}
    faulted = _faulted_devices(faults)
    seen: set[str] = set()  # the agent keeps its recent events only: collected as they come
    deadline = paced + RECORDED_TIMEOUT_S
    while True:
        seen |= {
            f"{e.site}/{e.device}" for e in agent.alerting.events if e.port and e.state is State.RESOLVED
        }
        # Stations a starved simulator answered too late are offline on the edge's screen, which
        # shows the injected trouble only once they answer again.
        late = [
            p.name for p in agent.pollers if not p.health.online and not p.name.startswith(f"{OFFLINE_SITE}/")
        ]
        missing = [
            *sorted(hot - seen),
            *(f"{device} read with its fault" for device in sorted(faulted - _read_since(agent, since_ms))),
            *([] if waste.engine.finished else ["a trip over"]),
            *late,
        ]
        if not missing and time.monotonic() >= paced:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the recording's second half never recorded: {', '.join(missing)}")
        await asyncio.sleep(0.2)


def _faulted_devices(faults: tuple[str, ...]) -> set[str]:
    """The edge's devices ("site/device") given a fault it reads: a station's smoke, a fire
    pump's fault. Not a site's (a tank slowly leaking), a truck's (the waste service follows
    it), one that makes the device stop answering, or one on the dark site."""
    mute = {str(f) for f in Fault if f is not Fault.NONE}
    devices = {device for device, _, kind in (f.partition(":") for f in faults) if kind not in mute}
    return {d for d in devices if "/" in d and not d.startswith(("fleet/", f"{OFFLINE_SITE}/"))}


def _read_since(agent: Agent, since_ms: int) -> set[str]:
    """The devices ("site/device") the edge has read since `since_ms` (ms since the epoch):
    polled with an answer, or a reading received (not a status message: the simulator's
    "online" comes before any reading)."""
    read = {p.name for p in agent.pollers if p.health.last_seen_ms >= since_ms}
    if agent.mqtt is not None:
        read |= {
            f"{site}/{dev}"
            for (_, site, dev), d in agent.mqtt.devices.items()
            if d.last_reading_ms >= since_ms
        }
    return read


def thin(url: str, source: str, target: str) -> None:
    """Copy `source` into `target`, Modbus points stored by exception with each device's deadbands
    (as the agent would have stored them); everything else as it is."""
    modbus = {p.measurement: p for p in builtin_profiles().values() if p.modbus is not None}
    for (measurement,) in (row for s in run_query(url, source, "SHOW MEASUREMENTS") for row in s.values):
        name = str(measurement)
        quoted = ident(name)
        profile = modbus.get(name)
        if profile is None:
            run_query(url, source, f"SELECT * INTO {ident(target)}..{quoted} FROM {quoted} GROUP BY *")  # noqa: S608 (names quoted)
            continue
        types = {
            str(key): str(kind)
            for s in run_query(url, source, f"SHOW FIELD KEYS FROM {quoted}")
            for key, kind in s.values
        }
        channel_tag = profile.group_tag
        lines: list[str] = []
        for series in run_query(url, source, f"SELECT * FROM {quoted} GROUP BY *"):  # noqa: S608 (quoted)
            tags = {k: v for k, v in series.tags.items() if v}  # GROUP BY * gives absent tags as ""
            reporter = Reporter(deadbands(profile, tags))
            key = series_key(name, tags)
            channel = int(tags[channel_tag]) if channel_tag and channel_tag in tags else None
            for row in series.values:
                time_ms = int(str(row[0]))
                fields = {
                    col: _typed(value, types[col])
                    for col, value in zip(series.columns[1:], row[1:], strict=True)
                    if value is not None
                }
                kept = reporter.keep(channel, fields, time_ms)
                if kept:
                    lines.append(f"{key} {format_fields(kept)} {time_ms}")
        for start in range(0, len(lines), 5000):
            write_lines(url, target, lines[start : start + 5000])


def _typed(value: object, kind: str) -> Value:
    """A value read back as JSON, as the type its field has in the store."""
    if kind == "boolean":
        return bool(value)
    if kind == "integer":
        return int(str(value))
    return float(str(value))


async def _renovation_day(waste: WasteService) -> None:
    """Property staff book three pickups; the driver takes them and collects the first of the
    round, answering and driving as the truck's terminal would report it."""
    renovation = waste.engine.renovation
    if renovation is None:
        return
    now = time.time()
    zone = ZoneInfo(waste.engine.feed.timezone)
    made = []
    for n, compound in enumerate(("gubei-1", "hongmei-1", "yili-1")):
        request = BookingRequest.model_validate(
            {
                "compound": compound,
                "bags": 20 + 10 * n,
                "earliest": datetime.fromtimestamp(now + 600, zone).isoformat(),
                "latest": datetime.fromtimestamp(now + 4 * 3600, zone).isoformat(),
                "contact": {
                    "name": f"Property office, {compound}",
                    "email": f"property.{compound}@district.example",
                },
                "key": f"recording-{compound}",
            }
        )
        made.append(renovation.book(request, now, "property office")[0])
    truck = next(iter(renovation.trucks))

    def offered() -> list[str]:
        return [b.id for b in renovation.bookings.all() if b.state == "offered" and b.truck == truck]

    # The plans are solved in a worker process: each offer comes once its plan is back, and
    # each answer offers the next pickup of the truck's round.
    for _ in made:
        if not await _until(lambda: bool(offered()), OFFER_TIMEOUT_S):
            break
        for booking_id in offered():
            renovation.reply(truck, booking_id, True, time.time())
    renovation.dispatch(time.time())
    await _until(lambda: renovation.next_of(truck) is not None, OFFER_TIMEOUT_S)
    nxt = renovation.next_of(truck)
    first = renovation.bookings.get(nxt) if nxt else None
    if first is None or first.state != "accepted":
        return
    feed = waste.engine.feed
    depot = feed.stops[feed.extras.depots[0]]
    renovation.location(truck, depot.lat, depot.lon, 20.0, time.time())
    renovation.location(truck, first.lat, first.lon, 0.0, time.time())
    renovation.lift(truck, 180.0, time.time())
    renovation.location(truck, depot.lat, depot.lon, 20.0, time.time())


async def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether `condition` came true within `timeout_s` (a guard), looked at every 50 ms."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _quiet_and_on_shift(gtfs: Path, start_s: float) -> None:
    """The copy's contacts told on the local broker, its renovation truck on shift all day."""
    # The keepers and property offices are told on the local broker, not by SMS and e-mail.
    extras = gtfs / "linli.toml"
    text = extras.read_text(encoding="utf-8")
    text = re.sub(
        r'kind = "webhook", url = "[^"]*to=([\w-]+)"', r'kind = "mqtt", topic = "linli/waste/\1"', text
    )
    text = re.sub(
        r'kind = "email", to = \["([\w.-]+)@[^"]*"\]', r'kind = "mqtt", topic = "linli/waste/\1"', text
    )
    extras.write_text(text, encoding="utf-8")
    # The renovation truck is on shift whatever the hour of the recording.
    on_shift_all_day(gtfs, start_s)


def on_shift_all_day(gtfs: Path, since_s: float) -> None:
    """A timetable's renovation trucks on shift for a whole day from `since_s` (a shift ending
    when it starts ends the next day), whatever the hour a recording or a test runs."""
    extras = gtfs / "linli.toml"
    shift = datetime.fromtimestamp(since_s, ZoneInfo(ZONE)).strftime("%H:%M")
    text = re.sub(
        r'shift = \["[0-9:]+", "[0-9:]+"\]',
        f'shift = ["{shift}", "{shift}"]',
        extras.read_text(encoding="utf-8"),
    )
    extras.write_text(text, encoding="utf-8")


def shifted_timetable(
    source: Path, target: Path, leave_s: float, later: dict[str, float] | None = None
) -> Path:
    """A copy of a GTFS timetable whose routes' first trips leave a minute apart from
    `leave_s` on (a route in `later` that many seconds after); a route's other trips keep their
    distance from its first."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    feed = load_feed(source)
    local = datetime.fromtimestamp(leave_s, ZoneInfo(feed.timezone))
    first = local.hour * 3600 + local.minute * 60 + local.second
    routes = sorted(feed.routes)
    shift = {}
    for n, route in enumerate(routes):
        trips = [t for t in feed.trips.values() if t.route_id == route]
        leaves = min(t.stop_times[0].departure_s for t in trips)
        for trip in trips:
            delay = round((later or {}).get(route, 0.0))
            shift[trip.id] = (first + 60 * n + delay - leaves) % 86400  # times past 24:00 are GTFS's own
    with (source / "stop_times.txt").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("arrival_time", "departure_time"):
            s = gtfs_seconds(row[key]) + shift[row["trip_id"]]
            row[key] = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    with (target / "stop_times.txt").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def _start_district(args: list[str], workdir: Path) -> subprocess.Popen[str]:
    log_path = workdir / "district.log"
    with log_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "linli.cli", "sim", "district", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    if "linli sim" not in line:
        proc.kill()
        raise RuntimeError(f"the district simulator did not start; see {log_path}")
    return proc
