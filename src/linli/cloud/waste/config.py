"""The waste service's TOML: the broker, the timetable, the API, and how deliveries behave."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from linli.catalog.channels import Url
from linli.catalog.errors import load_toml_model
from linli.catalog.i18n import DEFAULT_LOCALE, Locale
from linli.catalog.mqttclient import MqttBroker
from linli.catalog.strict import Strict
from linli.catalog.tls import anchored
from linli.cloud.notifier.config import DeliveryConfig, SmtpConfig, channel_urls, refuse_private
from linli.cloud.waste.outbox import VisitStore
from linli.transit.extras import Contact


class TruckBroker(MqttBroker):
    """Where the trucks' messages are: `{topic}/{site}/{truck}/location|lift|alarm` (the keys
    every broker table has, and these)."""

    username_env: str = "LINLI_CLOUD_MQTT_USERNAME"
    password_env: str = "LINLI_CLOUD_MQTT_PASSWORD"  # noqa: S105 (a variable name)
    topic: Annotated[str, Field(pattern=r"^[^#+]+$")] = "trucks"
    # How long the broker keeps this service's session (its subscriptions and the trucks'
    # messages) while it is away: a restart within it loses none of them.
    session_expiry_s: Annotated[int, Field(ge=60, le=7 * 86_400)] = 86_400
    # Refused truck messages are republished, with why, to {dead_letter_topic}/waste/{reason}.
    dead_letter_topic: Annotated[str, Field(pattern=r"^[^#+]+$")] = "linli/deadletter"


class SmsGateway(Strict):
    """The operator's SMS gateway: POSTed `{"to": phone, "text": ..., "booking": ...}` per message."""

    url: Url


class WecomApp(Strict):
    """The district's WeCom app: POSTed WeCom's app message (`touser`, `agentid`, `text`). The URL is
    the district's relay, which adds the app's access token (WeCom's expire every two hours)."""

    url: Url
    agent_id: Annotated[int, Field(ge=1)]


class BookingRules(Strict):
    """`[bookings]`: how far ahead and how wide a booking may be, and how requesters are told.

    A requester gives a phone number, an e-mail address or a WeCom user id, never a URL or a
    topic: the phone goes through `sms`, the e-mail through `[smtp]`, the WeCom id through `wecom`.
    """

    max_ahead_days: Annotated[float, Field(gt=0, le=366)] = 30.0
    max_window_h: Annotated[float, Field(gt=0, le=31 * 24)] = 72.0
    sms: SmsGateway | None = None
    wecom: WecomApp | None = None


NAME = r"^[A-Za-z0-9_.-]{1,48}$"


class WasteConfig(Strict):
    """The whole file."""

    # This service's name among those on one broker: its MQTT client id is `linli-waste-{name}`,
    # a persistent session the broker keeps for it across restarts. Unset, it is this host's
    # name and a digest of `state`; two services on one host and one state need a name each.
    name: Annotated[str, Field(pattern=NAME)] | None = None
    # Set, this variable's value replaces `name`: replicas of one config on one broker each
    # need their own (as `state_env` gives them their database).
    name_env: str = "LINLI_WASTE_NAME"
    broker: TruckBroker = TruckBroker()
    smtp: SmtpConfig = SmtpConfig()
    gtfs: Path  # the timetable folder (GTFS files and linli.toml)
    # Notices, incidents, bookings and the store's outbox: an SQLite file (relative to this
    # file), or postgresql://user@host:port/database for services on several hosts (the
    # password from $PGPASSWORD). Each notice is sent by whichever service claims it first.
    state: str = "linli-waste.sqlite"
    # Set, this variable's value replaces `state`: replicas of one config share a database.
    state_env: str = "LINLI_STATE_URL"
    # Services on one state each follow every route (replicas, for availability): the only way.
    routes: Literal["every"] = "every"
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8081
    token_env: str = "LINLI_CLOUD_TOKEN"  # noqa: S105 (a variable name)
    attempts: Annotated[int, Field(ge=1, le=20)] = 5
    # Deadline, sends at once and pauses per destination, and whether private addresses may be told.
    delivery: DeliveryConfig = DeliveryConfig()
    # A delivery is its sender's this long; if it is not finished by then (its sender died),
    # another service on the same state sends it. Longer than all attempts take.
    lease_s: Annotated[float, Field(ge=5, le=86_400)] = 300.0
    # The clock (the trucks' own time) moves the predictions on in steps of this many seconds.
    tick_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    # A trip is followed from this long before it leaves, so its first stops hear in time.
    lookahead_min: Annotated[float, Field(gt=0, le=240)] = 45.0
    # At a stop this long without lifting: its gate is blocked.
    blocked_wait_min: Annotated[float, Field(gt=0, le=120)] = 5.0
    # Silent this long in the middle of a trip: broken down.
    silent_min: Annotated[float, Field(gt=0, le=240)] = 10.0
    # A truck's message further ahead than this of this machine's clock, or of the service's
    # clock while the truck is reporting, is refused (a truck clock gone wrong, or a lie): one
    # truck cannot move the others' trips on. Below `silent_min`, or one truck could make
    # every other look silent (broken down).
    max_skew_s: Annotated[float, Field(gt=0, le=3600)] = 300.0
    # Told of blocked gates and breakdowns; the operating company is asked for another truck.
    dispatcher: Contact | None = None
    operator: Contact | None = None
    # A blocked gate: "defer" goes on and comes back after the last bin room, "skip" gives the
    # stop up for this trip (its keeper hears it is cancelled). The dispatcher may do either.
    on_blocked: Literal["defer", "skip"] = "defer"
    # Trips, visits and incidents for the dashboards; none written when absent.
    store: VisitStore | None = None
    bookings: BookingRules = BookingRules()
    # The language people are told in, unless their contact names its own `locale`.
    locale: Locale = DEFAULT_LOCALE

    def client_id(self) -> str:
        """The MQTT client id of this service's persistent session (see `name`); ValueError if
        `name_env` holds no valid name."""
        given = os.environ.get(self.name_env, "") if self.name_env else ""
        if given and not re.fullmatch(NAME, given):
            raise ValueError(f"${self.name_env} = {given!r}: a name is 1-48 letters, digits, '_', '.' or '-'")
        name = given or self.name
        if name:
            return f"linli-waste-{name}"
        digest = hashlib.sha256(self.state.encode()).hexdigest()[:8]
        return f"linli-waste-{socket.gethostname()}-{digest}"

    @model_validator(mode="after")
    def _public_contacts(self) -> Self:
        # Keepers' and bookings' channels are checked when they are sent to, address by address;
        # the operator's gateways for requesters are webhooks too.
        urls: list[tuple[str, str]] = []
        for key, contact in (("dispatcher", self.dispatcher), ("operator", self.operator)):
            if contact is not None:
                urls += channel_urls(key, contact.channels)
        for key, gateway in (("bookings.sms", self.bookings.sms), ("bookings.wecom", self.bookings.wecom)):
            if gateway is not None:
                urls.append((f"{key}.url", gateway.url))
        refuse_private(self.delivery, urls)
        return self

    @field_validator("routes", mode="before")
    @classmethod
    def _split_retired(cls, value: object) -> object:
        if value == "split":
            raise ValueError(
                '"split" is retired: set routes = "every" (or remove the key), so that each service '
                "follows every route; a deployment that outgrows one service partitions by "
                "subdistrict, one feed per service (docs/scale.md)"
            )
        return value

    @field_validator("max_skew_s")
    @classmethod
    def _skew_below_silence(cls, value: float, info: ValidationInfo) -> float:
        silent_min = info.data.get("silent_min")
        if silent_min is not None and value >= silent_min * 60:
            raise ValueError(
                f"must be less than silent_min ({silent_min:g} min = {silent_min * 60:.0f} s), or one "
                "truck's clock could make every other truck look broken down; lower max_skew_s"
            )
        return value


def load_waste_config(path: Path) -> WasteConfig:
    """Read and validate the file; relative paths are taken from its folder."""
    config = load_toml_model(path, WasteConfig)
    updates: dict[str, object] = {}
    if not config.gtfs.is_absolute():
        updates["gtfs"] = path.parent / config.gtfs
    state = os.environ.get(config.state_env) or config.state
    if "://" not in state and not Path(state).is_absolute():  # a file, not a URL
        state = str(path.parent / state)
    updates["state"] = state
    if config.broker.tls is not None:
        updates["broker"] = config.broker.model_copy(update={"tls": anchored(config.broker.tls, path.parent)})
    return config.model_copy(update=updates)
