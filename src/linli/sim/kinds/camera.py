"""An elevator anti-e-bike camera that behaves like one.

People ride the lift all day; now and then someone wheels an e-bike in, mostly in the
evening when they come home. The camera scores each second it sees the bike, confirms
it by the profile's rule (see `Confirmer`), plays a voice warning, holds the doors
until the bike is wheeled out, and reports each hit, the action taken, and a heartbeat
with its daily counters. A person or a pram is sometimes scored as an e-bike for a
moment; the rule keeps those from counting.

Faults: `stuck` stops every message (the process lives, the camera does not), `burst`
sends an e-bike every 20 s.
"""

from __future__ import annotations

import math
import random
from typing import Any

from linli.catalog.confirm import Confirmer
from linli.catalog.profile import Profile, get_profile
from linli.sim.context import DeviceContext

LOCAL_OFFSET_S = 8 * 3600  # Shanghai
HEARTBEAT_S = 30


def ebikes_per_hour(hour: float) -> float:
    """Expected e-bikes wheeled into one lift per hour, at this local hour."""
    return 0.2 + 1.5 * math.exp(-(((hour - 19.5) / 1.5) ** 2))


Message = tuple[str, dict[str, Any]]


class Camera:
    """One camera; `advance_to` returns the messages it published on the way."""

    def __init__(self, *, seed: str, start: float, faults: frozenset[str] = frozenset()) -> None:
        self.profile: Profile = get_profile("camera")
        spec = self.profile.mqtt
        assert spec is not None
        detection = next(m for m in spec.messages if m.name == "detection")
        assert detection.confirm is not None
        self.confirmer = Confirmer(detection.confirm)
        self.rng = random.Random(seed)
        self.faults = faults
        self.t = math.floor(start)
        self.boot = self.t
        self.floor = 1
        self.bike_left = 0  # seconds the current e-bike stays in the car
        self.false_hit = 0
        self.held_since: int | None = None
        self.holding = False
        self.last_keep = 0
        self.next_heartbeat = self.t + HEARTBEAT_S
        self.day = self._day(self.t)
        self.detections_today = 0
        self.interceptions_today = 0
        self.door_holds_today = 0

    @staticmethod
    def _day(t: int) -> int:
        return (t + LOCAL_OFFSET_S) // 86400

    def advance_to(self, t: float) -> list[Message]:
        out: list[Message] = []
        while self.t + 1 <= t:
            self.t += 1
            self._step(out)
        return [] if "stuck" in self.faults else out

    def _step(self, out: list[Message]) -> None:
        if self._day(self.t) != self.day:
            self.day = self._day(self.t)
            self.detections_today = self.interceptions_today = self.door_holds_today = 0
        hour = ((self.t + LOCAL_OFFSET_S) % 86400) / 3600
        rate = 180.0 if "burst" in self.faults else ebikes_per_hour(hour)
        if self.bike_left == 0 and self.rng.random() < rate / 3600:
            self.bike_left = self.rng.randint(8, 40)
            self.floor = self.rng.choice([1, 1, 1, -1])
        elif self.bike_left == 0 and self.rng.random() < 0.01:
            self.false_hit = 1
        if self.bike_left > 0:
            self.bike_left -= 1
            # The owner wheels the bike out in its last seconds: the score fades.
            score = (
                self.rng.uniform(0.3, 0.6) if self.bike_left < 3 else min(0.999, self.rng.gauss(0.86, 0.06))
            )
            self._hit(out, "ebike", round(score, 3))
        elif self.false_hit:
            self.false_hit = 0
            self._hit(out, "ebike", round(self.rng.uniform(0.5, 0.8), 3))
        elif self.holding and self.t - self.last_keep > self.confirmer.spec.exit_s:
            self._clear(out)
        if self.t >= self.next_heartbeat:
            self.next_heartbeat += HEARTBEAT_S
            out.append(
                (
                    "heartbeat",
                    {
                        "ts": self.t * 1000,
                        "uptime_s": self.t - self.boot,
                        "detections_today": self.detections_today,
                        "interceptions_today": self.interceptions_today,
                        "door_holds_today": self.door_holds_today,
                    },
                )
            )

    def _hit(self, out: list[Message], obj: str, score: float) -> None:
        self.detections_today += 1
        payload: dict[str, Any] = {
            "ts": self.t * 1000,
            "object": obj,
            "confidence": score,
            "floor": self.floor,
        }
        confirmed, started = self.confirmer.observe(float(self.t), payload)
        action = "none"
        if started:
            self.interceptions_today += 1
            self.door_holds_today += 1
            self.holding = True
            self.held_since = self.t
            action = "voice_warning"
        elif confirmed and self.holding:
            action = "door_held"
        if confirmed:
            self.last_keep = self.t
        if self.holding and self.held_since is not None and action != "none":
            payload["held_s"] = float(self.t - self.held_since)
        payload["action"] = action
        out.append(("detection", payload))

    def _clear(self, out: list[Message]) -> None:
        assert self.held_since is not None
        out.append(
            (
                "detection",
                {
                    "ts": self.t * 1000,
                    "object": "ebike",
                    "confidence": 0.0,
                    "floor": self.floor,
                    "action": "cleared",
                    "held_s": float(self.t - self.held_since),
                },
            )
        )
        self.holding = False
        self.held_since = None


FAULTS = frozenset({"stuck", "burst"})


def make(ctx: DeviceContext) -> Camera:
    """A camera for the district scenario."""
    return Camera(seed=ctx.seed, start=ctx.start, faults=ctx.faults)
