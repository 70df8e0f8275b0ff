"""Waste collection timetables as GTFS static files, as bus lines publish theirs.

A feed is a folder: `agency.txt`, `stops.txt` (the bin rooms and the depot), `routes.txt`,
`trips.txt`, `stop_times.txt` (the scheduled times), `shapes.txt` (the roads each trip
drives) and `calendar.txt` (the weekly rule; optional `calendar_dates.txt` adds and removes
single dates: holidays, and China's swapped working days), plus `linli.toml` beside them with
what GTFS has no place for:
each route's waste type and truck, each truck's fleet number and plate (how people know it),
each stop's bins and the people to tell (its bin-room keepers and its property contact), each
in their own language. A stop's `stop_name` is the name people use (`虹许小区垃圾房`); the
optional `translations.txt` (GTFS's own) gives it in other languages (`language=en`).

`load_feed` reads and checks the whole folder and reports every problem at once, each with
the file, the row and what is wrong. Geometry is measured in metres in UTM zone 51N (EPSG:32651,
Shanghai's), through pyproj and shapely.
"""

from __future__ import annotations

import csv
import datetime as dt
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from pyproj import Transformer
from shapely.geometry import LineString, Point

from linli.catalog.errors import validation_reasons
from linli.catalog.i18n import Locale
from linli.transit.extras import Extras, RouteExtras
from linli.transit.times import gtfs_seconds

FILES = ("agency.txt", "stops.txt", "routes.txt", "trips.txt", "stop_times.txt", "shapes.txt", "calendar.txt")
EXTRAS = "linli.toml"
REQUIRED = {
    "agency.txt": ("agency_id", "agency_name", "agency_url", "agency_timezone"),
    "stops.txt": ("stop_id", "stop_name", "stop_lat", "stop_lon"),
    "routes.txt": ("route_id", "agency_id", "route_short_name", "route_type"),
    "trips.txt": ("route_id", "service_id", "trip_id", "shape_id"),
    "stop_times.txt": ("trip_id", "arrival_time", "departure_time", "stop_id", "stop_sequence"),
    "shapes.txt": ("shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence"),
    "calendar.txt": (
        "service_id", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
        "start_date", "end_date",
    ),
}  # fmt: skip
# Optional: single dates a service runs (1) or does not (2) whatever calendar.txt says.
CALENDAR_DATES = "calendar_dates.txt"
REQUIRED[CALENDAR_DATES] = ("service_id", "date", "exception_type")
ADDED, REMOVED = "1", "2"
# Optional: stop names in other languages, as GTFS gives them (table_name=stops, field_name=stop_name).
TRANSLATIONS = "translations.txt"
REQUIRED[TRANSLATIONS] = ("table_name", "field_name", "language", "translation")
# A stop further than this from the road its trip drives is on the wrong road (or the shape is).
MAX_STOP_TO_SHAPE_M = 60.0
UTM51N = Transformer.from_crs("EPSG:4326", "EPSG:32651", always_xy=True)


def metres(lat: float, lon: float) -> tuple[float, float]:
    """WGS-84 to UTM 51N (x east, y north), in metres."""
    x, y = UTM51N.transform(lon, lat)
    return float(x), float(y)


@dataclass(frozen=True)
class Stop:
    id: str
    name: str  # as people in the district say it (the feed's language)
    lat: float
    lon: float
    # stop_name in other languages, by GTFS language code ("en"), from translations.txt
    names: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def name_in(self, locale: Locale) -> str:
        """The name in `locale`'s language; the feed's own where it gives none."""
        return self.names.get(locale.partition("-")[0], self.name)

    @cached_property
    def xy(self) -> tuple[float, float]:
        return metres(self.lat, self.lon)


@dataclass(frozen=True)
class StopTime:
    stop_id: str
    sequence: int
    arrival_s: int  # seconds after the service day's noon minus 12 h, as GTFS counts
    departure_s: int


@dataclass(frozen=True)
class Trip:
    id: str
    route_id: str
    service_id: str
    shape_id: str
    stop_times: tuple[StopTime, ...]


@dataclass(frozen=True)
class Shape:
    id: str
    points: tuple[tuple[float, float], ...]  # (lat, lon) in order

    @cached_property
    def line(self) -> LineString:
        """The road in metres (UTM 51N)."""
        return LineString([metres(lat, lon) for lat, lon in self.points])


@dataclass(frozen=True)
class Service:
    id: str
    days: tuple[bool, ...]  # Monday first
    start: str  # YYYYMMDD; "" for a service of calendar_dates.txt only
    end: str
    added: frozenset[str] = frozenset()  # YYYYMMDD: runs that day whatever the weekly rule says
    removed: frozenset[str] = frozenset()  # YYYYMMDD: does not run that day


@dataclass(frozen=True)
class Feed:
    """A checked timetable."""

    timezone: str
    stops: dict[str, Stop]
    routes: dict[str, RouteExtras]
    trips: dict[str, Trip]
    shapes: dict[str, Shape]
    services: dict[str, Service]
    extras: Extras
    # Each route's name as people read it (routes.txt's long name, or its short name), by
    # language: "" the feed's own, others from translations.txt.
    route_names: dict[str, dict[str, str]] = field(default_factory=dict)

    def route_name(self, route_id: str, locale: str) -> str:
        """The route's name in `locale`'s language; the feed's own where none is given; its id
        where the feed names it not at all."""
        names = self.route_names.get(route_id, {})
        return names.get(locale.partition("-")[0]) or names.get("") or route_id


class GtfsError(Exception):
    """Every problem of a feed, each as 'file:row: what'."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{folder}: {len(problems)} problem(s):\n{lines}")


class _Reader:
    """Rows of the feed's files, with every problem collected as 'file:row: what'."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problems: list[str] = []

    def rows(self, name: str) -> Iterator[tuple[int, dict[str, str]]]:
        path = self.folder / name
        if not path.is_file():
            self.problems.append(f"{name}: missing (a feed has {', '.join(FILES)})")
            return
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED[name] if c not in (reader.fieldnames or [])]
            if missing:
                self.problems.append(f"{name}:1: missing column(s) {', '.join(missing)}")
                return
            for row, record in enumerate(reader, start=2):
                yield row, {k: (v or "").strip() for k, v in record.items() if k is not None}

    def problem(self, name: str, row: int, text: str) -> None:
        self.problems.append(f"{name}:{row}: {text}")


def load_feed(folder: Path) -> Feed:  # noqa: PLR0912, PLR0915 (one pass per file, in order)
    """Read and check a feed; GtfsError lists every problem found."""
    r = _Reader(folder)
    timezone = ""
    for row, rec in r.rows("agency.txt"):
        timezone = timezone or rec["agency_timezone"]
        if not rec["agency_timezone"]:
            r.problem("agency.txt", row, "agency_timezone is empty")
    stops: dict[str, Stop] = {}
    for row, rec in r.rows("stops.txt"):
        try:
            lat, lon = float(rec["stop_lat"]), float(rec["stop_lon"])
        except ValueError:
            r.problem("stops.txt", row, f"stop '{rec['stop_id']}': stop_lat and stop_lon must be numbers")
            continue
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            r.problem("stops.txt", row, f"stop '{rec['stop_id']}': ({lat}, {lon}) is not a place on Earth")
            continue
        if rec["stop_id"] in stops:
            r.problem("stops.txt", row, f"stop_id '{rec['stop_id']}' appears twice")
        stops[rec["stop_id"]] = Stop(rec["stop_id"], rec["stop_name"], lat, lon)
    route_ids: set[str] = set()
    route_names: dict[str, dict[str, str]] = {}
    for row, rec in r.rows("routes.txt"):
        if rec["route_id"] in route_ids:
            r.problem("routes.txt", row, f"route_id '{rec['route_id']}' appears twice")
        route_ids.add(rec["route_id"])
        route_names[rec["route_id"]] = {"": rec.get("route_long_name") or rec["route_short_name"]}
    if (folder / TRANSLATIONS).is_file():
        _translate(r, stops, route_names)
    services: dict[str, Service] = {}
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    # calendar.txt may be left out when calendar_dates.txt gives every date (GTFS allows either).
    weekly = (folder / "calendar.txt").is_file() or not (folder / CALENDAR_DATES).is_file()
    for row, rec in r.rows("calendar.txt") if weekly else iter(()):
        if any(rec[d] not in ("0", "1") for d in days):
            r.problem("calendar.txt", row, f"service '{rec['service_id']}': each day must be 0 or 1")
            continue
        if not (len(rec["start_date"]) == len(rec["end_date"]) == 8 and rec["start_date"] <= rec["end_date"]):
            r.problem(
                "calendar.txt", row, f"service '{rec['service_id']}': dates must be YYYYMMDD, start first"
            )
        services[rec["service_id"]] = Service(
            rec["service_id"], tuple(rec[d] == "1" for d in days), rec["start_date"], rec["end_date"]
        )
    if (folder / CALENDAR_DATES).is_file():
        services = _calendar_dates(r, services)
    points: dict[str, list[tuple[int, float, float]]] = {}
    for row, rec in r.rows("shapes.txt"):
        try:
            seq, lat, lon = (
                int(rec["shape_pt_sequence"]),
                float(rec["shape_pt_lat"]),
                float(rec["shape_pt_lon"]),
            )
        except ValueError:
            r.problem("shapes.txt", row, f"shape '{rec['shape_id']}': sequence, lat and lon must be numbers")
            continue
        pts = points.setdefault(rec["shape_id"], [])
        if pts and seq <= pts[-1][0]:
            r.problem(
                "shapes.txt", row, f"shape '{rec['shape_id']}': shape_pt_sequence {seq} does not increase"
            )
        pts.append((seq, lat, lon))
    shapes = {sid: Shape(sid, tuple((lat, lon) for _, lat, lon in pts)) for sid, pts in points.items()}
    for sid, drawn in shapes.items():
        if len(drawn.points) < 2:
            r.problems.append(f"shapes.txt: shape '{sid}' has fewer than 2 points")
    trip_rows: dict[str, tuple[int, dict[str, str]]] = {}
    for row, rec in r.rows("trips.txt"):
        tid = rec["trip_id"]
        if tid in trip_rows:
            r.problem("trips.txt", row, f"trip_id '{tid}' appears twice")
        for column, known, what in (
            ("route_id", route_ids, "routes.txt"),
            ("service_id", services, "calendar.txt or calendar_dates.txt"),
            ("shape_id", shapes, "shapes.txt"),
        ):
            if rec[column] not in known:
                r.problem("trips.txt", row, f"trip '{tid}': {column} '{rec[column]}' is not in {what}")
        trip_rows[tid] = (row, rec)
    times: dict[str, list[tuple[int, StopTime]]] = {}
    for row, rec in r.rows("stop_times.txt"):
        tid = rec["trip_id"]
        if tid not in trip_rows:
            r.problem("stop_times.txt", row, f"trip_id '{tid}' is not in trips.txt")
            continue
        if rec["stop_id"] not in stops:
            r.problem("stop_times.txt", row, f"trip '{tid}': stop_id '{rec['stop_id']}' is not in stops.txt")
            continue
        try:
            st = StopTime(
                rec["stop_id"],
                int(rec["stop_sequence"]),
                gtfs_seconds(rec["arrival_time"]),
                gtfs_seconds(rec["departure_time"]),
            )
        except ValueError as exc:
            r.problem("stop_times.txt", row, f"trip '{tid}': {exc}")
            continue
        if st.departure_s < st.arrival_s:
            r.problem(
                "stop_times.txt", row, f"trip '{tid}': departs at {rec['departure_time']}, before it arrives"
            )
        before = times.setdefault(tid, [])
        if before:
            prev = before[-1][1]
            if st.sequence <= prev.sequence:
                r.problem(
                    "stop_times.txt", row, f"trip '{tid}': stop_sequence {st.sequence} does not increase"
                )
            elif st.arrival_s < prev.departure_s:
                r.problem(
                    "stop_times.txt",
                    row,
                    f"trip '{tid}': arrives at {rec['arrival_time']}, before it left the stop before",
                )
        before.append((row, st))
    extras = _extras(r, folder)
    trips: dict[str, Trip] = {}
    for tid, (row, rec) in trip_rows.items():
        stop_times = times.get(tid, [])
        if len(stop_times) < 2:
            r.problem("trips.txt", row, f"trip '{tid}' has fewer than 2 stop times in stop_times.txt")
            continue
        shape = shapes.get(rec["shape_id"])
        if shape is not None and len(shape.points) >= 2:
            for st_row, st in stop_times:
                gap = shape.line.distance(Point(stops[st.stop_id].xy))
                if gap > MAX_STOP_TO_SHAPE_M:
                    r.problem(
                        "stop_times.txt",
                        st_row,
                        f"trip '{tid}': stop '{st.stop_id}' is {gap:.0f} m from shape '{shape.id}' "
                        f"(at most {MAX_STOP_TO_SHAPE_M:.0f} m)",
                    )
        trips[tid] = Trip(
            tid, rec["route_id"], rec["service_id"], rec["shape_id"], tuple(st for _, st in stop_times)
        )
    if extras is not None:
        for rid in sorted(route_ids - set(extras.routes)):
            r.problems.append(
                f"{EXTRAS}: route '{rid}' has no [routes.{rid}] (waste_type, kg_per_bin, truck)"
            )
        served = {st.stop_id for t in trips.values() for st in t.stop_times}
        for sid in sorted(served - set(extras.stops) - set(extras.depots)):
            r.problems.append(f"{EXTRAS}: stop '{sid}' has no [stops.{sid}] with its bins and keepers")
        for sid in sorted(set(extras.stops) - set(stops)):
            r.problems.append(f"{EXTRAS}: [stops.{sid}] names no stop of stops.txt")
        driven = {route.truck for route in extras.routes.values()}
        driven |= {t.id for t in extras.renovation.trucks} if extras.renovation else set()
        for tid in sorted(driven - set(extras.trucks)):
            r.problems.append(
                f"{EXTRAS}: truck '{tid}' has no [trucks] entry (fleet, plate) to name it to people"
            )
    if r.problems or extras is None:
        raise GtfsError(folder, r.problems)
    return Feed(timezone, stops, extras.routes, trips, shapes, services, extras, route_names)


def _calendar_dates(r: _Reader, services: dict[str, Service]) -> dict[str, Service]:
    """The services with calendar_dates.txt's exceptions; a service it alone names runs only on
    the dates it adds."""
    changes: dict[str, tuple[set[str], set[str]]] = {}
    for row, rec in r.rows(CALENDAR_DATES):
        sid, day, kind = rec["service_id"], rec["date"], rec["exception_type"]
        try:
            dt.datetime.strptime(day, "%Y%m%d")
        except ValueError:
            r.problem(CALENDAR_DATES, row, f"service '{sid}': date '{day}' is not a date YYYYMMDD")
            continue
        if kind not in (ADDED, REMOVED):
            r.problem(
                CALENDAR_DATES, row, f"service '{sid}': exception_type must be 1 (added) or 2 (removed)"
            )
            continue
        added, removed = changes.setdefault(sid, (set(), set()))
        if day in (added | removed):
            r.problem(CALENDAR_DATES, row, f"service '{sid}': {day} is given twice")
        (added if kind == ADDED else removed).add(day)
    out = dict(services)
    for sid, (added, removed) in changes.items():
        base = services.get(sid, Service(sid, (False,) * 7, "", ""))
        out[sid] = replace(base, added=frozenset(added), removed=frozenset(removed))
    return out


def _translate(r: _Reader, stops: dict[str, Stop], routes: dict[str, dict[str, str]]) -> None:
    """Stops' and routes' names in other languages. A row names its stop or route by record_id,
    or by field_value (every stop or route of that name). Other tables' translations are not
    shown to anyone here."""
    for row, rec in r.rows(TRANSLATIONS):
        table = (rec["table_name"], rec["field_name"])
        if table not in (("stops", "stop_name"), ("routes", "route_long_name")):
            continue
        language, translation = rec["language"], rec["translation"]
        record, value = rec.get("record_id", ""), rec.get("field_value", "")
        if not language or not translation:
            r.problem(TRANSLATIONS, row, "language and translation must not be empty")
            continue
        if table[0] == "routes":
            ids = [record] if record in routes else [i for i, n in routes.items() if value and n[""] == value]
            if not ids:
                what = f"record_id '{record}'" if record else f"field_value '{value}'"
                r.problem(TRANSLATIONS, row, f"{what} is no route of routes.txt")
            for route in ids:
                routes[route][language] = translation
            continue
        named = (
            [stops[record]] if record in stops else [s for s in stops.values() if value and s.name == value]
        )
        if not named:
            what = f"record_id '{record}'" if record else f"field_value '{value}'"
            r.problem(TRANSLATIONS, row, f"{what} is no stop of stops.txt")
        for stop in named:
            stop.names[language] = translation


def _extras(r: _Reader, folder: Path) -> Extras | None:
    path = folder / EXTRAS
    try:
        return Extras.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        r.problems.append(f"{EXTRAS}: missing (each route's waste type and truck, each stop's keepers)")
    except tomllib.TOMLDecodeError as exc:
        r.problems.append(f"{EXTRAS}: not TOML: {exc}")
    except ValidationError as exc:
        r.problems.extend(f"{EXTRAS}: {reason}" for reason in validation_reasons(exc))
    return None


def service_day(zero_s: float, timezone: str) -> dt.date:
    """The local date of a service day, from its GTFS time 0 (noon minus 12 h)."""
    return dt.datetime.fromtimestamp(zero_s + 12 * 3600, ZoneInfo(timezone)).date()


def local_hhmm(epoch_s: float, timezone: str) -> str:
    """A moment as local clock time, as keepers and dispatchers read it."""
    return dt.datetime.fromtimestamp(epoch_s, ZoneInfo(timezone)).strftime("%H:%M")


def service_zero(date: dt.date, timezone: str) -> float:
    """Epoch seconds of a service day's GTFS time 0: noon minus 12 h, local time."""
    noon = dt.datetime.combine(date, dt.time(12), ZoneInfo(timezone))
    return noon.timestamp() - 12 * 3600


def runs_on(feed: Feed, trip: Trip, date: dt.date) -> bool:
    """Whether the trip's service runs on that local date."""
    return why_it_runs(feed, trip, date)[0]


def why_it_runs(feed: Feed, trip: Trip, date: dt.date) -> tuple[bool, str]:
    """Whether the trip runs on that local date, and why: `added` or `removed` (an exception of
    calendar_dates.txt), `weekly` (calendar.txt's day), `not_weekday` or `out_of_dates`."""
    service = feed.services[trip.service_id]
    day = date.strftime("%Y%m%d")
    if day in service.removed:
        return False, "removed"
    if day in service.added:
        return True, "added"
    if not service.start <= day <= service.end:
        return False, "out_of_dates"
    if not service.days[date.weekday()]:
        return False, "not_weekday"
    return True, "weekly"
