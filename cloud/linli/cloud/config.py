"""The notifier's TOML config: the broker, the API, and the first subscriptions."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linli.catalog.alerts import ALERT_TOPIC, EDGE_STATUS_TOPIC
from linli.catalog.errors import load_toml_model
from linli.catalog.profile import Severity

Clock = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"  # any URL: the alert as JSON
    WECOM = "wecom"  # WeCom (企业微信) group robot
    DINGTALK = "dingtalk"  # DingTalk (钉钉) group robot
    FEISHU = "feishu"  # Feishu (飞书) custom bot
    EMAIL = "email"
    MQTT = "mqtt"


class Channel(Strict):
    """Where one subscriber's messages go."""

    kind: ChannelKind
    url: str = ""  # webhook and robots: the robot's webhook address
    secret_env: str = ""  # DingTalk and Feishu signing secret, from this environment variable
    to: list[str] = []  # email addresses
    topic: str = ""  # MQTT topic

    @model_validator(mode="after")
    def _target(self) -> Self:
        need = {
            ChannelKind.EMAIL: ("to", self.to),
            ChannelKind.MQTT: ("topic", self.topic),
        }.get(self.kind, ("url", self.url))
        if not need[1]:
            raise ValueError(f"a {self.kind} channel needs '{need[0]}'")
        return self

    @property
    def secret(self) -> str:
        return os.environ.get(self.secret_env, "") if self.secret_env else ""


class QuietHours(Strict):
    """No messages from `start` to `end` local time (over midnight if end < start)."""

    start: Clock
    end: Clock
    zone: str = "Asia/Shanghai"
    critical_passes: bool = True  # a critical alert still gets through


class Subscription(Strict):
    """Who gets what: empty filters match everything."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    name: str = ""
    channels: list[Channel]
    sites: list[str] = []
    kinds: list[str] = []
    rules: list[str] = []
    min_severity: Severity = Severity.WARNING
    quiet: QuietHours | None = None
    # Not acknowledged this long after it first fired: tell these subscriptions too.
    escalate_after_s: Annotated[float, Field(gt=0)] | None = None
    escalate_to: list[str] = []


class SmtpConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    sender: str = "linli@localhost"
    username_env: str = "LINLI_SMTP_USERNAME"
    password_env: str = "LINLI_SMTP_PASSWORD"  # noqa: S105 (a variable name)
    starttls: bool = False


class BrokerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username_env: str = "LINLI_CLOUD_MQTT_USERNAME"
    password_env: str = "LINLI_CLOUD_MQTT_PASSWORD"  # noqa: S105
    # MQTT 5 shared subscription group: notifiers in one group share the events.
    group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "linli-notifier"
    alert_topic: str = ALERT_TOPIC
    status_topic: str = EDGE_STATUS_TOPIC


class NotifierConfig(Strict):
    """The whole file."""

    broker: BrokerConfig = BrokerConfig()
    smtp: SmtpConfig = SmtpConfig()
    state: Path = Path("linli-notifier.sqlite")
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    token_env: str = "LINLI_CLOUD_TOKEN"  # noqa: S105 (a variable name)
    # One message for a burst of the same alert: wait this long after it first fires.
    group_wait_s: Annotated[float, Field(ge=0, le=3600)] = 0.2
    # While it keeps firing and nobody acknowledged it, say so again this often.
    repeat_s: Annotated[float, Field(gt=0)] = 4 * 3600.0
    # A delivery is tried this many times, backing off from 1 s, before it is recorded as failed.
    attempts: Annotated[int, Field(ge=1, le=20)] = 5
    subscriptions: list[Subscription] = []


def load_notifier_config(path: Path) -> NotifierConfig:
    """Read and validate the file; ConfigError names each bad key."""
    config = load_toml_model(path, NotifierConfig)
    if not config.state.is_absolute():
        config = config.model_copy(update={"state": path.parent / config.state})
    return config
