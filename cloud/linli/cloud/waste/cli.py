"""`linli waste ...`: the waste collection timetables (more commands come with the service)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from linli.wording import plural


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli waste`."""
    waste = subparsers.add_parser("waste", help="waste collection run like a bus line")
    cmds = waste.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = cmds.add_parser(
        "check",
        help="validate a GTFS timetable folder",
        description=(
            "Read a timetable folder (GTFS static files plus linli.toml) and check it: ids that "
            "resolve, times that increase, stops on their trips' roads, every stop with its bins "
            "and keepers. Each problem names the file, the row and what is wrong. Exit 0 if the "
            "timetable is sound, 2 if not."
        ),
    )
    check.add_argument("--gtfs", type=Path, required=True, help="the folder, e.g. deploy/gtfs/hongqiao")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from linli.cloud.waste.gtfs import GtfsError, load_feed

    try:
        feed = load_feed(args.gtfs)
    except GtfsError as exc:
        print(f"linli waste check: {exc}", file=sys.stderr)
        return 2
    served = {st.stop_id for t in feed.trips.values() for st in t.stop_times} - set(feed.extras.depots)
    print(
        f"{args.gtfs}: ok, {plural(len(feed.routes), 'route')}, {plural(len(feed.trips), 'trip')}, "
        f"{plural(len(served), 'bin room')}, time zone {feed.timezone}"
    )
    for rid, route in sorted(feed.routes.items()):
        trips = sorted(
            (t for t in feed.trips.values() if t.route_id == rid), key=lambda t: t.stop_times[0].departure_s
        )
        starts = ", ".join(_clock(t.stop_times[0].departure_s) for t in trips)
        km = feed.shapes[trips[0].shape_id].line.length / 1000 if trips else 0.0
        print(f"  {rid:<12} {route.waste_type:<11} {route.truck:<20} {km:5.1f} km, leaves at {starts}")
    return 0


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
