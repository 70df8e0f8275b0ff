"""`linli.toml` beside a GTFS feed: what GTFS has no field for (the bin rooms' keepers, the
trucks by fleet number and plate, the renovation trucks, the waste types of each route)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from linli.catalog.channels import Channel
from linli.catalog.i18n import Locale, text
from linli.catalog.strict import Strict


class Contact(Strict):
    """A person to tell, and how (the notifier's channels)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    channels: Annotated[list[Channel], Field(min_length=1, max_length=10)]
    locale: Locale | None = None  # the language they read; None: the district's (the waste config's)


class Truck(Strict):
    """A truck as people know it: the operating company's fleet number and the plate."""

    fleet: Annotated[str, Field(min_length=1, max_length=16)]
    plate: Annotated[str, Field(min_length=1, max_length=16, description="e.g. 沪D·F3021")]

    def name_in(self, locale: Locale) -> str:
        """The fleet number and plate, as `locale` writes them (`07号` and the plate, in zh-CN)."""
        return text("waste.truck", locale, fleet=self.fleet, plate=self.plate)


class StopExtras(Strict):
    bins: Annotated[int, Field(ge=1, le=200)]
    keepers: Annotated[list[Contact], Field(min_length=1, max_length=10)]
    property: Contact | None = None  # asked to clear the access when the gate is blocked
    notice_min: Annotated[float, Field(gt=0, le=120)] = 15.0


class RouteExtras(Strict):
    waste_type: Literal["wet", "dry", "recyclable", "hazardous", "renovation"]
    kg_per_bin: Annotated[float, Field(gt=0, le=1000)]
    truck: Annotated[str, Field(min_length=1, max_length=64)]


class RenovationTruck(Strict):
    """A truck on call for renovation waste: how much it takes, and its shift (local time)."""

    id: Annotated[str, Field(min_length=1, max_length=64)]
    locale: Locale | None = None  # its terminal's language; None: the district's (the waste config's)
    capacity_m3: Annotated[float, Field(gt=0, le=60)]
    shift: tuple[
        Annotated[str, Field(pattern=r"^\d{2}:\d{2}$")], Annotated[str, Field(pattern=r"^\d{2}:\d{2}$")]
    ] = (
        "08:00",
        "18:00",
    )

    @property
    def shift_start_s(self) -> int:
        return _hhmm(self.shift[0])

    @property
    def shift_end_s(self) -> int:
        return _hhmm(self.shift[1])


class Renovation(Strict):
    """Renovation waste, booked like a ride: the trucks on call, and how long a driver has."""

    trucks: Annotated[list[RenovationTruck], Field(min_length=1, max_length=50)]
    accept_min: Annotated[float, Field(gt=0, le=240)] = 10.0


def _hhmm(text: str) -> int:
    h, m = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60


class Extras(Strict):
    routes: dict[str, RouteExtras]
    trucks: dict[str, Truck] = {}  # by truck id: every route's and renovation truck's
    stops: dict[str, StopExtras] = {}
    depots: list[str] = []  # stops that are not bin rooms: no keeper, no notice
    renovation: Renovation | None = None
