"""`linli dashboards ...`: build the JSON, push it to a Grafana, draw the big screen."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from linli.catalog.commands import iso_time, setup_logging
from linli.catalog.i18n import DEFAULT_LOCALE, LOCALES, Locale

SCREEN = "linli-screen"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `linli dashboards` and its commands."""
    top = subparsers.add_parser("dashboards", help="Grafana dashboards: build, push, picture")
    cmds = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = cmds.add_parser(
        "build",
        help="write every dashboard's JSON from the code",
        description="Build every dashboard, check it against the schema, and write DIR/<uid>.json.",
    )
    build.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder (default: dashboards/json of the source; en/ in it for en)",
    )
    build.add_argument("--check", action="store_true", help="write nothing; exit 1 if the JSON is stale")
    _locale_option(build)
    build.set_defaults(func=_build)

    push = cmds.add_parser(
        "push",
        help="upload the folder, data source and dashboards to a Grafana",
        description=(
            "Create or update the 'linli' folder, the InfluxDB data source and every dashboard "
            "through Grafana's HTTP API. Safe to repeat."
        ),
    )
    push.add_argument("--url", required=True, help="Grafana's URL, e.g. http://localhost:3000")
    push.add_argument(
        "--token", default=os.environ.get("GRAFANA_TOKEN"), help="service account token ($GRAFANA_TOKEN)"
    )
    push.add_argument("--influx-url", required=True, help="InfluxDB's URL as Grafana reaches it")
    push.add_argument("--database", default="linli", help="database, or bucket on InfluxDB 2 (default linli)")
    push.add_argument(
        "--influx-token", default=os.environ.get("INFLUXDB_TOKEN"), help="InfluxDB 2 token ($INFLUXDB_TOKEN)"
    )
    _locale_option(push)
    push.set_defaults(func=_push)

    picture = cmds.add_parser(
        "picture",
        help="draw the big screen into a PNG",
        description=(
            "Draw a dashboard as the wall screen would show it, from the InfluxDB at --url; from the "
            "VictoriaMetrics at --victoria-metrics (`linli demo`'s store: its points are copied into a "
            "throwaway InfluxDB 1.x, which runs the panels' InfluxQL); or, with --record, first record "
            "two simulated hours of the district into a local InfluxDB 1.x."
        ),
    )
    picture.add_argument("--out", type=Path, required=True, help="PNG to write")
    picture.add_argument("--url", help="InfluxDB with the district's data (1.x, or 2.x's v1 API)")
    picture.add_argument(
        "--victoria-metrics",
        metavar="URL",
        help="VictoriaMetrics with the district's data (`linli demo`'s store)",
    )
    picture.add_argument(
        "--end",
        type=iso_time,
        default=None,
        help="the screen's now (ISO with offset; default: now, or from --victoria-metrics its newest point)",
    )
    picture.add_argument("--database", default="linli")
    picture.add_argument("--token", default=os.environ.get("INFLUXDB_TOKEN"))
    picture.add_argument("--hours", type=float, default=1.0, help="time range drawn (default 1 h)")
    picture.add_argument(
        "--record", action="store_true", help="record two simulated hours first (needs influxd, mosquitto)"
    )
    picture.add_argument("--dashboard", default=SCREEN, help=f"dashboard uid (default {SCREEN})")
    _locale_option(picture)
    picture.set_defaults(func=_picture)


def _locale_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--locale",
        choices=LOCALES,
        default=DEFAULT_LOCALE,
        help=f"language of titles, legends and units (default {DEFAULT_LOCALE}, the district's)",
    )


def _build(args: argparse.Namespace) -> int:
    from linli.dashboards import boards

    out = args.out or boards.json_dir(args.locale)
    try:
        if args.check:
            found = boards.stale(out, args.locale)
            for name in found:
                print(f"stale: {out / name}", file=sys.stderr)
            if found:
                print("regenerate with: linli dashboards build", file=sys.stderr)
            return 1 if found else 0
        for path in boards.write(out, args.locale):
            print(path)
    except boards.InvalidDashboardError as exc:
        print(f"linli dashboards build: invalid dashboard: {exc}", file=sys.stderr)
        return 1
    return 0


def _push(args: argparse.Namespace) -> int:
    from linli.dashboards import boards, grafana

    if not args.token:
        print("linli dashboards push: give --token or set GRAFANA_TOKEN", file=sys.stderr)
        return 2
    dashboards = {uid: boards.to_json(model) for uid, model in boards.models(args.locale).items()}
    store = grafana.Store(args.influx_url, args.database, args.influx_token)
    try:
        for line in grafana.push(args.url, args.token, store, dashboards):
            print(line)
    except grafana.PushError as exc:
        print(f"linli dashboards push: {exc}", file=sys.stderr)
        return 1
    return 0


def _picture(args: argparse.Namespace) -> int:
    from linli.dashboards import boards
    from linli.dashboards.influxv1 import QueryError
    from linli.dashboards.render import Source, render
    from linli.demo.servers import ServerMissingError

    if args.dashboard not in boards.BOARDS:
        print(
            f"linli dashboards picture: no dashboard '{args.dashboard}'; "
            f"there are {', '.join(boards.BOARDS)}",
            file=sys.stderr,
        )
        return 2
    if not args.record and not args.url and not args.victoria_metrics:
        print(
            "linli dashboards picture: give --url of an InfluxDB, --victoria-metrics, or --record",
            file=sys.stderr,
        )
        return 2
    dashboard: dict[str, Any] = boards.to_json(boards.models(args.locale)[args.dashboard])
    setup_logging("warning")
    try:
        if args.record:
            with tempfile.TemporaryDirectory(prefix="linli-picture-") as tmp:
                return _record_and_draw(dashboard, args.out, Path(tmp), args.locale)
        if args.victoria_metrics:
            with tempfile.TemporaryDirectory(prefix="linli-picture-") as tmp:
                return _from_victoria_metrics(dashboard, args, Path(tmp))
        end = int((args.end if args.end is not None else time.time()) * 1000)
        start = end - int(args.hours * 3_600_000)
        source = Source(args.url, args.database, start, end, zone=dashboard["timezone"], token=args.token)
        print(render(dashboard, source, args.out, locale=args.locale))
        _say_empty(source)
    except (QueryError, OSError, ServerMissingError) as exc:
        print(f"linli dashboards picture: {exc}", file=sys.stderr)
        return 1
    return 0


def _say_empty(source: Any) -> None:
    """Which panels had nothing to show, on stderr (stdout is the picture's path)."""
    if source.empty:
        print(f"panels with no data: {', '.join(source.empty)}", file=sys.stderr)
    else:
        print("every panel has data", file=sys.stderr)


def _from_victoria_metrics(dashboard: dict[str, Any], args: argparse.Namespace, workdir: Path) -> int:
    from linli.dashboards import fromvm
    from linli.dashboards.influxv1 import run
    from linli.dashboards.render import Source, render
    from linli.demo.servers import start_influxdb1

    names = fromvm.measurements(dashboard)
    end = int(args.end * 1000) if args.end is not None else fromvm.newest_ms(args.victoria_metrics, names)
    if end is None:
        print(f"linli dashboards picture: no district data in {args.victoria_metrics}", file=sys.stderr)
        return 1
    start = end - int(args.hours * 3_600_000)
    influx = start_influxdb1(workdir / "influxdb")
    try:
        run(influx.url, "", "CREATE DATABASE linli")
        # From the day's start too: some panels count today.
        copied = fromvm.copy(
            args.victoria_metrics,
            influx.url,
            "linli",
            dashboard,
            start_ms=min(start, end - 86_400_000),
            end_ms=end,
        )
        print(f"{copied:,} points copied from {args.victoria_metrics}", file=sys.stderr)
        source = Source(influx.url, "linli", start, end, zone=dashboard["timezone"])
        print(render(dashboard, source, args.out, locale=args.locale))
        _say_empty(source)
    finally:
        influx.stop()
    return 0


def _record_and_draw(dashboard: dict[str, Any], out: Path, workdir: Path, locale: Locale) -> int:
    from linli.dashboards.influxv1 import run
    from linli.dashboards.render import Source, render
    from linli.demo.recording import record
    from linli.demo.servers import start_influxdb1, start_mosquitto

    influx = start_influxdb1(workdir / "influxdb")
    broker = start_mosquitto(workdir / "mosquitto")
    try:
        run(influx.url, "", "CREATE DATABASE linli")
        print(
            "recording two simulated hours of the district (about two minutes)...",
            file=sys.stderr,
            flush=True,
        )
        rec = asyncio.run(record(url=influx.url, database="linli", mqtt_port=broker.port, workdir=workdir))
        source = Source(rec.url, rec.database, rec.start_ms, rec.end_ms, zone=dashboard["timezone"])
        print(render(dashboard, source, out, locale=locale))
    finally:
        broker.stop()
        influx.stop()
    return 0
