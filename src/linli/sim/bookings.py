"""Property staff booking renovation pickups through the day, as the simulator's people.

Bookings come as a Poisson stream between BOOKING_HOURS local time, `per_day` a day on
average, at the timetable's compounds: 10 to 80 bags or 0.5 to 4 m³, wanted from 15 to 90
minutes after booking for 2 to 4 hours. Each goes to the waste service's `POST /bookings` with
an idempotency key; what was asked and what the service answered is the ground truth, written
to a JSON-lines journal when one is given. A service that refuses or cannot be reached is
logged once a minute and counted; the simulator goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from linli.catalog.ratelog import RateLimitedLog
from linli.transit.gtfs import Feed

log = logging.getLogger(__name__)

BOOKING_HOURS = (7, 16)


class BookingAgent:
    """Books pickups at `url` for the simulated time that passes."""

    def __init__(
        self, feed: Feed, url: str, *, token: str, per_day: float, seed: int, journal: Path | None = None
    ) -> None:
        self.feed = feed
        self.url = url.rstrip("/")
        self.token = token
        self.rate_s = per_day / ((BOOKING_HOURS[1] - BOOKING_HOURS[0]) * 3600)
        self.rng = random.Random(f"{seed}:bookings")
        self.rooms = sorted(s for s in feed.stops if s not in feed.extras.depots)
        self.zone = ZoneInfo(feed.timezone)
        self.journal = journal
        self.last_s: float | None = None
        self.counts: Counter[str] = Counter()
        self._ratelog = RateLimitedLog(log)
        self._n = 0
        self._lock = threading.Lock()

    def step(self, now_s: float) -> int:
        """Book what staff booked since the last step; returns how many were sent."""
        with self._lock:  # steps may run on a pool's threads; one at a time
            return self._step(now_s)

    def _step(self, now_s: float) -> int:
        if self.last_s is None or now_s <= self.last_s:
            self.last_s = now_s if self.last_s is None else self.last_s
            return 0
        sent = 0
        for at in self._arrivals(self.last_s, now_s):
            self._book(at)
            sent += 1
        self.last_s = now_s
        return sent

    def _arrivals(self, start: float, end: float) -> list[float]:
        """Booking times in (start, end]: Poisson within the booking hours."""
        out: list[float] = []
        t = start
        while True:
            t += self.rng.expovariate(self.rate_s) if self.rate_s > 0 else math.inf
            if t > end:
                return out
            hour = dt.datetime.fromtimestamp(t, self.zone).hour
            if BOOKING_HOURS[0] <= hour < BOOKING_HOURS[1]:
                out.append(t)

    def _book(self, at: float) -> None:
        self._n += 1
        compound = self.rng.choice(self.rooms)
        earliest = at + self.rng.uniform(15, 90) * 60
        amount: dict[str, Any] = (
            {"bags": self.rng.randint(10, 80)}
            if self.rng.random() < 0.5
            else {"volume_m3": round(self.rng.uniform(0.5, 4), 1)}
        )
        body: dict[str, Any] = {
            "compound": compound,
            **amount,
            "earliest": dt.datetime.fromtimestamp(earliest, self.zone).isoformat(),
            "latest": dt.datetime.fromtimestamp(
                earliest + self.rng.uniform(2, 4) * 3600, self.zone
            ).isoformat(),
            "contact": {
                "name": f"Property office, {compound}",
                "email": f"property.{compound}@district.example",
            },
            "key": f"sim-{int(at)}-{self._n}",
        }
        answer: dict[str, Any] = {}
        try:
            response = httpx.post(
                f"{self.url}/bookings",
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=10,
            )
            answer = (
                response.json()
                if response.headers.get("content-type", "").startswith("application/json")
                else {}
            )
            outcome = "booked" if response.status_code < 300 else f"refused_{response.status_code}"
        except httpx.HTTPError as exc:
            outcome = "unreachable"
            answer = {"error": str(exc)}
        self.counts[outcome] += 1
        if outcome != "booked":
            self._ratelog.log(outcome, self.url, "sim: booking at %s %s: %s", compound, outcome, answer)
        if self.journal is not None:
            with self.journal.open("a", encoding="utf-8") as f:
                f.write(
                    json.dumps({"at_s": at, "request": body, "outcome": outcome, "answer": answer}) + "\n"
                )
