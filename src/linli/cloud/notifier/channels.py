"""Channels: one alert notice in each destination's documented message format, and its delivery.

WeCom and DingTalk group robots take `{"msgtype": "markdown", ...}`; DingTalk and Feishu
robots with a signing secret take a timestamp and an HMAC-SHA256 signature (DingTalk in
the query, over "timestamp\\nsecret" keyed by the secret; Feishu in the body, over nothing
keyed by "timestamp\\nsecret"). A robot answers 200 even when it refuses, with a non-zero
errcode (WeCom, DingTalk) or code (Feishu): that counts as a failed delivery.

Every field goes into robot markdown escaped, so that an alert's title or site cannot add a
link, a heading or an @all; a headline (an e-mail subject) is one line, whatever the fields
hold. Each send has one deadline for all of it (connecting, sending, the whole answer), and each
HTTP destination its own connection pool, so a receiver that trickles its answer a byte a second
or never answers costs only its own deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import json
import re
import smtplib
import socket
import ssl
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import httpcore
import httpx

from linli.catalog import alerttext
from linli.catalog.alerts import AlertMessage
from linli.catalog.alerttext import NoticeKind
from linli.catalog.channels import Channel, ChannelKind, EmailChannel, HttpChannel, MqttChannel
from linli.catalog.i18n import DEFAULT_LOCALE, DISTRICT_ZONE, Locale, iso
from linli.cloud.notifier.addresses import PublicOnly
from linli.cloud.notifier.config import DEFAULT_DELIVERY, DeliveryConfig, SmtpConfig


class DeliveryError(Exception):
    """The destination did not take the message; the text says what it answered."""


class DeadlineError(DeliveryError):
    """No whole answer within the deadline: the destination hangs or trickles, and holds a
    connection as long as it is let (`destinations` pauses it at once)."""


class ThrottledError(DeliveryError):
    """The robot refused the message for going too fast: pause it `retry_after_s`."""

    def __init__(self, text: str, retry_after_s: float) -> None:
        super().__init__(text)
        self.retry_after_s = retry_after_s


# The robots' throttling answers (errcode or code) and how long each keeps refusing.
THROTTLED = {
    (ChannelKind.WECOM, 45009): 60.0,  # "api freq out of limit": the minute's quota is spent
    (ChannelKind.DINGTALK, 130101): 600.0,  # "send too fast, exceed 20 times per minute": 10 min
    (ChannelKind.FEISHU, 9499): 60.0,  # "too many request"
}


def throttled(kind: ChannelKind, code: object, answer: object) -> ThrottledError | None:
    """The error for a robot's answer code when it is a throttle, or None."""
    if not isinstance(code, int):
        return None
    pause = THROTTLED.get((kind, code))
    if pause is None:
        return None
    return ThrottledError(f"the robot is throttling: {answer}", pause)


class Message(Protocol):
    """What a channel sends: a subject, a text for people, and JSON for machines."""

    @property
    def subject(self) -> str: ...

    def text(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


class Rendered:
    """A message's subject (one line) and text, rendered once: every channel, the outbox and a
    failure record read the same words."""

    def _render(self) -> tuple[str, list[str]]:
        """The subject and the lines under it."""
        raise NotImplementedError

    @functools.cached_property
    def _rendered(self) -> tuple[str, str]:
        subject, details = self._render()
        subject = one_line(subject)
        return subject, "\n".join([subject, *details])

    @property
    def subject(self) -> str:
        return self._rendered[0]

    def text(self) -> str:
        return self._rendered[1]


@dataclass(frozen=True)
class Notice(Rendered):
    """One message about one alert to one subscription, in its language and time zone."""

    kind: NoticeKind
    alert: AlertMessage
    subscription: str
    locale: Locale = DEFAULT_LOCALE
    zone: str = DISTRICT_ZONE

    def _render(self) -> tuple[str, list[str]]:
        subject = alerttext.subject(self.kind, self.alert, self.locale)
        return subject, alerttext.details(self.kind, self.alert, self.locale, self.zone)

    def to_json(self) -> dict[str, Any]:
        """The machine fields (the alert as the edge sent it), and the notice as people read it."""
        a = self.alert
        return {
            "notice": self.kind,
            "subscription": self.subscription,
            "locale": self.locale,
            "zone": self.zone,
            "title": alerttext.title(a, self.locale),
            "subject": self.subject,
            "text": self.text(),
            "since": iso(a.since_ms / 1000, self.zone),
            "time": iso(a.time_ms / 1000, self.zone),
            "alert": a.model_dump(mode="json"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notice:
        """A notice back from its JSON (the outbox's copy); ValueError or KeyError if it is not one."""
        return cls(
            data["notice"],
            AlertMessage.model_validate(data["alert"]),
            data["subscription"],
            data.get("locale", DEFAULT_LOCALE),
            data.get("zone", DISTRICT_ZONE),
        )


@dataclass(frozen=True)
class GroupNotice(Rendered):
    """One message about a group of alerts to one subscription: how many, the first `limit`
    listed (new ones first, then those still firing, then the resolved), and a link to the
    group's alerts in the API. `group` is the group's labels as a query (`site=x&rule=y`)."""

    kind: NoticeKind
    subscription: str
    group: str
    listed: tuple[tuple[alerttext.Standing, AlertMessage], ...]
    api_url: str
    limit: int = 10
    locale: Locale = DEFAULT_LOCALE
    zone: str = DISTRICT_ZONE

    @property
    def alert(self) -> AlertMessage:
        """The alert that says how urgent the message is: the first critical one told new."""
        critical = [a for s, a in self.listed if s == "new" and a.severity == "critical"]
        return critical[0] if critical else self.listed[0][1]

    @property
    def link(self) -> str:
        return f"{self.api_url}/alerts?{self.group}"

    def _render(self) -> tuple[str, list[str]]:
        subject = alerttext.group_subject(self.kind, [a for _, a in self.listed], self.locale)
        return subject, alerttext.group_details(self.listed, self.limit, self.link, self.locale, self.zone)

    def to_json(self) -> dict[str, Any]:
        """The notice as people read it, the group's labels and link, and every alert it
        covers as the edge sent it (`alert`: the most urgent, as in a single alert's notice)."""
        return {
            "notice": self.kind,
            "subscription": self.subscription,
            "locale": self.locale,
            "zone": self.zone,
            "subject": self.subject,
            "text": self.text(),
            "group": dict(urllib.parse.parse_qsl(self.group)),
            "group_key": self.group,
            "count": len(self.listed),
            "link": self.link,
            "limit": self.limit,
            "api_url": self.api_url,
            "alert": self.alert.model_dump(mode="json"),
            "alerts": [{"standing": s, **a.model_dump(mode="json")} for s, a in self.listed],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupNotice:
        """A group's notice back from its JSON (the outbox's copy)."""
        listed = tuple(
            (item.pop("standing"), AlertMessage.model_validate(item)) for item in map(dict, data["alerts"])
        )
        return cls(
            data["notice"],
            data["subscription"],
            data["group_key"],
            listed,
            data["api_url"],
            data["limit"],
            data.get("locale", DEFAULT_LOCALE),
            data.get("zone", DISTRICT_ZONE),
        )


def message_from_json(data: dict[str, Any]) -> Notice | GroupNotice:
    """A notice (of one alert or of a group) back from its JSON."""
    return GroupNotice.from_json(data) if "group_key" in data else Notice.from_json(data)


# Alertmanager's "not ended yet", as it sends it.
NOT_ENDED = "0001-01-01T00:00:00Z"


def alertmanager(notice: Notice | GroupNotice) -> dict[str, Any]:
    """The notice as Alertmanager's webhook sends a group (`version` 4), for its receivers
    (prometheus-webhook-dingtalk and the like): each alert's labels (`alertname` the rule),
    annotations in the subscription's language (`summary` the title, `description` where),
    times in its zone; `groupLabels` the group's, `externalURL` the API (a group's link)."""
    if isinstance(notice, GroupNotice):
        listed = list(notice.listed)
        group = dict(urllib.parse.parse_qsl(notice.group))
        external = notice.api_url
    else:
        a = notice.alert
        listed = [("resolved" if notice.kind == "resolved" else "firing", a)]
        group = {"rule": a.rule, "site": a.site}
        external = ""
    alerts = [_am_alert(standing, a, notice) for standing, a in listed]
    group = {"alertname" if k == "rule" else k: v for k, v in group.items()}
    common = {k: v for k, v in alerts[0]["labels"].items() if all(x["labels"].get(k) == v for x in alerts)}
    notes = alerts[0]["annotations"].items()
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}",
        "truncatedAlerts": 0,
        "status": "firing" if any(x["status"] == "firing" for x in alerts) else "resolved",
        "receiver": notice.subscription,
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {k: v for k, v in notes if all(x["annotations"].get(k) == v for x in alerts)},
        "externalURL": external,
        "alerts": alerts,
    }


def _am_alert(standing: str, a: AlertMessage, notice: Notice | GroupNotice) -> dict[str, Any]:
    labels = {"alertname": a.rule, "severity": str(a.severity), "site": a.site, "kind": a.kind}
    labels |= {"device": a.device, "edge": a.edge} | ({"port": str(a.port)} if a.port is not None else {})
    resolved = standing == "resolved"
    link = f"{notice.api_url}/alerts?fingerprint={a.fingerprint}" if isinstance(notice, GroupNotice) else ""
    return {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": {
            "summary": alerttext.title(a, notice.locale),
            "description": alerttext.where(a, notice.locale),
        },
        "startsAt": iso(a.since_ms / 1000, notice.zone),
        "endsAt": iso(a.time_ms / 1000, notice.zone) if resolved else NOT_ENDED,
        "generatorURL": link,
        "fingerprint": a.fingerprint,
    }


def thread_of(message: Notice | GroupNotice) -> str:
    """Messages of one thread to one destination go in order: an alert's, or a group's."""
    return f"group:{message.group}" if isinstance(message, GroupNotice) else message.alert.fingerprint


def body(channel: HttpChannel, notice: Message, now: float) -> tuple[str, dict[str, Any]]:
    """(URL, JSON body) for an HTTP channel, in that service's format."""
    text = notice.text()
    if channel.kind is ChannelKind.WEBHOOK:
        return channel.url, notice.to_json()
    if channel.kind is ChannelKind.ALERTMANAGER:
        if not isinstance(notice, Notice | GroupNotice):
            raise ValueError("only alerts go out in Alertmanager's webhook format")
        return channel.url, alertmanager(notice)
    if channel.kind is ChannelKind.WECOM:
        return channel.url, {"msgtype": "markdown", "markdown": {"content": _markdown(notice)}}
    if channel.kind is ChannelKind.DINGTALK:
        url = channel.url
        if channel.secret:
            stamp = str(int(now * 1000))
            digest = hmac.new(
                channel.secret.encode(), f"{stamp}\n{channel.secret}".encode(), hashlib.sha256
            ).digest()
            sign = urllib.parse.quote_plus(base64.b64encode(digest))
            url += ("&" if "?" in url else "?") + f"timestamp={stamp}&sign={sign}"
        return url, {"msgtype": "markdown", "markdown": {"title": notice.subject, "text": _markdown(notice)}}
    if channel.kind is ChannelKind.FEISHU:
        out: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
        if channel.secret:
            stamp = str(int(now))
            digest = hmac.new(f"{stamp}\n{channel.secret}".encode(), b"", hashlib.sha256).digest()
            out |= {"timestamp": stamp, "sign": base64.b64encode(digest).decode()}
        return channel.url, out
    raise ValueError(f"{channel.kind} is not an HTTP channel")


# The most a robot takes in one request's body, in bytes: DingTalk refuses more with errcode
# 460101, Feishu's custom bots take 20 KB, WeCom's markdown holds at most 4,096 bytes.
BODY_LIMIT = {ChannelKind.DINGTALK: 20_000, ChannelKind.FEISHU: 20_000, ChannelKind.WECOM: 4_096}


def encoded(payload: dict[str, Any]) -> bytes:
    """A JSON body as it is sent: UTF-8, compact (what a robot's size limit counts)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def fitted(channel: HttpChannel, notice: Message, now: float) -> tuple[str, bytes]:
    """(URL, body) for an HTTP channel, within the robot's size limit: a group's message that
    would exceed it lists fewer alerts, and counts the rest with the link to all of them."""
    url, payload = body(channel, notice, now)
    data = encoded(payload)
    limit = BODY_LIMIT.get(channel.kind)
    if limit is None or len(data) <= limit or not isinstance(notice, GroupNotice):
        return url, data

    def listing(count: int) -> tuple[str, bytes]:
        url, payload = body(channel, dataclasses.replace(notice, limit=count), now)
        return url, encoded(payload)

    # The most alerts listed that fit (found by halving): none listed, if even one is too long.
    low, high = 0, min(notice.limit, len(notice.listed)) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if len(listing(middle)[1]) <= limit:
            low = middle
        else:
            high = middle - 1
    return listing(low)


def one_line(text: str) -> str:
    """`text` with its line breaks and other control characters as spaces: a header's value."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", text)


# What WeCom's and DingTalk's markdown read as markup, HTML included.
MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape_markdown(text: str) -> str:
    """`text` as robot markdown shows it literally: markup characters backslash-escaped, HTML's
    angle brackets and ampersands as entities, and an @ that cannot mention anyone."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return MARKUP.sub(r"\\\1", text).replace("@", "@\u200b")


def _markdown(notice: Message) -> str:
    # Only what this function adds is markup: the subject and every line of the text (the
    # alert's fields among them) are escaped, and a field's own line break stays in its quote.
    rest = [escape_markdown(line) for line in notice.text().splitlines()[1:]]
    return f"**{escape_markdown(notice.subject)}**\n" + "\n".join(f"> {line}" for line in rest)


class Sender:
    """Delivers notices over HTTP, SMTP and MQTT; one attempt per call, within the deadline."""

    def __init__(
        self, smtp: SmtpConfig, publish: Any = None, policy: DeliveryConfig = DEFAULT_DELIVERY
    ) -> None:
        self.smtp = smtp
        self.publish = publish  # callable(topic, payload) for MQTT channels
        self.policy = policy
        # One pool of connections per destination (scheme, host and port), the size of its
        # limit and one more, kept for a life-safety alert (`destinations`): a destination whose
        # connections all hang leaves the others theirs, and a smoke alarm a way through.
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tls = ssl.create_default_context()
        self._mailers = ThreadPoolExecutor(policy.per_destination + 1, thread_name_prefix="linli-smtp")

    def _client(self, url: str) -> httpx.AsyncClient:
        parts = urllib.parse.urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        client = self._clients.get(key)
        if client is None:
            size = self.policy.per_destination + 1
            limits = httpx.Limits(max_connections=size)
            transport = httpx.AsyncHTTPTransport(verify=self._tls, limits=limits)
            if not self.policy.allow_private:
                # Checked where the connection is made: the address it goes to is the one checked.
                transport._pool = httpcore.AsyncConnectionPool(
                    ssl_context=self._tls,
                    max_connections=size,
                    network_backend=PublicOnly(),
                )
            # httpx's own timeouts (5 s per connect and read by default) cut a longer deadline
            # short: each phase gets the whole `deadline_s`, which `_post` holds the send to.
            timeout = httpx.Timeout(self.policy.deadline_s)
            client = self._clients[key] = httpx.AsyncClient(
                transport=transport, trust_env=False, timeout=timeout
            )
        return client

    async def send(self, channel: Channel, notice: Message) -> None:
        if isinstance(channel, EmailChannel):
            await self._mail(channel, notice)
        elif isinstance(channel, MqttChannel):
            if self.publish is None:
                raise DeliveryError("no broker connection for MQTT channels")
            self.publish(channel.topic, json.dumps(notice.to_json(), ensure_ascii=False))
        else:
            await self._post(channel, notice)

    async def _post(self, channel: HttpChannel, notice: Message) -> None:
        url, data = fitted(channel, notice, time.time())
        deadline = self.policy.deadline_s
        try:
            async with asyncio.timeout(deadline):
                headers = {"Content-Type": "application/json"}
                response = await self._client(url).post(url, content=data, headers=headers)
        except TimeoutError:
            raise DeadlineError(f"no whole answer within the {deadline:g} s deadline") from None
        except httpx.TimeoutException as exc:
            raise DeadlineError(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}")
        if channel.kind not in (ChannelKind.WEBHOOK, ChannelKind.ALERTMANAGER):
            try:
                answer = response.json()
            except ValueError as exc:
                raise DeliveryError(f"the robot answered no JSON: {response.text[:200]!r}") from exc
            code = answer.get("errcode", answer.get("code", 0)) if isinstance(answer, dict) else 0
            if code:
                refused = DeliveryError(f"the robot refused it: {answer}")
                raise throttled(channel.kind, code, answer) or refused

    def letter(self, channel: EmailChannel, notice: Message) -> EmailMessage:
        """The e-mail for `notice`; DeliveryError if a header cannot hold it."""
        message = EmailMessage()
        try:
            message["Subject"] = one_line(notice.subject)
            message["From"] = self.smtp.sender
            message["To"] = ", ".join(channel.to)
            message.set_content(notice.text())
        except (ValueError, TypeError) as exc:
            raise DeliveryError(f"the e-mail could not be written: {exc}") from exc
        return message

    async def _mail(self, channel: EmailChannel, notice: Message) -> None:
        message = self.letter(channel, notice)
        deadline = self.policy.deadline_s
        smtp = smtplib.SMTP(timeout=deadline)
        where = f"SMTP {self.smtp.host}:{self.smtp.port}"
        session = asyncio.get_running_loop().run_in_executor(self._mailers, self._submit, smtp, message)
        try:
            async with asyncio.timeout(deadline):
                await asyncio.shield(session)
        except TimeoutError:
            _abort(smtp)  # its thread's blocking read ends now, and the thread is free
            raise DeadlineError(f"{where}: no whole session within the {deadline:g} s deadline") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{where}: {exc}") from exc

    def _submit(self, smtp: smtplib.SMTP, message: EmailMessage) -> None:
        with smtp:
            smtp.connect(self.smtp.host, self.smtp.port)
            if self.smtp.starttls:
                smtp.starttls()
            smtp.send_message(message)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._mailers.shutdown(wait=False, cancel_futures=True)


def _abort(smtp: smtplib.SMTP) -> None:
    sock = getattr(smtp, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
