"""Where a person's messages go: a webhook, a group robot, email or MQTT.

Shared by the notifier's subscriptions and the timetable's bin-room keepers."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from linli.catalog.strict import Strict

# An HTTP(S) URL with a host and no spaces or control characters.
Url = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\x00-\x20/]+[^\x00-\x20]*$")]


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"  # any URL: the alert as JSON
    WECOM = "wecom"  # WeCom (企业微信) group robot
    DINGTALK = "dingtalk"  # DingTalk (钉钉) group robot
    FEISHU = "feishu"  # Feishu (飞书) custom bot
    ALERTMANAGER = "alertmanager"  # any receiver of Prometheus Alertmanager's webhook (JSON v4)
    EMAIL = "email"
    MQTT = "mqtt"


class HttpChannel(Strict):
    """A webhook (the alert as JSON), a group robot in that service's own format, or a receiver
    of Alertmanager's webhook."""

    kind: Literal[
        ChannelKind.WEBHOOK,
        ChannelKind.WECOM,
        ChannelKind.DINGTALK,
        ChannelKind.FEISHU,
        ChannelKind.ALERTMANAGER,
    ]
    url: Url
    # DingTalk and Feishu signing secret, from this environment variable
    secret_env: Annotated[str, Field(max_length=128)] = ""
    # More robots of the same group chat (same kind and secret): each message goes to the robot
    # free soonest, so that the chat hears more than one robot's limit a minute.
    robots: Annotated[list[Url], Field(max_length=20)] = []

    @property
    def secret(self) -> str:
        return os.environ.get(self.secret_env, "") if self.secret_env else ""


class EmailChannel(Strict):
    kind: Literal[ChannelKind.EMAIL]
    to: Annotated[
        list[Annotated[str, Field(max_length=254, pattern=r"^[^@\x00-\x20]+@[^@\x00-\x20]+$")]],
        Field(min_length=1, max_length=50),
    ]


class MqttChannel(Strict):
    kind: Literal[ChannelKind.MQTT]
    # A topic to publish on: no wildcards.
    topic: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^#+\x00]+$")]


# Where one subscriber's messages go; `kind` says which fields it needs.
Channel = Annotated[HttpChannel | EmailChannel | MqttChannel, Field(discriminator="kind")]
