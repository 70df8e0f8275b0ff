"""The dashboards: current JSON, valid against the SDK's schema, and every query answered by real data.

The data is the real pipeline's: the district simulator through the edge agent into
InfluxDB 1.x, for a simulated hour (normal, then with faults injected halfway). Every poll
is kept in a second database, so that the answers from the points stored by exception can
be held against the answers from every poll.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.models.dashboard import VariableType

from linli.catalog.i18n import LOCALES, Locale
from linli.catalog.profile import builtin_profiles
from linli.catalog.scenario import builtin_scenario_path, load_scenario
from linli.cloud.waste.bookings import State as BookingState
from linli.dashboards import boards, schema
from linli.dashboards.alerts import rules
from linli.dashboards.fields import COLOURS, _mapped, _shown
from linli.dashboards.influxql import InfluxQuery, Select
from linli.dashboards.influxv1 import expand, run
from linli.dashboards.render import Source, draw, render
from linli.dashboards.theme import ZONE
from linli.demo.recording import Recording, record
from linli.demo.servers import LocalServer
from linli.transit.gtfs import load_feed
from linli.transit.names import truck_name
from support import influx1_create_db, unique


def test_the_committed_json_is_what_the_code_builds() -> None:
    assert boards.stale(boards.JSON_DIR) == [], "regenerate with: linli dashboards build"


def test_every_committed_dashboard_is_valid_against_the_schema() -> None:
    files = sorted(boards.JSON_DIR.glob("*.json"))
    assert {f.stem for f in files} == set(boards.BOARDS)
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert schema.problems(data) == [], path.name
        assert data["uid"] == path.stem  # fixed uids: links and the kiosk URL stay valid


def test_the_schema_rejects_what_grafana_would_not_understand() -> None:
    data = json.loads((boards.JSON_DIR / "linli-screen.json").read_text(encoding="utf-8"))
    data["panels"][0]["gridpos"] = data["panels"][0].pop("gridPos")  # a misspelt key
    data["panels"][1]["options"]["colorMode"] = "pink"  # a plugin option out of its enum
    data["graphTooltip"] = "shared"  # a number in the schema
    found = schema.problems(data)
    assert any("gridpos" in p for p in found), found
    assert any("colorMode" in p and "pink" in p for p in found), found
    assert any(p.startswith("graphTooltip") for p in found), found


@dataclass(frozen=True)
class Query:
    where: str
    query: InfluxQuery
    time_from: str | None = None  # the panel's own span, e.g. "35d"

    def start_ms(self, rec: Recording) -> int:
        """Where the panel's range starts: the recording's, or further back for a span of days."""
        if self.time_from and self.time_from[:-1].isdigit() and self.time_from.endswith("d"):
            return min(rec.start_ms, rec.end_ms - int(self.time_from[:-1]) * 86_400_000)
        return rec.start_ms


def all_queries() -> Iterator[Query]:
    for uid, board in boards.models().items():
        for panel in board.panels or []:
            for target in getattr(panel, "targets", None) or []:
                assert isinstance(target, InfluxQuery), (uid, panel.title)
                yield Query(
                    f"{uid} / {panel.title} / {target.ref_id}", target, getattr(panel, "time_from", None)
                )
        for annotation in board.annotations.list_val or []:
            if annotation.target is not None:
                assert isinstance(annotation.target, InfluxQuery)
                yield Query(f"{uid} / annotation {annotation.name}", annotation.target)


@pytest.fixture(scope="module")
def recordings(
    influx1: LocalServer, mosquitto: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Recording, Recording]:
    """The district as stored (by exception), and the same run with every poll stored."""
    database, every_poll = unique("district"), unique("everypoll")
    influx1_create_db(influx1.url, database)
    influx1_create_db(influx1.url, every_poll)
    workdir = tmp_path_factory.mktemp("district")
    rec = asyncio.run(
        record(
            url=influx1.url,
            database=database,
            mqtt_port=mosquitto.port,
            workdir=workdir,
            simulated_s=7200,
            time_scale=120,
            timetable=Path(__file__).parents[2] / "deploy" / "gtfs" / "hongqiao",
            every_poll=every_poll,
        )
    )
    return rec, replace(rec, database=every_poll)


@pytest.fixture(scope="module")
def district(recordings: tuple[Recording, Recording]) -> Recording:
    return recordings[0]


def schema_of_store(rec: Recording) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    fields = {s.name: set(s.column("fieldKey")) for s in run(rec.url, rec.database, "SHOW FIELD KEYS")}
    tags = {s.name: set(s.column("tagKey")) for s in run(rec.url, rec.database, "SHOW TAG KEYS")}
    return fields, tags


def execute(rec: Recording, select: Select | str) -> list[list[object]]:
    """The rows of a query as the screen showed them when the recording ended: its `now()` is the
    end, not the moment the test runs (minutes later on a loaded machine, past the 5 minutes the
    "now" panels look back)."""
    text = select if isinstance(select, str) else select.render()
    text = text.replace("now()", f"{rec.end_ms}ms")
    series = run(rec.url, rec.database, expand(text, rec.start_ms, rec.end_ms + 60_000))
    return [row for s in series for row in s.values]


def test_every_query_reads_what_the_pipeline_writes_and_returns_rows(district: Recording) -> None:
    fields, tags = schema_of_store(district)
    checked = 0
    for q in all_queries():
        for ref in q.query.refs:
            assert ref.measurement in fields, f"{q.where}: no measurement '{ref.measurement}'"
            assert ref.fields <= fields[ref.measurement], (
                f"{q.where}: fields {ref.fields - fields[ref.measurement]}"
            )
            known = tags.get(ref.measurement, set())  # a measurement without tags has no row here
            assert ref.tags <= known, f"{q.where}: tags {ref.tags - known}"
        select = q.query.select
        series = run(
            district.url,
            district.database,
            expand(q.query.query, q.start_ms(district), district.end_ms + 60_000),
        )
        if isinstance(select.source, Select) and select.field_conditions:
            # A count of what matches a condition has no row when nothing does; the rows
            # it counts from must be there.
            assert execute(district, select.source), f"{q.where}: the subquery returned nothing"
        else:
            assert any(s.values for s in series), f"{q.where}: no rows for {q.query.query}"
        for s in series:
            expected = select.column_names()
            assert set(expected) <= set(s.columns), f"{q.where}: columns {s.columns}, expected {expected}"
            if q.query.result_format == "table":
                # Rows grouped by tag carry the tag as a column in Grafana's table.
                assert set(s.tags) <= set(select.group_tags), (q.where, s.tags)
        checked += 1
    assert checked >= 50


def test_every_variable_lists_values_from_the_pipeline(district: Recording) -> None:
    custom = 0
    for uid, board in boards.models().items():
        for variable in board.templating.list_val or []:
            assert isinstance(variable.query, str)
            if variable.type_val != VariableType.CUSTOM:
                values = execute(district, variable.query)
                assert len(values) >= 2, f"{uid} ${variable.name}: {values}"
                continue
            # A list of names standing for ids: every id the queries it narrows can meet is offered.
            offered = {value for _, value in custom_options(variable.query)}
            stored = stored_values(district, uid, variable.name)
            assert len(stored) >= 2, f"{uid} ${variable.name}: {stored}"
            assert stored <= offered, f"{uid} ${variable.name} lacks {stored - offered}"
            custom += 1
    assert custom >= 6


def custom_options(query: str) -> list[tuple[str, str]]:
    """A custom variable's (text, value) options as Grafana reads them: `text : value`, commas apart."""
    options = [o.replace("\\,", ",").strip() for o in re.findall(r"(?:\\,|[^,])+", query)]
    return [tuple(o.split(" : ", 1)) if " : " in o else (o, o) for o in options]


def stored_values(rec: Recording, uid: str, variable: str) -> set[str]:
    """The values of the tag a variable narrows, in every measurement of the dashboard it narrows,
    among the rows its queries read (health's cameras only, for the elevators)."""
    values: set[str] = set()
    for q in all_queries():
        if not q.where.startswith(uid):
            continue
        for tag in re.findall(rf'"(\w+)" =~ /\^\${variable}\$/', q.query.query):
            for ref in q.query.refs:
                # `alert` holds every kind's alerts; a drill-down reads its own kind's only.
                if tag not in ref.tags or ref.measurement == "alert":
                    continue
                fixed = [
                    f"\"{key}\" {op} '{value}'"
                    for key, op, value in re.findall(r"\"(\w+)\" (=|!=) '([^']*)'", q.query.query)
                    if key in ref.tags
                ]
                where = f" WHERE {' AND '.join(fixed)}" if fixed else ""
                show = f'SHOW TAG VALUES FROM "{ref.measurement}" WITH KEY = "{tag}"{where}'
                values |= {str(row[1]) for row in execute(rec, show)}
    return values


def ids_of_the_district() -> set[str]:
    """Every id a machine uses for a place, a route, a truck, a bin room or a kind of device, and
    every code stored for a booking's state or a camera's sighting ("none" aside: a word too)."""
    scenario = load_scenario(builtin_scenario_path())
    feed = load_feed(Path(__file__).parents[2] / "deploy" / "gtfs" / "hongqiao")
    places = {s.id for s in scenario.sites} | set(feed.stops) | set(feed.routes) | {"on-call"}
    codes = {*BookingState, "ebike", "voice_warning", "door_held"}
    return places | set(feed.extras.trucks) | {g.kind for g in scenario.groups} | codes


def shown_to_a_person(rec: Recording, dashboard: dict[str, Any]) -> list[str]:
    """What Grafana shows of a dashboard over the recording: titles, each variable's choices,
    each series' name, each table cell of text; names as the panel's renames, display names
    and value mappings make them."""
    shown = [dashboard["title"]]
    for variable in dashboard.get("templating", {}).get("list", []):
        shown.append(variable.get("label", ""))
        if variable["type"] == "custom":
            shown += [text for text, _ in custom_options(variable["query"])]
        else:
            shown += [str(row[-1]) for row in execute(rec, variable["query"])]
    source = Source(rec.url, rec.database, rec.start_ms, rec.end_ms, zone=ZONE)
    for panel in dashboard["panels"]:
        shown.append(panel.get("title", ""))
        for name, series in source.frames(panel):
            if any(t.get("format") == "table" for t in panel.get("targets", [])):
                shown += [_mapped(panel, tag, value) for tag, value in series.tags.items()]
                for row in series.values:
                    shown += [
                        _mapped(panel, column, value)
                        for column, value in zip(series.columns, row, strict=True)
                        if isinstance(value, str)
                    ]
            else:
                shown.append(_shown(panel, name))
    return shown


def annotations_shown(rec: Recording, dashboard: dict[str, Any]) -> list[str]:
    """What Grafana shows of each annotation's marks over the recording: the words its rows carry
    as title, text and tags, one string each. The columns are read as Grafana's InfluxQL
    annotations read them (influx_series.ts): `time` and `sequence_number` are skipped, the named
    title, tags, text and end columns taken, and the first other column becomes the title (its
    "legacy case"); a tag comes from a row's column or, for a GROUP BY tag, its series."""
    shown = []
    for annotation in dashboard.get("annotations", {}).get("list", []):
        target = annotation.get("target") or {}
        if "query" not in target:
            continue
        tags = [c.strip() for c in target.get("tagsColumn", "").split(",") if c.strip()]
        query = expand(target["query"].replace("now()", f"{rec.end_ms}ms"), rec.start_ms, rec.end_ms + 60_000)
        for series in run(rec.url, rec.database, query):
            read: list[str] = []
            title: str | None = None
            for column in series.columns:
                if column in ("time", "sequence_number", target.get("timeEndColumn")) or column in tags:
                    continue
                if column in (target.get("titleColumn"), target.get("textColumn")):
                    read.append(column)
                elif title is None:
                    title = column
            if title is not None and target.get("titleColumn") is None:
                read.append(title)
            for row in series.values:
                cells = dict(zip(series.columns, row, strict=True))
                shown += [str(cells[c]) for c in read]
                for tag in tags:
                    value = cells.get(tag, series.tags.get(tag))
                    shown += [v for v in str(value or "").split(",") if v]
    return shown


@pytest.mark.parametrize("locale", LOCALES)
def test_annotations_speak_to_a_person(district: Recording, locale: Locale) -> None:
    """Each mark's hover text is words in the build's language: no bare number (a change's 1 or
    -1), and under zh-CN no English alert title. (Ids: test_no_dashboard_shows_an_id_to_a_person.)"""
    marks = 0
    for uid, model in boards.models(locale).items():
        shown = annotations_shown(district, boards.to_json(model))
        marks += len(shown)
        numbers = [s for s in shown if re.fullmatch(r"[-+\d.e]+", s)]
        assert not numbers, (uid, numbers[:5])
        if locale == "zh-CN":
            english = sorted({s for s in shown if not re.search(r"[\u4e00-\u9fff]", s)})
            assert not english, (uid, english[:5])
    assert marks > 0


@pytest.mark.parametrize("locale", LOCALES)
def test_no_dashboard_shows_an_id_to_a_person(district: Recording, locale: Locale) -> None:
    ids = ids_of_the_district()
    if locale == "en":  # an id that is an English word (fleet, camera) may stand in English text
        ids = {i for i in ids if re.search(r"[-_\d]", i)}
    scenario = load_scenario(builtin_scenario_path())
    site_names = {s.id: s.name_en if locale == "en" else s.name for s in scenario.sites}
    for uid, model in boards.models(locale).items():
        dashboard = boards.to_json(model)
        shown = shown_to_a_person(district, dashboard) + annotations_shown(district, dashboard)
        text = "\n".join(shown)
        told = sorted(i for i in ids if re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", text))
        assert not told, (uid, told, [s for s in shown if any(i in s for i in told)][:20])
        assert len(shown) > 20, (uid, shown)
    # The drill-downs' choices are the names: a compound with chargers, a tower with cameras.
    chargers = shown_to_a_person(district, boards.to_json(boards.models(locale)["linli-chargers"]))
    assert site_names["hongxu-1"] in chargers
    assert "hongxu-1" not in chargers
    assert any(s.startswith(site_names["changhong-1"] + " station-") for s in chargers), chargers


def test_the_screen_shows_the_injected_faults_and_only_those(district: Recording) -> None:
    counts = {r.title: sum(int(str(v[1])) for v in execute(district, r.count)) for r in rules()}
    fired = {title for title, n in counts.items() if n}
    # One fault injected for each of these (recording.FAULTS and the offline site).
    assert {
        "Smoke in the charging cabinet",
        "Mains supply fault",
        "Fire alarm",
        "Fire-alarm point fault",
        "Fire pump fault",
        "Pressure transmitter fault (4-20 mA loop out of range)",
        "AED battery low [assumed limit]",
        "Device offline",
    } <= fired, counts
    # Nothing made these happen: a cabinet near 60 degC or a drained tank would be a false alarm.
    assert counts["Cabinet over temperature"] == 0
    assert counts["Fire water tank level low"] == 0
    assert counts["Sprinkler pressure low"] == 0
    assert counts["Device offline"] == 2  # zunyi-1's two stations, dark since halfway
    # The overheating port passed its limit and the edge's interlock stopped it: the edge's
    # rule fired and resolved as it cooled, and both steps are stored for the annotations.
    assert counts["Port over temperature"] == 0
    steps = execute(
        district,
        'SELECT "state", "value" FROM "alert" WHERE "rule" = \'charger.temperature.above\' '
        "AND \"site\" = 'changhong-1' AND \"port\" = '1'",
    )
    assert [row[1] for row in steps][:2] == ["firing", "resolved"]


def test_the_picture_of_the_screen_shows_its_panels_in_the_screen_s_colours(
    district: Recording, tmp_path: Path
) -> None:
    import matplotlib.image

    dashboard = boards.to_json(boards.models()["linli-screen"])
    source = Source(district.url, district.database, district.start_ms, district.end_ms + 60_000, zone=ZONE)
    out = render(dashboard, source, tmp_path / "screen.png")
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (1080, 1920)
    seen = {tuple(int(c * 255) for c in px[:3]) for px in pixels.reshape(-1, pixels.shape[2])[::7]}

    def present(hex_colour: str) -> bool:
        r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        return any(abs(r - x) + abs(g - y) + abs(b - z) < 12 for x, y, z in seen)

    # Red and orange from the alerts that fire, blue from the charging ports, green from healthy gauges.
    for name in ("red", "orange", "blue", "green"):
        assert present(COLOURS[name]), name


def test_the_screen_is_drawn_in_noto_sans_cjk_with_every_figure_s_unit(district: Recording) -> None:
    import re

    import matplotlib.pyplot as plt
    from matplotlib import font_manager
    from matplotlib.text import Text

    dashboard = boards.to_json(boards.models()["linli-screen"])
    source = Source(district.url, district.database, district.start_ms, district.end_ms + 60_000, zone=ZONE)
    fig = draw(dashboard, source)
    try:
        fig.canvas.draw()  # tick labels are written when drawn
        texts = [t for t in fig.findobj(Text) if isinstance(t, Text) and t.get_text()]
        chinese = [t for t in texts if re.search(r"[\u4e00-\u9fff]", t.get_text())]
        assert len(chinese) > 40, [t.get_text() for t in texts]
        # The font matplotlib resolves for each text is Noto Sans CJK's file, not a fallback.
        fonts = {
            Path(font_manager.findfont(t.get_fontproperties(), fallback_to_default=False)).name
            for t in chinese
        }
        assert fonts <= {"NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc"}, fonts
        assert {tuple(t.get_fontproperties().get_family()) for t in chinese} == {("Noto Sans CJK SC",)}
        shown = [t.get_text().strip() for t in texts]
    finally:
        plt.close(fig)
    # The figures carry their units: power in 千瓦, pressures in MPa, levels in m, waste in 吨.
    for pattern in (r"^\d+\.\d 千瓦$", r"^\d\.\d\d MPa$", r"^\d\.\d\d m$", r"^\d+\.\d 吨$", r"^\d+ 台$"):
        assert any(re.match(pattern, text) for text in shown), (pattern, shown)
    # Counted things come whole: no axis of half an e-bike.
    assert any(re.match(r"^\d+ 辆$", text) for text in shown), shown
    assert not [text for text in shown if re.match(r"^\d+\.\d+ (辆|台|个|间)$", text)], shown


@pytest.mark.parametrize("locale", LOCALES)
def test_the_screen_names_sites_bin_rooms_and_trucks_as_people_do_never_by_id(
    district: Recording, locale: Locale
) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    dashboard = boards.to_json(boards.models(locale)["linli-screen"])
    source = Source(district.url, district.database, district.start_ms, district.end_ms + 60_000, zone=ZONE)
    fig = draw(dashboard, source, locale=locale)
    try:
        shown = "\n".join(t.get_text() for t in fig.findobj(Text) if isinstance(t, Text))
    finally:
        plt.close(fig)
    scenario = load_scenario(builtin_scenario_path())
    feed = load_feed(Path(__file__).parents[2] / "deploy" / "gtfs" / "hongqiao")
    ids = {s.id for s in scenario.sites} | set(feed.stops) | set(feed.extras.trucks)
    told = [i for i in ids if re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", shown)]
    assert not told, (told, shown)
    # The chargers' sites, the towers' pipes and tanks, the trucks on the map and in the table.
    names = {s.id: s.name_en if locale == "en" else s.name for s in scenario.sites}
    for site in ("ronghua-1", "jinhui-2", "changhong-tower-1", "hongxu-tower"):
        assert names[site] in shown, (site, shown)
    assert truck_name(feed, "truck-wet-north", locale) in shown, shown


def test_the_trucks_labels_on_the_map_stand_apart_even_at_the_depot(district: Recording) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation

    dashboard = boards.to_json(boards.models()["linli-screen"])
    source = Source(district.url, district.database, district.start_ms, district.end_ms + 60_000, zone=ZONE)
    fig = draw(dashboard, source)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        labels = [a for ax in fig.axes for a in ax.texts if isinstance(a, Annotation)]
        boxes = [label.get_window_extent(renderer) for label in labels]
        anchors = [tuple(label.xy) for label in labels]
        shown = [label.get_text() for label in labels]
    finally:
        plt.close(fig)
    feed = load_feed(Path(__file__).parents[2] / "deploy" / "gtfs" / "hongqiao")
    assert sorted(shown) == sorted(truck_name(feed, truck, "zh-CN") for truck in feed.extras.trucks)
    # Trucks back from their rounds, and the renovation truck waiting, stand at the depot together.
    assert len(set(anchors)) < len(anchors), anchors
    crossed = [
        (shown[i], shown[j]) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])
    ]
    assert not crossed, crossed


def test_the_charger_chart_names_every_site_legibly_and_apart(district: Recording) -> None:
    import matplotlib.pyplot as plt

    dashboard = boards.to_json(boards.models()["linli-screen"])
    source = Source(district.url, district.database, district.start_ms, district.end_ms + 60_000, zone=ZONE)
    charger_sites = {
        s.name for s in load_scenario(builtin_scenario_path()).sites if s.id in names_of("charger")
    }
    fig = draw(dashboard, source)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        ticks = [ax.get_yticklabels() for ax in fig.axes]
        [labels] = [axis for axis in ticks if {t.get_text() for t in axis} == charger_sites]
        boxes = [label.get_window_extent(renderer) for label in labels]
    finally:
        plt.close(fig)
    # One line per site, none touching the next, each tall enough to read on the wall (8 px of 1080).
    assert len(boxes) == len(charger_sites) >= 20
    assert min(box.height for box in boxes) >= 8, [box.height for box in boxes]
    assert not [i for i in range(1, len(boxes)) if boxes[i].overlaps(boxes[i - 1])]


def names_of(kind: str) -> set[str]:
    """The ids of the sites with devices of `kind`."""
    from linli.catalog.scenario import expand as placed

    return {d.site for d in placed(load_scenario(builtin_scenario_path())) if d.kind == kind}


MODBUS = {p.measurement: p for p in builtin_profiles().values() if p.modbus is not None}
SELECTORS = {"last", "first", "min", "max"}


def deadband(select: Select) -> float:
    """The widest deadband among the Modbus fields a statement reads (0 when none has one)."""
    widest = 0.0
    for ref in select.refs():
        profile = MODBUS.get(ref.measurement)
        if profile is None or profile.modbus is None:
            continue
        mb = profile.modbus
        for point in mb.points + (mb.group.points if mb.group else []):
            if point.field in ref.fields and point.deadband is not None:
                widest = max(widest, point.deadband)
    return widest


def functions(select: Select) -> set[str | None]:
    inner = functions(select.source) if isinstance(select.source, Select) else set()
    return {c.fn for c in select.columns} | inner


def test_stored_by_exception_the_dashboards_answer_as_from_every_poll(
    recordings: tuple[Recording, Recording],
) -> None:
    thinned, full = recordings
    # Report by exception stored far fewer values (the run polls every second at 120x time).
    counted = {
        rec.database: sum(
            int(v)
            for m in MODBUS
            for s in run(rec.url, rec.database, f'SELECT count(*) FROM "{m}"')
            for v in s.values[0][1:]
            if v is not None
        )
        for rec in recordings
    }
    assert counted[thinned.database] < 0.7 * counted[full.database], counted
    assert same_answers(thinned, full) >= 30


def same_answers(thinned: Recording, full: Recording) -> int:
    """Hold every query on a Modbus measurement to the same answer from both; the number compared."""
    compared = 0
    for q in all_queries():
        select = q.query.select
        if not any(r.measurement in MODBUS for r in q.query.refs):
            continue
        start, end = q.start_ms(full), full.end_ms + 60_000
        answers = [
            {
                (s.name, tuple(sorted(s.tags.items()))): s.values
                for s in run(rec.url, rec.database, expand(q.query.query, start, end, interval="5s"))
            }
            for rec in (full, thinned)
        ]
        assert answers[0].keys() == answers[1].keys(), q.where
        band = deadband(select)
        # A sum over devices adds up one deadband per device.
        if isinstance(select.source, Select) and "sum" in functions(select):
            inner = run(full.url, full.database, expand(select.source.render(), start, end, interval="5s"))
            band *= max(1, len(inner))
        scales = [c.scale or 1.0 for c in select.columns]
        # last() without time buckets answers with the time of the value found: the last one stored.
        same_time = select.interval is not None or not (functions(select) & SELECTORS)
        for key, rows in answers[0].items():
            got = answers[1][key]
            assert len(got) == len(rows), (q.where, key)
            for want_row, got_row in zip(rows, got, strict=True):
                if same_time:
                    assert want_row[0] == got_row[0], (q.where, key, want_row, got_row)
                for want, have, scale in zip(want_row[1:], got_row[1:], scales, strict=False):
                    if isinstance(want, int | float) and not isinstance(want, bool):
                        assert isinstance(have, int | float), (q.where, key, want_row, got_row)
                        assert abs(want - have) <= band * scale + 1e-9, (q.where, key, want_row, got_row)
                    else:
                        assert want == have, (q.where, key, want_row, got_row)
        compared += 1
    return compared
