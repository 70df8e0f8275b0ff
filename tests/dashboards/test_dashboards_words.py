"""The dashboards' words come from the message catalogs: Chinese by default, English complete,
every figure with its unit; and the picture's text is set in a font that has Chinese glyphs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from matplotlib import font_manager

from linli.catalog.i18n import LOCALES, Locale
from linli.dashboards import boards, fields, render
from linli.dashboards.fields import _columns
from linli.dashboards.influxql import InfluxQuery
from linli.dashboards.influxv1 import expand, run
from linli.dashboards.render import Source
from linli.dashboards.screen import bin_rooms_today
from linli.dashboards.theme import ZONE
from linli.dashboards.words import in_locale, t
from linli.demo.servers import LocalServer
from support import http_post, influx1_create_db, linli, unique

CJK = re.compile(r"[\u4e00-\u9fff]")
PLATE = re.compile(r"沪[A-Z]·[A-Z0-9]{5}")


def _mapping_texts(mappings: list[dict[str, Any]]) -> Iterator[str]:
    for mapping in mappings:
        for result in mapping.get("options", {}).values():
            if isinstance(result, dict) and result.get("text"):
                yield result["text"]


def person_facing(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every text Grafana shows a person: titles, legends, names, labels."""
    uid = dashboard["uid"]
    yield f"{uid} title", dashboard["title"]
    for link in dashboard.get("links", []):
        yield f"{uid} link", link["title"]
    for variable in dashboard.get("templating", {}).get("list", []):
        yield f"{uid} ${variable['name']}", variable["label"]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        yield f"{uid} annotation", annotation["name"]
    for panel in dashboard["panels"]:
        yield from _panel_texts(f"{uid} / {panel['title']}", panel)


def _panel_texts(where: str, panel: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield where, panel["title"]
    if panel.get("description"):
        yield f"{where} description", panel["description"]
    for target in panel.get("targets", []):
        # A legend of tags only ($tag_site $tag_device) shows the devices' own names.
        if re.sub(r"\$tag_[a-z_]+|\W", "", target.get("alias") or ""):
            yield f"{where} legend", target["alias"]
    config = panel.get("fieldConfig", {})
    defaults = config.get("defaults", {})
    if defaults.get("noValue"):
        yield f"{where} no value", defaults["noValue"]
    yield from ((f"{where} state", s) for s in _mapping_texts(defaults.get("mappings", [])))
    for override in config.get("overrides", []):
        for prop in override["properties"]:
            if prop["id"] == "displayName":
                yield f"{where} {override['matcher']['options']}", prop["value"]
            if prop["id"] == "mappings":
                yield from ((f"{where} state", s) for s in _mapping_texts(prop["value"]))
    options = panel.get("options", {})
    for layer in [options.get("basemap", {}), *options.get("layers", [])]:
        if layer.get("name"):
            yield f"{where} layer", layer["name"]


def built(locale: Locale) -> dict[str, dict[str, Any]]:
    return {uid: boards.to_json(model) for uid, model in boards.models(locale).items()}


def test_every_dashboard_text_is_chinese_under_the_default_locale() -> None:
    texts = [t for d in built("zh-CN").values() for t in person_facing(d)]
    assert len(texts) > 150, len(texts)
    english = [(where, text) for where, text in texts if not CJK.search(text)]
    assert not english, english
    # The committed JSON is the Chinese build.
    assert boards.stale(boards.JSON_DIR, "zh-CN") == []


def test_the_english_build_is_complete_and_the_same_dashboards() -> None:
    zh, en = built("zh-CN"), built("en")
    for uid in boards.BOARDS:
        zh_texts, en_texts = list(person_facing(zh[uid])), list(person_facing(en[uid]))
        assert [w for w, _ in zh_texts if "/" not in w] == [w for w, _ in en_texts if "/" not in w]
        assert len(zh_texts) == len(en_texts), uid
        # A truck's plate is written as it is (沪D·F3021) in any language.
        assert all(text and not CJK.search(PLATE.sub("", text)) for _, text in en_texts), en_texts
        assert zh[uid]["panels"][0]["gridPos"] == en[uid]["panels"][0]["gridPos"]
    assert boards.stale(boards.json_dir("en"), "en") == []


def _unit(panel: dict[str, Any]) -> str:
    return str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))


def test_every_figure_on_the_screen_carries_its_unit() -> None:
    expected: list[tuple[Locale, str, str]] = [("zh-CN", "千瓦", "吨"), ("en", "kW", "t")]
    for locale, power, tonne in expected:
        screen = built(locale)["linli-screen"]
        units = {panel["title"]: _unit(panel) for panel in screen["panels"]}
        figures = [p for p in screen["panels"] if p["type"] in {"stat", "bargauge", "barchart", "timeseries"}]
        assert all(_unit(p) for p in figures), {p["title"]: _unit(p) for p in figures}
        by_title = {p["title"]: p for p in screen["panels"]}
        with in_locale(locale):
            assert units[t("screen.charging_power")] == f"suffix: {power}"
            assert units[t("screen.district_power")] == f"suffix: {power}"
            assert units[t("screen.fire_pressure")] == "pressurempa"  # MPa
            assert units[t("screen.tank_level")] == "lengthm"  # m
            assert units[t("screen.waste_today")] == f"suffix: {tonne}"
            trips = by_title[t("screen.rounds")]
        assert fields._figure(trips, "delay min", 3.25) == ("3.2 分钟" if locale == "zh-CN" else "3.2 min")
        # Bin rooms served of scheduled, in the table as on the tile above it.
        with in_locale(locale):
            room = t("unit.room")
        for column in ("served", "of"):
            assert fields._cell(trips, column, 7) == f"7 {room}", (locale, column)


def test_a_chinese_character_takes_two_columns_of_a_table() -> None:
    assert _columns("清运车") == 6
    assert _columns("truck-3") == 7
    assert _columns("下一站 A") == 8


def test_served_today_counts_only_trips_that_have_set_off(influx1: LocalServer) -> None:
    database = unique("trips")
    influx1_create_db(influx1.url, database)
    lines = [
        # Under way: 3 of its 5 bin rooms served.
        "waste_trip,route=r1,truck=t1,trip=morning progress=0.5,served=3i,scheduled=5i",
        # Due this evening: the service already tracks it, but it has served nothing yet.
        "waste_trip,route=r1,truck=t1,trip=evening progress=0,served=0i,scheduled=6i",
    ]
    http_post(f"{influx1.url}/write?db={database}", "\n".join(lines).encode())
    end_ms = int(time.time() * 1000) + 60_000  # points stamped by the server, now
    served, scheduled = (
        [
            row[-1]
            for s in run(influx1.url, database, expand(target.build().query, 0, end_ms))
            for row in s.values
        ]
        for target in bin_rooms_today()
    )
    assert (served, scheduled) == ([3], [5])


def test_a_missing_cjk_font_is_an_error_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    render.cjk_family.cache_clear()
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda: [])
    try:
        with pytest.raises(render.FontMissingError, match="apt-get install fonts-noto-cjk"):
            render.draw({"title": "x", "panels": []}, Source("http://127.0.0.1:9", "db", 0, 1, zone=ZONE))
    finally:
        render.cjk_family.cache_clear()


@pytest.mark.servers
@pytest.mark.parametrize("locale", LOCALES)
def test_the_cli_builds_each_locale(locale: Locale, tmp_path: Any) -> None:
    done = linli("dashboards", "build", "--locale", locale, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "linli-screen.json").read_text(encoding="utf-8")
    assert ("城运中心" in text) == (locale == "zh-CN")


def test_every_table_column_has_a_chinese_header() -> None:
    for uid, dashboard in built("zh-CN").items():
        for panel in (p for p in dashboard["panels"] if p["type"] == "table"):
            headers = {
                o["matcher"]["options"]: prop["value"]
                for o in panel["fieldConfig"]["overrides"]
                for prop in o["properties"]
                if prop["id"] == "displayName"
            }
            model = next(p for p in boards.models()[uid].panels or [] if p.title == panel["title"])
            for target in getattr(model, "targets", None) or []:
                assert isinstance(target, InfluxQuery)
                for column in [*target.select.group_tags, *target.select.column_names()]:
                    assert CJK.search(headers.get(column, "")), (uid, panel["title"], column, headers)


def test_the_trucks_table_names_each_route_as_people_do() -> None:
    """wet-north is 湿垃圾北线 on the big screen, "Wet waste, north" in English: never the id."""

    def route_names(locale: Locale) -> dict[str, str]:
        screen = built(locale)["linli-screen"]
        return {
            route: option["text"]
            for panel in screen["panels"]
            for override in panel.get("fieldConfig", {}).get("overrides", [])
            if override["matcher"].get("options") == "route"
            for prop in override["properties"]
            if prop["id"] == "mappings"
            for mapping in prop["value"]
            for route, option in mapping["options"].items()
        }

    zh, en = route_names("zh-CN"), route_names("en")
    assert (
        set(zh)
        == set(en)
        == {"wet-north", "wet-south", "dry-north", "dry-south", "recyclable", "hazardous", "on-call"}
    )  # on-call: the renovation truck's runs to bookings
    assert zh["wet-north"] == "湿垃圾北线"
    assert en["wet-north"] == "Wet waste, north"
    assert all(CJK.search(name) for name in zh.values())
    assert not any(CJK.search(name) for name in en.values())
