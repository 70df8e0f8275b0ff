"""What `linli waste stats` prints: the day's figures from the store and the running service."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys

from linli.catalog.commands import print_json
from linli.catalog.wording import plural
from linli.cloud.waste.rollups import Period


def _cell(column: str, value: object) -> object:
    """A service figure as the table and the CSV show it: shares as percentages, blank for none."""
    if value is None:
        return ""
    return f"{value:.1%}" if column in ("on_time", "in_window") else value


def stats(args: argparse.Namespace) -> int:
    from collections import defaultdict
    from zoneinfo import ZoneInfo

    from linli.cloud.waste.rollups import ZONE, rollups
    from linli.cloud.waste.store import StoreError, read_lifts, write_lines

    zone = ZoneInfo(ZONE)
    end = args.end or dt.datetime.now(zone).date()
    start = args.start or end - dt.timedelta(days=31)
    if start > end:
        print("linli waste stats: --from is after --to", file=sys.stderr)
        return 2
    period = Period(args.period)
    first = dt.datetime.combine(start, dt.time(), zone)
    last = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), zone)
    token = os.environ.get(args.token_env) or None
    if args.of == "service":
        return _service_stats(args, period, (first, last), token)
    try:
        lifts = read_lifts(args.url, args.database, first, last, token=token)
        found = rollups(lifts, period)
        if args.write:
            write_lines(args.url, args.database, [r.line() for r in found], token=token)
    except StoreError as exc:
        print(f"linli waste stats: {exc}", file=sys.stderr)
        return 1
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for r in found:
        s = sums[(r.start.isoformat(), str(getattr(r, args.by)))]
        s[0] += r.lifts
        s[1] += r.bins
        s[2] += r.kg
    rows = [
        (when[:10], key, int(n), int(bins), round(kg, 1))
        for (when, key), (n, bins, kg) in sorted(sums.items())
    ]
    if args.json:
        columns = ("period_start", args.by, "lifts", "bins", "kg")
        print_json({
            "from": start.isoformat(), "to": end.isoformat(), "period": str(period), "of": "tonnage",
            "by": args.by, "lifts": len(lifts), "rows": [dict(zip(columns, r, strict=True)) for r in rows],
            "written": len(found) if args.write else None,
        })  # fmt: skip
        return 0
    if args.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["period_start", args.by, "lifts", "bins", "kg"])
        out.writerows(rows)
        return 0
    print(f"{len(lifts):,} lifts from {start} to {end}, by {period} and {args.by} (Asia/Shanghai)")
    print(f"{period + ' from':<12}{args.by:<16}{'lifts':>7}{'bins':>7}{'kg':>12}")
    for when, key, n, bins, kg in rows:
        print(f"{when:<12}{key:<16}{n:>7}{bins:>7}{kg:>12,.1f}")
    if args.write:
        print(f"wrote {plural(len(found), 'rollup')} to {args.database} ('waste_rollup')")
    return 0


SERVICE_COLUMNS = (
    "period_start", "route", "stops", "on_time", "served", "revisited", "skipped", "missed",
    "noticed", "in_window", "p50_error_min", "uncancelled",
)  # fmt: skip


def _service_stats(
    args: argparse.Namespace, period: Period, span: tuple[dt.datetime, dt.datetime], token: str | None
) -> int:
    from linli.cloud.waste.performance import performance
    from linli.cloud.waste.store import StoreError, read_visits, write_lines

    try:
        visits = read_visits(args.url, args.database, *span, token=token)
        found = performance(visits, period)
        if args.write:
            write_lines(args.url, args.database, [p.line() for p in found], token=token)
    except StoreError as exc:
        print(f"linli waste stats: {exc}", file=sys.stderr)
        return 1

    facts = [
        (
            p.start.date().isoformat(),
            p.route,
            p.stops,
            p.on_time,
            *(p.outcomes[o] for o in SERVICE_COLUMNS[4:8]),
            p.noticed,
            p.in_window,
            None if p.p50_error_min is None else round(p.p50_error_min, 2),
            p.uncancelled,
        )
        for p in found
    ]
    if args.json:
        print_json({
            "from": span[0].date().isoformat(), "to": (span[1] - dt.timedelta(days=1)).date().isoformat(),
            "period": str(period), "of": "service", "visits": len(visits),
            "rows": [dict(zip(SERVICE_COLUMNS, f, strict=True)) for f in facts],
            "written": len(found) if args.write else None,
        })  # fmt: skip
        return 0
    rows = [tuple(_cell(c, v) for c, v in zip(SERVICE_COLUMNS, f, strict=True)) for f in facts]
    if args.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(SERVICE_COLUMNS)
        out.writerows(rows)
        return 0
    print(
        f"{plural(len(visits), 'bin-room visit')} from {span[0].date()} to {span[1].date()}, "
        f"by {period} and route"
    )
    print(
        "".join(f"{c:>{max(8, len(c) + 1)}}" if i > 1 else f"{c:<13}" for i, c in enumerate(SERVICE_COLUMNS))
    )
    for row in rows:
        print(
            "".join(
                f"{v!s:>{max(8, len(c) + 1)}}" if i > 1 else f"{v!s:<13}"
                for i, (c, v) in enumerate(zip(SERVICE_COLUMNS, row, strict=True))
            )
        )
    if args.write:
        print(f"wrote {plural(len(found), 'rollup')} to {args.database} ('waste_performance')")
    return 0
