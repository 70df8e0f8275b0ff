"""The waste timetables as GTFS: the district's feed loads, and every kind of broken file is
reported with the file, the row and what is wrong."""

from __future__ import annotations

import ast
import datetime as dt
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gtfs_analyzer
import pytest

from linli.transit import times
from linli.transit.gtfs import GtfsError, load_feed, metres, runs_on, why_it_runs
from linli.transit.times import gtfs_hhmm, gtfs_seconds

ROOT = Path(__file__).resolve().parents[2]
HONGQIAO = ROOT / "deploy" / "gtfs" / "hongqiao"


def test_the_district_feed_loads_with_every_route_trip_and_keeper() -> None:
    feed = load_feed(HONGQIAO)
    assert feed.timezone == "Asia/Shanghai"
    assert {r.waste_type for r in feed.routes.values()} == {"wet", "dry", "recyclable", "hazardous"}
    # Wet waste twice a day, the rest once; each trip leaves the depot and comes back to it.
    assert sorted(t.id for t in feed.trips.values() if t.route_id == "wet-north") == [
        "wet-north-0630",
        "wet-north-1730",
    ]
    for trip in feed.trips.values():
        assert trip.stop_times[0].stop_id == trip.stop_times[-1].stop_id == "depot"
        # Roads, not straight lines: the shape is longer than the stops joined directly.
        straight = sum(
            ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5
            for (ax, ay), (bx, by) in zip(
                (feed.stops[s.stop_id].xy for s in trip.stop_times),
                [feed.stops[s.stop_id].xy for s in trip.stop_times][1:],
                strict=False,
            )
        )
        assert feed.shapes[trip.shape_id].line.length > straight * 1.05
    served = {st.stop_id for t in feed.trips.values() for st in t.stop_times} - {"depot"}
    assert served <= set(feed.extras.stops)
    assert all(feed.extras.stops[s].keepers for s in served)


def test_metres_are_utm_51n() -> None:
    # The depot and a point 0.001 degrees north: about 111 m apart, in metres.
    (x0, y0), (x1, y1) = metres(31.201, 121.392), metres(31.202, 121.392)
    assert abs(x1 - x0) < 3.0  # grid north differs from true north by under a degree here
    assert 110.0 < y1 - y0 < 112.0


def test_gtfs_times_pass_midnight_and_refuse_nonsense() -> None:
    assert gtfs_seconds("06:30:00") == 23_400
    assert gtfs_seconds("25:10:05") == 90_605  # a trip that runs past midnight
    for bad in ("6:3:00", "06:60:00", "06:30", "ab:cd:ef", ""):
        with pytest.raises(ValueError, match="is not a time"):
            gtfs_seconds(bad)


def test_gtfs_hhmm_writes_back_what_gtfs_seconds_read_and_imports_only_the_standard_library() -> None:
    for text in ("00:00", "06:30", "23:59", "25:10"):
        assert gtfs_hhmm(gtfs_seconds(f"{text}:00")) == text
    assert gtfs_hhmm(gtfs_seconds("06:30:59")) == "06:30"  # to the minute
    # The command line formats the timetable's times with it before `--help` could import pydantic.
    tree = ast.parse(Path(times.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {"__future__"}


def broken(tmp_path: Path, name: str, old: str, new: str) -> list[str]:
    """The district's feed with one text replaced in one file: the problems reported."""
    folder = tmp_path / "feed"
    shutil.copytree(HONGQIAO, folder)
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(GtfsError) as info:
        load_feed(folder)
    return info.value.problems


def test_an_id_that_resolves_nowhere_is_named_with_its_row(tmp_path: Path) -> None:
    problems = broken(
        tmp_path, "trips.txt", "wet-north,daily,wet-north-0630", "wet-nort,daily,wet-north-0630"
    )
    assert problems == ["trips.txt:2: trip 'wet-north-0630': route_id 'wet-nort' is not in routes.txt"]


def test_a_stop_time_before_the_one_before_is_refused(tmp_path: Path) -> None:
    problems = broken(
        tmp_path, "stop_times.txt", "wet-north-0630,06:30:41,06:33:41", "wet-north-0630,06:20:41,06:33:41"
    )
    assert problems == [
        "stop_times.txt:3: trip 'wet-north-0630': arrives at 06:20:41, before it left the stop before"
    ]


def test_a_stop_far_from_its_road_is_refused(tmp_path: Path) -> None:
    # hongxu-1 moved 0.01 degrees north: about 1.1 km off every road that serves it.
    problems = broken(
        tmp_path, "stops.txt", "hongxu-1,虹许小区垃圾房,31.199017", "hongxu-1,虹许小区垃圾房,31.209017"
    )
    assert problems
    assert all("stop 'hongxu-1' is " in p and "m from shape" in p for p in problems)
    assert all(p.startswith("stop_times.txt:") for p in problems)


def test_a_stop_without_keepers_and_a_route_without_its_waste_type_are_named(tmp_path: Path) -> None:
    problems = broken(tmp_path, "linli.toml", "[stops.hongxu-1]", "[stops.hongxu-one]")
    assert "linli.toml: stop 'hongxu-1' has no [stops.hongxu-1] with its bins and keepers" in problems
    assert "linli.toml: [stops.hongxu-one] names no stop of stops.txt" in problems


def test_a_truck_without_its_fleet_number_and_plate_is_named(tmp_path: Path) -> None:
    problems = broken(tmp_path, "linli.toml", "truck-wet-north = {", "truck-wet-nord = {")
    assert (
        "linli.toml: truck 'truck-wet-north' has no [trucks] entry (fleet, plate) to name it to people"
        in problems
    )
    problems = broken(tmp_path / "2", "linli.toml", 'waste_type = "wet"', 'waste_type = "compost"')
    assert len(problems) == 1
    assert problems[0].startswith("linli.toml: routes.wet-north.waste_type: Input should be 'wet', 'dry'")


def test_stop_names_in_english_come_from_gtfs_translations(tmp_path: Path) -> None:
    feed = load_feed(HONGQIAO)
    # Every stop has its English name; its own name (the feed's language) stays Chinese.
    for stop in feed.stops.values():
        assert stop.name_in("en") != stop.name, stop.id
        assert stop.name_in("zh-CN") == stop.name
    assert feed.stops["hongmei-1"].name_in("en") == "Hongmei compound bin room 1"
    # A translation may name its stop by its Chinese name (field_value) instead of its id.
    folder = tmp_path / "by-value"
    shutil.copytree(HONGQIAO, folder)
    (folder / "translations.txt").write_text(
        "table_name,field_name,language,translation,field_value\n"
        "stops,stop_name,en,Hongxu bin room,虹许小区垃圾房\n"
        "routes,route_long_name,en,Wet waste north,湿垃圾北线\n",
        encoding="utf-8",
    )
    by_value = load_feed(folder)
    assert by_value.stops["hongxu-1"].name_in("en") == "Hongxu bin room"
    assert by_value.stops["xianxia-1"].name_in("en") == "仙霞小区垃圾房"  # untranslated: its own name
    # Routes too: routes.txt's long name, in English from translations.txt.
    assert by_value.route_name("wet-north", "en") == "Wet waste north"
    assert by_value.route_name("wet-south", "en") == "湿垃圾南线"
    assert [feed.route_name(r, "zh-CN") for r in ("wet-north", "recyclable")] == ["湿垃圾北线", "可回收物线"]
    assert [feed.route_name(r, "en") for r in ("dry-south", "hazardous")] == [
        "Dry waste, south",
        "Hazardous waste",
    ]
    assert feed.route_name("no-such-route", "en") == "no-such-route"


def test_a_translation_of_no_stop_is_named_with_its_row(tmp_path: Path) -> None:
    problems = broken(
        tmp_path, "translations.txt", "Hongxu compound bin room,hongxu-1", "Hongxu compound bin room,hongxu-9"
    )
    assert problems == ["translations.txt:3: record_id 'hongxu-9' is no stop of stops.txt"]


def test_a_translation_of_no_route_is_named_with_its_row(tmp_path: Path) -> None:
    problems = broken(
        tmp_path, "translations.txt", '"Wet waste, north",wet-north', '"Wet waste, north",wet-nord'
    )
    # The header, 22 stops, then the routes: wet-north is row 24.
    assert problems == ["translations.txt:24: record_id 'wet-nord' is no route of routes.txt"]


def test_a_missing_file_and_a_missing_column_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "feed"
    shutil.copytree(HONGQIAO, folder)
    (folder / "calendar.txt").unlink()
    (folder / "calendar_dates.txt").unlink()  # with it, calendar.txt may be left out
    text = (folder / "shapes.txt").read_text(encoding="utf-8")
    (folder / "shapes.txt").write_text(text.replace("shape_pt_sequence", "sequence", 1), encoding="utf-8")
    with pytest.raises(GtfsError) as info:
        load_feed(folder)
    problems = info.value.problems
    assert any(p.startswith("calendar.txt: missing (a feed has agency.txt, stops.txt") for p in problems)
    assert (
        "trips.txt:2: trip 'wet-north-0630': service_id 'daily' is not in calendar.txt or calendar_dates.txt"
        in problems
    )
    assert "shapes.txt:1: missing column(s) shape_pt_sequence" in problems


@pytest.mark.servers
def test_waste_check_prints_the_routes_or_every_problem_with_exit_2(tmp_path: Path) -> None:
    def waste_check(folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "linli.cli", "waste", "check", "--gtfs", str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = waste_check(HONGQIAO)
    assert good.returncode == 0, good.stderr
    assert "ok, 6 routes, 8 trips, 21 bin rooms, time zone Asia/Shanghai" in good.stdout
    assert "wet-north    wet" in good.stdout
    folder = tmp_path / "feed"
    shutil.copytree(HONGQIAO, folder)
    (folder / "stops.txt").write_text("stop_id,stop_name,stop_lat,stop_lon\ndepot,Depot,north,121.392\n")
    bad = waste_check(folder)
    assert bad.returncode == 2
    assert "stops.txt:2: stop 'depot': stop_lat and stop_lon must be numbers" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.servers
def test_waste_run_says_what_is_missing_with_exit_2(tmp_path: Path) -> None:
    def waste_run(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "linli.cli", "waste", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

    import os

    env = {k: v for k, v in os.environ.items() if k != "LINLI_CLOUD_TOKEN"}
    no_token = waste_run(ROOT / "deploy" / "waste.local.toml", env)
    assert no_token.returncode == 2
    assert "set LINLI_CLOUD_TOKEN to an admin token" in no_token.stderr
    assert "linli waste token create --config" in no_token.stderr
    bad = tmp_path / "waste.toml"
    bad.write_text('gtfs = "nowhere"\napi_prot = 1\n')
    typo = waste_run(bad, {**env, "LINLI_CLOUD_TOKEN": "t"})
    assert typo.returncode == 2
    assert "api_prot" in typo.stderr
    assert "Traceback" not in typo.stderr
    named = waste_run(ROOT / "deploy" / "waste.local.toml", {**env, "LINLI_WASTE_NAME": "waste b"})
    assert named.returncode == 2
    assert "$LINLI_WASTE_NAME = 'waste b': a name is 1-48 letters, digits" in named.stderr


def feed_zip(folder: Path, into: Path) -> Path:
    """The feed as publishers ship it: its .txt files in one zip."""
    out = into / "feed.zip"
    with zipfile.ZipFile(out, "w") as z:
        for path in sorted(folder.glob("*.txt")):
            z.write(path, path.name)
    return out


@pytest.mark.servers
def test_outside_validators_find_no_error_in_the_district_feed(tmp_path: Path) -> None:
    """MobilityData's rule set (`gtfs-validator`) and GTFS Analyzer, neither written here."""
    binary = Path(sys.executable).parent / "gtfs-validator"
    if not binary.exists():
        pytest.fail(
            "gtfs-validator is not installed: scripts/setup (pip install gtfs-validator)", pytrace=False
        )
    done = subprocess.run(
        [str(binary), "-i", str(HONGQIAO), "-o", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notices = json.loads((tmp_path / "report" / "report.json").read_text())["notices"]
    assert [n["code"] for n in notices if n["severity"] == "ERROR"] == []
    # feed_info.txt is there, as recommended; only the project's own linli.toml is unknown.
    assert "missing_recommended_file" not in {n["code"] for n in notices}
    assert [s["filename"] for n in notices if n["code"] == "unknown_file" for s in n["sampleNotices"]] == [
        "linli.toml"
    ]

    analysed = gtfs_analyzer.validate_gtfs(feed_zip(HONGQIAO, tmp_path))
    assert analysed["reports"]["r1"]["publishable"] is True
    assert analysed["metrics"]["spec_notice_count"] == 0
    serious = [n["rule_id"] for n in analysed["notices"] if n["severity"] not in ("INFO", "LOW", "MEDIUM")]
    assert serious == []
    # Stop names are names (Chinese, as keepers read them), not ids.
    assert [n["rule_id"] for n in analysed["notices"] if n["field"] == "stop_name"] == []


def test_holidays_and_swapped_working_days_from_calendar_dates(tmp_path: Path) -> None:
    feed = load_feed(HONGQIAO)
    recyclable, hazardous = feed.trips["recyclable-0930"], feed.trips["hazardous-1000"]
    wet = feed.trips["wet-north-0630"]
    day = dt.date.fromisoformat
    # The Spring Festival of the example: the recyclables' Monday off, a Sunday worked instead.
    assert why_it_runs(feed, recyclable, day("2027-02-01")) == (True, "weekly")
    assert why_it_runs(feed, recyclable, day("2027-02-08")) == (False, "removed")
    assert why_it_runs(feed, recyclable, day("2027-01-31")) == (True, "added")
    assert why_it_runs(feed, hazardous, day("2027-02-09")) == (False, "removed")
    assert why_it_runs(feed, hazardous, day("2027-02-20")) == (True, "added")
    assert why_it_runs(feed, hazardous, day("2027-02-16")) == (True, "weekly")
    assert why_it_runs(feed, recyclable, day("2027-02-09")) == (False, "not_weekday")
    assert why_it_runs(feed, wet, day("2028-01-03")) == (False, "out_of_dates")
    assert runs_on(feed, wet, day("2027-02-08"))  # wet waste is collected on holidays too
    assert not runs_on(feed, recyclable, day("2027-02-08"))

    # A service of calendar_dates.txt alone, and calendar.txt left out: GTFS allows both.
    folder = tmp_path / "feed"
    shutil.copytree(HONGQIAO, folder)
    (folder / "calendar.txt").unlink()
    rows = ["service_id,date,exception_type"] + [
        f"{sid},{d},1" for sid in ("daily", "mwf", "tue") for d in ("20270101", "20270102")
    ]
    (folder / "calendar_dates.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    only = load_feed(folder)
    assert runs_on(only, only.trips["wet-north-0630"], day("2027-01-02"))
    assert why_it_runs(only, only.trips["wet-north-0630"], day("2027-01-03")) == (False, "out_of_dates")

    bad = tmp_path / "bad"
    shutil.copytree(HONGQIAO, bad)
    with (bad / "calendar_dates.txt").open("a", encoding="utf-8") as f:
        f.write("mwf,2027-03-01,2\nmwf,20270301,3\nmwf,20270208,1\n")
    with pytest.raises(GtfsError) as info:
        load_feed(bad)
    assert info.value.problems == [
        "calendar_dates.txt:14: service 'mwf': date '2027-03-01' is not a date YYYYMMDD",
        "calendar_dates.txt:15: service 'mwf': exception_type must be 1 (added) or 2 (removed)",
        "calendar_dates.txt:16: service 'mwf': 20270208 is given twice",
    ]


def waste_trips(date: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linli.cli", "waste", "trips", "--gtfs", str(HONGQIAO), "--date", date],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.servers
def test_waste_trips_lists_what_runs_on_a_date_and_why() -> None:
    shown = waste_trips("2027-02-08")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "2027-02-08 (Monday): 6 trips of 8"
    assert (
        "  09:30  recyclable-0930    mwf        does not run: removed for this date in calendar_dates.txt"
        in lines
    )
    assert "  06:30  wet-north-0630     daily      runs: its weekday in calendar.txt" in lines
    refused = waste_trips("8 Feb")
    assert refused.returncode == 2
    assert "argument --date: 8 Feb is not a date YYYY-MM-DD" in refused.stderr
