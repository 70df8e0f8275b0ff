"""Trucks and bin rooms by the names people know them by, from the feed."""

from __future__ import annotations

from linli.catalog.i18n import Locale, text
from linli.transit.gtfs import Feed


def truck_name(feed: Feed, truck_id: str | None, locale: Locale) -> str:
    """A truck as people know it (its fleet number and plate); a truck the feed does not describe is
    named as a relief truck, never by its id."""
    truck = feed.extras.trucks.get(truck_id or "")
    if truck is None:
        return text("waste.truck.unknown", locale)
    return truck.name_in(locale)


def stop_name(feed: Feed, stop_id: str | None, locale: Locale) -> str:
    """A bin room by the name people use (the feed's `stop_name`, or its translation for `locale`)."""
    stop = feed.stops.get(stop_id or "")
    return stop.name_in(locale) if stop is not None else text("waste.incident.on_the_way", locale)
