"""The notifier's TOML config: the broker, the API, and the first subscriptions."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, Field, field_validator, model_validator

from linli.catalog.alerts import ALERT_TOPIC, EDGE_STATUS_TOPIC, AlertMessage
from linli.catalog.channels import Channel, ChannelKind, HttpChannel
from linli.catalog.errors import load_toml_model
from linli.catalog.i18n import DEFAULT_LOCALE, DISTRICT_ZONE, Locale
from linli.catalog.mqttclient import MqttBroker
from linli.catalog.profile import Severity
from linli.catalog.strict import Strict
from linli.catalog.tls import anchored
from linli.cloud.notifier.addresses import FIX, private_host

NOTIFIER_GROUP = "linli-notifier"
# Smoke, a fire alarm, the fire pump, an SOS: rule ids (or their prefixes) told at once.
LIFE_SAFETY = [
    "charger.smoke_alarm",
    "fire_point.alarm",
    "fire_pump.",
    "sos",
]  # the notifiers' shared subscription group, by default

Clock = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
SUB_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Bounds on what a subscription may hold: it is read on every tick and served by the API.
Name = Annotated[str, Field(min_length=1, max_length=128)]
Names = Annotated[list[Name], Field(max_length=200)]


def _known_zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone '{zone}' (an IANA name such as Asia/Shanghai)") from exc
    return zone


# An IANA time zone name, such as Asia/Shanghai.
Zone = Annotated[
    str,
    Field(max_length=64, json_schema_extra={"enum": sorted(available_timezones())}),
    AfterValidator(_known_zone),
]


class QuietHours(Strict):
    """No messages from `start` to `end` local time (over midnight if end < start)."""

    start: Clock
    end: Clock
    zone: Zone = DISTRICT_ZONE
    critical_passes: bool = True  # a critical alert still gets through


# The labels of an alert a subscription may group its messages by; `fingerprint`: one per alert.
GroupLabel = Literal["site", "rule", "kind", "device", "edge", "severity", "fingerprint"]
DEFAULT_GROUP_BY: list[GroupLabel] = ["site", "rule"]


# Label -> a value or a shell pattern (`*.silent*`): an alert matches when every label does.
Matcher = Annotated[dict[GroupLabel, Annotated[str, Field(max_length=256)]], Field(min_length=1)]


def labelled(alert: AlertMessage, matcher: Mapping[GroupLabel, str]) -> bool:
    """Whether each of the matcher's labels has its value (or pattern, `*.silent*`)."""
    return all(fnmatch.fnmatchcase(str(getattr(alert, label)), value) for label, value in matcher.items())


class InhibitRule(Strict):
    """While an alert matching `source` fires, alerts matching `target` with the same `equal`
    labels are not told (they stay in the record, shown inhibited); one that outlives its
    source is told then."""

    source: Matcher
    target: Matcher
    equal: Annotated[list[GroupLabel], Field(max_length=7)] = []


# The district's: an edge offline makes its devices' silence no news, and so does a site's
# mains supply fault for the devices of that site. A device silent is a rule `<kind>.<field>.silent`.
DEVICE_SILENT = "*.silent*"
DEFAULT_INHIBIT = [
    InhibitRule(source={"rule": "edge.offline"}, target={"rule": DEVICE_SILENT}, equal=["edge"]),
    InhibitRule(source={"rule": "*.mains_fault.*"}, target={"rule": DEVICE_SILENT}, equal=["site"]),
]


class Silence(Strict):
    """Alerts matching `matchers` are not told from `starts_s` to `ends_s` (Unix seconds); they
    are still recorded, and told when it ends if they still fire."""

    id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    matchers: Matcher
    starts_s: Annotated[float, Field(ge=0)]
    ends_s: Annotated[float, Field(ge=0)]
    author: Name
    comment: Annotated[str, Field(min_length=1, max_length=1000)]

    def holds(self, alert: AlertMessage, now: float) -> bool:
        """Whether it silences `alert` at `now`."""
        return self.starts_s <= now < self.ends_s and labelled(alert, self.matchers)


class Subscription(Strict):
    """Who gets what: empty filters match everything."""

    id: Annotated[str, Field(pattern=SUB_ID)]
    name: Annotated[str, Field(max_length=200)] = ""
    # At least one: a subscription with no channel could never deliver.
    channels: Annotated[list[Channel], Field(min_length=1, max_length=20)]
    sites: Names = []
    kinds: Names = []
    rules: Names = []
    min_severity: Severity = Severity.WARNING
    quiet: QuietHours | None = None
    # Not acknowledged this long after it first fired: tell these subscriptions too.
    escalate_after_s: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None
    escalate_to: Annotated[list[Annotated[str, Field(pattern=SUB_ID)]], Field(max_length=20)] = []
    # The language of this subscription's notices; unset, the notifier's `locale`.
    locale: Locale | None = None
    # The zone its notices show times in.
    zone: Zone = DISTRICT_ZONE
    # One message for the alerts that share these labels (a site's 40 devices offline: one).
    group_by: Annotated[list[GroupLabel], Field(min_length=1, max_length=7)] = Field(
        default_factory=lambda: list(DEFAULT_GROUP_BY)
    )
    # Where a life-safety alert goes when its channel's robots are all throttled, paused or
    # at their limit: the first of these free soonest (an SMS gateway's webhook, another chat).
    fallback: Annotated[list[Channel], Field(max_length=5)] = []


class SmtpConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    sender: str = "linli@localhost"
    username_env: str = "LINLI_SMTP_USERNAME"
    password_env: str = "LINLI_SMTP_PASSWORD"  # noqa: S105 (a variable name)
    starttls: bool = False


class PaceLimit(Strict):
    """At most `per` messages within any `window_s` seconds to one robot (or the SMTP relay)."""

    per: Annotated[int, Field(ge=1, le=10_000)]
    window_s: Annotated[float, Field(gt=0, le=3600)] = 60.0


# The robots' documented limits: WeCom and DingTalk group robots 20 a minute, Feishu custom
# bots 100 a minute. An SMTP relay's limit is its operator's: set `email` to it. Webhooks and
# MQTT have none.
DEFAULT_PACE = {
    ChannelKind.WECOM: PaceLimit(per=20),
    ChannelKind.DINGTALK: PaceLimit(per=20),
    ChannelKind.FEISHU: PaceLimit(per=100),
}


class DeliveryConfig(Strict):
    """How notices are delivered to each destination: a webhook's or robot's host and port,
    the SMTP relay, the broker. A slow or dead destination costs only its own deliveries."""

    # A whole request (connecting, sending, the full answer; an SMTP session) takes at most this.
    deadline_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    # Sends to one destination at once; the others wait their turn, in order.
    per_destination: Annotated[int, Field(ge=1, le=64)] = 4
    # This many failures in a row pause a destination for `pause_s`; then one delivery probes
    # it, and each failed probe doubles the pause, up to ten minutes.
    pause_after: Annotated[int, Field(ge=1, le=1000)] = 5
    pause_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Webhooks and robots on loopback, link-local or private addresses are refused unless this
    # is set (a receiver on this host or the district's own network).
    allow_private: bool = False
    # Each robot (by its URL) and the SMTP relay at most this fast; the most urgent message goes
    # first, and a robot's throttling answer pauses it as long as the robot says (`pacing`).
    pace: dict[ChannelKind, PaceLimit] = Field(default_factory=lambda: dict(DEFAULT_PACE))

    @field_validator("pace")
    @classmethod
    def _documented_limits_kept(cls, pace: dict[ChannelKind, PaceLimit]) -> dict[ChannelKind, PaceLimit]:
        # Setting the relay's limit keeps the robots' documented ones.
        return {**DEFAULT_PACE, **pace}


DEFAULT_DELIVERY = DeliveryConfig()


def channel_urls(where: str, channels: list[Channel], field: str = "channels") -> list[tuple[str, str]]:
    """Each HTTP channel's URLs (its robots' too) with their keys, for `refuse_private`."""
    return [
        (f"{where}.{field}[{i}].{key}", url)
        for i, c in enumerate(channels)
        if isinstance(c, HttpChannel)
        for key, url in [("url", c.url), *((f"robots[{j}]", u) for j, u in enumerate(c.robots))]
    ]


def refuse_private(delivery: DeliveryConfig, urls: list[tuple[str, str]]) -> None:
    """ValueError for the first (key, URL) that names a private address, unless allowed."""
    if delivery.allow_private:
        return
    for key, url in urls:
        why = private_host(url)
        if why:
            raise ValueError(f"{key}: {why}; {FIX}")


class BrokerConfig(MqttBroker):
    """The central broker: the keys every broker table has, and the notifiers' group."""

    username_env: str = "LINLI_CLOUD_MQTT_USERNAME"
    password_env: str = "LINLI_CLOUD_MQTT_PASSWORD"  # noqa: S105
    # MQTT 5 shared subscription group: notifiers in one group share the events.
    group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = NOTIFIER_GROUP
    alert_topic: str = ALERT_TOPIC
    status_topic: str = EDGE_STATUS_TOPIC
    # Every broker table has the same keys: `keepalive_s` is refused, naming `keepalive`.
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"keepalive_s": "keepalive"}
    # A notifier whose state has been unreachable this long leaves the group until it is back,
    # so that the broker gives the others every new event.
    leave_after_s: Annotated[float, Field(gt=0)] = 10.0


class NotifierConfig(Strict):
    """The whole file."""

    broker: BrokerConfig = BrokerConfig()
    smtp: SmtpConfig = SmtpConfig()
    # An SQLite file (from the config's folder), or postgresql://user@host:port/database to
    # share the state between notifiers on several hosts (the password from $PGPASSWORD).
    state: str = "linli-notifier.sqlite"
    # Set, this variable's value replaces `state`: replicas of one config share a database.
    state_env: str = "LINLI_STATE_URL"
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    token_env: str = "LINLI_CLOUD_TOKEN"  # noqa: S105 (a variable name)
    # One message for a burst of the same alert: wait this long after it first fires.
    group_wait_s: Annotated[float, Field(ge=0, le=3600)] = 0.2
    # While it keeps firing and nobody acknowledged it, say so again this often.
    repeat_s: Annotated[float, Field(gt=0)] = 4 * 3600.0
    # A group already told hears of its changes (new alerts, resolved ones) at most this often.
    group_interval_s: Annotated[float, Field(ge=0, le=86400)] = 60.0
    # A grouped message lists this many alerts, then links to the rest in the API.
    group_list: Annotated[int, Field(ge=1, le=200)] = 10
    # Life-safety rules (by rule id or its prefix): told at once, never waiting for
    # `group_wait_s` or `group_interval_s`, in their group's message.
    life_safety: Annotated[list[Name], Field(max_length=100)] = Field(
        default_factory=lambda: list(LIFE_SAFETY)
    )
    # Alerts not told while another fires (Alertmanager's inhibition rules).
    inhibit: Annotated[list[InhibitRule], Field(max_length=100)] = Field(
        default_factory=lambda: list(DEFAULT_INHIBIT)
    )
    # The API as people reach it, for a grouped message's link; unset, http://api_host:api_port.
    api_url: Annotated[str, Field(max_length=2048)] = ""
    # A delivery is tried this many times, backing off from 1 s, before it is recorded as failed.
    attempts: Annotated[int, Field(ge=1, le=20)] = 5
    # A notice claimed and not released (its sender died, or the database failed as it
    # finished) is sent again by any notifier after this long: longer than its attempts take.
    lease_s: Annotated[float, Field(ge=5, le=86_400)] = 300.0
    delivery: DeliveryConfig = DeliveryConfig()
    # The language of the notices of every subscription that names none (zh-CN or en).
    locale: Locale = DEFAULT_LOCALE
    subscriptions: list[Subscription] = []

    @model_validator(mode="after")
    def _escalations_resolve(self) -> Self:
        ids = {s.id for s in self.subscriptions}
        for sub in self.subscriptions:
            unknown = sorted(set(sub.escalate_to) - ids)
            if unknown:
                raise ValueError(f"subscription '{sub.id}': escalate_to names no subscription: {unknown}")
        for i, sub in enumerate(self.subscriptions):
            refuse_private(self.delivery, channel_urls(f"subscriptions[{i}]", sub.channels))
            refuse_private(self.delivery, channel_urls(f"subscriptions[{i}]", sub.fallback, "fallback"))
        return self


def life_safety(config: NotifierConfig, rule: str) -> bool:
    """Whether alerts of `rule` are told at once, never waiting for their group."""
    return any(rule == r or rule.startswith(r if r.endswith(".") else r + ".") for r in config.life_safety)


def load_notifier_config(path: Path) -> NotifierConfig:
    """Read and validate the file; ConfigError names each bad key."""
    config = load_toml_model(path, NotifierConfig)
    if os.environ.get(config.state_env):
        config = config.model_copy(update={"state": os.environ[config.state_env]})
    if "://" not in config.state and not Path(config.state).is_absolute():  # a file, not a URL
        config = config.model_copy(update={"state": str(path.parent / config.state)})
    if config.broker.tls is not None:
        broker = config.broker.model_copy(update={"tls": anchored(config.broker.tls, path.parent)})
        config = config.model_copy(update={"broker": broker})
    return config
