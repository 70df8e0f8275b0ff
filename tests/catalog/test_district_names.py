"""Names people know, across the district: every message a person gets about a site, a bin room
or a truck names it as people say it (in Chinese, or in English when they read English), and
never by an id the machines use."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from linli.catalog.alerts import AlertMessage
from linli.catalog.i18n import LOCALES, Locale, catalog
from linli.catalog.profile import Severity
from linli.catalog.scenario import builtin_scenario_path, load_scenario
from linli.cloud.notifier.channels import Notice
from linli.cloud.waste.bookings import Booking
from linli.cloud.waste.bookings import State as Step
from linli.cloud.waste.messages import BookingMessage, IncidentMessage, TruckOrder, WasteNotice
from linli.cloud.waste.requesters import Rendered, Requester
from linli.cloud.waste.tracking import Incident, IncidentKind, KeeperNotice, NoticeKind
from linli.edge.alerting import Alerting
from linli.edge.config import load_config
from linli.edge.rules import AlertEvent, State
from linli.transit.gtfs import load_feed
from linli.transit.names import truck_name

ROOT = Path(__file__).resolve().parents[2]
CJK = re.compile(r"[\u4e00-\u9fff]")
SCENARIO = load_scenario(builtin_scenario_path())
SITES = {site.id: site for site in SCENARIO.sites}
FEED = load_feed(ROOT / "deploy" / "gtfs" / "hongqiao")
# The ids a person must never read: the sites', the stops' and the trucks' (`fleet`, a word too, is
# left out: "Hongqiao refuse fleet" is a name).
IDS = {i for i in [*SITES, *FEED.stops, *FEED.extras.trucks] if "-" in i}


def ids_in(text: str, ids: set[str]) -> list[str]:
    """The ids in `text`, as whole words (`gubei-1` is not found in `gubei-12`)."""
    return [i for i in ids if re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", text)]


def test_every_site_of_the_district_has_a_chinese_and_an_english_name() -> None:
    assert len(SITES) >= 30
    for site in SITES.values():
        assert CJK.search(site.name), f"{site.id}: {site.name!r} is not Chinese"
        assert site.name_en, f"{site.id} has no English name"
        assert not CJK.search(site.name_en), f"{site.id}: English name {site.name_en!r}"
    # Two sites with one name would be one place to a person.
    assert len({s.name for s in SITES.values()}) == len(SITES)
    assert len({s.name_en for s in SITES.values()}) == len(SITES)


def test_the_timetable_names_every_bin_room_and_route_in_chinese_with_english_beside() -> None:
    """The GTFS feed's own names are the district's (stop_name, route_long_name, agency_lang zh);
    translations.txt gives the English; the ids stay in the id columns."""
    assert FEED.stops
    assert FEED.routes
    for stop in FEED.stops.values():
        assert CJK.search(stop.name), f"stops.txt {stop.id}: {stop.name!r} is not Chinese"
        english = stop.name_in("en")
        assert english != stop.name, f"translations.txt has no English for {stop.id}"
        assert not CJK.search(english), english
        assert stop.id not in stop.name, stop
    assert len({s.name for s in FEED.stops.values()}) == len(FEED.stops)
    for route in FEED.routes:
        chinese, english = FEED.route_name(route, "zh-CN"), FEED.route_name(route, "en")
        assert CJK.search(chinese), f"routes.txt {route}: {chinese!r} is not Chinese"
        assert english != chinese, route
        assert not CJK.search(english), english
    agency = (ROOT / "deploy" / "gtfs" / "hongqiao" / "agency.txt").read_text(encoding="utf-8").splitlines()
    columns = dict(zip(agency[0].split(","), agency[1].split(","), strict=True))
    assert (columns["agency_lang"], columns["agency_timezone"]) == ("zh", "Asia/Shanghai")


@pytest.mark.parametrize("locale", LOCALES)
def test_an_alert_at_any_site_of_the_district_names_the_site_not_its_id(locale: Locale) -> None:
    # Through the edge agent's own naming, from the district's generated config.
    config = load_config(ROOT / "deploy" / "district.toml")
    alerting = Alerting(config, emit=lambda _lines: None)
    hot = AlertEvent(
        "charger.temperature.above", "Port over temperature", Severity.CRITICAL, State.FIRING,
        "charger", "", "", None, 93.5, 90.0, 1_796_637_000_000, 1_796_636_000_000, config.agent.name,
    )  # fmt: skip
    events = [
        dataclasses.replace(hot, kind=device.profile, site=site.id, device=device.id)
        for site in config.sites
        for device in site.devices[:1]
    ]
    alerting.record(events)
    assert {e.site for e in alerting.events} == set(SITES)
    for event in alerting.events:
        notice = Notice("firing", AlertMessage.model_validate(event.to_json()), "ops", locale)
        site = SITES[event.site]
        said = notice.subject + "\n" + notice.text()
        assert (site.name if locale == "zh-CN" else site.name_en) in notice.subject, said
        assert not ids_in(said, IDS), said


def messages_about(stop: str, truck: str, locale: Locale) -> list[Rendered]:
    """What the waste service tells people about a bin room and a truck: a keeper's notice, a
    blocked gate, a booking's step and the driver's order."""
    due = 1_796_637_000.0
    notice = KeeperNotice(NoticeKind.NOTICE, "wet-north-1730", stop, 3, due - 900, due)
    incident = Incident(IncidentKind.BLOCKED, "wet-north-1730", stop, due, "gate blocked")
    requester = Requester(name="李娜", phone="+8613800138000")
    booking = Booking(
        "b0123456789a", stop, 31.2, 121.4, 3.0, due, due + 3 * 3600, requester, "", Step.OFFERED,
        truck, due - 3600,
    )  # fmt: skip
    return [
        WasteNotice(notice, FEED, truck, "wet", locale),
        IncidentMessage(incident, FEED, truck, "wet", locale),
        BookingMessage(booking, "offered", FEED, due, now_s=due - 3600, locale=locale),
        TruckOrder(booking, "offered", FEED, due, now_s=due - 3600, locale=locale),
    ]


@pytest.mark.parametrize("locale", LOCALES)
def test_every_bin_room_and_truck_is_told_by_name_in_the_readers_language(locale: Locale) -> None:
    trucks = sorted(FEED.extras.trucks)
    for n, stop in enumerate(sorted(FEED.extras.stops)):
        truck = trucks[n % len(trucks)]
        for message in messages_about(stop, truck, locale):
            said = message.text()
            assert FEED.stops[stop].name_in(locale) in said, said
            assert truck_name(FEED, truck, locale) in said or "{truck}" not in _templates(message), said
            assert not ids_in(said, IDS), said
            if locale == "en":  # the bin room in English; only the plate stays as it is written
                plate = FEED.extras.trucks[truck].plate
                assert not CJK.search(said.replace(plate, "").replace("李娜", "")), said
    # Every truck is named, each in some message above.
    assert len(FEED.extras.stops) >= len(trucks)


def _templates(message: Rendered) -> str:
    """The catalog's two templates of a message, to know whether it names its truck at all."""
    keys = message._keys()  # type: ignore[attr-defined]
    return "".join(catalog(message.to_json()["locale"])[key] for key in keys)
