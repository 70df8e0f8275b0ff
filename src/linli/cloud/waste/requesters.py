"""Who booked a pickup and how to reach them: a phone number, an e-mail address, a WeCom user id.

A requester names where they are, never how the service sends: the operator configures that
(`[bookings]`), so a request cannot make the service POST to a URL or publish on a topic of
its choosing. `deliveries` turns a requester into the operator's channels: the phone through
the SMS gateway, the e-mail through the district's SMTP, the WeCom id through the WeCom app.
The SMS is the message alone (one SMS); e-mail and WeCom carry its title too. A requester may
name a `locale` to be told in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linli.catalog.channels import Channel, ChannelKind, EmailChannel, HttpChannel
from linli.catalog.i18n import Locale
from linli.cloud.notifier.channels import Message
from linli.cloud.waste.config import BookingRules

PHONE = r"^\+?[0-9]{5,15}$"  # digits, a leading + for the country code (E.164: 15 at most)
EMAIL = r"^[^@\x00-\x20]+@[^@\x00-\x20]+$"
WECOM_USER = r"^[A-Za-z0-9_.@-]{1,64}$"  # WeCom's userid: letters, digits, _ . @ -


class Requester(BaseModel):
    """A booking's contact: a name and at least one way to reach them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=128)]
    phone: Annotated[str, Field(pattern=PHONE, description="for SMS, e.g. +8613800138000")] | None = None
    email: Annotated[str, Field(max_length=254, pattern=EMAIL)] | None = None
    wecom: Annotated[str, Field(pattern=WECOM_USER, description="a WeCom user id")] | None = None
    locale: Annotated[Locale | None, Field(description="zh-CN or en; none: the district's")] = None

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if self.phone is None and self.email is None and self.wecom is None:
            raise ValueError("give a phone, an email or a wecom user id, to be told how the booking goes")
        return self

    @classmethod
    def stored(cls, text: str) -> Requester:
        """A stored contact. A booking made before requesters were bounded kept the notifier's
        channels: its name and e-mail addresses are kept, its URLs and topics never used again."""
        data = json.loads(text)
        if "channels" not in data:
            return cls.model_validate(data)
        mails = [to for c in data["channels"] if c.get("kind") == "email" for to in c.get("to", [])]
        return cls.model_construct(
            name=data["name"], phone=None, email=mails[0] if mails else None, wecom=None
        )

    def refused(self, rules: BookingRules) -> str | None:
        """Why this service cannot reach the requester as asked (None: it can)."""
        if self.phone is not None and rules.sms is None:
            return "this service sends no SMS ([bookings.sms] is not set): give an email or a wecom id"
        if self.wecom is not None and rules.wecom is None:
            return "this service has no WeCom app ([bookings.wecom] is not set): give a phone or an email"
        return None


@dataclass(frozen=True)
class Addressed:
    """A message with the body the operator's gateway takes (the same subject and text)."""

    message: Message
    body: dict[str, Any]

    @property
    def subject(self) -> str:
        return self.message.subject

    def text(self) -> str:
        return self.message.text()

    def to_json(self) -> dict[str, Any]:
        return self.body


class Rendered(Protocol):
    """A message for people: title, text, its one-SMS form, and JSON for machines."""

    @property
    def subject(self) -> str: ...

    def text(self) -> str: ...

    def sms(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


def deliveries(requester: Requester, message: Rendered, rules: BookingRules) -> list[tuple[Channel, Message]]:
    """The operator's channels to the requester, each with the message in its gateway's form."""
    out: list[tuple[Channel, Message]] = []
    if requester.email is not None:
        out.append((EmailChannel(kind=ChannelKind.EMAIL, to=[requester.email]), message))
    if requester.phone is not None and rules.sms is not None:
        body = {"to": requester.phone, "text": message.sms(), "booking": message.to_json()}
        out.append((HttpChannel(kind=ChannelKind.WEBHOOK, url=rules.sms.url), Addressed(message, body)))
    if requester.wecom is not None and rules.wecom is not None:
        wecom: dict[str, Any] = {
            "touser": requester.wecom,
            "msgtype": "text",
            "agentid": rules.wecom.agent_id,
            "text": {"content": message.text()},
        }
        out.append((HttpChannel(kind=ChannelKind.WEBHOOK, url=rules.wecom.url), Addressed(message, wecom)))
    return out
