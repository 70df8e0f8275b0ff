"""Channels: one alert notice in each destination's documented message format, and its delivery.

WeCom and DingTalk group robots take `{"msgtype": "markdown", ...}`; DingTalk and Feishu
robots with a signing secret take a timestamp and an HMAC-SHA256 signature (DingTalk in
the query, over "timestamp\\nsecret" keyed by the secret; Feishu in the body, over nothing
keyed by "timestamp\\nsecret"). A robot answers 200 even when it refuses, with a non-zero
errcode (WeCom, DingTalk) or code (Feishu): that counts as a failed delivery.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import smtplib
import time
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal, Protocol

import httpx

from linli.catalog.alerts import AlertMessage
from linli.cloud.config import Channel, ChannelKind, EmailChannel, HttpChannel, MqttChannel, SmtpConfig

NoticeKind = Literal["firing", "repeat", "escalation", "resolved"]
HEADLINE = {"firing": "FIRING", "repeat": "STILL FIRING", "escalation": "ESCALATED", "resolved": "RESOLVED"}


class DeliveryError(Exception):
    """The destination did not take the message; the text says what it answered."""


class Message(Protocol):
    """What a channel sends: a subject, a text for people, and JSON for machines."""

    @property
    def subject(self) -> str: ...

    def text(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Notice:
    """One message about one alert to one subscription."""

    kind: NoticeKind
    alert: AlertMessage
    subscription: str

    @property
    def subject(self) -> str:
        a = self.alert
        where = f"{a.site}/{a.device}" + (f" port {a.port}" if a.port else "")
        return f"[{HEADLINE[self.kind]}] [{a.severity}] {a.title} at {where}"

    def text(self) -> str:
        a = self.alert
        lines = [self.subject, f"value {a.value} (limit {a.threshold:g})", f"rule {a.rule}, edge {a.edge}"]
        lines.append(f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(a.since_ms / 1000))}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "notice": self.kind,
            "subscription": self.subscription,
            "alert": self.alert.model_dump(mode="json"),
        }


def body(channel: HttpChannel, notice: Message, now: float) -> tuple[str, dict[str, Any]]:
    """(URL, JSON body) for an HTTP channel, in that service's format."""
    text = notice.text()
    if channel.kind is ChannelKind.WEBHOOK:
        return channel.url, notice.to_json()
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


def _markdown(notice: Message) -> str:
    first, *rest = notice.text().splitlines()
    return f"**{first}**\n" + "\n".join(f"> {line}" for line in rest)


class Sender:
    """Delivers notices over HTTP, SMTP and MQTT; one attempt per call."""

    def __init__(self, smtp: SmtpConfig, publish: Any = None) -> None:
        self.smtp = smtp
        self.publish = publish  # callable(topic, payload) for MQTT channels
        self.http = httpx.AsyncClient(timeout=10)

    async def send(self, channel: Channel, notice: Message) -> None:
        if isinstance(channel, EmailChannel):
            await asyncio.to_thread(self._mail, channel, notice)
        elif isinstance(channel, MqttChannel):
            if self.publish is None:
                raise DeliveryError("no broker connection for MQTT channels")
            self.publish(channel.topic, json.dumps(notice.to_json(), ensure_ascii=False))
        else:
            url, payload = body(channel, notice, time.time())
            try:
                response = await self.http.post(url, json=payload)
            except httpx.HTTPError as exc:
                raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code >= 300:
                raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}")
            if channel.kind is not ChannelKind.WEBHOOK:
                try:
                    answer = response.json()
                except ValueError as exc:
                    raise DeliveryError(f"the robot answered no JSON: {response.text[:200]!r}") from exc
                code = answer.get("errcode", answer.get("code", 0)) if isinstance(answer, dict) else 0
                if code:
                    raise DeliveryError(f"the robot refused it: {answer}")

    def _mail(self, channel: EmailChannel, notice: Message) -> None:
        message = EmailMessage()
        message["Subject"] = notice.subject
        message["From"] = self.smtp.sender
        message["To"] = ", ".join(channel.to)
        message.set_content(notice.text())
        try:
            with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=10) as smtp:
                if self.smtp.starttls:
                    smtp.starttls()
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {self.smtp.host}:{self.smtp.port}: {exc}") from exc

    async def close(self) -> None:
        await self.http.aclose()
