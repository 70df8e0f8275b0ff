"""The demo's inbox: a loopback webhook receiver for the people of the district, and a page.

Keepers, property offices, requesters and alert subscribers each get a webhook path
(`/hook/<who>`); the demo points the notifier's subscriptions and the waste service's contacts
at them. What each received is kept in memory and shown at `/` as they would read it: the
rendered title and text the webhook carried, the channel, and when (Asia/Shanghai), and as
JSON at `/messages.json`.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Asia/Shanghai")
MAX_BODY = 1 << 20
MAX_KEPT = 5000  # a long demo keeps the newest


@dataclass(frozen=True)
class Person:
    """Who a webhook path stands for: their name, their role and the channel it replaces."""

    name: str
    role: str  # keeper, property, requester, subscriber
    channel: str


@dataclass(frozen=True)
class Received:
    who: str
    name: str
    role: str
    channel: str
    at: str  # local time, Asia/Shanghai
    title: str
    text: str


class Inbox:
    """What each person received, in arrival order; thread-safe."""

    def __init__(self) -> None:
        self.people: dict[str, Person] = {}
        self.messages: list[Received] = []
        self._lock = threading.Lock()

    def register(self, who: str, person: Person) -> None:
        self.people[who] = person

    def take(self, who: str, body: dict[str, Any]) -> None:
        person = self.people.get(who) or Person(who, "unknown", "webhook")
        name = person.name
        if person.role == "requester":
            # The operator's SMS gateway serves every requester: the booking names who it is.
            contact = (
                body.get("booking", {}).get("contact", {}) if isinstance(body.get("booking"), dict) else {}
            )
            name = str(contact.get("name") or body.get("to") or name)
        at = dt.datetime.fromtimestamp(time.time(), ZONE).strftime("%Y-%m-%d %H:%M:%S")
        text = body.get("text")
        if isinstance(text, dict):  # WeCom's shape: {"content": ...}
            text = text.get("content")
        message = Received(
            who, name, person.role, person.channel, at, str(body.get("title") or ""), str(text or "")
        )
        with self._lock:
            self.messages.append(message)
            del self.messages[:-MAX_KEPT]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def save(self, path: Path) -> None:
        """Every message kept, as JSON, for after the demo."""
        body = json.dumps([asdict(m) for m in self.snapshot()], ensure_ascii=False, indent=1)
        path.write_text(body + "\n", encoding="utf-8")

    def counts(self) -> dict[str, int]:
        """Messages received per role."""
        out: dict[str, int] = {}
        for m in self.snapshot():
            out[m.role] = out.get(m.role, 0) + 1
        return out


ROLES = {
    "keeper": "垃圾房保洁员 keepers",
    "property": "物业 property offices",
    "requester": "预约人 requesters",
    "subscriber": "告警订阅人 alert subscribers",
    "unknown": "?",
}


def page(inbox: Inbox) -> str:
    """The inbox as one HTML page, newest first, grouped by role."""
    messages = inbox.snapshot()[::-1]
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        "<meta http-equiv='refresh' content='5'><title>linli demo inbox</title>",
        "<style>body{font-family:sans-serif;margin:1em}td,th{padding:.2em .6em;vertical-align:top;"
        "text-align:left}tr:nth-child(even){background:#f4f4f4}</style></head><body>",
        f"<h1>linli demo inbox</h1><p id='total'>{len(messages)} messages</p>",
    ]
    for role, heading in ROLES.items():
        mine = [m for m in messages if m.role == role]
        if not mine:
            continue
        parts.append(f"<h2 id='{role}'>{html.escape(heading)} ({len(mine)})</h2><table>")
        parts.append("<tr><th>time (Asia/Shanghai)</th><th>to</th><th>channel</th><th>message</th></tr>")
        for m in mine[:500]:
            title = f"<b>{html.escape(m.title)}</b><br>" if m.title else ""
            text = html.escape(m.text).replace("\n", "<br>")
            parts.append(
                f"<tr class='message'><td>{m.at}</td><td>{html.escape(m.name)}</td>"
                f"<td>{html.escape(m.channel)}</td><td>{title}{text}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


class _Handler(BaseHTTPRequestHandler):
    inbox: Inbox

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's screen is its own

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            self._send(200, page(self.inbox).encode(), "text/html; charset=utf-8")
        elif path == "/messages.json":
            body = json.dumps([asdict(m) for m in self.inbox.snapshot()], ensure_ascii=False)
            self._send(200, body.encode(), "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        if not path.startswith("/hook/") or length > MAX_BODY:
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, b"not JSON\n", "text/plain")
            return
        self.inbox.take(path.removeprefix("/hook/"), body if isinstance(body, dict) else {})
        self._send(200, b"{}", "application/json")


class InboxServer:
    """The inbox served on 127.0.0.1 in a thread of its own."""

    def __init__(self, inbox: Inbox, port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"inbox": inbox})
        self.inbox = inbox
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="linli-inbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hook(self, who: str) -> str:
        """The webhook URL of `who`."""
        return f"{self.url}/hook/{who}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
