"""The message catalogs: every key in every locale with the same placeholders, and times as
people in Shanghai write them."""

from __future__ import annotations

import datetime as dt

import pytest
from babel.messages.pofile import read_po

from linli.catalog.i18n import (
    DEFAULT_LOCALE,
    LOCALES,
    MissingMessageError,
    catalog,
    clock,
    iso,
    placeholders,
    po_files,
    text,
)

# 2026-12-07 17:30 in Shanghai is 09:30 UTC.
EVENING = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC).timestamp()


def test_chinese_is_the_default_and_english_is_beside_it() -> None:
    assert DEFAULT_LOCALE == "zh-CN"
    assert set(LOCALES) == {"zh-CN", "en"}
    assert text("locale.name") == "中文"
    assert text("locale.name", "en") == "English"


def test_every_key_has_a_text_in_every_locale_with_the_same_placeholders() -> None:
    keys = {locale: set(catalog(locale)) for locale in LOCALES}
    for locale in LOCALES:
        missing = set().union(*keys.values()) - keys[locale]
        assert not missing, f"the {locale} catalogs lack {sorted(missing)}"
    # Each part of one locale has its counterpart in the other.
    parts = {locale: [p.name for p in po_files(locale)] for locale in LOCALES}
    assert len({tuple(p) for p in parts.values()}) == 1, parts
    for key in keys[DEFAULT_LOCALE]:
        names = {locale: placeholders(catalog(locale)[key]) for locale in LOCALES}
        assert len({frozenset(n) for n in names.values()}) == 1, f"{key}: placeholders differ: {names}"


def test_the_catalog_files_are_clean_po_without_fuzzy_or_empty_entries() -> None:
    for locale in LOCALES:
        ids = 0
        for path in po_files(locale):
            with path.open("rb") as f:
                po = read_po(f, locale=locale.replace("-", "_"), abort_invalid=True)
            bad = [m.id for m in po if m.id and (m.fuzzy or not m.string)]
            assert not bad, f"{path}: fuzzy or untranslated: {bad}"
            ids += len({m.id for m in po if m.id})
        assert ids == len(catalog(locale))


def test_a_missing_key_is_an_error_that_names_it_and_the_locale() -> None:
    with pytest.raises(MissingMessageError, match=r"'no\.such\.key'.*zh-CN"):
        text("no.such.key")
    with pytest.raises(ValueError, match="unknown locale 'fr'"):
        catalog("fr")


def test_times_are_shanghai_times_written_as_people_write_them() -> None:
    same_day = EVENING - 3 * 3600
    assert clock(EVENING, now=same_day) == "17:30"
    assert clock(EVENING, "en", now=same_day) == "17:30"
    day_before = EVENING - 24 * 3600
    assert clock(EVENING, now=day_before) == "12月7日 17:30"
    assert clock(EVENING, "en", now=day_before) == "Dec 7 17:30"
    assert clock(EVENING) == "12月7日 17:30"  # no "now": always the date
    # 23:30 UTC on Dec 6 is already Dec 7 in Shanghai: the day is Shanghai's, not UTC's.
    just_after_midnight = dt.datetime(2026, 12, 6, 16, 30, tzinfo=dt.UTC).timestamp()
    assert clock(just_after_midnight, now=EVENING) == "00:30"
    assert iso(EVENING) == "2026-12-07T17:30:00+08:00"
    with pytest.raises(ValueError, match="naive"):
        clock(dt.datetime(2026, 12, 7, 17, 30))
