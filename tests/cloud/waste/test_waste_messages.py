"""The waste service's messages to people: every kind rendered from the catalog in both locales,
one SMS long in Chinese with the longest names of the district's feed, names people know and
no ids, and no message class that writes its own English."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest

from linli.catalog.i18n import LOCALES, Locale
from linli.cloud.waste.bookings import Booking, State
from linli.cloud.waste.messages import SMS_CHARS, BookingMessage, IncidentMessage, TruckOrder, WasteNotice
from linli.cloud.waste.requesters import Rendered, Requester
from linli.cloud.waste.tracking import Incident, IncidentKind, KeeperNotice, NoticeKind
from linli.transit.extras import Truck
from linli.transit.gtfs import Feed, load_feed

ROOT = Path(__file__).resolve().parents[3]
FEED = ROOT / "deploy" / "gtfs" / "hongqiao"
WASTE = ROOT / "src" / "linli" / "cloud" / "waste"
CJK = re.compile(r"[\u4e00-\u9fff]")
# 2026-12-07 17:30 in Shanghai; decided the evening before, so the date is shown (the longest).
DUE = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC).timestamp()
BEFORE = DUE - 20 * 3600
WASTE_TYPES = ("wet", "dry", "recyclable", "hazardous")
RENDERING = {"subject", "text", "sms", "_values", "_keys"}


@pytest.fixture(scope="module")
def feed() -> Feed:
    return load_feed(FEED)


def longest(feed: Feed) -> tuple[str, str]:
    """The bin room with the longest name, and the truck with the longest fleet number and plate."""
    stop = max(feed.extras.stops, key=lambda s: len(feed.stops[s].name))
    truck = max(
        feed.extras.trucks, key=lambda t: len(feed.extras.trucks[t].fleet + feed.extras.trucks[t].plate)
    )
    return stop, truck


def every_message(feed: Feed, locale: Locale) -> list[Rendered]:
    """Every kind of message the service sends a person, with the longest names."""
    stop, truck = longest(feed)
    out: list[Rendered] = []
    for waste in WASTE_TYPES:
        for kind in NoticeKind:
            notice = KeeperNotice(kind, "trip-1", stop, 3, BEFORE, DUE, bins=12, kg=1234.0)
            out.append(WasteNotice(notice, feed, truck, waste, locale))
        for incident_kind in IncidentKind:
            incident = Incident(incident_kind, "trip-1", stop, BEFORE, "the service's own words")
            out.append(IncidentMessage(incident, feed, truck, waste, locale))
    requester = Requester(name="李娜", phone="+8613800138000")
    for state in [*State, "escalated"]:
        booking = Booking(
            "b0123456789a", stop, 31.2, 121.4, 3.0, DUE, DUE + 3 * 3600, requester, "", State.ACCEPTED,
            "truck-renovation", BEFORE, collected_kg=1234.0,
        )  # fmt: skip
        out.append(BookingMessage(booking, str(state), feed, DUE, now_s=BEFORE, locale=locale))
    # The driver's terminal: the order offered (with the requester's note) and its cancellation.
    noted = dataclasses.replace(booking, note="门口有台阶")
    for step in ("offered", "cancelled"):
        out.append(TruckOrder(noted, step, feed, DUE, now_s=BEFORE, locale=locale))
    return out


def test_every_message_is_one_sms_in_chinese_naming_places_and_trucks_as_people_know_them(feed: Feed) -> None:
    stop, truck = longest(feed)
    plate = feed.extras.trucks[truck].plate
    for message in every_message(feed, "zh-CN"):
        sms, body = message.sms(), message.to_json()
        assert len(sms) <= SMS_CHARS, (len(sms), sms)
        assert CJK.search(sms), sms
        assert CJK.search(message.subject), sms
        assert body["text"] == sms
        assert body["title"] == message.subject
        assert body["locale"] == "zh-CN"
        assert message.text() == f"{message.subject}\n{sms}"
        for raw in (stop, truck, "trip-1", "b0123456789a", "wet", "dry", "recyclable", "hazardous"):
            assert raw not in message.text(), (raw, message.text())
        assert feed.stops[stop].name in message.text() or plate in message.text(), message.text()
        assert "12月7日 17:30" in message.text() or "17:30" not in message.text()
        # No bare epoch milliseconds without the time people read.
        for field in ("time", "predicted"):
            if body.get(field):
                assert str(body[field]).endswith("+08:00"), body


def test_the_same_messages_in_english_are_english(feed: Feed) -> None:
    stop, _ = longest(feed)
    # The plates are Chinese as written (沪D...); the bin room has its English name (GTFS
    # translations.txt); the requester's note is theirs.
    names = (*(t.plate for t in feed.extras.trucks.values()), "门口有台阶")
    chinese = [m.text() for m in every_message(feed, "zh-CN")]
    english = every_message(feed, "en")
    for message, zh in zip(english, chinese, strict=True):
        said = message.text()
        for name in names:
            said = said.replace(name, "")
        assert not CJK.search(said), said  # only the names people know stay in Chinese
        assert re.search(r"[A-Za-z]{3,} [A-Za-z]{2,}", said), said
        assert message.text() != zh, said
        assert message.to_json()["locale"] == "en"
        if feed.stops[stop].name in zh:  # where the Chinese names the bin room, the English does
            assert feed.stops[stop].name_in("en") in said, said


def test_a_truck_the_feed_does_not_describe_is_never_named_by_its_id(feed: Feed) -> None:
    stop, _ = longest(feed)
    notice = KeeperNotice(NoticeKind.ARRIVED, "trip-1", stop, 3, DUE)
    for locale in LOCALES:
        message = WasteNotice(notice, feed, "truck-spare-1", "dry", locale)
        assert "truck-spare-1" not in message.text()
        assert message.to_json()["truck"] == "truck-spare-1"  # kept for machines


def test_every_truck_the_timetable_drives_has_a_fleet_number_and_plate(feed: Feed) -> None:
    driven = {r.truck for r in feed.routes.values()}
    driven |= {t.id for t in feed.extras.renovation.trucks} if feed.extras.renovation else set()
    assert driven <= set(feed.extras.trucks)
    for truck in feed.extras.trucks.values():
        assert isinstance(truck, Truck), truck
        assert re.fullmatch(r"沪[A-Z]·[A-Z0-9]{5}", truck.plate), truck
    for sid in feed.extras.stops:
        assert CJK.search(feed.stops[sid].name)
        assert sid not in feed.stops[sid].name


def _prose(node: ast.AST) -> list[str]:
    """English words written into a message (string literals and f-strings), not catalog keys."""
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            piece = sub.value
        elif isinstance(sub, ast.JoinedStr):
            piece = "".join(
                v.value for v in sub.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
        else:
            continue
        if re.search(r"[A-Za-z]+ [A-Za-z]+", piece):
            found.append(piece)
    return found


def test_no_message_class_of_the_waste_service_writes_its_own_words() -> None:
    """A class that renders a message to people (a subject, a text, the values filling its
    templates) takes its words from the catalog only (docstrings and comments aside)."""
    bypass: dict[str, list[str]] = {}
    classes = 0
    for path in sorted(WASTE.glob("*.py")):
        for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(cls, ast.ClassDef):
                continue
            methods = [f for f in cls.body if isinstance(f, ast.FunctionDef)]
            if not {f.name for f in methods} & RENDERING:
                continue
            classes += 1
            for f in methods:
                body = f.body[1:] if ast.get_docstring(f) else f.body
                words = [w for stmt in body for w in _prose(stmt)]
                if words:
                    bypass[f"{path.name}:{cls.name}.{f.name}"] = words
    assert classes >= 3
    assert not bypass, bypass


def test_a_message_works_out_its_names_and_times_once_for_all_its_parts(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery held renders the title, the text and the JSON (the title three times, the SMS
    twice): the names and times in them are looked up once, and each part reads as it would
    from a message rendered afresh."""
    stop, truck = longest(feed)
    notice = KeeperNotice(NoticeKind.NOTICE, "trip-1", stop, 3, BEFORE, DUE)
    fresh = WasteNotice(notice, feed, truck, "wet")
    parts = (fresh.subject, fresh.text(), fresh.sms(), fresh.to_json())
    filled = 0
    values = WasteNotice._values

    def counted(self: WasteNotice) -> dict[str, object]:
        nonlocal filled
        filled += 1
        return values(self)

    monkeypatch.setattr(WasteNotice, "_values", counted)
    message = WasteNotice(notice, feed, truck, "wet")
    assert (message.subject, message.text(), message.sms(), message.to_json()) == parts
    assert filled == 1
