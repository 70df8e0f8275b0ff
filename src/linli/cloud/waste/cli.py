"""`linli waste ...`: timetables, the service, bookings, statistics and rollups."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from linli.catalog.wording import plural
from linli.cloud.waste import report
from linli.cloud.waste.rollups import Period
from linli.transit.times import gtfs_hhmm

if TYPE_CHECKING:
    from linli.transit.gtfs import Feed

BY = ("waste_type", "stop", "route", "truck")


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
    _gtfs_argument(check)
    check.set_defaults(func=_check)

    trips = cmds.add_parser(
        "trips",
        help="the trips that run on a date, and why",
        description=(
            "List every trip of the timetable on a local date: the ones that run and why (the "
            "weekly calendar, or a date calendar_dates.txt adds, such as a Saturday worked as a "
            "Monday), and the ones that do not (a holiday calendar_dates.txt removes, not their "
            "weekday, outside the calendar's dates)."
        ),
    )
    _gtfs_argument(trips)
    trips.add_argument("--date", type=_date, required=True, help="the local date, YYYY-MM-DD")
    trips.set_defaults(func=_trips)

    run = cmds.add_parser(
        "run",
        help="follow the trucks and tell the bin-room keepers",
        description=(
            "Take every truck's messages from the broker (an MQTT 5 shared subscription), follow "
            "each trip of the timetable, and send each bin-room keeper a notice when the truck is "
            "15 minutes away, corrections, cancellations, arrival and collection, through the "
            "notifier's channels. Serves the HTTP API (token from the variable the config names)."
        ),
    )
    run.add_argument("--config", type=Path, required=True, help="the service's TOML")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(func=_run)

    from linli.cloud.scope import Scope
    from linli.cloud.token_cli import add_token_commands

    add_token_commands(
        cmds,
        prog="linli waste token",
        description=(
            "The waste API's tokens, kept hashed in the waste service's state, so these work beside "
            "a running service; a revoked token is refused at its next request. Scopes nest: book (a "
            "booking link: books at its --compound list, sees and cancels its --office's bookings) "
            "< read (trips, notices, incidents, bookings) < ack (incidents) < admin (the dispatcher's "
            "commands, any booking). $LINLI_CLOUD_TOKEN, when set, is an admin token too."
        ),
        state_of=_state,
        scopes=tuple(Scope),
    )

    stats = cmds.add_parser(
        "stats",
        help="tonnage by waste type, or on-time performance, per day, ISO week or calendar month",
        description=(
            "Sum every lift the trucks reported (the 'truck' measurement) by period in "
            "Asia/Shanghai (days from midnight, weeks from Monday, calendar months) and by waste "
            "type, or by compound, route or truck. With --of service: per route, the share of bin "
            "rooms served within 10 minutes of the timetable, those served, revisited, skipped and "
            "missed, and the notices' accuracy (from the waste service's 'waste_visit' points). "
            "--write stores them as 'waste_rollup' or 'waste_performance' points for the "
            "dashboards; a period written again is replaced, so data that arrives late is counted "
            "by running it again. Exit 0, 1 if the store refused, 2 for bad usage."
        ),
    )
    _store_arguments(stats)
    stats.add_argument("--period", choices=[p.value for p in Period], default="day", help="(default day)")
    stats.add_argument("--by", choices=BY, default="waste_type", help="group by (default waste_type)")
    stats.add_argument(
        "--from", dest="start", type=dt.date.fromisoformat, help="first local day (default: 31 days ago)"
    )
    stats.add_argument("--to", dest="end", type=dt.date.fromisoformat, help="last local day (default: today)")
    stats.add_argument(
        "--of", choices=("tonnage", "service"), default="tonnage", help="what to sum (default tonnage)"
    )
    _output_options(stats)
    stats.add_argument("--write", action="store_true", help="also store the rollups for the dashboards")
    stats.set_defaults(func=report.stats)

    book = cmds.add_parser(
        "book",
        help="book a renovation waste pickup",
        description=(
            "Book a renovation waste pickup through the waste service's API, as property staff do "
            "on its page (/book). Prints the booking, its state and truck. Exit 0 when booked (or "
            "booked before with the same --key), 1 when the service refused it (its reason is "
            "printed) or cannot be reached, 2 for bad usage."
        ),
    )
    book.add_argument("--url", default="http://127.0.0.1:8081", help="the waste service's API")
    book.add_argument("--token-env", default="LINLI_CLOUD_TOKEN", help="variable holding the API's token")
    book.add_argument("--compound", required=True, help="the compound (a bin room's stop id)")
    amount = book.add_mutually_exclusive_group(required=True)
    amount.add_argument("--m3", type=float, help="estimated volume in cubic metres")
    amount.add_argument("--bags", type=int, help="estimated volume in bags")
    book.add_argument("--from", dest="earliest", required=True, help="earliest, ISO 8601 with offset")
    book.add_argument("--to", dest="latest", required=True, help="latest, ISO 8601 with offset")
    book.add_argument("--name", required=True, help="who to tell")
    book.add_argument("--phone", help="tell by SMS, e.g. +8613800138000")
    book.add_argument("--email", help="tell by e-mail")
    book.add_argument("--wecom", help="tell through the district's WeCom app: the WeCom user id")
    book.add_argument("--note", default="", help="for the driver")
    book.add_argument("--key", default=None, help="idempotency key: the same key books once")
    book.set_defaults(func=_book)

    rollup = cmds.add_parser(
        "rollup",
        help="keep the tonnage and service rollups written for the dashboards",
        description=(
            "Recompute and write every rollup the dashboards read, tonnage ('waste_rollup') and the "
            "service's figures ('waste_performance'), by day, ISO week and month, for the periods "
            "the last --days touch, whole; with --every, again and again, so that late lifts and "
            "visits are counted; with --state, the tonnage also in the waste services' state. "
            "Exit 0, 1 if the store or state refused (without --every), 2 for bad usage."
        ),
    )
    _store_arguments(rollup)
    rollup.add_argument("--days", type=int, default=2, help="recompute the periods of the last N days (2)")
    rollup.add_argument("--every", type=float, default=None, metavar="MIN", help="repeat every MIN minutes")
    rollup.add_argument(
        "--state",
        help="also keep the tonnage rollups in the waste services' state (an SQLite file or "
        "postgresql:// URL; default: $LINLI_STATE_URL if set), where GET /rollups reads them",
    )
    rollup.set_defaults(func=_rollup)


def _gtfs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gtfs", type=Path, required=True, help="the folder, e.g. deploy/gtfs/hongqiao")


def _output_options(parser: argparse.ArgumentParser) -> None:
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    form.add_argument("--json", action="store_true", help="one JSON object on stdout, for scripts")


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="InfluxDB's URL (1.x, or 2.x through its v1 API)")
    parser.add_argument("--database", required=True, help="the database (2.x: the bucket's mapping)")
    parser.add_argument(
        "--token-env", default="LINLI_INFLUX_TOKEN", help="variable holding the token, if any"
    )


def _feed(args: argparse.Namespace) -> Feed | None:
    """The timetable of `--gtfs`; None once its problems are printed."""
    from linli.transit.gtfs import GtfsError, load_feed

    try:
        return load_feed(args.gtfs)
    except GtfsError as exc:
        print(f"linli waste {args.command}: {exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    feed = _feed(args)
    if feed is None:
        return 2
    served = {st.stop_id for t in feed.trips.values() for st in t.stop_times} - set(feed.extras.depots)
    print(
        f"{args.gtfs}: ok, {plural(len(feed.routes), 'route')}, {plural(len(feed.trips), 'trip')}, "
        f"{plural(len(served), 'bin room')}, time zone {feed.timezone}"
    )
    added = sum(len(service.added) for service in feed.services.values())
    removed = sum(len(service.removed) for service in feed.services.values())
    if added or removed:
        print(
            f"  calendar_dates.txt: {plural(added, 'date')} added, {removed} removed "
            "(see `linli waste trips --date`)"
        )
    for rid, route in sorted(feed.routes.items()):
        trips = sorted(
            (t for t in feed.trips.values() if t.route_id == rid), key=lambda t: t.stop_times[0].departure_s
        )
        starts = ", ".join(gtfs_hhmm(t.stop_times[0].departure_s) for t in trips)
        km = feed.shapes[trips[0].shape_id].line.length / 1000 if trips else 0.0
        print(f"  {rid:<12} {route.waste_type:<11} {route.truck:<20} {km:5.1f} km, leaves at {starts}")
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a date YYYY-MM-DD") from None


WHY = {
    "weekly": "runs: its weekday in calendar.txt",
    "added": "runs: added for this date in calendar_dates.txt",
    "removed": "does not run: removed for this date in calendar_dates.txt",
    "not_weekday": "does not run: not on this weekday",
    "out_of_dates": "does not run: outside calendar.txt's dates",
}


def _trips(args: argparse.Namespace) -> int:
    from linli.transit.gtfs import why_it_runs

    feed = _feed(args)
    if feed is None:
        return 2
    answers = sorted(
        ((*why_it_runs(feed, t, args.date), t) for t in feed.trips.values()),
        key=lambda a: (not a[0], a[2].stop_times[0].departure_s, a[2].id),
    )
    running = sum(1 for runs, _, _ in answers if runs)
    print(
        f"{args.date.isoformat()} ({args.date.strftime('%A')}): {plural(running, 'trip')} of {len(answers)}"
    )
    for _, why, trip in answers:
        starts = gtfs_hhmm(trip.stop_times[0].departure_s)
        print(f"  {starts}  {trip.id:<18} {trip.service_id:<10} {WHY[why]}")
    return 0


def _book(args: argparse.Namespace) -> int:
    import httpx

    ways = {way: getattr(args, way) for way in ("phone", "email", "wecom") if getattr(args, way)}
    if not ways:
        print(
            "linli waste book: give --phone, --email or --wecom, to be told how the booking goes",
            file=sys.stderr,
        )
        return 2
    body: dict[str, object] = {
        "compound": args.compound,
        "earliest": args.earliest,
        "latest": args.latest,
        "contact": {"name": args.name, **ways},
        "note": args.note,
    }
    body |= {"volume_m3": args.m3} if args.m3 is not None else {"bags": args.bags}
    if args.key:
        body["key"] = args.key
    token = os.environ.get(args.token_env, "")
    try:
        response = httpx.post(
            f"{args.url.rstrip('/')}/bookings",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        print(f"linli waste book: {args.url}: {exc}", file=sys.stderr)
        return 1
    answer = (
        response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    )
    if response.status_code >= 300:
        detail = answer.get("detail", response.text[:200])
        if isinstance(detail, list):
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
        print(f"linli waste book: refused (HTTP {response.status_code}): {detail}", file=sys.stderr)
        return 1
    again = " (booked before with this key)" if response.status_code == 200 else ""
    truck = f", truck {answer['truck']}" if answer.get("truck") else ""
    when = f", about {answer['predicted']}" if answer.get("predicted") else ""
    print(f"booking {answer['id']}: {answer['state']}{truck}{when}{again}")
    return 0


def _rollup(args: argparse.Namespace) -> int:
    import time
    from zoneinfo import ZoneInfo

    from sqlalchemy.exc import DBAPIError

    from linli.cloud.db import describe
    from linli.cloud.waste.rollups import ZONE
    from linli.cloud.waste.state import WasteState
    from linli.cloud.waste.store import StoreError, write_rollups

    if args.days < 1 or (args.every is not None and args.every <= 0):
        print("linli waste rollup: --days and --every must be positive", file=sys.stderr)
        return 2
    token = os.environ.get(args.token_env) or None
    where = args.state or os.environ.get("LINLI_STATE_URL")
    try:
        state = WasteState(where) if where else None
    except (DBAPIError, OSError) as exc:
        print(
            f"linli waste rollup: the state {describe(where or '')} cannot be opened: {exc}", file=sys.stderr
        )
        return 1
    while True:
        now = dt.datetime.now(ZoneInfo(ZONE))
        since = (now - dt.timedelta(days=args.days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            tonnage, figures, bookings = write_rollups(
                args.url, args.database, since, now + dt.timedelta(days=1), token=token, state=state
            )
            print(
                f"{now:%Y-%m-%d %H:%M}: wrote {plural(tonnage, 'tonnage rollup')}, "
                f"{plural(figures, 'service rollup')} and {plural(bookings, 'booking rollup')} "
                f"from {since:%Y-%m-%d} on",
                flush=True,
            )
        except (StoreError, DBAPIError) as exc:
            print(f"linli waste rollup: {exc}", file=sys.stderr, flush=True)
            if args.every is None:
                return 1
        if args.every is None:
            return 0
        try:
            time.sleep(args.every * 60)
        except KeyboardInterrupt:
            return 0


def _run(args: argparse.Namespace) -> int:
    from linli.catalog.commands import run_until_signal, setup_logging
    from linli.catalog.errors import ConfigError
    from linli.catalog.tls import tls_problems
    from linli.cloud.waste.config import load_waste_config
    from linli.cloud.waste.service import WasteService
    from linli.transit.gtfs import GtfsError, load_feed

    try:
        config = load_waste_config(args.config)
        missing = tls_problems(config.broker.tls, "broker.tls")
        if missing:
            raise ConfigError(args.config, missing)
        config.client_id()  # a name from the environment is checked before anything starts
        feed = load_feed(config.gtfs)
    except (ConfigError, GtfsError, ValueError) as exc:
        print(f"linli waste run: {exc}", file=sys.stderr)
        return 2
    from sqlalchemy.exc import SQLAlchemyError

    from linli.cloud.db import describe

    token = os.environ.get(config.token_env, "")
    try:
        service = WasteService(config, token, feed)
    except (OSError, SQLAlchemyError) as exc:
        print(f"linli waste run: state {describe(config.state)}: {exc}", file=sys.stderr)
        return 1
    if not token and not service.tokens.live():
        print(
            f"linli waste run: set {config.token_env} to an admin token, or create one with "
            f"`linli waste token create --config {args.config} --scope admin --name NAME`",
            file=sys.stderr,
        )
        return 2
    setup_logging(args.log_level)
    return run_until_signal(service.run)


def _state(path: Path) -> str | None:
    """The waste service's state, for `linli waste token`; None once the config's problems are printed."""
    from linli.catalog.errors import ConfigError
    from linli.cloud.waste.config import load_waste_config

    try:
        return load_waste_config(path).state
    except ConfigError as exc:
        print(f"linli waste token: {exc}", file=sys.stderr)
        return None
