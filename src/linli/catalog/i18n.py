"""Every text a person receives, rendered from the message catalogs: zh-CN by default, en beside it.

The catalogs are gettext `.po` files read with Babel, one per part and locale
(`locales/<locale>/LC_MESSAGES/<part>.po`: `linli`, `alerts`, `waste`, `booking`, `dashboards`);
a key lives in one part only. A message's id is a stable key (`keeper.notice.text`)
and its text a `str.format` template, so a translator sees every placeholder. Times shown to a
person are in the district's zone and written as people write them there: `17:30` today,
`12月7日 17:30` (`Dec 7 17:30`) on another day. Machine fields carry ISO 8601 with the offset.
"""

from __future__ import annotations

import datetime as dt
import string
from functools import cache
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo

import babel
from babel.dates import format_datetime, format_skeleton
from babel.messages.pofile import read_po

Locale = Literal["zh-CN", "en"]
LOCALES: tuple[Locale, ...] = get_args(Locale)
DEFAULT_LOCALE: Locale = "zh-CN"
DISTRICT_ZONE = "Asia/Shanghai"

LOCALE_DIR = Path(__file__).parent / "locales"


class MissingMessageError(KeyError):
    """A key without a text in a locale: a bug the catalog tests catch before anyone reads it."""


def po_path(locale: Locale, part: str = "linli") -> Path:
    """The catalog file of one part in `locale`."""
    return LOCALE_DIR / locale.replace("-", "_") / "LC_MESSAGES" / f"{part}.po"


def po_files(locale: Locale) -> list[Path]:
    """Every part's catalog file in `locale`."""
    return sorted(po_path(locale).parent.glob("*.po"))


@cache
def catalog(locale: Locale) -> dict[str, str]:
    """Every key of `locale` with its template (fuzzy and empty entries left out)."""
    if locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}; use one of {', '.join(LOCALES)}")
    messages: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in po_files(locale):
        with path.open("rb") as f:
            po = read_po(f, locale=locale.replace("-", "_"))
        for m in po:
            if not (m.id and isinstance(m.string, str) and m.string and not m.fuzzy):
                continue
            key = str(m.id)
            if key in messages:
                raise ValueError(f"message {key!r} is in both {where[key]} and {path.name}; keep it in one")
            messages[key], where[key] = str(m.string), path.name
    return messages


def text(key: str, locale: Locale = DEFAULT_LOCALE, /, **values: object) -> str:
    """The message `key` in `locale`, its placeholders filled from `values`."""
    try:
        template = catalog(locale)[key]
    except KeyError:
        raise MissingMessageError(
            f"no message {key!r} in the {locale} catalog ({po_path(locale).name})"
        ) from None
    return template.format(**values)


def placeholders(template: str) -> set[str]:
    """The names a template fills, for the tests that keep the locales in step."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def local(at: float | dt.datetime, zone: str = DISTRICT_ZONE) -> dt.datetime:
    """A moment (epoch seconds or an aware datetime) in `zone`."""
    if isinstance(at, dt.datetime):
        if at.tzinfo is None:
            raise ValueError("a naive datetime has no moment; give it a zone")
        return at.astimezone(ZoneInfo(zone))
    return dt.datetime.fromtimestamp(at, ZoneInfo(zone))


@cache
def _babel(locale: Locale) -> babel.Locale:
    # Parsed once: Babel parses a locale name anew on every call it is given as a string.
    return babel.Locale.parse(locale.replace("-", "_"))


def clock(
    at: float | dt.datetime,
    locale: Locale = DEFAULT_LOCALE,
    *,
    now: float | dt.datetime | None = None,
    zone: str = DISTRICT_ZONE,
) -> str:
    """A time as people write it: `17:30` on the day of `now`, else `12月7日 17:30` / `Dec 7 17:30`."""
    moment = local(at, zone)
    babel_locale = _babel(locale)
    hhmm = format_datetime(moment, "HH:mm", locale=babel_locale)
    if now is not None and local(now, zone).date() == moment.date():
        return hhmm
    return f"{format_skeleton('MMMd', moment, locale=babel_locale)} {hhmm}"


def iso(at: float | dt.datetime, zone: str = DISTRICT_ZONE) -> str:
    """ISO 8601 with the zone's offset, to the second: `2026-12-07T17:30:00+08:00`."""
    return local(at, zone).isoformat(timespec="seconds")
