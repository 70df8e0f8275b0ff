"""The dashboards' words, from the `dashboards` message catalog, in the locale a build is in.

A build runs inside `in_locale(...)` (zh-CN unless asked otherwise), so the panel helpers
ask for their titles, legends and units by key without each passing a locale along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from linli.catalog.i18n import DEFAULT_LOCALE, Locale, text

_LOCALE: ContextVar[Locale] = ContextVar("dashboards_locale", default=DEFAULT_LOCALE)


@contextmanager
def in_locale(locale: Locale) -> Iterator[None]:
    """Build the dashboards in `locale` within this block."""
    token = _LOCALE.set(locale)
    try:
        yield
    finally:
        _LOCALE.reset(token)


def current() -> Locale:
    """The locale of the build under way."""
    return _LOCALE.get()


def t(key: str, /, **values: object) -> str:
    """The dashboards' message `dashboards.<key>` in the build's locale."""
    return text(f"dashboards.{key}", _LOCALE.get(), **values)


def unit(key: str) -> str:
    """A Grafana unit that writes the catalog's word for `key` after the number (吨, 台)."""
    return f"suffix: {t(f'unit.{key}')}"
