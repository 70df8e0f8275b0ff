"""The district demo's live terminal view: devices, readings, trucks, notices, bookings, alerts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import httpx

from linli.demo.inbox import Inbox
from linli.edge.agent import Agent

CLEAR = "\x1b[H\x1b[2J"
ZONE = ZoneInfo("Asia/Shanghai")


@dataclass
class Services:
    """What the view asks the notifier and the waste service, with the admin token."""

    notifier_url: str
    waste_url: str
    token: str
    trips: list[dict[str, Any]] = field(default_factory=list)
    bookings: Counter[str] = field(default_factory=Counter)
    open_alerts: int | None = None
    stop_names: dict[str, str] = field(default_factory=dict)  # what the keepers call a bin room
    truck_names: dict[str, str] = field(default_factory=dict)  # a truck's fleet number and plate
    struck: list[str] = field(default_factory=list)  # faults typed in the terminal, as answered

    def refresh(self) -> None:
        """Fetch what changed; a service not answering yet keeps the last values."""
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(headers=headers, timeout=2) as client:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                self.trips = every(client, f"{self.waste_url}/trips")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                found = every(client, f"{self.waste_url}/bookings")
                self.bookings = Counter(str(b["state"]) for b in found)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                self.open_alerts = len(every(client, f"{self.notifier_url}/alerts"))


def every(client: httpx.Client, url: str, limit: int = 1000) -> list[Any]:
    """A whole list of a service's API, page after page (its Link rel="next" headers)."""
    found: list[Any] = []
    page: str | None = f"{url}?limit={limit}"
    while page is not None:
        answer = client.get(page).raise_for_status()
        found += answer.json()
        following = answer.links.get("next", {}).get("url")
        page = urljoin(page, following) if following else None
    return found


def render(agent: Agent, services: Services, inbox: Inbox, readings_per_s: float) -> str:
    """One screen of the district."""
    pollers = agent.pollers
    mqtt = list(agent.mqtt.devices.values()) if agent.mqtt is not None else []
    online = sum(p.health.online for p in pollers) + sum(d.online for d in mqtt)
    now = dt.datetime.fromtimestamp(time.time(), ZONE)
    told = inbox.counts()
    lines = [
        f"linli demo  {now:%Y-%m-%d %H:%M:%S} Asia/Shanghai"
        f"   devices online {online}/{len(pollers) + len(mqtt)}"
        f"   readings/s {readings_per_s:,.0f}   written {agent.writer.stats.written:,}"
        f"   buffered {agent.writer.pending:,}",
        f"notices sent: keepers {told.get('keeper', 0)}, property offices {told.get('property', 0)}, "
        f"requesters {told.get('requester', 0)}, alert subscribers {told.get('subscriber', 0)}   "
        f"open alerts {'-' if services.open_alerts is None else services.open_alerts}",
        "bookings: " + (", ".join(f"{k} {v}" for k, v in sorted(services.bookings.items())) or "none"),
        "faults (type TARGET:NAME and Enter, e.g. ronghua-1/station-2:smoke): "
        + ("; ".join(services.struck[-3:]) or "none yet"),
        "",
        f"{_cut('truck', 20)}{'trip':<18}{_cut('next stop', 22)}{'predicted':>10} {'delay':>9}",
    ]
    for trip in sorted(services.trips, key=lambda t: str(t.get("truck")))[:10]:
        predicted = str(trip.get("predicted") or "-")
        predicted = predicted[11:16] if "T" in predicted else predicted  # ISO, or already HH:MM
        delay = trip.get("delay_min")
        delay_text = "" if delay is None else f"{delay:+.0f} min"
        lines.append(
            f"{_cut(services.truck_names.get(trip['truck'], trip['truck']), 20)}"
            f"{trip.get('trip_id', ''):<18}"
            f"{_cut(services.stop_names.get(trip['next_stop'], trip['next_stop'] or 'done'), 22)}"
            f"{predicted:>10} {delay_text:>9}"
        )
    if not services.trips:
        lines.append("(no truck on a trip right now)")
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    """`text` padded or cut to `width` terminal columns (a Chinese character takes two)."""
    out, used = "", 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used + w > width - 1:
            break
        out, used = out + ch, used + w
    return out + " " * (width - used)


async def run_view(
    agent: Agent, services: Services, inbox: Inbox, stop: asyncio.Event, out: TextIO = sys.stdout
) -> None:
    """Redraw every second on a terminal; elsewhere print the first line every 10 s."""
    tty = out.isatty()
    interval = 1.0 if tty else 10.0
    last_count, last_t = agent.totals.lines, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        await asyncio.to_thread(services.refresh)
        now = time.monotonic()
        rate = (agent.totals.lines - last_count) / max(now - last_t, 1e-6)
        last_count, last_t = agent.totals.lines, now
        screen = render(agent, services, inbox, rate)
        out.write(CLEAR + screen + "\n" if tty else screen.splitlines()[0] + "\n")
        out.flush()
