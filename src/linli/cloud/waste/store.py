"""The lifts the edge stored, read back over InfluxQL, and rollups written beside them."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from linli.cloud.waste.booking_stats import BookingStep, booking_figures
from linli.cloud.waste.performance import VisitRecord, performance
from linli.cloud.waste.rollups import Lift, Period, period_start, rollups
from linli.dashboards.influxv1 import QueryError, authorization, run

if TYPE_CHECKING:
    from linli.cloud.waste.state import WasteState


class StoreError(Exception):
    """The store refused or could not be reached; the message says which and why."""


def read_lifts(
    url: str, database: str, first: dt.datetime, last: dt.datetime, *, token: str | None = None
) -> list[Lift]:
    """Every lift stored with a time in [first, last)."""
    # Only integers are put into the query: the times, in milliseconds.
    query = (
        'SELECT "bins", "collected_kg", "stop", "waste_type", "route", "device" FROM "truck" '  # noqa: S608
        f'WHERE "bins" > 0 AND time >= {int(first.timestamp() * 1000)}ms '
        f"AND time < {int(last.timestamp() * 1000)}ms"
    )
    lifts = []
    for r in _rows(url, database, query, token):
        lifts.append(
            Lift(
                time_ms=int(r["time"]),
                waste_type=str(r["waste_type"] or ""),
                stop=str(r["stop"] or ""),
                route=str(r["route"] or ""),
                truck=str(r["device"] or ""),
                bins=int(r["bins"] or 0),
                kg=float(r["collected_kg"] or 0.0),
            )
        )
    return lifts


def read_visits(
    url: str, database: str, first: dt.datetime, last: dt.datetime, *, token: str | None = None
) -> list[VisitRecord]:
    """Every bin-room visit the waste service recorded with a scheduled time in [first, last)."""
    query = (  # only integers are put into it: the times, in milliseconds
        'SELECT "route", "outcome", "on_time", "in_window", "error_min", "noticed", "uncancelled" '  # noqa: S608
        f'FROM "waste_visit" WHERE time >= {int(first.timestamp() * 1000)}ms '
        f"AND time < {int(last.timestamp() * 1000)}ms"
    )
    out = []
    for r in _rows(url, database, query, token):
        out.append(
            VisitRecord(
                time_ms=int(r["time"]),
                route=str(r["route"] or ""),
                outcome=str(r["outcome"] or ""),
                on_time=None if r["on_time"] is None else int(r["on_time"]),
                in_window=None if r["in_window"] is None else int(r["in_window"]),
                error_min=None if r["error_min"] is None else float(r["error_min"]),
                noticed=int(r["noticed"] or 0),
                uncancelled=int(r["uncancelled"] or 0),
            )
        )
    return out


def read_booking_steps(
    url: str, database: str, first: dt.datetime, last: dt.datetime, *, token: str | None = None
) -> list[BookingStep]:
    """Every renovation booking step the waste service recorded with a time in [first, last)."""
    query = (  # only integers are put into it: the times, in milliseconds
        'SELECT "state", "compound", "wait_min", "in_window", "kg" FROM "waste_booking" '  # noqa: S608
        f"WHERE time >= {int(first.timestamp() * 1000)}ms AND time < {int(last.timestamp() * 1000)}ms"
    )
    return [
        BookingStep(
            time_ms=int(r["time"]),
            state=str(r["state"] or ""),
            compound=str(r["compound"] or ""),
            wait_min=None if r["wait_min"] is None else float(r["wait_min"]),
            in_window=None if r["in_window"] is None else int(r["in_window"]),
            kg=None if r["kg"] is None else float(r["kg"]),
        )
        for r in _rows(url, database, query, token)
    ]


def write_rollups(
    url: str,
    database: str,
    since: dt.datetime,
    until: dt.datetime,
    *,
    token: str | None = None,
    state: WasteState | None = None,
) -> tuple[int, int, int]:
    """Tonnage and the service's figures by day, ISO week and month, for every period that
    touches [since, until), whole (from the first of the month, or the Monday before, if
    earlier); written back, replacing what was there, and the tonnage also kept in `state`.
    Returns how many rollups of tonnage, of the bus-like collection's performance, and of
    renovation bookings."""
    first = min(since.replace(day=1), since - dt.timedelta(days=since.weekday()))
    first = first.replace(hour=0, minute=0, second=0, microsecond=0)
    lifts = read_lifts(url, database, first, until, token=token)
    visits = read_visits(url, database, first, until, token=token)
    steps = read_booking_steps(url, database, first, until, token=token)
    since_ms = int(since.timestamp() * 1000)
    # Only periods read from their start: an earlier month's sums from part of it would replace whole ones.
    sums = [
        r for period in Period for r in rollups(lifts, period) if r.start >= period_start(since_ms, period)
    ]
    tonnage = [r.line() for r in sums]
    figures = [
        p.line()
        for period in Period
        for p in performance(visits, period)
        if p.start >= period_start(since_ms, period)
    ]
    bookings = [
        b.line()
        for period in Period
        for b in booking_figures(steps, period)
        if b.start >= period_start(since_ms, period)
    ]
    write_lines(url, database, tonnage + figures + bookings, token=token)
    if state is not None:
        state.keep_rollups(sums, {p: int(period_start(since_ms, p).timestamp() * 1000) for p in Period})
    return len(tonnage), len(figures), len(bookings)


def _rows(url: str, database: str, query: str, token: str | None) -> list[dict[str, Any]]:
    """The query's rows as dicts of column to value."""
    try:
        series = run(url, database, query, token=token)
    except QueryError as exc:
        raise StoreError(str(exc)) from exc
    return [dict(zip(s.columns, row, strict=True)) for s in series for row in s.values]


def write_lines(url: str, database: str, lines: list[str], *, token: str | None = None) -> None:
    """Line protocol through the v1 /write API (InfluxDB 1.x, and 2.x's compatibility)."""
    if not lines:
        return
    query = urllib.parse.urlencode({"db": database, "precision": "ms"})
    request = urllib.request.Request(  # noqa: S310 (the operator's store)
        f"{url.rstrip('/')}/write?{query}", data="\n".join(lines).encode(), method="POST"
    )
    if token:
        request.add_header("Authorization", authorization(token))
    try:
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass
    except urllib.error.HTTPError as exc:
        raise StoreError(f"{url}: HTTP {exc.code} {exc.read()[:200].decode(errors='replace')}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(f"{url}: unreachable ({exc})") from exc
