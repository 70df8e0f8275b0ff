"""Keeper notices scored against what really happened, in-process (no broker, no service).

The district's GTFS trips are driven for D days by the timetable simulator (traffic by the
hour, a random factor per segment of size --traffic-sd, dwell by bins, GPS noise), and the
trucks' messages go, in time order, through the same tracking the waste service runs: map
matching, stop visits, prediction, notices. Each notice is scored against the simulator's
ground truth, which the tracking never sees. Two baselines are scored in the same run: the
timetable alone, and the remaining road distance at a constant speed. The history the
prediction learns from carries over from day to day, as in the service.

The full benchmark, through Mosquitto and the running service, comes with the service;
this one measures the prediction itself.

    .venv/bin/python benchmarks/waste_eta_offline.py --days 3 --seed 1 --traffic-sd 0.3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
from pathlib import Path
from typing import Any

from linli.cloud.waste.gtfs import load_feed, runs_on, service_zero
from linli.cloud.waste.predict import History, TripState, predict
from linli.cloud.waste.tracking import NoticeKind, Predictor, TripTracker
from linli.sim.timetable import drive_trip

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
SPEED_MS = 18 / 3.6  # the constant-speed baseline's
TICK_S = 30


def timetable(_h: History, state: TripState, _now: float) -> dict[int, float]:
    st = state.trip.stop_times
    return {k: state.zero_s + st[k].arrival_s for k in range(len(st)) if k not in state.arrived}


def constant_speed(_h: History, state: TripState, now: float) -> dict[int, float]:
    return {
        k: now + max(0.0, at - state.progress) / SPEED_MS
        for k, at in enumerate(state.places)
        if k not in state.arrived
    }


def run(days: int, seed: int, traffic_sd: float, first: dt.date) -> dict[str, Any]:
    feed = load_feed(FEED)
    rng = random.Random(seed)
    predictors: dict[str, Predictor] = {
        "linli": predict,
        "timetable": timetable,
        "distance_speed": constant_speed,
    }
    histories = {name: History(feed.timezone) for name in predictors}
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in predictors}  # (lead, error)
    trips = 0
    for day in range(days):
        date = first + dt.timedelta(days=day)
        for trip in sorted(feed.trips.values(), key=lambda t: t.stop_times[0].departure_s):
            if not runs_on(feed, trip, date):
                continue
            trips += 1
            drive = drive_trip(feed, trip, date, rng, traffic_sd=traffic_sd)
            actual = {a.index: a.actual_s for a in drive.arrivals}
            zero = service_zero(date, feed.timezone)
            for name, predictor in predictors.items():
                # The clock ticks every TICK_S from half an hour before the trip leaves.
                tracker = TripTracker(feed, trip, zero, histories[name], predictor)
                tracker.replay(drive.messages, tick_s=TICK_S)
                for notice in tracker.notices:
                    if notice.kind is NoticeKind.NOTICE and notice.predicted_s is not None:
                        true = actual[notice.index]
                        scores[name].append((true - notice.time_s, abs(notice.predicted_s - true)))
    out: dict[str, Any] = {"days": days, "seed": seed, "traffic_sd": traffic_sd, "trips": trips}
    for name, pairs in scores.items():
        leads = [lead / 60 for lead, _ in pairs]
        errors = sorted(err / 60 for _, err in pairs)
        out[name] = {
            "notices": len(pairs),
            "lead_13_18": round(sum(13 <= x <= 18 for x in leads) / len(leads), 3),
            "lead_ge_10": round(sum(x >= 10 for x in leads) / len(leads), 3),
            "p50_error_min": round(statistics.median(errors), 2),
            "p90_error_min": round(errors[int(0.9 * (len(errors) - 1))], 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=3, help="simulated days (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="the simulator's seed (default 1)")
    parser.add_argument("--traffic-sd", type=float, default=0.3, help="per-segment variation (default 0.3)")
    parser.add_argument(
        "--first-day", type=dt.date.fromisoformat, default=dt.date(2026, 12, 7), help="a Monday"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()
    result = run(args.days, args.seed, args.traffic_sd, args.first_day)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['trips']} trips over {args.days} days, seed {args.seed}, traffic sd {args.traffic_sd}")
    print(f"{'predictor':<16}{'notices':>8}{'lead 13-18':>12}{'lead >=10':>11}{'p50 err':>9}{'p90 err':>9}")
    for name in ("linli", "timetable", "distance_speed"):
        r = result[name]
        print(
            f"{name:<16}{r['notices']:>8}{r['lead_13_18']:>12.1%}{r['lead_ge_10']:>11.1%}"
            f"{r['p50_error_min']:>8.1f}m{r['p90_error_min']:>8.1f}m"
        )


if __name__ == "__main__":
    main()
