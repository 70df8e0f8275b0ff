"""Keeper notices through Mosquitto and the waste service, scored against what really happened.

The timetable simulator drives every trip of the district's GTFS for --warmup-days and then
--days more: traffic by the hour, each road segment's own factor (--traffic-sd), the day's
(--day-sd, every road), the trip's (--run-sd, all its segments), each drive's (--trip-sd),
signals and their queues (--signals-per-km), late departures (--late-share, --late-min,
--very-late), dwell by bins, GPS noise, a lossy cellular link (--gps-dropouts-per-h,
--gps-late, --gps-repeat), and faults (blocked gates, stops driven past, stops served after
the next without telling, breakdowns, at the rates given). By default that world is the hard
one; --kind is the world the predictor was first tuned on (none of the above but the road
factors, every trip on time, every fix in order). Its messages go, in the order the link
delivers them and as fast as the service takes them, through a real Mosquitto to a real
`linli waste run`, whose notices go to a local HTTP receiver as the keepers' SMS gateway. Only
the last --days are scored: each notice against the simulator's ground truth, which the
service never sees. The warm-up days are the history a service in operation has learned from.

The same drives are replayed in-process through the tracker with other predictors, in the
same run: the timetable alone; the timetable plus the truck's current delay (the usual naive
live prediction); the remaining road at the timetable's own speed including dwell; and
linli's predictor given the simulator's true road factors and rush hours (not a ceiling: it
does not know the day's, the trip's or the drive's luck, nor late departures); and the same
knowing also each day's factor and when each truck leaves (`known_day`: all the world decides
before a truck drives), and its trip's own factor too (`known_trip`).

    .venv/bin/python benchmarks/waste_eta.py --days 3 --seed 1 --traffic-sd 0.3 --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from linli.cloud.waste.predict import History, TripState, predict
from linli.cloud.waste.tracking import NoticeKind, Predictor, TripTracker
from linli.demo.servers import free_port, start_mosquitto
from linli.sim.timetable import (
    Arrival,
    Departures,
    Gps,
    Outcome,
    Traffic,
    TripFaults,
    TripRun,
    congestion,
    drive_trip,
)
from linli.transit.gtfs import Feed, Trip, load_feed, runs_on, service_zero

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
TOKEN = "bench"  # noqa: S105 (a local service's, for this run only)
TICK_S = 30
BATCH_S = 900  # simulated seconds published before waiting for the service to take them
RETRACTED = {"cancellation", "delayed", "deferred"}


@dataclass(frozen=True)
class Rates:
    """Per trip: the chance of a blocked gate, a stop driven past, a breakdown, a stop served
    after the next one."""

    blocked: float
    skipped: float
    breakdown: float
    reordered: float = 0.0


@dataclass(frozen=True)
class World:
    """The simulator's world for a run."""

    traffic: Traffic
    rates: Rates
    departures: Departures
    gps: Gps


@dataclass
class Drive:
    trip: Trip
    truck: str
    date: dt.date
    run: TripRun
    scored: bool


def simulate(feed: Feed, first: dt.date, days: tuple[int, int], world: World) -> list[Drive]:
    """Every trip of every day (warm-up days, scored days), with faults drawn per trip."""
    warmup, scored = days
    traffic, rates = world.traffic, world.rates
    rng = random.Random(f"{traffic.seed}:faults")
    depots = set(feed.extras.depots)
    drives = []
    for n in range(warmup + scored):
        date = first + dt.timedelta(days=n)
        for trip in sorted(feed.trips.values(), key=lambda t: t.stop_times[0].departure_s):
            if not runs_on(feed, trip, date):
                continue
            rooms = [k for k, st in enumerate(trip.stop_times) if st.stop_id not in depots]
            blocked = {rng.choice(rooms)} if rng.random() < rates.blocked else set()
            skipped = {rng.choice(rooms)} - blocked if rng.random() < rates.skipped else set()
            breakdown = rng.choice(rooms[2:]) if rng.random() < rates.breakdown else None
            reordered = (
                {rng.choice(rooms[:-1])} - blocked - skipped if rng.random() < rates.reordered else set()
            )
            faults = TripFaults(frozenset(blocked), frozenset(skipped), breakdown, frozenset(reordered))
            run = drive_trip(
                feed,
                trip,
                date,
                random.Random(f"{traffic.seed}:{trip.id}:{date}"),
                traffic=traffic,
                faults=faults,
                departures=world.departures,
                gps=world.gps,
            )
            drives.append(Drive(trip, feed.routes[trip.route_id].truck, date, run, n >= warmup))
    return drives


# --- the service and its peers ------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """The keepers' SMS gateway and the dispatcher's webhook: counts what arrives."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.counts[self.path.split("?")[0].strip("/")] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def local_feed(folder: Path, hooks: str) -> Path:
    """The district's timetable with every contact pointed at the local receiver."""
    shutil.copytree(FEED, folder)
    extras = folder / "linli.toml"
    text = extras.read_text(encoding="utf-8").replace("http://sms-gateway.district.example", hooks)
    text = re.sub(
        r'\{ kind = "email", to = \["([^"]+)"\] \}',
        rf'{{ kind = "webhook", url = "{hooks}/mail?to=\1" }}',
        text,
    )
    extras.write_text(text, encoding="utf-8")
    return folder


def start_service(
    work: Path, feed: Path, broker_port: int, hooks: str
) -> tuple[subprocess.Popen[bytes], str]:
    api_port = free_port()
    config = work / "waste.toml"
    config.write_text(
        f'gtfs = "{feed}"\nstate = "{work / "waste.sqlite"}"\napi_port = {api_port}\n'
        f"[broker]\nport = {broker_port}\n"
        # The keepers' gateway, the dispatcher and the operator are this machine's receiver.
        "[delivery]\nallow_private = true\n"
        + "".join(
            f'[{who}]\nname = "{who}"\nchannels = [{{ kind = "webhook", url = "{hooks}/{who}" }}]\n'
            for who in ("dispatcher", "operator")
        ),
        encoding="utf-8",
    )
    log = (work / "waste.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "linli.cli", "waste", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LINLI_CLOUD_TOKEN": TOKEN},
    )
    return proc, f"http://127.0.0.1:{api_port}"


def get(url: str, **params: Any) -> Any:
    response = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


def publish(drives: list[Drive], broker_port: int, api: str) -> tuple[int, float]:
    """Every message in the order the link delivers it, a batch at a time, each batch taken
    before the next."""
    messages = sorted(
        (
            (at, f"trucks/fleet/{d.truck}/{kind}", body)
            for d in drives
            for at, (kind, body) in zip(d.run.delivered_ms, d.run.messages, strict=True)
        ),
        key=lambda m: m[0],
    )
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-trucks")
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    # The service subscribes after it listens: a probe it refuses says it hears the trucks.
    wait_for(lambda: get(f"{api}/stats") is not None, "the service's API")

    def probe() -> bool:
        client.publish("trucks/fleet/probe/location", b"{}", qos=1).wait_for_publish(5)
        return int(get(f"{api}/stats")["received"]) > 0

    wait_for(probe, "the service's subscription")
    base = int(get(f"{api}/stats")["received"])
    started = time.monotonic()
    sent = 0
    day = None
    tz = ZoneInfo("Asia/Shanghai")
    i = 0
    while i < len(messages):
        edge = messages[i][0] + BATCH_S * 1000
        infos = []
        while i < len(messages) and messages[i][0] < edge:
            _, topic, body = messages[i]
            infos.append(client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1))
            i += 1
        sent += len(infos)
        for info in infos:
            info.wait_for_publish(30)
        wait_for(taken(api, base + sent), "the service taking a batch")
        now_day = dt.datetime.fromtimestamp(messages[i - 1][0] / 1000, tz).date()
        if now_day != day:
            day = now_day
            print(
                f"  {day}: {sent} messages in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True
            )
    client.disconnect()
    client.loop_stop()
    return sent, time.monotonic() - started


def taken(api: str, count: int) -> Callable[[], bool]:
    """Whether the service has taken `count` messages."""
    return lambda: int(get(f"{api}/stats")["received"]) >= count


# --- the in-process predictors ------------------------------------------------------------


def timetable(_h: History, state: TripState, _now: float) -> dict[int, float]:
    st = state.trip.stop_times
    return {k: state.zero_s + st[k].arrival_s for k in range(len(st)) if k not in state.arrived}


def schedule_delay(_h: History, state: TripState, now: float) -> dict[int, float]:
    """The timetable plus the truck's current delay: at the last stop it reached (by when it left
    it, or by now if it is still there), or at the depot by now once it is due to leave."""
    st = state.trip.stop_times
    reached = [k for k in range(len(st)) if k in state.arrived]
    if not reached:
        delay = max(0.0, now - (state.zero_s + st[0].departure_s))
    else:
        last = max(reached)
        due = state.zero_s + st[last].departure_s
        delay = (
            state.left[last] - due if last in state.left else max(state.arrived[last] - due, now - due, 0.0)
        )
    return {k: state.zero_s + st[k].arrival_s + delay for k in range(len(st)) if k not in state.arrived}


def feed_speed(_h: History, state: TripState, now: float) -> dict[int, float]:
    """The remaining road at the timetable's own speed over the trip, dwell included (12 to 15
    km/h on the district's routes), from when it leaves at the earliest."""
    st = state.trip.stop_times
    speed = (state.places[-1] - state.places[0]) / max(1, st[-1].arrival_s - st[0].departure_s)
    start = (
        now if state.arrived.keys() - {0} or 0 in state.left else max(now, state.zero_s + st[0].departure_s)
    )
    return {
        k: start + max(0.0, at - state.progress) / speed
        for k, at in enumerate(state.places)
        if k not in state.arrived
    }


class TrueRoads(History):
    """A history that knows the simulator's roads: each segment's real factor and the hour's
    congestion, and the dwell per bin; it does not know the day's, the trip's or each drive's
    own luck, nor how late a truck leaves."""

    def __init__(self, timezone: str, traffic: Traffic) -> None:
        super().__init__(timezone)
        self.traffic = traffic

    def add_segment(self, route: str, index: int, left_s: float, arrived_s: float, scheduled: float) -> None:
        pass

    def segment(self, route: str, index: int, leave_s: float, scheduled: float) -> float:
        luck = math.exp(self.traffic.trip_sd**2 / 2)  # the mean of the log-normal
        return scheduled * congestion(self.hour(leave_s)) * self.traffic.road(route, index) * luck

    def dwell(self, bins: int, scheduled: float) -> float:
        return 60.0 + 20.0 * bins


class KnownDay(TrueRoads):
    """The true roads, and also each day's factor and when each truck really leaves (`drive`
    sets them): everything the world decides before a truck drives, known exactly. With
    `trip`, its trip's own factor too, and no pace learned on the way (nothing left to learn);
    without, the pace is learned from the trip's segments as linli does. Neither knows each
    drive's luck, the signals or the dwell's: where the goals' reach ends (issue 34)."""

    def __init__(self, timezone: str, traffic: Traffic, *, trip: bool) -> None:
        super().__init__(timezone, traffic)
        self.trip = trip
        self.factor = 1.0
        self.left_s = 0.0

    def drive(self, d: Drive) -> None:
        self.factor = self.traffic.day(d.date)
        if self.trip and self.traffic.run_sd > 0:
            run = random.Random(f"{self.traffic.seed}:run:{d.trip.id}:{d.date}")  # as drive_trip draws it
            self.factor *= math.exp(run.gauss(0, self.traffic.run_sd))
        self.left_s = d.run.left_s

    def segment(self, route: str, index: int, leave_s: float, scheduled: float) -> float:
        # The simulator's segments take at least 30 s of schedule.
        return super().segment(route, index, leave_s, max(30.0, scheduled)) * self.factor

    def day(self, zero_s: float) -> float:
        return 1.0

    def departure(self, due_s: float, now_s: float) -> float:
        return max(now_s, self.left_s)


def known_pace(history: History, state: TripState, now: float) -> dict[int, float]:
    """linli's prediction without the pace learned on the way: for `KnownDay` with the trip."""
    return predict(history, replace(state, expected_s=0.0, observed_s=0.0), now)


PREDICTORS = (
    "linli", "timetable", "schedule_delay", "feed_speed", "linli_true_roads", "known_day", "known_trip",
)  # fmt: skip


def replay(
    feed: Feed, drives: list[Drive], traffic: Traffic, *, linli: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Each scored drive through the tracker with each other predictor: its notices. With
    `linli`, linli's own predictor too, learning from every drive (warm-up days included) in
    one history, trip after trip, as the service does in time order."""
    predictors: dict[str, tuple[Predictor, History]] = {
        "timetable": (timetable, History(feed.timezone)),
        "schedule_delay": (schedule_delay, History(feed.timezone)),
        "feed_speed": (feed_speed, History(feed.timezone)),
        "linli_true_roads": (predict, TrueRoads(feed.timezone, traffic)),
        "known_day": (predict, KnownDay(feed.timezone, traffic, trip=False)),
        "known_trip": (known_pace, KnownDay(feed.timezone, traffic, trip=True)),
    }
    if linli:
        predictors["linli"] = (predict, History(feed.timezone))
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in predictors}
    for d in drives:
        zero = service_zero(d.date, feed.timezone)
        for name, (predictor, history) in predictors.items():
            if not d.scored and name != "linli":
                continue
            if isinstance(history, KnownDay):
                history.drive(d)
            tracker = TripTracker(feed, d.trip, zero, history, predictor)
            tracker.replay(d.run.messages, tick_s=TICK_S)
            if not d.scored:
                continue
            out[name] += [
                {
                    "trip_id": n.trip_id,
                    "day": d.date.isoformat(),
                    "idx": n.index,
                    "kind": str(n.kind),
                    "time_ms": round(n.time_s * 1000),
                    "predicted_ms": None if n.predicted_s is None else round(n.predicted_s * 1000),
                }
                for n in tracker.notices
            ]
    return out


# --- scoring ----------------------------------------------------------------------------


def after_unannounced(truth: dict[tuple[str, str, int], Arrival]) -> set[tuple[str, str, int]]:
    """The stops of a trip from one the driver skipped or served out of order, without telling:
    every prediction after it was made for a route the truck did not drive."""
    first: dict[tuple[str, str], int] = {}
    for (trip, day, idx), a in truth.items():
        if a.outcome in (Outcome.SKIPPED, Outcome.REORDERED):
            first[(trip, day)] = min(idx, first.get((trip, day), idx))
    return {key for key in truth if key[2] >= first.get(key[:2], len(truth) + 1)}


def score(notices: list[dict[str, Any]], truth: dict[tuple[str, str, int], Arrival]) -> dict[str, Any]:
    """Leads and errors of the first notice per stop; corrections per notice; notices left
    standing for stops not served. Stops after an unannounced skip are counted apart."""
    by_stop: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for n in sorted(notices, key=lambda n: n["time_ms"]):
        by_stop[(n["trip_id"], n["day"], n["idx"])].append(n)
    skipped_before = after_unannounced(truth)
    leads, errors, after, standing, count, corrections = [], [], [], 0, 0, 0
    for key, told in by_stop.items():
        arrival = truth.get(key)
        first = next((n for n in told if n["kind"] == str(NoticeKind.NOTICE)), None)
        if arrival is None or first is None:
            continue
        count += 1
        corrections += sum(n["kind"] == str(NoticeKind.CORRECTION) for n in told)
        if arrival.outcome in (Outcome.SKIPPED, Outcome.NOT_REACHED):
            kinds = [n["kind"] for n in told]
            last_promise = max(i for i, k in enumerate(kinds) if k in ("notice", "correction"))
            if not any(k in RETRACTED for k in kinds[last_promise:]):
                standing += 1
        if arrival.actual_s is None or arrival.outcome is Outcome.SKIPPED:
            continue
        lead = (arrival.actual_s * 1000 - first["time_ms"]) / 60_000
        if key in skipped_before:
            after.append(lead)
            continue
        leads.append(lead)
        errors.append(abs(first["predicted_ms"] - arrival.actual_s * 1000) / 60_000)
    errors.sort()
    return {
        "notices": count,
        "lead_13_18": round(sum(13 <= x <= 18 for x in leads) / max(1, len(leads)), 3),
        "lead_ge_10": round(sum(x >= 10 for x in leads) / max(1, len(leads)), 3),
        "after_skip": len(after),
        "after_skip_lead_ge_10": round(sum(x >= 10 for x in after) / max(1, len(after)), 3),
        "p50_error_min": round(statistics.median(errors), 2) if errors else None,
        "p90_error_min": round(errors[int(0.9 * (len(errors) - 1))], 2) if errors else None,
        "uncancelled_skipped": standing,
        "corrections_per_notice": round(corrections / max(1, count), 3),
    }


def world(args: argparse.Namespace) -> World:
    """The hard world of the flags, or with --kind the one the predictor was first tuned on."""
    traffic = Traffic(
        seed=args.seed,
        sd=args.traffic_sd,
        trip_sd=args.trip_sd,
        day_sd=0.0 if args.kind else args.day_sd,
        run_sd=0.0 if args.kind else args.run_sd,
        signals_per_km=0.0 if args.kind else args.signals_per_km,
    )
    if args.kind:
        return World(traffic, Rates(args.blocked, args.skipped, args.breakdown), Departures(), Gps())
    return World(
        traffic,
        Rates(args.blocked, args.skipped, args.breakdown, args.reordered),
        Departures(args.late_share, args.late_min, args.very_late),
        Gps(args.gps_dropouts_per_h, late_share=args.gps_late, repeat_share=args.gps_repeat),
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    feed = load_feed(FEED)
    the_world = world(args)
    traffic = the_world.traffic
    # The days end yesterday: the service refuses messages from ahead of this machine's clock.
    last = dt.datetime.now(ZoneInfo(feed.timezone)).date() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=args.days + args.warmup_days - 1)
    drives = simulate(feed, first, (args.warmup_days, args.days), the_world)
    truth = {(a.trip_id, d.date.isoformat(), a.index): a for d in drives if d.scored for a in d.run.arrivals}
    if args.in_process:
        return in_process(args, feed, drives, truth)
    work = Path(tempfile.mkdtemp(prefix="linli-waste-eta-"))
    receiver = Receiver()
    broker = start_mosquitto(work / "mosquitto")
    service, api = start_service(work, local_feed(work / "gtfs", receiver.url), broker.port, receiver.url)
    try:
        print(
            f"waste_eta: {len(drives)} trips over {args.warmup_days} + {args.days} days from {first}",
            file=sys.stderr,
            flush=True,
        )
        sent, took = publish(drives, broker.port, api)
        wait_for(lambda: get(f"{api}/stats")["delivering"] == 0, "the deliveries", 120)
        stats = get(f"{api}/stats")
        scored_days = sorted({d.date.isoformat() for d in drives if d.scored})
        linli = [n for day in scored_days for n in get(f"{api}/notices", limit=10_000, day=day)]
        failed = len(get(f"{api}/failed-deliveries"))
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(30)
        broker.stop()
        receiver.shutdown()
    others = replay(feed, drives, traffic)
    scored = [d for d in drives if d.scored]
    outcomes = Counter(str(a.outcome) for d in scored for a in d.run.arrivals)
    result: dict[str, Any] = {
        "days": args.days, "warmup_days": args.warmup_days, "seed": args.seed, "world": the_world_name(args),
        "traffic_sd": args.traffic_sd, "trip_sd": args.trip_sd, "trips": len(scored),
        "stops": dict(outcomes), "messages": sent, "seconds": round(took, 1),
        "simulated_per_real": round((args.days + args.warmup_days) * 86400 / took),
        "service": {"received": stats["received"], "rejected": stats["rejected"], "fixes": stats["fixes"]},
        "delivered": dict(receiver.counts), "failed_deliveries": failed,
        "linli": score(linli, truth),
    }  # fmt: skip
    for name, notices in others.items():
        result[name] = score(notices, truth)
    shutil.rmtree(work, ignore_errors=True)
    return result


def in_process(
    args: argparse.Namespace, feed: Feed, drives: list[Drive], truth: dict[tuple[str, str, int], Arrival]
) -> dict[str, Any]:
    """linli's predictor and tracker in-process, without Mosquitto and the service: the same
    predictions (trip after trip instead of interleaved), for seeds the service's run has no
    time for on a loaded machine."""
    started = time.monotonic()
    notices = replay(feed, drives, world(args).traffic, linli=True)
    scored = [d for d in drives if d.scored]
    result: dict[str, Any] = {
        "days": args.days, "warmup_days": args.warmup_days, "seed": args.seed, "world": the_world_name(args),
        "in_process": True, "trips": len(scored),
        "stops": dict(Counter(str(a.outcome) for d in scored for a in d.run.arrivals)),
        "messages": sum(len(d.run.messages) for d in drives), "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    result["simulated_per_real"] = round((args.days + args.warmup_days) * 86400 / max(0.1, result["seconds"]))
    for name in PREDICTORS:
        result[name] = score(notices[name], truth)
    return result


def the_world_name(args: argparse.Namespace) -> str:
    return "kind" if args.kind else "hard"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--days", type=int, default=3, help="days scored (default 3)")
    add("--warmup-days", type=int, default=7, help="days learned from first, not scored (default 7)")
    add("--seed", type=int, default=1, help="the simulator's seed (default 1)")
    add("--traffic-sd", type=float, default=0.3, help="each road segment's factor (default 0.3)")
    add("--trip-sd", type=float, default=0.1, help="each drive of a segment (default 0.1)")
    add("--day-sd", type=float, default=0.15, help="the day's factor, every road (default 0.15)")
    add("--run-sd", type=float, default=0.1, help="the trip's factor, all its segments (default 0.1)")
    add("--signals-per-km", type=float, default=2.0, help="signals on the roads (default 2)")
    add("--late-share", type=float, default=0.25, help="trips leaving minutes late (default 0.25)")
    add("--late-min", type=float, default=4.0, help="their mean minutes late (default 4)")
    add("--very-late", type=float, default=0.03, help="trips leaving 15-30 min late (default 0.03)")
    add("--gps-dropouts-per-h", type=float, default=0.5, help="2-6 min without a link (default 0.5)")
    add("--gps-late", type=float, default=0.05, help="fixes 5-40 s late, out of order (default 0.05)")
    add("--gps-repeat", type=float, default=0.02, help="fixes sent twice (default 0.02)")
    add("--blocked", type=float, default=0.1, help="chance of a blocked gate per trip (default 0.1)")
    add("--skipped", type=float, default=0.1, help="chance of a stop driven past per trip (0.1)")
    add("--reordered", type=float, default=0.05, help="a stop served after the next, per trip (0.05)")
    add("--breakdown", type=float, default=0.03, help="chance of a breakdown per trip (0.03)")
    add(
        "--kind",
        action="store_true",
        help="the old kind world: none of the day, trip, signal, departure, GPS or reorder flags",
    )
    add("--in-process", action="store_true", help="linli's predictor in-process, without the service")
    add("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()
    if args.days < 1 or args.warmup_days < 0 or args.days + args.warmup_days > 60:
        parser.error("--days must be at least 1, and --days plus --warmup-days at most 60")
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['trips']} trips scored over {args.days} days after {args.warmup_days} learned, "
        f"seed {args.seed}, {result['world']} world, traffic sd {args.traffic_sd} per road, "
        f"{args.trip_sd} per drive; {result['messages']} messages "
        f"{'in-process' if result.get('in_process') else 'through Mosquitto'} in "
        f"{result['seconds']} s ({result['simulated_per_real']}x); stops {result['stops']}"
    )
    print(
        f"{'predictor':<18}{'notices':>8}{'lead 13-18':>12}{'lead >=10':>11}{'after skip':>11}{'p50 err':>9}"
        f"{'p90 err':>9}{'standing':>10}{'corr/notice':>13}"
    )
    for name in PREDICTORS:
        r = result[name]
        print(
            f"{name:<18}{r['notices']:>8}{r['lead_13_18']:>12.1%}{r['lead_ge_10']:>11.1%}"
            f"{r['after_skip']:>11}{r['p50_error_min']:>8.1f}m{r['p90_error_min']:>8.1f}m"
            f"{r['uncancelled_skipped']:>10}{r['corrections_per_notice']:>13.2f}"
        )


if __name__ == "__main__":
    main()
